"""Distance from each airstrip to the nearest mining polygon, and a within-radius flag.

Distances are metric and geodesic: the nearest polygon and the nearest pair of points are found in
the airstrip's own UTM zone (scale error ≤ 0.1 % near the point), then the distance between those
two points is measured on the WGS84 ellipsoid (``pyproj.Geod``). An airstrip inside a polygon is at
0 m. Never degrees: a degree of longitude shrinks with latitude, so a "0.18°" radius is not 20 km.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Geod

from minewatch.errors import MinewatchError
from minewatch.postprocess.geom import polygonal, transformer, utm_epsg_for
from minewatch.vectors import read_vector

_GEOD = Geod(ellps="WGS84")


def read_airstrips(path: str | Path) -> gpd.GeoDataFrame:
    """Airstrip points: GeoJSON/GeoParquet points, or a CSV with latitude/longitude columns (WGS84)."""
    path = Path(path)
    gdf = read_vector(path, csv_points=True)
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if not set(gdf.geom_type.unique()) <= {"Point"}:
        gdf = gdf.set_geometry(gdf.geometry.representative_point())
    if len(gdf) == 0:
        raise MinewatchError(path, "no airstrips")
    return gdf.reset_index(drop=True)


def nearest_mining(points: np.ndarray, polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(geodesic metres, index of the nearest polygon) for WGS84 points and polygons.

    With no polygons (or none within 40° of longitude) the distance is ``inf`` and the index ``-1``.
    """
    n = len(points)
    dist = np.full(n, np.inf)
    idx = np.full(n, -1, dtype=int)
    polygons = polygonal(polygons)
    polygons_ok = np.flatnonzero(~shapely.is_empty(polygons))
    if n == 0 or len(polygons_ok) == 0:
        return dist, idx
    polys = polygons[polygons_ok]
    pb = shapely.bounds(polys)
    epsg = utm_epsg_for(shapely.get_x(points), shapely.get_y(points))
    for code in np.unique(epsg):
        sel = np.flatnonzero(epsg == code)
        fwd, back = transformer("EPSG:4326", int(code)), transformer(int(code), "EPSG:4326")
        cm = -183.0 + 6.0 * (int(code) % 100)
        # transverse Mercator is only usable within a few tens of degrees of its meridian: polygons
        # farther than 40° of longitude (> ~4,000 km) are never the nearest within any useful radius
        near = np.flatnonzero((pb[:, 2] > cm - 40.0) & (pb[:, 0] < cm + 40.0))
        if len(near) == 0:
            continue

        def to_utm(g: np.ndarray, fwd=fwd) -> np.ndarray:
            return shapely.transform(g, lambda c: np.column_stack(fwd.transform(c[:, 0], c[:, 1])))

        pts, pol = to_utm(points[sel]), to_utm(polys[near])
        (qi, pj) = shapely.STRtree(pol).query_nearest(pts, all_matches=False)
        line = shapely.shortest_line(pts[qi], pol[pj])
        ends = shapely.get_coordinates(line).reshape(-1, 2, 2)
        lon, lat = back.transform(ends[:, :, 0].ravel(), ends[:, :, 1].ravel())
        lon, lat = np.asarray(lon).reshape(-1, 2), np.asarray(lat).reshape(-1, 2)
        _, _, d = _GEOD.inv(lon[:, 0], lat[:, 0], lon[:, 1], lat[:, 1])
        inside = shapely.intersects(pts[qi], pol[pj])
        dist[sel[qi]] = np.where(inside, 0.0, np.asarray(d))
        idx[sel[qi]] = polygons_ok[near[pj]]
    return dist, idx


def airstrip_distances(airstrips: gpd.GeoDataFrame, mining: gpd.GeoDataFrame, within_km: float) -> gpd.GeoDataFrame:
    """Airstrips with ``mining_distance_m`` (geodesic), ``mining_within`` (≤ ``within_km``) and the
    ``nearest_period`` of the nearest polygon (when the layer has periods)."""
    if not within_km > 0:
        raise MinewatchError("--within-km", f"must be > 0, got {within_km}")
    out = airstrips.to_crs(4326).copy()
    d, i = nearest_mining(out.geometry.to_numpy(), mining.to_crs(4326).geometry.to_numpy())
    out["mining_distance_m"] = d
    out["mining_within"] = d <= within_km * 1000.0
    if "period" in mining.columns:
        per = mining["period"].astype(str).to_numpy()
        out["nearest_period"] = np.where(i >= 0, per[np.maximum(i, 0)], None)
    return out


def truthy(values: pd.Series) -> np.ndarray:
    """A yes/no column as booleans (True/False, "TRUE"/"false", 1/0, yes/no, sim/não, sí/no)."""
    s = values.astype(str).str.strip().str.lower()
    yes = s.isin(["true", "1", "yes", "y", "sim", "sí", "si", "t"])
    no = s.isin(["false", "0", "no", "n", "não", "nao", "f", ""])
    if not (yes | no).all():
        raise MinewatchError("--compare-field", f"values not read as yes/no: {sorted(set(s[~(yes | no)]))[:5]}")
    return yes.to_numpy()


def agreement(flags: np.ndarray, truth: np.ndarray) -> dict[str, float | int]:
    """Share of matching flags and the confusion counts (``truth`` is the reference column)."""
    flags, truth = np.asarray(flags, bool), np.asarray(truth, bool)
    return {
        "n": int(len(flags)),
        "agree": int((flags == truth).sum()),
        "agree_share": float((flags == truth).mean()) if len(flags) else float("nan"),
        "both_true": int((flags & truth).sum()),
        "both_false": int((~flags & ~truth).sum()),
        "ours_only": int((flags & ~truth).sum()),
        "reference_only": int((~flags & truth).sum()),
    }
