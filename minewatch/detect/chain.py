"""The one-shot chain behind ``minewatch run``: imagery → detect → post-process → map.

Each stage is one library call on the previous stage's output folder, so adding a stage is one
call here:

1. imagery — given composites (``imagery=``), the shipped demo mosaic, or ``minewatch composite``
   over the ROI for the period (:func:`minewatch.imagery.engine.run_composites`), in ``OUT/composite``;
2. detect — :func:`minewatch.detect.engine.run_detect` in ``OUT/detect`` (resumable);
3. post-process — :func:`minewatch.postprocess.pipeline.run_postprocess` in ``OUT/postprocess``;
4. map — :func:`minewatch.webmap.map.write_map` to ``OUT/map.html``.

The run folder itself is a :class:`minewatch.runs.RunContext` (command ``run``) listing the
post-processing and map outputs; composite and detect keep their own manifests below it, so
``minewatch verify OUT`` checks everything and a rerun of the same command resumes detection.

Thresholds: by default post-processing uses the model card's operating point — ``t_main`` = the
card's ``threshold`` (chosen on validation data for that model), ``t_iso`` = the card's
``val_threshold_spec99`` (99 % specificity on validation) when it is stricter — because the
upstream presets (0.43 / 0.75) were tuned for the upstream ensemble's calibration, not ours.
Several models: the mean of their thresholds.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minewatch.atomic import write_json_atomic
from minewatch.errors import MinewatchError
from minewatch.grid import DEFAULT_TILE_PX

COMMAND = "run"
MAP_FILE = "map.html"
SUMMARY = "summary.json"


@dataclass(frozen=True)
class ChainRequest:
    """Everything ``minewatch run`` needs besides the output folder."""

    models: tuple[str, ...] = ("default",)
    roi_file: str | None = None
    period: str | None = None
    imagery: str | None = None
    demo: bool = False
    source: str = "earth-search"
    level: str | None = None
    """Composite level; default: L2A (free, no account anywhere), L1C only when the model needs a
    band L2A products lack (B10) — see :func:`composite_level`."""
    min_score: float = 0.4
    min_valid: float = 0.8
    t_main: float | None = None
    t_iso: float | None = None
    preset: str = "card"
    """``card`` (see the module docstring) or a :mod:`minewatch.postprocess.threshold` preset name."""
    simplify_m: float | None = None
    map: bool = True
    tile_px: int | None = None
    """Tile size for compositing and detection; default: the composites' own, else 1008."""
    masks: bool = False
    """Detect also writes the per-pixel mined mask, ``detect/masks/<tile>.tif``."""

    def __post_init__(self) -> None:  # a typo must not cost a whole detect before post-processing refuses it
        from minewatch.errors import MinewatchError
        from minewatch.postprocess.threshold import check_thresholds

        check_thresholds(self.t_main, self.t_iso)
        if self.simplify_m is not None and not self.simplify_m >= 0:
            raise MinewatchError("--simplify", f"tolerance must be ≥ 0 metres, got {self.simplify_m}")


@dataclass
class ChainResult:
    out_dir: Path
    stages: dict[str, Any] = field(default_factory=dict)
    failed: bool = False
    lines: list[str] = field(default_factory=list)


def period_dates(period: str) -> tuple[dt.date, dt.date]:
    """First and last day of ``2024`` or ``2024Q3`` (one-line error for anything else)."""
    from minewatch.periods import parse_period

    p = parse_period(period, "--period")
    return p.start, p.end


def card_thresholds(packages: Sequence[Any]) -> tuple[float, float | None]:
    """(t_main, t_iso) from the model cards (see the module docstring)."""
    return thresholds_from_cards(
        [{"threshold": p.card.threshold, "val_threshold_spec99": p.card.metrics.get("val_threshold_spec99")} for p in packages]
    )


def thresholds_from_cards(cards: Sequence[dict[str, Any]]) -> tuple[float, float | None]:
    """(t_main, t_iso) from ``{"threshold", "val_threshold_spec99"}`` records (one per model)."""
    if not cards:
        raise MinewatchError("--preset card", "no model card to take thresholds from")
    mains, isos = [], []
    for c in cards:
        t = float(c["threshold"])
        mains.append(t)
        s99 = c.get("val_threshold_spec99")
        isos.append(max(t, float(s99)) if s99 is not None else t)
    t_main = sum(mains) / len(mains)
    t_iso = sum(isos) / len(isos)
    return t_main, (t_iso if t_iso > t_main else None)


