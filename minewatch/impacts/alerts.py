"""Alerts that field teams can load: one per new confirmed or provisional mining polygon.

From a persistence layer (``minewatch persist``), every polygon that became confirmed (``confirmed_in``)
or was first seen provisional (``period``) at or after ``--since`` is an alert with

* a stable ``alert_id`` (a hash of the polygon's status, dates and lattice locations: the same inputs
  give the same ids on every machine and rerun);
* its polygon and centroid (WGS84), ``area_ha`` (the persistence polygon's equal-area hectares:
  for polygon layers, the locations' shares of the input polygons), ``mined_ha`` (the mined-area
  estimate inside it, from the scar fractions or the layers' mined field; empty where the inputs carry
  none, never the footprint), ``status``, ``confidence`` (the best
  score of its detections; empty for the published layers, which carry none);
* the detection-date window of the period that dates it (``period``: the onset year of a confirmed
  polygon, the first open period of a provisional one), and the window of the period before it;
* the zone it falls in (largest overlap, equal-area) and the distance to the nearest airstrip.

Formats (:func:`write_alerts`): GeoJSON, Forest Watcher-style CSV (lat/lon + dates), a GeoPackage
(polygons + points), the CoMapeo ``remoteDetectionAlerts`` payloads, and a Guardian Connector-style
GeoJSON. Field names were checked against the published schemas; see ``docs/monitoring.md``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.spatial import cKDTree

from minewatch.errors import MinewatchError
from minewatch.periods import Period, iso_datetime, parse_period
from minewatch.postprocess.geom import area_ha, ecef, to_equal_area, transformer, utm_epsg_for

ALERT_TYPE = "gold mining"
SOURCE = "minewatch"

ALERT_COLUMNS = ["alert_id", "status", "period", "date_start", "date_end", "onset", "confirmed_in", "first_seen", "last_seen",
                 "n_witness", "n_locations", "area_ha", "mined_ha", "confidence", "latitude", "longitude", "zone_id", "zone_name",
                 "airstrip_distance_m", "polygon_id"]  # fmt: skip
"""Columns of the alert table (GeoJSON properties, CSV columns and the GeoPackage schema)."""


def previous_period(p: Period) -> Period:
    """The period before ``p`` of the same kind (``2024`` → ``2023``; ``2025Q1`` → ``2024Q4``)."""
    if p.is_annual:
        return Period(p.year - 1)
    return Period(p.year - 1, 4) if p.quarter == 1 else Period(p.year, p.quarter - 1)


def alert_id(polygon_id: str) -> str:
    """Stable id of the alert for a persistence polygon (whose id already hashes status, dates and locations)."""
    return "mw-" + hashlib.sha256(f"minewatch-alert|{polygon_id}".encode()).hexdigest()[:20]


def select_new(polygons: gpd.GeoDataFrame, since: Period) -> gpd.GeoDataFrame:
    """Polygons new at or after ``since``: confirmed with ``confirmed_in`` ≥ since, provisional with ``period`` ≥ since."""
    if len(polygons) == 0:
        return polygons
    key = since.key
    conf = polygons["status"].eq("confirmed") & polygons["confirmed_in"].map(lambda v: v is not None and not pd.isna(v) and parse_period(v).key >= key)
    prov = polygons["status"].eq("provisional") & polygons["period"].map(lambda v: parse_period(v).key >= key)
    return polygons[(conf | prov).to_numpy()].reset_index(drop=True)


def zone_of(alerts: gpd.GeoDataFrame, zones: gpd.GeoDataFrame, id_field: str, name_field: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(zone id, zone name) of each alert: the zone with the largest equal-area overlap (ties: smallest id); None outside."""
    n = len(alerts)
    zid = np.full(n, None, dtype=object)
    zname = np.full(n, None, dtype=object)
    if n == 0 or len(zones) == 0:
        return zid, zname
    a_ea = to_equal_area(alerts.geometry.to_numpy())
    z_ea = shapely.make_valid(to_equal_area(zones.geometry.to_numpy()))
    ia, iz = shapely.STRtree(z_ea).query(a_ea, predicate="intersects")
    if not len(ia):
        return zid, zname
    ov = shapely.area(shapely.intersection(a_ea[ia], z_ea[iz]))
    ids = zones[id_field].astype(str).to_numpy()
    df = pd.DataFrame({"a": ia, "z": iz, "ov": ov, "id": ids[iz]}).sort_values(["a", "ov", "id"], ascending=[True, False, True], kind="stable")
    best = df[df["ov"] > 0].drop_duplicates("a")
    zid[best["a"].to_numpy()] = zones[id_field].to_numpy()[best["z"].to_numpy()]
    if name_field:
        zname[best["a"].to_numpy()] = zones[name_field].to_numpy()[best["z"].to_numpy()]
    return zid, zname


