"""``minewatch timeline``: new mining per period, cumulative footprint, area table."""

from __future__ import annotations

from pathlib import Path

import click

from minewatch.vectors import crs_option

WRITES = ("new_mining.parquet", "new_mining.geojson", "cumulative.parquet", "cumulative.geojson", "areas.csv", "areas.csv.meta.json")


@click.command(name="timeline")
@crs_option
@click.argument("layers", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--area-field", default="auto", show_default=True,
              help="Per-polygon mined-area field ('auto': 'Mined area (ha)', else minewatch's estimate 'mined_ha', else the footprint 'area_ha'; 'none').")
@click.option("--min-piece-ha", type=float, default=0.0, show_default=True,
              help="Drop cut new-mining pieces smaller than this (misregistration slivers).")
def command(layers: tuple[Path, ...], out_dir: Path, area_field: str, min_piece_ha: float) -> None:
    """Timeline of mining LAYERS (one or more files, any periods): new, cumulative, areas.csv."""
    import math

    from minewatch.errors import MinewatchError
    from minewatch.postprocess.pipeline import run_timeline
    from minewatch.runs import UnitRun, abs_path

    if not math.isfinite(min_piece_ha) or min_piece_ha < 0:
        raise MinewatchError("--min-piece-ha", f"must be a finite area of 0 hectares or more, got {min_piece_ha:g}")
    layers = tuple(abs_path(p) for p in layers)
    out_dir = abs_path(out_dir)
    field = None if area_field.lower() == "none" else area_field
    from minewatch.cli.options import progress_lines

    say = progress_lines()
    with UnitRun(out_dir, "timeline", {"area_field": area_field, "min_piece_ha": min_piece_ha}, {"layer": list(layers)}, writes=WRITES) as run:
        say(f"timeline: reading {len(layers)} layer(s), cutting each period's new mining from the earlier ones …")
        res = run_timeline(list(layers), run.staging, area_field=field, min_piece_ha=min_piece_ha)
        say("timeline: writing …")
    used = res.area_field
    if len(res.area_fields) > 1:
        click.echo(f"estimated = mixed, per layer: {', '.join(repr(f) for f in res.area_fields)} ('area_ha' is a footprint)")
    else:
        click.echo(f"estimated = {repr(used) if used not in (None, 'area_ha') else 'footprint (no mined-area field in the layers)'}")
    for r in res.table.itertuples():
        click.echo(f"{r.period:>7}  new {r.new_footprint_ha:>12,.1f} ha footprint, {r.new_area_ha:>11,.1f} ha estimated"
                   f"   cumulative {r.cumulative_footprint_ha:>12,.1f} ha")
    click.echo(f"wrote {out_dir}/new_mining.*, cumulative.*, areas.csv")
