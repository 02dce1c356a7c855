"""The direct reader (default) gives the same pixels as the odc-stac reader it replaced.

The odc-stac path (``lazy_composite``: every asset read and resampled once per Dask chunk, the
median by ``ndarray.sort``) is the reference; the direct path (``direct_composite``: every asset
read once per tile, 20/60 m pixels mapped by index, the median by a sorting network, 2 threads)
must equal it. The catalogs are made to be awkward: native grids offset from the tile lattice
(by 10 m on the 20 m grid, 30 m on the 60 m grid), two overlapping scenes of one overpass with
different values (fusion order), swath nodata, the baseline-04.00 offset, an L1C threshold mask
(mask inputs that are not output bands), and a scene stored in the neighbouring UTM zone.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minewatch.grid import Tile
from minewatch.imagery.composite import NETWORK_MAX_OBSERVATIONS, median_composite, median_composite_network, merge_exchange_pairs
from minewatch.imagery.engine import CompositeRequest, _plan_all, compute_blockwise
from minewatch.imagery.load import configure_reader, direct_composite, lazy_composite
from minewatch.imagery.sources import resolve_source
from minewatch.imagery.synthetic import SceneSpec, make_catalog

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

TILE = Tile(21, 80, -28, 240, 10)
START, END = dt.date(2021, 1, 1), dt.date(2022, 12, 31)


def _offset_bounds(tile: Tile) -> tuple[float, float, float, float]:
    """Catalog extent whose 20/60 m grids do not start on the tile lattice (610 m west, 630 m north)."""
    left, bottom, right, top = tile.bounds
    return (left - 610, bottom - 570, right + 590, top + 630)


def _scenes(bounds: tuple[float, float, float, float]) -> list[SceneSpec]:
    left, bottom, right, top = bounds
    mid = left + 60 * round((right - left) / 2 / 60)
    d = dt.date
    return [
        SceneSpec(d(2021, 3, 1), cloud=0.3),
        SceneSpec(d(2021, 6, 10), cloud=0.4, nodata_cols=0.35),
        SceneSpec(d(2021, 9, 15), cloud=0.1),
        SceneSpec(d(2022, 2, 10), cloud=0.2),  # baseline 04.00: +1000 DN
        SceneSpec(d(2022, 8, 1), cloud=0.25, bounds=(left, bottom, mid + 600, top), suffix="a"),  # one overpass,
        SceneSpec(d(2022, 8, 1), cloud=0.25, bounds=(mid - 600, bottom, right, top), suffix="b"),  # overlapping
        SceneSpec(d(2022, 10, 1), cloud=0.5),
    ]


def _both(catalog: Path, level: str, bands: tuple[str, ...], tile: Tile = TILE, mask: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    src = resolve_source(str(catalog), level)
    req = CompositeRequest(start=START, end=END, bands=bands, level=level, max_scene_cloud=100, mask=mask)
    plan = _plan_all([tile], req, src, lambda s: None)[0]
    configure_reader(src)
    old = compute_blockwise(lazy_composite(plan, src, 96, median=median_composite), 1)
    new = direct_composite(plan, src, threads=2)
    assert np.array_equal(direct_composite(plan, src, threads=1, strip_px=7), new), "thread count or strip height changed pixels"
    return old, new


def _assert_same(old: np.ndarray, new: np.ndarray) -> None:
    assert old.shape == new.shape and old.dtype == new.dtype == np.uint16
    assert (old[-1] > 0).mean() > 0.9 and (old[:-1] > 0).mean() > 0.9  # a real composite, not all nodata
    diff = np.abs(old.astype(np.int32) - new.astype(np.int32))
    assert diff.max() <= 1, f"{(diff > 1).sum()} pixels differ by more than 1 DN"
    assert np.array_equal(old, new)  # in fact identical, bit for bit


def test_direct_reader_equals_odc_reader_l2a(tmp_path: Path) -> None:
    bounds = _offset_bounds(TILE)
    cat = make_catalog(tmp_path / "cat", epsg=TILE.epsg, bounds=bounds, scenes=_scenes(bounds), level="L2A", seed=5)
    old, new = _both(cat, "L2A", ("B4", "B3", "B2", "B8", "B5", "B8A", "B11", "B12", "B1", "B9"))
    _assert_same(old, new)


def test_direct_reader_equals_odc_reader_l1c_threshold_mask(tmp_path: Path) -> None:
    bounds = _offset_bounds(TILE)
    cat = make_catalog(tmp_path / "cat", epsg=TILE.epsg, bounds=bounds, scenes=_scenes(bounds), level="L1C", seed=6,
                       bands=("B2", "B3", "B4", "B8", "B11"))  # fmt: skip
    old, new = _both(cat, "L1C", ("B8", "B11", "B3"), mask="threshold")  # B2, B4 loaded for the mask only
    _assert_same(old, new)


def test_scene_in_another_zone_is_warped_like_odc(tmp_path: Path) -> None:
    """Another CRS goes through GDAL's warper once per tile (not by index); still the same pixels."""
    from pyproj import Transformer

    other = 32720
    tr = Transformer.from_crs(TILE.epsg, other, always_xy=True)
    l, b, r, t = TILE.bounds
    xs, ys = tr.transform([l, r, l, r], [b, b, t, t])
    bounds = (60 * np.floor(min(xs) / 60) - 600, 60 * np.floor(min(ys) / 60) - 600, 60 * np.ceil(max(xs) / 60) + 600, 60 * np.ceil(max(ys) / 60) + 600)
    cat = make_catalog(tmp_path / "cat", epsg=other, bounds=bounds, scenes=[SceneSpec(dt.date(2021, 5, 1), cloud=0.1), SceneSpec(dt.date(2021, 6, 1), cloud=0.2)],
                       bands=("B4", "B8", "B11"), seed=1)  # fmt: skip
    old, new = _both(cat, "L2A", ("B4", "B8", "B11"))
    diff = np.abs(old.astype(np.int32) - new.astype(np.int32))
    assert (old[-1] > 0).mean() > 0.5
    assert diff.max() <= 1 and np.array_equal(old, new)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 40), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_network_median_equals_sort_median(n_t: int, n_b: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    stack = rng.integers(0, 3, size=(n_t, n_b, 5, 7)).astype(np.uint16) * rng.integers(1, 65535, size=(n_t, n_b, 5, 7)).astype(np.uint16)
    stack[rng.random(stack.shape) < 0.2] = 65535  # the saturated value must not be confused with "unusable"
    clear = rng.random((n_t, 5, 7)) > 0.3
    want = median_composite(stack, clear)
    got = median_composite_network(stack, clear)
    assert np.array_equal(want[0], got[0]) and np.array_equal(want[1], got[1])


def test_network_sorts_every_zero_one_input() -> None:
    """The 0-1 principle: a comparator network sorts everything iff it sorts all 0/1 inputs."""
    for n in range(1, 15):
        inputs = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.uint8)
        rows = [inputs[:, k].copy() for k in range(n)]
        for i, j in merge_exchange_pairs(n):
            lo, hi = np.minimum(rows[i], rows[j]), np.maximum(rows[i], rows[j])
            rows[i], rows[j] = lo, hi
        out = np.stack(rows, axis=1)
        assert (np.diff(out.astype(int), axis=1) >= 0).all(), n
    assert len(merge_exchange_pairs(20)) < 20 * 19 // 2 and NETWORK_MAX_OBSERVATIONS >= 20


def test_default_scheduler_rule() -> None:
    from minewatch.scheduling import cluster_workers, resolve_scheduler

    assert resolve_scheduler(None, 100, n_cores=2) == "threads"  # this machine: in process
    assert resolve_scheduler("auto", 100, n_cores=8) == "threads"
    assert resolve_scheduler(None, 3, n_cores=32) == "threads"  # too few tiles for 4 workers
    assert resolve_scheduler(None, 8, n_cores=32) == "local" and cluster_workers(32) == 4
    assert resolve_scheduler("local", 1, n_cores=2) == "local"  # asked for: always
    assert resolve_scheduler("tcp://127.0.0.1:8786", 1, n_cores=2) == "tcp://127.0.0.1:8786"
