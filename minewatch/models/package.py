"""A model package: ONNX graphs plus a JSON model card, scored with ONNX Runtime.

Layout of a package folder::

    card.json        ModelCard: bands + rendering, patch size, step, threshold, metrics, provenance
    model.onnx       patch graph: input ``x`` N×H×W×C float32 (rendered values, see minewatch.bands),
                     output ``logits`` N×M (one column per ensemble member)
    model_fcn.onnx   optional fully-convolutional graph: input ``x`` 1×H×W×C of any size, output
                     ``logits`` 1×M×h×w where cell (i, j) is the patch whose top-left pixel is
                     (i*fcn_stride, j*fcn_stride); identical to the patch graph on every patch
    weights-<hash>.bin optional ONNX external data: the weights both graphs share, stored once
                     (ONNX Runtime resolves it beside the graph file; copy it with the graphs)

Scores are sigmoid probabilities; the ensemble score is the mean of member probabilities and each
member's score is kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from minewatch.atomic import atomic_path, sha256_file, write_json_atomic
from minewatch.bands import BandSpec
from minewatch.config import package_data_dir
from minewatch.errors import MinewatchError

CARD = "card.json"
PATCH_GRAPH = "model.onnx"
FCN_GRAPH = "model_fcn.onnx"


@dataclass
class ModelCard:
    """What a model is, what it expects, and how well it did: travels with every package."""

    name: str
    spec: BandSpec
    members: list[str] = field(default_factory=lambda: ["m0"])
    architecture: str = ""
    patch_px: int = 48
    step_px: int = 24
    threshold: float = 0.5
    fcn_stride: int | None = None
    """Output stride of ``model_fcn.onnx`` in pixels (must divide ``step_px``); None: no fast path."""
    validated_levels: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Processing level → metrics measured on it, e.g. {"L1C": {...}, "L2A": {...}}."""
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    """Provenance: training-data digest, chip count, seeds, epochs, augmentations, source of weights."""
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    notes: str = ""
    checksums: dict[str, str] = field(default_factory=dict)
    """Graph file name → SHA-256, written by :func:`save_package`: a truncated or swapped graph can
    still parse as ONNX and score nonsense, so :func:`load_package` compares before loading."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spec"] = self.spec.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        d = dict(d)
        d["spec"] = BandSpec.from_dict(d.get("spec", {}))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))).astype(np.float32)


class ModelPackage:
    """A loaded package; ONNX Runtime sessions are created lazily and reused."""

    def __init__(self, path: Path, card: ModelCard) -> None:
        self.path = path
        self.card = card

    def __repr__(self) -> str:
        return f"ModelPackage({self.card.name!r}, members={len(self.card.members)}, bands={self.card.spec.bands})"

    @property
    def has_fast_path(self) -> bool:
        return self.card.fcn_stride is not None and (self.path / FCN_GRAPH).exists()

    @staticmethod
    def _session(path: Path) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return ort.InferenceSession(str(path), opts, providers=ort_providers())
        except Exception as e:  # onnxruntime raises its own exception types
            raise MinewatchError(path, f"not a loadable ONNX graph ({str(e).splitlines()[0][:200]})") from None

    @property
    def execution_provider(self) -> str:
        """The ONNX Runtime execution provider that actually runs this package (``CUDAExecutionProvider``
        or ``CPUExecutionProvider``): ONNX Runtime falls back to CPU when CUDA cannot start, so ask the session."""
        return str(self.patch_session.get_providers()[0])

    @cached_property
    def patch_session(self) -> Any:
        return self._check_graph(self._session(self.path / PATCH_GRAPH), self.path / PATCH_GRAPH)

    @cached_property
    def fcn_session(self) -> Any:
        return self._check_graph(self._session(self.path / FCN_GRAPH), self.path / FCN_GRAPH)

    def _check_graph(self, sess: Any, path: Path) -> Any:
        """The graph must take the bands its card promises (else ONNX Runtime fails mid-run, obscurely)."""
        shape = sess.get_inputs()[0].shape
        nb = len(self.card.spec.bands)
        if shape and isinstance(shape[-1], int) and shape[-1] != nb:
            raise MinewatchError(path, f"graph takes {shape[-1]} input bands but card.json lists {nb} {self.card.spec.bands}: the package is inconsistent")
        return sess

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        nb = len(self.card.spec.bands)
        if x.shape[-1] != nb:
            raise MinewatchError(self.path, f"model expects {nb} bands {self.card.spec.bands}, input has {x.shape[-1]}")
        return x

    def logits(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Per-member logits N×M for rendered patches N×P×P×C."""
        x = self._check_input(x)
        p = self.card.patch_px
        if x.shape[1:3] != (p, p):
            raise MinewatchError(self.path, f"model expects {p}×{p} patches, got {x.shape[1]}×{x.shape[2]}")
        out = [self.patch_session.run(["logits"], {"x": x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
        if not out:
            return np.zeros((0, len(self.card.members)), np.float32)
        return np.concatenate(out).reshape(len(x), -1)

    def score_patches(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Per-member probabilities N×M for rendered patches N×P×P×C."""
        return _sigmoid(self.logits(x, batch_size))

    def score_tile(self, x: np.ndarray, fast: bool | None = None, batch_size: int = 512) -> np.ndarray:
        """Member probabilities M×R×C on the half-patch lattice of a rendered H×W×C raster.

        Cell (r, c) scores the patch with top-left pixel (r*step, c*step). With ``fast`` (default:
        when the package has a fully-convolutional graph) the trunk runs once over the raster;
        otherwise patches are cut and scored in batches. Both give the same numbers.
        """
        x = self._check_input(x)
        p, s = self.card.patch_px, self.card.step_px
        nr, nc = (x.shape[0] - p) // s + 1, (x.shape[1] - p) // s + 1
        if nr <= 0 or nc <= 0:
            return np.zeros((len(self.card.members), 0, 0), np.float32)
        fast = self.has_fast_path if fast is None else fast
        if fast:
            if not self.has_fast_path:
                raise MinewatchError(self.path, "this model has no fully-convolutional graph (fast path)")
            k = s // int(self.card.fcn_stride)  # type: ignore[arg-type]
            h, w = (nr - 1) * s + p, (nc - 1) * s + p
            z = self.fcn_session.run(["logits"], {"x": x[None, :h, :w]})[0][0]
            return _sigmoid(z[:, ::k, ::k][:, :nr, :nc])
        windows = np.lib.stride_tricks.sliding_window_view(x, (p, p), axis=(0, 1))[::s, ::s][:nr, :nc]
        patches = windows.transpose(0, 1, 3, 4, 2).reshape(nr * nc, p, p, x.shape[-1])
        probs = self.score_patches(patches, batch_size)
        return probs.T.reshape(-1, nr, nc)

    def warn_if_level_unvalidated(self, level: str) -> bool:
        """Warn once (and return True) when imagery of ``level`` is not among the card's validated levels."""
        levels = {k.upper() for k in self.card.validated_levels} | {self.card.spec.level.upper()}
        if level.upper() not in levels:
            warnings.warn(
                f"model {self.card.name!r} was trained on {self.card.spec.level} and validated on "
                f"{sorted(levels)}, not on {level.upper()} imagery: scores may be unreliable",
                stacklevel=2,
            )
            return True
        return False


def ort_providers() -> list[str]:
    """Execution providers to ask ONNX Runtime for, best first: CUDA when this onnxruntime build has
    it (the ``gpu`` extra installs ``onnxruntime-gpu``), then CPU. ``MINEWATCH_DEVICE=cpu`` forces CPU."""
    import onnxruntime as ort

    want = ("CPUExecutionProvider",) if os.environ.get("MINEWATCH_DEVICE", "").lower() == "cpu" else ("CUDAExecutionProvider", "CPUExecutionProvider")
    have = set(ort.get_available_providers())
    return [p for p in want if p in have] or ["CPUExecutionProvider"]


def resolve_package_path(name_or_path: str | Path) -> Path:
    """``default`` (or another name shipped in ``minewatch/data/models``) or a folder path."""
    p = Path(name_or_path)
    if not p.exists():
        shipped = package_data_dir() / "models" / str(name_or_path)
        if shipped.exists():
            return shipped
        raise MinewatchError(name_or_path, "model not found (give a package folder or a shipped model name)")
    return p


def load_package(name_or_path: str | Path) -> ModelPackage:
    """Load a package folder (or shipped model name), checking the card and graphs exist."""
    path = resolve_package_path(name_or_path)
    if path.is_file():
        raise MinewatchError(path, "expected a model package folder (card.json + model.onnx); to import a Keras .h5 use 'minewatch models import-keras'")
    card_path = path / CARD
    if not card_path.exists():
        raise MinewatchError(path, "not a model package: card.json missing")
    try:
        card = ModelCard.from_dict(json.loads(card_path.read_text()))
    except (ValueError, TypeError, KeyError) as e:
        raise MinewatchError(card_path, f"invalid model card ({e})") from None
    if not (path / PATCH_GRAPH).exists():
        raise MinewatchError(path, f"not a model package: {PATCH_GRAPH} missing")
    check_card(card, card_path)
    for name, digest in card.checksums.items():
        f = path / name
        if not f.exists():
            raise MinewatchError(f, "listed in card.json's checksums but missing from the package (copy the whole package folder)")
        if sha256_file(f) != digest:
            raise MinewatchError(f, "checksum differs from card.json: the file is truncated, corrupted or replaced (copy or export the package again)")
    for graph in (PATCH_GRAPH, FCN_GRAPH):
        if (path / graph).exists():
            check_graph_file(path / graph, card, fcn=graph == FCN_GRAPH)
    return ModelPackage(path, card)


def check_card(card: ModelCard, where: Path) -> None:
    """The card's own numbers must make sense, before any tile is read (else every tile fails alike)."""
    import math

    def bad(what: str) -> MinewatchError:
        return MinewatchError(where, f"{what}: the model card is inconsistent (fix card.json or export the package again)")

    for name in ("patch_px", "step_px"):
        v = getattr(card, name)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise bad(f"{name} must be a positive whole number of pixels, got {v!r}")
    if card.step_px > card.patch_px:
        raise bad(f"step_px {card.step_px} is larger than patch_px {card.patch_px} (patches would leave gaps)")
    if card.fcn_stride is not None and (not isinstance(card.fcn_stride, int) or card.fcn_stride <= 0 or card.step_px % card.fcn_stride):
        raise bad(f"fcn_stride {card.fcn_stride!r} must be a positive divisor of step_px {card.step_px}")
    t = card.threshold
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or not 0.0 < float(t) < 1.0:
        raise bad(f"threshold must be a probability strictly between 0 and 1, got {t!r}")
    if not card.members:
        raise bad("no members listed")
    if not card.spec.bands:
        raise bad("no bands listed")


def graph_external_files(model: Any) -> set[str]:
    """File names an ONNX model (an ``onnx.ModelProto``) keeps its external tensor data in."""
    import onnx

    out: set[str] = set()
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            out.update(e.value for e in t.external_data if e.key == "location")
    return out


def _dims(value_info: Any) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def check_graph_file(path: Path, card: ModelCard, fcn: bool = False) -> None:
    """The graph's declared input/output shapes must be the card's (patch size, bands, members), and
    every external weights file it points at must be there. Reads the graph structure only."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises its own types
        raise MinewatchError(path, f"not a loadable ONNX graph ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
    for name in sorted(graph_external_files(model)):
        if not (path.parent / name).exists():
            raise MinewatchError(path.parent / name, f"weights file that {path.name} points at is missing (copy the whole package folder)")
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if not inputs:
        raise MinewatchError(path, "not a loadable ONNX graph (empty, or it declares no input)")
    dims = _dims(inputs[0])
    nb = len(card.spec.bands)
    if len(dims) != 4:
        raise MinewatchError(path, f"graph input has {len(dims)} dimensions, expected N×H×W×C")
    if dims[3] is not None and dims[3] != nb:
        raise MinewatchError(path, f"graph takes {dims[3]} input bands but card.json lists {nb} {card.spec.bands}: the package is inconsistent")
    if not fcn and (dims[1], dims[2]) != (None, None) and (dims[1], dims[2]) != (card.patch_px, card.patch_px):
        raise MinewatchError(path, f"graph takes {dims[1]}×{dims[2]} px patches but card.json says patch_px {card.patch_px}: the package is inconsistent")
    outs = {o.name: _dims(o) for o in model.graph.output}
    if not fcn and "logits" in outs and len(outs["logits"]) == 2 and outs["logits"][1] is not None and outs["logits"][1] != len(card.members):
        raise MinewatchError(path, f"graph outputs {outs['logits'][1]} member scores but card.json lists {len(card.members)} members {card.members}")


def save_package(folder: str | Path, card: ModelCard, patch_onnx: bytes, fcn_onnx: bytes | None = None) -> Path:
    """Write a package atomically file by file; the card goes last so a partial package never loads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    card.checksums = {}
    for name, blob in ((PATCH_GRAPH, patch_onnx), (FCN_GRAPH, fcn_onnx)):
        if blob is None:
            (folder / name).unlink(missing_ok=True)
            continue
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(blob)
        card.checksums[name] = hashlib.sha256(blob).hexdigest()
    # ONNX external weights: only the files the graphs point at (not whatever else lies in the folder)
    import onnx

    referenced: set[str] = set()
    for blob in (patch_onnx, fcn_onnx):
        if blob is not None:
            referenced |= graph_external_files(onnx.load_from_string(blob))
    for name in sorted(referenced):
        card.checksums[name] = sha256_file(folder / name)
    if fcn_onnx is None:
        card.fcn_stride = None
    write_json_atomic(folder / CARD, card.to_dict())
    return folder
