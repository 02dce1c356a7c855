"""Run composites over many tiles: plan, then execute on Dask, resumably, with progress.

How a run goes (:func:`run_composites`):

1. Open the run folder (:class:`minewatch.runs.RunContext`: lock, manifest, resume or refuse a
   folder made with other parameters) and write the tile list ``tiles.geojson`` first.
2. Skip finished tiles: done in the manifest with outputs intact, or with a valid COG + clear
   count + item on disk (:func:`minewatch.imagery.write.outputs_valid`).
3. Search the source once for the ROI of the remaining tiles; plan every tile (pure).
4. Execute each plan as one task (:func:`process_tile`): every asset of the tile read once
   (:func:`minewatch.imagery.load.direct_composite`) → composite in strips of rows → COG + STAC
   Item, written atomically. A task uses ``tile_threads`` threads (default: the cores it has), and
   holds the tile's native-resolution windows plus one strip (about 0.35 GiB for 12 bands × 20
   observations of a 1008 px tile).
5. Record every tile ``done`` or ``failed`` (one-line reason) as it finishes; failures do not
   stop the others. Finally write ``collection.json`` linking the finished items.

Schedulers: ``None``/``"auto"`` follows :func:`minewatch.scheduling.resolve_scheduler` (in
process on one machine); ``"local"`` starts a ``distributed.LocalCluster`` (process workers, one
tile at a time each, a memory limit per worker); an address (``tcp://host:8786``) connects to a
running cluster (its workers must see ``out_dir`` and the source); ``"threads"`` (``workers``
tiles at once, default 1, sharing the cores) and ``"synchronous"`` (one thread) run in this
process. A worker lost mid-run costs only its tile: Dask reruns the task elsewhere, and outputs
are written atomically, so the result equals an uninterrupted run.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely

from minewatch.atomic import write_json_atomic
from minewatch.errors import MinewatchError
from minewatch.grid import Tile
from minewatch.imagery.plan import (
    MASK_S2CLOUDLESS,
    MASK_SCENE,
    MASK_SCL,
    MASK_THRESHOLD,
    TilePlan,
    mask_inputs,
    normalise_band,
    plan_tile,
)
from minewatch.imagery.sources import Source
from minewatch.imagery.write import clear_path, composite_path, item_path, outputs_valid, write_tile_outputs

DEFAULT_BANDS_L2A = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
DEFAULT_BANDS_L1C = DEFAULT_BANDS_L2A
COMMAND = "composite"
TILE_LIST = "tiles.geojson"
COLLECTION = "collection.json"


@dataclass(frozen=True)
class CompositeRequest:
    """What to composite (everything except where and on which tiles)."""

    start: dt.date
    end: dt.date
    bands: tuple[str, ...] = DEFAULT_BANDS_L2A
    level: str = "L2A"
    max_scene_cloud: float = 60.0
    resampling: str = "nearest"
    mask: str | None = None
    """Cloud-mask method; None picks: SCL for L2A; for L1C a scene mask if the items have one, else
    s2cloudless if installed, else the threshold rule."""
    chunk_px: int = 512

    def params(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(), "end": self.end.isoformat(), "bands": list(self.bands),
            "level": self.level, "max_scene_cloud": self.max_scene_cloud, "resampling": self.resampling,
            "mask": self.mask,
        }  # fmt: skip


@dataclass
class RunResult:
    out_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    empty: dict[str, str] = field(default_factory=dict)
    """Tiles with no scene in the window: a final state (recorded, never retried), not a failure."""
    summary: str = ""

    @property
    def ok(self) -> bool:
        return not self.failed


def parse_bands(text: str | Sequence[str] | None, level: str) -> tuple[str, ...]:
    """Canonical band tuple from ``"B4,B3,B2"`` (or a list); None → the level's default 12 bands."""
    if text is None or text == "" or text == ():
        return DEFAULT_BANDS_L2A if level.upper() == "L2A" else DEFAULT_BANDS_L1C
    parts = [p for p in (text.split(",") if isinstance(text, str) else text) if str(p).strip()]
    try:
        bands = tuple(normalise_band(str(p)) for p in parts)
    except ValueError as e:
        raise MinewatchError("--bands", str(e)) from None
    if "SCL" in bands:
        raise MinewatchError("--bands", "SCL is a mask, not an output band")
    if level.upper() == "L2A" and "B10" in bands:
        raise MinewatchError("--bands", "B10 (cirrus) does not exist in L2A products")
    if len(set(bands)) != len(bands):
        raise MinewatchError("--bands", f"duplicate band in {','.join(bands)}")
    return bands


