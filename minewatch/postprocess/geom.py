"""Geometry helpers shared by post-processing, timelines and impacts: areas, metric coordinates, repair.

Two metric frames are used, each for what it is exact at:

* **Areas** in :data:`EQUAL_AREA_CRS` (EPSG:6933, WGS 84 / NSIDC EASE-Grid 2.0 Global, a Lambert
  cylindrical equal-area projection on the WGS84 ellipsoid). It is equal-area everywhere minewatch runs
  (the tropics and beyond), so hectares from different countries, UTM zones and layers add up without
  choosing a regional projection; the only residual error is that polygon edges are straight in the
  projection rather than geodesics, which is negligible at patch scale (< 1e-6 relative for 480 m).
  It is the same constant the web map uses, so both report identical hectares.
* **Distances** in geocentric (ECEF, EPSG:4978) coordinates for point sets (the chord between two points
  on the ellipsoid differs from the geodesic by d²/(24R²): 1e-8 relative at 3 km), and in the local UTM
  zone for point-to-polygon distances, refined geodesically (:mod:`minewatch.impacts.airstrips`).
  Neither has seams at UTM zone boundaries the way one-zone-per-tile coordinates would.
"""

from __future__ import annotations

from functools import lru_cache

import geopandas as gpd
import numpy as np
import shapely
from pyproj import Transformer

EQUAL_AREA_CRS = "EPSG:6933"
"""CRS in which every area in this package is measured (see the module docstring for why)."""

M2_PER_HA = 10_000.0


@lru_cache(maxsize=64)
def transformer(src: str | int, dst: str | int) -> Transformer:
    """Cached ``always_xy`` transformer (building one costs ~ms; layers call this per UTM zone)."""
    return Transformer.from_crs(src, dst, always_xy=True)


def utm_epsg_for(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """EPSG code of the UTM zone of each (lon, lat) in degrees (326xx north, 327xx south)."""
    lon = ((np.asarray(lon, dtype=float) + 180.0) % 360.0) - 180.0
    zone = np.minimum(((lon + 180.0) // 6.0).astype(int) + 1, 60)
    return np.where(np.asarray(lat) < 0, 32700, 32600) + zone


def polygonal(geoms: np.ndarray) -> np.ndarray:
    """Repair geometries with ``make_valid`` and keep only their polygonal parts.

    Why: a bow-tie or a self-touching ring repaired by GEOS may come back as a GeometryCollection with
    stray lines or points; areas and intersections only make sense on the polygon parts. Missing
    geometries become empty polygons so array positions are preserved.
    """
    g = np.asarray(geoms, dtype=object).copy()
    missing = shapely.is_missing(g)
    g[missing] = shapely.Polygon()
    invalid = ~shapely.is_valid(g)
    if invalid.any():
        g[invalid] = shapely.make_valid(g[invalid], method="structure", keep_collapsed=False)  # overlaps → union, not XOR
    mixed = np.flatnonzero(shapely.get_type_id(g) == 7)  # GeometryCollection
    for i in mixed:  # rare: only repaired geometries
        parts = [p for p in shapely.get_parts(g[i]) if shapely.get_type_id(p) in (3, 6)]
        g[i] = shapely.union_all(parts) if parts else shapely.Polygon()
    nonpoly = ~np.isin(shapely.get_type_id(g), (3, 6))
    g[nonpoly] = shapely.Polygon()
    return g


def to_equal_area(geoms: gpd.GeoSeries | np.ndarray, crs: object = "EPSG:4326") -> np.ndarray:
    """Geometries (WGS84 by default) projected to :data:`EQUAL_AREA_CRS`, as a shapely array."""
    if isinstance(geoms, gpd.GeoSeries):
        return np.asarray(geoms.to_crs(EQUAL_AREA_CRS).values, dtype=object)
    tr = transformer(str(crs), EQUAL_AREA_CRS)
    return shapely.transform(np.asarray(geoms, dtype=object), lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def area_ha(geoms: gpd.GeoSeries | np.ndarray, crs: object = "EPSG:4326") -> np.ndarray:
    """Area in hectares of geometries given in ``crs`` (WGS84 by default), measured equal-area."""
    if len(geoms) == 0:
        return np.zeros(0)
    return shapely.area(to_equal_area(geoms, crs)) / M2_PER_HA


def ecef(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Geocentric (x, y, z) metres of WGS84 lon/lat degrees on the ellipsoid: an N×3 array.

    Euclidean distance here is the chord, equal to the geodesic within 1e-8 relative at a few km,
    with no projection seams: the right frame for k-nearest-neighbour queries over a continent.
    """
    tr = transformer("EPSG:4326", "EPSG:4978")
    x, y, z = tr.transform(np.asarray(lon, float), np.asarray(lat, float), np.zeros(len(lon)))
    return np.column_stack([x, y, z])
