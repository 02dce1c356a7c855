"""Detection over many tiles: plan, then score each tile as one task (Dask), resumably, then merge.

How a run goes (:func:`run_detect`):

1. Check everything that can be checked before writing anything: the models load and agree on a
   lattice, the imagery opens and has every band the models need (else one error line naming the
   file), the processing level is one the models were validated on (else a warning), the period is
   known. Plan the tiles of the global grid the imagery touches (:func:`plan_detect`, pure).
2. Open the run folder (:class:`minewatch.runs.RunContext`: lock, manifest; a rerun of the same
   command resumes and skips finished tiles, other parameters are refused).
3. Each tile is one task (:func:`detect_tile`): read the tile plus a 24 px halo right and bottom,
   keep the lattice patches its UTM zone owns (at a zone seam, those whose central cell reaches into
   the zone's strip: :func:`minewatch.detect.lattice.zone_owned`; every location is scored by one
   zone only), count the valid pixels of every owned lattice patch, skip (and count) patches with less than
   ``min_valid`` valid pixels, score the rest, keep rows with ``score ≥ min_score``, write
   ``tiles/<tile>.parquet`` then ``tiles/<tile>.json`` (the per-tile summary), each atomically.
4. Merge: ``patches.parquet`` (and ``patches.geojson`` on request) streamed from the tile files in
   tile order, and ``summary.json`` with the totals.

Outputs (all WGS84 where geographic)::

    OUT/tiles/<tile>.parquet   rows of one tile (format: docs "Patch scores")
    OUT/tiles/<tile>.json      per-tile counts: patches owned, scored, skipped (no data / low valid), written
    OUT/patches.parquet        the region's rows, tile by tile
    OUT/patches.geojson        the same, RFC 7946 (with --geojson)
    OUT/summary.json           totals, parameters, models, warnings, speed
    OUT/manifest.json          the run manifest (minewatch.runs)

Schedulers: ``None``/``"auto"`` follows :func:`minewatch.scheduling.resolve_scheduler` (on one
machine: in process, tiles one after another, ONNX Runtime on every core); ``"local"`` a
``distributed.LocalCluster`` (process workers, one task at a time each, ONNX Runtime threads =
cores / workers); an address (``tcp://host:8786``) a running
cluster (its workers must see the imagery, the models and ``out_dir``); ``"threads"`` and
``"synchronous"`` run in this process.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from minewatch import __version__
from minewatch.atomic import atomic_path, write_json_atomic
from minewatch.detect.imagery import Imagery, RasterRef, open_imagery, overlaps, period_from_dates, read_tile, tiles_for_raster
from minewatch.detect.mask import MASK_VALUES, QUARTER_COLUMNS, mask_method, mask_path, mined_mask_bands, patch_quarters, tile_mask, tile_scar, write_mask_cog
from minewatch.detect.lattice import footprints_wgs84, halo_px, owned_cells, owns_any, valid_fraction, zone_owned
from minewatch.detect.scorer import Scorer
from minewatch.errors import MinewatchError
from minewatch.grid import DEFAULT_RESOLUTION, DEFAULT_TILE_PX, Tile
from minewatch.periods import parse_period

COMMAND = "detect"
TILES_DIR = "tiles"
PATCHES = "patches.parquet"
PATCHES_GEOJSON = "patches.geojson"
SUMMARY = "summary.json"
META_KEY = "minewatch"
COUNT_KEYS = ("patches", "other_zone", "scored", "skipped_nodata", "skipped_low_valid", "written")
HALO_ONLY_MAX_VALID = 0.75
"""The most of a patch that can be valid when its tile holds no imagery and only the halo does: the
patch's top-left 24 × 24 quarter always lies inside its own tile. Tiles like that are not planned
when ``min_valid`` is above this (they could only skip patches)."""


@dataclass(frozen=True)
class DetectRequest:
    """What to detect with (everything except which imagery and where to write)."""

    models: tuple[str, ...]
    """Model package folders (resolved paths) or shipped names."""
    period: str
    """Period label written on every row, e.g. ``2024`` or ``2024Q3``."""
    min_score: float = 0.4
    """Rows with an ensemble score below this are not written (they are counted)."""
    min_valid: float = 0.8
    """Patches with a smaller fraction of valid pixels are skipped, not scored."""
    fast: bool | None = None
    """True: fully-convolutional graph; False: per-patch; None: the fast graph where it pays."""
    tile_px: int = DEFAULT_TILE_PX
    resolution: float = DEFAULT_RESOLUTION
    level: str | None = None
    """Processing level to assume when the imagery does not state one."""
    bands: tuple[str, ...] | None = None
    """Band names of GeoTIFFs that do not name their own (``--bands``)."""
    precision: str = "auto"
    """Scoring arithmetic: ``auto`` (int8 graphs where the card's quality rule passed, else fp32),
    ``fp32`` or ``int8`` (:mod:`minewatch.models.quantize`)."""
    masks: bool = False
    """Also write ``masks/<tile>.tif``: the per-pixel scar mask inside written patches (uint8 COG)."""

    def params(self) -> dict[str, Any]:
        d = asdict(self)
        d["models"] = list(self.models)
        return d


@dataclass(frozen=True)
class TileJob:
    """One task: a tile and the rasters that may contribute pixels to its window."""

    tile: Tile
    rasters: tuple[RasterRef, ...]

    @property
    def id(self) -> str:
        return self.tile.id


@dataclass(frozen=True)
class DetectPlan:
    """Everything decided before the first tile is read (printable, picklable)."""

    request: DetectRequest
    jobs: tuple[TileJob, ...]
    bands: tuple[str, ...]
    patch_px: int
    step_px: int
    level: str | None
    columns: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    mask_bands: tuple[str, ...] = ()
    """Bands read beyond the models' for the mined-area mask (B8, B11 when every raster has them)."""

    @property
    def tile_ids(self) -> list[str]:
        return [j.id for j in self.jobs]

    def describe(self) -> str:
        return (
            f"{len(self.jobs)} tile(s) of {self.request.tile_px} px, patches {self.patch_px} px every {self.step_px} px, "
            f"bands {','.join(self.bands)}, level {self.level or 'unknown'}, period {self.request.period}, "
            f"min score {self.request.min_score:g}, min valid {self.request.min_valid:g}"
        )


@dataclass
class DetectResult:
    out_dir: Path
    plan: DetectPlan
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    totals: dict[str, Any] = field(default_factory=dict)
    summary: str = ""

    @property
    def ok(self) -> bool:
        return not self.failed


# --------------------------------------------------------------------------------------------------
# Planning (pure, given the imagery headers and the model cards)
# --------------------------------------------------------------------------------------------------


def resolve_period(imagery: Imagery, period: str | None) -> str:
    """The period label: as given, else from the imagery's dates (a whole year or quarter)."""
    if period:
        return parse_period(period, "--period").label
    start, end = imagery.dates
    found = period_from_dates(start, end)
    if found is None:
        what = f"dates {start}..{end}" if start or end else "no dates"
        raise MinewatchError("--period", f"imagery has {what}, not one whole year or quarter; give --period (e.g. 2024 or 2024Q3)")
    return found


def check_levels(imagery: Imagery, scorer: Scorer, assume: str | None = None) -> tuple[str | None, list[str]]:
    """The imagery's processing level and the warnings to show (unknown level, level not validated)."""
    msgs: list[str] = []
    levels = imagery.levels
    if assume:
        levels = [assume.upper()] if not levels else levels
    if len(levels) > 1:
        msgs.append(f"imagery mixes processing levels {levels}; scores of the two are not comparable")
    if not levels:
        lvl = scorer.packages[0].card.spec.level
        msgs.append(f"imagery does not state its processing level (tag PROCESSING_LEVEL); assuming {lvl}, the level the model was trained on (use --level)")
        return lvl, msgs
    for lvl in levels:
        for pkg in scorer.packages:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pkg.warn_if_level_unvalidated(lvl)
            msgs.extend(str(w.message) for w in caught)
    return levels[0], msgs


def plan_detect(imagery: Imagery, request: DetectRequest, scorer: Scorer, roi: Any = None) -> DetectPlan:
    """Tiles (sorted by id) that own at least one patch touching the imagery (and the ROI, if given)."""
    if request.tile_px <= 0 or request.tile_px % scorer.step_px:
        from minewatch.grid import tile_px_for_step

        raise MinewatchError("--tile-px", f"must be a positive multiple of the patch step ({scorer.step_px} px), got {request.tile_px}; "
                                          f"e.g. --tile-px {tile_px_for_step(request.tile_px if request.tile_px > 0 else DEFAULT_TILE_PX, scorer.step_px)}")
    if not 0.0 <= request.min_score <= 1.0:
        raise MinewatchError("--min-score", f"must be a probability in [0, 1], got {request.min_score}")
    if not 0.0 <= request.min_valid <= 1.0:
        raise MinewatchError("--min-valid", f"must be a fraction in [0, 1], got {request.min_valid}")
    imagery.check_bands(scorer.bands)
    level, msgs = check_levels(imagery, scorer, request.level)
    halo = halo_px(scorer.patch_px, scorer.step_px)
    by_tile: dict[Tile, list[RasterRef]] = {}
    for ref in imagery.rasters:
        for t in tiles_for_raster(ref, request.tile_px, request.resolution, halo):
            by_tile.setdefault(t, []).append(ref)
    if roi is not None:
        import shapely

        shapely.prepare(roi)
        by_tile = {t: r for t, r in by_tile.items() if roi.intersects(t.geometry_wgs84())}
    jobs = []
    for t in sorted(by_tile, key=lambda t: t.id):
        refs = tuple(r for r in by_tile[t] if overlaps(r, t, halo))
        if not refs:
            continue
        if request.min_valid > HALO_ONLY_MAX_VALID and not any(overlaps(r, t, 0) for r in refs):
            continue  # imagery only in the halo: no patch of this tile can reach min_valid
        if not owns_any(t, scorer.patch_px, scorer.step_px):
            continue  # a seam tile wholly beyond its zone's strip: the next zone's tiles own that ground
        jobs.append(TileJob(t, refs))
    if not jobs:
        raise MinewatchError(imagery.source, "imagery covers no tile" + (" inside the ROI" if roi is not None else ""))
    return DetectPlan(
        request=request, jobs=tuple(jobs), bands=tuple(scorer.bands), patch_px=scorer.patch_px, step_px=scorer.step_px,
        level=level, columns=tuple(scorer.columns), warnings=tuple(msgs), mask_bands=mined_mask_bands(imagery, scorer.bands),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# One tile (runs on a worker)
# --------------------------------------------------------------------------------------------------


def tile_paths(out_dir: str | os.PathLike[str], tile_id: str) -> tuple[Path, Path]:
    base = Path(out_dir) / TILES_DIR
    return base / f"{tile_id}.parquet", base / f"{tile_id}.json"


def tile_frame(
    tile: Tile, rows_px: np.ndarray, cols_px: np.ndarray, probs: np.ndarray, columns: Sequence[str],
    valid_frac: np.ndarray, period: str, patch_px: int, mined: np.ndarray | None = None,
) -> Any:  # fmt: skip
    """Rows of the Patch-scores format for one tile (geometry WGS84); dtypes fixed even when empty."""
    import geopandas as gpd
    import pandas as pd

    n = len(rows_px)
    probs = np.asarray(probs, dtype=np.float32).reshape(n, len(columns))
    data: dict[str, Any] = {
        "tile": pd.Series([tile.id] * n, dtype="str"),
        "row": np.asarray(rows_px, dtype=np.int32),
        "col": np.asarray(cols_px, dtype=np.int32),
        "epsg": np.full(n, tile.epsg, dtype=np.int32),
        "score": probs.mean(axis=1).astype(np.float32) if n else np.zeros(0, np.float32),
    }
    for k, c in enumerate(columns):
        data[c] = probs[:, k]
    data["valid_frac"] = np.asarray(valid_frac, dtype=np.float32)
    q = np.zeros((n, len(QUARTER_COLUMNS)), np.float32) if mined is None else np.asarray(mined, np.float32).reshape(n, len(QUARTER_COLUMNS))
    for k, c in enumerate(QUARTER_COLUMNS):
        data[c] = q[:, k]
    data["period"] = pd.Series([period] * n, dtype="str")
    geom = gpd.GeoSeries(footprints_wgs84(tile, rows_px, cols_px, patch_px), crs=4326)
    return gpd.GeoDataFrame(data, geometry=geom, crs=4326)


def patches_to_score(valid: np.ndarray, tile: Tile, patch_px: int, step_px: int, min_valid: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(valid fraction, owned by the tile's zone, to score) for every lattice patch a tile owns (cells × cells).

    A patch is scored when its zone owns it (:func:`minewatch.detect.lattice.zone_owned`) and at
    least ``min_valid`` of its pixels are valid. Pure: the whole decision of which locations a tile
    scores, apart from reading the pixels.
    """
    cells = owned_cells(tile.tile_px, step_px)
    vf = valid_fraction(valid, patch_px, step_px, cells)
    owned = zone_owned(tile, patch_px, step_px, cells)  # None: the whole tile lies inside its zone's strip
    if owned is None:
        owned = np.ones((cells, cells), dtype=bool)
    return vf, owned, (vf > 0) & (vf >= min_valid) & owned


def detect_tile(job: TileJob, plan: DetectPlan, out_dir: str, threads: int | None = None) -> dict[str, Any]:
    """Score one tile and write its rows and summary; returns the summary. Runs on a worker."""
    t0 = time.perf_counter()
    req = plan.request
    scorer = Scorer.load(req.models, threads, req.precision)
    p, s = plan.patch_px, plan.step_px
    raster = read_tile(job.rasters, job.tile, (*plan.bands, *plan.mask_bands), halo_px(p, s))
    t1 = time.perf_counter()
    vf, owned, keep = patches_to_score(raster.valid, job.tile, p, s, req.min_valid)
    has_data = vf > 0
    rows, cols = np.nonzero(keep)
    path = "none"
    if keep.any():
        probs, path = scorer.score(raster.dn, keep, req.fast)
    else:
        probs = np.zeros((0, len(plan.columns)), np.float32)
    t2 = time.perf_counter()
    score = probs.mean(axis=1) if len(probs) else np.zeros(0, np.float32)
    w = score >= req.min_score
    scar, frac = tile_scar(raster, (*plan.bands, *plan.mask_bands), s)
    mined = patch_quarters(frac, rows[w], cols[w])
    gdf = tile_frame(job.tile, rows[w] * s, cols[w] * s, probs[w], plan.columns, vf[keep][w], req.period, p, mined)
    pq_path, js_path = tile_paths(out_dir, job.id)
    if req.masks:
        write_mask_cog(mask_path(out_dir, job.id), tile_mask(scar, raster.valid, job.tile.tile_px, s, rows[w], cols[w], p), job.tile,
                       {"MINED_METHOD": mask_method((*plan.bands, *plan.mask_bands)), "VALUES": MASK_VALUES})
    with atomic_path(pq_path) as tmp:
        gdf.to_parquet(tmp, index=False)
    t3 = time.perf_counter()
    summary = {
        "tile": job.id,
        "epsg": job.tile.epsg,
        "patches": int(owned.sum()),
        "other_zone": int((~owned).sum()),
        "scored": int(keep.sum()),
        "skipped_nodata": int((~has_data & owned).sum()),
        "skipped_low_valid": int((has_data & owned & ~keep).sum()),
        "written": int(w.sum()),
        "score_max": float(score.max()) if len(score) else None,
        "path": path,
        "sources": [Path(x).name if "://" not in x else x for x in raster.sources],
        "seconds": {"read": round(t1 - t0, 3), "score": round(t2 - t1, 3), "write": round(t3 - t2, 3)},
    }
    write_json_atomic(js_path, summary)
    return summary


def _run_tile_task(job: TileJob, plan: DetectPlan, out_dir: str, threads: int | None) -> dict[str, Any]:
    """The Dask task (top-level so it pickles by reference)."""
    return detect_tile(job, plan, out_dir, threads)


# --------------------------------------------------------------------------------------------------
# Merge
# --------------------------------------------------------------------------------------------------


def _meta(plan: DetectPlan, imagery_source: str) -> dict[str, Any]:
    return {
        "producer": f"minewatch {__version__}",
        "command": COMMAND,
        "parameters": plan.request.params(),
        "inputs": [imagery_source, *plan.request.models],
        "crs": "EPSG:4326",
        "columns": {"score": "ensemble mean probability", **{c: "member probability" for c in plan.columns},
                    **{c: "scar share of the valid pixels of the patch's 24 px cell (tl, tr, bl, br)" for c in QUARTER_COLUMNS}},
        "mined_method": mask_method((*plan.bands, *plan.mask_bands)),
        "model_cards": _card_calibration(plan.request.models),
    }


def _card_calibration(models: Sequence[str]) -> list[dict[str, Any]]:
    """Each model's name and operating thresholds, so post-processing can use the card's calibration
    without finding the package again (``minewatch postprocess`` defaults to it)."""
    from minewatch.models.package import load_package

    out = []
    for m in models:
        c = load_package(m).card
        s99 = c.metrics.get("val_threshold_spec99")
        out.append({"name": c.name, "threshold": float(c.threshold), "val_threshold_spec99": None if s99 is None else float(s99)})
    return out


def _geo_metadata_union(files: Sequence[Path]) -> bytes | None:
    """The GeoParquet ``geo`` metadata of the first file with the bbox grown to cover all files."""
    import pyarrow.parquet as pq

    geo = None
    boxes = []
    for f in files:
        md = pq.read_schema(f).metadata or {}
        raw = md.get(b"geo")
        if raw is None:
            continue
        g = json.loads(raw)
        col = g["columns"][g["primary_column"]]
        if col.get("bbox"):
            boxes.append(col["bbox"])
        if geo is None:
            geo = g
    if geo is None:
        return None
    col = geo["columns"][geo["primary_column"]]
    if boxes:
        b = np.array(boxes, dtype=float)
        col["bbox"] = [float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())]
    return json.dumps(geo).encode()


def merge_tiles(out_dir: Path, tile_ids: Sequence[str], plan: DetectPlan, imagery_source: str, geojson: bool = False) -> list[Path]:
    """Write the region file(s) from the per-tile files, streaming (memory: one tile's rows)."""
    import pyarrow.parquet as pq

    files = [tile_paths(out_dir, t)[0] for t in sorted(tile_ids)]
    files = [f for f in files if f.is_file()]
    meta = json.dumps(_meta(plan, imagery_source), default=str).encode()
    target = out_dir / PATCHES
    nonempty = [f for f in files if pq.read_metadata(f).num_rows > 0]
    with atomic_path(target) as tmp:
        if not nonempty:
            gdf = tile_frame(Tile(21, 0, 0), np.zeros(0, int), np.zeros(0, int), np.zeros((0, len(plan.columns))), plan.columns, np.zeros(0), plan.request.period, plan.patch_px)
            gdf.to_parquet(tmp, index=False)
            t = pq.read_table(tmp)
            pq.write_table(t.replace_schema_metadata({**(t.schema.metadata or {}), META_KEY.encode(): meta}), tmp)
        else:
            first = pq.read_schema(nonempty[0])
            md = dict(first.metadata or {})
            geo = _geo_metadata_union(nonempty)
            if geo is not None:
                md[b"geo"] = geo
            md[META_KEY.encode()] = meta
            schema = first.with_metadata(md)
            with pq.ParquetWriter(tmp, schema) as writer:
                for f in nonempty:
                    writer.write_table(pq.read_table(f).cast(schema))
    out = [target]
    if geojson:
        out.append(write_geojson(target, out_dir / PATCHES_GEOJSON, _meta(plan, imagery_source)))
    return out


def write_geojson(parquet: Path, target: Path, meta: dict[str, Any]) -> Path:
    """RFC 7946 GeoJSON (WGS84, counter-clockwise rings) with ``meta`` as a foreign member."""
    import geopandas as gpd

    gdf = gpd.read_parquet(parquet)
    fc = json.loads(gdf.to_json(na="null", drop_id=True, to_wgs84=True))
    doc = {"type": "FeatureCollection", META_KEY: meta, "features": fc["features"]}
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(doc, separators=(",", ":"), default=str), encoding="utf-8")
    return target


def collect_summaries(out_dir: Path, tile_ids: Sequence[str]) -> dict[str, Any]:
    """Totals over the per-tile summaries that exist."""
    totals: dict[str, Any] = dict.fromkeys(COUNT_KEYS, 0)
    per_path: dict[str, int] = {}
    score_max = None
    tiles = 0
    for tid in tile_ids:
        js = tile_paths(out_dir, tid)[1]
        if not js.is_file():
            continue
        s = json.loads(js.read_text(encoding="utf-8"))
        tiles += 1
        for k in COUNT_KEYS:
            totals[k] += int(s.get(k, 0))
        per_path[s.get("path", "?")] = per_path.get(s.get("path", "?"), 0) + 1
        if s.get("score_max") is not None:
            score_max = max(score_max or 0.0, s["score_max"])
    totals["tiles"] = tiles
    totals["score_max"] = score_max
    totals["tiles_by_path"] = per_path
    return totals


# --------------------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------------------


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="detect", unit="tile", dynamic_ncols=True)


def execute(
    plan: DetectPlan,
    jobs: Sequence[TileJob],
    out_dir: Path,
    *,
    scheduler: str | None,
    workers: int | None,
    memory_limit: str | None,
    on_done: Callable[[str, dict[str, Any]], None],
    on_failed: Callable[[str, BaseException], None],
    progress: bool,
) -> float:
    """Run the tile tasks on the chosen scheduler; callbacks run in this process. Returns wall seconds."""
    bar = _progress(len(jobs), progress)
    t0 = time.perf_counter()
    scored = 0

    def finish(tid: str, fut_result: Callable[[], dict[str, Any]]) -> None:
        nonlocal scored
        try:
            s = fut_result()
        except Exception as e:  # noqa: BLE001 - a tile's failure is recorded, the run goes on
            on_failed(tid, e)
        else:
            scored += s["scored"]
            on_done(tid, s)
        bar.update(1)
        bar.set_postfix_str(f"{scored / max(time.perf_counter() - t0, 1e-9):,.0f} patches/s", refresh=False)

    from minewatch.scheduling import cluster_workers, cores, resolve_scheduler

    cpus = cores()
    auto = scheduler in (None, "auto")
    scheduler = resolve_scheduler(scheduler, len(jobs))
    try:
        if scheduler in ("synchronous", "threads"):
            # auto: tiles one after another, ONNX Runtime on every core (fastest measured on one machine)
            n = 1 if scheduler == "synchronous" else (workers or (1 if auto else cpus))
            threads = None if n == 1 else max(1, cpus // n)
            if n == 1:
                for job in jobs:
                    finish(job.id, lambda job=job: detect_tile(job, plan, str(out_dir), threads))  # type: ignore[misc]
            else:
                with ThreadPoolExecutor(max_workers=n) as pool:
                    futs = {pool.submit(detect_tile, j, plan, str(out_dir), threads): j.id for j in jobs}
                    for fut in as_completed(futs):
                        finish(futs[fut], fut.result)
            return time.perf_counter() - t0
        import logging

        from distributed import Client, LocalCluster
        from distributed import as_completed as dist_as_completed

        cluster = None
        threads: int | None = None
        if scheduler == "local":
            n = workers or cluster_workers()
            threads = max(1, cpus // n)
            cluster = LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, memory_limit=memory_limit or "4GiB",
                dashboard_address=None, silence_logs=logging.ERROR,
            )  # fmt: skip
            client = Client(cluster)
        else:
            try:
                client = Client(scheduler, timeout=30)
            except Exception as e:  # noqa: BLE001
                raise MinewatchError("--scheduler", f"cannot connect to Dask scheduler {scheduler!r} ({type(e).__name__}: {e})") from None
        try:
            t0 = time.perf_counter()
            plan_f = client.scatter(plan, broadcast=True)
            futs = {client.submit(_run_tile_task, j, plan_f, str(out_dir), threads, key=f"detect-{j.id}", pure=False): j.id for j in jobs}
            for fut in dist_as_completed(list(futs)):
                finish(futs.pop(fut), fut.result)
                # Let go of the result at once: a future still held when its worker dies is
                # recomputed elsewhere, rewriting the tile's files after the manifest recorded them.
                fut.release()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
        return time.perf_counter() - t0
    finally:
        bar.close()


def run_detect(
    imagery_path: str | os.PathLike[str],
    request: DetectRequest,
    out_dir: str | os.PathLike[str],
    *,
    roi: Any = None,
    roi_file: str | os.PathLike[str] | None = None,
    geojson: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    memory_limit: str | None = None,
    progress: bool = True,
    fresh: bool = False,
    argv: list[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> DetectResult:
    """Detect over every tile the imagery covers (see the module docstring). Resumable."""
    from minewatch.runs import RunContext

    say = log or (lambda s: None)
    out = Path(out_dir).absolute()  # workers may run elsewhere; the manifest records paths below it
    scorer = Scorer.load(request.models, precision=request.precision)
    imagery = open_imagery(imagery_path, request.bands)
    # workers (other processes, other machines) load the packages by absolute path
    models = tuple(str(p.path.resolve()) for p in scorer.packages)
    used = set(scorer.precisions)  # record what "auto" chose (int8 / fp32) when every model agrees
    precision = used.pop() if len(used) == 1 else request.precision
    request = DetectRequest(**{**asdict(request), "models": models, "period": resolve_period(imagery, request.period), "precision": precision})
    if request.fast and not scorer.has_fast_path:
        raise MinewatchError("--model", "a model has no fully-convolutional graph; the fast path needs one for every model")
    plan = plan_detect(imagery, request, scorer, roi)
    for w in plan.warnings:
        say(f"warning: {w}")
    inputs: dict[str, Any] = {"imagery": imagery_path}
    for i, m in enumerate(request.models):
        inputs["model" if i == 0 else f"model{i + 1}"] = str(scorer.packages[i].path)
    if roi_file is not None:
        inputs["roi"] = roi_file
    params = {**request.params(), "models": [p.card.name for p in scorer.packages]}
    result = DetectResult(out, plan)
    with RunContext(out, COMMAND, params=params, inputs=inputs, argv=argv, fresh=fresh, writes=(TILES_DIR, PATCHES, PATCHES_GEOJSON, SUMMARY)) as run:
        ids = plan.tile_ids
        run.plan(ids)
        todo_ids = set(run.todo(ids))
        todo = [j for j in plan.jobs if j.id in todo_ids]
        result.skipped = [t for t in ids if t not in todo_ids]
        if run.damage_report():
            say(f"warning: {run.damage_report()}")
        if result.skipped:
            say(f"{len(result.skipped)} tile(s) already finished, skipped (size and checksum checked)")

        def done(tid: str, s: dict[str, Any]) -> None:
            run.tile_done(tid, [*tile_paths(out, tid), *([mask_path(out, tid)] if request.masks else [])])
            result.done.append(tid)

        def failed(tid: str, e: BaseException) -> None:
            run.tile_failed(tid, e)
            result.failed[tid] = run.manifest["tiles"][tid].get("error", str(e))

        wall = 0.0
        if todo:
            wall = execute(plan, todo, out, scheduler=scheduler, workers=workers, memory_limit=memory_limit,
                           on_done=done, on_failed=failed, progress=progress)  # fmt: skip
        not_done = set(run.todo(ids))
        finished = [t for t in ids if t not in not_done]
        for p in merge_tiles(out, finished, plan, str(imagery_path), geojson):
            run.add_output(p)
        totals = collect_summaries(out, finished)
        scored_now = sum(json.loads(tile_paths(out, t)[1].read_text())["scored"] for t in result.done) if result.done else 0
        totals["this_call"] = {
            "tiles": len(result.done), "seconds": round(wall, 3),
            "patches_per_s": round(scored_now / wall, 1) if wall > 0 else None,
        }  # fmt: skip
        totals["tiles_failed"] = len(result.failed)
        result.totals = totals
        summary = {
            **_meta(plan, str(imagery_path)),
            "level": plan.level,
            "warnings": list(plan.warnings),
            "bands": list(plan.bands),
            "patch_px": plan.patch_px,
            "step_px": plan.step_px,
            "models": [{"name": p.card.name, "path": str(p.path), "members": p.card.members, "threshold": p.card.threshold, "precision": getattr(p, "precision", "fp32")} for p in scorer.packages],
            "totals": totals,
            "complete": not result.failed and len(finished) == len(ids),
        }
        write_json_atomic(out / SUMMARY, summary)
        run.add_output(out / SUMMARY)
        result.summary = run.summary()
    return result


__all__ = [
    "DetectPlan",
    "DetectRequest",
    "DetectResult",
    "TileJob",
    "detect_tile",
    "merge_tiles",
    "patches_to_score",
    "plan_detect",
    "run_detect",
    "tile_frame",
    "tile_paths",
]
