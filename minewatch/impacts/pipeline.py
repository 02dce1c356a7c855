"""File-level runs of ``minewatch impacts`` and ``minewatch airstrips``: read, compute, then write.

All inputs are read and validated before the first output is written (no partial output on bad
input); every file is written atomically and states its parameters (see :mod:`minewatch.postprocess.io`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from minewatch.atomic import write_json_atomic
from minewatch.impacts.airstrips import agreement, airstrip_distances, read_airstrips, truthy
from minewatch.impacts.reference import compare, read_reference
from minewatch.impacts.zonal import ZonalResult, read_zones, wide_table, zonal_stats
from minewatch.postprocess.io import MINED_FIELDS, make_metadata, read_layers, write_csv, write_layer
from minewatch.errors import MinewatchError


@dataclass
class ImpactsResult:
    zonal: ZonalResult
    wide: gpd.GeoDataFrame
    agreement: pd.DataFrame | None
    summary: dict[str, Any]


def run_impacts(layers: Sequence[str | Path], zones_path: str | Path, id_field: str, name_field: str | None,
                out_dir: str | Path, area_field: str | None = "auto", reference: str | Path | None = None,
                rel_tol: float = 0.01) -> ImpactsResult:
    """Mined area per zone per period → ``impacts.csv`` (long), ``zones.{parquet,geojson,csv}`` (wide),
    and with ``reference`` an ``agreement.csv`` against a published per-zone table.

    ``area_field="auto"`` apportions the layers' mined-area field (minewatch's ``mined_ha`` or the
    published ``Mined area (ha)``) when every layer has one, else measures footprints (``None``:
    always footprints); the summary's ``parameters.area_field`` says which was used."""
    zones = read_zones(zones_path, id_field, name_field)
    layer = read_layers(layers, area_field=area_field)
    if area_field == "auto":
        area_field = layer.attrs.get("area_field") if layer.attrs.get("area_field") in MINED_FIELDS else None
    ref = read_reference(reference) if reference is not None else None
    res = zonal_stats(layer, zones, apportion=area_field is not None)
    wide = wide_table(res)
    params = {"id_field": id_field, "name_field": name_field, "area_field": area_field, "zones": str(zones_path),
              "measures": "intersect_ha: equal-area footprint (whole 480 m patches) inside the zone" + (
                  "; apportioned_ha: area field × share of the polygon inside the zone" if area_field else ""),
              "overlapping_zones": "each zone counted independently"}
    meta = make_metadata("impacts", params, [*layers, zones_path])
    summary: dict[str, Any] = {**meta, "zones": int(len(zones)), "zone_periods_with_mining": int(len(res.table)),
                               "zones_with_mining": int(res.table["zone_id"].nunique()),
                               "overlaps": res.overlaps, "zones_merged_from_rows": zones.attrs.get("merged_rows", {}),
                               "notes": impacts_notes(res, zones)}
    agree = None
    if ref is not None:
        value = "apportioned_ha" if area_field else "intersect_ha"
        agree = compare(res.table, ref, value=value, rel_tol=rel_tol)
        summary["reference"] = {"file": str(reference), "value": value, "rel_tol": rel_tol,
                                "pairs": int(len(agree)), "within": int(agree["within"].sum()),
                                "within_share": float(agree["within"].mean()) if len(agree) else float("nan"),
                                "worst": agree.head(5)[["zone_id", "period", "ours_ha", "ref_ha", "rel"]].to_dict("records")}
    out_dir = Path(out_dir)
    write_csv(res.table, out_dir / "impacts.csv", meta)
    write_layer(wide, out_dir, "zones", meta)
    write_csv(pd.DataFrame(wide.drop(columns="geometry")), out_dir / "zones.csv", meta)
    if agree is not None:
        write_csv(agree, out_dir / "agreement.csv", {**meta, "reference": str(reference)})
    write_json_atomic(out_dir / "summary.json", summary)
    return ImpactsResult(res, wide, agree, summary)


def impacts_notes(res: ZonalResult, zones: gpd.GeoDataFrame) -> list[str]:
    """What the user must know about how the inputs were counted (printed by the CLI, kept in the summary)."""
    notes = []
    for p, v in res.overlaps.items():
        notes.append(f"period {p}: {v['polygons']} mining polygon(s) overlapped others of the same period "
                     f"({v['overlap_ha']:,.1f} ha); overlaps counted once")
    merged = zones.attrs.get("merged_rows", {})
    if merged:
        notes.append(f"{len(merged)} zone id(s) appear on several rows of the same zone; their rows were unioned "
                     f"(e.g. {next(iter(merged))!r}: {next(iter(merged.values()))} rows)")
    return notes


def run_airstrips(airstrips_path: str | Path, mining: Sequence[str | Path], out_dir: str | Path,
                  within_km: float = 20.0, compare_field: str | None = None) -> tuple[gpd.GeoDataFrame, dict[str, Any]]:
    """Distance to nearest mining per airstrip → ``airstrips.{parquet,geojson,csv}`` + ``summary.json``.

    With ``compare_field`` (a yes/no column of the airstrips file) the agreement of the flag with it.
    """
    air = read_airstrips(airstrips_path)
    if compare_field is not None and compare_field not in air.columns:
        raise MinewatchError(airstrips_path, f"--compare-field {compare_field!r} not among the columns {[c for c in air.columns if c != 'geometry']}")
    layer = read_layers(mining, area_field=None)
    out = airstrip_distances(air, layer, within_km)
    meta = make_metadata("airstrips", {"within_km": within_km, "distance": "geodesic metres (WGS84 ellipsoid) to the nearest polygon",
                                       "compare_field": compare_field}, [airstrips_path, *mining])
    summary: dict[str, Any] = {**meta, "airstrips": int(len(out)), "within": int(out["mining_within"].sum())}
    if compare_field is not None:
        truth = truthy(out[compare_field])
        out["reference_flag"] = truth
        summary["agreement"] = agreement(out["mining_within"].to_numpy(), truth)
    out_dir = Path(out_dir)
    write_layer(out, out_dir, "airstrips", meta)
    write_csv(pd.DataFrame(out.drop(columns="geometry")).assign(longitude=out.geometry.x, latitude=out.geometry.y),
              out_dir / "airstrips.csv", meta)
    write_json_atomic(out_dir / "summary.json", summary)
    return out, summary