def choose_mask(level: str, key_map: dict[str, str], requested: str | None = None) -> str:
    """The cloud-mask method for a level and the assets available (see :class:`CompositeRequest`)."""
    from minewatch.imagery.composite import s2cloudless_available

    if requested is not None:
        method = requested
    elif level == "L2A":
        method = MASK_SCL
    elif "CLOUDMASK" in key_map:
        method = MASK_SCENE
    elif s2cloudless_available() and all(b in key_map for b in mask_inputs(MASK_S2CLOUDLESS)):
        method = MASK_S2CLOUDLESS
    else:
        method = MASK_THRESHOLD
    missing = [b for b in mask_inputs(method) if b not in key_map]
    if missing:
        raise MinewatchError("--source", f"cloud mask '{method}' needs asset(s) {', '.join(missing)} which the catalog's items lack")
    if method == MASK_S2CLOUDLESS and not s2cloudless_available():
        raise MinewatchError("--mask", "s2cloudless is not installed (pip install 'minewatch[cloudmask]')")
    return method


def tile_list_geojson(tiles: Sequence[Tile]) -> dict[str, Any]:
    """The tile list as a WGS84 FeatureCollection (id, zone, epsg, tile_px, resolution)."""
    from minewatch.grid import wrap_antimeridian

    feats = []
    for t in tiles:
        g = wrap_antimeridian(t.geometry_wgs84())
        feats.append({
            "type": "Feature",
            "properties": {"tile": t.id, "zone": t.zone, "epsg": t.epsg, "tile_px": int(t.tile_px), "resolution": float(t.resolution)},
            "geometry": shapely.geometry.mapping(g),
        })  # fmt: skip
    return {"type": "FeatureCollection", "features": feats}


READERS = ("direct", "odc")


def process_tile(plan: TilePlan, source: Source, out_dir: str, chunk_px: int = 512, tile_threads: int | None = 1, reader: str = "direct") -> list[str]:
    """Composite one tile and write its outputs; returns the output paths. Runs on a worker.

    ``reader="direct"`` (default): :func:`minewatch.imagery.load.direct_composite`, every asset
    read once per tile, ``tile_threads`` threads for reads and strips. ``reader="odc"``: the lazy
    odc-stac graph, its ``chunk_px`` chunks computed one after another by a local scheduler inside
    the task, never by the cluster. Both give the same pixels (tests/test_imagery_direct.py).
    """
    from minewatch.imagery.load import configure_reader, direct_composite, lazy_composite
    from minewatch.retry import RetryPolicy, retry_call

    if reader not in READERS:
        raise ValueError(f"unknown reader {reader!r} (one of {', '.join(READERS)})")
    if tile_threads is None:  # on a cluster's worker: its cores shared by the tasks it runs at once
        tile_threads = _worker_share()
    if reader == "odc":
        configure_reader(source)  # odc-stac's GDAL settings (the direct reader opens files in load.reader_env)
    if reader == "direct":
        fn = lambda: direct_composite(plan, source, tile_threads)  # noqa: E731
    else:
        fn = lambda: compute_blockwise(lazy_composite(plan, source, chunk_px), tile_threads)  # noqa: E731
    # GDAL retries HTTP errors per request, but not a connection dropped while a file header is
    # read ("not recognized as a supported format"); a whole-tile retry, GDAL's cache cleared,
    # covers that. Only transient errors are retried (minewatch.retry.is_transient).
    result = retry_call(fn, plan.id, RetryPolicy(attempts=3, base_s=2.0))
    return [str(p) for p in write_tile_outputs(out_dir, plan, result)]


