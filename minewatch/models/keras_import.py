"""Convert the published upstream Keras HDF5 mine classifiers into minewatch model packages.

No TensorFlow and no PyTorch: the model topology is read from the ``model_config`` JSON attribute
and the weights from the HDF5 datasets with h5py, and an ONNX graph is written operator by operator
(:mod:`minewatch.models.onnx_build`). Exactly the layer types used by the three published models are
supported — ``InputLayer``, ``Conv2D``, ``MaxPooling2D``, ``Flatten``, ``Dense``, ``Dropout``,
``Concatenate`` and ``Sequential`` sub-models inside a ``Functional`` model — anything else is
refused with a one-line :class:`~minewatch.errors.MinewatchError` naming the file.

What the models expect (facts from the upstream project, Earth Genome's mining-detector,
``gee/gee.py`` / ``core/gee.py`` / ``core/inference_engine.py``): Sentinel-2 **L1C** median
composites (``COPERNICUS/S2_HARMONIZED``), normalised ``clip(DN / 10000, 0, 1)``, bands in the order

- 12 channels (the 2024 ensemble): B1 B2 B3 B4 B5 B6 B7 **B8A B8** B9 B11 B12 (no B10);
- 13 channels (the 2026 CNN100k): the same with B10 between B9 and B11;
- 3 channels (the 2021 RGB model): B4 B3 B2, the order of the RGB chips its reference vectors were
  cut from (``rgb2021_input == rgb / 255 * 0.3``, i.e. ``DN / 10000`` below DN 3000).

So every imported card says ``Rendering(kind="linear", scale=1e-4)`` (reflectance), level L1C, and
the graph itself starts with ``Clip(0, 1)`` so unclipped reflectance gives the upstream numbers.

Graph outputs: ``logits`` N×M follows the package contract (sigmoid of it is the mine probability,
one column per ensemble member); ``keras_logits`` is the raw pre-activation of the last Dense layer
(for the 2-class softmax RGB model these differ: ``logits = z_mine - z_not_mine``, which makes the
sigmoid equal the softmax probability of class 1, "Mine").
"""

from __future__ import annotations

import ast
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from minewatch.atomic import sha256_file
from minewatch.bands import BandSpec, Rendering
from minewatch.errors import MinewatchError
from minewatch.models.onnx_build import GraphBuilder, float_input
from minewatch.models.package import ModelCard, save_package

UPSTREAM_L1C_12 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8A", "B8", "B9", "B11", "B12"]
UPSTREAM_L1C_13 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8A", "B8", "B9", "B10", "B11", "B12"]
UPSTREAM_RGB = ["B4", "B3", "B2"]
UPSTREAM_RENDERING = Rendering(kind="linear", scale=1e-4, offset=0.0)
"""Upstream normalisation ``DN / 10000``; the ``clip(·, 0, 1)`` part is inside the imported graph."""

INPUT_NORMS = ("none", "reflectance", "unit_norm_2021")

UNIT_NORM_2021: dict[str, tuple[float, float]] = {
    # band: (mean DN, standard deviation DN) — the per-band patch constants the upstream 2021
    # (Descartes Labs era) pipeline standardised its inputs with (mining-detector scripts/dl_utils.py,
    # ``unit_norm``). Published numbers, cited; measured here: the 2021 RGB model separates the real
    # RGB chips with ROC AUC 0.84 under this normalisation and 0.54 (chance) under DN/10000.
    "B1": (1405.8951, 291.9438),
    "B2": (1175.9235, 398.5558),
    "B3": (1172.4902, 504.557),
    "B4": (1091.9574, 748.6153),
    "B5": (1321.1304, 651.8549),
    "B6": (2181.5363, 730.9811),
    "B7": (2670.2361, 913.6062),
    "B8": (2491.2354, 893.9428),
    "B8A": (2948.3846, 1055.297),
    "B9": (420.1552, 225.2153),
    "B11": (2028.0025, 970.1915),
    "B12": (1076.2417, 752.8637),
}


