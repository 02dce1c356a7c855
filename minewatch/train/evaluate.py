"""Evaluate a model package on a chip dataset: ONNX Runtime only (no PyTorch).

The numbers a user needs to trust a mine classifier: average precision and ROC AUC over the whole
set, sensitivity/specificity at the model's own threshold, sensitivity at 99% specificity (the
operating point that keeps a basin-wide map usable), the F0.5-optimal threshold, the same per
labelled ``source`` (regions and negative types behave very differently), and sensitivity on mines
inside geographic hold-out regions. Scores are the ensemble mean of member probabilities; for an
ensemble each member is summarised too.

Inputs are checked, never silently coerced: bands must match the card exactly. Two adaptations are
allowed, both reported in the result: centre-cropping chips larger than the model's patch (chips
are centred on their label point), and — only when asked (``rerender=True``) — re-rendering chips
through DN into the model's rendering (exact below the chips' saturation, e.g. DN 3000 for the RGB
chips; brighter pixels stay clipped).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from shapely.geometry.base import BaseGeometry

from minewatch.atomic import atomic_path
from minewatch.chips import ChipSet, geographic_mask
from minewatch.errors import MinewatchError
from minewatch.models.package import ModelPackage
from minewatch.train import metrics as M


def _where(chips: ChipSet) -> str:
    return str(chips.path) if chips.path is not None else "chips"


def check_inputs(pkg: ModelPackage, chips: ChipSet, rerender: bool = False) -> dict[str, Any]:
    """Validate chips against the card; return the adaptation plan (crop offset, re-render flag).

    Raises a one-line :class:`MinewatchError` naming the chips folder on a band-count, band-order
    or rendering mismatch (rendering only when ``rerender`` is False) or on chips smaller than the
    model's patch.
    """
    where = _where(chips)
    want, have = pkg.card.spec, chips.spec
    if len(want.bands) != len(have.bands) or chips.pixels.shape[-1] != len(want.bands):
        raise MinewatchError(
            where,
            f"band mismatch: model {pkg.card.name!r} expects {len(want.bands)} bands {want.bands}, "
            f"chips have {chips.pixels.shape[-1]} {have.bands}",
        )
    plan: dict[str, Any] = {"rerender": None, "crop_offset": 0, "chip_px": int(chips.pixels.shape[1])}
    converting = rerender and want.rendering != have.rendering
    try:
        # with re-rendering, only band names and order must agree
        want.check_compatible(replace(have, rendering=want.rendering) if converting else have, where)
    except MinewatchError as e:
        hint = "; pass --rerender to convert the chips through DN" if e.problem.startswith("rendering") else ""
        raise MinewatchError(where, f"{e.problem} (model {pkg.card.name!r}){hint}") from None
    if converting:
        plan["rerender"] = f"{have.rendering} -> {want.rendering}"
    p = pkg.card.patch_px
    h, w = chips.pixels.shape[1:3]
    if h != w:
        raise MinewatchError(where, f"chips are {h}×{w}; square chips expected")
    if h < p:
        raise MinewatchError(where, f"chips are {h}×{w} px but model {pkg.card.name!r} needs {p}×{p} patches")
    plan["crop_offset"] = (h - p) // 2
    check_chip_values(chips, where)
    return plan


def check_chip_values(chips: ChipSet, where: str, sample: int = 2000) -> None:
    """Refuse chips whose values are on another scale than their rendering says.

    Why: 0–1 floats under a ``uint8_clip`` rendering (0–255) score as near-black patches, and
    ``evaluate`` printed AP 0.42 for a good model with no warning. The expected range is the
    rendering of DN 0 to 3000 (forest and bare soil in visible bands; the RGB chips' saturation
    point); chips whose largest value (in the first ``sample`` chips) stays under a twentieth of it
    are refused, naming the range found and the one expected.
    """
    x = np.asarray(chips.pixels[:sample])
    if x.size == 0 or x.dtype.kind not in "fiu":
        return
    finite = x[np.isfinite(x)] if x.dtype.kind == "f" else x
    if finite.size == 0:
        raise MinewatchError(where, "chip values are all NaN or infinite")
    lo, hi = float(finite.min()), float(finite.max())
    r = chips.spec.rendering
    top = float(np.max(r.apply(np.array([0.0, 3000.0]))))
    base = float(np.min(r.apply(np.array([0.0, 3000.0]))))
    if hi - base < (top - base) / 20.0:
        raise MinewatchError(where, f"chip values run {lo:.3g} to {hi:.3g} ({x.dtype.name}) but their rendering ({r.kind}, scale {r.scale:g}) gives {base:.3g} to {top:.3g} for DN 0–3000: the chips are on another scale (e.g. 0–1 instead of 0–255); rescale them or fix bands.json")


def _batches(pkg: ModelPackage, chips: ChipSet, plan: dict[str, Any], batch_size: int) -> Iterator[np.ndarray]:
    p, o = pkg.card.patch_px, plan["crop_offset"]
    for i in range(0, len(chips), batch_size):
        x = chips.pixels[i : i + batch_size, o : o + p, o : o + p, :]
        if plan["rerender"]:
            x = pkg.card.spec.rendering.apply(chips.spec.rendering.invert(x))
        yield np.ascontiguousarray(x, dtype=np.float32)


def score_chips(pkg: ModelPackage, chips: ChipSet, rerender: bool = False, batch_size: int = 512, progress: bool = False) -> np.ndarray:
    """Member probabilities N×M for every chip (after :func:`check_inputs`)."""
    from tqdm import tqdm

    plan = check_inputs(pkg, chips, rerender)
    out = []
    n_batches = math.ceil(len(chips) / batch_size)
    for x in tqdm(_batches(pkg, chips, plan, batch_size), total=n_batches, desc="scoring", unit="batch", disable=None if progress else True, mininterval=1.0, leave=False):
        out.append(pkg.score_patches(x, batch_size))
    if not out:
        return np.zeros((0, len(pkg.card.members)), np.float32)
    return np.concatenate(out)


def per_source(y: np.ndarray, p: np.ndarray, sources: pd.Series, threshold: float) -> list[dict[str, Any]]:
    """One row per ``source``: n, n_pos, AP (both classes present), sensitivity / specificity as applicable."""
    rows = []
    for src, idx in sources.groupby(sources.astype(str)).indices.items():
        ys, ps = y[idx], p[idx]
        n_pos = int(ys.sum())
        sens, spec = M.sensitivity_specificity(ys, ps, threshold)
        rows.append(
            {
                "source": src,
                "n": int(len(idx)),
                "n_pos": n_pos,
                "ap": M.average_precision(ys, ps) if 0 < n_pos < len(idx) else math.nan,
                "sensitivity": sens,
                "specificity": spec,
            }
        )
    return sorted(rows, key=lambda r: (-r["n"], r["source"]))


def holdout_summary(y: np.ndarray, p: np.ndarray, meta: pd.DataFrame, region: BaseGeometry, threshold: float) -> dict[str, Any]:
    """Sensitivity (with a 95% Wilson interval) on mines inside ``region`` (chips with lon/lat only)."""
    inside = geographic_mask(meta, region)
    yi, pi = y[inside], p[inside]
    n_pos = int(yi.sum())
    detected = int((pi[yi == 1] >= threshold).sum())
    sens, spec = M.sensitivity_specificity(yi, pi, threshold)
    lo, hi = M.wilson_interval(detected, n_pos)
    return {
        "n": int(inside.sum()),
        "n_pos": n_pos,
        "detected": detected,
        "sensitivity": sens,
        "sensitivity_ci95": [lo, hi],
        "specificity": spec,
        "n_with_location": int((meta["lon"].notna() & meta["lat"].notna()).sum()) if {"lon", "lat"} <= set(meta.columns) else 0,
    }


def evaluate_package(
    pkg: ModelPackage,
    chips: ChipSet,
    holdouts: dict[str, BaseGeometry] | None = None,
    threshold: float | None = None,
    rerender: bool = False,
    batch_size: int = 512,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``chips`` with ``pkg`` and summarise (see module docstring). Plain, JSON-ready dict.

    NaN marks undefined figures (e.g. AP of a source without mines); use
    :func:`minewatch.train.metrics.json_safe` for strict JSON.
    """
    if "label" in chips.meta.columns and len(chips.meta) != len(chips.labels):
        raise MinewatchError(_where(chips), "metadata rows and labels differ in number")
    thr = float(pkg.card.threshold if threshold is None else threshold)
    plan = check_inputs(pkg, chips, rerender)
    level_warning = pkg.warn_if_level_unvalidated(chips.spec.level)
    probs = score_chips(pkg, chips, rerender, batch_size, progress)
    y = chips.labels.astype(np.int8)
    p = probs.mean(axis=1)
    result: dict[str, Any] = {
        "model": {
            "name": pkg.card.name,
            "path": str(pkg.path),
            "members": list(pkg.card.members),
            "threshold": thr,
            "card_threshold": float(pkg.card.threshold),
            "bands": list(pkg.card.spec.bands),
            "patch_px": pkg.card.patch_px,
        },
        "chips": {
            "path": str(chips.path) if chips.path else None,
            "n": int(len(chips)),
            "bands": list(chips.spec.bands),
            "level": chips.spec.level,
            "chip_px": plan["chip_px"],
        },
        "input": {"crop_offset_px": plan["crop_offset"], "rerendered": plan["rerender"], "level_unvalidated": bool(level_warning)},
        "overall": M.summary(y, p, thr),
    }
    if probs.shape[1] > 1:
        result["members"] = {m: M.summary(y, probs[:, j], thr) for j, m in enumerate(pkg.card.members)}
    if "source" in chips.meta.columns:
        result["by_source"] = per_source(y, p, chips.meta["source"], thr)
    if holdouts:
        result["holdouts"] = {name: holdout_summary(y, p, chips.meta, geom, thr) for name, geom in holdouts.items()}
    result["_scores"] = p  # dropped before JSON; kept for plots
    result["_member_scores"] = probs
    result["_labels"] = y
    return result


