"""The pure core of compositing: harmonisation, masks, the exact integer median, plans."""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from minewatch.grid import Tile
from minewatch.imagery.composite import composite_block, harmonise, median_composite, scl_clear, threshold_clear
from minewatch.imagery.plan import (
    MASK_SCL,
    harmonisation_offset,
    normalise_band,
    plan_tile,
    solar_day,
)


def test_harmonise_subtracts_offset_and_keeps_nodata() -> None:
    dn = np.array([0, 1, 500, 1000, 1001, 1500, 65535], np.uint16)
    np.testing.assert_array_equal(harmonise(dn, 1000), [0, 1, 1, 1, 1, 500, 64535])
    assert harmonise(dn, 1000).dtype == np.uint16
    np.testing.assert_array_equal(harmonise(dn, 0), dn)


@pytest.mark.parametrize(
    ("props", "day", "want"),
    [
        ({"s2:processing_baseline": "03.01"}, dt.date(2021, 6, 1), 0),
        ({"s2:processing_baseline": "04.00"}, dt.date(2022, 3, 1), 1000),
        ({"s2:processing_baseline": "05.10"}, dt.date(2019, 3, 1), 1000),  # reprocessed archive (Collection 1)
        ({"s2:processing_baseline": "02.14"}, dt.date(2023, 3, 1), 0),  # the property wins over the date
        ({}, dt.date(2022, 1, 24), 0),
        ({}, dt.date(2022, 1, 25), 1000),
        ({"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": True}, dt.date(2022, 3, 1), 0),
    ],
)
def test_harmonisation_offset_rule(props: dict, day: dt.date, want: int) -> None:
    when = dt.datetime.combine(day, dt.time(14), tzinfo=dt.timezone.utc)
    assert harmonisation_offset(props, when) == want


def test_solar_day_groups_one_overpass() -> None:
    # 02:30 UTC at 150°E is 12:30 local: same solar day; at 60°W it is the previous evening.
    t = dt.datetime(2022, 3, 2, 2, 30, tzinfo=dt.timezone.utc)
    assert solar_day(t, 150.0) == dt.date(2022, 3, 2)
    assert solar_day(t, -60.0) == dt.date(2022, 3, 1)


