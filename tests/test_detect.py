"""Detection engine on rasters and models made in the test: lattice, tiles and halo, nodata, bands,
levels, ensembles, inputs (COG, folder, STAC), resume, Dask, and ``minewatch run``.

The model is a tiny valid-padding ONNX conv net built here with ``onnx.helper`` (two members, an FCN
graph with output stride 4 plus its patch graph, same weights), so every test runs in seconds and
the numbers it must reproduce are computed independently in the test.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from minewatch.bands import BandSpec
from minewatch.cli.main import cli
from minewatch.detect.demo import write_mosaic
from minewatch.detect.engine import DetectRequest, run_detect, tile_paths
from minewatch.detect.imagery import open_imagery, period_from_dates, read_tile
from minewatch.detect.lattice import footprints_utm, footprints_wgs84, valid_fraction
from minewatch.detect.scorer import Scorer, member_columns
from minewatch.errors import MinewatchError
from minewatch.grid import Tile, _transformer
from minewatch.models.onnx_build import GraphBuilder, float_input
from minewatch.models.package import ModelCard, load_package, save_package

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

TILE_PX = 96
T0 = Tile(21, 500, -700, TILE_PX, 10.0)
"""Anchor tile (zone 21 south, ~6°S); test rasters are placed relative to its top-left pixel."""
BANDS = ("B4", "B3", "B2")


# --------------------------------------------------------------------------------------------------
# A tiny model package and test rasters
# --------------------------------------------------------------------------------------------------


def _graphs(n_bands: int, members: int, seed: int) -> tuple[bytes, bytes]:
    """Patch graph (N×48×48×C → N×M) and FCN graph (1×H×W×C → 1×M×h×w, stride 4), same weights."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (8, n_bands, 4, 4)).astype(np.float32)
    w2 = rng.normal(0, 0.05, (members, 8, 12, 12)).astype(np.float32)
    b2 = rng.normal(0, 0.5, members).astype(np.float32)

    def trunk(g: GraphBuilder) -> str:
        t = g.op("Transpose", ["x"], perm=[0, 3, 1, 2])
        t = g.op("Sub", [t, g.const("mean", 127.5)])
        t = g.op("Mul", [t, g.const("scale", 1 / 64)])
        t = g.op("Conv", [t, g.const("w1", w1)], strides=[4, 4])
        t = g.op("Relu", [t])
        return g.op("Conv", [t, g.const("w2", w2), g.const("b2", b2)])

    gp = GraphBuilder("tiny_patch")
    z = trunk(gp)
    gp.op("Flatten", [z], output="logits", axis=1)
    patch = gp.finish([float_input("x", ["N", 48, 48, n_bands])], [helper.make_tensor_value_info("logits", 1, ["N", members])])
    gf = GraphBuilder("tiny_fcn")
    gf.op("Identity", [trunk(gf)], output="logits")
    fcn = gf.finish([float_input("x", [1, "H", "W", n_bands])], [helper.make_tensor_value_info("logits", 1, [1, members, "h", "w"])])
    return patch.SerializeToString(), fcn.SerializeToString()


def make_package(folder: Path, name: str = "tiny", bands: tuple[str, ...] = BANDS, members: tuple[str, ...] = ("a", "b"),
                 seed: int = 0, fast: bool = True, validated: tuple[str, ...] = ("L1C",)) -> Path:  # fmt: skip
    patch, fcn = _graphs(len(bands), len(members), seed)
    card = ModelCard(name=name, spec=BandSpec(bands=list(bands)), members=list(members), architecture="tiny-test",
                     fcn_stride=4 if fast else None, validated_levels={lv: {} for lv in validated}, threshold=0.5)  # fmt: skip
    return save_package(folder, card, patch, fcn if fast else None)


@pytest.fixture(scope="module")
def pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_package(tmp_path_factory.mktemp("pkg") / "tiny")