def model_version(h5_path: Path) -> str:
    """``48px_v4.21-CNN100ka`` from ``48px_v4.21-CNN100ka_2026-05-08ep179.h5``: patch size and version."""
    parts = h5_path.stem.split("_")
    return "_".join(parts[:2]) if len(parts) > 1 else h5_path.stem


def default_input_norm(h5_path: Path) -> str:
    """The upstream normalisation era of a model file: v0–v2 (2021, Descartes Labs) standardised
    per band; v3 onwards (Earth Engine) used ``clip(DN/10000, 0, 1)``."""
    m = re.search(r"_v(\d+)", h5_path.stem)
    return "unit_norm_2021" if m and int(m.group(1)) <= 2 else "reflectance"


_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax", "linear": None}


def upstream_band_spec(n_channels: int, where: str | Path) -> BandSpec:
    """The band list the upstream pipeline fed a model with ``n_channels`` inputs."""
    bands = {12: UPSTREAM_L1C_12, 13: UPSTREAM_L1C_13, 3: UPSTREAM_RGB}.get(n_channels)
    if bands is None:
        raise MinewatchError(where, f"{n_channels}-channel input: unknown upstream band set (pass the band list explicitly)")
    return BandSpec(bands=list(bands), rendering=UPSTREAM_RENDERING, level="L1C")


# --------------------------------------------------------------------------------------------
# Config logs (the .txt files published beside the weights)


@dataclass
class ConfigLog:
    """What an upstream training log states: threshold, data, augmentation, reported metrics."""

    path: Path | None = None
    threshold: float | None = None
    input_data: list[str] = field(default_factory=list)
    augmentation: dict[str, str] = field(default_factory=dict)
    batch_size: int | None = None
    epochs: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def find_config_log(h5_path: Path) -> Path | None:
    """The config log beside ``h5_path``: same stem, else same patch size and first version number.

    The 2024 ensemble ``48px_v3.2-3.7ensemble_…h5`` is documented by ``48px_v3.2_…_config.txt``
    (its first member's log).
    """
    txts = sorted(h5_path.parent.glob("*.txt"))
    for t in txts:
        if t.stem.startswith(h5_path.stem):
            return t
    parts = h5_path.stem.split("_")
    m = re.match(r"v\d+(?:\.\d+)*", parts[1]) if len(parts) > 1 else None
    if not m:
        return None
    for t in txts:
        tp = t.stem.split("_")
        if len(tp) > 1 and tp[0] == parts[0] and re.fullmatch(re.escape(m.group(0)) + r"(?![\d.]).*", tp[1]):
            return t
    return None


def parse_config_log(path: Path) -> ConfigLog:
    """Parse an upstream config log (free text with a few known sections)."""
    text = path.read_text(errors="replace")
    log = ConfigLog(path=path)
    m = re.search(r"Classification Reports? at ([0-9]*\.?[0-9]+)", text)
    if m:
        log.threshold = float(m.group(1))
    section = None
    for line in text.splitlines():
        s = line.strip()
        if s.endswith(":") and not line.startswith(("\t", " ")):
            section = s[:-1]
            continue
        if not s:
            section = None if section == "Input Data" else section
            continue
        if section == "Input Data" and line.startswith(("\t", " ")):
            log.input_data.append(s)
        elif section == "Augmentation Parameters" and ":" in s:
            k, v = s.split(":", 1)
            log.augmentation[k.strip()] = v.strip()
    if m := re.search(r"Batch Size:\s*(\d+)", text):
        log.batch_size = int(m.group(1))
    if m := re.search(r"Training Epochs:\s*(\d+)", text):
        log.epochs = int(m.group(1))
    if m := re.search(r"Avg precisions:\s*(\{[^}]*\})", text):
        try:
            log.metrics["average_precision"] = {k: float(v) for k, v in ast.literal_eval(m.group(1)).items()}
        except (ValueError, SyntaxError):
            pass
    # text table: "Mine  precision recall f1 support"
    for m in re.finditer(r"^\s*Mine\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s*$", text, re.M):
        log.metrics.setdefault("mine", {"precision": float(m.group(1)), "recall": float(m.group(2)), "f1": float(m.group(3)), "support": int(m.group(4))})
    # JSON reports per split
    if (i := text.find("{", text.find("Classification Reports at") + 1)) > 0 and "Classification Reports at" in text:
        try:
            reports = json.loads(text[i:])
            log.metrics["mine"] = {
                split: {k: r["Mine"][k] for k in ("precision", "recall", "f1-score", "support") if k in r.get("Mine", {})}
                for split, r in reports.items()
                if isinstance(r, dict) and "Mine" in r
            }
        except ValueError:
            pass
    return log


