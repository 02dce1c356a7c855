"""Read and check a region of interest (ROI) before any work is planned on it.

Why here and strictly: a wrong ROI is the most common way to waste a continental run or, worse, to
get a plausible-looking but wrong result (projected coordinates read as degrees, a polygon that
wraps the wrong way round the globe, points instead of an area). Every check ends in a
:class:`~minewatch.errors.MinewatchError` that names the file and the problem on one line.

What an ROI is after :func:`read_roi`: a polygonal shapely geometry in WGS84 lon/lat, longitudes
within ±180 (antimeridian-crossing areas split into parts on either side), latitudes within the
UTM grid (±84°). Accepted inputs:

* GeoJSON (``.geojson``/``.json``): a FeatureCollection, Feature, Polygon, MultiPolygon or a
  GeometryCollection of those. RFC 7946 says GeoJSON is WGS84; a legacy ``crs`` member is honoured
  only if it names a geographic CRS (CRS84, EPSG:4326, or another lon/lat datum, transformed to
  WGS84); a projected one is refused, as are coordinates outside lon/lat range.
* Antimeridian crossings written either with longitudes beyond ±180 (170 … 190), with a jump of
  more than 180° between consecutive vertices (170 … -170), or already split: all normalised.
* Any other vector file GDAL reads (GeoPackage, Shapefile, …) that declares its CRS; it is
  reprojected to WGS84. A file with no CRS is refused (its numbers could be anything).

Areas for the tile-budget estimate use EPSG:6933 (WGS 84 / NSIDC EASE-Grid 2.0 Global, equal-area,
defined worldwide), because an ROI may lie anywhere, not only in South America.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from minewatch.errors import MinewatchError
from minewatch.grid import (
    DEFAULT_RESOLUTION,
    DEFAULT_TILE_PX,
    Tile,
    _transformer,
    _zone_range,
    tiles_for_geometry,
    utm_epsg,
    wrap_antimeridian,
    zone_strip,
)

EQUAL_AREA_EPSG = 6933
MAX_LAT = 84.0
"""The global tiling uses UTM zone strips, defined to 84°N/S (Sentinel-2 covers 56°S–84°N)."""
GEOJSON_SUFFIXES = {".geojson", ".json"}
_POLYGONAL = {"Polygon", "MultiPolygon"}
_WGS84_NAMES = {
    "urn:ogc:def:crs:ogc:1.3:crs84",
    "urn:ogc:def:crs:ogc::crs84",
    "crs84",
    "ogc:crs84",
    "epsg:4326",
    "urn:ogc:def:crs:epsg::4326",
    "urn:ogc:def:crs:epsg:6.6:4326",
    "http://www.opengis.net/def/crs/ogc/1.3/crs84",
    "http://www.opengis.net/def/crs/epsg/0/4326",
}
EXACT_COUNT_LIMIT = 2_000_000
"""Above this many candidate lattice squares the tile count is estimated from the area instead."""


@dataclass(frozen=True)
class Roi:
    """A checked region of interest: polygonal, WGS84 lon/lat within ±180, inside the UTM grid."""

    geometry: BaseGeometry
    source: str
    """The file (or option) it came from: named in every later error about it."""
    repaired: bool = False
    """True when self-intersections were repaired with ``shapely.make_valid``."""

    def zones(self) -> dict[int, BaseGeometry]:
        """The ROI split by UTM zone strip: zone number → the part inside it (lon/lat)."""
        minx, _, maxx, _ = self.geometry.bounds
        out = {}
        for z in _zone_range(minx, maxx):
            part = self.geometry.intersection(zone_strip(z))
            if not part.is_empty and part.area > 0:
                out[z] = part
        return out

    def tiles(
        self, tile_px: int = DEFAULT_TILE_PX, resolution: float = DEFAULT_RESOLUTION, max_tiles: int | None = None
    ) -> list[Tile]:
        """Tiles of the global grid covering the ROI, refused beyond ``max_tiles`` (see :func:`plan_tiles`)."""
        return plan_tiles(self.geometry, tile_px, resolution, max_tiles, where=self.source)


# --------------------------------------------------------------------------------------------------
# Pure checks on GeoJSON objects
# --------------------------------------------------------------------------------------------------


def _check_crs_member(obj: dict[str, Any], where: str) -> Any:
    """The pyproj CRS a legacy ``crs`` member declares, or None for WGS84/absent; projected → error."""
    crs = obj.get("crs")
    if crs is None:
        return None
    name = None
    if isinstance(crs, dict):
        props = crs.get("properties") or {}
        name = props.get("name") or props.get("href") or props.get("code")
        if crs.get("type") == "EPSG" and props.get("code") is not None:
            name = f"EPSG:{props['code']}"
    elif isinstance(crs, str):
        name = crs
    if not name:
        raise MinewatchError(where, f"unreadable 'crs' member {json.dumps(crs)[:80]}; GeoJSON ROIs must be WGS84 lon/lat (drop the member)")
    if str(name).strip().lower() in _WGS84_NAMES:
        return None
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        parsed = CRS.from_user_input(str(name).replace("urn:ogc:def:crs:OGC:1.3:", "OGC:"))
    except CRSError:
        raise MinewatchError(where, f"unknown CRS {name!r} in the 'crs' member; GeoJSON ROIs must be WGS84 lon/lat") from None
    if parsed.is_projected:
        raise MinewatchError(where, f"declares projected CRS {name!r} ({parsed.name}); GeoJSON ROIs must be WGS84 lon/lat — reproject it, e.g. ogr2ogr -t_srs EPSG:4326 out.geojson in.geojson")
    if not parsed.is_geographic:
        raise MinewatchError(where, f"CRS {name!r} ({parsed.name}) is not a lon/lat CRS; GeoJSON ROIs must be WGS84 lon/lat")
    return None if parsed.equals(CRS.from_epsg(4326), ignore_axis_order=True) else parsed


def _iter_geometries(obj: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, geometry dict) for every geometry in a GeoJSON object; labels name features for errors."""
    if not isinstance(obj, dict) or "type" not in obj:
        raise MinewatchError(where, "not a GeoJSON object (no 'type' member)")
    t = obj["type"]
    if t == "FeatureCollection":
        feats = obj.get("features")
        if not isinstance(feats, list):
            raise MinewatchError(where, "FeatureCollection without a 'features' list")
        for i, f in enumerate(feats):
            if not isinstance(f, dict) or f.get("type") != "Feature":
                raise MinewatchError(where, f"features[{i}] is not a GeoJSON Feature")
            if f.get("geometry") is not None:
                yield f"feature {i}", f["geometry"]
    elif t == "Feature":
        if obj.get("geometry") is not None:
            yield "the feature", obj["geometry"]
    elif t == "GeometryCollection":
        for i, g in enumerate(obj.get("geometries") or []):
            for label, sub in _iter_geometries(g, where):
                yield f"geometries[{i}]" if label == "the geometry" else label, sub
    elif t in ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"):
        yield "the geometry", obj
    else:
        raise MinewatchError(where, f"unknown GeoJSON type {t!r}")


