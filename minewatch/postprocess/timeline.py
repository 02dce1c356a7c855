"""Mining over time: new mining per period, the cumulative footprint, and the area table.

Given polygons for a sequence of periods (years ``2018``…, quarters ``2025Q2``…):

* **new mining** (the difference layer): each polygon minus everything detected in any earlier period
  (and, inside one period, minus earlier rows it overlaps), so pieces never overlap and each carries
  the period it first appears in;
* **cumulative** footprint up to each period: the dissolved union of all new pieces so far, built
  incrementally (union up to *t* = dissolve(union up to *t-1* ∪ new pieces of *t*));
* the **area table**: per period, detected, new and cumulative hectares — both the geometric
  footprint (equal-area) and, where the layer carries a per-polygon estimate (the published
  ``Mined area (ha)``), that estimate scaled by the share of the polygon that is new.

Only polygons that actually overlap something earlier are cut (STRtree candidates, touching-only
pairs skipped), one vectorised ``difference`` over all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from minewatch.postprocess.dissolve import dissolve_geometries
from minewatch.postprocess.geom import area_ha, polygonal
from minewatch.postprocess.io import sort_periods


def _stated(layer: pd.DataFrame) -> np.ndarray:
    """Per-polygon mined-area estimate: ``stated_ha``, else ``area_ha``, else NaN."""
    for c in ("stated_ha", "area_ha"):
        if c in layer.columns:
            v = layer[c].to_numpy(dtype=float)
            if not np.isnan(v).all():
                return v
    return np.full(len(layer), np.nan)


def new_mining(layer: gpd.GeoDataFrame, min_piece_ha: float = 0.1) -> gpd.GeoDataFrame:
    """Disjoint new-mining pieces, each labelled with the period it first appears in.

    ``layer``: WGS84 polygons with ``period``; an optional per-polygon estimate in ``stated_ha`` (or
    ``area_ha``). Returns WGS84 pieces with ``period``, ``footprint_ha`` (equal-area), ``area_ha``
    (the estimate × the new share of the polygon's footprint; the footprint when there is no
    estimate), ``src`` (row of ``layer``) and ``whole`` (True when the polygon is entirely new and the
    piece is the polygon itself). Cut pieces smaller than ``min_piece_ha`` (misregistration slivers)
    are dropped; whole polygons are always kept. This is also the decomposition the web map draws.
    """
    n = len(layer)
    cols = ["period", "area_ha", "footprint_ha", "src", "whole"]
    if n == 0:
        return gpd.GeoDataFrame({c: [] for c in cols}, geometry=gpd.GeoSeries([], crs=4326), crs=4326)
    layer = layer.to_crs(4326)
    geoms = polygonal(layer.geometry.to_numpy())
    order = {p: k for k, p in enumerate(sort_periods(layer["period"].astype(str).tolist()))}
    rank = layer["period"].astype(str).map(order).to_numpy() * (n + 1) + np.arange(n)  # time, then row
    i, j = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    m = rank[j] < rank[i]
    i, j = i[m], j[m]
    real = ~shapely.touches(geoms[i], geoms[j])  # sharing only an edge removes nothing
    i, j = i[real], j[real]
    pieces = geoms.copy()
    cut = np.unique(i)
    if len(cut):
        order_i = np.argsort(i, kind="stable")
        starts = np.searchsorted(i[order_i], cut)
        ends = np.append(starts[1:], len(i))
        covers = np.array([shapely.union_all(geoms[j[order_i[s:e]]]) for s, e in zip(starts, ends, strict=True)], dtype=object)
        pieces[cut] = polygonal(shapely.difference(geoms[cut], covers))
    footprint = area_ha(geoms)
    fp_new = footprint.copy()
    if len(cut):
        fp_new[cut] = area_ha(pieces[cut])
    whole = np.ones(n, dtype=bool)
    whole[cut] = False
    share = np.divide(fp_new, footprint, out=np.zeros(n), where=footprint > 0)
    whole |= share >= 1.0 - 1e-9
    stated = _stated(layer)
    est = np.where(np.isnan(stated), fp_new, stated * np.clip(share, 0.0, 1.0))
    keep = (whole | (fp_new >= min_piece_ha)) & ~shapely.is_empty(pieces)
    out = gpd.GeoDataFrame(
        {"period": layer["period"].astype(str).to_numpy()[keep], "area_ha": est[keep], "footprint_ha": fp_new[keep],
         "src": np.flatnonzero(keep), "whole": whole[keep]},
        geometry=pieces[keep],
        crs=4326,
    )
    return out.reset_index(drop=True)


def cumulative_layers(new: gpd.GeoDataFrame, periods: Sequence[str] | None = None) -> gpd.GeoDataFrame:
    """The dissolved footprint of all mining up to each period (one set of rows per period).

    Rows: ``period`` (up to and including), ``footprint_ha`` (equal-area, of the union), ``area_ha``
    (sum of the new pieces' estimates merged into the polygon), ``n_pieces``.
    """
    periods = list(periods) if periods is not None else sort_periods(new["period"].astype(str).tolist())
    rows: list[gpd.GeoDataFrame] = []
    cur_geom = np.zeros(0, dtype=object)
    cur_area = np.zeros(0)
    cur_n = np.zeros(0, dtype=int)
    g_new = new.geometry.to_numpy()
    for p in periods:
        sel = (new["period"].astype(str) == p).to_numpy()
        geoms = np.concatenate([cur_geom, g_new[sel]])
        areas = np.concatenate([cur_area, new["area_ha"].to_numpy(dtype=float)[sel]])
        counts = np.concatenate([cur_n, np.ones(int(sel.sum()), dtype=int)])
        if len(geoms):
            merged, labels = dissolve_geometries(geoms)
            cur_geom = merged
            cur_area = np.bincount(labels, weights=areas, minlength=len(merged))
            cur_n = np.bincount(labels, weights=counts, minlength=len(merged)).astype(int)
        rows.append(gpd.GeoDataFrame({"period": p, "area_ha": cur_area, "n_pieces": cur_n}, geometry=list(cur_geom), crs=4326))
    out = gpd.GeoDataFrame(pd.concat(rows, ignore_index=True), crs=4326) if rows else gpd.GeoDataFrame(
        {"period": [], "area_ha": [], "n_pieces": []}, geometry=gpd.GeoSeries([], crs=4326), crs=4326)
    out.insert(1, "footprint_ha", area_ha(out.geometry))
    return out


def area_table(layer: gpd.GeoDataFrame, new: gpd.GeoDataFrame, cumulative: gpd.GeoDataFrame) -> pd.DataFrame:
    """Per period: polygons and hectares detected, new, and cumulative (footprint and estimate).

    ``cumulative_footprint_ha`` is the area of the dissolved union (not a running sum), so it checks
    the difference layer: it equals the running sum of ``new_footprint_ha`` up to dropped slivers.
    """
    periods = sort_periods(layer["period"].astype(str).tolist())
    fp = layer["footprint_ha"].to_numpy(dtype=float) if "footprint_ha" in layer.columns else area_ha(layer.geometry)
    stated = _stated(layer)
    lp = layer["period"].astype(str).to_numpy()
    npd = new["period"].astype(str).to_numpy()
    cpd = cumulative["period"].astype(str).to_numpy()
    rows = []
    for p in periods:
        s = lp == p
        nw = npd == p
        cu = cpd == p
        rows.append(
            {
                "period": p,
                "n_polygons": int(s.sum()),
                "footprint_ha": float(fp[s].sum()),
                "stated_ha": float(np.nansum(stated[s])) if not np.isnan(stated[s]).all() else np.nan,
                "new_footprint_ha": float(new["footprint_ha"].to_numpy()[nw].sum()),
                "new_area_ha": float(new["area_ha"].to_numpy()[nw].sum()),
                "cumulative_footprint_ha": float(cumulative["footprint_ha"].to_numpy()[cu].sum()),
                "cumulative_area_ha": float(cumulative["area_ha"].to_numpy()[cu].sum()),
                "n_cumulative_polygons": int(cu.sum()),
            }
        )
    return pd.DataFrame(rows)


def timeline(layer: gpd.GeoDataFrame, min_piece_ha: float = 0.0) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, pd.DataFrame]:
    """(new-mining pieces, cumulative layers, area table) of a multi-period layer."""
    new = new_mining(layer, min_piece_ha=min_piece_ha)
    cum = cumulative_layers(new, sort_periods(layer["period"].astype(str).tolist()))
    return new, cum, area_table(layer, new, cum)
