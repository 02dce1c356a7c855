"""The global tiling grid and the patch lattice: pure geometry, no I/O.

Why a global grid: reruns, neighbouring runs and different periods must share pixel boundaries so
that composites, patch scores and polygons line up exactly. Every tile lives in the UTM zone of its
centre, on a lattice anchored at easting 0 and at the equator, in metres:

* tile ``(zone, ix, iy)`` spans eastings ``[ix*S, (ix+1)*S)`` and northings ``[iy*S, (iy+1)*S)``
  measured from the equator (``iy < 0`` south of it); ``S`` = ``tile_px * resolution``.
* tiles with a southern centre use the southern EPSG code (``327xx``, false northing 10 000 km); the
  lattice is the same one, shifted by the false northing, so tiles on both sides of the equator
  still abut.
* ``tile_px`` is a multiple of the patch step (24 px), so the half-patch lattice of 48 px patches
  continues unbroken from one tile to the next.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import shapely
from pyproj import CRS, Transformer
from rasterio.transform import Affine
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry
from shapely.ops import transform as shp_transform

FALSE_NORTHING_SOUTH = 10_000_000.0
DEFAULT_RESOLUTION = 10.0
DEFAULT_TILE_PX = 1008  # 10.08 km at 10 m: 42 half-patch steps of 24 px
PATCH_PX = 48
STEP_PX = 24


def tile_px_for_step(preferred: int, step_px: int) -> int:
    """The multiple of a model's patch step nearest to ``preferred`` (ties go up), at least one step.

    Why: tiles must hold a whole number of steps so patch lattices continue across tiles; a model
    with another step than 24 px (the 2021 RGB model: 22 px) cannot use the default 1008 px.
    """
    if step_px <= 0:
        raise ValueError(f"step must be positive, got {step_px}")
    return max(step_px, int((preferred + step_px / 2) // step_px) * step_px)


def utm_zone(lon: float) -> int:
    """UTM zone number (1-60) of a longitude in degrees (no Norway/Svalbard exceptions)."""
    lon = ((lon + 180.0) % 360.0) - 180.0
    return min(int((lon + 180.0) // 6.0) + 1, 60)


def utm_epsg(zone: int, south: bool) -> int:
    return (32700 if south else 32600) + zone


@dataclass(frozen=True, order=True)
class Tile:
    """One unit of work: a square on the global lattice in one UTM zone."""

    zone: int
    """UTM zone number, 1-60."""
    ix: int
    """Column on the lattice: easting of the west edge = ``ix * size_m``."""
    iy: int
    """Row on the lattice: northing (from the equator) of the south edge = ``iy * size_m``."""
    tile_px: int = DEFAULT_TILE_PX
    """Tile width and height in pixels."""
    resolution: float = DEFAULT_RESOLUTION
    """Pixel size in metres."""

    @property
    def size_m(self) -> float:
        return self.tile_px * self.resolution

    @property
    def south(self) -> bool:
        """Southern hemisphere tile (centre south of the equator)."""
        return (self.iy + 0.5) < 0

    @property
    def epsg(self) -> int:
        return utm_epsg(self.zone, self.south)

    @property
    def crs(self) -> CRS:
        return CRS.from_epsg(self.epsg)

    @property
    def id(self) -> str:
        """Stable, filename-safe identifier, e.g. ``21S_x0034_y-0101``."""
        return f"{self.zone:02d}{'S' if self.south else 'N'}_x{self.ix:04d}_y{self.iy:+05d}"

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the tile's own CRS (metres)."""
        off = FALSE_NORTHING_SOUTH if self.south else 0.0
        s = self.size_m
        return (self.ix * s, self.iy * s + off, (self.ix + 1) * s, (self.iy + 1) * s + off)

    @property
    def transform(self) -> Affine:
        left, _, _, top = self.bounds
        return Affine(self.resolution, 0.0, left, 0.0, -self.resolution, top)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.tile_px, self.tile_px)

    def geometry(self) -> BaseGeometry:
        """The tile square in its own CRS."""
        return box(*self.bounds)

    def geometry_wgs84(self, densify: int = 8) -> BaseGeometry:
        """The tile outline in WGS84 (edges densified so the projected outline stays accurate).

        Longitudes are kept continuous around the zone's central meridian, so a tile that straddles
        the antimeridian comes out with longitudes beyond ±180 instead of a polygon wrapped around
        the globe (use :func:`wrap_antimeridian` to split it for GeoJSON).
        """
        g = shapely.segmentize(self.geometry(), self.size_m / densify)
        g = shp_transform(_transformer(self.epsg, 4326).transform, g)
        cm = -183.0 + 6.0 * self.zone
        return shapely.transform(g, lambda xy: np.column_stack([cm + (xy[:, 0] - cm + 180.0) % 360.0 - 180.0, xy[:, 1]]))

    @classmethod
    def from_id(cls, tile_id: str, tile_px: int = DEFAULT_TILE_PX, resolution: float = DEFAULT_RESOLUTION) -> Tile:
        zone_part, x_part, y_part = tile_id.split("_")
        return cls(int(zone_part[:-1]), int(x_part[1:]), int(y_part[1:]), tile_px, resolution)