def own_validation_split(pkg: ModelPackage, chips: ChipSet) -> tuple[np.ndarray, str] | None:
    """Indexes of the card's validation split when ``chips`` is the model's own training set, and a
    line saying so; None when the chips are other data (or the card does not say what it trained on).

    Why: scoring a model on the chips it was trained on inflates every figure (AP 0.952 for the
    shipped model against 0.936 on its validation split). The card records the chips' SHA-256
    (``training.chips_sha256``) and the split (``training.val_split``, or each member's config);
    the same site-level split is rebuilt here, so the figures match the card's.
    """
    from minewatch.atomic import sha256_file
    from minewatch.train.scorecard import make_split, trained_split

    t = pkg.card.training or {}
    digest = t.get("chips_sha256")
    npz = chips.path / "chips.npz" if chips.path else None
    if not digest or npz is None or not npz.is_file() or sha256_file(npz) != digest:
        return None
    vs = t.get("val_split") or {}
    if "val_fraction" in vs:
        frac, seed = float(vs["val_fraction"]), int(vs.get("split_seed", 0))
    else:
        found = trained_split(t.get("config")) or next((trained_split(m.get("config")) for m in t.get("ensemble_of") or [] if trained_split(m.get("config"))), None)
        if found is None:
            return None
        frac, seed = found
    if t.get("holdout_regions"):
        return None  # the regions are files on the trainer's machine: the split cannot be rebuilt exactly
    split = make_split(chips, frac, seed, [], list(t.get("holdout_sources") or []))
    return split.val, (f"the validation split of the model's own training chips ({len(split.val):,} of {len(chips):,}; site-level, "
                       f"val_fraction={frac:g}, seed={seed}); --all scores every chip, training chips included")


