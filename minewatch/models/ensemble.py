"""Ensembles of model packages, merged at the ONNX level (no PyTorch).

Why ONNX-level: members may come from different sources — our trained networks, converted Keras
models — and different architectures. Each member graph already takes the rendered input ``x`` and
returns its ``logits`` column(s); the merged graph feeds the one input to every member and
concatenates their logits along axis 1. That is the package contract for an ensemble (N×M patch
logits, 1×M×h×w fully-convolutional maps), so detection, evaluation and the per-member scores work
unchanged, and a whole tile is still scored in one ONNX Runtime call.

Members must agree on what they read (bands, rendering, processing level, patch size, step); the
fast (fully-convolutional) graph is kept only when every member has one on the same lattice.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, compose, helper, version_converter

from minewatch.errors import MinewatchError
from minewatch.models.package import FCN_GRAPH, PATCH_GRAPH, ModelCard, ModelPackage


def merge_graphs(models: list[onnx.ModelProto], doc: str = "") -> onnx.ModelProto:
    """One graph running every member on the shared input ``x``; output ``logits`` = members' logits
    concatenated on axis 1 (member order). Members are converted to the highest opset among them."""
    if not models:
        raise ValueError("no member graphs")
    opset = max(_default_opset(m) for m in models)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    infos: list[onnx.ValueInfoProto] = []
    outs: list[str] = []
    widths: list[int | None] = []
    for i, m in enumerate(models):
        if _default_opset(m) != opset:
            m = version_converter.convert_version(m, opset)
        (inp,), (out,) = m.graph.input, m.graph.output
        if (inp.name, out.name) != ("x", "logits"):
            raise ValueError(f"member {i}: expected input 'x' and output 'logits', got {inp.name!r} → {out.name!r}")
        m = compose.add_prefix(m, prefix=f"m{i}/")
        nodes.append(helper.make_node("Identity", ["x"], [f"m{i}/x"], name=f"m{i}/feed"))
        nodes.extend(m.graph.node)
        inits.extend(m.graph.initializer)
        infos.extend(m.graph.value_info)
        outs.append(f"m{i}/logits")
        d1 = out.type.tensor_type.shape.dim[1]
        widths.append(d1.dim_value if d1.HasField("dim_value") else None)
    nodes.append(helper.make_node("Concat", outs, ["logits"], name="ensemble/concat", axis=1))
    x = _value_info("x", models[0].graph.input[0])
    width = "members" if None in widths else sum(w for w in widths if w is not None)
    y = _value_info("logits", models[0].graph.output[0], axis1=width)
    graph = helper.make_graph(nodes, "minewatch_ensemble", [x], [y], initializer=inits, value_info=infos)
    merged = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="minewatch")
    merged.ir_version = max(m.ir_version for m in models)
    if doc:
        merged.doc_string = doc
    onnx.checker.check_model(merged)
    return merged


def _default_opset(m: onnx.ModelProto) -> int:
    return next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 1)


def _value_info(name: str, like: onnx.ValueInfoProto, axis1: int | str | None = None) -> onnx.ValueInfoProto:
    """A float tensor value info shaped like ``like`` (symbolic dims kept); ``axis1`` replaces axis 1."""
    dims: list[Any] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in like.type.tensor_type.shape.dim]
    if axis1 is not None:
        dims[1] = axis1
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def _check_compatible(pkgs: list[ModelPackage]) -> None:
    first = pkgs[0].card
    for p in pkgs[1:]:
        c = p.card
        for what, a, b in (
            ("bands", c.spec.bands, first.spec.bands),
            ("rendering", c.spec.rendering, first.spec.rendering),
            ("processing level", c.spec.level, first.spec.level),
            ("patch size", c.patch_px, first.patch_px),
            ("step", c.step_px, first.step_px),
        ):
            if a != b:
                raise MinewatchError(p.path, f"cannot join an ensemble with {pkgs[0].path}: {what} differ ({a} vs {b})")


def member_names(pkgs: list[ModelPackage]) -> list[str]:
    """Unique, column-safe member names: the package name for one-member packages, else name.member."""
    names: list[str] = []
    for p in pkgs:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", p.card.name) or "model"
        for m in p.card.members:
            n = base if len(p.card.members) == 1 else f"{base}.{m}"
            k, cand = 1, n
            while cand in names:
                k += 1
                cand = f"{n}_{k}"
            names.append(cand)
    return names


def build_ensemble(pkgs: list[ModelPackage], name: str, members: list[str] | None = None) -> tuple[ModelCard, bytes, bytes | None]:
    """The merged card (uncalibrated: threshold = mean member threshold) and graphs of ``pkgs``.

    ``members``: names for the score columns (default :func:`member_names`)."""
    if len(pkgs) < 2:
        raise MinewatchError(pkgs[0].path if pkgs else "--model", "an ensemble needs at least two model packages")
    _check_compatible(pkgs)
    names = member_names(pkgs)
    if members is not None:
        if len(members) != len(names) or len(set(members)) != len(members) or not all(re.fullmatch(r"[A-Za-z0-9_.-]+", m) for m in members):
            raise MinewatchError("--member-names", f"need {len(names)} unique names of letters, digits, '_', '.', '-' (got {members})")
        names = list(members)
    first = pkgs[0].card
    doc = "minewatch ensemble of " + ", ".join(p.card.name for p in pkgs)
    try:
        patch = merge_graphs([onnx.load(str(p.path / PATCH_GRAPH)) for p in pkgs], doc).SerializeToString()
        strides = {p.card.fcn_stride for p in pkgs}
        fast = all(p.has_fast_path for p in pkgs) and len(strides) == 1
        fcn = merge_graphs([onnx.load(str(p.path / FCN_GRAPH)) for p in pkgs], doc).SerializeToString() if fast else None
    except (ValueError, onnx.checker.ValidationError) as e:
        raise MinewatchError(pkgs[0].path, f"cannot merge the member graphs ({str(e).splitlines()[0][:200]})") from None
    card = ModelCard(
        name=name,
        spec=first.spec,
        members=names,
        architecture="ensemble (mean of member probabilities): " + " + ".join(p.card.architecture or p.card.name for p in pkgs),
        patch_px=first.patch_px,
        step_px=first.step_px,
        threshold=float(sum(p.card.threshold for p in pkgs) / len(pkgs)),
        fcn_stride=first.fcn_stride if fcn is not None else None,
        training={
            "ensemble_of": [
                {
                    "name": p.card.name,
                    "folder": p.path.name,  # the folder's name only: cards carry no machine paths
                    "members": p.card.members,
                    "threshold": p.card.threshold,
                    "val_ap": (p.card.metrics.get("val") or {}).get("ap"),
                    "architecture": p.card.architecture,
                    "config": p.card.training.get("config"),
                    "params": p.card.training.get("params"),
                    "checksums": p.card.checksums,
                }
                for p in pkgs
            ],
            "threshold_rule": "mean of the members' thresholds (not calibrated on chips)",
        },
        notes="" if fcn is not None else "No fast path: not every member has a fully-convolutional graph on one lattice.",
    )
    return card, patch, fcn


def write_ensemble(pkgs: list[ModelPackage], out: str | Path, name: str | None = None, members: list[str] | None = None) -> Path:
    """Merge ``pkgs`` into a new package folder ``out`` (uncalibrated; see :func:`build_ensemble`)."""
    from minewatch.models.store import write_package

    out = Path(out)
    card, patch, fcn = build_ensemble(pkgs, name or out.name, members)
    return write_package(out, card, patch, fcn)
