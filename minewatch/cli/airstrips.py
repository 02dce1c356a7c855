"""``minewatch airstrips``: distance from each airstrip to the nearest mining, flag within a radius."""

from __future__ import annotations

from pathlib import Path

import click

from minewatch.vectors import crs_option

WRITES = ("airstrips.parquet", "airstrips.geojson", "airstrips.csv", "airstrips.csv.meta.json", "summary.json")


@click.command(name="airstrips")
@crs_option
@click.argument("airstrips", type=click.Path(path_type=Path))
@click.option("--mining", "mining", required=True, multiple=True, type=click.Path(path_type=Path),
              help="Mining layer (repeat to use the union of several, e.g. periods up to a year).")
@click.option("--within-km", type=float, default=20.0, show_default=True, help="Flag airstrips with mining this close.")
@click.option("--compare-field", default=None, help="A yes/no column of AIRSTRIPS to report agreement with.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
def command(airstrips: Path, mining: tuple[Path, ...], within_km: float, compare_field: str | None, out_dir: Path) -> None:
    """Geodesic distance (m) from each of AIRSTRIPS (points, or CSV with Latitude/Longitude) to mining."""
    from minewatch.impacts.pipeline import run_airstrips
    from minewatch.runs import UnitRun, abs_path

    airstrips, out_dir = abs_path(airstrips), abs_path(out_dir)
    mining = tuple(abs_path(p) for p in mining)
    params = {"within_km": within_km, "compare_field": compare_field}
    with UnitRun(out_dir, "airstrips", params, {"airstrips": airstrips, "mining": list(mining)}, writes=WRITES) as run:
        out, s = run_airstrips(airstrips, list(mining), run.staging, within_km=within_km, compare_field=compare_field)
    click.echo(f"{s['within']} of {s['airstrips']} airstrips within {within_km:g} km of mining; wrote {out_dir}/airstrips.*")
    if "agreement" in s:
        a = s["agreement"]
        click.echo(f"agreement with {compare_field!r}: {a['agree']}/{a['n']} ({a['agree_share']:.2%}); "
                   f"ours only {a['ours_only']}, reference only {a['reference_only']}")
