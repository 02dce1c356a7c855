"""``minewatch impacts``: mined area per zone per period (and share of the zone)."""

from __future__ import annotations

from pathlib import Path

import click

from minewatch.vectors import crs_option

WRITES = tuple(f"{n}{x}" for n in ("impacts.csv", "zones.csv", "agreement.csv") for x in ("", ".meta.json")) + (
    "zones.parquet", "zones.geojson", "summary.json")


@click.command(name="impacts")
@crs_option
@click.argument("layers", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--zones", "zones_path", required=True, type=click.Path(path_type=Path), help="Zone polygons (GeoJSON/GeoParquet).")
@click.option("--zone-id-field", "id_field", default=None, help="Zone property holding a unique id (required).")
@click.option("--zone-name-field", "name_field", default=None, help="Zone property holding a display name (default: the id).")
@click.option("--id-field", "id_field_old", default=None, hidden=True, help="Old spelling of --zone-id-field.")
@click.option("--name-field", "name_field_old", default=None, hidden=True, help="Old spelling of --zone-name-field.")
@click.option("--area-field", default="auto", show_default=True,
              help="Per-polygon mined-area field to apportion by area share ('auto': minewatch's 'mined_ha' or the published "
                   "'Mined area (ha)' when every layer has one; 'none': footprints only).")
@click.option("--reference", type=click.Path(path_type=Path), default=None,
              help="Published per-zone table to compare with (upstream CSV: id, admin_year, intersected_area_ha).")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
def command(layers: tuple[Path, ...], zones_path: Path, id_field: str | None, name_field: str | None, id_field_old: str | None,
            name_field_old: str | None, area_field: str | None, reference: Path | None, out_dir: Path) -> None:  # fmt: skip
    """Mined hectares of LAYERS inside each zone, per period: impacts.csv, zones.{csv,geojson,parquet}."""
    from minewatch.cli.options import pick_zone_fields
    from minewatch.errors import MinewatchError

    id_field, name_field = pick_zone_fields(id_field, name_field, id_field_old, name_field_old)
    if not id_field:
        raise MinewatchError("--zone-id-field", "give the zone property holding a unique id (e.g. --zone-id-field id)")
    from minewatch.impacts.pipeline import run_impacts
    from minewatch.runs import UnitRun, abs_path

    layers = tuple(abs_path(p) for p in layers)
    zones_path, out_dir = abs_path(zones_path), abs_path(out_dir)
    reference = abs_path(reference) if reference is not None else None
    field = None if area_field.lower() == "none" else area_field
    params = {"id_field": id_field, "name_field": name_field, "area_field": area_field}
    with UnitRun(out_dir, "impacts", params, {"layer": list(layers), "zones": zones_path, "reference": reference}, writes=WRITES) as run:
        res = run_impacts(list(layers), zones_path, id_field, name_field, run.staging, area_field=field, reference=reference)
    s = res.summary
    used = s["parameters"]["area_field"]
    why = "" if field is None else "; not every layer carries a mined-area field"
    click.echo(f"measure: {'apportioned ' + repr(used) if used else 'footprint (whole patches' + why + ')'}")
    for note in s.get("notes", []):
        click.echo(f"note: {note}")
    click.echo(f"{s['zones_with_mining']} of {s['zones']} zones with mining; {s['zone_periods_with_mining']} zone-periods; wrote {out_dir}")
    if "reference" in s:
        r = s["reference"]
        click.echo(f"reference: {r['within']}/{r['pairs']} zone-periods within {r['rel_tol']:.0%} ({r['within_share']:.2%})")