def airstrip_distance(alerts: gpd.GeoDataFrame, airstrips: gpd.GeoDataFrame, candidates: int = 8) -> np.ndarray:
    """Metres from each alert polygon to the nearest airstrip (0 inside), in the alert's UTM zone.

    Candidates are the airstrips nearest the polygon's centroid in geocentric coordinates (a KD-tree);
    the exact polygon-to-point distance is then taken among them.
    """
    n = len(alerts)
    if n == 0 or len(airstrips) == 0:
        return np.full(n, np.nan)
    pts = airstrips.geometry.to_numpy()
    px, py = shapely.get_x(pts), shapely.get_y(pts)
    tree = cKDTree(ecef(px, py))
    c = shapely.centroid(alerts.geometry.to_numpy())
    cx, cy = shapely.get_x(c), shapely.get_y(c)
    k = min(candidates, len(pts))
    _, nn = tree.query(ecef(cx, cy), k=k)
    nn = np.asarray(nn).reshape(n, k)
    out = np.full(n, np.inf)
    epsg = utm_epsg_for(cx, cy)
    geoms = alerts.geometry.to_numpy()
    for code in np.unique(epsg):
        sel = np.flatnonzero(epsg == code)
        fwd = transformer("EPSG:4326", int(code))
        poly = shapely.transform(geoms[sel], lambda xy, t=fwd: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
        cand = nn[sel]
        x, y = fwd.transform(px[cand.ravel()], py[cand.ravel()])
        d = shapely.distance(np.repeat(poly, k), shapely.points(np.asarray(x), np.asarray(y))).reshape(len(sel), k)
        out[sel] = d.min(axis=1)
    return out


@dataclass
class AlertSet:
    alerts: gpd.GeoDataFrame
    since: Period
    summary: dict[str, object]


def make_alerts(polygons: gpd.GeoDataFrame, since: Period, zones: gpd.GeoDataFrame | None = None, id_field: str | None = None,
                name_field: str | None = None, airstrips: gpd.GeoDataFrame | None = None) -> AlertSet:
    """The alert table (WGS84 polygons, columns :data:`ALERT_COLUMNS`), in a deterministic order."""
    new = select_new(polygons, since)
    periods = [parse_period(p) for p in new["period"]]
    c = shapely.point_on_surface(new.geometry.to_numpy()) if len(new) else np.zeros(0, dtype=object)
    conf = new["score_max"].to_numpy(dtype=float) if "score_max" in new.columns else np.full(len(new), np.nan)
    df = pd.DataFrame({
        "alert_id": [alert_id(x) for x in new["polygon_id"]], "status": new["status"].to_numpy(), "period": [p.label for p in periods],
        "date_start": [p.start.isoformat() for p in periods], "date_end": [p.end.isoformat() for p in periods],
        "onset": new["onset"].to_numpy(dtype=object), "confirmed_in": new["confirmed_in"].to_numpy(dtype=object),
        "first_seen": new["first_seen"].to_numpy(), "last_seen": new["last_seen"].to_numpy(),
        "n_witness": new["n_witness"].to_numpy(dtype=int), "n_locations": new["n_locations"].to_numpy(dtype=int),
        "area_ha": new["area_ha"].to_numpy(dtype=float) if "area_ha" in new.columns else area_ha(new.geometry),
        "mined_ha": new["mined_ha"].to_numpy(dtype=float) if "mined_ha" in new.columns else np.full(len(new), np.nan),
        "confidence": np.round(conf, 4),
        "latitude": np.round(shapely.get_y(c), 6) if len(new) else np.zeros(0), "longitude": np.round(shapely.get_x(c), 6) if len(new) else np.zeros(0),
        "zone_id": None, "zone_name": None, "airstrip_distance_m": np.nan, "polygon_id": new["polygon_id"].to_numpy(),
    })  # fmt: skip
    if zones is not None and id_field is not None:
        zid, zname = zone_of(new, zones, id_field, name_field)
        df["zone_id"], df["zone_name"] = zid, zname
    if airstrips is not None:
        df["airstrip_distance_m"] = np.round(airstrip_distance(new, airstrips), 1)
    df["area_ha"] = np.round(df["area_ha"].astype(float), 4)
    df["mined_ha"] = np.round(df["mined_ha"].astype(float), 4)
    out = gpd.GeoDataFrame(df[ALERT_COLUMNS], geometry=new.geometry.to_numpy(), crs=4326)
    out = out.sort_values(["period", "status", "alert_id"], kind="stable").reset_index(drop=True)
    summary = {
        "since": since.label, "alerts": int(len(out)),
        "by_status": {k: int(v) for k, v in out["status"].value_counts().sort_index().items()},
        "by_period": {k: int(v) for k, v in out["period"].value_counts().sort_index().items()},
        "area_ha": round(float(out["area_ha"].sum()), 2),
        "mined_ha": _round_or_none(out["mined_ha"].sum(min_count=1)),
    }  # fmt: skip
    if zones is not None and id_field is not None:
        per_zone = out[out["zone_id"].notna()].groupby(out["zone_id"].astype(str)).agg(alerts=("alert_id", "size"), area_ha=("area_ha", "sum"))
        zm = out[out["zone_id"].notna()].groupby(out["zone_id"].astype(str))["mined_ha"].sum(min_count=1)
        summary["by_zone"] = {k: {"alerts": int(r.alerts), "area_ha": round(float(r.area_ha), 2), "mined_ha": _round_or_none(zm.get(k))}
                              for k, r in per_zone.sort_index().iterrows()}  # fmt: skip
        summary["outside_zones"] = int(out["zone_id"].isna().sum())
    return AlertSet(out, since, summary)


def _round_or_none(v: object, nd: int = 2) -> float | None:
    """``v`` rounded, or None (JSON null) when it is missing or NaN."""
    return None if v is None or pd.isna(v) else round(float(v), nd)


# ------------------------------------------------------------------------------------------ formats


def _geometry_texts(geoms: np.ndarray, precision: int = 7) -> list[str]:
    """GeoJSON geometry texts (GEOS's writer), coordinates rounded to ``precision`` decimals (1e-7° ≈ 1 cm)."""
    if len(geoms) == 0:
        return []
    g = shapely.transform(np.asarray(geoms, dtype=object), lambda c: np.round(c, precision))
    return list(shapely.to_geojson(g))


def _clean(v: object) -> object:
    if v is None or v is pd.NA:
        return None
    if isinstance(v, (float, np.floating)):
        return None if np.isnan(v) else float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


def _values(col: pd.Series) -> list[object]:
    """A column as plain Python values with None for missing (vectorised for numeric columns)."""
    if pd.api.types.is_float_dtype(col.dtype):
        arr = col.to_numpy(dtype=float)
        out = arr.astype(object)
        out[np.isnan(arr)] = None
        return out.tolist()
    if pd.api.types.is_integer_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
        return col.tolist()
    return [_clean(v) for v in col.tolist()]


def _rows(alerts: gpd.GeoDataFrame) -> list[dict[str, object]]:
    """The alert rows as plain Python values (NaN → None), built column by column."""
    cols = {c: _values(alerts[c]) for c in alerts.columns if c != alerts.geometry.name}
    return [dict(zip(cols, vals)) for vals in zip(*cols.values())] if len(alerts) else []


@functools.lru_cache(maxsize=256)
def _windows(label: str) -> tuple[str, str, str, str, str, str, str, str]:
    """Per period label: CoMapeo start/end date-times, then the Guardian Connector t0/t1 dates, month and year."""
    p = parse_period(label)
    q = previous_period(p)
    return (iso_datetime(p.start), iso_datetime(p.end, end_of_day=True), q.start.isoformat(), q.end.isoformat(),
            p.start.isoformat(), p.end.isoformat(), f"{p.end.month:02d}", str(p.end.year))  # fmt: skip


def _alert_points(alerts: gpd.GeoDataFrame) -> np.ndarray:
    """Each alert's point (its ``longitude``/``latitude``: a point on its surface)."""
    return shapely.points(alerts["longitude"].to_numpy(), alerts["latitude"].to_numpy())


def _comapeo_bodies(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """CoMapeo payloads without their geometry."""
    out = []
    for r in rows:
        w = _windows(str(r["period"]))
        meta = {
            "alert_type": ALERT_TYPE, "source": SOURCE, "status": r["status"], "period": r["period"],
            "area_ha": r["area_ha"], "mined_ha": r["mined_ha"], "confidence": r["confidence"], "onset": r["onset"],
            "confirmed_in": r["confirmed_in"], "zone_id": None if r["zone_id"] is None else str(r["zone_id"]),
            "zone_name": r["zone_name"], "airstrip_distance_m": r["airstrip_distance_m"],
        }  # fmt: skip
        out.append({"detectionDateStart": w[0], "detectionDateEnd": w[1], "sourceId": r["alert_id"], "metadata": meta})
    return out


def comapeo_payloads(alerts: gpd.GeoDataFrame, point: bool = False) -> list[dict[str, object]]:
    """Bodies for ``POST /projects/{id}/remoteDetectionAlerts`` of a CoMapeo archive server.

    ``detectionDateStart``/``detectionDateEnd``: ISO 8601 UTC date-times of the period's first and
    last day; ``sourceId``: the alert id; ``metadata``: flat scalars only (the schema allows scalars and
    arrays of scalars); ``geometry``: the polygon (or its centroid with ``point``: servers that take
    points only).
    """
    geoms = _geometry_texts(_alert_points(alerts) if point else alerts.geometry.to_numpy())
    return [{**b, "geometry": json.loads(g)} for b, g in zip(_comapeo_bodies(_rows(alerts)), geoms)]


def _gc_properties(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    props = []
    for r in rows:
        w = _windows(str(r["period"]))
        props.append({
            "alert_id": r["alert_id"], "alert_type": ALERT_TYPE, "area_alert_ha": r["area_ha"],
            "mined_area_alert_ha": r["mined_ha"],
            "date_start_t0": w[2], "date_end_t0": w[3], "date_start_t1": w[4], "date_end_t1": w[5],
            "month_detec": w[6], "year_detec": w[7],
            "territory_id": r["zone_id"], "territory_name": r["zone_name"],
            "confidence": r["confidence"], "status": r["status"], "sat_detect_prefix": "S2", "data_source": SOURCE,
        })  # fmt: skip
    return props


def guardian_connector_features(alerts: gpd.GeoDataFrame) -> dict[str, object]:
    """A FeatureCollection with the alert fields Guardian Connector's alerts tables use.

    ``date_start_t1``/``date_end_t1``: the detection period; ``_t0``: the period before it (the
    comparison baseline); ``month_detec``/``year_detec``: month and year of the end of the detection
    window (text, as those tables store them); ``territory_id``/``territory_name``: the zone.
    """
    feats = [{"type": "Feature", "properties": pr, "geometry": json.loads(g)}
             for pr, g in zip(_gc_properties(_rows(alerts)), _geometry_texts(alerts.geometry.to_numpy()))]  # fmt: skip
    return {"type": "FeatureCollection", "features": feats}


def _dumps(o: object) -> str:
    return json.dumps(o, ensure_ascii=False, separators=(",", ":"))


def _with_geometry(objs: list[dict[str, object]], geoms: list[str]) -> list[str]:
    """Each object's JSON with ``"geometry":<text>`` as its last member, the geometry text spliced in
    as GEOS wrote it (no parse and re-serialise of every coordinate)."""
    return [_dumps(o)[:-1] + (',"geometry":' if o else '"geometry":') + g + "}" for o, g in zip(objs, geoms)]


def write_alerts(aset: AlertSet, out_dir: str | Path, meta: dict[str, object]) -> list[Path]:
    """Every format into ``out_dir`` (each file atomically); returns the paths written."""
    from minewatch.atomic import atomic_path, write_text_atomic
    from minewatch.postprocess.io import write_csv
    from minewatch.postprocess.persist import write_geojson_fast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = aset.alerts
    paths = [write_geojson_fast(a, out / "alerts.geojson", meta)]
    csv = pd.DataFrame(a.drop(columns="geometry"))
    csv.insert(3, "date", csv.pop("date_end"))  # Forest Watcher-style: one date column, lat/lon columns
    paths.append(write_csv(csv, out / "alerts.csv", meta))
    paths.append(write_gpkg(a, out / "alerts.gpkg"))
    rows, polygons = _rows(a), _geometry_texts(a.geometry.to_numpy())  # each once, for the three JSON files
    bodies = _comapeo_bodies(rows)
    for name, geoms in (("comapeo_alerts.json", polygons), ("comapeo_alerts_points.json", _geometry_texts(_alert_points(a)))):
        paths.append(write_text_atomic(out / name, "[" + ",".join(_with_geometry(bodies, geoms)) + "]\n"))
    feats = _with_geometry([{"type": "Feature", "properties": pr} for pr in _gc_properties(rows)], polygons)
    paths.append(write_text_atomic(out / "guardian_connector.geojson", '{"type":"FeatureCollection","features":[' + ",".join(feats) + "]}\n"))
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps({**meta, "summary": aset.summary}, indent=2, default=str) + "\n", encoding="utf-8")
    paths.append(out / "summary.json")
    return paths


GPKG_DATE = "2000-01-01T00:00:00.000Z"
"""Timestamp GDAL records in the GeoPackage (fixed, so the same alerts give the same bytes)."""


def write_gpkg(alerts: gpd.GeoDataFrame, target: Path) -> Path:
    """A GeoPackage with layers ``alerts`` (polygons) and ``alert_points`` (centroids), EPSG:4326, via pyogrio."""
    import pyogrio

    from minewatch.atomic import atomic_path

    polys = alerts.copy()
    polys["zone_id"] = polys["zone_id"].map(lambda v: None if v is None else str(v))
    g = polys.geometry.to_numpy().copy()
    single = shapely.get_type_id(g) == 3
    g[single] = shapely.multipolygons(g[single], indices=np.arange(int(single.sum())))  # one geometry type
    polys["geometry"] = g
    points = polys.drop(columns="geometry").assign(geometry=_alert_points(alerts))
    points = gpd.GeoDataFrame(points, geometry="geometry", crs=4326)
    with atomic_path(target) as tmp:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_DATE})
        try:
            pyogrio.write_dataframe(polys, tmp, layer="alerts", driver="GPKG", geometry_type="MultiPolygon")
            pyogrio.write_dataframe(points, tmp, layer="alert_points", driver="GPKG", geometry_type="Point", append=False)
        finally:
            pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": None})
    return target


