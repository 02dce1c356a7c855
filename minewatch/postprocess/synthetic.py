"""Patch-score files made from geometry, in the format ``minewatch detect`` writes.

Why: post-processing must be tested and benchmarked on realistic inputs before a detector has run
over a whole region. :func:`patches_on_tile` places hand-picked patches exactly on the global grid
(tests); :func:`patches_from_layer` turns a published mining layer into the patch scores a detector
would produce over it (every lattice patch touching a polygon, scored by how much of it is mined,
plus seeded noise) — the full 2018 layer gives a few hundred thousand patches (benchmarks).
"""

from __future__ import annotations

from collections.abc import Iterable

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from minewatch.grid import DEFAULT_RESOLUTION, DEFAULT_TILE_PX, PATCH_PX, STEP_PX, Tile
from minewatch.postprocess.geom import transformer, utm_epsg_for


def _to_wgs84(geoms: np.ndarray, epsg: int) -> np.ndarray:
    tr = transformer(int(epsg), "EPSG:4326")
    return shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def patch_boxes(tile: Tile, rows: np.ndarray, cols: np.ndarray, patch_px: int = PATCH_PX) -> np.ndarray:
    """Footprints (tile CRS, metres) of patches whose top-left pixel is (row, col) in ``tile``."""
    left, _, _, top = tile.bounds
    r = tile.resolution
    x0 = left + np.asarray(cols) * r
    y1 = top - np.asarray(rows) * r
    return shapely.box(x0, y1 - patch_px * r, x0 + patch_px * r, y1)


def patches_on_tile(tile: Tile, cells: Iterable[tuple[int, int, float]], period: str = "2024") -> gpd.GeoDataFrame:
    """A patch-score GeoDataFrame (WGS84) for ``(row, col, score)`` cells of one tile."""
    cells = list(cells)
    rows = np.array([c[0] for c in cells], dtype=int)
    cols = np.array([c[1] for c in cells], dtype=int)
    score = np.array([c[2] for c in cells], dtype=float)
    geoms = _to_wgs84(patch_boxes(tile, rows, cols), tile.epsg)
    return gpd.GeoDataFrame(
        {"tile": tile.id, "row": rows, "col": cols, "epsg": tile.epsg, "score": score,
         "valid_frac": 1.0, "period": period},
        geometry=geoms,
        crs=4326,
    )


def patches_from_layer(
    layer: gpd.GeoDataFrame,
    period: str = "2018",
    seed: int = 0,
    noise: float = 0.08,
    min_score: float = 0.3,
) -> gpd.GeoDataFrame:
    """Synthetic patch scores over a polygon layer, on the global 24 px lattice of each UTM zone.

    Every 480 m patch intersecting a polygon gets ``score = clip(0.3 + 0.7·f + N(0, noise))`` where
    ``f`` is the share of the patch covered by mining; patches under ``min_score`` are left out (as
    ``detect --min-score`` would). Vectorised per UTM zone: candidate patches from each polygon's
    envelope, then one bulk STRtree query and one vectorised intersection.
    """
    rng = np.random.default_rng(seed)
    geoms = layer.to_crs(4326).geometry.to_numpy()
    c = shapely.centroid(geoms)
    zones = utm_epsg_for(shapely.get_x(c), shapely.get_y(c))
    step = STEP_PX * DEFAULT_RESOLUTION
    size = PATCH_PX * DEFAULT_RESOLUTION
    tile_m = DEFAULT_TILE_PX * DEFAULT_RESOLUTION
    parts = []
    for epsg in np.unique(zones):
        tr = transformer("EPSG:4326", int(epsg))
        local = shapely.transform(geoms[zones == epsg], lambda xy, tr=tr: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        b = shapely.bounds(local)
        # lattice indices of patch top-left corners: easting e = i*step, northing top n = j*step
        i0 = np.floor((b[:, 0] - size) / step).astype(np.int64) + 1
        i1 = np.floor(b[:, 2] / step).astype(np.int64)
        j0 = np.ceil(b[:, 1] / step).astype(np.int64)
        j1 = np.ceil((b[:, 3] + size) / step).astype(np.int64) - 1
        ni, nj = i1 - i0 + 1, j1 - j0 + 1
        counts = ni * nj
        owner = np.repeat(np.arange(len(local)), counts)
        k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        ii = i0[owner] + k % ni[owner]
        jj = j0[owner] + k // ni[owner]
        key = np.unique(np.column_stack([ii, jj]), axis=0)
        ii, jj = key[:, 0], key[:, 1]
        boxes = shapely.box(ii * step, jj * step - size, ii * step + size, jj * step)
        bi, pj = shapely.STRtree(local).query(boxes, predicate="intersects")
        shapely.prepare(local)
        inner = shapely.contains_properly(local[pj], boxes[bi])  # interior patches need no overlay
        area = np.full(len(bi), size**2)
        area[~inner] = shapely.area(shapely.intersection(boxes[bi[~inner]], local[pj[~inner]]))
        covered = pd.Series(area).groupby(bi).sum()
        idx = covered.index.to_numpy()
        frac = np.clip(covered.to_numpy() / size**2, 0, 1)
        score = np.clip(0.3 + 0.7 * frac + rng.normal(0, noise, len(frac)), 0, 1)
        keep = score >= min_score
        idx, score = idx[keep], score[keep]
        e, n = ii[idx] * step, jj[idx] * step
        south = epsg > 32700
        n_lattice = n - (1e7 if south else 0.0)  # northing from the equator
        tix = np.floor(e / tile_m).astype(int)
        tiy = np.floor((n_lattice - 1e-6) / tile_m).astype(int)
        zone = int(epsg) % 100
        tiles = [Tile(zone, int(x), int(y)).id for x, y in zip(tix, tiy, strict=True)]
        col = np.round((e - tix * tile_m) / DEFAULT_RESOLUTION).astype(int)
        row = np.round(((tiy + 1) * tile_m - n_lattice) / DEFAULT_RESOLUTION).astype(int)
        parts.append(
            gpd.GeoDataFrame(
                {"tile": tiles, "row": row, "col": col, "epsg": int(epsg), "score": score,
                 "valid_frac": 1.0, "period": period},
                geometry=_to_wgs84(boxes[idx], int(epsg)),
                crs=4326,
            )
        )
    if not parts:
        return gpd.GeoDataFrame({"score": [], "period": []}, geometry=gpd.GeoSeries([], crs=4326), crs=4326)
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=4326)