def public(result: dict[str, Any]) -> dict[str, Any]:
    """The result without private arrays, strict-JSON safe (NaN → null)."""
    return M.json_safe({k: v for k, v in result.items() if not k.startswith("_")})


def load_holdout(path: str | Path) -> tuple[str, BaseGeometry]:
    """(name, WGS84 geometry) of a hold-out region file (GeoJSON or any OGR vector)."""
    from minewatch.vectors import read_vector

    path = Path(path)
    if not path.is_file():
        raise MinewatchError(path, "hold-out region file not found")
    gdf = read_vector(path)
    if gdf.empty or gdf.geometry.isna().all():
        raise MinewatchError(path, "no geometries")
    geom = gdf.geometry.make_valid().union_all()
    if geom.is_empty:
        raise MinewatchError(path, "geometries are empty")
    return path.stem, geom


def write_pr_curve(result: dict[str, Any], path: str | Path) -> Path:
    """Precision–recall curve PNG (ensemble mean, members faint, the operating point marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, p = result["_labels"], result["_scores"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    try:
        members = result["_member_scores"]
        if members.shape[1] > 1:
            for j, m in enumerate(result["model"]["members"]):
                pr, rc, _ = M.precision_recall_curve(y, members[:, j])
                ax.step(rc, pr, where="post", lw=0.8, alpha=0.4, label=f"{m} (AP {M.average_precision(y, members[:, j]):.3f})")
        pr, rc, _ = M.precision_recall_curve(y, p)
        ov = result["overall"]
        ax.step(rc, pr, where="post", lw=2, color="black", label=f"{'ensemble' if members.shape[1] > 1 else 'model'} (AP {ov['ap']:.3f})")
        t = ov["threshold"]
        pred = p >= t
        if pred.any() and y.any():
            ax.plot([y[pred].sum() / y.sum()], [y[pred].mean()], "o", color="crimson", label=f"threshold {t:g}")
        ax.axhline(y.mean() if len(y) else 0, ls=":", color="grey", lw=1, label=f"positive rate {y.mean() if len(y) else 0:.3f}")
        ax.set(xlabel="recall (sensitivity)", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01))
        ax.set_title(f"{result['model']['name']} on {Path(result['chips']['path'] or 'chips').name} (n={len(y)})", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
        ax.grid(alpha=0.3)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_report(result: dict[str, Any]) -> str:
    """A human-readable summary table."""
    ov, mdl = result["overall"], result["model"]
    lines = [
        f"model   {mdl['name']}  ({len(mdl['members'])} member{'s' if len(mdl['members']) > 1 else ''}, bands {','.join(mdl['bands'])}, {mdl['patch_px']} px)",
        f"chips   {result['chips']['path']}  n={ov['n']}  mines={ov['n_pos']}",
    ]
    if mdl.get("execution_provider"):
        lines.append(f"scoring ONNX Runtime on {mdl['execution_provider']}")
    if result["chips"].get("which"):
        lines.append(f"        {result['chips']['which']}")
    if result["input"]["crop_offset_px"]:
        lines.append(f"input   centre-cropped {result['chips']['chip_px']} -> {mdl['patch_px']} px")
    if result["input"]["rerendered"]:
        lines.append(f"input   re-rendered through DN: {result['input']['rerendered']}")
    lines += [
        "",
        f"average precision      {_f(ov['ap'])}",
        f"ROC AUC                {_f(ov['roc_auc'])}",
        f"threshold              {_f(ov['threshold'])}",
        f"  sensitivity          {_f(ov['sensitivity'])}",
        f"  specificity          {_f(ov['specificity'])}",
        f"sens. at spec. 0.99    {_f(ov['sens_at_spec99'])}",
        f"F0.5-optimal threshold {_f(ov['f05_threshold'])}  (F0.5 {_f(ov['f05'])})",
    ]
    if "members" in result:
        lines += ["", f"{'member':<28} {'AP':>6} {'sens':>6} {'spec':>6} {'s@.99':>6}"]
        for m, s in result["members"].items():
            lines.append(f"{m[:28]:<28} {_f(s['ap']):>6} {_f(s['sensitivity']):>6} {_f(s['specificity']):>6} {_f(s['sens_at_spec99']):>6}")
    if "by_source" in result:
        lines += ["", f"{'source':<48} {'n':>6} {'mines':>6} {'AP':>6} {'sens':>6} {'spec':>6}"]
        for r in result["by_source"]:
            lines.append(f"{r['source'][:48]:<48} {r['n']:>6} {r['n_pos']:>6} {_f(r['ap']):>6} {_f(r['sensitivity']):>6} {_f(r['specificity']):>6}")
    if "holdouts" in result:
        lines += ["", f"{'hold-out region':<40} {'chips':>6} {'mines':>6} {'found':>6} {'sens':>6}  95% CI"]
        for name, h in result["holdouts"].items():
            lo, hi = h["sensitivity_ci95"]
            lines.append(f"{name[:40]:<40} {h['n']:>6} {h['n_pos']:>6} {h['detected']:>6} {_f(h['sensitivity']):>6}  [{_f(lo)}, {_f(hi)}]")
    if "plots" in result:
        lines += [""] + [f"plot    {p}" for p in result["plots"]]
    return "\n".join(lines)


def to_json(result: dict[str, Any]) -> str:
    """Exactly one strict JSON object."""
    return json.dumps(public(result), allow_nan=False)
