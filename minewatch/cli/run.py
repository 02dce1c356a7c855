"""``minewatch run``: the whole chain in one command — imagery → detect → post-process → map."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from minewatch.cli.options import level_option


@click.command(name="run")
@click.option("--demo", is_flag=True, help="Run on the demo region shipped with the package (offline); the default when no --roi is given.")
@click.option("--roi", "roi_file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Region of interest (GeoJSON in WGS84, or any vector file with a CRS).")
@click.option("--period", default=None, help="Year or quarter to composite and label, e.g. 2024 or 2024Q3.")
@click.option("--periods", default=None, help="Monitoring: several periods into one folder, e.g. 2024,2025Q1..2025Q4 (OUT/<period>/ each, resumable).")
@click.option("--imagery", type=click.Path(path_type=Path), default=None, help="Existing composites (COG, folder, STAC JSON) instead of compositing.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Output run folder [default: ./minewatch-demo with --demo, else required].")
@click.option("--model", "models", multiple=True, default=("default",), show_default=True, help="Model package folder or shipped name; repeat for an ensemble.")
@click.option("--source", default="earth-search", show_default=True, help="STAC source for compositing: earth-search | planetary-computer | a STAC API URL | a local catalog.")
@level_option(default=None, extra_help="[default: l2a, no account needed; l1c only for a model that needs B10]")
@click.option("--min-score", type=float, default=0.4, show_default=True, help="Detect: do not write patches scoring below this.")
@click.option("--min-valid", type=float, default=0.8, show_default=True, help="Detect: skip patches with a smaller fraction of valid pixels.")
@click.option("--preset", type=click.Choice(["card", "single", "cumulative", "mean06"]), default="card", show_default=True,
              help="Post-processing thresholds: the model card's operating point, or a post-processing preset.")
@click.option("--t-main", type=float, default=None, help="Override: keep patches with mean score ≥ this.")
@click.option("--t-iso", type=float, default=None, help="Override: isolated patches must reach this.")
@click.option("--simplify", "simplify_m", type=float, default=None, metavar="METRES", help="Also write simplified polygons.")
@click.option("--no-map", is_flag=True, help="Skip the web map.")
@click.option("--tile-px", type=int, default=None, help="Tile size in pixels, a multiple of 24 [default: the composites' tile size, else 1008].")
@click.option("--workers", type=click.IntRange(1, 512), default=None, help="Dask LocalCluster workers (default: one per 8 cores) or tiles at once in process (default 1).")
@click.option("--scheduler", default=None, help="Dask scheduler address, 'local' (a LocalCluster), 'threads' or 'synchronous'; default 'auto': in process on one machine.")
@click.option("--masks", is_flag=True, help="Detect also writes detect/masks/<tile>.tif, the mined-pixel mask (uint8 COG).")
@click.option("--overwrite", is_flag=True, help="Start over: delete the previous run's outputs in --out.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def command(demo: bool, roi_file: Path | None, period: str | None, periods: str | None, imagery: Path | None, out_dir: Path | None, models: tuple[str, ...],
            source: str, level: str | None, min_score: float, min_valid: float, preset: str, t_main: float | None, t_iso: float | None,
            simplify_m: float | None, no_map: bool, tile_px: int | None, workers: int | None, scheduler: str | None, masks: bool, overwrite: bool, quiet: bool) -> None:  # fmt: skip
    """Composite (or read) imagery, detect mines, dissolve them into polygons and draw a web map.

    \b
    Examples:
      minewatch run --demo                                   # offline, on the shipped demo region
      minewatch run --roi area.geojson --period 2024 --out runs/area
      minewatch run --roi area.geojson --imagery comp/collection.json --out runs/area
    """
    from minewatch.detect.chain import ChainRequest, run_chain
    from minewatch.errors import MinewatchError
    from minewatch.periods import parse_period

    if period is not None:  # refuse 2024Q5 / "last year" before anything is read or written
        period = parse_period(period, "--period").label
    if periods is not None:
        return _monitoring(periods, period, demo, roi_file, imagery, out_dir, models, source, level, min_score, min_valid, preset,
                           t_main, t_iso, simplify_m, no_map, tile_px, workers, scheduler, overwrite, quiet)

    from minewatch.runs import abs_local, abs_path

    roi_file = abs_path(roi_file) if roi_file is not None else None
    imagery = Path(abs_local(imagery) or imagery) if imagery is not None else None
    out_dir = abs_path(out_dir) if out_dir is not None else None
    models = tuple(abs_local(m) or m for m in models)
    source = abs_local(source) or source
    if roi_file is None and imagery is None:
        demo = True
    if demo and roi_file is not None:
        raise MinewatchError("--demo", "the demo has its own region; drop --roi (or drop --demo)")
    if out_dir is None:
        if not demo:
            raise MinewatchError("--out", "give an output folder")
        out_dir = abs_path("minewatch-demo")
    req = ChainRequest(
        models=tuple(models), roi_file=str(roi_file) if roi_file else None, period=period, imagery=str(imagery) if imagery else None,
        demo=demo, source=source, level=level.upper() if level else None, min_score=min_score, min_valid=min_valid,
        preset=preset, t_main=t_main, t_iso=t_iso, simplify_m=simplify_m, map=not no_map, tile_px=tile_px, masks=masks,
    )  # fmt: skip
    res = run_chain(req, out_dir, scheduler=scheduler, workers=workers, progress=not quiet, fresh=overwrite, argv=sys.argv,
                    log=lambda s: click.echo(s, err=True))  # fmt: skip
    for line in res.lines:
        click.echo(line)
    click.echo(f"{out_dir}: {'complete' if not res.failed else 'incomplete (rerun the same command to retry failed tiles)'}")
    if res.failed:
        sys.exit(1)


def _monitoring(periods: str, period: str | None, demo: bool, roi_file: Path | None, imagery: Path | None, out_dir: Path | None,
                models: tuple[str, ...], source: str, level: str | None, min_score: float, min_valid: float, preset: str,
                t_main: float | None, t_iso: float | None, simplify_m: float | None, no_map: bool, tile_px: int | None,
                workers: int | None, scheduler: str | None, overwrite: bool, quiet: bool) -> None:  # fmt: skip
    """``run --periods``: one chain (composite → detect → postprocess) per period into OUT/<period>/.

    Each period is its own resumable run folder nested in the monitoring folder, so a rerun skips
    the periods (and tiles) already done; ``minewatch persist OUT`` then reads every
    ``OUT/<period>/detect/patches.parquet``.
    """
    from minewatch.detect.chain import ChainRequest, run_chain
    from minewatch.errors import MinewatchError
    from minewatch.periods import parse_period_list
    from minewatch.runs import abs_path

    plist = parse_period_list(periods, "--periods")
    if period is not None:
        raise MinewatchError("--periods", "give --period or --periods, not both")
    if imagery is not None or demo:
        raise MinewatchError("--periods", "needs --roi: each period is composited from the source (one --imagery cannot be every period)")
    if roi_file is None:
        raise MinewatchError("--roi", "give the region to monitor")
    if out_dir is None:
        raise MinewatchError("--out", "give the monitoring folder")
    out_dir = abs_path(out_dir)
    failed = []
    for p in plist:
        click.echo(f"== {p.label} ({p.start} – {p.end}) → {out_dir / p.label}")
        req = ChainRequest(
            models=tuple(models), roi_file=str(abs_path(roi_file)), period=p.label, imagery=None, demo=False, source=source,
            level=level.upper() if level else None, min_score=min_score, min_valid=min_valid, preset=preset, t_main=t_main,
            t_iso=t_iso, simplify_m=simplify_m, map=not no_map, tile_px=tile_px,
        )  # fmt: skip
        res = run_chain(req, out_dir / p.label, scheduler=scheduler, workers=workers, progress=not quiet, fresh=overwrite, argv=sys.argv,
                        log=lambda s: click.echo(s, err=True))  # fmt: skip
        for line in res.lines:
            click.echo(line)
        if res.failed:
            failed.append(p.label)
    done = [p.label for p in plist if p.label not in failed]
    click.echo(f"{out_dir}: {len(done)} of {len(plist)} periods complete" + (f"; rerun to retry {', '.join(failed)}" if failed else "")
               + f"; next: minewatch persist {out_dir} --out {out_dir / 'persist'}")
    if failed:
        sys.exit(1)
