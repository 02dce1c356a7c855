"""Property-based tests of the geometry everything else stands on: tiling grid, patch lattice, antimeridian.

``tests/test_grid.py`` has the basic grid property; these extend it to random polygons, zone
boundaries, the equator and the antimeridian, and check the patch lattice across tile boundaries.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from minewatch.grid import (
    FALSE_NORTHING_SOUTH,
    PATCH_PX,
    STEP_PX,
    Tile,
    _transformer,
    owned_patch_offsets,
    patch_offsets,
    tiles_for_geometry,
    utm_epsg,
    utm_zone,
    wrap_antimeridian,
)
from minewatch.roi import Roi

SETTINGS = settings(max_examples=25, deadline=None)

lons = st.floats(-179.5, 179.5, allow_nan=False)
lats = st.floats(-60, 60, allow_nan=False)
sizes = st.floats(0.005, 0.25, allow_nan=False)
tile_pxs = st.sampled_from([240, 480, 1008])


@st.composite
def polygons(draw, lon=lons, lat=lats):
    """A random star-shaped polygon (up to ~0.5° across) around a random centre."""
    cx, cy = draw(lon), draw(lat)
    n = draw(st.integers(3, 9))
    radii = draw(st.lists(st.floats(0.01, 0.25), min_size=n, max_size=n))
    angles = sorted(draw(st.lists(st.floats(0, 2 * math.pi), min_size=n, max_size=n, unique=True)))
    pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in zip(radii, angles)]
    poly = shapely.make_valid(shapely.Polygon(pts))
    assume(poly.area > 1e-6 and poly.geom_type in ("Polygon", "MultiPolygon"))
    return poly


def _cell_of(lon: float, lat: float, size_m: float) -> tuple[int, int, int]:
    zone = utm_zone(lon)
    x, y = _transformer(4326, utm_epsg(zone, False)).transform(lon, lat)
    return zone, math.floor(x / size_m), math.floor(y / size_m)


def _sample_points(geom, n: int, seed: int = 0) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = geom.bounds
    xs, ys = rng.uniform(x0, x1, 4 * n), rng.uniform(y0, y1, 4 * n)
    inside = shapely.contains_xy(geom, xs, ys)
    return list(zip(xs[inside][:n], ys[inside][:n]))


@SETTINGS
@given(roi=polygons(), tile_px=tile_pxs)
def test_grid_covers_every_point_of_any_polygon_once_per_zone(roi, tile_px):
    tiles = tiles_for_geometry(roi, tile_px)
    size = tile_px * 10.0
    keys = {(t.zone, t.ix, t.iy) for t in tiles}
    assert len(keys) == len(tiles)  # no duplicates
    # Coverage: the lattice cell holding any ROI point (in the point's own zone) is a planned tile.
    for lon, lat in _sample_points(roi, 40):
        assert _cell_of(lon, lat, size) in keys
    # Minimality: every planned tile touches the part of the ROI in its zone strip.
    for t in tiles:
        assert wrap_antimeridian(t.geometry_wgs84(32)).intersects(roi)


@SETTINGS
@given(lon=st.sampled_from([-54.0, -60.0, -48.0, -72.0, 180.0 - 1e-9]), lat=lats, w=sizes, h=sizes, frac=st.floats(0.05, 0.95))
def test_roi_across_a_zone_boundary_is_split_without_losing_area(lon, lat, w, h, frac):
    x0 = lon - w * frac
    roi = Roi(wrap_antimeridian(box(x0, lat, x0 + w, lat + h)), "test")
    parts = roi.zones()
    assert len(parts) == 2
    assert math.isclose(sum(p.area for p in parts.values()), roi.geometry.area, rel_tol=1e-9)
    tiles = roi.tiles(480)
    assert {t.zone for t in tiles} == set(parts)
    for lon_, lat_ in _sample_points(roi.geometry, 30, seed=1):
        assert _cell_of(lon_, lat_, 4800.0) in {(t.zone, t.ix, t.iy) for t in tiles}


@SETTINGS
@given(zone=st.integers(1, 60), ix=st.integers(10, 90), iy=st.integers(-900, 900), tile_px=tile_pxs)
def test_tile_is_pixel_and_lattice_aligned_in_its_own_crs(zone, ix, iy, tile_px):
    t = Tile(zone, ix, iy, tile_px)
    left, bottom, right, top = t.bounds
    off = FALSE_NORTHING_SOUTH if t.south else 0.0
    assert (left, bottom - off) == (ix * t.size_m, iy * t.size_m)
    assert right - left == top - bottom == tile_px * t.resolution
    # Pixel-aligned in the tile's own CRS (what GDAL sees), lattice-aligned in the global frame.
    for v in (left, bottom, right, top):
        assert v % t.resolution == 0
    step_m = STEP_PX * t.resolution
    assert left % step_m == 0 and (bottom - off) % step_m == 0
    assert t.transform @ (0, 0) == (left, top) and t.transform @ t.shape[::-1] == (right, bottom)
    assert Tile.from_id(t.id, tile_px) == t and t.epsg == utm_epsg(zone, iy < 0)


@SETTINGS
@given(
    zone=st.integers(1, 60),
    ix=st.integers(20, 70),
    iy=st.integers(-500, 500),
    tile_px=tile_pxs,
    n=st.integers(2, 4),
    axis=st.sampled_from(["x", "y"]),
)
def test_patch_lattice_continues_across_tiles_and_each_patch_has_one_owner(zone, ix, iy, tile_px, n, axis):
    """Adjacent tiles continue one 24 px lattice; owning patches by top-left pixel gives each one tile."""
    res = 10.0
    tiles = [Tile(zone, ix + k, iy, tile_px) if axis == "x" else Tile(zone, ix, iy - k, tile_px) for k in range(n)]
    owned, fitting = [], []
    for t in tiles:
        left, _, _, top = t.bounds
        top -= FALSE_NORTHING_SOUTH if t.south else 0.0  # one northing frame across the equator
        for offs, out in ((owned_patch_offsets(tile_px), owned), (patch_offsets(tile_px), fitting)):
            # Global lattice index of each patch along the axis, from its top-left corner.
            pos = (left + offs * res) if axis == "x" else (top - offs * res)
            out.extend(np.rint(pos / (STEP_PX * res)).astype(np.int64).tolist())
            assert np.allclose(pos / (STEP_PX * res), np.rint(pos / (STEP_PX * res)))
    owned_sorted = sorted(owned)
    assert len(set(owned)) == len(owned)  # no patch owned twice
    assert owned_sorted == list(range(owned_sorted[0], owned_sorted[0] + len(owned)))  # no gap
    assert len(owned) == n * tile_px // STEP_PX
    # Patches cut inside each tile alone miss the one straddling every boundary: why ownership needs a halo.
    assert len(set(owned) - set(fitting)) == n * (PATCH_PX // STEP_PX - 1)


@SETTINGS
@given(zone=st.integers(1, 60), ix=st.integers(20, 70), iy=st.integers(-500, 500), fx=st.floats(0.01, 0.99), fy=st.floats(0.01, 0.99))
def test_owned_patches_of_a_2x2_block_cover_its_interior_exactly_four_times(zone, ix, iy, fx, fy):
    tile_px, res = 240, 10.0
    block = [Tile(zone, ix + a, iy + b, tile_px) for a in (0, 1) for b in (0, 1)]
    # A point in the interior of the block, away from the outer edges by more than one patch.
    x = (ix + 0.5 + fx) * tile_px * res
    y = (iy + 0.5 + fy) * tile_px * res
    assume(all(abs((v / (STEP_PX * res)) % 1) > 1e-6 for v in (x, y)))
    hits = 0
    for t in block:
        left, _, _, top = t.bounds
        top -= FALSE_NORTHING_SOUTH if t.south else 0.0
        offs = owned_patch_offsets(tile_px)
        c0 = left + offs * res
        r0 = top - offs * res
        hits += int(((c0 <= x) & (x < c0 + PATCH_PX * res)).sum() * ((r0 - PATCH_PX * res < y) & (y <= r0)).sum())
    assert hits == (PATCH_PX // STEP_PX) ** 2


@SETTINGS
@given(lon0=st.floats(179.0, 179.99), w=st.floats(0.02, 1.5), lat=st.floats(-60, 60), h=st.floats(0.01, 0.5))
def test_antimeridian_forms_agree(lon0, w, lat, h):
    assume(lon0 + w > 180.0001)
    beyond = box(lon0, lat, lon0 + w, lat + h)
    east = lon0 + w - 360.0
    jump = shapely.Polygon([(lon0, lat), (east, lat), (east, lat + h), (lon0, lat + h)])
    a, b = wrap_antimeridian(beyond), wrap_antimeridian(jump)
    for g in (a, b):
        assert -180 <= g.bounds[0] and g.bounds[2] <= 180 and g.is_valid
        assert math.isclose(g.area, w * h, rel_tol=1e-9)
    assert a.symmetric_difference(b).area < 1e-12
    assert wrap_antimeridian(a).equals(a)  # idempotent
    assert tiles_for_geometry(beyond, 480) == tiles_for_geometry(a, 480) == tiles_for_geometry(b, 480)
    assert {t.zone for t in tiles_for_geometry(a, 480)} == {1, 60}


@SETTINGS
@given(roi=polygons())
def test_wrap_is_identity_away_from_the_antimeridian(roi):
    assert wrap_antimeridian(roi) is roi


# --------------------------------------------------------------------------------------------------
# Dissolve: area conserved against a plain union, idempotent, components disjoint
# --------------------------------------------------------------------------------------------------


def _patches(cells_by_tile):
    import pandas as pd

    from minewatch.postprocess.synthetic import patches_on_tile

    parts = [patches_on_tile(t, cells) for t, cells in cells_by_tile if cells]
    return pd.concat(parts, ignore_index=True) if parts else None


lattice_cells = st.lists(
    st.tuples(st.integers(0, 8), st.integers(0, 8), st.floats(0.5, 1.0)), min_size=1, max_size=30, unique_by=lambda c: c[:2]
)


@settings(max_examples=20, deadline=None)
@given(a=lattice_cells, b=lattice_cells, c=lattice_cells, across_zone=st.booleans())
def test_dissolve_conserves_area_is_idempotent_and_splits_into_disjoint_mines(a, b, c, across_zone):
    """Patches of two abutting tiles (lattice fast path), plus a third tile either below them or in
    the next UTM zone (general path + seam pass). Rows/cols in units of the 24 px step."""
    import geopandas as gpd

    from minewatch.postprocess.dissolve import dissolve_patch_geometries, dissolve_patches
    from minewatch.postprocess.geom import area_ha

    # Near 0.6°S zone 21 ends (lon -54) at x ≈ 834 km; zone 22 starts at x ≈ 166 km: t3 in zone 22
    # overlaps t2 on the ground, as tiles of neighbouring zones do along a seam.
    t1 = Tile(21, 346, -28, 240)
    t2 = Tile(21, 347, -28, 240)
    t3 = Tile(22, 69, -28, 240) if across_zone else Tile(21, 346, -29, 240)
    # Rows/cols up to 8 steps (192 px) keep patches inside the 240 px tiles plus the 24 px halo.
    scale = lambda cells: [(r * STEP_PX, col * STEP_PX, s) for r, col, s in cells]  # noqa: E731
    patches = _patches([(t1, scale(a)), (t2, scale(b)), (t3, scale(c))])
    mines = dissolve_patches(patches)
    geoms = mines.geometry.to_numpy()
    union = shapely.union_all(patches.geometry.to_numpy())
    # Area: the dissolved polygons cover exactly the union of the patches, overlaps counted once.
    assert math.isclose(mines["area_ha"].sum(), area_ha(np.array([union]))[0], rel_tol=1e-6)
    # (corner-only reprojection of cells vs. patches leaves sub-m² slivers: tolerance 1e-6 relative)
    assert shapely.symmetric_difference(shapely.union_all(geoms), union).area < 1e-6 * union.area
    assert mines["n_patches"].sum() == len(patches)
    # Separate mines never touch (touching patches belong to one mine).
    for i in range(len(geoms)):
        for j in range(i + 1, len(geoms)):
            assert not shapely.intersects(geoms[i], geoms[j])
    # Every patch lies in exactly one mine.
    pts = shapely.point_on_surface(patches.geometry.to_numpy())
    inside = np.array([[shapely.contains(g, p) for g in geoms] for p in pts])
    assert (inside.sum(axis=1) == 1).all()
    # Idempotent: dissolving the mines again changes nothing.
    again, labels = dissolve_patch_geometries(geoms)
    assert len(again) == len(geoms) and sorted(labels) == list(range(len(geoms)))
    assert shapely.symmetric_difference(shapely.union_all(again), shapely.union_all(geoms)).area < 1e-6 * union.area
    assert isinstance(mines, gpd.GeoDataFrame) and mines.crs.to_epsg() == 4326


@settings(max_examples=20, deadline=None)
@given(st.lists(polygons(lon=st.floats(-55.02, -54.98), lat=st.floats(-5.02, -4.98)), min_size=1, max_size=8))
def test_general_dissolve_of_arbitrary_polygons(polys):
    from minewatch.postprocess.dissolve import dissolve_geometries

    geoms = np.array(polys, dtype=object)
    merged, labels = dissolve_geometries(geoms)
    union = shapely.union_all(geoms)
    assert math.isclose(float(shapely.area(merged).sum()), union.area, rel_tol=1e-9)
    assert len(labels) == len(geoms) and set(labels) == set(range(len(merged)))
    again, _ = dissolve_geometries(merged)
    assert len(again) == len(merged)
    assert shapely.symmetric_difference(shapely.union_all(again), union).area < 1e-12
