"""``minewatch timeline``: new mining per period, cumulative footprint, area table."""

from __future__ import annotations

from pathlib import Path

import click

from minewatch.vectors import crs_option


@click.command(name="timeline")
@crs_option
@click.argument("layers", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--area-field", default="auto", show_default=True,
              help="Per-polygon mined-area field ('auto': 'Mined area (ha)', else minewatch's estimate 'mined_ha', else the footprint 'area_ha'; 'none').")
@click.option("--min-piece-ha", type=float, default=0.0, show_default=True,
              help="Drop cut new-mining pieces smaller than this (misregistration slivers).")
def command(layers: tuple[Path, ...], out_dir: Path, area_field: str, min_piece_ha: float) -> None:
    """Timeline of mining LAYERS (one or more files, any periods): new, cumulative, areas.csv."""
    from minewatch.postprocess.pipeline import run_timeline

    field = None if area_field.lower() == "none" else area_field
    res = run_timeline(list(layers), out_dir, area_field=field, min_piece_ha=min_piece_ha)
    used = res.area_field
    click.echo(f"estimated = {repr(used) if used not in (None, 'area_ha') else 'footprint (no mined-area field in the layers)'}")
    for r in res.table.itertuples():
        click.echo(f"{r.period:>7}  new {r.new_footprint_ha:>12,.1f} ha footprint, {r.new_area_ha:>11,.1f} ha estimated"
                   f"   cumulative {r.cumulative_footprint_ha:>12,.1f} ha")
    click.echo(f"wrote {out_dir}/new_mining.*, cumulative.*, areas.csv")
