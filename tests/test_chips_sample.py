"""Chips from labelled points: windows on the lattice, cut from real composite COGs, written as a chip dataset."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from minewatch.chips import load_chips
from minewatch.chips.sample import LabelledPoint, chip_window, read_points, sample_chips
from minewatch.errors import MinewatchError
from minewatch.grid import Tile
from minewatch.imagery.sources import resolve_source
from minewatch.imagery.synthetic import SceneSpec, make_catalog
from minewatch.imagery.write import clear_path, composite_path

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

PX = 240
T0 = Tile(21, 80, -28, PX, 10)
T1 = Tile(21, 81, -28, PX, 10)
START, END = dt.date(2021, 1, 1), dt.date(2021, 12, 31)
SIZE = 48


def _lonlat(tile: Tile, row: int, col: int) -> tuple[float, float]:
    left, _, _, top = tile.bounds
    x, y = left + (col + 0.5) * tile.resolution, top - (row + 0.5) * tile.resolution
    return Transformer.from_crs(tile.epsg, 4326, always_xy=True).transform(x, y)


# (tile, row, col, label): the centre of T0; near T0's east edge (the chip spans T0 and T1); inside T1.
POINTS = [(T0, 120, 120, 1), (T0, 100, 230, 1), (T1, 60, 100, 0), (T1, 200, 30, 0)]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    l, b, _, t = T0.bounds
    r = T1.bounds[2]
    scenes = [SceneSpec(dt.date(2021, m, 10), cloud=0.35) for m in (1, 3, 5, 7, 9)]
    return make_catalog(tmp_path_factory.mktemp("chipcat"), epsg=T0.epsg, bounds=(l - 600, b - 600, r + 600, t + 600), scenes=scenes, bands=("B2", "B3", "B4", "B8"), seed=21)


@pytest.fixture(scope="module")
def points_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    feats = []
    for tile, row, col, lab in POINTS:
        lon, lat = _lonlat(tile, row, col)
        feats.append({"type": "Feature", "properties": {"mine": lab, "name": f"{tile.id}-{row}-{col}"}, "geometry": {"type": "Point", "coordinates": [lon, lat]}})
    p = tmp_path_factory.mktemp("pts") / "sites.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return p


@pytest.fixture(scope="module")
def chip_dir(catalog: Path, points_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("chips")
    sample_chips(points_file, out, source=resolve_source(str(catalog), "l2a"), start=START, end=END, label_field="mine", bands=("B4", "B3", "B2"), size=SIZE, tile_px=PX, scheduler="synchronous", progress=False)
    return out


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_chips_equal_windows_of_the_composites(chip_dir: Path) -> None:
    chips = load_chips(chip_dir)
    assert len(chips) == 4 and chips.pixels.shape == (4, SIZE, SIZE, 3) and chips.pixels.dtype == np.uint8
    assert chips.labels.tolist() == [p[3] for p in POINTS]
    assert chips.spec.bands == ["B4", "B3", "B2"] and chips.spec.level == "L2A"
    comp = chip_dir / "composites"
    mosaic = np.concatenate([_read(composite_path(comp, T0.id)), _read(composite_path(comp, T1.id))], axis=2)  # T1 is east of T0
    counts = np.concatenate([_read(clear_path(comp, T0.id)), _read(clear_path(comp, T1.id))], axis=2)[0]
    for k, (tile, row, col, _) in enumerate(POINTS):
        c = col + (PX if tile == T1 else 0)
        dn = mosaic[:, row - SIZE // 2 : row + SIZE // 2, c - SIZE // 2 : c + SIZE // 2]
        want = np.round(np.clip(dn / 3000.0, 0, 1) * 255).astype(np.uint8)
        np.testing.assert_array_equal(chips.pixels[k], np.moveaxis(want, 0, -1), err_msg=f"chip {k}")
        m = chips.meta.iloc[k]
        assert m["tile"] == tile.id and (m["row"], m["col"]) == (row - SIZE // 2, col - SIZE // 2)
        n_obs = json.loads((comp / "tiles" / f"{tile.id}.json").read_text())["properties"]["minewatch:observations"]
        assert m["observations"] == n_obs == 5
        cnt = counts[row - SIZE // 2 : row + SIZE // 2, c - SIZE // 2 : c + SIZE // 2]
        assert m["clear"] == pytest.approx(cnt.mean() / n_obs, abs=1e-4) and 0 < m["clear"] < 1
        assert (chip_dir / m["composite"]).resolve() == composite_path(comp, tile.id).resolve()
        lon, lat = _lonlat(tile, row, col)
        assert (m["lon"], m["lat"]) == pytest.approx((lon, lat))
        assert m["start_date"] == "2021-01-01" and m["end_date"] == "2021-12-31" and m["source"] == "sites"
    assert chips.meta.iloc[1]["col"] + SIZE > PX  # the second chip really does cross the tile edge


def test_cli_chips_raw_dn_and_reuse_of_composites(catalog: Path, points_file: Path, chip_dir: Path, tmp_path: Path) -> None:
    from minewatch.cli.main import cli

    before = {p: p.stat().st_mtime_ns for p in (chip_dir / "composites" / "tiles").glob("*.tif")}
    res = CliRunner().invoke(cli, [
        "chips", "--points", str(points_file), "--label", "1", "--source", str(catalog), "--start", "2021-01-01", "--end", "2021-12-31",
        "--out", str(tmp_path / "dn"), "--bands", "B4,B3,B2", "--rendering", "dn", "--tile-px", str(PX),
        "--composites", str(chip_dir / "composites"), "--scheduler", "synchronous", "--quiet",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in (chip_dir / "composites" / "tiles").glob("*.tif")} == before  # reused, not rebuilt
    chips = load_chips(tmp_path / "dn")
    assert chips.pixels.dtype == np.uint16 and chips.labels.tolist() == [1, 1, 1, 1]
    dn = np.moveaxis(_read(composite_path(chip_dir / "composites", T0.id))[:, 96:144, 96:144], 0, -1)
    np.testing.assert_array_equal(chips.pixels[0], dn)
    assert chips.spec.rendering.kind == "linear"


def test_points_errors_are_one_line(tmp_path: Path) -> None:
    p = tmp_path / "p.geojson"
    pt = {"type": "Feature", "properties": {"y": "maybe"}, "geometry": {"type": "Point", "coordinates": [-57.0, -3.0]}}
    p.write_text(json.dumps({"type": "FeatureCollection", "features": [pt]}))
    with pytest.raises(MinewatchError, match="exactly one"):
        read_points(p, label=1, label_field="y")
    with pytest.raises(MinewatchError, match="not a 0/1 label"):
        read_points(p, label_field="y")
    with pytest.raises(MinewatchError, match="no property"):
        read_points(p, label_field="z")
    with pytest.raises(MinewatchError, match="must be 0 or 1"):
        read_points(p, label=2)
    p.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [612000.0, 9650000.0]}}]}))
    with pytest.raises(MinewatchError, match="not a WGS84 lon/lat"):
        read_points(p, label=1)
    p.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}]}))
    with pytest.raises(MinewatchError, match="not a Point"):
        read_points(p, label=1)


@settings(max_examples=100, deadline=None)
@given(st.floats(-179.9, 179.9), st.floats(-60.0, 70.0), st.sampled_from([24, 48, 64]))
def test_chip_centre_pixel_contains_the_point(lon: float, lat: float, size: int) -> None:
    win = chip_window(LabelledPoint(0, lon, lat, 1), size, tile_px=PX)
    t = win.home
    r, c = win.row + size // 2, win.col + size // 2
    assert 0 <= r < PX and 0 <= c < PX
    x, y = Transformer.from_crs(4326, t.epsg, always_xy=True).transform(lon, lat)
    left, _, _, top = t.bounds
    assert left + c * 10 <= x < left + (c + 1) * 10 + 1e-6
    assert top - (r + 1) * 10 - 1e-6 <= y <= top - r * 10
    # the tiles the window touches cover it exactly once per pixel
    cover = np.zeros((size, size), int)
    for tile, roff, coff in win.tiles():
        rr = np.arange(win.row, win.row + size) - roff
        cc = np.arange(win.col, win.col + size) - coff
        cover += np.outer((rr >= 0) & (rr < PX), (cc >= 0) & (cc < PX))
    assert (cover == 1).all()
