"""``minewatch composite``: cloud-free Sentinel-2 median composites of an ROI, one COG per tile."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from minewatch.cli.options import composite_bands, level_option
from minewatch.errors import MinewatchError


@click.command(name="composite")
@click.option("--roi", "roi_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Region of interest (GeoJSON in WGS84, or any vector file with a CRS).")
@click.option("--start", required=True, help="First day, YYYY-MM-DD (inclusive).")
@click.option("--end", required=True, help="Last day, YYYY-MM-DD (inclusive).")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output run folder (rerun the same command to resume).")
@click.option("--source", default="earth-search", show_default=True, help="earth-search | planetary-computer | a STAC API URL | a local catalog.json / ItemCollection file.")
@level_option(default=None, extra_help="[default: l2a for public catalogs; a local catalog: the level its items state]")
@click.option("--bands", default=None, help="Comma-separated bands in output order, e.g. B4,B3,B2, or model:NAME for the bands model NAME scores (model:default) [default: the 12 bands B1..B12 without B10].")
@click.option("--max-scene-cloud", type=click.FloatRange(0, 100), default=60.0, show_default=True, help="Skip scenes whose catalog cloud cover exceeds this percentage.")
@click.option("--resolution", type=float, default=10.0, show_default=True, help="Output pixel size in metres.")
@click.option("--tile-px", type=int, default=1008, show_default=True, help="Tile size in pixels (multiple of 24).")
@click.option("--collection", default=None, help="Collection id for a STAC API URL source [default: by level].")
@click.option("--mask", "mask", type=click.Choice(["scl", "scene-mask", "s2cloudless", "threshold"]), default=None, help="Cloud mask [default: scl for L2A; L1C: scene mask if present, else s2cloudless if installed, else threshold].")
@click.option("--resampling", type=click.Choice(["nearest", "bilinear", "cubic", "average"]), default="nearest", show_default=True, help="Resampling of 20/60 m bands to the output grid.")
@click.option("--scheduler", default=None, help="Dask scheduler: a cluster address (tcp://host:8786), 'local' (a LocalCluster), 'threads' or 'synchronous' (in process); default 'auto': in process on one machine (minewatch.scheduling says the rule).")
@click.option("--workers", type=int, default=None, help="Workers for a LocalCluster / threads in process.")
@click.option("--memory-limit", default="4GiB", show_default=True, help="Memory limit per LocalCluster worker.")
@click.option("--chunk-px", type=click.IntRange(64, 4096), default=512, show_default=True, help="Dask chunk of the odc-stac reference reader only (Python API: process_tile(reader='odc')); the default reader reads each file once per tile and composites 16-row strips (peak memory per worker: benchmarks/README.md).")
@click.option("--max-tiles", type=int, default=None, help="Refuse ROIs needing more tiles than this.")
@click.option("--retries", type=click.IntRange(0, 20), default=5, show_default=True, help="HTTP retries (exponential backoff) for STAC API requests.")
@click.option("--overwrite", is_flag=True, help="Start over: delete a previous run's outputs in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(roi_path: Path, start: str, end: str, out_dir: Path, source: str, level: str | None, bands: str | None,
            max_scene_cloud: float, resolution: float, tile_px: int, collection: str | None, mask: str | None,
            resampling: str, scheduler: str | None, workers: int | None, memory_limit: str, max_tiles: int | None,
            chunk_px: int, retries: int, overwrite: bool, quiet: bool) -> None:  # fmt: skip
    """Build cloud-masked median composites of ROI for START..END, one Cloud-Optimised GeoTIFF,
    clear-count raster and STAC Item per tile of the global grid.

    \b
    Examples:
      minewatch composite --roi area.geojson --start 2024-01-01 --end 2024-12-31 --out comp/
      minewatch composite --roi area.geojson --start 2024-01-01 --end 2024-12-31 --out comp/ \\
          --source planetary-computer --bands B4,B3,B2
      minewatch composite --roi area.geojson --start 2024-01-01 --end 2024-12-31 --out comp/ \\
          --source my_scenes/catalog.json --scheduler tcp://10.0.0.5:8786
    """
    from minewatch.imagery.engine import CompositeRequest, run_composites
    from minewatch.imagery.plan import check_window
    from minewatch.imagery.sources import resolve_source
    from minewatch.roi import read_roi

    from minewatch.imagery.sources import default_level

    from minewatch.runs import abs_local, abs_path

    roi_path, out_dir, source = abs_path(roi_path), abs_path(out_dir), abs_local(source) or source  # the CLI edge: no path depends on the working directory below
    lvl = level.upper() if level else default_level(source)[0]
    d0, d1 = check_window(start, end, tile_px)
    if resolution <= 0:
        raise MinewatchError("--resolution", f"must be positive, got {resolution}")
    roi = read_roi(roi_path)
    tiles = roi.tiles(tile_px, resolution, max_tiles)
    src = resolve_source(source, lvl, collection=collection, retries=retries)
    req = CompositeRequest(start=d0, end=d1, bands=composite_bands(bands, lvl), level=lvl, max_scene_cloud=max_scene_cloud, resampling=resampling, mask=mask, chunk_px=chunk_px)
    click.echo(f"{len(tiles)} tile(s) of {tile_px * resolution / 1000:g} km, {lvl} from {src.name}, bands {','.join(req.bands)}", err=True)
    res = run_composites(
        tiles, req, src, out_dir, roi_file=roi_path, scheduler=scheduler, workers=workers, memory_limit=memory_limit,
        progress=not quiet, fresh=overwrite, argv=sys.argv, log=lambda s: click.echo(s, err=True),
    )  # fmt: skip
    click.echo(f"{out_dir}: {res.summary}")
    if res.failed:
        sys.exit(1)
