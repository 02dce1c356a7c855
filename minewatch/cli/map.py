"""``minewatch map``: a self-contained interactive HTML map of mining layers, zones and airstrips."""

from __future__ import annotations

import time
from pathlib import Path

import click

from minewatch.vectors import crs_option


@click.command(name="map")
@crs_option
@click.argument("layers", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--zones", type=click.Path(path_type=Path), help="Zone polygons (territories, protected areas).")
@click.option("--airstrips", type=click.Path(path_type=Path), help="Airstrip points (GeoJSON, GeoParquet or CSV).")
@click.option("--alerts", type=click.Path(path_type=Path), help="Alerts (alerts.geojson of 'minewatch alerts'): a layer coloured by status.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Output HTML file.")
@click.option("--zone-id-field", help="Zone id column (default: first of id, zone_id, ...).")
@click.option("--zone-name-field", help="Zone name column (default: first of name, name_field, ...).")
@click.option("--title", default="minewatch: mining detections", show_default=True)
@click.option("--basemap", type=click.Choice(["eox", "esri", "none"]), default="eox", show_default=True,
              help="Satellite basemap shown when online (switchable in the page).")
@click.option("--simplify", "simplify_m", type=float, default=0.0, show_default=True,
              help="Simplify detection outlines by this tolerance in metres (smaller file).")
@click.option("--zones-csv", type=click.Path(path_type=Path), help="Also write mined area per zone and period as CSV.")
@click.option("--measure", is_flag=True, help="Open the page in headless Chromium and print its load time.")
def command(layers: tuple[Path, ...], zones: Path | None, airstrips: Path | None, alerts: Path | None, out: Path,
            zone_id_field: str | None, zone_name_field: str | None, title: str, basemap: str,
            simplify_m: float, zones_csv: Path | None, measure: bool) -> None:
    """Build one HTML file (MapLibre GL JS inlined, works from disk) from mining LAYERS.

    LAYERS are GeoParquet/GeoJSON mining layers (one file per period, or files with a 'period'
    column); the published Amazon Mining Watch layers (mining_YYYYQQ_*.geojson) work as they are.
    """
    from minewatch.runs import UnitRun, abs_path
    from minewatch.webmap.map import build_map_data, write_map, zone_table

    t0 = time.monotonic()
    layers = tuple(abs_path(p) for p in layers)
    out = abs_path(out)
    zones = abs_path(zones) if zones is not None else None
    airstrips = abs_path(airstrips) if airstrips is not None else None
    zones_csv = abs_path(zones_csv) if zones_csv is not None else None
    alerts = abs_path(alerts) if alerts is not None else None
    from minewatch.errors import MinewatchError

    if simplify_m < 0 or simplify_m != simplify_m:
        raise MinewatchError("--simplify", f"tolerance must be ≥ 0 metres, got {simplify_m}")
    if zones_csv is not None and zones_csv.resolve() == out.resolve():
        raise MinewatchError("--zones-csv", f"{zones_csv} is also --out (the map page): give the CSV a file name of its own")
    params = {"title": title, "basemap": basemap, "simplify_m": simplify_m, "zone_id_field": zone_id_field,
              "zone_name_field": zone_name_field, "zones_csv": str(zones_csv) if zones_csv else None}
    inputs = {"layer": list(layers), "zones": zones, "airstrips": airstrips, **({"alerts": alerts} if alerts else {})}
    with UnitRun(out, "map", params, inputs, layout="file") as run:
        if zones_csv is not None:
            run.stage(zones_csv)  # refuse a CSV path over an input before the work
        from minewatch.cli.options import progress_lines

        say = progress_lines()
        say(f"map: reading {len(layers)} layer(s){', zones' if zones else ''}{', airstrips' if airstrips else ''} …")
        md = build_map_data(list(layers), zones, airstrips, zone_id_field, zone_name_field, alerts=alerts)
        say(f"map: {len(md.layer):,} polygons in {len(md.periods)} period(s) read; writing the page …")
        write_map(run.stage(out), md, title=title, basemap=basemap, simplify_m=simplify_m)
        if zones_csv is not None and md.zones is not None:
            zone_table(md).to_csv(run.stage(zones_csv))
    size = out.stat().st_size
    click.echo(f"{out}: {size / 1e6:.1f} MB, {len(md.layer):,} polygons in {len(md.periods)} periods "
               f"({', '.join(md.periods)}), built in {time.monotonic() - t0:.1f} s")
    if zones_csv is not None and md.zones is not None:
        click.echo(f"{zones_csv}: mined area per zone and period")
    if measure:
        from minewatch.webmap.browser import measure_load

        m = measure_load(out)
        click.echo(f"load: {m['load_s']:.2f} s to the load event, {m['ready_s']:.2f} s until the map was idle "
                   f"with {m['rendered']} detection features drawn (headless Chromium, software WebGL)")