# ------------------------------------------------------------------------------------------ I/O edge


def read_persistence(path: str | Path) -> tuple[gpd.GeoDataFrame, Path]:
    """The persistence polygons from ``persistence.parquet`` (or a folder holding it, or ``<folder>/persist/``)."""
    p = Path(path)
    if p.is_dir():
        for cand in (p / "persistence.parquet", p / "persist" / "persistence.parquet"):
            if cand.exists():
                p = cand
                break
        else:
            raise MinewatchError(path, "no persistence.parquet here (run 'minewatch persist LAYERS --out DIR' first)")
    if not p.exists():
        raise MinewatchError(p, "file not found")
    try:
        gdf = gpd.read_parquet(p) if p.suffix.lower() in (".parquet", ".geoparquet") else gpd.read_file(p)
    except Exception as e:  # noqa: BLE001 - one line naming the file
        raise MinewatchError(p, f"cannot read the persistence layer ({str(e).splitlines()[0][:120]})") from None
    need = {"polygon_id", "status", "period", "confirmed_in", "onset", "first_seen", "last_seen", "n_witness", "n_locations"}
    missing = need - set(gdf.columns)
    if missing:
        raise MinewatchError(p, f"not a minewatch persistence layer (missing {sorted(missing)})")
    return gdf.to_crs(4326), p


