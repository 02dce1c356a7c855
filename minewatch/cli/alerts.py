"""``minewatch alerts``: new confirmed and provisional mining as alerts for field teams' tools."""

from __future__ import annotations

from pathlib import Path

import click

WRITES = ("alerts.geojson", "alerts.csv", "alerts.csv.meta.json", "alerts.gpkg", "comapeo_alerts.json", "comapeo_alerts_points.json",
          "guardian_connector.geojson", "summary.json")  # fmt: skip


@click.command(name="alerts")
@click.argument("persistence", type=click.Path(path_type=Path))
@click.option("--since", required=True, help="Alerts for polygons new at or after this period (e.g. 2024 or 2025Q2).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--zones", type=click.Path(path_type=Path), default=None, help="Territories / protected areas: each alert gets the zone it falls in.")
@click.option("--id-field", "--zone-id-field", "id_field", default=None, help="Zone id field (also --zone-id-field, as in impacts and map) [default: id, id_field, ID or zone_id when present].")
@click.option("--name-field", "--zone-name-field", "name_field", default=None, help="Zone name field (also --zone-name-field) [default: name, name_field, Name, nome or nombre when present].")
@click.option("--airstrips", type=click.Path(path_type=Path), default=None, help="Airstrip points: each alert gets the distance to the nearest.")
def command(persistence: Path, since: str, out_dir: Path, zones: Path | None, id_field: str | None, name_field: str | None,
            airstrips: Path | None) -> None:  # fmt: skip
    """Alerts from PERSISTENCE (a persist output folder or its persistence.parquet).

    \b
    Writes to OUT: alerts.geojson (WGS84), alerts.csv (lat/lon + dates, Forest Watcher style),
    alerts.gpkg (QGIS/GDAL: layers alerts and alert_points), comapeo_alerts.json (CoMapeo
    remoteDetectionAlerts bodies; comapeo_alerts_points.json with centroids), guardian_connector.geojson
    and summary.json. The same inputs give byte-identical files.

    \b
    Example:
      minewatch alerts persist/ --since 2024 --zones territories.geojson --id-field id --out alerts/
    """
    from minewatch.impacts.alerts import read_persistence, run_alerts
    from minewatch.periods import parse_period
    from minewatch.runs import UnitRun, abs_path

    since = parse_period(since, "--since").label  # refuse a bad period before reading anything
    out_dir = abs_path(out_dir)
    _, layer = read_persistence(abs_path(persistence))
    inputs = {"persistence": layer, **({"zones": abs_path(zones)} if zones else {}), **({"airstrips": abs_path(airstrips)} if airstrips else {})}
    params = {"since": since, "id_field": id_field, "name_field": name_field}
    with UnitRun(out_dir, "alerts", params, inputs, writes=WRITES) as run:
        aset = run_alerts(layer, run.staging, since, zones=inputs.get("zones"), id_field=id_field, name_field=name_field,
                          airstrips=inputs.get("airstrips"))  # fmt: skip
    s = aset.summary
    click.echo(f"{s['alerts']:,} alerts since {s['since']} ({', '.join(f'{v:,} {k}' for k, v in s['by_status'].items()) or 'none'}), "
               + (f"mined area (estimate) {s['mined_ha']:,.1f} ha inside {s['area_ha']:,.1f} ha of locations"
                  if s.get("mined_ha") is not None else f"{s['area_ha']:,.1f} ha"))
    if "by_zone" in s:
        click.echo(f"{len(s['by_zone']):,} zones with new alerts; {s['outside_zones']:,} alerts outside every zone")
    click.echo(f"wrote {out_dir}/alerts.geojson, alerts.csv, alerts.gpkg, comapeo_alerts.json, guardian_connector.geojson, summary.json")
