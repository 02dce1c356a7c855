"""int8 graphs for a model package: ONNX Runtime static QDQ quantization, calibrated on real chips.

Why: the default ensemble's tile graph runs at ~80 % of this CPU's fp32 peak (benchmarks/README.md),
so only cheaper arithmetic makes it faster. Static quantization (weights int8 per output channel,
activations uint8 with ranges measured beforehand) lets ONNX Runtime run the convolutions as int8
dot products (AVX-512 VNNI / AVX2), about 4× the operations per instruction of fp32.

How (:func:`quantize_package`):

1. The package's two graphs (``model.onnx`` patches, ``model_fcn.onnx`` tile) are pre-processed
   (shape inference, graph optimisation: BatchNorm folded) by ``quant_pre_process``.
2. Activation ranges come from rendered **training** chips of the card's own site-level split
   (MinMax over :data:`CALIBRATION_CHIPS` chips); validation chips are never seen here.
3. ``quantize_static`` writes QDQ graphs (per-channel int8 weights, uint8 activations) as
   ``model_int8.onnx`` / ``model_fcn_int8.onnx`` beside the fp32 ones, and both are scored on the
   **validation** chips through the tile graph, as ``detect`` runs it. The card's
   ``metrics.quantized`` block records fp32 and int8 AP, sensitivity at 99 % specificity, the largest
   score change, the calibration set and the rule; ``default`` is true only when the AP change is
   within :data:`MAX_AP_DROP`; ``made_from`` holds the fp32 graphs' checksums, so a package
   retrained or recalibrated later scores in fp32 until it is quantized again
   (:func:`int8_graphs`). The fp32 graphs stay in the package (``--precision fp32``).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from minewatch.errors import MinewatchError

PATCH_INT8 = "model_int8.onnx"
FCN_INT8 = "model_fcn_int8.onnx"
CALIBRATION_CHIPS = 1024
CALIBRATION_BATCH = 64
CALIBRATION_SEED = 0
MAX_AP_DROP = 0.005
"""int8 is the default precision only when validation AP is within this of fp32's."""


def _preprocess(src: Path, dst: Path) -> Path:
    """Self-contained copy (the package's graphs share an external weights file), then ORT's
    quantization pre-processing."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    inline = dst.with_name("inline.onnx")
    onnx.save(onnx.load(str(src), load_external_data=True), str(inline))
    quant_pre_process(str(inline), str(dst), skip_symbolic_shape=True)
    return dst


class _ChipReader:
    """``CalibrationDataReader`` over rendered chips, in batches (input name ``x``)."""

    def __init__(self, pixels: np.ndarray, batch: int = CALIBRATION_BATCH) -> None:
        self._batches: Iterator[np.ndarray] = iter([pixels[i : i + batch] for i in range(0, len(pixels), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        b = next(self._batches, None)
        return None if b is None else {"x": np.ascontiguousarray(b, dtype=np.float32)}


def quantize_graph(src: Path, dst: Path, calibration: np.ndarray) -> Path:
    """QDQ int8 copy of one graph (per-channel weights, uint8 activations, MinMax ranges)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        pre = _preprocess(src, Path(tmp) / "pre.onnx")
        quantize_static(
            str(pre), str(dst), _ChipReader(calibration),
            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )  # fmt: skip
    return dst


