"""End to end on real pixels with the default model: a georeferenced mosaic of real chips.

400 real 48 px chips (160 mines, 240 not-mines) from the site-level validation split the default
model was not trained on are converted back to L1C DN with the inverse rendering, laid edge to edge
on the 24 px lattice and written as a GeoTIFF in UTM zone 20S on the global grid, straddling a tile
corner (2 × 2 tiles of 1008 px). ``minewatch detect --model default`` must then score the patches
aligned on the chips as the model scores the chips themselves (sensitivity and specificity equal to
the chip-level figures computed here with ``score_patches``), put each polygon where its chip was
placed, give the same numbers through the fast and per-patch paths, and through tiles as over the
whole raster at once.
"""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner

from minewatch.chips.splits import split_by_site
from minewatch.cli.main import cli
from minewatch.config import package_data_dir
from minewatch.detect.demo import cell_polygons, chip_mosaic, write_mosaic
from minewatch.detect.engine import DetectRequest, run_detect
from minewatch.grid import Tile, _transformer
from minewatch.models.package import load_package

pytestmark = pytest.mark.skipif(not (package_data_dir() / "models" / "default" / "card.json").exists(), reason="default model not shipped yet")

ANCHOR = Tile(20, 40, -60)  # zone 20 south, about 63°W 5.4°S
ROW0 = COL0 = 528  # 22 steps of 24 px: the 960 px mosaic crosses into the tiles east, south and south-east
GRID = 20
N_MINES = 160