def _flat_coords(coords: Any) -> Iterator[tuple[float, float]]:
    if not isinstance(coords, (list, tuple)):
        raise ValueError(f"expected nested arrays of numbers, found {json.dumps(coords)[:40]}")
    if coords and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in coords):
        if len(coords) < 2:
            raise ValueError("a position needs at least two numbers")
        yield float(coords[0]), float(coords[1])
        return
    for c in coords:
        yield from _flat_coords(c)


def _check_lonlat_range(pts: list[tuple[float, float]], where: str, label: str) -> None:
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if not all(map(math.isfinite, xs + ys)):
        raise MinewatchError(where, f"{label} has non-finite coordinates (NaN or infinity)")
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if y0 < -90 or y1 > 90 or x0 < -360 or x1 > 360 or x1 - x0 > 360:
        raise MinewatchError(where, f"coordinates out of lon/lat range (x {x0:.6g} to {x1:.6g}, y {y0:.6g} to {y1:.6g}): these look like projected coordinates with no CRS; GeoJSON ROIs must be WGS84 lon/lat degrees")


def geometry_from_geojson(obj: Any, where: str) -> tuple[BaseGeometry, bool]:
    """The polygonal union of a GeoJSON object in WGS84, and whether it needed repair.

    Raises :class:`MinewatchError` naming ``where`` for every way the object can be unusable.
    """
    if not isinstance(obj, dict):
        raise MinewatchError(where, f"not a GeoJSON object (top level is a JSON {type(obj).__name__})")
    crs = _check_crs_member(obj, where)
    geoms: list[BaseGeometry] = []
    repaired = False
    for label, g in _iter_geometries(obj, where):
        gtype = g.get("type") if isinstance(g, dict) else None
        if gtype == "GeometryCollection":
            sub, rep = geometry_from_geojson({"type": "GeometryCollection", "geometries": g.get("geometries")}, where)
            geoms.append(sub)
            repaired |= rep
            continue
        if gtype not in _POLYGONAL:
            raise MinewatchError(where, f"{label} is a {gtype}, not a Polygon or MultiPolygon: an ROI must be an area")
        try:
            pts = list(_flat_coords(g.get("coordinates")))
        except (TypeError, ValueError) as e:
            raise MinewatchError(where, f"{label} has malformed coordinates ({e})") from None
        if not pts:
            continue
        _check_lonlat_range(pts, where, label)
        try:
            geom = shape(g)
        except (ValueError, TypeError, AttributeError, IndexError, shapely.errors.GEOSException) as e:
            raise MinewatchError(where, f"{label} is not a valid polygon ({e})") from None
        if crs is not None:
            from shapely.ops import transform

            from pyproj import Transformer

            geom = transform(Transformer.from_crs(crs, 4326, always_xy=True).transform, geom)
        geom = wrap_antimeridian(geom)
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
            geom = shapely.union_all([p for p in getattr(geom, "geoms", [geom]) if p.geom_type in _POLYGONAL])
            repaired = True
        geoms.append(geom)
    if not geoms:
        raise MinewatchError(where, "contains no geometry (empty FeatureCollection or null geometries)")
    return shapely.union_all(geoms), repaired