def run_alerts(persistence: str | Path, out_dir: str | Path, since: str, zones: str | Path | None = None, id_field: str | None = None,
               name_field: str | None = None, airstrips: str | Path | None = None) -> AlertSet:
    """Read, build, then write the alerts (nothing is written if any input is refused)."""
    from minewatch.postprocess.io import make_metadata

    since_p = parse_period(since, "--since")
    polygons, ppath = read_persistence(persistence)
    zgdf = None
    if zones is not None:
        from minewatch.vectors import read_vector

        zgdf = read_vector(zones)
        if id_field is None:
            id_field = next((c for c in ("id", "id_field", "ID", "zone_id") if c in zgdf.columns), None)
            if id_field is None:
                raise MinewatchError(zones, f"give --id-field (columns: {[c for c in zgdf.columns if c != 'geometry'][:12]})")
        elif id_field not in zgdf.columns:
            raise MinewatchError(zones, f"--id-field {id_field!r} not among the columns {[c for c in zgdf.columns if c != 'geometry'][:12]}")
        if name_field is None:
            name_field = next((c for c in ("name", "name_field", "Name", "NAME", "nome", "nombre") if c in zgdf.columns), None)
        elif name_field not in zgdf.columns:
            raise MinewatchError(zones, f"--name-field {name_field!r} not among the columns {[c for c in zgdf.columns if c != 'geometry'][:12]}")
    elif id_field is not None:
        raise MinewatchError("--id-field", "needs --zones")
    agdf = None
    if airstrips is not None:
        from minewatch.impacts.airstrips import read_airstrips

        agdf = read_airstrips(airstrips)
    aset = make_alerts(polygons, since_p, zgdf, id_field, name_field, agdf)
    meta = make_metadata("alerts", {"since": since_p.label, "id_field": id_field, "name_field": name_field},
                         [ppath] + ([zones] if zones else []) + ([airstrips] if airstrips else []))  # fmt: skip
    write_alerts(aset, out_dir, meta)
    return aset


def alerts_for_map(path: str | Path) -> gpd.GeoDataFrame:
    """Alerts GeoJSON/GeoParquet for the web map and report (status, period, area, zone)."""
    gdf = gpd.read_file(path) if not str(path).endswith(".parquet") else gpd.read_parquet(path)
    if "alert_id" not in gdf.columns or "status" not in gdf.columns:
        raise MinewatchError(path, "not a minewatch alerts file (no alert_id/status)")
    return gdf.to_crs(4326) if gdf.crs is not None else gdf.set_crs(4326)


__all__: Sequence[str] = ["make_alerts", "run_alerts", "write_alerts", "comapeo_payloads", "guardian_connector_features", "alert_id",
                          "select_new", "ALERT_COLUMNS", "alerts_for_map"]  # fmt: skip
