"""PyTorch → ONNX graphs of the model-package contract (:mod:`minewatch.models.package`).

* ``model.onnx``: input ``x`` N×48×48×C float32 rendered values (0..255), output ``logits`` N×1.
* ``model_fcn.onnx`` (fully-convolutional architectures only): input ``x`` 1×H×W×C, any H, W ≥ 48,
  output ``logits`` 1×1×h×w, cell (i, j) = the patch with top-left pixel (i·s, j·s), s = the
  network's output stride. It is the *same weights* run over the whole raster.

Normalisation is inside the graphs (the network's first layer), so callers feed the rendered pixels.
Optional dihedral test-time augmentation (TTA) is also inside both graphs: the patch graph averages
the logits of the 8 transformed patches; the FCN graph runs the network on the 8 transformed
rasters and maps each output back, which equals per-patch TTA exactly when (H−48) and (W−48) are
multiples of s — the graph crops the raster's ragged bottom/right edge (< s px, which belongs to no
lattice patch) to make sure.

Each export is verified: ONNX Runtime must reproduce PyTorch (max abs logit difference < 1e-5).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from torch import nn

from minewatch.models import arch as archs
from minewatch.models.store import WEIGHTS_FILE, share_weights  # noqa: F401  (re-exported: the package contract lives in models)

OPSET = 17
MAX_ABS_DIFF = 1e-5


def _dihedral_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 dihedral transforms of NCHW ``x`` (identity first)."""
    t = x.transpose(2, 3)
    return [x, x.flip(3), x.flip(2), x.flip(2).flip(3), t, t.flip(3), t.flip(2), t.flip(2).flip(3)]


def _undo_views(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """Map each transformed output back to the original orientation (inverse of ``_dihedral_views``)."""
    out = []
    for k, m in enumerate(maps):
        if k in (1, 5):
            m = m.flip(3)
        elif k in (2, 6):
            m = m.flip(2)
        elif k in (3, 7):
            m = m.flip(2).flip(3)
        if k >= 4:
            m = m.transpose(2, 3)
        out.append(m)
    return out


class PatchGraph(nn.Module):
    """NHWC rendered patches → N×1 logits (optionally dihedral-TTA averaged logits)."""

    def __init__(self, model: nn.Module, tta: bool = False) -> None:
        super().__init__()
        self.model = model
        self.tta = tta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        if not self.tta:
            return self.model(x).reshape(-1, 1)
        views = _dihedral_views(x)
        z = torch.stack([self.model(v).reshape(-1) for v in views], 0)
        return z.mean(0).reshape(-1, 1)


class FCNGraph(nn.Module):
    """1×H×W×C rendered raster → 1×1×h×w logit map on an ``out_stride`` px lattice.

    ``out_stride`` is a multiple of the network's own stride (default: equal); with the 24 px
    detection step the head runs only on the lattice the detector keeps (see ``forward_strided``).
    """

    def __init__(self, fcn: nn.Module, tta: bool = False, out_stride: int | None = None) -> None:
        super().__init__()
        self.fcn = fcn
        self.tta = tta
        native = int(fcn.fcn_stride)
        self.stride = out_stride or native
        if self.stride % native:
            raise ValueError(f"output stride {self.stride} is not a multiple of the network stride {native}")
        self.head_stride = self.stride // native

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        if self.head_stride == 1:
            return self.fcn(x)
        return self.fcn.forward_strided(x, self.head_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        if not self.tta:
            return self._map(x)
        s, p = self.stride, archs.PATCH_PX
        h = x.shape[2] - (x.shape[2] - p) % s
        w = x.shape[3] - (x.shape[3] - p) % s
        x = x[:, :, :h, :w]
        maps = _undo_views([self._map(v) for v in _dihedral_views(x)])
        return torch.stack(maps, 0).mean(0)


def _to_onnx(module: nn.Module, example: torch.Tensor, dynamic_axes: dict[str, dict[int, str]]) -> bytes:
    buf = io.BytesIO()
    module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            buf,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return buf.getvalue()


def ort_run(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"x": np.asarray(x, np.float32)})[0]


def export_patch(model: nn.Module, in_bands: int, tta: bool = False) -> bytes:
    """``model.onnx`` bytes for a patch classifier."""
    graph = PatchGraph(model.eval(), tta).eval()
    ex = torch.rand(2, archs.PATCH_PX, archs.PATCH_PX, in_bands) * 255
    return _to_onnx(graph, ex, {"x": {0: "n"}, "logits": {0: "n"}})


def export_fcn(model: nn.Module, in_bands: int, tta: bool = False, out_stride: int | None = None) -> bytes | None:
    """``model_fcn.onnx`` bytes, or None when the architecture has no fully-convolutional form."""
    fcn = archs.fcn_of(model)
    if fcn is None:
        return None
    graph = FCNGraph(fcn.eval(), tta, out_stride).eval()
    ex = torch.rand(1, 72, 96, in_bands) * 255
    return _to_onnx(graph, ex, {"x": {0: "n", 1: "h", 2: "w"}, "logits": {0: "n", 2: "oh", 3: "ow"}})


@torch.no_grad()
def torch_patch_logits(model: nn.Module, x: np.ndarray, tta: bool = False) -> np.ndarray:
    return PatchGraph(model.eval(), tta).eval()(torch.from_numpy(np.asarray(x, np.float32))).numpy()


@torch.no_grad()
def torch_fcn_logits(model: nn.Module, x: np.ndarray, tta: bool = False, out_stride: int | None = None) -> np.ndarray:
    fcn = archs.fcn_of(model)
    assert fcn is not None
    return FCNGraph(fcn.eval(), tta, out_stride).eval()(torch.from_numpy(np.asarray(x, np.float32))).numpy()


def mosaic(patches: np.ndarray, rows: int = 2, cols: int = 3, crop: tuple[int, int] = (5, 7)) -> np.ndarray:
    """A 1×H×W×C raster tiled from ``patches`` (repeated if too few), its top-left ``crop`` cut off so
    the patch lattice does not line up with the tiles: realistic pixels for checking the FCN graph."""
    n = rows * cols
    p = np.resize(np.asarray(patches, np.float32), (n, *patches.shape[1:]))
    h, w, c = p.shape[1:]
    r = p.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)
    return r[None, crop[0] :, crop[1] :]


