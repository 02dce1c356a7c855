"""Mined area inside detected patches (issue 16): scar mask, per-cell fractions, each cell counted once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from test_detect import BANDS, T0, TILE_PX, detect, make_package, write_raster

from minewatch.detect.mask import QUARTER_COLUMNS, ScarRule, cell_fractions, default_rule, patch_quarters, scar_pixels
from minewatch.grid import _transformer
from minewatch.postprocess.dissolve import dissolve_patches
from minewatch.postprocess.geom import area_ha
from minewatch.postprocess.mined import cell_area_ha, cell_keys

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

FOREST = (450, 750, 850)  # L1C DN B4, B3, B2 of closed forest (dark red: chlorophyll absorbs it)
BARE = (1900, 1600, 1400)  # exposed soil / tailings
TURBID = (1250, 1150, 1100)  # sediment-laden pond


def land(shape: tuple[int, int], kind: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """(3, H, W) uint16 DN of one cover with ±8 % pixel noise."""
    rng = np.random.default_rng(seed)
    base = np.array(kind, dtype=float)[:, None, None]
    return np.clip(base * (1 + rng.uniform(-0.08, 0.08, (3, *shape))), 1, 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_package(tmp_path_factory.mktemp("pkg") / "tiny")


def polygons(patches: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    return dissolve_patches(patches.assign(period="2024"))


# ------------------------------------------------------------------------------------------- pure


def test_rule_separates_the_covers() -> None:
    rule = default_rule()
    for kind, want in ((FOREST, 0.0), (BARE, 1.0), (TURBID, 1.0)):
        dn = np.moveaxis(land((48, 48), kind), 0, -1).astype(np.float32)
        assert scar_pixels(dn, BANDS, None, rule).mean() == pytest.approx(want, abs=0.02), kind
    # with 12 bands, vegetation (high NDVI) is never scar even if it is bright red
    names = ("B4", "B3", "B2", "B8", "B11")
    red_veg = np.array([1500.0, 1400.0, 1300.0, 4500.0, 2000.0])[None, None, :]
    assert not scar_pixels(red_veg, names, None, rule).any()
    assert scar_pixels(red_veg[..., :3], BANDS, None, rule).all()  # RGB alone cannot tell


def test_cell_fractions_count_valid_pixels_only() -> None:
    scar = np.zeros((48, 72), bool)
    valid = np.ones((48, 72), bool)
    scar[:24, :12] = True  # half of cell (0, 0)
    valid[24:, 24:48] = False  # cell (1, 1) has no data
    valid[:24, 48:60] = False
    scar[:24, 60:] = True  # cell (0, 2): all its valid pixels are scar
    frac, vf = cell_fractions(scar, valid, 24)
    assert frac[0, 0] == 0.5 and frac[0, 2] == 1.0 and np.isnan(frac[1, 1]) and vf[0, 2] == 0.5
    q = patch_quarters(frac, np.array([0]), np.array([0]))
    assert q[0, 3] == pytest.approx(np.mean([0.5, 0.0, 0.0]))  # missing cell: the patch's other cells' mean


def test_cell_area_is_equal_area_not_the_nominal_utm_area() -> None:
    """Cells are measured in EPSG:6933: they sum to the footprint's equal-area hectares, not 5.76 ha each."""
    # a 2 × 2 block of patches (9 distinct cells) far from the central meridian, where the UTM scale is ~1.0008
    tile_left, top = 201_600.0, 9_400_000.0  # multiples of 240 m from easting 0 and the equator
    x0 = tile_left + np.array([0, 240, 0, 240])
    y1 = top - np.array([0, 0, 240, 240])
    utm = shapely.box(x0, y1 - 480, x0 + 480, y1)
    tr = _transformer(32721, 4326)
    wgs = shapely.transform(utm, lambda c: np.column_stack(tr.transform(c[:, 0], c[:, 1])))
    keys, edge, ok = cell_keys(wgs, np.full(4, 32721))
    assert ok.all() and len(np.unique(keys)) == 9
    uk, first = np.unique(keys.ravel(), return_index=True)
    cells_ha = cell_area_ha(uk, np.repeat(edge, 4)[first]).sum()
    union_ha = area_ha(np.array([shapely.union_all(wgs)]))[0]
    assert cells_ha == pytest.approx(union_ha, rel=1e-6)
    assert abs(cells_ha / (9 * 5.76) - 1) > 5e-4  # the UTM grid's own hectares would be off here


# ------------------------------------------------------------------------------- through detect