def test_band_names_normalise() -> None:
    assert [normalise_band(b) for b in ["B04", "b4", "B8A", "b8a", "B12", "scl"]] == ["B4", "B4", "B8A", "B8A", "B12", "SCL"]
    with pytest.raises(ValueError, match="unknown Sentinel-2 band"):
        normalise_band("B13")


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.uint16, st.tuples(st.integers(0, 9), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)), elements=st.integers(0, 12000)),
    st.data(),
)
def test_median_equals_rounded_nanmedian(stack: np.ndarray, data: st.DataObject) -> None:
    clear = data.draw(arrays(bool, (stack.shape[0], *stack.shape[2:])))
    med, count = median_composite(stack, clear)
    usable = clear & (stack > 0).all(axis=1)
    vals = np.where(usable[:, None], stack.astype(np.float64), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanmedian(vals, axis=0) if stack.shape[0] else np.full(stack.shape[1:], np.nan)
    want = np.where(np.isnan(want), 0, np.round(want)).astype(np.uint16)
    np.testing.assert_array_equal(med, want)
    np.testing.assert_array_equal(count, usable.sum(axis=0))


def test_median_of_even_count_rounds_half_to_even() -> None:
    stack = np.array([[[[10]]], [[[13]]], [[[2]]], [[[5]]]], np.uint16)  # sorted 2 5 10 13 -> 7.5 -> 8
    med, count = median_composite(stack, np.ones((4, 1, 1), bool))
    assert med[0, 0, 0] == 8 and count[0, 0] == 4
    med, _ = median_composite(stack[[2, 3]], np.ones((2, 1, 1), bool))  # 2, 5 -> 3.5 -> 4
    assert med[0, 0, 0] == 4


def test_scl_and_threshold_masks() -> None:
    scl = np.arange(12, dtype=np.uint16)
    np.testing.assert_array_equal(np.flatnonzero(scl_clear(scl)), [4, 5, 6, 7, 11])
    blue = np.array([500, 3000, 3000, 900])
    red = np.array([600, 2800, 4500, 1000])
    cirrus = np.array([10, 10, 10, 400])
    # dark forest clear; white cloud masked; bright red sand (mine tailings) clear; cirrus masked
    np.testing.assert_array_equal(threshold_clear(blue, red, cirrus), [True, False, True, False])


def test_composite_block_harmonises_per_observation() -> None:
    # Two observations of the same ground: DN 1500 before the baseline change, 2500 (=1500+1000) after.
    block = np.zeros((2, 2, 1, 2), np.uint16)  # T, (B4, SCL), Y, X
    block[0, 0] = 1500
    block[1, 0] = 2500
    block[:, 1] = 4  # vegetation: clear
    block[1, 1, 0, 1] = 9  # cloud on the second pixel of the second observation
    out = composite_block(block, ["B4", "SCL"], ["B4"], [0, 1000], MASK_SCL)
    np.testing.assert_array_equal(out[0], [[1500, 1500]])
    np.testing.assert_array_equal(out[1], [[2, 1]])


def test_plan_selects_by_footprint_time_and_cloud() -> None:
    tile = Tile(21, 80, -28, 240, 10)
    fp = tile.geometry_wgs84()
    x0, y0, x1, y1 = fp.bounds

    def item(i: str, when: str, cc: float, dx: float = 0.0) -> dict:
        poly = [[x0 + dx, y0], [x1 + dx, y0], [x1 + dx, y1], [x0 + dx, y1], [x0 + dx, y0]]
        return {"id": i, "properties": {"datetime": when, "eo:cloud_cover": cc}, "geometry": {"type": "Polygon", "coordinates": [poly]}, "assets": {}}

    items = [
        item("a", "2022-03-01T14:00:00Z", 10),
        item("b", "2022-03-01T14:00:05Z", 10),  # same overpass: one observation
        item("c", "2021-03-01T14:00:00Z", 10),
        item("d", "2022-05-01T14:00:00Z", 95),  # too cloudy
        item("e", "2023-05-01T14:00:00Z", 10),  # after the window
        item("f", "2022-06-01T14:00:00Z", 10, dx=1.0),  # elsewhere
    ]
    keys = {"B4": "red", "SCL": "scl"}
    plan = plan_tile(tile, items, start=dt.date(2021, 1, 1), end=dt.date(2022, 12, 31), bands=["B4"], level="L2A", source="t", asset_keys=keys, mask=MASK_SCL, max_scene_cloud=60)
    assert [r.id for r in plan.items] == ["c", "a", "b"]
    assert plan.offsets == (0, 1000) and len(plan.groups) == 2
    assert plan.load_bands == ("B4", "SCL") and plan.asset_keys == (("B4", "red"), ("SCL", "scl"))
    with pytest.raises(ValueError, match="no asset key"):
        plan_tile(tile, items, start=dt.date(2021, 1, 1), end=dt.date(2022, 12, 31), bands=["B8"], level="L2A", source="t", asset_keys=keys, mask=MASK_SCL)


def test_mask_choice_for_each_level(monkeypatch: pytest.MonkeyPatch) -> None:
    import minewatch.imagery.composite as comp
    from minewatch.errors import MinewatchError
    from minewatch.imagery.engine import choose_mask

    l1c = {b: b for b in ("B1", "B2", "B4", "B5", "B8", "B8A", "B9", "B10", "B11", "B12")}
    assert choose_mask("L2A", {"B4": "red", "SCL": "scl"}) == "scl"
    assert choose_mask("L1C", {**l1c, "CLOUDMASK": "cloud_mask"}) == "scene-mask"
    monkeypatch.setattr(comp, "s2cloudless_available", lambda: False)
    assert choose_mask("L1C", l1c) == "threshold"
    with pytest.raises(MinewatchError, match="s2cloudless is not installed"):
        choose_mask("L1C", l1c, "s2cloudless")
    monkeypatch.setattr(comp, "s2cloudless_available", lambda: True)
    assert choose_mask("L1C", l1c) == "s2cloudless"
    assert choose_mask("L1C", {"B2": "B2", "B4": "B4"}) == "threshold"  # s2cloudless needs all 10 bands
    with pytest.raises(MinewatchError, match="needs asset"):
        choose_mask("L2A", {"B4": "red"})  # L2A without SCL


def test_s2cloudless_masks_cloud_and_keeps_forest() -> None:
    """Runs only where the optional s2cloudless (LightGBM) is installed."""
    pytest.importorskip("s2cloudless")
    from minewatch.imagery.composite import s2cloudless_clear

    forest = np.array([1250, 1000, 700, 1050, 2900, 3100, 900, 15, 1500, 700], np.uint16)  # B1..B12 order of S2CLOUDLESS_BANDS
    cloud = np.array([5000, 5200, 5300, 5400, 5600, 5600, 3000, 300, 4000, 3000], np.uint16)
    st = np.broadcast_to(forest[None, :, None, None], (1, 10, 64, 64)).copy()
    st[0, :, 10:40, 10:40] = cloud[:, None, None]
    clear = s2cloudless_clear(st)
    assert not clear[0, 25, 25] and clear[0, 55, 55]