def smooth_dn(shape: tuple[int, int], seed: int = 0, bands: int = 3) -> np.ndarray:
    """(bands, H, W) uint16 DN with structure at several scales (patch scores then vary)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((bands, *shape))
    for cells in (3, 12, 40):
        coarse = rng.random((bands, cells + 1, cells + 1))
        yi = np.linspace(0, cells, shape[0]).astype(int)
        xi = np.linspace(0, cells, shape[1]).astype(int)
        out += coarse[:, yi][:, :, xi]
    out += rng.random(out.shape) * 0.3
    return np.clip(out / out.max() * 3200, 1, 65535).astype(np.uint16)


def write_raster(path: Path, dn: np.ndarray, row0: int, col0: int, *, bands: tuple[str, ...] = BANDS, level: str = "L1C",
                 tile: Tile = T0, start: str = "2024-01-01", end: str = "2024-12-31") -> Path:  # fmt: skip
    tags = {"START_DATE": start, "END_DATE": end}
    return write_mosaic(path, dn, tile, row0, col0, bands=bands, level=level, tags=tags, cog=False)


def global_rc(df: gpd.GeoDataFrame, origin: Tile = T0) -> np.ndarray:
    """(row, col) of each output row's top-left pixel relative to ``origin``'s top-left pixel."""
    out = []
    for tid, r, c in zip(df["tile"], df["row"], df["col"], strict=True):
        t = Tile.from_id(tid, origin.tile_px, origin.resolution)
        out.append(((origin.iy - t.iy) * origin.tile_px + r, (t.ix - origin.ix) * origin.tile_px + c))
    return np.array(out, dtype=int).reshape(-1, 2)


def detect(imagery: Path, out: Path, pkg: Path | list[Path], **kw: object) -> tuple[gpd.GeoDataFrame, object]:
    models = tuple(str(p) for p in (pkg if isinstance(pkg, list) else [pkg]))
    req_kw = {k: kw.pop(k) for k in list(kw) if k in ("min_score", "min_valid", "fast", "period", "level")}
    req = DetectRequest(models=models, period=str(req_kw.pop("period", "")), tile_px=int(kw.pop("tile_px", TILE_PX)), **req_kw)  # type: ignore[arg-type]
    kw.setdefault("scheduler", "synchronous")
    kw.setdefault("progress", False)
    res = run_detect(imagery, req, out, **kw)  # type: ignore[arg-type]
    return gpd.read_parquet(out / "patches.parquet"), res


def big_raster_scores(pkg: Path, dn: np.ndarray, fast: bool = True) -> np.ndarray:
    """M×R×C member probabilities on the lattice of the whole raster, in one piece (no tiles)."""
    p = load_package(pkg)
    return p.score_tile(p.card.spec.rendering.apply(np.moveaxis(dn, 0, -1)), fast=fast)


# --------------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5), st.sampled_from([(8, 4), (6, 3), (4, 4)]), st.floats(0.05, 0.95))
def test_valid_fraction_equals_counting_each_patch(seed: int, cells: int, ps: tuple[int, int], density: float) -> None:
    p, s = ps
    rng = np.random.default_rng(seed)
    size = (cells - 1) * s + p - int(rng.integers(0, 3))  # sometimes short: missing pixels count as invalid
    valid = rng.random((size, size)) < density
    got = valid_fraction(valid, p, s, cells)
    for i in range(cells):
        for j in range(cells):
            want = valid[i * s : i * s + p, j * s : j * s + p].sum() / (p * p)
            assert got[i, j] == pytest.approx(want)


def test_footprints_are_the_utm_squares_in_wgs84() -> None:
    rows, cols = np.array([0, 24, 72]), np.array([0, 48, 24])
    wgs = footprints_wgs84(T0, rows, cols, 48)
    utm = footprints_utm(T0, rows, cols, 48)
    back = shapely.transform(wgs, lambda xy: np.column_stack(_transformer(4326, T0.epsg).transform(xy[:, 0], xy[:, 1])))
    for a, b in zip(back, utm, strict=True):
        assert a.hausdorff_distance(b) < 1e-3  # millimetres
        assert b.area == pytest.approx(480.0 * 480.0)
    assert all(shapely.is_ccw(g.exterior) for g in wgs)  # RFC 7946 winding


@pytest.mark.parametrize(
    ("start", "end", "want"),
    [("2024-01-01", "2024-12-31", "2024"), ("2024-01-01", "2025-01-01", "2024"), ("2024-07-01", "2024-09-30", "2024Q3"),
     ("2024-10-01", "2025-01-01", "2024Q4"), ("2024-02-01", "2024-05-01", None), (None, "2024-12-31", None)],
)  # fmt: skip
def test_period_from_dates(start: str | None, end: str | None, want: str | None) -> None:
    assert period_from_dates(start, end) == want


def test_member_columns_unique_for_ensembles() -> None:
    c = ModelCard(name="m", spec=BandSpec(), members=["a", "b"])
    assert member_columns([c]) == ["score_a", "score_b"]
    assert member_columns([c, c]) == ["score_m_a", "score_m_b", "score_m_a_2", "score_m_b_2"]


# --------------------------------------------------------------------------------------------------
# Tiles, halo, lattice: the same scores as one big raster, every patch exactly once
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, int, int]:
    """A 264 × 312 px raster starting at pixel (48, 24) of T0: it spans 4 × 4 tiles of 96 px."""
    dn = smooth_dn((264, 312), seed=3)
    row0, col0 = 48, 24
    return write_raster(tmp_path_factory.mktemp("img") / "mosaic.tif", dn, row0, col0), dn, row0, col0


@pytest.mark.parametrize("fast", [True, False])
def test_tiles_give_the_scores_of_one_big_raster_each_patch_once(mosaic: tuple, pkg: Path, tmp_path: Path, fast: bool) -> None:
    path, dn, row0, col0 = mosaic
    got, res = detect(path, tmp_path / "out", pkg, min_score=0.0, min_valid=1.0, fast=fast)
    assert len(res.plan.jobs) == 16 and res.ok
    big = big_raster_scores(pkg, dn, fast=True)  # M×R×C over the whole raster
    rc = global_rc(got)
    assert len(np.unique(rc, axis=0)) == len(rc), "a patch was written twice"
    assert set(map(tuple, rc)) == {(row0 + 24 * i, col0 + 24 * j) for i in range(big.shape[1]) for j in range(big.shape[2])}
    i, j = (rc[:, 0] - row0) // 24, (rc[:, 1] - col0) // 24
    np.testing.assert_allclose(got["score_a"], big[0, i, j], atol=1e-5)
    np.testing.assert_allclose(got["score_b"], big[1, i, j], atol=1e-5)
    np.testing.assert_allclose(got["score"], big[:, i, j].mean(0), atol=1e-5)
    assert got["score"].std() > 0.05  # the comparison is not between constants
    assert set(got["period"]) == {"2024"} and set(got["epsg"]) == {32721} and (got["valid_frac"] == 1).all()
    paths = {json.loads(tile_paths(tmp_path / "out", t)[1].read_text())["path"] for t in res.plan.tile_ids}
    assert paths <= ({"fcn", "none"} if fast else {"patch", "none"})
    # the polygons are the patches' UTM squares
    utm = got.to_crs(T0.epsg).geometry
    left, _, _, top = T0.bounds
    np.testing.assert_allclose(utm.bounds["minx"], left + rc[:, 1] * 10.0, atol=1e-3)
    np.testing.assert_allclose(utm.bounds["maxy"], top - rc[:, 0] * 10.0, atol=1e-3)


def test_patch_straddling_a_tile_edge_uses_the_neighbours_pixels(mosaic: tuple, pkg: Path) -> None:
    """The last owned patch of a tile reaches 24 px into the next tile: read with the halo."""
    path, dn, row0, col0 = mosaic
    tile = Tile(T0.zone, T0.ix + 1, T0.iy - 1, TILE_PX, 10.0)  # fully inside the raster
    tr = read_tile(open_imagery(path).rasters, tile, list(BANDS), halo_px=24)
    r, c = TILE_PX - row0, TILE_PX - col0  # the tile's top-left pixel, in raster pixels
    assert tr.valid.all()
    np.testing.assert_array_equal(tr.dn, np.moveaxis(dn, 0, -1)[r : r + 120, c : c + 120])


# --------------------------------------------------------------------------------------------------
# Valid data: nodata, clear counts, all-empty tiles
# --------------------------------------------------------------------------------------------------


def test_patches_without_enough_valid_data_are_skipped_and_counted(pkg: Path, tmp_path: Path) -> None:
    t192 = Tile(21, 250, -350, 192, 10.0)
    dn = smooth_dn((192, 192), seed=5)
    dn[:, 0:24, 0:24] = 0  # nodata: 1/4 of patch (0,0)
    dn[:, 96:192, 96:192] = 0  # a whole nodata quadrant
    write_raster(tmp_path / "x.tif", dn, 0, 0, tile=t192)
    clear = np.full((1, 192, 192), 3, np.uint16)
    clear[:, 0:48, 144:192] = 0  # zero clear observations: patch (0, 144) has no valid pixel
    write_mosaic(tmp_path / "x_clear.tif", clear, t192, 0, 0, bands=("clear_count",), cog=False)
    assert open_imagery(tmp_path).rasters[0].clear_path == str(tmp_path / "x_clear.tif")
    got, res = detect(tmp_path, tmp_path / "out", pkg, min_score=0.0, min_valid=0.8, tile_px=192)
    # the tiles west and north reach into the raster only through their halo: at most half a patch
    # is valid there, so with min_valid 0.8 they are not even planned
    assert res.plan.tile_ids == [t192.id]
    s = json.loads(tile_paths(tmp_path / "out", t192.id)[1].read_text())
    rc = set(zip(got["row"], got["col"], strict=True))
    assert (0, 0) not in rc and (0, 144) not in rc and (120, 120) not in rc
    assert (0, 24) in rc and (48, 0) in rc
    assert s["patches"] == 64 and s["scored"] + s["skipped_nodata"] + s["skipped_low_valid"] == 64
    assert s["written"] == len(got) == s["scored"]
    # by hand: lattice 8×8 over 192 px (halo beyond the raster is nodata)
    valid = np.ones((216, 216), bool)
    valid[192:, :] = valid[:, 192:] = False
    valid[0:24, 0:24] = False
    valid[96:192, 96:192] = False
    valid[0:48, 144:192] = False
    want = valid_fraction(valid, 48, 24, 8)
    assert s["scored"] == int((want >= 0.8).sum())
    assert s["skipped_nodata"] == int((want == 0).sum())
    np.testing.assert_allclose(np.sort(got["valid_frac"]), np.sort(want[want >= 0.8]), atol=1e-6)
    assert (got["valid_frac"] >= 0.8).all()


def test_tiles_holding_imagery_only_in_their_halo_score_the_straddling_patches(pkg: Path, tmp_path: Path) -> None:
    t192 = Tile(21, 250, -350, 192, 10.0)
    write_raster(tmp_path / "x.tif", smooth_dn((192, 192), seed=6), 0, 0, tile=t192)
    got, res = detect(tmp_path / "x.tif", tmp_path / "out", pkg, min_score=0.0, min_valid=0.5, tile_px=192)
    west, north = Tile(21, 249, -350, 192, 10.0), Tile(21, 250, -349, 192, 10.0)
    assert sorted(res.plan.tile_ids) == sorted([t192.id, west.id, north.id, Tile(21, 249, -349, 192, 10.0).id])
    w = got[got["tile"] == west.id]
    assert sorted(w["row"]) == list(range(0, 168, 24)) and set(w["col"]) == {168} and (w["valid_frac"] == 0.5).all()
    assert set(got[got["tile"] == north.id]["row"]) == {168}
    rc = global_rc(got, t192)
    assert len({tuple(v) for v in rc}) == len(rc)  # each patch once, whichever tile owns it


def test_all_nodata_imagery_is_skipped_not_scored(pkg: Path, tmp_path: Path) -> None:
    img = write_raster(tmp_path / "empty.tif", np.zeros((3, 96, 96), np.uint16), 0, 0)
    got, res = detect(img, tmp_path / "out", pkg, min_score=0.0)
    assert res.ok and len(got) == 0
    assert res.totals["scored"] == 0 and res.totals["skipped_nodata"] == res.totals["patches"] > 0
    from minewatch.postprocess.io import read_patches

    assert len(read_patches(tmp_path / "out" / "patches.parquet")) == 0  # the next stage reads the empty file


def test_min_score_drops_rows_but_counts_them(mosaic: tuple, pkg: Path, tmp_path: Path) -> None:
    path = mosaic[0]
    all_rows, _ = detect(path, tmp_path / "all", pkg, min_score=0.0)
    cut = float(np.quantile(all_rows["score"], 0.6))
    some, res = detect(path, tmp_path / "some", pkg, min_score=cut)
    assert len(some) == int((all_rows["score"] >= cut).sum()) == res.totals["written"]
    assert res.totals["scored"] == len(all_rows)
    summary = json.loads((tmp_path / "some" / "summary.json").read_text())
    assert summary["totals"]["written"] == len(some) and summary["complete"]


# --------------------------------------------------------------------------------------------------
# Bands, levels, ensembles
# --------------------------------------------------------------------------------------------------


def test_model_bands_are_picked_by_name_and_rendered(pkg: Path, tmp_path: Path) -> None:
    """Imagery with 5 bands in another order scores the same as the RGB raster."""
    dn = smooth_dn((96, 96), seed=8, bands=5)
    rgb = write_raster(tmp_path / "rgb" / "a.tif", dn[[2, 1, 0]], 0, 0)  # B4, B3, B2
    five = write_raster(tmp_path / "five" / "a.tif", dn, 0, 0, bands=("B2", "B3", "B4", "B8", "B11"))
    a, _ = detect(rgb, tmp_path / "o1", pkg, min_score=0.0)
    b, _ = detect(five, tmp_path / "o2", pkg, min_score=0.0)
    assert len(a) > 0
    np.testing.assert_array_equal(a["score"], b["score"])


def test_missing_band_is_one_error_line_and_no_output(pkg: Path, tmp_path: Path) -> None:
    img = write_raster(tmp_path / "nir.tif", smooth_dn((96, 96), bands=3), 0, 0, bands=("B8", "B4", "B3"))
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["detect", "--model", str(pkg), "--imagery", str(img), "--out", str(out), "--scheduler", "synchronous"])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines == [f"minewatch: error: {img}: imagery lacks band(s) B2 that the model needs (B4,B3,B2); it has B8,B4,B3"]
    assert not out.exists()


def test_unvalidated_level_warns(pkg: Path, tmp_path: Path) -> None:
    img = write_raster(tmp_path / "l2a.tif", smooth_dn((96, 96)), 0, 0, level="L2A")
    r = CliRunner().invoke(cli, ["detect", "--model", str(pkg), "--imagery", str(img), "--out", str(tmp_path / "o"), "--scheduler", "synchronous", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "warning: model 'tiny' was trained on L1C and validated on ['L1C'], not on L2A imagery" in r.output
    ok = write_raster(tmp_path / "l1c.tif", smooth_dn((96, 96)), 0, 0, level="L1C")
    r = CliRunner().invoke(cli, ["detect", "--model", str(pkg), "--imagery", str(ok), "--out", str(tmp_path / "o2"), "--scheduler", "synchronous", "--quiet"])
    assert r.exit_code == 0 and "warning" not in r.output


def test_run_time_ensemble_keeps_members_and_averages(mosaic: tuple, pkg: Path, tmp_path: Path) -> None:
    other = make_package(tmp_path / "other", name="other", members=("m0",), seed=7)
    got, res = detect(mosaic[0], tmp_path / "out", [pkg, other], min_score=0.0)
    cols = ["score_tiny_a", "score_tiny_b", "score_other_m0"]
    assert [c for c in got.columns if c.startswith("score_")] == cols
    np.testing.assert_allclose(got["score"], got[cols].mean(axis=1), atol=1e-6)
    alone, _ = detect(mosaic[0], tmp_path / "alone", other, min_score=0.0)
    np.testing.assert_allclose(got["score_other_m0"].to_numpy(), alone["score_m0"].to_numpy(), atol=1e-6)


def test_ensemble_of_different_lattices_is_refused(pkg: Path, tmp_path: Path) -> None:
    odd = make_package(tmp_path / "odd", name="odd")
    card = json.loads((odd / "card.json").read_text())
    card["step_px"] = 16
    (odd / "card.json").write_text(json.dumps(card))
    with pytest.raises(MinewatchError, match="an ensemble needs one lattice"):
        Scorer.load([pkg, odd])


# --------------------------------------------------------------------------------------------------
# Inputs: folder, STAC, other grids
# --------------------------------------------------------------------------------------------------


def _stac_item(tif: Path, tile: Tile, level: str, clear: Path | None = None) -> dict:
    assets = {"composite": {"href": tif.name, "type": "image/tiff; application=geotiff; profile=cloud-optimized", "roles": ["data"],
                            "eo:bands": [{"name": b} for b in BANDS]}}  # fmt: skip
    if clear is not None:
        assets["clear_count"] = {"href": clear.name, "type": "image/tiff", "roles": ["metadata"]}
    g = tile.geometry_wgs84()
    return {"type": "Feature", "stac_version": "1.1.0", "id": tile.id, "geometry": shapely.geometry.mapping(g), "bbox": list(g.bounds),
            "properties": {"datetime": None, "start_datetime": "2024-07-01T00:00:00Z", "end_datetime": "2024-09-30T23:59:59Z",
                           "processing:level": level, "minewatch:tile_px": tile.tile_px}, "assets": assets, "links": []}  # fmt: skip


def test_stac_item_collection_of_tile_composites(mosaic: tuple, pkg: Path, tmp_path: Path) -> None:
    """Composites as the imagery stage writes them (one COG per tile, clear counts, STAC items) give
    the same scores as one raster; period and level come from the items."""
    _, dn, row0, col0 = mosaic
    d = tmp_path / "comp"
    d.mkdir()
    feats = []
    full = np.zeros((3, 4 * TILE_PX, 4 * TILE_PX), np.uint16)
    full[:, row0 : row0 + dn.shape[1], col0 : col0 + dn.shape[2]] = dn
    for a in range(4):
        for b in range(4):
            t = Tile(T0.zone, T0.ix + b, T0.iy - a, TILE_PX, 10.0)
            part = full[:, a * TILE_PX : (a + 1) * TILE_PX, b * TILE_PX : (b + 1) * TILE_PX]
            tif = write_mosaic(d / f"{t.id}.tif", part, t, 0, 0, cog=True, tags={})
            clear = write_mosaic(d / f"{t.id}_clear.tif", (part[:1] > 0).astype(np.uint16) * 5, t, 0, 0, bands=("clear_count",), cog=False)
            feats.append(_stac_item(tif, t, "L1C", clear))
    items = d / "items.json"
    items.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    im = open_imagery(items)
    assert len(im.rasters) == 16 and im.tile_px == TILE_PX and im.levels == ["L1C"] and all(r.clear_path for r in im.rasters)
    got, res = detect(items, tmp_path / "out", pkg, min_score=0.0, min_valid=1.0)
    ref, _ = detect(mosaic[0], tmp_path / "ref", pkg, min_score=0.0, min_valid=1.0)
    assert set(got["period"]) == {"2024Q3"} and res.plan.level == "L1C"
    key = ["tile", "row", "col"]
    a, b = got.sort_values(key).reset_index(drop=True), ref.sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a[key].to_numpy(), b[key].to_numpy())
    np.testing.assert_allclose(a["score"], b["score"], atol=1e-6)


def test_raster_off_the_lattice_is_reprojected_onto_the_tiles(pkg: Path, tmp_path: Path) -> None:
    """A raster in WGS84 lon/lat (another CRS, another pixel grid) is warped onto the tile grid."""
    from rasterio.warp import calculate_default_transform, reproject

    dn = smooth_dn((192, 192), seed=11)
    utm = write_raster(tmp_path / "utm.tif", dn, 0, 0)
    with rasterio.open(utm) as src:
        tr, w, h = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        out = np.zeros((3, h, w), np.uint16)
        for k in range(3):
            reproject(dn[k], out[k], src_transform=src.transform, src_crs=src.crs, dst_transform=tr, dst_crs="EPSG:4326", src_nodata=0, dst_nodata=0)
    p = tmp_path / "ll" / "lonlat.tif"
    p.parent.mkdir()
    with rasterio.open(p, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint16", crs="EPSG:4326", transform=tr, nodata=0) as dst:
        dst.write(out)
        for k, b in enumerate(BANDS, 1):
            dst.set_band_description(k, b)
        dst.update_tags(PROCESSING_LEVEL="L1C")
    got, res = detect(p, tmp_path / "o", pkg, min_score=0.0, period="2024", min_valid=1.0)
    ref, _ = detect(utm, tmp_path / "r", pkg, min_score=0.0, min_valid=1.0)
    assert res.ok and T0.id in res.plan.tile_ids
    # the warped raster covers the same ground: nearly the same patches, close scores inside
    common = ref.merge(got, on=["tile", "row", "col"], suffixes=("_ref", "_warp"))
    assert len(common) >= 0.6 * len(ref)
    assert np.corrcoef(common["score_ref"], common["score_warp"])[0, 1] > 0.8


def test_roi_keeps_only_the_tiles_it_touches(mosaic: tuple, pkg: Path, tmp_path: Path) -> None:
    inner = Tile(T0.zone, T0.ix + 1, T0.iy - 1, TILE_PX, 10.0)
    got, res = detect(mosaic[0], tmp_path / "o", pkg, min_score=0.0, roi=inner.geometry_wgs84().buffer(-1e-4))
    assert res.plan.tile_ids == [inner.id] and set(got["tile"]) == {inner.id} and len(got) == 16


def test_imagery_errors_are_one_line() -> None:
    with pytest.raises(MinewatchError, match="imagery not found"):
        open_imagery("/nonexistent/x.tif")


# --------------------------------------------------------------------------------------------------
# Resume, Dask
# --------------------------------------------------------------------------------------------------


def test_rerun_skips_finished_tiles_and_redoes_lost_ones(mosaic: tuple, pkg: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first, res1 = detect(mosaic[0], out, pkg, min_score=0.2)
    ids = res1.plan.tile_ids
    lost = ids[5]
    tile_paths(out, lost)[0].unlink()
    kept = {t: tile_paths(out, t)[0].stat().st_mtime_ns for t in ids if t != lost}
    again, res2 = detect(mosaic[0], out, pkg, min_score=0.2)
    assert res2.done == [lost] and len(res2.skipped) == len(ids) - 1
    assert all(tile_paths(out, t)[0].stat().st_mtime_ns == m for t, m in kept.items())
    assert first.equals(again)
    with pytest.raises(MinewatchError, match="different parameters"):
        detect(mosaic[0], out, pkg, min_score=0.3)


def test_local_cluster_with_two_workers_gives_the_same_rows(mosaic: tuple, pkg: Path, tmp_path: Path) -> None:
    ref, _ = detect(mosaic[0], tmp_path / "sync", pkg, min_score=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got, res = detect(mosaic[0], tmp_path / "dask", pkg, min_score=0.0, scheduler=None, workers=2)
    assert res.ok and len(res.done) == 16
    assert got.equals(ref)


def test_scheduler_address_runs_on_an_existing_cluster(mosaic: tuple, pkg: Path, tmp_path: Path) -> None:
    import logging

    from distributed import LocalCluster

    ref, _ = detect(mosaic[0], tmp_path / "sync", pkg, min_score=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None, silence_logs=logging.ERROR) as cluster:
            got, res = detect(mosaic[0], tmp_path / "addr", pkg, min_score=0.0, scheduler=cluster.scheduler_address)
    assert res.ok and got.equals(ref)


def test_geojson_and_metadata_of_the_region_file(mosaic: tuple, pkg: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from minewatch.postprocess.io import read_metadata

    got, _ = detect(mosaic[0], tmp_path / "o", pkg, min_score=0.3, geojson=True)
    doc = json.loads((tmp_path / "o" / "patches.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == len(got) > 0 and "crs" not in doc
    assert doc["minewatch"]["parameters"]["min_score"] == 0.3
    f = doc["features"][0]
    assert set(f["properties"]) == {"tile", "row", "col", "epsg", "score", "score_a", "score_b", "valid_frac", "period",
                                    "mined_tl", "mined_tr", "mined_bl", "mined_br"}
    assert read_metadata(tmp_path / "o" / "patches.parquet")["command"] == "detect"
    geo = json.loads(pq.read_schema(tmp_path / "o" / "patches.parquet").metadata[b"geo"])
    bbox = geo["columns"]["geometry"]["bbox"]
    np.testing.assert_allclose(bbox, got.total_bounds, atol=1e-9)  # the merged file's bbox covers every tile
    assert gpd.read_parquet(tmp_path / "o" / "patches.parquet").crs.to_epsg() == 4326


# --------------------------------------------------------------------------------------------------
# minewatch run
# --------------------------------------------------------------------------------------------------


def test_run_with_existing_imagery_and_roi(mosaic: tuple, pkg: Path, tmp_path: Path) -> None:
    from minewatch.runs import verify_run

    path, dn, row0, col0 = mosaic
    inner = Tile(T0.zone, T0.ix + 1, T0.iy - 1, TILE_PX, 10.0).geometry_wgs84().buffer(-1e-4)
    roi = tmp_path / "roi.geojson"
    roi.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(inner)}))
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["run", "--roi", str(roi), "--imagery", str(path), "--model", str(pkg), "--out", str(out),
                                 "--scheduler", "synchronous", "--quiet", "--t-main", "0.5", "--min-score", "0.3"])  # fmt: skip
    assert r.exit_code == 0, r.output
    patches = gpd.read_parquet(out / "detect" / "patches.parquet")
    assert len(patches) > 0 and (patches["score"] >= 0.3).all()
    assert (out / "postprocess" / "mining.parquet").is_file()
    mining = gpd.read_parquet(out / "postprocess" / "mining.parquet")
    if len(mining):
        assert (out / "map.html").is_file()
    assert verify_run(out) == []


def test_run_without_roi_or_imagery_needs_an_out_for_roi_runs(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["run", "--roi", str(tmp_path / "nope.geojson")])
    assert r.exit_code == 2 and "--out: give an output folder" in r.output


def test_copy_of_package_scores_identically(pkg: Path, tmp_path: Path) -> None:
    shutil.copytree(pkg, tmp_path / "copy")
    x = np.random.default_rng(0).integers(0, 255, (4, 48, 48, 3)).astype(np.float32)
    np.testing.assert_array_equal(Scorer.load([pkg]).packages[0].score_patches(x), Scorer.load([tmp_path / "copy"]).packages[0].score_patches(x))


def test_run_composites_the_roi_from_a_stac_catalog_then_detects(pkg: Path, tmp_path: Path) -> None:
    """``minewatch run --roi --period``: the imagery stage composites the model's bands at its level
    from a (local, synthetic) STAC catalog, then detect reads the composites' STAC collection."""
    import datetime as dt

    from minewatch.imagery.synthetic import SceneSpec, make_catalog
    from minewatch.runs import load_manifest

    tiles = [T0, Tile(T0.zone, T0.ix + 1, T0.iy, TILE_PX, 10.0)]
    left, bottom, _, top = T0.bounds
    right = tiles[1].bounds[2]
    cat = make_catalog(tmp_path / "cat", epsg=T0.epsg, bounds=(left - 600, bottom - 600, right + 600, top + 600),
                       scenes=[SceneSpec(dt.date(2024, m, 5), cloud=0.2) for m in (2, 5, 8)], bands=("B2", "B3", "B4"), level="L1C", seed=4)  # fmt: skip
    roi = tmp_path / "roi.geojson"
    geom = shapely.union_all([t.geometry_wgs84() for t in tiles]).buffer(-1e-4)
    roi.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(geom)}))
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["run", "--roi", str(roi), "--period", "2024", "--source", str(cat), "--model", str(pkg), "--out", str(out),
                                 "--tile-px", str(TILE_PX), "--scheduler", "synchronous", "--quiet", "--min-score", "0"])  # fmt: skip
    assert r.exit_code == 0, r.output
    comp = load_manifest(out / "composite")
    assert comp["parameters"]["bands"] == ["B4", "B3", "B2"] and comp["parameters"]["level"] == "L1C"
    assert comp["parameters"]["start"] == "2024-01-01" and comp["parameters"]["end"] == "2024-12-31"
    patches = gpd.read_parquet(out / "detect" / "patches.parquet")
    assert set(patches["tile"]) <= {t.id for t in tiles} and len(patches) > 0 and set(patches["period"]) == {"2024"}
    s = json.loads((out / "detect" / "summary.json").read_text())
    assert s["level"] == "L1C" and not s["warnings"]
    from minewatch.runs import verify_run

    assert verify_run(out) == []


