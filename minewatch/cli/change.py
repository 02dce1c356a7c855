"""``minewatch change``: growth, persisting and receding mining per period."""

from __future__ import annotations

from pathlib import Path

import click

WRITES = ("change.parquet", "change.geojson", "change.csv", "change.csv.meta.json")


@click.command(name="change")
@click.argument("layers", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--min-polygon-ha", type=float, default=11.0, show_default=True,
              help="Drop growth/receding pieces smaller than this (equal-area hectares; the reference's 11 ha).")
@click.option("--layers-are", type=click.Choice(["auto", "increments", "detections"]), default="auto", show_default=True,
              help="Layers hold each period's detections, or only what is new in it (the published layers); auto decides from their overlap.")
def command(layers: tuple[Path, ...], out_dir: Path, min_polygon_ha: float, layers_are: str) -> None:
    """Change products of mining LAYERS (files or a folder): OUT/change.{parquet,geojson,csv}.

    Growth is each period's cumulative footprint minus the previous one; persisting and receding
    compare a period's state with the previous one. Quarters are merged onto the previous full year,
    and a year's annual layer supersedes its quarters. Areas are equal-area (EPSG:6933).
    """
    from minewatch.errors import MinewatchError
    from minewatch.postprocess.change import run_change
    from minewatch.postprocess.persist import expand_inputs
    from minewatch.runs import UnitRun, abs_path

    if not min_polygon_ha >= 0:
        raise MinewatchError("--min-polygon-ha", f"must be ≥ 0, got {min_polygon_ha}")
    out_dir = abs_path(out_dir)
    files = [abs_path(f) for f in expand_inputs([abs_path(p) for p in layers])]
    # the inputs as given (a folder of layers stays a folder), so --out can never be that folder
    with UnitRun(out_dir, "change", {"min_polygon_ha": min_polygon_ha, "layers_are": layers_are}, {"layers": [abs_path(p) for p in layers]}, writes=WRITES) as run:
        res = run_change([str(f) for f in files], str(run.staging), min_polygon_ha=min_polygon_ha, layers_are=layers_are)
    click.echo(f"layers read as {res.table.attrs['layers_are']}")
    for r in res.table.itertuples():
        if r.baseline:
            click.echo(f"{r.period:>7}  baseline {r.state_ha:>12,.1f} ha")
            continue
        click.echo(f"{r.period:>7}  growth {r.growth_ha:>10,.1f} ha in {int(r.growth_pieces):>5,} pieces ≥ {min_polygon_ha:g} ha "
                   f"({r.growth_dropped_ha:,.1f} ha in {int(r.growth_dropped_pieces):,} smaller dropped)   persisting {r.persisting_ha:>12,.1f} ha   "
                   f"receding {r.receding_ha:>10,.1f} ha   cumulative {r.cumulative_ha:>12,.1f} ha")
    click.echo(f"wrote {out_dir}/change.parquet, change.geojson, change.csv")