def verify(
    model: nn.Module, patch_onnx: bytes, fcn_onnx: bytes | None, sample: np.ndarray, tta: bool = False, out_stride: int | None = None
) -> float:
    """Max |ONNX Runtime − PyTorch| logit difference over ``sample`` patches (and, for the FCN graph,
    a raster mosaicked from them); raises if it reaches :data:`MAX_ABS_DIFF`.

    Pass realistic pixels (validation chips): float32 rounding grows with the logits' magnitude
    (relative ~1e-6), and uniform noise drives untypically large logits.
    """
    sample = np.asarray(sample, np.float32)
    diff = float(np.abs(ort_run(patch_onnx, sample) - torch_patch_logits(model, sample, tta)).max())
    if fcn_onnx is not None:
        raster = mosaic(sample)
        diff = max(diff, float(np.abs(ort_run(fcn_onnx, raster) - torch_fcn_logits(model, raster, tta, out_stride)).max()))
    if not diff < MAX_ABS_DIFF:
        raise RuntimeError(f"ONNX Runtime differs from PyTorch by {diff:.2e} (limit {MAX_ABS_DIFF:g})")
    return diff


def export_package_graphs(
    model: nn.Module, in_bands: int, sample: np.ndarray, tta: bool = False, fcn_out_stride: int | None = None
) -> tuple[bytes, bytes | None, float]:
    """Both graphs plus the verified max ONNX-vs-PyTorch difference.

    ``fcn_out_stride``: the FCN graph's output lattice (card ``fcn_stride``); default the network's
    native stride. Pass the detection step (24) for the fastest graph.
    """
    model = model.float().eval().to(memory_format=torch.contiguous_format)
    patch = export_patch(model, in_bands, tta)
    fcn = export_fcn(model, in_bands, tta, fcn_out_stride)
    return patch, fcn, verify(model, patch, fcn, sample, tta, fcn_out_stride)


def graph_info(onnx_bytes: bytes) -> dict[str, Any]:
    import onnx

    m = onnx.load_from_string(onnx_bytes)
    return {"opset": m.opset_import[0].version, "nodes": len(m.graph.node), "bytes": len(onnx_bytes)}