def test_forest_patch_gets_zero_bare_and_turbid_get_the_cell_area(pkg: Path, tmp_path: Path) -> None:
    """One 48 px patch of each cover, detected and dissolved: mined_ha ≈ 0, ≈ footprint, ≈ half."""
    got = {}
    for name, dn in {
        "forest": land((48, 48), FOREST),
        "bare": land((48, 48), BARE, 1),
        "turbid": land((48, 48), TURBID, 2),
        "half": np.concatenate([land((48, 24), FOREST, 3), land((48, 24), BARE, 4)], axis=2),
    }.items():
        img = write_raster(tmp_path / f"{name}.tif", dn, 24, 24)
        patches, _ = detect(img, tmp_path / name, pkg, min_score=0.0, period="2024")
        assert len(patches) == 1  # the neighbours hold < 0.8 valid pixels: not scored
        poly = polygons(patches)
        got[name] = (float(poly["mined_ha"].iloc[0]), float(poly["footprint_ha"].iloc[0]))
        assert poly["area_ha"].iloc[0] == poly["footprint_ha"].iloc[0]
    assert got["forest"][0] == pytest.approx(0.0, abs=0.01 * got["forest"][1])
    assert got["bare"][0] == pytest.approx(got["bare"][1], rel=0.01)
    assert got["turbid"][0] == pytest.approx(got["turbid"][1], rel=0.01)
    assert got["half"][0] == pytest.approx(got["half"][1] / 2, rel=0.02)


