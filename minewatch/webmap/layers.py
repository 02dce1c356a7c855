"""Read mining layers, zones and airstrips, and derive what the map and report show.

Everything here is geometry and tables (no HTML): readers that accept both minewatch's own mining
layers (``period``, ``area_ha``, ``score_*``) and the published Amazon Mining Watch layers (``year``
code such as ``202400``, ``Mined area (ha)``), the new-mining decomposition (disjoint pieces labelled
with the period they first appear in, whose union up to a period is the cumulative footprint), and
mined area per zone per period.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from minewatch.errors import MinewatchError
from minewatch.postprocess.io import periods_for, refuse_patch_scores

EQUAL_AREA_CRS = "EPSG:6933"
"""WGS 84 / NSIDC EASE-Grid 2.0 Global (cylindrical equal-area). Chosen because it is equal-area
everywhere minewatch runs (the whole tropics and beyond), so hectares from different countries and
layers are comparable without picking a regional projection."""

M2_PER_HA = 10_000.0

def sort_periods(periods: Sequence[str]) -> list[str]:
    """Unique periods in time order (``2024`` sorts before ``2024Q1``; see :mod:`minewatch.periods`)."""
    from minewatch.periods import sort_periods as _sort

    return _sort(periods)


def _read_vector(path: Path) -> gpd.GeoDataFrame:
    """The one vector reader (:mod:`minewatch.vectors`): WGS84 out, files with unplaceable coordinates refused."""
    from minewatch.vectors import read_vector

    return read_vector(path, csv_points=True)


def polygonal(geoms: np.ndarray) -> np.ndarray:
    """``make_valid`` that keeps only polygonal parts (a repaired bow-tie may gain stray lines)."""
    g = shapely.make_valid(np.asarray(geoms), method="structure", keep_collapsed=False)  # overlapping parts → their union
    mixed = shapely.get_type_id(g) == 7  # GeometryCollection
    for i in np.flatnonzero(mixed):
        parts = [p for p in shapely.get_parts(g[i]) if p.geom_type in ("Polygon", "MultiPolygon")]
        g[i] = shapely.union_all(parts) if parts else shapely.Polygon()
    return g


def area_ha(geoms: gpd.GeoSeries) -> np.ndarray:
    """Area of WGS84 geometries in hectares, measured in :data:`EQUAL_AREA_CRS`."""
    if len(geoms) == 0:
        return np.zeros(0)
    return np.asarray(geoms.to_crs(EQUAL_AREA_CRS).area, dtype=float) / M2_PER_HA


def read_layer(path: str | Path, period: str | None = None) -> gpd.GeoDataFrame:
    """One mining layer as a WGS84 GeoDataFrame with ``period``, ``area_ha`` and ``score``.

    Accepts minewatch layers (``period``, ``mined_ha``/``area_ha``, ``score_max``/``score_mean``/``score``)
    and the published upstream layers (``year`` code, ``Mined area (ha)``). ``area_ha`` here is the
    mined area: minewatch's estimate ``mined_ha`` when every polygon has one, else the published
    ``Mined area (ha)``, else the footprint (``area_kind`` says which: ``estimate``, ``published``,
    ``footprint``). Missing periods come from ``period``, then the file name (``mining_202400_…``).
    ``score`` is NaN when the layer has none (the published layers carry no score). ``source`` and
    ``fid`` (row position in the file) identify each polygon; ``footprint_ha`` is its outline area.
    """
    path = Path(path)
    gdf = _read_vector(path)
    refuse_patch_scores(path, gdf)
    fid = np.arange(len(gdf))
    keep = (gdf.geometry.notna() & ~gdf.geometry.is_empty).to_numpy()
    gdf, fid = gdf[keep].copy(), fid[keep]
    kinds = set(gdf.geom_type.unique())
    if kinds - {"Polygon", "MultiPolygon"}:
        raise MinewatchError(path, f"expected polygons, found {sorted(kinds)}")
    periods = periods_for(gdf, path, period)
    kind = "footprint"
    mined = pd.to_numeric(gdf["mined_ha"], errors="coerce").to_numpy(dtype=float) if "mined_ha" in gdf.columns else None
    if mined is not None and len(mined) and np.isfinite(mined).all():
        areas, kind = mined, "estimate"  # minewatch's per-cell mined-area estimate
    elif "Mined area (ha)" in gdf.columns:
        areas, kind = gdf["Mined area (ha)"].astype(float).to_numpy(), "published"
    elif "area_ha" in gdf.columns:
        areas = gdf["area_ha"].astype(float).to_numpy()  # minewatch's footprint
    else:
        areas = area_ha(gdf.geometry)
    score = next((gdf[c].astype(float).to_numpy() for c in ("score_max", "score", "score_mean") if c in gdf.columns), None)
    geoms = polygonal(gdf.geometry.to_numpy())
    out = gpd.GeoDataFrame(
        {
            "period": periods.to_numpy(),
            "area_ha": areas,
            "score": np.full(len(gdf), np.nan) if score is None else score,
            "score_mean": gdf["score_mean"].astype(float).to_numpy() if "score_mean" in gdf.columns else np.nan,
            "n_patches": gdf["n_patches"].to_numpy() if "n_patches" in gdf.columns else np.nan,
            "source": path.name,
            "fid": fid,
            "area_kind": kind,
        },
        geometry=geoms,
        crs=4326,
    )
    out["footprint_ha"] = area_ha(out.geometry)
    return out.reset_index(drop=True)


def read_layers(paths: Sequence[str | Path]) -> gpd.GeoDataFrame:
    """Several layers (e.g. one file per period) concatenated; rows in period order."""
    if not paths:
        raise MinewatchError("LAYER", "give at least one mining layer")
    parts = [read_layer(p) for p in paths]
    gdf = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=4326)
    order = {p: i for i, p in enumerate(sort_periods(gdf["period"].tolist()))}
    gdf["_o"] = gdf["period"].map(order)
    return gdf.sort_values("_o", kind="stable").drop(columns="_o").reset_index(drop=True)


def new_mining(layer: gpd.GeoDataFrame, min_piece_ha: float = 0.1) -> gpd.GeoDataFrame:
    """Disjoint "new mining" pieces: each polygon minus everything detected in earlier periods.

    Each piece carries the ``period`` it first appears in, its ``footprint_ha`` (equal-area),
    ``area_ha``: the source polygon's stated area scaled by the share of its footprint that is new
    (the published layers state a mined area smaller than the polygon footprint; for minewatch layers
    the two are equal), ``src``: the row of ``layer`` it comes from, and ``whole``: True when that
    polygon is entirely new (the piece is the polygon itself; the map then reuses its geometry). Pieces never overlap (polygons of one period are assumed disjoint, as after
    a dissolve), so the cumulative footprint up to period *t* is exactly the pieces with period ≤ *t*
    and cumulative area is a running sum: the map draws new and cumulative mining from this one
    layer without duplicating geometry. Slivers under ``min_piece_ha`` (misregistration between
    periods' outlines) are dropped. Uses ``minewatch.postprocess.timeline.new_mining`` when present.
    """
    try:  # another stage may own the canonical implementation
        from minewatch.postprocess import timeline as _tl  # type: ignore[attr-defined]

        fn = getattr(_tl, "new_mining", None)
    except ImportError:
        fn = None
    if fn is not None:
        out = fn(layer)
        if isinstance(out, gpd.GeoDataFrame) and {"period", "area_ha"} <= set(out.columns):
            return out
    periods = sort_periods(layer["period"].tolist())
    ea = layer.to_crs(EQUAL_AREA_CRS)
    geoms = polygonal(ea.geometry.to_numpy())
    footprint = shapely.area(geoms) / M2_PER_HA
    stated = layer["area_ha"].to_numpy(dtype=float)
    period_of = layer["period"].to_numpy()
    rows_p: list[str] = []
    rows_g: list[object] = []
    rows_a: list[float] = []
    rows_src: list[int] = []
    rows_whole: list[bool] = []
    earlier = np.zeros(len(layer), dtype=bool)
    for p in periods:
        idx = np.flatnonzero(period_of == p)
        prev = np.flatnonzero(earlier)
        new_geoms = geoms[idx].copy()
        touched = np.zeros(len(idx), dtype=bool)
        if len(prev):
            tree = shapely.STRtree(geoms[prev])
            qi, qj = tree.query(geoms[idx], predicate="intersects")
            touched[np.unique(qi)] = True
            for k in np.unique(qi):
                cover = shapely.union_all(geoms[prev][qj[qi == k]])
                new_geoms[k] = shapely.difference(geoms[idx][k], cover)
        new_geoms = polygonal(new_geoms)
        fp_new = shapely.area(new_geoms) / M2_PER_HA
        for k, i in enumerate(idx):
            if fp_new[k] < min_piece_ha:
                continue
            share = fp_new[k] / footprint[i] if footprint[i] > 0 else 0.0
            rows_p.append(p)
            rows_g.append(new_geoms[k])
            rows_a.append(float(stated[i] * min(share, 1.0)))
            rows_src.append(int(i))
            rows_whole.append(bool(not touched[k] or share >= 1.0 - 1e-6))
        earlier[idx] = True
    out = gpd.GeoDataFrame(
        {"period": rows_p, "area_ha": rows_a, "src": rows_src, "whole": rows_whole}, geometry=rows_g, crs=EQUAL_AREA_CRS
    )
    out["footprint_ha"] = shapely.area(out.geometry.to_numpy()) / M2_PER_HA
    return out.to_crs(4326).reset_index(drop=True)


@dataclass(frozen=True)
class PeriodStats:
    period: str
    n_polygons: int
    area_ha: float
    """Mined area detected in the period (sum of the layer's areas)."""
    new_ha: float
    """Area first detected in this period (not in any earlier one)."""
    cumulative_ha: float
    """Area detected in this or any earlier period (union)."""


def period_stats(layer: gpd.GeoDataFrame, new: gpd.GeoDataFrame) -> list[PeriodStats]:
    """Per-period totals in time order."""
    from minewatch.impacts.zonal import disjoint_pieces

    # overlapping polygons of one period (a layer given twice) count once: each polygon's area is
    # scaled by the share of it no earlier polygon of its period covers (as in impacts)
    area = layer["area_ha"].to_numpy(dtype=float)
    if len(layer):
        ea = layer.to_crs(EQUAL_AREA_CRS).geometry.to_numpy()
        own, found = disjoint_pieces(ea, layer["period"].astype(str).to_numpy())
        if found:
            whole = shapely.area(ea)
            area = area * np.divide(shapely.area(own), whole, out=np.ones_like(whole), where=whole > 0)
    out, cum = [], 0.0
    for p in sort_periods(layer["period"].tolist()):
        sel = (layer["period"] == p).to_numpy()
        nw = float(new.loc[new["period"] == p, "area_ha"].sum())
        cum += nw
        out.append(PeriodStats(p, int(sel.sum()), float(area[sel].sum()), nw, cum))
    return out


ID_FIELDS = ("id", "zone_id", "ID", "Id", "id_field", "fid", "FID")
NAME_FIELDS = ("name", "NAME", "Name", "zone_name", "name_field", "nome", "nombre", "NOME", "NOMBRE", "ethnicities_field")


def read_zones(path: str | Path, id_field: str | None = None, name_field: str | None = None) -> gpd.GeoDataFrame:
    """Zones (territories, protected areas…) as ``zone_id``, ``zone_name``, geometry (WGS84).

    Without explicit fields the first present of :data:`ID_FIELDS` / :data:`NAME_FIELDS` is used; a
    missing name falls back to later name fields, then to the id.
    """
    path = Path(path)
    gdf = _read_vector(path)
    for opt, f in (("--zone-id-field", id_field), ("--zone-name-field", name_field)):
        if f is not None and f not in gdf.columns:
            raise MinewatchError(path, f"{opt} {f!r} not among the columns {[c for c in gdf.columns if c != 'geometry']}")
    if id_field is None:
        id_field = next((c for c in ID_FIELDS if c in gdf.columns), None)
    ids = gdf[id_field].astype(str) if id_field else pd.Series([str(i) for i in range(len(gdf))], index=gdf.index)
    names = pd.Series([None] * len(gdf), index=gdf.index, dtype=object)
    for f in [name_field] if name_field else [c for c in NAME_FIELDS if c in gdf.columns]:
        names = names.where(names.notna(), gdf[f].where(gdf[f].notna() & (gdf[f].astype(str).str.strip() != "")))
    names = names.where(names.notna(), ids).astype(str)
    poly = gdf.geom_type.isin(["Polygon", "MultiPolygon"])
    if not poly.any():
        raise MinewatchError(path, "zones must be polygons")
    extra = {c: gdf[c] for c in ("country", "type_field") if c in gdf.columns}
    out = gpd.GeoDataFrame(
        {"zone_id": ids.to_numpy(), "zone_name": names.to_numpy(), **{k: v.to_numpy() for k, v in extra.items()}},
        geometry=polygonal(gdf.geometry.to_numpy()),
        crs=4326,
    )
    return out[poly.to_numpy()].reset_index(drop=True)


def zone_period_area(zones: gpd.GeoDataFrame, polys: gpd.GeoDataFrame, periods: Sequence[str]) -> pd.DataFrame:
    """Mined area (ha) inside each zone per period: zones × periods table.

    A polygon counts with its stated ``area_ha`` scaled by the share of its footprint inside the zone
    (equal-area), so layers whose stated mined area is smaller than their outline (the published
    ones) and minewatch layers (stated = footprint) are both handled. Intersections are computed
    only for candidate pairs from an STRtree; polygons of one period that overlap are first made
    disjoint (:func:`minewatch.impacts.zonal.disjoint_pieces`), so an overlap counts once.
    """
    table = pd.DataFrame(0.0, index=pd.Index(zones["zone_id"], name="zone_id"), columns=list(periods))
    if len(polys) == 0 or len(zones) == 0:
        return table
    from minewatch.impacts.zonal import disjoint_pieces

    zg = zones.to_crs(EQUAL_AREA_CRS).geometry.to_numpy()
    pg = polys.to_crs(EQUAL_AREA_CRS).geometry.to_numpy()
    # overlapping polygons of one period (a layer given twice, self-overlaps) count once, as in impacts
    own, _ = disjoint_pieces(pg, polys["period"].astype(str).to_numpy())
    zi, pi = shapely.STRtree(own).query(zg, predicate="intersects")
    if len(zi) == 0:
        return table
    inside = shapely.area(shapely.intersection(zg[zi], own[pi]))
    whole = shapely.area(pg[pi])
    share = np.divide(inside, whole, out=np.zeros_like(inside), where=whole > 0)
    ha = polys["area_ha"].to_numpy(dtype=float)[pi] * np.clip(share, 0.0, 1.0)
    df = pd.DataFrame({"zone": zi, "period": polys["period"].to_numpy()[pi], "ha": ha})
    sums = df.groupby(["zone", "period"])["ha"].sum()
    values = table.to_numpy().copy()
    col = {p: j for j, p in enumerate(table.columns)}
    for (z, p), v in sums.items():
        if p in col:
            values[int(z), col[p]] += v
    return pd.DataFrame(values, index=table.index, columns=table.columns)


@dataclass
class ZoneStats:
    """Mined area per zone: ``detected`` (ha in each period's layer) and ``cumulative`` (ha, union ≤ period)."""

    detected: pd.DataFrame
    cumulative: pd.DataFrame

    def top(self, n: int = 10, period: str | None = None) -> pd.DataFrame:
        """Zones with the largest cumulative mined area (at ``period``, default the last)."""
        col = period or self.cumulative.columns[-1]
        s = self.cumulative[col].sort_values(ascending=False)
        return s[s > 0].head(n).to_frame("cumulative_ha")


def zone_stats(zones: gpd.GeoDataFrame, layer: gpd.GeoDataFrame, new: gpd.GeoDataFrame) -> ZoneStats:
    """Mined area per zone and period, detected and cumulative (from the disjoint new-mining pieces)."""
    periods = sort_periods(layer["period"].tolist())
    detected = zone_period_area(zones, layer, periods)
    cumulative = zone_period_area(zones, new, periods).cumsum(axis=1)
    return ZoneStats(detected, cumulative)


def read_airstrips(path: str | Path) -> gpd.GeoDataFrame:
    """Airstrip points (GeoJSON/GeoParquet, or CSV with Latitude/Longitude), WGS84."""
    path = Path(path)
    gdf = _read_vector(path)
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if not set(gdf.geom_type.unique()) <= {"Point", "MultiPoint"}:
        gdf = gdf.set_geometry(gdf.geometry.representative_point())
    return gdf.reset_index(drop=True)