def check_roi_geometry(geom: BaseGeometry, where: str) -> BaseGeometry:
    """Final checks on a WGS84 ROI geometry: non-empty area, inside the UTM grid latitudes."""
    if geom.is_empty or geom.area <= 0 or geom.geom_type not in _POLYGONAL:
        raise MinewatchError(where, "ROI has zero area (degenerate or empty polygons)")
    _, y0, _, y1 = geom.bounds
    if y0 < -MAX_LAT or y1 > MAX_LAT:
        raise MinewatchError(where, f"ROI reaches latitude {y0 if y0 < -MAX_LAT else y1:.2f}°, beyond the ±{MAX_LAT:.0f}° the UTM tiling covers")
    return geom


# --------------------------------------------------------------------------------------------------
# I/O edge
# --------------------------------------------------------------------------------------------------


def read_roi(path: str | os.PathLike[str]) -> Roi:
    """Read, check and normalise an ROI file (see the module docstring for what is accepted)."""
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise MinewatchError(where, "ROI file not found")
    if path.is_dir():
        raise MinewatchError(where, "is a folder, expected an ROI file (GeoJSON, GeoPackage, Shapefile)")
    if path.suffix.lower() in GEOJSON_SUFFIXES:
        raw = path.read_bytes()
        if not raw.strip():
            raise MinewatchError(where, "file is empty")
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise MinewatchError(where, f"not valid JSON ({e})") from None
        geom, repaired = geometry_from_geojson(obj, where)
    else:
        geom, repaired = _read_other_vector(path)
    return Roi(check_roi_geometry(geom, where), where, repaired)


