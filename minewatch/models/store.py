"""Writing model packages to disk: shared external weights, safe write order, copies.

Torch-free (used by training *and* by ``minewatch models ensemble``, which runs on the core install).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from minewatch.atomic import atomic_path, write_json_atomic
from minewatch.models.package import CARD, FCN_GRAPH, PATCH_GRAPH, save_package

WEIGHTS_FILE = "weights.bin"
_ALIGN = 4096


def share_weights(graphs: list[bytes], location: str = WEIGHTS_FILE, min_bytes: int = 1024) -> tuple[list[bytes], bytes]:
    """Move the graphs' large initializers into one external-data blob, each distinct tensor once.

    The patch and FCN graphs hold the same weights (the FCN graph *is* the patch network run over a
    raster), so a package with both would otherwise store them twice. ONNX external data lets both
    graphs point at the same bytes of ``weights.bin`` beside them (ONNX Runtime resolves it relative
    to the graph's folder). Offsets are page-aligned so the runtime may memory-map them.
    """
    import onnx
    from onnx import numpy_helper

    models = [onnx.load_from_string(g) for g in graphs]
    blob = bytearray()
    where: dict[str, tuple[int, int]] = {}
    for m in models:
        for t in m.graph.initializer:
            raw = numpy_helper.to_array(t).tobytes()
            if len(raw) < min_bytes:
                continue
            key = hashlib.sha256(raw).hexdigest() + str(t.data_type) + str(list(t.dims))
            if key not in where:
                blob.extend(b"\0" * (-len(blob) % _ALIGN))
                where[key] = (len(blob), len(raw))
                blob.extend(raw)
            offset, length = where[key]
            t.ClearField("raw_data")
            for field in ("float_data", "int64_data", "int32_data", "double_data"):
                t.ClearField(field)
            del t.external_data[:]
            t.data_location = onnx.TensorProto.EXTERNAL
            for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
                entry = t.external_data.add()
                entry.key, entry.value = k, v
    return [m.SerializeToString() for m in models], bytes(blob)


def write_package(out: str | Path, card: Any, patch_onnx: bytes, fcn_onnx: bytes | None) -> Path:
    """Save a package; with both graphs, their (identical) weights are stored once, in
    ``weights-<hash>.bin`` beside them.

    Every intermediate state stays loadable: the content-addressed weights file goes first (graphs
    of an older package keep pointing at their own file), then the graphs, the card last, and only
    then are stale weights files removed.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keep: set[str] = set()
    if fcn_onnx is not None:
        name = f"weights-{hashlib.sha256(patch_onnx + fcn_onnx).hexdigest()[:12]}.bin"
        (patch_onnx, fcn_onnx), blob = share_weights([patch_onnx, fcn_onnx], location=name)
        with atomic_path(out / name) as tmp:
            tmp.write_bytes(blob)
        keep.add(name)
    save_package(out, card, patch_onnx, fcn_onnx)
    for stale in out.glob("weights-*.bin"):
        if stale.name not in keep:
            stale.unlink()
    return out


def copy_package(src: str | Path, dest: str | Path, card: Any | None = None) -> Path:
    """Copy a package folder (graphs, shared weights, card — in the safe order), optionally with a new card."""
    src, dest = Path(src), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    weights = sorted(p.name for p in src.glob("weights-*.bin"))
    for name in [*weights, PATCH_GRAPH, FCN_GRAPH]:
        if (src / name).exists():
            with atomic_path(dest / name) as tmp:
                shutil.copyfile(src / name, tmp)
        elif name == FCN_GRAPH:
            (dest / name).unlink(missing_ok=True)
    if card is None:
        with atomic_path(dest / CARD) as tmp:
            shutil.copyfile(src / CARD, tmp)
    else:
        write_json_atomic(dest / CARD, card.to_dict())
    for stale in dest.glob("weights-*.bin"):
        if stale.name not in weights:
            stale.unlink()
    return dest