def _worker_share() -> int:
    """Threads for one tile on this machine: its cores divided by the Dask worker's task slots."""
    from minewatch.scheduling import cores

    try:
        from distributed import get_worker

        slots = max(1, int(get_worker().state.nthreads))
    except Exception:  # not on a Dask worker
        slots = 1
    return max(1, cores() // slots)


def compute_blockwise(arr: Any, threads: int = 1) -> Any:
    """Compute a (bands, y, x) Dask array one spatial block at a time into a numpy array.

    Each ``compute`` only runs the part of the graph one output block needs (Dask culls the rest),
    so peak memory is one block's stack of observations, whatever order a scheduler would have
    chosen for the whole graph. ``threads > 1`` reads a block's inputs in parallel.
    """
    import numpy as np

    out = np.empty(arr.shape, arr.dtype)
    kw: dict[str, Any] = {"scheduler": "synchronous"} if threads <= 1 else {"scheduler": "threads", "num_workers": threads}
    y0 = 0
    for i, cy in enumerate(arr.chunks[1]):
        x0 = 0
        for j, cx in enumerate(arr.chunks[2]):
            out[:, y0 : y0 + cy, x0 : x0 + cx] = arr.blocks[0, i, j].compute(**kw)
            x0 += cx
        y0 += cy
    return out


def _progress(total: int, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="tile", dynamic_ncols=True)


def _execute(
    plans: Sequence[TilePlan],
    source: Source,
    out_dir: Path,
    *,
    scheduler: str | None,
    workers: int | None,
    memory_limit: str | None,
    chunk_px: int,
    tile_threads: int | None,
    on_done: Callable[[str, list[str]], None],
    on_failed: Callable[[str, BaseException], None],
    progress: bool,
) -> None:
    """Run the plans on the chosen scheduler, calling ``on_done``/``on_failed`` per tile in this process."""
    from minewatch.scheduling import cluster_workers, cores, resolve_scheduler

    scheduler = resolve_scheduler(scheduler, len(plans))
    bar = _progress(len(plans), progress, "composite")
    try:
        if scheduler in ("synchronous", "threads"):
            n = 1 if scheduler == "synchronous" else (workers or 1)
            per_tile = tile_threads or (1 if scheduler == "synchronous" else max(1, cores() // n))
            with ThreadPoolExecutor(max_workers=n) as pool:
                futs = {pool.submit(process_tile, p, source, str(out_dir), chunk_px, per_tile): p.id for p in plans}
                for fut in as_completed(futs):
                    tid = futs[fut]
                    try:
                        on_done(tid, fut.result())
                    except Exception as e:
                        on_failed(tid, e)
                    bar.update(1)
            return
        from distributed import Client, LocalCluster, as_completed as dist_as_completed

        cluster = None
        per_worker: int | None = tile_threads
        if scheduler == "local":
            n_workers = workers or cluster_workers()
            per_worker = tile_threads or max(1, cores() // n_workers)
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                memory_limit=memory_limit or "4GiB",
                dashboard_address=None,
            )
            client = Client(cluster)
        else:
            try:
                client = Client(scheduler, timeout=30)
            except Exception as e:
                raise MinewatchError("--scheduler", f"cannot connect to Dask scheduler {scheduler!r} ({type(e).__name__}: {e})") from None
        try:
            futs = {client.submit(process_tile, p, source, str(out_dir), chunk_px, per_worker, key=f"composite-{p.id}", pure=False): p.id for p in plans}
            for fut in dist_as_completed(list(futs)):
                tid = futs.pop(fut)
                try:
                    on_done(tid, fut.result())
                except Exception as e:
                    on_failed(tid, e)
                # A result still held when its worker dies is recomputed (and rewritten) elsewhere.
                fut.release()
                bar.update(1)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    finally:
        bar.close()


def write_collection(out_dir: Path, tile_ids: Iterable[str], request: CompositeRequest) -> Path | None:
    """A STAC Collection (``collection.json``) linking every finished tile item, so the run folder
    is itself a local catalog. Deterministic (no timestamps): reruns rewrite it identically."""
    import json

    items = []
    for tid in sorted(tile_ids):
        p = item_path(out_dir, tid)
        if p.is_file():
            items.append((p, json.loads(p.read_text(encoding="utf-8"))))
    if not items:
        return None
    xs0, ys0, xs1, ys1 = zip(*[it["bbox"] for _, it in items], strict=True)
    coll = {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": f"minewatch-composites-{request.start.isoformat()}-{request.end.isoformat()}-{request.level}",
        "description": f"minewatch Sentinel-2 {request.level} median composites {request.start} to {request.end}, bands {','.join(request.bands)}",
        **data_licence(),
        "extent": {
            "spatial": {"bbox": [[min(xs0), min(ys0), max(xs1), max(ys1)]]},
            "temporal": {"interval": [[f"{request.start.isoformat()}T00:00:00Z", f"{request.end.isoformat()}T23:59:59Z"]]},
        },
        "summaries": {"processing:level": [request.level], "minewatch:bands": [list(request.bands)]},
        "links": [*LICENCE_LINKS, *({"rel": "item", "href": os.path.relpath(p, out_dir), "type": "application/json"} for p, _ in items)],
    }
    return write_json_atomic(out_dir / COLLECTION, coll)


COPERNICUS_TERMS = ("Contains modified Copernicus Sentinel data [years], processed by minewatch; use is free and open "
                    "under the Copernicus Sentinel data terms and conditions (attribution required)")  # fmt: skip
LICENCE_LINKS = [{"rel": "license", "href": "https://sentinels.copernicus.eu/documents/247904/690755/Sentinel_Data_Legal_Notice",
                  "type": "application/pdf", "title": "Copernicus Sentinel data terms and conditions"}]  # fmt: skip


def data_licence() -> dict[str, str]:
    """STAC licence fields for minewatch composites.

    Composites are modified Copernicus Sentinel data: free and open under the Copernicus Sentinel
    data terms (not an SPDX licence, hence STAC's ``other`` plus a ``license`` link). What derives
    from Earth Genome's data says so where it is written (the demo mosaic's ``SOURCE`` tag, a demo
    run's map credits): CC BY 4.0, "Earth Genome, Amazon Mining Watch".
    """
    return {"license": "other", "minewatch:attribution": COPERNICUS_TERMS}


def run_composites(
    tiles: Sequence[Tile],
    request: CompositeRequest,
    source: Source,
    out_dir: str | os.PathLike[str],
    *,
    roi_file: str | os.PathLike[str] | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    memory_limit: str | None = None,
    tile_threads: int | None = None,
    progress: bool = True,
    fresh: bool = False,
    argv: list[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Composite every tile into ``out_dir`` (see the module docstring). Resumable; returns counts."""
    from minewatch.runs import RunContext

    out = Path(out_dir).absolute()  # the run records outputs relative to it: a relative --out would be joined twice
    say = log or (lambda s: None)
    source.check_access()
    params = {**request.params(), "source": source.name, "tiles": [t.id for t in tiles], "tile_px": tiles[0].tile_px if tiles else None, "resolution": tiles[0].resolution if tiles else None}
    inputs: dict[str, Any] = {}
    if roi_file is not None:
        inputs["roi"] = roi_file
    if source.kind == "file":
        inputs["catalog"] = source.location
    result = RunResult(out)
    with RunContext(out, COMMAND, params=params, inputs=inputs, argv=argv, fresh=fresh, writes=("tiles", TILE_LIST, COLLECTION)) as run:
        ids = [t.id for t in tiles]
        write_json_atomic(out / TILE_LIST, tile_list_geojson(tiles))
        run.add_output(out / TILE_LIST)
        run.plan(ids)
        todo_ids = set(run.todo(ids))
        by_id = {t.id: t for t in tiles}
        todo: list[Tile] = []
        for tid in ids:
            tile = by_id[tid]
            if tid not in todo_ids:
                result.skipped.append(tid)
            elif outputs_valid(out, tile, request.bands, request.level):
                paths = [composite_path(out, tid), clear_path(out, tid), item_path(out, tid)]
                run.tile_done(tid, paths)
                result.skipped.append(tid)
            else:
                todo.append(tile)
        if run.damage_report():
            say(f"warning: {run.damage_report()}")
        if result.skipped:
            say(f"{len(result.skipped)} tile(s) already finished, skipped (size and checksum checked)")
        if todo:
            plans = _plan_all(todo, request, source, say)
            plan_ids = {p.id for p in plans}
            for t in todo:
                if t.id not in plan_ids:
                    msg = f"no Sentinel-2 {request.level} scenes in {request.start}..{request.end} with scene cloud ≤ {request.max_scene_cloud:g}%"
                    run.tile_empty(t.id, msg)  # final: a rerun would find none again
                    result.empty[t.id] = msg

            def done(tid: str, paths: list[str]) -> None:
                run.tile_done(tid, paths)
                result.done.append(tid)

            def failed(tid: str, e: BaseException) -> None:
                run.tile_failed(tid, e)
                result.failed[tid] = run.manifest["tiles"][tid].get("error", str(e))

            _execute(
                plans, source, out, scheduler=scheduler, workers=workers, memory_limit=memory_limit,
                chunk_px=request.chunk_px, tile_threads=tile_threads, on_done=done, on_failed=failed, progress=progress,
            )  # fmt: skip
        coll = write_collection(out, ids, request)
        if coll is not None:
            run.add_output(coll)
        result.summary = run.summary()
    return result


def _plan_all(tiles: Sequence[Tile], request: CompositeRequest, source: Source, say: Callable[[str], None]) -> list[TilePlan]:
    """Search once for all tiles' footprint, then plan each tile (tiles without scenes are left out)."""
    roi = shapely.union_all([t.geometry_wgs84() for t in tiles])
    items = source.search(roi, request.start, request.end, request.max_scene_cloud)
    say(f"{len(items)} scene(s) found in {source.name}")
    key_map = source.key_map(items)
    missing = [b for b in request.bands if b not in key_map]
    if items and missing:
        raise MinewatchError("--bands", f"the catalog's items have no asset for band(s) {', '.join(missing)}")
    mask = choose_mask(request.level, key_map, request.mask) if items else MASK_SCL
    plans = []
    for t in tiles:
        plan = plan_tile(
            t, items, start=request.start, end=request.end, bands=request.bands, level=request.level,
            source=source.name, asset_keys=key_map, mask=mask, max_scene_cloud=request.max_scene_cloud,
            resampling=request.resampling,
        )  # fmt: skip
        if plan.items:
            plans.append(plan)
    if not plans:  # wrong dates, level or catalog: say so once instead of failing every tile
        raise MinewatchError("--start/--end", f"no Sentinel-2 {request.level} scenes in {source.name} for {request.start}..{request.end} with scene cloud ≤ {request.max_scene_cloud:g}% over any tile still to do")
    return plans


__all__ = [
    "CompositeRequest",
    "RunResult",
    "run_composites",
    "process_tile",
    "parse_bands",
    "choose_mask",
    "MASK_SCL",
    "MASK_SCENE",
    "MASK_THRESHOLD",
]