def _transformer(src: int, dst: int) -> Transformer:
    return _TRANSFORMERS.setdefault((src, dst), Transformer.from_crs(src, dst, always_xy=True))


_TRANSFORMERS: dict[tuple[int, int], Transformer] = {}


def zone_strip(zone: int) -> BaseGeometry:
    """The zone's longitude strip in WGS84 (the part of the world a zone's tiles own)."""
    west = -180.0 + (zone - 1) * 6.0
    return box(west, -84.0, west + 6.0, 84.0)


def _zone_range(minx: float, maxx: float) -> range:
    """Zones whose strips a lon range [minx, maxx] (within ±180) touches; lon 180 is zone 60's east edge."""
    if maxx - minx >= 360:
        return range(1, 61)
    last = 60 if maxx >= 180.0 else utm_zone(maxx)
    return range(utm_zone(minx), last + 1)


def _unwrap_ring(coords: np.ndarray) -> np.ndarray:
    """Make a ring's longitudes continuous: a step of more than 180° is read as crossing ±180."""
    lon = coords[:, 0].copy()
    jumps = np.diff(lon)
    shift = np.concatenate([[0.0], np.cumsum(-360.0 * np.round(jumps / 360.0) * (np.abs(jumps) > 180.0))])
    return np.column_stack([lon + shift, coords[:, 1:]])


def wrap_antimeridian(geom: BaseGeometry) -> BaseGeometry:
    """Normalise a lon/lat polygonal geometry to longitudes within ±180, split at the antimeridian.

    Accepts both ways an antimeridian-crossing ROI is written in practice: continuous longitudes
    beyond ±180 (e.g. 175 to 185), and rings whose consecutive vertices jump by more than 180° (e.g.
    175 then -175, read as the short way across ±180). Parts already split at ±180 are unchanged.
    Geometries within ±180 with no such jump come back as they are.
    """
    if geom.is_empty:
        return geom
    polys = list(getattr(geom, "geoms", [geom]))
    fixed = []
    changed = False
    for poly in polys:
        if poly.geom_type != "Polygon":
            fixed.append(poly)
            continue
        shell = np.asarray(poly.exterior.coords)
        ushell = _unwrap_ring(shell)
        holes = []
        for ring in poly.interiors:
            h = _unwrap_ring(np.asarray(ring.coords))
            h[:, 0] += 360.0 * np.round((ushell[:, 0].mean() - h[:, 0].mean()) / 360.0)
            holes.append(h)
        changed |= not np.array_equal(ushell, shell) or any(
            not np.array_equal(h, np.asarray(r.coords)) for h, r in zip(holes, poly.interiors, strict=True)
        )
        fixed.append(shapely.Polygon(ushell, holes))
    minx = min(p.bounds[0] for p in fixed)
    maxx = max(p.bounds[2] for p in fixed)
    if not changed and minx >= -180.0 and maxx <= 180.0:
        return geom
    whole = shapely.union_all([shapely.make_valid(p) for p in fixed])
    parts = []
    for k in range(math.floor((minx + 180.0) / 360.0), math.floor((maxx + 180.0) / 360.0) + 1):
        # clip_by_rect, not intersection: GEOS overlay mis-clips near-degenerate input (seen with
        # subnormal coordinates in the property tests); the rectangle clipper does not.
        piece = shapely.clip_by_rect(whole, -180.0 + 360.0 * k, -90.0, 180.0 + 360.0 * k, 90.0)
        if not piece.is_valid:
            piece = shapely.make_valid(piece)
        if not piece.is_empty:
            parts.append(shapely.affinity.translate(piece, -360.0 * k, 0.0))
    polys_out = [g for p in parts for g in getattr(p, "geoms", [p]) if g.geom_type == "Polygon" and g.area > 0]
    return polys_out[0] if len(polys_out) == 1 else shapely.MultiPolygon(polys_out)