@pytest.fixture(scope="module")
def e2e(real_chips, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: ANN001
    labels = np.asarray(real_chips.labels)
    _, val = split_by_site(real_chips.meta, 0.15, seed=0)
    rng = np.random.default_rng(1)
    picks = np.concatenate([rng.choice(val[labels[val] == 1], N_MINES, replace=False), rng.choice(val[labels[val] == 0], GRID * GRID - N_MINES, replace=False)])
    layout = rng.permutation(picks).reshape(GRID, GRID)
    d = tmp_path_factory.mktemp("e2e")
    img = write_mosaic(d / "mosaic.tif", chip_mosaic(real_chips.pixels, layout), ANCHOR, ROW0, COL0, cog=False)
    out = d / "det"
    r = CliRunner().invoke(cli, ["detect", "--model", "default", "--imagery", str(img), "--out", str(out), "--period", "2024",
                                 "--min-score", "0", "--scheduler", "synchronous", "--precision", "fp32", "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    pkg = load_package("default")
    return {"layout": layout, "img": img, "out": out, "rows": gpd.read_parquet(out / "patches.parquet"), "pkg": pkg,
            "chips": real_chips, "labels": labels, "dir": d}  # fmt: skip


def _global(df: gpd.GeoDataFrame) -> np.ndarray:
    """(row, col) of each row's top-left pixel relative to the anchor tile's top-left pixel."""
    t = [Tile.from_id(x) for x in df["tile"]]
    return np.column_stack([[(ANCHOR.iy - a.iy) * 1008 + r for a, r in zip(t, df["row"], strict=True)],
                            [(a.ix - ANCHOR.ix) * 1008 + c for a, c in zip(t, df["col"], strict=True)]])  # fmt: skip


def _aligned(e2e: dict) -> tuple[np.ndarray, gpd.GeoDataFrame]:
    """The rows of patches aligned on chip cells, in layout (row-major) order."""
    rows = e2e["rows"]
    g = _global(rows)
    index = {(int(a), int(b)): k for k, (a, b) in enumerate(g)}
    order = [index[(ROW0 + 48 * i, COL0 + 48 * j)] for i in range(GRID) for j in range(GRID)]
    return e2e["layout"].ravel(), rows.iloc[order].reset_index(drop=True)


def test_mine_chips_score_high_forest_low_as_at_chip_level(e2e: dict) -> None:
    chip_idx, aligned = _aligned(e2e)
    pkg, chips, labels = e2e["pkg"], e2e["chips"], e2e["labels"]
    chip_scores = pkg.score_patches(chips.pixels[chip_idx].astype(np.float32)).mean(axis=1)  # chips hold rendered values; ensemble mean
    det = aligned["score"].to_numpy()
    # the same pixels: DN → rendering gives back the chip's bytes, so the scores agree
    assert np.abs(det - chip_scores).max() < 1e-4
    y = labels[chip_idx] == 1
    t = pkg.card.threshold

    def sens_spec(s: np.ndarray) -> tuple[float, float]:
        return float((s[y] >= t).mean()), float((s[~y] < t).mean())

    sens_chip, spec_chip = sens_spec(chip_scores)
    sens_det, spec_det = sens_spec(det)
    assert abs(sens_det - sens_chip) <= 1 / N_MINES and abs(spec_det - spec_chip) <= 1 / (GRID * GRID - N_MINES)
    # and the model does its job on these held-out chips (card, site-level val: sens 0.64, spec 0.98)
    assert sens_det > 0.5 and spec_det > 0.93
    assert np.median(det[y]) > 0.85
    forest = chips.meta["source"].to_numpy()[chip_idx] == "random_negatives10k_2025-08"
    assert forest.sum() >= 10 and np.median(det[forest]) < 0.15 and (det[forest] < t).mean() > 0.95


def test_polygons_land_where_the_chips_were_placed(e2e: dict) -> None:
    _, aligned = _aligned(e2e)
    wgs, _ = cell_polygons(ANCHOR, ROW0, COL0, (GRID, GRID))
    # the chip centres, independently: pixel centres of the written GeoTIFF, projected with pyproj
    with rasterio.open(e2e["img"]) as src:
        ii, jj = np.meshgrid(np.arange(GRID) * 48 + 24, np.arange(GRID) * 48 + 24, indexing="ij")
        xs, ys = rasterio.transform.xy(src.transform, ii.ravel(), jj.ravel(), offset="ul")
        assert src.crs.to_epsg() == 32720
    lon, lat = _transformer(32720, 4326).transform(np.asarray(xs), np.asarray(ys))
    geoms = aligned.geometry.to_numpy()
    assert shapely.contains_xy(geoms, lon, lat).all()
    assert max(a.hausdorff_distance(b) for a, b in zip(geoms, wgs, strict=True)) < 1e-7  # ~1 cm
    # and the patch is 480 m square on the ground
    area = gpd.GeoSeries(geoms, crs=4326).to_crs(32720).area
    np.testing.assert_allclose(area, 480.0**2, rtol=1e-6)


def test_fast_path_equals_per_patch_on_real_data(e2e: dict) -> None:
    pkg = e2e["pkg"]
    assert pkg.has_fast_path
    with rasterio.open(e2e["img"]) as src:
        x = pkg.card.spec.rendering.apply(np.moveaxis(src.read(), 0, -1))
    fast, slow = pkg.score_tile(x, fast=True), pkg.score_tile(x, fast=False)
    assert fast.shape == (len(pkg.card.members), 2 * GRID - 1, 2 * GRID - 1)
    assert np.abs(fast - slow).max() < 1e-4
    # through the engine: forced fast vs forced per-patch, every tile
    got = {}
    for flag in (True, False):
        req = DetectRequest(models=("default",), period="2024", min_score=0.0, fast=flag, precision="fp32")
        res = run_detect(e2e["img"], req, e2e["dir"] / f"engine_{flag}", scheduler="synchronous", progress=False)
        assert set(res.totals["tiles_by_path"]) <= {"fcn" if flag else "patch", "none"}
        got[flag] = gpd.read_parquet(e2e["dir"] / f"engine_{flag}" / "patches.parquet")
    a, b = got[True], got[False]
    assert len(a) == len(b) == (2 * GRID - 1) ** 2
    assert (a[["tile", "row", "col"]].to_numpy() == b[["tile", "row", "col"]].to_numpy()).all()
    assert np.abs(a["score"].to_numpy() - b["score"].to_numpy()).max() < 1e-4


def test_tiles_give_the_scores_of_the_whole_raster(e2e: dict) -> None:
    pkg, rows = e2e["pkg"], e2e["rows"]
    with rasterio.open(e2e["img"]) as src:
        members = pkg.score_tile(pkg.card.spec.rendering.apply(np.moveaxis(src.read(), 0, -1)), fast=False)
    big = members.mean(axis=0)  # the detection score: the ensemble mean
    g = _global(rows)
    assert len(rows) == big.size and len({tuple(v) for v in g}) == len(rows)  # each patch once
    assert rows["tile"].nunique() == 4  # the mosaic straddles a tile corner
    i, j = (g[:, 0] - ROW0) // 24, (g[:, 1] - COL0) // 24
    assert np.abs(rows["score"].to_numpy() - big[i, j]).max() < 1e-4
    for k, m in enumerate(pkg.card.members):  # and each member's own column
        assert np.abs(rows[f"score_{m}"].to_numpy() - members[k][i, j]).max() < 1e-4


def test_default_int8_scoring_keeps_chip_level_quality(e2e: dict) -> None:
    """``detect`` defaults to the int8 tile graph (docs/models.md): on the same real mosaic its scores
    stay close to fp32 and separate mines from forest as well, at the card's threshold."""
    out = e2e["dir"] / "det_int8"
    r = CliRunner().invoke(cli, ["detect", "--model", "default", "--imagery", str(e2e["img"]), "--out", str(out), "--period", "2024",
                                 "--min-score", "0", "--scheduler", "synchronous", "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads((out / "summary.json").read_text())["parameters"]["precision"] == "int8"
    q, f = gpd.read_parquet(out / "patches.parquet"), e2e["rows"]
    assert (q[["tile", "row", "col"]].to_numpy() == f[["tile", "row", "col"]].to_numpy()).all()
    d = np.abs(q["score"].to_numpy() - f["score"].to_numpy())
    assert 0 < d.mean() < 0.02 and d.max() < 0.35  # int8 really ran, and stayed close
    chip_idx, a8 = _aligned({**e2e, "rows": q})
    _, a32 = _aligned(e2e)
    y, t = e2e["labels"][chip_idx] == 1, e2e["pkg"].card.threshold
    s8, s32 = a8["score"].to_numpy(), a32["score"].to_numpy()
    sens, sens32 = (s8[y] >= t).mean(), (s32[y] >= t).mean()
    spec, spec32 = (s8[~y] < t).mean(), (s32[~y] < t).mean()
    assert abs(sens - sens32) <= 0.03 and abs(spec - spec32) <= 0.01, (sens, sens32, spec, spec32)