# --------------------------------------------------------------------------------------------
# HDF5 reading


@dataclass
class _Tensor:
    """A graph tensor: NCHW feature map (``shape=(C, H, W)``) or N×F matrix (``shape=(F,)``).

    ``act`` is an activation not yet applied (Dense outputs keep theirs pending, so the model
    output's pre-activation is available); ``members`` names each output column.
    """

    name: str
    shape: tuple[int, ...]
    act: str = "linear"
    members: list[str] = field(default_factory=list)


class _Converter:
    def __init__(self, path: Path, h5: Any) -> None:
        self.path = path
        self.h5 = h5
        self.g = GraphBuilder(path.stem)
        self.ops_used: list[str] = []

    def fail(self, problem: str) -> MinewatchError:
        return MinewatchError(self.path, problem)

    # weights ----------------------------------------------------------------------------------
    def weights(self, container: str, layer: str) -> dict[str, np.ndarray]:
        root = self.h5["model_weights"] if "model_weights" in self.h5 else self.h5
        if container not in root:
            raise self.fail(f"weights of layer {layer!r} missing (no group {container!r})")
        grp = root[container]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in grp.attrs.get("weight_names", [])]
        out: dict[str, np.ndarray] = {}
        for n in names:
            parts = n.split("/")
            if len(parts) >= 2 and parts[-2] == layer:
                out[parts[-1].split(":")[0]] = np.asarray(grp[n], dtype=np.float32)
        return out

    # activations ------------------------------------------------------------------------------
    def materialize(self, t: _Tensor) -> _Tensor:
        if t.act == "linear":
            return t
        op = _ACTIVATIONS.get(t.act)
        if op is None:
            raise self.fail(f"unsupported activation {t.act!r}")
        if op == "Softmax" and len(t.shape) != 1:
            raise self.fail("softmax on a feature map is not supported")
        kw = {"axis": -1} if op == "Softmax" else {}
        return _Tensor(self.g.op(op, [t.name], prefix=op.lower(), **kw), t.shape, "linear", t.members)

    def check_act(self, act: str, layer: str) -> str:
        if act not in _ACTIVATIONS:
            raise self.fail(f"layer {layer!r}: unsupported activation {act!r}")
        return act

    # layers -----------------------------------------------------------------------------------
    def layer(self, spec: dict[str, Any], x: _Tensor | list[_Tensor], container: str) -> _Tensor:
        cls = spec.get("class_name")
        cfg = spec.get("config", {})
        name = cfg.get("name", "?")
        if cls in ("Sequential", "Functional", "Model"):
            if not isinstance(x, _Tensor):
                raise self.fail(f"sub-model {name!r} with several inputs is not supported")
            if container != "":
                raise self.fail(f"sub-model {name!r} nested more than one level deep is not supported")
            return self.model(spec, x, container=name)
        if isinstance(x, list) and cls != "Concatenate":
            if len(x) != 1:
                raise self.fail(f"layer {name!r} ({cls}) with several inputs is not supported")
            x = x[0]
        self.ops_used.append(cls)
        if cls == "Concatenate":
            xs = x if isinstance(x, list) else [x]
            axis = cfg.get("axis", -1)
            if any(len(t.shape) != 1 for t in xs) or axis not in (-1, 1):
                raise self.fail(f"layer {name!r}: Concatenate is supported only on N×F tensors along the last axis")
            acts = {t.act for t in xs}
            if len(acts) > 1 or acts & {"softmax"}:
                xs = [self.materialize(t) for t in xs]
                acts = {"linear"}
            out = self.g.op("Concat", [t.name for t in xs], prefix="concat", axis=1)
            return _Tensor(out, (sum(t.shape[0] for t in xs),), acts.pop(), [m for t in xs for m in t.members])
        assert isinstance(x, _Tensor)
        if cls == "InputLayer":
            return x
        if cls == "Dropout":  # identity at inference
            return x
        if cls == "Conv2D":
            return self.conv2d(cfg, self.materialize(x), container or name)
        if cls == "MaxPooling2D":
            return self.maxpool(cfg, self.materialize(x))
        if cls == "Flatten":
            x = self.materialize(x)
            if len(x.shape) != 3:
                return x
            nhwc = self.g.op("Transpose", [x.name], prefix="to_nhwc", perm=[0, 2, 3, 1])  # Keras flattens H, W, C
            c, h, w = x.shape
            return _Tensor(self.g.op("Flatten", [nhwc], prefix="flatten", axis=1), (h * w * c,))
        if cls == "Dense":
            return self.dense(cfg, self.materialize(x), container or name, member=container)
        raise self.fail(f"unsupported Keras layer type {cls!r} (layer {name!r})")

    def conv2d(self, cfg: dict[str, Any], x: _Tensor, container: str) -> _Tensor:
        name = cfg["name"]
        if len(x.shape) != 3:
            raise self.fail(f"layer {name!r}: Conv2D on a non-image tensor")
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise self.fail(f"layer {name!r}: only channels_last is supported")
        if tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1) or cfg.get("groups", 1) != 1:
            raise self.fail(f"layer {name!r}: dilated or grouped convolutions are not supported")
        w = self.weights(container, name)
        if "kernel" not in w:
            raise self.fail(f"layer {name!r}: kernel weights missing")
        k = w["kernel"]  # (kh, kw, cin, cout)
        kh, kw = (int(v) for v in cfg["kernel_size"])
        sh, sw = (int(v) for v in cfg.get("strides", (1, 1)))
        c, h, wd = x.shape
        if k.shape != (kh, kw, c, int(cfg["filters"])):
            raise self.fail(f"layer {name!r}: kernel shape {k.shape} does not match the config ({kh}, {kw}, {c}, {cfg['filters']})")
        pads, (oh, ow) = _pads(cfg.get("padding", "valid"), (h, wd), (kh, kw), (sh, sw), self.fail, name)
        inputs = [x.name, self.g.const(f"{name}_W", k.transpose(3, 2, 0, 1))]
        if cfg.get("use_bias", True):
            if "bias" not in w:
                raise self.fail(f"layer {name!r}: bias weights missing")
            inputs.append(self.g.const(f"{name}_b", w["bias"]))
        out = self.g.op("Conv", inputs, prefix=name, kernel_shape=[kh, kw], strides=[sh, sw], pads=pads)
        return _Tensor(out, (k.shape[3], oh, ow), self.check_act(cfg.get("activation", "linear"), name))

    def maxpool(self, cfg: dict[str, Any], x: _Tensor) -> _Tensor:
        name = cfg["name"]
        if len(x.shape) != 3 or cfg.get("data_format", "channels_last") != "channels_last":
            raise self.fail(f"layer {name!r}: MaxPooling2D needs a channels_last feature map")
        ph, pw = (int(v) for v in cfg["pool_size"])
        strides = cfg.get("strides") or (ph, pw)
        sh, sw = (int(v) for v in strides)
        c, h, w = x.shape
        pads, (oh, ow) = _pads(cfg.get("padding", "valid"), (h, w), (ph, pw), (sh, sw), self.fail, name)
        out = self.g.op("MaxPool", [x.name], prefix=name, kernel_shape=[ph, pw], strides=[sh, sw], pads=pads)
        return _Tensor(out, (c, oh, ow))

    def dense(self, cfg: dict[str, Any], x: _Tensor, container: str, member: str) -> _Tensor:
        name = cfg["name"]
        if len(x.shape) != 1:
            raise self.fail(f"layer {name!r}: Dense on a feature map (no Flatten before it) is not supported")
        w = self.weights(container, name)
        units = int(cfg["units"])
        if "kernel" not in w or w["kernel"].shape != (x.shape[0], units):
            got = w["kernel"].shape if "kernel" in w else None
            raise self.fail(f"layer {name!r}: kernel shape {got} does not match ({x.shape[0]}, {units})")
        bias = w.get("bias", np.zeros(units, np.float32)) if cfg.get("use_bias", True) else np.zeros(units, np.float32)
        out = self.g.op("Gemm", [x.name, self.g.const(f"{name}_W", w["kernel"]), self.g.const(f"{name}_b", bias)], prefix=name)
        members = [member] if units == 1 else [f"{member or '{top}'}:{i}" for i in range(units)]
        return _Tensor(out, (units,), self.check_act(cfg.get("activation", "linear"), name), members)

    # models -----------------------------------------------------------------------------------
    def model(self, spec: dict[str, Any], x: _Tensor, container: str) -> _Tensor:
        cls = spec.get("class_name")
        cfg = spec.get("config", {})
        layers = cfg.get("layers") if isinstance(cfg, dict) else None
        if not isinstance(layers, list):
            raise self.fail(f"{cls} model config has no layer list")
        if cls == "Sequential":
            for L in layers:
                x = self.layer(L, x, container)
            return x
        # Functional: evaluate the layer graph from its input to its single output
        inputs = cfg.get("input_layers", [])
        outputs = cfg.get("output_layers", [])
        if len(inputs) != 1 or len(outputs) != 1:
            raise self.fail("only single-input, single-output Functional models are supported")
        values: dict[tuple[str, int], _Tensor] = {(inputs[0][0], 0): x}
        pending = [L for L in layers if L.get("class_name") != "InputLayer"]
        while pending:
            progressed = False
            for L in list(pending):
                nodes = L.get("inbound_nodes", [])
                if not nodes or not all(isinstance(n, list) for n in nodes):
                    raise self.fail(f"layer {L.get('name')!r}: unsupported Functional node format (Keras 3 files are not supported)")
                ready = all(len(ref) >= 2 and (ref[0], ref[1]) in values for node in nodes for ref in node)
                if not ready:
                    continue
                # Keras numbers a nested model's calls from 1 when its own construction node (from
                # its InputLayer) is not saved: the i-th saved call is node i + 1.
                offset = 1 if _skips_first_node(L) else 0
                for i, node in enumerate(nodes):
                    args = [values[(ref[0], ref[1])] for ref in node]
                    values[(L["name"], i + offset)] = self.layer(L, args if len(args) > 1 else args[0], container)
                pending.remove(L)
                progressed = True
            if not progressed:
                raise self.fail("Functional model graph has unresolvable or cyclic inputs")
        key = (outputs[0][0], outputs[0][1])
        if key not in values:
            raise self.fail(f"output layer {outputs[0][0]!r} not found")
        return values[key]