def scar_blobs(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    coarse = rng.random((shape[0] // 12 + 1, shape[1] // 12 + 1)) > 0.7
    scar = np.kron(coarse, np.ones((12, 12), bool))[: shape[0], : shape[1]]
    dn = np.where(scar[None], land(shape, BARE, seed), land(shape, FOREST, seed + 1))
    return dn, scar


@pytest.mark.parametrize("tile_px", [TILE_PX, 48])
def test_no_cell_counted_twice_across_overlaps_and_tile_edges(pkg: Path, tmp_path: Path, tile_px: int) -> None:
    """Every patch kept, overlapping by half and read across tile edges: mined_ha equals the scar
    pixels under the union of footprints, counted once (≈ ¼ of the naive per-patch sum)."""
    dn, scar = scar_blobs((168, 192), 7)
    row0, col0 = TILE_PX - 72, TILE_PX - 48  # straddles the corner of four 96 px tiles (and more 48 px ones)
    img = write_raster(tmp_path / "blobs.tif", dn, row0, col0)
    patches, _ = detect(img, tmp_path / f"det{tile_px}", pkg, min_score=0.0, period="2024", tile_px=tile_px)
    assert patches["tile"].nunique() >= 4
    poly = polygons(patches)
    mined = poly["mined_ha"].sum()
    # direct count: scar pixels inside the union of kept footprints (pixel grid of the raster)
    tr = _transformer(4326, T0.epsg)
    left, _, _, top = T0.bounds
    inside = np.zeros(scar.shape, bool)
    for g in patches.geometry:
        x0, y0, x1, y1 = shapely.bounds(shapely.transform(g, lambda c: np.column_stack(tr.transform(c[:, 0], c[:, 1]))))
        c0, r0 = round((x0 - left) / 10) - col0, round((top - y1) / 10) - row0
        inside[max(r0, 0) : r0 + 48, max(c0, 0) : c0 + 48] = True
    k2 = poly["footprint_ha"].sum() / (inside.sum() * 0.01)  # equal-area ha per UTM ha here
    assert mined == pytest.approx(scar[inside].sum() * 0.01 * k2, rel=1e-3)
    naive = (patches[list(QUARTER_COLUMNS)].mean(axis=1) * 23.04).sum()
    assert naive > 2.5 * mined


def test_tile_size_does_not_change_mined_area(pkg: Path, tmp_path: Path) -> None:
    dn, _ = scar_blobs((144, 168), 3)
    img = write_raster(tmp_path / "b.tif", dn, TILE_PX - 48, TILE_PX - 72)
    a = polygons(detect(img, tmp_path / "a", pkg, min_score=0.0, period="2024", tile_px=TILE_PX)[0])
    b = polygons(detect(img, tmp_path / "b", pkg, min_score=0.0, period="2024", tile_px=48)[0])
    assert a["mined_ha"].sum() == pytest.approx(b["mined_ha"].sum(), rel=1e-9)
    assert a["footprint_ha"].sum() == pytest.approx(b["footprint_ha"].sum(), rel=1e-9)


def test_patches_without_fractions_give_nan_not_the_footprint(pkg: Path, tmp_path: Path) -> None:
    img = write_raster(tmp_path / "x.tif", land((48, 96), BARE), 24, 24)
    patches, _ = detect(img, tmp_path / "x", pkg, min_score=0.0, period="2024")
    poly = polygons(patches.drop(columns=list(QUARTER_COLUMNS)))
    assert poly["mined_ha"].isna().all() and (poly["footprint_ha"] > 0).all()


# ---------------------------------------------------------------------------------------- the CLI


def _mw(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "minewatch.cli.main", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_cli_detect_masks_and_postprocess_mined_ha(pkg: Path, tmp_path: Path) -> None:
    """As typed: own working directory, relative paths with spaces; the mask COG opens in GDAL."""
    work = tmp_path / "my work"
    (work / "in put").mkdir(parents=True)
    dn, scar = scar_blobs((120, 144), 5)
    write_raster(work / "in put" / "my mosaic.tif", dn, TILE_PX - 48, TILE_PX - 72)
    r = _mw("detect", "--model", str(pkg), "--imagery", "in put/my mosaic.tif", "--out", "det out", "--period", "2024",
            "--min-score", "0", "--tile-px", str(TILE_PX), "--scheduler", "synchronous", "--masks", "--quiet", cwd=work)
    assert r.returncode == 0, r.stderr
    masks = sorted((work / "det out" / "masks").glob("*.tif"))
    assert len(masks) >= 4
    n_in = n_out = 0
    for m in masks:
        with rasterio.open(m) as src:
            assert src.dtypes == ("uint8",) and src.nodata == 255 and src.overviews(1)
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and src.crs.to_epsg() == T0.epsg
            a = src.read(1)
            assert set(np.unique(a)) <= {0, 1, 2, 255}
            n_in, n_out = n_in + int((a == 1).sum()), n_out + int((a == 2).sum())
    assert n_in > 0 and n_in + n_out == scar.sum()
    r = _mw("postprocess", "det out/patches.parquet", "--out", "post out", "--t-main", "0", "--t-iso", "0", cwd=work)
    assert r.returncode == 0, r.stderr
    assert "mined (estimate)" in r.stdout and "footprint" in r.stdout
    poly = gpd.read_parquet(work / "post out" / "mining.parquet")
    assert {"mined_ha", "footprint_ha", "area_ha"} <= set(poly.columns)
    assert (poly["mined_ha"] <= poly["footprint_ha"] + 1e-9).all() and poly["mined_ha"].sum() > 0
    # the mask's "inside" pixels are counted by mined_ha, plus the neighbours' patches reaching into a tile
    assert n_in * 0.01 * 0.999 <= poly["mined_ha"].sum() <= (n_in + n_out) * 0.01 * 1.001


def test_default_rule_is_the_calibrated_one() -> None:
    from minewatch.detect.mask import calibration

    cal = calibration()
    assert cal, "minewatch/data/mined_calibration.json is missing (python scripts/calibrate_mined.py --write)"
    assert default_rule() == ScarRule.from_dict(cal["rule"])
    assert 0 < cal["total_interval90"][0] < cal["total_interval90"][1]


def test_demo_chain_reports_mined_area_by_default_and_labels_footprints(tmp_path: Path, shared_data: Path) -> None:
    """``minewatch run --demo`` then timeline, impacts and report, as typed in a folder with spaces:
    every reader uses ``mined_ha`` unasked and says so; the footprint is labelled a footprint. The
    cell fractions detect wrote for the demo's real mine chips are the ones the calibration computes
    on the same chips (so the calibration applies to what the pipeline measures)."""
    import json

    import pandas as pd

    from minewatch.config import package_data_dir

    work = tmp_path / "my runs"
    work.mkdir()
    r = _mw("run", "--demo", "--out", "demo run", "--scheduler", "synchronous", "--quiet", "--masks", cwd=work)
    assert r.returncode == 0, r.stderr
    assert "mined area (estimate)" in r.stdout and "footprint" in r.stdout
    assert list((work / "demo run" / "detect" / "masks").glob("*.tif"))
    poly = gpd.read_parquet(work / "demo run" / "postprocess" / "mining.parquet")
    assert poly["mined_ha"].notna().all() and (poly["mined_ha"] < poly["footprint_ha"]).all()
    assert (poly["area_ha"] == poly["footprint_ha"]).all()
    mined, fp = poly["mined_ha"].sum(), poly["footprint_ha"].sum()

    from minewatch.grid import Tile

    truth = gpd.read_file(package_data_dir() / "demo" / "truth.geojson")
    rgb = np.load(shared_data / "s2_rgb_chips" / "chips.npz")["rgb"]
    rows = gpd.read_parquet(work / "demo run" / "detect" / "patches.parquet").set_index(["tile", "row", "col"])
    pairs = []
    for cell in truth[truth["truth"] == "mine"].itertuples():
        t = Tile.from_id(cell.tile)
        t = Tile(t.zone, t.ix + cell.col_px // t.tile_px, t.iy - cell.row_px // t.tile_px)
        key = (t.id, cell.row_px % t.tile_px, cell.col_px % t.tile_px)
        if key in rows.index:
            chip_dn = rgb[int(cell.chip)].astype(np.float32) / 255 * 3000  # as scripts/calibrate_mined.py
            pairs.append((float(rows.loc[key, list(QUARTER_COLUMNS)].mean()), float(scar_pixels(chip_dn, BANDS).mean())))
    got, want = np.array(pairs).T
    assert len(pairs) >= 30 and np.abs(got - want).max() < 0.01

    r = _mw("timeline", "demo run/postprocess/mining.parquet", "--out", "time line", cwd=work)
    assert r.returncode == 0, r.stderr
    assert "estimated = 'mined_ha'" in r.stdout
    t = pd.read_csv(work / "time line" / "areas.csv", dtype={"period": str})
    assert t["new_area_ha"].sum() == pytest.approx(mined, rel=1e-6) and t["new_footprint_ha"].sum() == pytest.approx(fp, rel=1e-6)

    roi = package_data_dir() / "demo" / "roi.geojson"
    r = _mw("impacts", "demo run/postprocess/mining.parquet", "--zones", str(roi), "--id-field", "name", "--out", "zone table", cwd=work)
    assert r.returncode == 0, r.stderr
    assert "apportioned 'mined_ha'" in r.stdout
    imp = pd.read_csv(work / "zone table" / "impacts.csv")
    assert imp["apportioned_ha"].sum() == pytest.approx(mined, rel=1e-6) and imp["intersect_ha"].sum() == pytest.approx(fp, rel=1e-6)
    assert json.loads((work / "zone table" / "summary.json").read_text())["parameters"]["area_field"] == "mined_ha"

    r = _mw("report", "demo run", "--out", "my report.html", "--basemap", "none", cwd=work)
    assert r.returncode == 0, r.stderr
    page = (work / "my report.html").read_text(encoding="utf-8")
    assert "Mined area (estimate)" in page and "90 % interval" in page and "footprint" in page
    assert f"{mined:,.0f} ha" in page
    html_map = (work / "demo run" / "map.html").read_text(encoding="utf-8")
    assert '"areaLabel": "Mined area (estimate)"' in html_map or '"areaLabel":"Mined area (estimate)"' in html_map


def test_readers_say_when_layers_mix_estimates_and_footprints(tmp_path: Path) -> None:
    """An older minewatch layer (footprint only) beside a current one: timeline says the estimate is
    mixed, impacts falls back to footprints and says why; neither passes a footprint off as mined."""
    from shapely.geometry import box

    old = gpd.GeoDataFrame({"period": ["2023"], "area_ha": [40.0]}, geometry=[box(-55, -5, -54.99, -4.99)], crs=4326)
    new = gpd.GeoDataFrame({"period": ["2024"], "area_ha": [40.0], "footprint_ha": [40.0], "mined_ha": [6.0]},
                           geometry=[box(-54.98, -5, -54.97, -4.99)], crs=4326)  # fmt: skip
    zones = gpd.GeoDataFrame({"zid": ["A"]}, geometry=[box(-55.1, -5.1, -54.9, -4.9)], crs=4326)
    old.to_parquet(tmp_path / "old layer.parquet")
    new.to_parquet(tmp_path / "new layer.parquet")
    zones.to_file(tmp_path / "zones.geojson")
    r = _mw("timeline", "old layer.parquet", "new layer.parquet", "--out", "tl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "estimated = mixed, per layer: 'area_ha', 'mined_ha'" in r.stdout
    r = _mw("impacts", "old layer.parquet", "new layer.parquet", "--zones", "zones.geojson", "--id-field", "zid", "--out", "imp", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "measure: footprint (whole patches; not every layer carries a mined-area field)" in r.stdout
    r = _mw("impacts", "new layer.parquet", "--zones", "zones.geojson", "--id-field", "zid", "--out", "imp2", cwd=tmp_path)
    assert "apportioned 'mined_ha'" in r.stdout
    import pandas as pd

    assert pd.read_csv(tmp_path / "imp2" / "impacts.csv")["apportioned_ha"].sum() == pytest.approx(6.0)