def test_a_failing_tile_is_recorded_the_rest_finish_and_a_rerun_completes(mosaic: tuple, pkg: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A tile whose read fails (e.g. a dropped connection) is recorded as failed with one line, the
    other tiles finish, the command exits 1; the same command again redoes only that tile."""
    import minewatch.detect.engine as engine
    from minewatch.runs import load_manifest, verify_run

    victim = Tile(T0.zone, T0.ix + 1, T0.iy - 1, TILE_PX, 10.0).id
    real = engine.read_tile

    def flaky(refs, tile, bands, halo):  # noqa: ANN001, ANN202
        if tile.id == victim:
            raise OSError("connection reset while reading a block")
        return real(refs, tile, bands, halo)

    monkeypatch.setattr(engine, "read_tile", flaky)
    out = tmp_path / "out"
    args = ["detect", "--model", str(pkg), "--imagery", str(mosaic[0]), "--out", str(out), "--tile-px", str(TILE_PX),
            "--scheduler", "synchronous", "--quiet", "--min-score", "0"]  # fmt: skip
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1, r.output
    m = load_manifest(out)
    assert m["tiles"][victim] == {**m["tiles"][victim], "status": "failed", "error": "OSError: connection reset while reading a block"}
    assert sum(e["status"] == "done" for e in m["tiles"].values()) == 15
    assert "15 tiles done, 1 failed" in r.output and verify_run(out)
    assert not json.loads((out / "summary.json").read_text())["complete"]
    monkeypatch.setattr(engine, "read_tile", real)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert verify_run(out) == [] and json.loads((out / "summary.json").read_text())["complete"]
    ref, _ = detect(mosaic[0], tmp_path / "ref", pkg, min_score=0.0)
    assert gpd.read_parquet(out / "patches.parquet").equals(ref)
