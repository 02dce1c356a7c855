"""Site-level and geographic splits.

The same site appears as a clear and a cloudy composite (same ``source`` and ``cell``), and some
sites appear in two sources at the same place; splitting by chip would leak one into the other and
inflate validation figures. A *site* is a connected group of chips sharing ``source:cell`` or a
~500 m location cell.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry.base import BaseGeometry

LOCATION_CELL_DEG = 0.005  # ~550 m at the equator: one 480 m chip


def site_ids(meta: pd.DataFrame) -> np.ndarray:
    """An integer site id per chip: connected components of shared source:cell or location cell."""
    n = len(meta)
    keys: list[pd.Series] = []
    if {"source", "cell"} <= set(meta.columns):
        keys.append("sc:" + meta["source"].astype(str) + ":" + meta["cell"].astype(str))
    if {"lon", "lat"} <= set(meta.columns):
        has = meta["lon"].notna() & meta["lat"].notna()
        loc = (
            "loc:"
            + np.floor(meta["lon"].fillna(0) / LOCATION_CELL_DEG).astype(int).astype(str)
            + ":"
            + np.floor(meta["lat"].fillna(0) / LOCATION_CELL_DEG).astype(int).astype(str)
        )
        keys.append(loc.where(has, "row:" + pd.Series(np.arange(n), index=meta.index).astype(str)))
    if not keys:
        return np.arange(n)
    codes, _ = pd.factorize(pd.concat(keys, ignore_index=True))
    codes = codes.reshape(len(keys), n)
    rows = np.concatenate([np.arange(n)] * len(keys))
    graph = coo_matrix((np.ones(rows.size), (rows, codes.ravel() + n)), shape=(n + codes.max() + 1,) * 2)
    _, labels = connected_components(graph, directed=False)
    return pd.factorize(labels[:n])[0]


def split_by_site(meta: pd.DataFrame, val_fraction: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): whole sites go to one side; stratified by label so both sides see mines."""
    sites = site_ids(meta)
    rng = np.random.default_rng(seed)
    label = meta["label"].to_numpy() if "label" in meta else np.zeros(len(meta))
    site_label = pd.Series(label).groupby(sites).max()
    val_sites: list[int] = []
    for _, group in site_label.groupby(site_label):
        ids = group.index.to_numpy().copy()
        rng.shuffle(ids)
        val_sites.extend(ids[: int(round(len(ids) * val_fraction))])
    is_val = np.isin(sites, val_sites)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def geographic_mask(meta: pd.DataFrame, region_wgs84: BaseGeometry) -> np.ndarray:
    """Boolean mask of chips whose lon/lat fall inside ``region_wgs84`` (chips without lon/lat: False)."""
    lon = meta["lon"].to_numpy(dtype=float) if "lon" in meta else np.full(len(meta), np.nan)
    lat = meta["lat"].to_numpy(dtype=float) if "lat" in meta else np.full(len(meta), np.nan)
    ok = np.isfinite(lon) & np.isfinite(lat)
    out = np.zeros(len(meta), dtype=bool)
    shapely.prepare(region_wgs84)
    out[ok] = shapely.contains_xy(region_wgs84, lon[ok], lat[ok])
    return out
