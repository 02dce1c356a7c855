from __future__ import annotations

import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from minewatch.grid import STEP_PX, Tile, tiles_for_geometry, utm_zone


def test_tile_roundtrip_and_alignment():
    t = Tile(21, 59, -67)
    assert Tile.from_id(t.id) == t and t.epsg == 32721
    left, bottom, right, top = t.bounds
    assert right - left == top - bottom == t.tile_px * t.resolution
    assert left % (STEP_PX * t.resolution) == 0


def test_equator_tiles_abut():
    tiles = tiles_for_geometry(box(-55.01, -0.01, -54.99, 0.01))
    assert {t.south for t in tiles} == {True, False}
    north = [t for t in tiles if not t.south][0]
    south = [t for t in tiles if t.south and t.ix == north.ix][0]
    assert north.geometry_wgs84().intersection(south.geometry_wgs84()).area < 1e-9
    assert abs(north.geometry_wgs84().bounds[1] - south.geometry_wgs84().bounds[3]) < 1e-9


@settings(max_examples=30, deadline=None)
@given(
    lon=st.floats(-75, -45), lat=st.floats(-15, 5), w=st.floats(0.01, 0.3), h=st.floats(0.01, 0.3)
)
def test_grid_covers_roi_without_overlap(lon, lat, w, h):
    roi = box(lon, lat, lon + w, lat + h)
    tiles = tiles_for_geometry(roi)
    assert tiles == sorted(set(tiles))
    # Coverage: every sample point of the ROI lies in a tile of its own zone.
    rng = np.random.default_rng(0)
    xs, ys = rng.uniform(lon, lon + w, 50), rng.uniform(lat, lat + h, 50)
    for x, y in zip(xs, ys):
        owners = [t for t in tiles if t.zone == utm_zone(x) and shapely.contains_xy(t.geometry_wgs84(64), x, y)]
        assert len(owners) >= 1
    # No overlap inside a zone: the squares of one zone are disjoint lattice cells.
    for z in {t.zone for t in tiles}:
        sq = [t.geometry() for t in tiles if t.zone == z and not t.south] or []
        sq += [shapely.affinity.translate(t.geometry(), 0, -1e7) for t in tiles if t.zone == z and t.south]
        assert abs(shapely.union_all(sq).area - sum(s.area for s in sq)) < 1e-3
