"""``minewatch chips``: labelled training chips cut around points from Sentinel-2 composites."""

from __future__ import annotations

from pathlib import Path

import click


CHIP_FILES = ("chips.npz", "chips.csv", "bands.json")
"""What a chip dataset holds (an input there under one of these names is refused)."""


@click.command(name="chips")
@click.option("--points", "points_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="GeoJSON of labelled points (WGS84), or a 'minewatch review' CSV / GeoJSON (labels yes/no; skips dropped).")
@click.option("--imagery", "imagery_path", default=None, type=click.Path(path_type=Path), help="Cut from existing imagery instead of compositing: a GeoTIFF/COG, a folder of them, a composite run folder or STAC JSON (anything 'detect' accepts).")
@click.option("--snap", type=click.Choice(["patch", "pixel"]), default=None, help="With --imagery: centre on the nearest 48 px detection patch (default for review input) or on the point's pixel.")
@click.option("--min-valid", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="With --imagery: leave out chips with a smaller share of valid pixels.")
@click.option("--label", type=int, default=None, help="Label of every point: 1 = mine, 0 = not a mine.")
@click.option("--label-field", default=None, help="Point property holding the 0/1 label.")
@click.option("--source", default=None, help="earth-search (default) | planetary-computer | a STAC API URL | a local catalog.json.")
@click.option("--start", default=None, help="First day of the compositing window, YYYY-MM-DD (not with --imagery).")
@click.option("--end", default=None, help="Last day of the compositing window, YYYY-MM-DD (not with --imagery).")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output chip dataset folder.")
@click.option("--bands", default=None, help="Comma-separated bands in channel order, or model:NAME for the bands model NAME scores [default: model:default; with --imagery: B4,B3,B2 if present, else all].")
@click.option("--size", type=int, default=48, show_default=True, help="Chip size in pixels.")
@click.option("--level", type=click.Choice(["l2a", "l1c"], case_sensitive=False), default="l2a", show_default=True)
@click.option("--rendering", type=click.Choice(["uint8", "dn"]), default="uint8", show_default=True, help="uint8: round(clip(DN/3000,0,1)*255) like the reference chips; dn: raw uint16 DN.")
@click.option("--max-scene-cloud", type=click.FloatRange(0, 100), default=60.0, show_default=True)
@click.option("--composites", "composites_dir", default=None, type=click.Path(file_okay=False, path_type=Path), help="Composite run folder to build or reuse [default: OUT/composites].")
@click.option("--tile-px", type=int, default=1008, show_default=True, help="Tile size of the composites (multiple of 24).")
@click.option("--scheduler", default=None, help="Dask scheduler address, 'local' (default), 'threads' or 'synchronous'.")
@click.option("--workers", type=int, default=None)
@click.option("--retries", type=click.IntRange(0, 20), default=5, show_default=True, help="HTTP retries for STAC API requests.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(points_path: Path, imagery_path: Path | None, snap: str | None, min_valid: float, label: int | None,
            label_field: str | None, source: str | None, start: str | None, end: str | None, out_dir: Path, bands: str | None, size: int, level: str, rendering: str, max_scene_cloud: float, composites_dir: Path | None,
            tile_px: int, scheduler: str | None, workers: int | None, retries: int, quiet: bool) -> None:  # fmt: skip
    """Cut a SIZE×SIZE chip around every point of POINTS from median composites of START..END (or
    from existing --imagery) and write a chip dataset (chips.npz, chips.csv with lon/lat, dates,
    clear fraction and source file per chip, bands.json) to OUT."""
    from minewatch.chips.dataset import load_chips
    from minewatch.errors import MinewatchError
    from minewatch.runs import UnitRun, abs_local, abs_path

    # the CLI edge: absolute paths, so nothing below depends on the working directory
    points_path, out_dir = abs_path(points_path), abs_path(out_dir)
    if imagery_path is not None:
        from minewatch.chips.cut import chips_from_imagery

        given = [n for n, v in (("--source", source), ("--start", start), ("--end", end), ("--composites", composites_dir)) if v is not None]
        if given:
            raise MinewatchError(", ".join(given), "not used with --imagery (the chips are cut from that imagery as it is)")
        imagery_path = Path(abs_local(imagery_path) or imagery_path)
        params = {"label": label, "label_field": label_field, "bands": bands, "size": size, "rendering": rendering,
                  "snap": snap, "min_valid": min_valid, "tile_px": tile_px}  # fmt: skip
        with UnitRun(out_dir, "chips", params, {"points": points_path, "imagery": imagery_path}, writes=CHIP_FILES) as run:
            chips_from_imagery(
                points_path, imagery_path, run.staging, label=label, label_field=label_field,
                bands=_imagery_bands(bands), size=size, rendering=rendering,
                snap=snap, min_valid=min_valid, tile_px=tile_px, log=lambda s: click.echo(s, err=True),
            )  # fmt: skip
        out = out_dir
        chips = load_chips(out)
        click.echo(f"{out}: {len(chips)} chip(s) ({int(chips.labels.sum())} labelled 1), bands {','.join(chips.spec.bands)}, {chips.spec.level}, from {imagery_path}")
        return
    if start is None or end is None:
        raise MinewatchError("--start/--end", "the compositing window is required (or give --imagery to cut from existing imagery)")
    if snap is not None:
        raise MinewatchError("--snap", "only with --imagery")
    source = source or "earth-search"
    bands = bands or "model:default"
    from minewatch.chips.sample import sample_chips
    from minewatch.cli.options import composite_bands
    from minewatch.imagery.plan import check_window
    from minewatch.imagery.sources import resolve_source

    source = abs_local(source) or source
    comp = abs_path(composites_dir) if composites_dir is not None else out_dir / "composites"  # a nested, resumable composite run
    lvl = level.upper()
    d0, d1 = check_window(start, end, tile_px)
    src = resolve_source(source, lvl, retries=retries)
    params = {"label": label, "label_field": label_field, "source": source, "start": start, "end": end, "bands": bands, "size": size,
              "level": lvl, "rendering": rendering, "max_scene_cloud": max_scene_cloud, "tile_px": tile_px, "composites": str(comp)}  # fmt: skip
    with UnitRun(out_dir, "chips", params, {"points": points_path}, writes=CHIP_FILES) as run:
        sample_chips(
            points_path, run.staging, final_dir=out_dir, source=src, start=d0, end=d1, label=label, label_field=label_field,
            bands=composite_bands(bands, lvl), size=size, level=lvl, rendering=rendering, max_scene_cloud=max_scene_cloud,
            composites_dir=comp, tile_px=tile_px, scheduler=scheduler, workers=workers, progress=not quiet,
            log=lambda s: click.echo(s, err=True),
        )  # fmt: skip
    chips = load_chips(out_dir)
    click.echo(f"{out_dir}: {len(chips)} chip(s) ({int(chips.labels.sum())} labelled 1), bands {','.join(chips.spec.bands)}, {chips.spec.level}")


def _imagery_bands(text: str | None) -> list[str] | None:
    from minewatch.cli.options import model_bands

    mb = model_bands(text)
    if mb is not None:
        return list(mb)
    return [b.strip() for b in text.split(",") if b.strip()] if text else None