def patch_file_cards(patches: str | os.PathLike[str], model: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """The calibration records of the models that scored a patch file, and where they came from.

    ``model`` (a package folder or shipped name) wins; else the ``model_cards`` that ``detect``
    records in the file's metadata; else the packages named in its parameters (older files).
    """
    from minewatch.models.package import load_package

    def rec(pkg: Any) -> dict[str, Any]:
        return {"name": pkg.card.name, "threshold": pkg.card.threshold, "val_threshold_spec99": pkg.card.metrics.get("val_threshold_spec99")}

    if model is not None:
        return [rec(load_package(model))], f"model {model}"
    from minewatch.postprocess.io import read_metadata

    try:
        meta = read_metadata(patches)
    except (MinewatchError, OSError, ValueError):
        from minewatch.postprocess.io import read_patches

        read_patches(patches)  # an unreadable file: its own one-line error first
        meta = {}
    if meta.get("model_cards"):
        return list(meta["model_cards"]), "the model card(s) recorded in the patch file"
    names = (meta.get("parameters") or {}).get("models") or []
    if names:
        try:
            return [rec(load_package(m)) for m in names], "the model card(s) of the packages that scored the file"
        except MinewatchError as e:
            raise MinewatchError(patches, f"the model that scored this file cannot be loaded ({e.problem}): give --model, or --preset single/cumulative/mean06") from None
    raise MinewatchError(patches, "the file does not say which model scored it: give --model NAME for its card's thresholds, or --preset single/cumulative/mean06")


def threshold_params(req: ChainRequest, packages: Sequence[Any]) -> Any:
    from minewatch.postprocess.threshold import ThresholdParams, preset

    if req.preset == "card":
        t_main, t_iso = card_thresholds(packages)
        if req.t_main is not None:
            t_main = req.t_main
        if req.t_iso is not None:
            t_iso = req.t_iso
        return ThresholdParams(t_main, t_iso, name="card" if req.t_main is None and req.t_iso is None else "card+custom")
    return preset(req.preset, t_main=req.t_main, t_iso=req.t_iso)


def composite_level(asked: str | None, scorer: Any, source: str = "earth-search") -> tuple[str, str]:
    """The level ``run`` composites at, and a line saying why and what the model card says of it.

    L2A unless asked otherwise: it is free from public catalogs (Earth Search L1C is a
    requester-pays bucket that needs AWS credentials); a local catalog: the level its items state
    (:func:`minewatch.imagery.sources.default_level`). A model that needs B10 (cirrus; L2A products
    have none) gets L1C. When the level differs from the one the model was trained on, the line
    gives the card's figures for it (simulated L2A for the shipped models), as the card asks.
    """
    from minewatch.imagery.sources import default_level

    bands = set(scorer.bands)
    if asked:
        level, why = asked.upper(), f"--level {asked.lower()}"
    else:
        level, why = default_level(source)
        if level == "L2A" and "B10" in bands:
            level, why = "L1C", "the model needs B10, which L2A products lack (Earth Search L1C needs AWS credentials; or give a local L1C catalog with --source)"
    line = f"composite level {level}: {why}"
    for p in scorer.packages:
        trained = p.card.spec.level.upper()
        if trained == level:
            continue
        v = {k.upper(): m for k, m in (p.card.validated_levels or {}).items()}
        here, home = v.get(level) or {}, v.get(trained) or {}
        if "ap" in here and "ap" in home:
            kind = "simulated " if here.get("simulated") else ""
            line += (f"; note: model {p.card.name!r} was trained on {trained}: validation AP {float(here['ap']):.3f} on {kind}{level} "
                     f"vs {float(home['ap']):.3f} on {trained} (see its card)")
        else:
            line += f"; warning: model {p.card.name!r} was trained on {trained} and has no {level} figures in its card: scores may be unreliable"
    return level, line


def demo_check(truth_file: Path, mining_file: Path) -> dict[str, Any]:
    """How the demo's mining polygons sit on its known cells: a cell counts as detected when its
    centre lies inside a polygon."""
    import geopandas as gpd
    import shapely

    truth = gpd.read_file(truth_file)
    mining = gpd.read_parquet(mining_file) if mining_file.is_file() else gpd.GeoDataFrame(geometry=[], crs=4326)
    union = shapely.union_all(mining.geometry.to_numpy()) if len(mining) else shapely.Polygon()
    centres = shapely.get_coordinates(shapely.centroid(truth.geometry.to_numpy()))  # cell centres (a 480 m cell: planar centroid is exact enough)
    hit = shapely.contains_xy(union, centres[:, 0], centres[:, 1]) if len(mining) else [False] * len(truth)
    truth = truth.assign(detected=hit)
    out: dict[str, Any] = {}
    for k, g in truth.groupby("truth"):
        out[str(k)] = {"cells": int(len(g)), "detected": int(g["detected"].sum())}
    return out


def run_chain(
    req: ChainRequest,
    out_dir: str | os.PathLike[str],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    fresh: bool = False,
    argv: list[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> ChainResult:
    """Run the chain into ``out_dir`` (see the module docstring); returns what each stage did."""
    from minewatch.detect.demo import load_demo
    from minewatch.detect.engine import DetectRequest, run_detect
    from minewatch.detect.scorer import Scorer
    from minewatch.runs import RunContext

    say = log or (lambda s: None)
    out = Path(out_dir).absolute()
    res = ChainResult(out)
    scorer = Scorer.load(req.models)
    roi = roi_file = None
    imagery = req.imagery
    period = req.period
    truth = None
    if req.demo:
        demo = load_demo()
        imagery, roi_file, truth = str(demo.imagery), str(demo.roi), demo.truth
        period = period or demo.period
    else:
        roi_file = req.roi_file
    if roi_file is not None:
        from minewatch.roi import read_roi

        roi = read_roi(roi_file)
    if imagery is None:
        if roi is None:
            raise MinewatchError("--roi", "give an ROI (or --imagery with existing composites, or --demo)")
        if not period:
            raise MinewatchError("--period", "needed to composite imagery for the ROI (e.g. 2024 or 2024Q3)")
        period_dates(period)
    params = {
        "models": [p.card.name for p in scorer.packages], "period": period, "demo": req.demo, "source": None if imagery else req.source,
        "level": req.level, "min_score": req.min_score, "min_valid": req.min_valid, "preset": req.preset,
        "t_main": req.t_main, "t_iso": req.t_iso, "simplify_m": req.simplify_m, "map": req.map, "tile_px": req.tile_px,
    }  # fmt: skip
    inputs: dict[str, Any] = {f"model{i + 1 if i else ''}": str(p.path) for i, p in enumerate(scorer.packages)}
    if roi_file:
        inputs["roi"] = roi_file
    if imagery:
        inputs["imagery"] = imagery
    with RunContext(out, COMMAND, params=params, inputs=inputs, argv=argv, fresh=fresh, writes=("composite", "detect", "postprocess", MAP_FILE, SUMMARY)) as run:
        # 1. imagery
        if imagery is None:
            imagery = _composite(req, roi, period, scorer, out / "composite", scheduler, workers, progress, fresh, argv, say, res)  # type: ignore[arg-type]
        # 2. detect
        say("detect …")
        from minewatch.cli.options import auto_tile_px

        tile_px = auto_tile_px(req.tile_px, imagery, req.models, log=say)
        dreq = DetectRequest(models=tuple(req.models), period=period or "", min_score=req.min_score, min_valid=req.min_valid,
                             level=req.level, tile_px=tile_px, masks=req.masks)  # fmt: skip
        det = run_detect(
            imagery, dreq, out / "detect", roi=roi.geometry if roi is not None else None, roi_file=roi_file,
            scheduler=scheduler, workers=workers, progress=progress, fresh=fresh, argv=argv, log=say,
        )  # fmt: skip
        t = det.totals
        res.stages["detect"] = {"folder": str(out / "detect"), "summary": det.summary, **{k: t[k] for k in ("scored", "skipped_nodata", "skipped_low_valid", "written")}}
        res.lines.append(f"detect: {det.summary}; {t['scored']:,} patches scored, {t['written']:,} written (score ≥ {req.min_score:g}); "
                         f"ONNX Runtime on {scorer.packages[0].execution_provider}")
        if det.failed:
            res.failed = True
        # 3. post-process
        post = _postprocess(req, scorer, out, res, say)
        for p in post:
            run.add_output(p)
        # 4. map
        mining = out / "postprocess" / "mining.parquet"
        if req.map:
            m = _map(mining, out / MAP_FILE, req, res, say)
            if m is not None:
                run.add_output(m)
        if truth is not None:
            res.stages["demo_check"] = demo_check(truth, mining)
            c = res.stages["demo_check"]
            mine, other = c.get("mine", {}), c.get("not-mine", {})
            res.lines.append(
                f"demo truth: {mine.get('detected', 0)} of {mine.get('cells', 0)} mine cells inside a mining polygon, "
                f"{other.get('detected', 0)} of {other.get('cells', 0)} not-mine cells"
            )
        write_json_atomic(out / SUMMARY, {"command": COMMAND, "parameters": params, "stages": res.stages, "complete": not res.failed})
        run.add_output(out / SUMMARY)
    return res


def _composite(req: ChainRequest, roi: Any, period: str, scorer: Any, out: Path, scheduler: str | None, workers: int | None,
               progress: bool, fresh: bool, argv: list[str] | None, say: Callable[[str], None], res: ChainResult) -> str:  # fmt: skip
    """Stage 1 for an ROI: composites of the model's bands at the model's level."""
    from minewatch.imagery.engine import CompositeRequest, run_composites
    from minewatch.imagery.sources import resolve_source

    start, end = period_dates(period)
    level, why = composite_level(req.level, scorer, req.source)
    say(why)
    tiles = roi.tiles(req.tile_px or DEFAULT_TILE_PX)
    src = resolve_source(req.source, level)
    creq = CompositeRequest(start=start, end=end, bands=tuple(scorer.bands), level=level)
    say(f"composite: {len(tiles)} tile(s), {level} {start}..{end} from {src.name} …")
    cres = run_composites(tiles, creq, src, out, roi_file=req.roi_file, scheduler=scheduler, workers=workers,
                          progress=progress, fresh=fresh, argv=argv, log=say)  # fmt: skip
    res.stages["composite"] = {"folder": str(out), "summary": cres.summary, "failed": len(cres.failed)}
    res.lines.append(f"composite: {cres.summary}")
    if cres.failed:
        res.failed = True
    coll = out / "collection.json"
    if not coll.is_file():
        raise MinewatchError(out, "no composite tile finished; nothing to detect on")
    return str(coll)


def _postprocess(req: ChainRequest, scorer: Any, out: Path, res: ChainResult, say: Callable[[str], None]) -> list[Path]:
    """Stage 3: threshold and dissolve the patch scores into mining polygons."""
    from minewatch.postprocess.pipeline import run_postprocess

    params = threshold_params(req, scorer.packages)
    if params.t_main < req.min_score:
        say(f"warning: t_main {params.t_main:g} is below --min-score {req.min_score:g}: patches between them were never written")
    say(f"post-process (t_main {params.t_main:.3f}, t_iso {params.t_iso if params.t_iso is None else round(params.t_iso, 3)}) …")
    folder = out / "postprocess"
    pp = run_postprocess(out / "detect" / "patches.parquet", folder, params, simplify_m=req.simplify_m)
    s = pp.stats
    res.stages["postprocess"] = {"folder": str(folder), "thresholds": params.as_dict(), **{k: s[k] for k in ("patches_in", "patches_kept", "polygons", "area_ha", "footprint_ha", "mined_ha")}}
    mined = "n/a" if s["mined_ha"] is None else f"{s['mined_ha']:,.1f} ha"
    res.lines.append(f"postprocess: {s['patches_kept']:,} of {s['patches_in']:,} patches kept → {s['polygons']:,} polygons, "
                     f"mined area (estimate) {mined} inside a footprint of {s['footprint_ha']:,.1f} ha")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _map(mining: Path, target: Path, req: ChainRequest, res: ChainResult, say: Callable[[str], None]) -> Path | None:
    """Stage 4: the self-contained web map of the mining polygons (skipped when there are none)."""
    import geopandas as gpd

    from minewatch.webmap.map import build_map_data, write_map

    if not mining.is_file() or len(gpd.read_parquet(mining)) == 0:
        res.stages["map"] = {"written": False, "why": "no mining polygons"}
        res.lines.append("map: not written (no mining polygons)")
        return None
    say("map …")
    credits = ["Demo imagery: real Sentinel-2 chips from Earth Genome, Amazon Mining Watch (CC BY 4.0), arranged as a mosaic at an arbitrary place"] if req.demo else []
    md = build_map_data([mining], credits=credits)
    title = "minewatch demo: mining detections on a mosaic of real chips" if req.demo else "minewatch: mining detections"
    write_map(target, md, title=title)
    res.stages["map"] = {"written": True, "path": str(target), "bytes": target.stat().st_size}
    res.lines.append(f"map: {target} ({target.stat().st_size / 1e6:.1f} MB)")
    return target


__all__ = ["ChainRequest", "ChainResult", "run_chain", "period_dates", "card_thresholds", "composite_level", "demo_check"]