def tiles_for_geometry(
    roi_wgs84: BaseGeometry,
    tile_px: int = DEFAULT_TILE_PX,
    resolution: float = DEFAULT_RESOLUTION,
) -> list[Tile]:
    """All tiles of the global grid that intersect ``roi_wgs84`` (lon/lat degrees).

    The ROI is split by UTM zone strips; each part is projected to its zone (northern projection,
    negative northings south of the equator, which keeps one lattice across the equator) and every
    lattice square that intersects it becomes a tile. Sorted, no duplicates.
    """
    if tile_px % STEP_PX:
        raise ValueError(f"tile_px must be a multiple of the patch step ({STEP_PX} px), got {tile_px}")
    size = tile_px * resolution
    minx, _, maxx, _ = roi_wgs84.bounds
    if minx < -180.0 or maxx > 180.0:
        roi_wgs84 = wrap_antimeridian(roi_wgs84)
        minx, _, maxx, _ = roi_wgs84.bounds
    tiles: set[Tile] = set()
    for zone in _zone_range(minx, maxx):
        part = roi_wgs84.intersection(zone_strip(zone))
        if part.is_empty:
            continue
        proj = shp_transform(_transformer(4326, utm_epsg(zone, False)).transform, shapely.segmentize(part, 0.05))
        x0, y0, x1, y1 = proj.bounds
        ixs = np.arange(math.floor(x0 / size), math.floor(x1 / size) + 1)
        iys = np.arange(math.floor(y0 / size), math.floor(y1 / size) + 1)
        gx, gy = np.meshgrid(ixs, iys)
        squares = shapely.box(gx * size, gy * size, (gx + 1) * size, (gy + 1) * size).ravel()
        shapely.prepare(proj)
        hit = shapely.intersects(proj, squares) & ~shapely.touches(proj, squares)
        for ix, iy in zip(gx.ravel()[hit], gy.ravel()[hit], strict=True):
            tiles.add(Tile(zone, int(ix), int(iy), tile_px, resolution))
    return sorted(tiles)


def patch_offsets(size_px: int, patch_px: int = PATCH_PX, step_px: int = STEP_PX) -> np.ndarray:
    """Top-left pixel offsets (along one axis) of all patches that fit inside ``size_px``."""
    if size_px < patch_px:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, size_px - patch_px + 1, step_px, dtype=np.int64)


HALO_PX = PATCH_PX - STEP_PX
"""Extra pixels a tile must read beyond its right and bottom edges to score the patches it owns."""


def owned_patch_offsets(tile_px: int = DEFAULT_TILE_PX, step_px: int = STEP_PX) -> np.ndarray:
    """Offsets (along one axis) of the lattice patches a tile *owns*: those whose top-left pixel is inside it.

    ``patch_offsets(tile_px)`` stops at the last patch that fits inside the tile, which leaves the
    patch straddling each tile boundary to nobody; owning by top-left pixel gives every patch of
    the continuous lattice exactly one tile, at the cost of reading ``HALO_PX`` beyond the edge.
    """
    return np.arange(0, tile_px, step_px, dtype=np.int64)


def iter_patch_windows(
    shape: tuple[int, int], patch_px: int = PATCH_PX, step_px: int = STEP_PX
) -> Iterator[tuple[int, int]]:
    """(row, col) top-left offsets of every patch of the half-patch lattice in a raster of ``shape``."""
    for r in patch_offsets(shape[0], patch_px, step_px):
        for c in patch_offsets(shape[1], patch_px, step_px):
            yield int(r), int(c)
