"""Mined area per zone and period: territories, protected areas, admin units — any polygon layer.

Two measures, both in hectares:

* ``intersect_ha``: the equal-area (EPSG:6933) area of the intersection of the mining polygons with
  the zone — the footprint inside the zone;
* ``apportioned_ha`` (when the layer carries a per-polygon estimate, e.g. the published
  ``Mined area (ha)``): each polygon's estimate × the share of the polygon's area inside the zone.
  The published layers' polygons are whole 480 m patches; the estimate inside them is ~10 % of the
  outline, so the footprint would overstate mining about tenfold.

Mining polygons of one period are made disjoint before intersecting (:func:`disjoint_pieces`): a
polygon keeps only the part no earlier polygon of its period covers (input order: file order, then
row order). The same layer passed twice, or overlapping polygons of one period, therefore count
once; the result says how much overlapped (``overlaps``). A polygon whose own parts overlap is
repaired to their union (``make_valid(method="structure")``), not to their symmetric difference.
With ``apportioned_ha`` each polygon's stated estimate is scaled by the share of its area that is
its own piece, so the estimate of an area covered twice is counted once too.

Zones are handled as they come: invalid geometries are repaired (polygonal parts), multi-part zones
are single zones. Ids are compared as text with integral numbers written as integers (``1`` and
``1.0`` are the same id ``1``); rows sharing an id are refused unless they are the same zone
(same name; without a name field, the same geometry) — then they are its parts and unioned,
which the summary reports.
Zones that overlap each other are each counted in full (a mine in two overlapping territories
counts for both; sums over zones can then exceed the total).

Speed: one STRtree bulk query gives every (zone, polygon) candidate pair; pairs whose polygon lies
inside the (prepared) zone take share 1 without an intersection; only boundary-crossing pairs are
intersected, in one vectorised call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from minewatch.errors import MinewatchError
from minewatch.postprocess.geom import M2_PER_HA, polygonal, to_equal_area
from minewatch.postprocess.io import read_vector, sort_periods


def read_zones(path: str | Path, id_field: str, name_field: str | None = None) -> gpd.GeoDataFrame:
    """Zones as WGS84 ``zone_id`` (str), ``zone_name`` (str), geometry — repaired, one row per id.

    A missing ``id_field`` or ``name_field`` is a one-line error naming the zones file. Empty names
    fall back to the id. Rows sharing an id are one zone (their union) only when they are plainly
    the same zone: the same name (with ``name_field``) or the same geometry (without); otherwise the
    file is refused. ``attrs["merged_rows"]`` says which ids were merged from how many rows.
    """
    path = Path(path)
    gdf = read_vector(path)
    cols = [c for c in gdf.columns if c != gdf.geometry.name]
    for opt, f in (("--zone-id-field", id_field), ("--zone-name-field", name_field)):
        if f is not None and f not in gdf.columns:
            raise MinewatchError(path, f"{opt} {f!r} is not a property of the zones (properties: {cols})")
    gdf = gdf[gdf.geometry.notna()]
    ids = gdf[id_field]
    if ids.isna().any():
        raise MinewatchError(path, f"{int(ids.isna().sum())} zones have no {id_field!r}")
    ids = zone_id_text(ids)
    if name_field is not None:
        nm = gdf[name_field]
        names = np.where(nm.isna() | (nm.astype(str).str.strip() == ""), ids, nm.astype(str))
    else:
        names = ids.copy()
    geoms = polygonal(gdf.geometry.to_numpy())
    if shapely.is_empty(geoms).all():
        raise MinewatchError(path, "zones must be polygons (no polygonal geometry found)")
    df = pd.DataFrame({"zone_id": ids, "zone_name": names, "geometry": geoms})
    merged: dict[str, int] = {}
    if df["zone_id"].duplicated().any():
        dup = df[df["zone_id"].duplicated(keep=False)]
        if name_field is not None:
            nnames = dup.groupby("zone_id", sort=False)["zone_name"].nunique()
            clash = nnames[nnames > 1]
            if len(clash):
                zid = clash.index[0]
                shown = sorted(dup.loc[dup["zone_id"] == zid, "zone_name"].unique())[:3]
                raise MinewatchError(path, f"{len(clash)} {id_field!r} value(s) are shared by zones with different names (e.g. {zid!r}: {shown}); ids must be unique — choose another --zone-id-field or fix the file")
        else:
            differ = dup.groupby("zone_id", sort=False)["geometry"].agg(lambda g: not all(shapely.equals(np.asarray(g)[0], np.asarray(g)[1:])))
            clash = differ[differ]
            if len(clash):
                zid = clash.index[0]
                raise MinewatchError(path, f"{len(clash)} {id_field!r} value(s) are shared by different geometries (e.g. {zid!r}, {int((dup['zone_id'] == zid).sum())} rows; ids compare as numbers, 1 = 1.0); ids must be unique — give --zone-name-field to merge rows of one named zone, choose another --zone-id-field, or fix the file")
        merged = {str(k): int(v) for k, v in dup.groupby("zone_id", sort=False).size().items()}
        agg = df.groupby("zone_id", sort=False).agg(zone_name=("zone_name", "first"), geometry=("geometry", lambda g: shapely.union_all(np.asarray(g))))
        df = agg.reset_index()
    out = gpd.GeoDataFrame(df, geometry="geometry", crs=4326)
    out["zone_area_ha"] = shapely.area(to_equal_area(out.geometry)) / M2_PER_HA
    out = out.reset_index(drop=True)
    out.attrs["merged_rows"] = merged
    return out


def zone_id_text(ids: pd.Series) -> np.ndarray:
    """Zone ids as text; integral numbers as integers (``1.0`` → ``"1"``), so a float column of ids
    reads like the integers it holds and ``1`` and ``1.0`` are recognised as the same id."""

    def one(v: object) -> str:
        if isinstance(v, (bool, np.bool_)):
            return str(v)
        if isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer():
            return str(int(v))
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        return str(v).strip()

    return np.array([one(v) for v in ids.to_numpy()], dtype=object)


def disjoint_pieces(geoms: np.ndarray, periods: np.ndarray) -> tuple[np.ndarray, dict[str, dict[str, float]]]:
    """Each polygon minus the earlier polygons of its period that overlap it (first wins), and the
    overlaps found per period: ``{period: {"polygons": n overlapping an earlier one, "overlap_m2": …}}``.

    Pieces of one period never overlap and their union is the period's union, so summing their
    areas inside a zone gives the area of the union. Polygons that only touch are left as they are.
    Cost: one STRtree query per period; differences only for polygons that do overlap (usually none).
    """
    pieces = np.asarray(geoms, dtype=object).copy()
    found: dict[str, dict[str, float]] = {}
    codes, uniq = pd.factorize(np.asarray(periods).astype(str))
    order = np.argsort(codes, kind="stable")
    ends = np.cumsum(np.bincount(codes, minlength=len(uniq)))
    for k, p in enumerate(uniq):
        idx = order[(ends[k - 1] if k else 0) : ends[k]]
        if len(idx) < 2:
            continue
        g = pieces[idx]
        i, j = shapely.STRtree(g).query(g)  # envelope candidates: no predicate evaluated yet
        m = i < j
        i, j = i[m], j[m]
        b = shapely.bounds(g)
        # polygons whose envelopes only share an edge (adjacent patches, the usual case) cannot overlap
        m = (np.minimum(b[i, 2], b[j, 2]) > np.maximum(b[i, 0], b[j, 0])) & (np.minimum(b[i, 3], b[j, 3]) > np.maximum(b[i, 1], b[j, 1]))
        i, j = i[m], j[m]
        if len(i) == 0:
            continue
        ov = shapely.relate_pattern(g[i], g[j], "2********")  # interiors share an area, not just an edge
        i, j = i[ov], j[ov]
        if len(i) == 0:
            continue
        order = np.argsort(j, kind="stable")
        i, j = i[order], j[order]
        later, start = np.unique(j, return_index=True)
        before = shapely.area(g[later])
        for k, jj in enumerate(later):
            stop = start[k + 1] if k + 1 < len(start) else len(j)
            cover = shapely.union_all(g[i[start[k] : stop]])
            pieces[idx[jj]] = shapely.difference(g[jj], cover)
        pieces[idx[later]] = polygonal(pieces[idx[later]])
        found[str(p)] = {"polygons": int(len(later)), "overlap_m2": float(np.sum(before - shapely.area(pieces[idx[later]])))}
    return pieces, found


@dataclass(frozen=True)
class ZonalResult:
    """Long table (one row per zone × period with mining) and the zone list it refers to."""

    table: pd.DataFrame
    zones: gpd.GeoDataFrame
    apportioned: bool
    overlaps: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per period: polygons that overlapped an earlier one of the same period, and the overlap (ha)
    that was counted once instead of twice."""