def _read_other_vector(path: Path) -> tuple[BaseGeometry, bool]:
    import geopandas as gpd

    where = str(path)
    try:
        gdf = gpd.read_file(path)
    except Exception as e:  # pyogrio/fiona raise their own types
        raise MinewatchError(where, f"not a readable vector file ({str(e).splitlines()[0][:160]})") from None
    if gdf.empty or gdf.geometry.isna().all():
        raise MinewatchError(where, "contains no geometry")
    if gdf.crs is None:
        raise MinewatchError(where, "has no CRS (for a Shapefile: the .prj is missing); its coordinates cannot be placed — define the CRS or convert it to GeoJSON in WGS84")
    types = set(gdf.geometry.dropna().geom_type)
    if not types <= _POLYGONAL:
        raise MinewatchError(where, f"contains {', '.join(sorted(types - _POLYGONAL))} geometries, not only polygons: an ROI must be an area")
    geom = shapely.union_all(gdf.to_crs(4326).geometry.dropna().values)
    geom = wrap_antimeridian(geom)
    repaired = not geom.is_valid
    if repaired:
        geom = shapely.make_valid(geom)
    return geom, repaired


def roi_from_bbox(text: str, where: str = "--bbox") -> Roi:
    """An ROI from ``"minlon,minlat,maxlon,maxlat"``; minlon > maxlon means crossing the antimeridian."""
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise MinewatchError(where, f"expected minlon,minlat,maxlon,maxlat, got {text!r}") from None
    if y0 >= y1:
        raise MinewatchError(where, f"minlat {y0} must be below maxlat {y1}")
    if x1 < x0:  # e.g. 170,-10,-170,-5: across the antimeridian
        x1 += 360.0
    pts = [(x0, y0), (x1, y1)]
    _check_lonlat_range(pts, where, "the box")
    return Roi(check_roi_geometry(wrap_antimeridian(box(x0, y0, x1, y1)), where), where)


# --------------------------------------------------------------------------------------------------
# Tile budget
# --------------------------------------------------------------------------------------------------


def estimate_tile_count(geom: BaseGeometry, tile_px: int = DEFAULT_TILE_PX, resolution: float = DEFAULT_RESOLUTION) -> int:
    """Lower-bound tile count from the ROI's equal-area size: cheap for any ROI, even a continent."""
    from shapely.ops import transform

    ea = transform(_transformer(4326, EQUAL_AREA_EPSG).transform, shapely.segmentize(geom, 0.1))
    return max(1, math.ceil(ea.area / (tile_px * resolution) ** 2))


def _candidate_squares(geom: BaseGeometry, size_m: float) -> int:
    """Upper bound on the lattice squares :func:`tiles_for_geometry` would test (its cost)."""
    from shapely.ops import transform

    minx, _, maxx, _ = geom.bounds
    n = 0
    for z in _zone_range(minx, maxx):
        part = geom.intersection(zone_strip(z))
        if part.is_empty:
            continue
        edge = shapely.segmentize(part.envelope, 0.5)
        x0, y0, x1, y1 = transform(_transformer(4326, utm_epsg(z, False)).transform, edge).bounds
        n += (math.floor(x1 / size_m) - math.floor(x0 / size_m) + 1) * (math.floor(y1 / size_m) - math.floor(y0 / size_m) + 1)
    return n


def plan_tiles(
    geom: BaseGeometry,
    tile_px: int = DEFAULT_TILE_PX,
    resolution: float = DEFAULT_RESOLUTION,
    max_tiles: int | None = None,
    where: str = "ROI",
) -> list[Tile]:
    """Tiles covering ``geom``; refuse with the number needed when it exceeds ``max_tiles``.

    The refusal happens before any work, so a mistyped ROI (a continent instead of a district)
    costs a second, not a night of downloads.
    """
    size = tile_px * resolution
    if max_tiles is not None:
        n = estimate_tile_count(geom, tile_px, resolution)
        if n > max_tiles and _candidate_squares(geom, size) > EXACT_COUNT_LIMIT:
            # Counting exactly would take minutes; the area bound already answers.
            raise MinewatchError(where, f"ROI needs at least {n:,} tiles of {size / 1000:g} km (from its area), more than --max-tiles {max_tiles}; split the ROI or raise --max-tiles")
    tiles = tiles_for_geometry(geom, tile_px, resolution)
    if max_tiles is not None and len(tiles) > max_tiles:
        raise MinewatchError(where, f"ROI needs {len(tiles):,} tiles of {size / 1000:g} km, more than --max-tiles {max_tiles}; split the ROI or raise --max-tiles")
    return tiles
