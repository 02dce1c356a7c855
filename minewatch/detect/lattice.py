"""The patch lattice of one tile: ownership, valid fractions, footprints. Pure numpy/shapely, no I/O.

A tile of ``T`` px owns the lattice patches whose top-left pixel lies inside it: offsets
``0, s, 2s, … < T`` along each axis (``s`` = step, 24 px). The last of them reaches ``p - s`` px
beyond the tile edge (``p`` = patch, 48 px), so a tile is read with that halo on its right and
bottom; since ``T`` is a multiple of ``s`` the lattice continues unbroken into the next tile and
every patch of the region is scored exactly once.
"""

from __future__ import annotations

import numpy as np
import shapely

from minewatch.grid import Tile, _transformer


def halo_px(patch_px: int, step_px: int) -> int:
    """Pixels to read beyond a tile's right/bottom edge to score every patch it owns."""
    return patch_px - step_px


def owned_cells(tile_px: int, step_px: int) -> int:
    """Lattice positions per axis owned by a tile."""
    if tile_px % step_px:
        raise ValueError(f"tile size {tile_px} px is not a multiple of the patch step {step_px} px")
    return tile_px // step_px


def valid_fraction(valid: np.ndarray, patch_px: int, step_px: int, cells: int) -> np.ndarray:
    """Fraction of valid pixels in each lattice patch, ``cells × cells`` (float64).

    One summed-area table over the window (O(H·W)) instead of a sum per patch; patches running
    past the array's edge count the missing pixels as not valid.
    """
    need = (cells - 1) * step_px + patch_px
    dtype = np.int32 if need * need < 2**31 else np.int64
    v = np.zeros((need, need), dtype=dtype)
    h, w = min(need, valid.shape[0]), min(need, valid.shape[1])
    v[:h, :w] = valid[:h, :w]
    sat = np.zeros((need + 1, need + 1), dtype=dtype)
    np.cumsum(v, axis=0, out=v)
    np.cumsum(v, axis=1, out=sat[1:, 1:])
    o = np.arange(cells) * step_px
    r0, c0 = o[:, None], o[None, :]
    r1, c1 = r0 + patch_px, c0 + patch_px
    total = sat[r1, c1] - sat[r0, c1] - sat[r1, c0] + sat[r0, c0]
    return total.astype(np.float64) / float(patch_px * patch_px)


def footprints_utm(tile: Tile, rows_px: np.ndarray, cols_px: np.ndarray, patch_px: int) -> np.ndarray:
    """Patch squares (shapely polygons) in the tile's UTM CRS from top-left pixel offsets."""
    left, _, _, top = tile.bounds
    r = tile.resolution
    x0 = left + np.asarray(cols_px, dtype=np.float64) * r
    y1 = top - np.asarray(rows_px, dtype=np.float64) * r
    return shapely.box(x0, y1 - patch_px * r, x0 + patch_px * r, y1)


def footprints_wgs84(tile: Tile, rows_px: np.ndarray, cols_px: np.ndarray, patch_px: int) -> np.ndarray:
    """Patch footprints in WGS84 lon/lat: the four projected corners (a 480 m edge bends < 1 mm)."""
    n = len(rows_px)
    if n == 0:
        return np.empty(0, dtype=object)
    left, _, _, top = tile.bounds
    r = tile.resolution
    x0 = left + np.asarray(cols_px, dtype=np.float64) * r
    y1 = top - np.asarray(rows_px, dtype=np.float64) * r
    x1, y0 = x0 + patch_px * r, y1 - patch_px * r
    # ring: (x0,y0) (x1,y0) (x1,y1) (x0,y1) (x0,y0): counter-clockwise, as GeoJSON (RFC 7946) asks
    xs = np.stack([x0, x1, x1, x0, x0], axis=1)
    ys = np.stack([y0, y0, y1, y1, y0], axis=1)
    lon, lat = _transformer(tile.epsg, 4326).transform(xs.ravel(), ys.ravel())
    coords = np.stack([np.asarray(lon).reshape(n, 5), np.asarray(lat).reshape(n, 5)], axis=-1)
    return shapely.polygons(coords)


def _dlon(lon: np.ndarray, zone: int) -> np.ndarray:
    """Longitude relative to the zone's central meridian, in (-180, 180] (continuous across ±180)."""
    cm = -183.0 + 6.0 * zone
    return (np.asarray(lon) - cm + 180.0) % 360.0 - 180.0


def zone_owned(tile: Tile, patch_px: int, step_px: int, cells: int) -> np.ndarray | None:
    """Which of the tile's lattice patches its UTM zone owns (``cells × cells`` bool), None for all.

    Why: tiles are squares of a zone's own lattice, so a tile at a zone seam reaches past the
    zone's strip into the next zone, whose tiles cover the same ground on their own lattice; scoring
    both counted the seam twice. Each patch stands for its *central cell* (the ``step × step``
    square at its centre: the central cells of a lattice tile the plane, one per patch). A location
    belongs to the zone whose strip holds its longitude, and within that zone to the patch whose
    central cell holds it; a patch is owned (scored) exactly when its central cell reaches into the
    zone's strip. So every location is owned by one patch of one tile of one zone, and a seam
    costs only the one column of cells the seam cuts, not a tile's width.

    Cells are tested by their four corners (a cell's longitude range lies between its corners' to
    well under a millimetre for 240 m cells). Only tiles whose window crosses a seam compute
    anything; every other tile returns None at the cost of one 4-point projection.
    """
    left, _, _, top = tile.bounds
    res = tile.resolution
    lo = (patch_px - step_px) / 2.0  # central cell of patch k spans [k*s + lo, k*s + lo + s) px
    span = (cells * step_px) * res
    x0, y0 = left + lo * res, top - lo * res
    tr = _transformer(tile.epsg, 4326)
    cx = np.array([x0, x0 + span, x0, x0 + span])
    cy = np.array([y0, y0, y0 - span, y0 - span])
    d = _dlon(tr.transform(cx, cy)[0], tile.zone)
    if d.max() < 3.0 and d.min() > -3.0:
        return None
    k = np.arange(cells + 1, dtype=np.float64) * step_px * res
    gx, gy = np.meshgrid(x0 + k, y0 - k)  # corner (row i, col j) at gy[i, j], gx[i, j]
    lon = _dlon(np.asarray(tr.transform(gx.ravel(), gy.ravel())[0]).reshape(gx.shape), tile.zone)
    corners = np.stack([lon[:-1, :-1], lon[:-1, 1:], lon[1:, :-1], lon[1:, 1:]])
    return (corners.min(axis=0) < 3.0) & (corners.max(axis=0) > -3.0)


def owns_any(tile: Tile, patch_px: int, step_px: int) -> bool:
    """Whether the tile owns at least one lattice patch of its zone (see :func:`zone_owned`)."""
    owned = zone_owned(tile, patch_px, step_px, owned_cells(tile.tile_px, step_px))
    return owned is None or bool(owned.any())
