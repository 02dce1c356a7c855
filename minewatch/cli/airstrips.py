"""``minewatch airstrips``: distance from each airstrip to the nearest mining, flag within a radius."""

from __future__ import annotations

from pathlib import Path

import click

from minewatch.vectors import crs_option


@click.command(name="airstrips")
@crs_option
@click.argument("airstrips", type=click.Path(path_type=Path))
@click.option("--mining", "mining", required=True, multiple=True, type=click.Path(path_type=Path),
              help="Mining layer (repeat to use the union of several, e.g. periods up to a year).")
@click.option("--within-km", type=float, default=20.0, show_default=True, help="Flag airstrips with mining this close.")
@click.option("--compare-field", default=None, help="A yes/no column of AIRSTRIPS to report agreement with.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
def command(airstrips: Path, mining: tuple[Path, ...], within_km: float, compare_field: str | None, out_dir: Path) -> None:
    """Geodesic distance (m) from each of AIRSTRIPS (points, or CSV with Latitude/Longitude) to mining."""
    from minewatch.impacts.pipeline import run_airstrips

    out, s = run_airstrips(airstrips, list(mining), out_dir, within_km=within_km, compare_field=compare_field)
    click.echo(f"{s['within']} of {s['airstrips']} airstrips within {within_km:g} km of mining; wrote {out_dir}/airstrips.*")
    if "agreement" in s:
        a = s["agreement"]
        click.echo(f"agreement with {compare_field!r}: {a['agree']}/{a['n']} ({a['agree_share']:.2%}); "
                   f"ours only {a['ours_only']}, reference only {a['reference_only']}")