def zonal_pairs(zone_geoms_ea: np.ndarray, poly_geoms_ea: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(zone index, polygon index, m² of the polygon inside the zone) for every intersecting pair.

    Both arrays must be in the same metric equal-area CRS.
    """
    if len(zone_geoms_ea) == 0 or len(poly_geoms_ea) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    zi, pi = shapely.STRtree(poly_geoms_ea).query(zone_geoms_ea, predicate="intersects")
    inside = np.zeros(len(zi))
    if len(zi):
        shapely.prepare(zone_geoms_ea)
        full = shapely.contains_properly(zone_geoms_ea[zi], poly_geoms_ea[pi])
        inside[full] = shapely.area(poly_geoms_ea[pi[full]])
        part = ~full
        inside[part] = shapely.area(shapely.intersection(zone_geoms_ea[zi[part]], poly_geoms_ea[pi[part]]))
        shapely.destroy_prepared(zone_geoms_ea)
    keep = inside > 0
    return zi[keep], pi[keep], inside[keep]


def zonal_stats(layer: gpd.GeoDataFrame, zones: gpd.GeoDataFrame, apportion: bool) -> ZonalResult:
    """Mined area per zone per period.

    ``layer``: WGS84 polygons with ``period`` and, when ``apportion``, the per-polygon estimate in
    ``stated_ha``. Returns a long table with ``zone_id``, ``zone_name``, ``period``, ``zone_area_ha``,
    ``n_polygons`` (polygons touching the zone), ``intersect_ha``, ``intersect_pct`` (of the zone),
    and with ``apportion`` also ``apportioned_ha`` and ``apportioned_pct``. Only zone × period with
    some mining are listed; :func:`wide_table` gives the full zones × periods grid.
    """
    z_ea = to_equal_area(zones.geometry)
    p_ea = polygonal(to_equal_area(layer.to_crs(4326).geometry))
    pieces, overlaps = disjoint_pieces(p_ea, layer["period"].astype(str).to_numpy())
    zi, pi, inside_m2 = zonal_pairs(z_ea, pieces)
    poly_m2 = shapely.area(p_ea)[pi]
    share = np.clip(np.divide(inside_m2, poly_m2, out=np.zeros_like(inside_m2), where=poly_m2 > 0), 0.0, 1.0)
    df = pd.DataFrame(
        {
            "zone": zi,
            "period": layer["period"].astype(str).to_numpy()[pi],
            "intersect_ha": inside_m2 / M2_PER_HA,
            "n_polygons": 1,
        }
    )
    if apportion:
        stated = layer["stated_ha"].to_numpy(dtype=float)
        if np.isnan(stated).any():
            raise MinewatchError("--area-field", "some polygons have no stated area")
        df["apportioned_ha"] = stated[pi] * share
    cols = ["intersect_ha", "n_polygons"] + (["apportioned_ha"] if apportion else [])
    g = df.groupby(["zone", "period"], sort=False)[cols].sum().reset_index()
    zarea = zones["zone_area_ha"].to_numpy()[g["zone"].to_numpy()]
    out = pd.DataFrame(
        {
            "zone_id": zones["zone_id"].to_numpy()[g["zone"].to_numpy()],
            "zone_name": zones["zone_name"].to_numpy()[g["zone"].to_numpy()],
            "period": g["period"].to_numpy(),
            "zone_area_ha": zarea,
            "n_polygons": g["n_polygons"].to_numpy(dtype=int),
            "intersect_ha": g["intersect_ha"].to_numpy(),
            "intersect_pct": 100.0 * g["intersect_ha"].to_numpy() / zarea,
        }
    )
    if apportion:
        out["apportioned_ha"] = g["apportioned_ha"].to_numpy()
        out["apportioned_pct"] = 100.0 * out["apportioned_ha"] / zarea
    order = {p: k for k, p in enumerate(sort_periods(out["period"].tolist()))}
    out = out.assign(_o=out["period"].map(order)).sort_values(["zone_id", "_o"], kind="stable").drop(columns="_o")
    return ZonalResult(out.reset_index(drop=True), zones, apportion,
                       {p: {"polygons": v["polygons"], "overlap_ha": v["overlap_m2"] / M2_PER_HA} for p, v in overlaps.items()})


def wide_table(result: ZonalResult, periods: list[str] | None = None) -> gpd.GeoDataFrame:
    """Zones × periods (WGS84 zones with one column per period and a ``total``), zeros included.

    Values are ``apportioned_ha`` when available, else ``intersect_ha`` (the ``measure`` column
    says which). Columns are named ``ha_<period>``.
    """
    measure = "apportioned_ha" if result.apportioned else "intersect_ha"
    t = result.table
    periods = periods or sort_periods(t["period"].tolist())
    piv = t.pivot_table(index="zone_id", columns="period", values=measure, aggfunc="sum").reindex(columns=periods)
    z = result.zones.set_index("zone_id")
    piv = piv.reindex(z.index).fillna(0.0)
    out = gpd.GeoDataFrame({"zone_id": z.index, "zone_name": z["zone_name"].to_numpy(), "zone_area_ha": z["zone_area_ha"].to_numpy(),
                            "measure": measure}, geometry=z.geometry.to_numpy(), crs=4326)
    for p in periods:
        out[f"ha_{p}"] = piv[p].to_numpy()
    out["total_ha"] = piv.sum(axis=1).to_numpy()
    out["total_pct"] = 100.0 * out["total_ha"] / out["zone_area_ha"]
    return out.reset_index(drop=True)
