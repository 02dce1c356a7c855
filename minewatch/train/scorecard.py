"""The figures a model card carries, measured through ONNX Runtime on a site-level split (no PyTorch).

Used by training (one network) and by ``minewatch models ensemble`` (several packages merged into
one): both must report the same things the same way, on the same validation chips — validation AP,
sensitivity/specificity at the F0.5 threshold, sensitivity at 99% specificity, per ``source``,
the simulated-L2A copy of the validation set, and every never-trained-on hold-out group.
Scores are the ensemble mean of member probabilities (a single network is an ensemble of one).
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from minewatch.chips import ChipSet, geographic_mask, site_ids, split_by_site
from minewatch.errors import MinewatchError
from minewatch.models.package import ModelPackage
from minewatch.train import metrics
from minewatch.train.atmosphere import HAZY_ATMOSPHERE, REFERENCE_ATMOSPHERE, simulate_l2a
from minewatch.train.evaluate import load_holdout, per_source

RGB = ["B4", "B3", "B2"]


def load_region(path: str | Path) -> Any:
    """A hold-out polygon (GeoJSON or any OGR vector) as one WGS84 geometry."""
    return load_holdout(path)[1]


@dataclass
class Split:
    """Index sets into a chip set: train, val and named hold-out groups (never trained on)."""

    train: np.ndarray
    val: np.ndarray
    holdouts: dict[str, np.ndarray]


def make_split(
    chips: ChipSet,
    val_fraction: float,
    seed: int,
    holdout_regions: list[str | Path] = (),  # type: ignore[assignment]
    holdout_sources: list[str] = (),  # type: ignore[assignment]
) -> Split:
    """Site-level train/val split after removing hold-out regions/sources (and every chip that shares
    a site with a held-out chip, so a clear/cloudy twin cannot leak into training)."""
    meta = chips.meta.assign(label=chips.labels)
    n = len(chips)
    held = np.zeros(n, bool)
    holdouts: dict[str, np.ndarray] = {}
    for r in holdout_regions:
        m = geographic_mask(meta, load_region(r))
        if not m.any():
            raise MinewatchError(r, "no chip with lon/lat falls inside this hold-out region")
        holdouts[f"region:{Path(r).stem}"] = np.flatnonzero(m)
        held |= m
    for pat in holdout_sources:
        m = np.array([fnmatch.fnmatch(str(s), pat) for s in meta["source"]]) if "source" in meta else np.zeros(n, bool)
        if not m.any():
            raise MinewatchError("--holdout-source", f"no chip's source matches {pat!r}")
        holdouts[f"source:{pat}"] = np.flatnonzero(m)
        held |= m
    if held.any():
        sites = site_ids(meta)
        held = np.isin(sites, np.unique(sites[held]))
    rest = np.flatnonzero(~held)
    tr, va = split_by_site(meta.iloc[rest].reset_index(drop=True), val_fraction, seed)
    return Split(rest[tr], rest[va], holdouts)


def group_rates(y: np.ndarray, p: np.ndarray, groups: pd.Series, thresholds: dict[str, float]) -> list[dict[str, Any]]:
    """:func:`minewatch.train.evaluate.per_source` at the model threshold, plus sensitivity /
    specificity at each extra named threshold (e.g. the validation set's 99%-specificity one)."""
    groups = groups.reset_index(drop=True)
    rows = per_source(y, p, groups, thresholds["threshold"])
    for tname, t in thresholds.items():
        if tname == "threshold":
            continue
        extra = {r["source"]: r for r in per_source(y, p, groups, t)}
        for r in rows:
            r[f"sensitivity@{tname}"] = extra[r["source"]]["sensitivity"]
            r[f"specificity@{tname}"] = extra[r["source"]]["specificity"]
    return rows


def summarize(y: np.ndarray, p: np.ndarray, threshold: float | None = None) -> dict[str, Any]:
    """metrics.summary at ``threshold`` (default: its F0.5-optimal threshold)."""
    if threshold is None:
        threshold = metrics.fbeta_optimal_threshold(y, p, 0.5)[0]
    return dict(metrics.summary(np.asarray(y), np.asarray(p), float(threshold)))


def holdout_report(y: np.ndarray, p: np.ndarray, thresholds: dict[str, float]) -> dict[str, Any]:
    """Sensitivity (mines) / specificity (not-mines) of a never-trained-on group at each threshold."""
    out: dict[str, Any] = {"n": int(len(y)), "n_pos": int(y.sum()), "mean_score": float(p.mean()) if len(p) else None}
    for tname, t in thresholds.items():
        if y.sum():
            out[f"sensitivity@{tname}"] = float((p[y == 1] >= t).mean())
        if (y == 0).sum():
            out[f"specificity@{tname}"] = float((p[y == 0] < t).mean())
    if 0 < y.sum() < len(y):
        out["ap"] = float(metrics.average_precision(y, p))
    return out


def ensemble_score(pkg: ModelPackage, pixels: np.ndarray) -> np.ndarray:
    """Mean member probability (N,): the score detection thresholds."""
    return pkg.score_patches(pixels).mean(axis=1)


L2A_HOW = (
    "validation chips converted L1C→surface reflectance with minewatch.train.atmosphere.simulate_l2a: "
    "DN=rgb/255*3000, SR=(TOA-path)/T per band, single-scattering Rayleigh (Hansen & Travis 1974) + "
    f"Ångström aerosol, fixed atmosphere {asdict(REFERENCE_ATMOSPHERE)}; re-rendered clip(SR*1e4/3000)*255"
)


def card_figures(pkg: ModelPackage, chips: ChipSet, split: Split, split_desc: str) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """(threshold, card ``metrics``, card ``validated_levels``) of ``pkg`` on ``split``.

    The threshold is F0.5-optimal on the validation chips; ``spec99`` is the validation threshold
    giving 99% specificity. Every figure is at one of those two thresholds.
    """
    val = chips.subset(split.val)
    member_probs = pkg.score_patches(val.pixels)  # scored once: the ensemble score and each member's
    p_val = member_probs.mean(axis=1)
    val_sum = summarize(val.labels, p_val)
    threshold = float(val_sum["threshold"])
    t99 = metrics.threshold_at_specificity(val.labels, p_val, 0.99)
    thresholds = {"threshold": threshold, "spec99": t99}
    sources = val.meta["source"].astype(str) if "source" in val.meta else None
    out: dict[str, Any] = {
        "split": f"site-level (minewatch.chips.split_by_site), {split_desc}",
        "val": val_sum,
        "val_threshold_spec99": t99,
        "per_source": group_rates(val.labels, p_val, sources, thresholds) if sources is not None else [],
        "holdouts": {},
    }
    if len(pkg.card.members) > 1:
        out["val_members"] = {
            m: {"ap": float(metrics.average_precision(val.labels, z)), "sens_at_spec99": float(metrics.sensitivity_at_specificity(val.labels, z))}
            for m, z in zip(pkg.card.members, member_probs.T, strict=True)
        }
    validated: dict[str, Any] = {"L1C": {"ap": val_sum["ap"], "sens_at_spec99": val_sum["sens_at_spec99"], "simulated": False}}
    if chips.spec.bands == RGB:
        p_l2a = ensemble_score(pkg, simulate_l2a(val.pixels))
        l2a = summarize(val.labels, p_l2a, threshold)
        l2a["per_source"] = group_rates(val.labels, p_l2a, sources, thresholds) if sources is not None else []
        l2a["simulated"] = True
        l2a["how"] = L2A_HOW
        # A second, harsher fixed atmosphere: hazy (dry-season smoke) and a low sun.
        hazy = summarize(val.labels, ensemble_score(pkg, simulate_l2a(val.pixels, atmosphere=HAZY_ATMOSPHERE)), threshold)
        hazy["atmosphere"] = asdict(HAZY_ATMOSPHERE)
        l2a["hazy_atmosphere"] = hazy
        out["val_sim_l2a"] = l2a
        validated["L2A"] = {
            **{k: l2a[k] for k in ("ap", "sens_at_spec99", "sensitivity", "specificity", "simulated", "how")},
            "hazy_atmosphere": {k: hazy[k] for k in ("ap", "sens_at_spec99", "sensitivity", "specificity", "atmosphere")},
        }
    for hname, idx in split.holdouts.items():
        p_h = ensemble_score(pkg, chips.pixels[idx])
        out["holdouts"][hname] = holdout_report(chips.labels[idx], p_h, thresholds)
        out["holdouts"][hname]["sources"] = group_rates(
            chips.labels[idx], p_h, chips.meta["source"].iloc[idx].astype(str).reset_index(drop=True), thresholds
        )
    return threshold, metrics.json_safe(out), metrics.json_safe(validated)


def trained_split(config: dict[str, Any] | None) -> tuple[float, int] | None:
    """(val_fraction, split seed) of a training config (``card.training["config"]``), or None when not
    recorded (e.g. converted Keras models)."""
    cfg = config or {}
    if "val_fraction" not in cfg:
        return None
    seed = cfg.get("split_seed")
    return float(cfg["val_fraction"]), int(cfg["seed"] if seed is None else seed)


def calibrate_ensemble(
    path: str | Path,
    chips: ChipSet,
    val_fraction: float,
    split_seed: int,
    holdout_regions: list[str | Path] = (),  # type: ignore[assignment]
    holdout_sources: list[str] = (),  # type: ignore[assignment]
) -> ModelPackage:
    """Measure an ensemble package on the site-level validation split its members were selected on,
    set its threshold (F0.5-optimal) and write the figures into its card.

    Refuses when a member was validated on another split: that split's training chips would sit in
    this validation set and inflate every figure.
    """
    from minewatch.atomic import write_json_atomic
    from minewatch.models.package import CARD, load_package

    pkg = load_package(path)
    mismatched = []
    for m in pkg.card.training.get("ensemble_of", []):
        s = trained_split(m.get("config"))
        if s is not None and s != (float(val_fraction), int(split_seed)):
            mismatched.append(f"{m['name']} (val_fraction={s[0]}, split seed={s[1]})")
    if mismatched:
        raise MinewatchError(
            path, f"members were validated on another split than val_fraction={val_fraction}, seed={split_seed}: {', '.join(mismatched)}"
        )
    split = make_split(chips, val_fraction, split_seed, holdout_regions, holdout_sources)
    threshold, figures, validated = card_figures(pkg, chips, split, f"val_fraction={val_fraction}, seed={split_seed}")
    card = pkg.card
    card.threshold = threshold
    card.metrics = figures
    card.validated_levels = validated
    card.training["threshold_rule"] = "F0.5-optimal on the validation set (ensemble mean score)"
    card.training["chips"] = chips.path.name if chips.path else None  # a name, not a machine path
    npz = chips.path / "chips.npz" if chips.path else None
    if npz is not None and npz.is_file():
        from minewatch.atomic import sha256_file

        card.training["chips_sha256"] = sha256_file(npz)  # `minewatch evaluate` knows its own training chips by this
    card.training["val_split"] = {"val_fraction": float(val_fraction), "split_seed": int(split_seed)}
    card.training["holdout_regions"] = [Path(r).name for r in holdout_regions]
    card.training["holdout_sources"] = list(holdout_sources)
    write_json_atomic(pkg.path / CARD, card.to_dict())
    return load_package(pkg.path)
