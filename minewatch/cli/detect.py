"""``minewatch detect``: score every 48 px patch (24 px step) of imagery with one or more models."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command(name="detect")
@click.option("--model", "models", multiple=True, default=("default",), show_default=True,
              help="Model package folder or shipped name; repeat for a run-time ensemble (scores averaged, each kept).")
@click.option("--imagery", required=True, type=click.Path(path_type=Path),
              help="A GeoTIFF/COG, a folder of them (or a composite run folder), or a STAC Item/ItemCollection/Collection JSON.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output run folder (rerun the same command to resume).")
@click.option("--period", default=None, help="Period label for the rows, e.g. 2024 or 2024Q3 [default: from the imagery's dates].")
@click.option("--min-score", type=float, default=0.4, show_default=True, help="Do not write patches scoring below this (they are still counted).")
@click.option("--min-valid", type=float, default=0.8, show_default=True, help="Skip patches with a smaller fraction of valid pixels (nodata, no clear observation).")
@click.option("--geojson", is_flag=True, help="Also write patches.geojson (WGS84).")
@click.option("--workers", type=click.IntRange(1, 512), default=None, help="Dask LocalCluster workers (default: one per 8 cores) or tiles at once in process (default 1).")
@click.option("--scheduler", default=None, help="Dask scheduler: a cluster address (tcp://host:8786), 'local' (a LocalCluster), 'threads' or 'synchronous' (in process); default 'auto': in process on one machine (minewatch.scheduling says the rule).")
@click.option("--memory-limit", default="4GiB", show_default=True, help="Memory limit per LocalCluster worker.")
@click.option("--no-fast", is_flag=True, help="Score patch by patch even when the model has a fully-convolutional graph (same scores, slower).")
@click.option("--tile-px", type=int, default=None, help="Tile size in pixels, a multiple of 24 [default: the composites' tile size, else 1008].")
@click.option("--level", type=click.Choice(["l1c", "l2a"], case_sensitive=False), default=None, help="Processing level of imagery that does not state one.")
@click.option("--bands", "bands", default=None, help="Band names of GeoTIFFs that do not name their own, in file order, e.g. B4,B3,B2.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "int8"], case_sensitive=False), default="auto", show_default=True,
              help="Scoring arithmetic: auto uses a model's int8 graphs where its card shows validation AP within 0.005 of fp32 (docs/models.md), else fp32.")
@click.option("--masks", is_flag=True, help="Also write OUT/masks/<tile>.tif: the mined-pixel mask (uint8 COG: 1 scar inside a written patch, 2 scar elsewhere, 0 not scar, 255 no data).")
@click.option("--overwrite", is_flag=True, help="Start over: delete a previous run's outputs in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(models: tuple[str, ...], imagery: Path, out_dir: Path, period: str | None, min_score: float, min_valid: float,
            geojson: bool, workers: int | None, scheduler: str | None, memory_limit: str, no_fast: bool, tile_px: int | None,
            level: str | None, bands: str | None, precision: str, masks: bool, overwrite: bool, quiet: bool) -> None:  # fmt: skip
    """Score every patch of IMAGERY and write patch scores (GeoParquet, WGS84) to OUT.

    Patches are 48 px squares on a 24 px lattice aligned to the global tile grid; each tile is read
    with a 24 px halo so patches straddling tile edges are scored exactly once. Patches with too
    little valid data are skipped and counted, not scored. Per-tile counts go to
    OUT/tiles/<tile>.json, the region's rows to OUT/patches.parquet, totals to OUT/summary.json.

    \b
    Examples:
      minewatch detect --imagery comp/collection.json --out det/
      minewatch detect --model default --model my_model/ --imagery mosaic.tif --period 2024 --out det/ --geojson
      minewatch detect --imagery comp/ --out det/ --scheduler tcp://10.0.0.5:8786
    """
    from minewatch.cli.options import auto_tile_px, parse_band_names
    from minewatch.detect.engine import DetectRequest, run_detect
    from minewatch.periods import parse_period

    if period is not None:  # refuse 2024Q5 / "last year" before anything is read or written
        period = parse_period(period, "--period").label

    from minewatch.runs import abs_local, abs_path

    # the CLI edge: workers on a cluster run elsewhere, so nothing below may depend on the working directory
    imagery, out_dir = Path(abs_local(imagery) or imagery), abs_path(out_dir)
    models = tuple(abs_local(m) or m for m in models)
    band_names = parse_band_names(bands)
    tile_px = auto_tile_px(tile_px, imagery, models, band_names, log=lambda s: click.echo(s, err=True))
    req = DetectRequest(
        models=tuple(models), period=period or "", min_score=min_score, min_valid=min_valid,
        fast=False if no_fast else None, tile_px=tile_px, level=level.upper() if level else None, bands=band_names, precision=precision.lower(), masks=masks,
    )  # fmt: skip
    res = run_detect(
        imagery, req, out_dir, geojson=geojson, scheduler=scheduler, workers=workers, memory_limit=memory_limit,
        progress=not quiet, fresh=overwrite, argv=sys.argv, log=lambda s: click.echo(s, err=True),
    )  # fmt: skip
    t = res.totals
    from minewatch.models.package import load_package

    click.echo(f"scored with ONNX Runtime on {load_package(models[0] if models else 'default').execution_provider}", err=True)
    click.echo(
        f"{out_dir}: {res.summary}; {t['scored']:,} patches scored, {t['skipped_nodata'] + t['skipped_low_valid']:,} skipped "
        f"(no data or < {min_valid:g} valid), {t['written']:,} written (score ≥ {min_score:g}) to {out_dir / 'patches.parquet'}"
    )
    if res.failed:
        sys.exit(1)
    if t["patches"] and not t["scored"] and t["skipped_nodata"] == t["patches"]:
        # An all-nodata composite (a missed swath, a wrong file): an empty result would read as "no mining".
        from minewatch.errors import MinewatchError

        raise MinewatchError(imagery, f"no valid pixel in any of the {len(res.plan.tile_ids)} tiles (all nodata or no clear observation): nothing was scored")