def _session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def tile_graph_scores(path: Path, pixels: np.ndarray, batch: int = 256) -> np.ndarray:
    """Member probabilities N×M of 48 px chips through a tile graph (one lattice cell per chip)."""
    sess = _session(path)
    out = []
    for i in range(0, len(pixels), batch):
        z = sess.run(["logits"], {"x": np.ascontiguousarray(pixels[i : i + batch], np.float32)})[0]
        out.append(z[:, :, 0, 0])
    return 1.0 / (1.0 + np.exp(-np.concatenate(out)))


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def quantize_package(package: str | Path, chips_dir: str | Path, n_calibration: int = CALIBRATION_CHIPS) -> dict[str, Any]:
    """Write int8 graphs into ``package`` and record their figures in its card (see the module doc).

    Returns the card's ``quantized`` block.
    """
    from minewatch.atomic import write_json_atomic
    from minewatch.chips import load_chips
    from minewatch.models.package import CARD, FCN_GRAPH, PATCH_GRAPH, load_package
    from minewatch.train import metrics
    from minewatch.train.scorecard import make_split, trained_split

    pkg = load_package(package)
    card = pkg.card
    cfg = (card.training.get("ensemble_of") or [{}])[0].get("config") if card.training.get("ensemble_of") else card.training.get("config")
    split_cfg = trained_split(cfg)
    if split_cfg is None:
        raise MinewatchError(pkg.path, "the card does not record its training split: cannot keep calibration chips out of validation")
    chips = load_chips(chips_dir)
    split = make_split(chips, split_cfg[0], split_cfg[1], card.training.get("holdout_regions", []), card.training.get("holdout_sources", []))
    rng = np.random.default_rng(CALIBRATION_SEED)
    calib_idx = np.sort(rng.choice(split.train, size=min(n_calibration, len(split.train)), replace=False))
    if np.isin(calib_idx, split.val).any():
        raise RuntimeError("calibration chips overlap the validation split")
    calib = chips.pixels[calib_idx].astype(np.float32)
    for src, dst in ((PATCH_GRAPH, PATCH_INT8), (FCN_GRAPH, FCN_INT8)):
        if (pkg.path / src).exists():
            with tempfile.TemporaryDirectory(dir=pkg.path) as tmp:
                quantize_graph(pkg.path / src, Path(tmp) / dst, calib)
                (Path(tmp) / dst).replace(pkg.path / dst)
    val = chips.subset(split.val)
    y = val.labels
    p32 = tile_graph_scores(pkg.path / FCN_GRAPH, val.pixels)
    p8 = tile_graph_scores(pkg.path / FCN_INT8, val.pixels)
    s32, s8 = p32.mean(axis=1), p8.mean(axis=1)
    ap32, ap8 = float(metrics.average_precision(y, s32)), float(metrics.average_precision(y, s8))
    sens32, sens8 = float(metrics.sensitivity_at_specificity(y, s32)), float(metrics.sensitivity_at_specificity(y, s8))
    at_thr32 = (s32 >= card.threshold)
    at_thr8 = (s8 >= card.threshold)
    block = {
        "graphs": {"patch": PATCH_INT8, "fcn": FCN_INT8},
        "method": "onnxruntime.quantization.quantize_static, QDQ, per-channel int8 weights (symmetric), uint8 activations, MinMax calibration",
        "calibration": {
            "chips": str(chips.path) if chips.path else str(chips_dir), "split": "training chips of the card's site-level split",
            "n": int(len(calib_idx)), "seed": CALIBRATION_SEED, "val_fraction": split_cfg[0], "split_seed": split_cfg[1],
        },  # fmt: skip
        "val": {
            "n": int(len(y)), "n_pos": int(y.sum()), "graph": "tile graph (what detect runs), one lattice cell per 48 px chip",
            "ap_fp32": ap32, "ap_int8": ap8, "ap_change": ap8 - ap32,
            "sens_at_spec99_fp32": sens32, "sens_at_spec99_int8": sens8,
            "max_abs_score_change": float(np.abs(s8 - s32).max()), "mean_abs_score_change": float(np.abs(s8 - s32).mean()),
            "decisions_changed_at_threshold": int((at_thr32 != at_thr8).sum()),
        },  # fmt: skip
        "rule": f"int8 is the default precision when validation AP changes by at most {MAX_AP_DROP} (it never trains or selects on these chips)",
        "default": bool(ap32 - ap8 <= MAX_AP_DROP),
        "made_from": {k: v for k, v in card.checksums.items() if k not in (PATCH_INT8, FCN_INT8)},
    }
    card.metrics["quantized"] = block
    card.checksums.update({PATCH_INT8: _sha256(pkg.path / PATCH_INT8), FCN_INT8: _sha256(pkg.path / FCN_INT8)})
    write_json_atomic(pkg.path / CARD, card.to_dict())
    return block


def int8_graphs(card: Any) -> dict[str, str] | None:
    """The int8 graph files to score with by default, or None (fp32): the card must hold a
    ``metrics.quantized`` block whose quality rule passed and which was made from the fp32 graphs
    the card lists now (a retrained or recalibrated package drops to fp32 until re-quantized)."""
    q = (card.metrics or {}).get("quantized")
    if not q or not q.get("default"):
        return None
    made = q.get("made_from") or {}
    if not made or any(card.checksums.get(k) != v for k, v in made.items()):
        return None
    return dict(q["graphs"])


def main(argv: list[str] | None = None) -> None:
    """``python -m minewatch.models.quantize PACKAGE CHIPS_DIR``: quantize and print the figures."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package")
    ap.add_argument("chips")
    ap.add_argument("--n-calibration", type=int, default=CALIBRATION_CHIPS)
    a = ap.parse_args(argv)
    print(json.dumps(quantize_package(a.package, a.chips, a.n_calibration)["val"], indent=1))


if __name__ == "__main__":
    main()