def _skips_first_node(spec: dict[str, Any]) -> bool:
    """True for a nested model that starts with its own InputLayer (Keras then skips its node 0)."""
    if spec.get("class_name") not in ("Sequential", "Functional", "Model"):
        return False
    layers = spec.get("config", {}).get("layers", [])
    return bool(layers) and layers[0].get("class_name") == "InputLayer"


def _pads(padding: str, hw: tuple[int, int], k: tuple[int, int], s: tuple[int, int], fail: Any, name: str) -> tuple[list[int], tuple[int, int]]:
    """ONNX pads (top, left, bottom, right) and output size for Keras 'valid' / 'same' (TensorFlow rule: extra pad at the end)."""
    if padding == "valid":
        out = tuple((n - kk) // ss + 1 for n, kk, ss in zip(hw, k, s))
        if min(out) < 1:
            raise fail(f"layer {name!r}: input {hw} smaller than kernel {k}")
        return [0, 0, 0, 0], out  # type: ignore[return-value]
    if padding == "same":
        out = tuple(-(-n // ss) for n, ss in zip(hw, s))
        total = [max((o - 1) * ss + kk - n, 0) for o, ss, kk, n in zip(out, s, k, hw)]
        begin = [t // 2 for t in total]
        return [begin[0], begin[1], total[0] - begin[0], total[1] - begin[1]], out  # type: ignore[return-value]
    raise fail(f"layer {name!r}: unsupported padding {padding!r}")


@dataclass
class KerasConversion:
    """The converted graph and what we learned about the model."""

    onnx_bytes: bytes
    input_shape: tuple[int, int, int]
    members: list[str]
    output_activation: str
    keras_version: str
    layer_types: list[str]
    architecture: str
    n_params: int


def convert_keras_h5(path: str | Path, input_norm: str = "none", bands: list[str] | None = None) -> KerasConversion:
    """Read a Keras 2 HDF5 model and return an equivalent ONNX graph (see module docstring).

    ``input_norm`` prepends the upstream normalisation of reflectance input ``x = DN/10000``:
    ``"none"`` (the graph is the bare Keras model), ``"reflectance"`` (``Clip(x, 0, 1)``) or
    ``"unit_norm_2021"`` (``(DN - mean_b) / std_b`` with the 2021 per-band constants; needs ``bands``).
    """
    if input_norm not in INPUT_NORMS:
        raise MinewatchError("--input-norm", f"unknown input normalisation {input_norm!r} (choose from {', '.join(INPUT_NORMS)})")
    import h5py

    path = Path(path)
    if not path.is_file():
        raise MinewatchError(path, "file not found")
    try:
        is_h5 = h5py.is_hdf5(path)
    except OSError as e:
        raise MinewatchError(path, f"unreadable file ({e})") from None
    if not is_h5:
        raise MinewatchError(path, "not an HDF5 file (expected a Keras .h5 model)")
    try:
        with h5py.File(path, "r") as h5:
            raw = h5.attrs.get("model_config")
            if raw is None:
                raise MinewatchError(path, "HDF5 file is not a Keras model (no 'model_config' attribute)")
            try:
                config = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
            except ValueError as e:
                raise MinewatchError(path, f"corrupt Keras model_config JSON ({e})") from None
            kv = h5.attrs.get("keras_version", b"?")
            keras_version = kv.decode() if isinstance(kv, bytes) else str(kv)
            return _convert(path, h5, config, keras_version, input_norm, bands)
    except MinewatchError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        msg = str(e).splitlines()[0][:160] if str(e) else e.__class__.__name__
        raise MinewatchError(path, f"unreadable or truncated Keras HDF5 ({msg})") from None


def _input_shape(config: dict[str, Any], fail: Any) -> tuple[int, int, int]:
    cfg = config.get("config", {})
    for L in cfg.get("layers", []) if isinstance(cfg, dict) else []:
        if L.get("class_name") == "InputLayer":
            shp = L["config"].get("batch_input_shape") or L["config"].get("batch_shape")
            if shp and len(shp) == 4 and all(isinstance(v, int) for v in shp[1:]):
                return int(shp[1]), int(shp[2]), int(shp[3])
            break
    if isinstance(cfg, dict) and "build_input_shape" in cfg:
        shp = cfg["build_input_shape"]
        if shp and len(shp) == 4:
            return int(shp[1]), int(shp[2]), int(shp[3])
    raise fail("cannot find a static N×H×W×C input shape in the model config")


def _convert(path: Path, h5: Any, config: dict[str, Any], keras_version: str, input_norm: str, bands: list[str] | None) -> KerasConversion:
    conv = _Converter(path, h5)
    if config.get("class_name") not in ("Sequential", "Functional", "Model"):
        raise conv.fail(f"unsupported top-level model class {config.get('class_name')!r}")
    h, w, c = _input_shape(config, conv.fail)
    g = conv.g
    x = "x"
    if input_norm == "reflectance":
        x = g.op("Clip", [x, g.const("zero", 0.0), g.const("one", 1.0)], prefix="reflectance_clip")
    elif input_norm == "unit_norm_2021":
        if bands is None or len(bands) != c or any(b not in UNIT_NORM_2021 for b in bands):
            raise conv.fail(f"unit_norm_2021 needs {c} bands among {sorted(UNIT_NORM_2021)}, got {bands}")
        mean = np.array([UNIT_NORM_2021[b][0] for b in bands])
        std = np.array([UNIT_NORM_2021[b][1] for b in bands])
        x = g.op("Mul", [x, g.const("unit_norm_scale", 1e4 / std)], prefix="unit_norm_mul")
        x = g.op("Add", [x, g.const("unit_norm_shift", -mean / std)], prefix="unit_norm")
    nchw = g.op("Transpose", [x], prefix="to_nchw", perm=[0, 3, 1, 2])
    out = conv.model(config, _Tensor(nchw, (c, h, w)), container="")
    if len(out.shape) != 1:
        raise conv.fail("model output is not an N×K matrix")
    top = model_version(path)
    members = [(m or top).replace("{top}", top) for m in out.members] if out.members else [top]
    keras_logits = g.op("Identity", [out.name], output="keras_logits")
    if out.act == "sigmoid":
        logits = g.op("Identity", [out.name], output="logits")
        n_out = out.shape[0]
    elif out.act == "softmax" and out.shape[0] == 2:
        # p(class 1) = softmax(z)[1] = sigmoid(z1 - z0); class 1 is "Mine" in the upstream logs
        logits = g.op("MatMul", [out.name, g.const("softmax2_to_logit", [[-1.0], [1.0]])], output="logits")
        n_out = 1
        members = [top]
    else:
        raise conv.fail(f"unsupported output: {out.shape[0]} unit(s) with activation {out.act!r} (need sigmoid, or softmax over 2 classes)")
    del logits, keras_logits
    model = g.finish(
        [float_input("x", ["N", h, w, c])],
        [float_input("logits", ["N", n_out]), float_input("keras_logits", ["N", out.shape[0]])],
        doc=f"Converted by minewatch from {path.name} (Keras {keras_version}); input clip(DN/10000, 0, 1), NHWC.",
    )
    n_params = int(sum(np.prod(t.dims) for t in model.graph.initializer if t.name.endswith(("_W", "_b"))))
    return KerasConversion(
        onnx_bytes=model.SerializeToString(),
        input_shape=(h, w, c),
        members=members,
        output_activation=out.act,
        keras_version=keras_version,
        layer_types=sorted(set(conv.ops_used)),
        architecture=_describe(config),
        n_params=n_params,
    )


def _describe(config: dict[str, Any]) -> str:
    """A one-line architecture summary, e.g. ``6× [Conv2D 32 3×3 same relu ×3 → MaxPool 2 → …]``."""

    def seq(layers: list[dict[str, Any]]) -> str:
        parts: list[str] = []
        for L in layers:
            c, cfg = L.get("class_name"), L.get("config", {})
            if c == "Conv2D":
                p = f"Conv {cfg['filters']} {cfg['kernel_size'][0]}×{cfg['kernel_size'][1]} {cfg.get('padding')} {cfg.get('activation')}"
            elif c == "MaxPooling2D":
                p = f"MaxPool {cfg['pool_size'][0]}"
            elif c == "Dense":
                p = f"Dense {cfg['units']} {cfg.get('activation')}"
            elif c == "Dropout":
                p = f"Dropout {cfg.get('rate')}"
            elif c in ("Sequential", "Functional"):
                p = "[" + seq(cfg.get("layers", [])) + "]"
            elif c in ("InputLayer",):
                continue
            else:
                p = str(c)
            if parts and parts[-1].split(" ×")[0] == p:
                n = int(parts[-1].split(" ×")[1]) + 1 if " ×" in parts[-1] else 2
                parts[-1] = f"{p} ×{n}"
            else:
                parts.append(p)
        return " → ".join(parts)

    cfg = config.get("config", {})
    layers = cfg.get("layers", []) if isinstance(cfg, dict) else []
    subs = [L for L in layers if L.get("class_name") in ("Sequential", "Functional")]
    if subs and len({seq(L["config"]["layers"]) for L in subs}) == 1:
        return f"Keras ensemble of {len(subs)} × [{seq(subs[0]['config']['layers'])}], outputs concatenated"
    return f"Keras {config.get('class_name')}: {seq(layers)}"


# --------------------------------------------------------------------------------------------
# Package writer


def import_keras(
    h5_path: str | Path,
    out_dir: str | Path,
    name: str | None = None,
    bands: list[str] | None = None,
    threshold: float | None = None,
    config_log: str | Path | None = None,
    input_norm: str = "auto",
) -> Path:
    """Convert ``h5_path`` into a model package folder ``out_dir`` (card.json + model.onnx).

    Package input is always reflectance ``DN / 10000`` in the card's band order; ``input_norm``
    (default: by the model's upstream era, see :func:`default_input_norm`) is built into the graph.
    Bands default to the upstream order for the input's channel count; the threshold to the one the
    config log reports ("Classification Report at 0.8"), else 0.5. No ``model_fcn.onnx`` is written:
    the models use 'same' padding, so a whole-tile convolution would not reproduce per-patch border
    effects; detection scores these models patch by patch.
    """
    h5_path = Path(h5_path)
    t0 = time.perf_counter()
    probe = convert_keras_h5(h5_path, "none")  # validates the file and tells the channel count
    h, w, c = probe.input_shape
    if bands is not None:
        if len(bands) != c:
            raise MinewatchError("--bands", f"{len(bands)} bands given but {h5_path.name} takes {c} channels")
        spec = BandSpec(bands=list(bands), rendering=UPSTREAM_RENDERING, level="L1C")
    else:
        spec = upstream_band_spec(c, h5_path)
    norm = default_input_norm(h5_path) if input_norm == "auto" else input_norm
    conv = convert_keras_h5(h5_path, norm, spec.bands) if norm != "none" else probe
    seconds = time.perf_counter() - t0
    if h != w:
        raise MinewatchError(h5_path, f"non-square input {h}×{w} is not supported by the package format")

    log_path = Path(config_log) if config_log else find_config_log(h5_path)
    if log_path is not None and not log_path.is_file():
        raise MinewatchError(log_path, "config log not found")
    log = parse_config_log(log_path) if log_path else ConfigLog()
    thr = threshold if threshold is not None else log.threshold if log.threshold is not None else 0.5
    thr_source = "given" if threshold is not None else f"config log {log_path.name}" if log.threshold is not None and log_path else "default 0.5"
    norm_text = {
        "none": "fed to the Keras layers unchanged",
        "reflectance": "clipped to [0, 1] inside the graph, as upstream Earth Engine inference does",
        "unit_norm_2021": "standardised per band inside the graph with the upstream 2021 constants (DN - mean) / std",
    }[norm]

    card = ModelCard(
        name=name or model_version(h5_path),
        spec=spec,
        members=conv.members,
        architecture=conv.architecture,
        patch_px=h,
        step_px=h // 2,
        threshold=float(thr),
        fcn_stride=None,
        validated_levels={},
        metrics={"upstream_reported": log.metrics} if log.metrics else {},
        training={
            "source": "upstream Keras HDF5 (Earth Genome, Amazon Mining Watch; CC BY 4.0)",
            "file": h5_path.name,
            "sha256": sha256_file(h5_path),
            "keras_version": conv.keras_version,
            "n_params": conv.n_params,
            "output_activation": conv.output_activation,
            "input_norm": norm,
            "config_log": log_path.name if log_path else None,
            "threshold_source": thr_source,
            "input_data": log.input_data,
            "augmentation": log.augmentation,
            "batch_size": log.batch_size,
            "epochs": log.epochs,
            "conversion_seconds": round(seconds, 3),
        },
        notes=(
            "Imported without TensorFlow (h5py + onnx.helper). Input x: Sentinel-2 L1C reflectance DN/10000 in the "
            f"band order above, {norm_text}; {h}×{w} px patches, step {h // 2} px (upstream stride = patch/2). "
            "Band order and normalisation follow the upstream pipeline (mining-detector gee/gee.py, core/gee.py, "
            "scripts/dl_utils.py); the HDF5 itself does not state them. 'logits' is the last Dense pre-activation per "
            "member (2-class softmax: z_mine - z_not_mine); 'keras_logits' is the raw last-Dense output. No "
            "fully-convolutional graph: 'same' padding makes per-patch borders differ."
        ),
    )
    return save_package(out_dir, card, conv.onnx_bytes, None)
