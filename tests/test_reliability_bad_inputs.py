"""The bad-input catalogue through the real command line: one line naming the file (or option) and
the problem, a non-zero exit, and no partial output.

Stages covered here: ``composite`` (ROI, dates, tile budget), ``evaluate`` (model packages, chip
datasets). ``detect``, ``postprocess`` and ``impacts`` cases live in the second half of the file,
each skipped until its stage exists.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from shapely.geometry import mapping

from minewatch.bands import BandSpec
from minewatch.chips import ChipSet, save_chips
from minewatch.cli.main import cli
from minewatch.grid import Tile
from minewatch.models.package import ModelCard, save_package

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

TILE = Tile(21, 80, -28, 240, 10)
BANDS12 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]


def _err_line(result) -> str:
    """The single error line a user sees (stderr; CliRunner mixes streams in .output)."""
    lines = [ln for ln in result.output.splitlines() if ln.startswith("minewatch: error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


def _poly(x0, y0, x1, y1):
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


# --------------------------------------------------------------------------------------------------
# composite: ROI, dates, tile budget
# --------------------------------------------------------------------------------------------------

ROI_CASES = {
    "empty.geojson": ("", "file is empty"),
    "broken.geojson": ('{"type": "Feature", ', "not valid JSON"),
    "point.geojson": ({"type": "Point", "coordinates": [-55, -5]}, "is a Point, not a Polygon"),
    "utm.geojson": (_poly(600000, 9400000, 610000, 9410000), "coordinates out of lon/lat range"),
    "projected_crs.geojson": (
        {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:31981"}}, "features": [{"type": "Feature", "properties": {}, "geometry": _poly(-55, -5, -54.9, -4.9)}]},
        "declares projected CRS 'EPSG:31981'",
    ),
    "nothing.geojson": ({"type": "FeatureCollection", "features": []}, "contains no geometry"),
}


@pytest.mark.parametrize("name", sorted(ROI_CASES))
def test_composite_refuses_bad_roi_before_touching_the_output(tmp_path, name):
    content, expected = ROI_CASES[name]
    roi = tmp_path / name
    roi.write_text(content if isinstance(content, str) else json.dumps(content))
    out = tmp_path / "out"
    r = _run("composite", "--roi", str(roi), "--start", "2021-01-01", "--end", "2021-12-31", "--out", str(out), "--source", str(tmp_path / "no-catalog.json"))
    assert r.exit_code == 2
    line = _err_line(r)
    assert line.startswith(f"minewatch: error: {roi}: ") and expected in line
    assert not out.exists()


def test_composite_roi_without_crs_shapefile(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    with pytest.warns(UserWarning):
        gpd.GeoDataFrame(geometry=[box(600000, 9400000, 610000, 9410000)]).to_file(tmp_path / "aoi.shp")
    r = _run("composite", "--roi", str(tmp_path / "aoi.shp"), "--start", "2021-01-01", "--end", "2021-12-31", "--out", str(tmp_path / "out"))
    assert r.exit_code == 2 and f"{tmp_path / 'aoi.shp'}: has no CRS" in _err_line(r)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("roi", "need"),
    [
        (_poly(-54.2, -5.0, -53.8, -4.9), "zones 21 and 22"),  # across a UTM zone boundary
        (_poly(179.8, -17.2, 180.3, -16.9), "the antimeridian"),  # longitudes beyond 180
    ],
)
def test_composite_plans_zone_and_antimeridian_rois_and_enforces_the_tile_budget(tmp_path, roi, need):
    from minewatch.roi import read_roi

    p = tmp_path / "roi.geojson"
    p.write_text(json.dumps(roi))
    n = len(read_roi(p).tiles())
    assert len(read_roi(p).zones()) == 2, need
    r = _run("composite", "--roi", str(p), "--start", "2021-01-01", "--end", "2021-12-31", "--out", str(tmp_path / "out"), "--max-tiles", "3")
    assert r.exit_code == 2
    assert _err_line(r) == f"minewatch: error: {p}: ROI needs {n:,} tiles of 10.08 km, more than --max-tiles 3; split the ROI or raise --max-tiles"
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> tuple[Path, Path]:
    from minewatch.imagery.synthetic import SceneSpec, make_catalog

    root = tmp_path_factory.mktemp("badcat")
    left, bottom, right, top = TILE.bounds
    cat = make_catalog(root / "cat", epsg=TILE.epsg, bounds=(left - 600, bottom - 600, right + 600, top + 600), scenes=[SceneSpec(dt.date(2021, 3, 4)), SceneSpec(dt.date(2021, 6, 4))], bands=("B2", "B3", "B4"), seed=5)
    roi = root / "roi.geojson"
    roi.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": mapping(TILE.geometry_wgs84().buffer(-2e-4))}))
    return cat, roi


def _composite(catalog, out: Path, start: str, end: str, *extra: str):
    cat, roi = catalog
    return _run("composite", "--roi", str(roi), "--start", start, "--end", end, "--out", str(out), "--source", str(cat), "--bands", "B4,B3,B2", "--tile-px", "240", "--scheduler", "synchronous", "--quiet", *extra)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2021-12-31", "2021-01-01", "--end: 2021-01-01 is before --start 2021-12-31"),
        ("2021-02-30", "2021-12-31", "--start"),
        ("2030-01-01", "2030-12-31", "--start/--end: no Sentinel-2 L2A scenes"),
    ],
)
def test_composite_dates_wrong_order_invalid_or_without_imagery(catalog, tmp_path, start, end, expected):
    out = tmp_path / "out"
    r = _composite(catalog, out, start, end)
    assert r.exit_code == 2
    assert expected in _err_line(r)
    assert not (out / "tiles").exists()  # no composite written, whatever the folder holds


def test_all_nodata_composite_is_written_truthfully(catalog, tmp_path):
    """A swath that misses the tile entirely: the tile is written, every pixel nodata (0, declared)
    and a clear count of 0 — an honest empty tile that detect must refuse to score (see below)."""
    import rasterio

    from minewatch.imagery.synthetic import SceneSpec, make_catalog
    from minewatch.imagery.write import clear_path, composite_path

    left, bottom, right, top = TILE.bounds
    cat = make_catalog(tmp_path / "cat", epsg=TILE.epsg, bounds=(left - 600, bottom - 600, right + 600, top + 600), scenes=[SceneSpec(dt.date(2021, 3, 4), nodata_cols=1.0)], bands=("B2", "B3", "B4"), seed=5)
    out = tmp_path / "out"
    r = _composite((cat, catalog[1]), out, "2021-01-01", "2021-12-31")
    assert r.exit_code == 0, r.output
    with rasterio.open(composite_path(out, TILE.id)) as src:
        assert src.nodata == 0 and (src.read() == 0).all()
    with rasterio.open(clear_path(out, TILE.id)) as src:
        assert (src.read() == 0).all()


# --------------------------------------------------------------------------------------------------
# evaluate: model packages and chip datasets
# --------------------------------------------------------------------------------------------------


def _tiny_onnx(channels: int) -> bytes:
    """A real ONNX graph: the patch mean as the logit (enough to exercise every loading path)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 48, 48, channels])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1])
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=1), helper.make_node("Reshape", ["m", "shape"], ["logits"])]
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], [y], initializer=[shape]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("kit")
    save_package(d / "rgb", ModelCard(name="tiny-rgb", spec=BandSpec()), _tiny_onnx(3))
    save_package(d / "s2", ModelCard(name="tiny-s2", spec=BandSpec(bands=BANDS12)), _tiny_onnx(12))
    rng = np.random.default_rng(0)
    px = rng.integers(0, 255, (16, 48, 48, 3), dtype=np.uint8)
    lab = (np.arange(16) % 2).astype(np.uint8)
    meta = pd.DataFrame({"chip": range(16), "source": "s", "cell": range(16)})
    save_chips(ChipSet(px, lab, meta, BandSpec()), d / "chips")
    save_chips(ChipSet(px[:, :44, :44], lab, meta, BandSpec()), d / "chips44")
    nan = px.astype(np.float32)
    nan[3, 5, 5, 1] = np.nan
    save_chips(ChipSet(nan, lab, meta, BandSpec()), d / "chipsnan")
    return d


def _broken_copy(kit: Path, name: str, tmp_path: Path, edit) -> Path:
    dst = tmp_path / name
    shutil.copytree(kit / "rgb", dst)
    edit(dst)
    return dst


def test_good_package_and_chips_evaluate(kit):
    r = _run("evaluate", "--model", str(kit / "rgb"), "--chips", str(kit / "chips"), "--json")
    assert r.exit_code == 0, r.output


def _drop_checksums(d: Path) -> None:
    """A package written before cards carried checksums."""
    card = json.loads((d / "card.json").read_text())
    card.pop("checksums", None)
    (d / "card.json").write_text(json.dumps(card))


MODEL_CASES = {
    "truncated": (lambda d: (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes()[: (d / "model.onnx").stat().st_size // 2]), "model.onnx: checksum differs from card.json"),
    "truncated_old_card": (lambda d: (_drop_checksums(d), (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes()[:40])), "model.onnx: not a loadable ONNX graph"),
    "hdf5_renamed": (lambda d: (_drop_checksums(d), (d / "model.onnx").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(512))), "model.onnx: not a loadable ONNX graph"),
    "empty": (lambda d: (_drop_checksums(d), (d / "model.onnx").write_bytes(b"")), "model.onnx: not a loadable ONNX graph"),
    "card_truncated": (lambda d: (d / "card.json").write_text('{"name": "x", "spec": {'), "card.json: invalid model card"),
    "no_graph": (lambda d: (d / "model.onnx").unlink(), "not a model package: model.onnx missing"),
    "graph_other_bands": (lambda d: (_drop_checksums(d), (d / "model.onnx").write_bytes(_tiny_onnx(12))), "model.onnx: graph takes 12 input bands but card.json lists 3"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_evaluate_refuses_broken_model_package(kit, tmp_path, case):
    edit, expected = MODEL_CASES[case]
    pkg = _broken_copy(kit, case, tmp_path, edit)
    r = _run("evaluate", "--model", str(pkg), "--chips", str(kit / "chips"), "--json")
    assert r.exit_code == 2, r.output
    line = _err_line(r)
    assert str(pkg) in line and expected in line


def test_evaluate_refuses_a_model_file_instead_of_a_package(kit):
    r = _run("evaluate", "--model", str(kit / "rgb" / "model.onnx"), "--chips", str(kit / "chips"))
    assert r.exit_code == 2 and "expected a model package folder" in _err_line(r)


@pytest.mark.parametrize(
    ("model", "chips", "expected"),
    [
        ("s2", "chips", "chips: band mismatch: model 'tiny-s2' expects 12 bands"),
        ("rgb", "chips44", "chips44: chips are 44×44 px but model 'tiny-rgb' needs 48×48 patches"),
        ("rgb", "chipsnan", "chipsnan/chips.npz: 'pixels' contains NaN or infinite values"),
    ],
)
def test_evaluate_refuses_chips_that_do_not_fit(kit, model, chips, expected):
    r = _run("evaluate", "--model", str(kit / model), "--chips", str(kit / chips), "--json")
    assert r.exit_code == 2
    assert expected in _err_line(r)


def test_error_line_through_a_real_process(kit, tmp_path):
    """The same contract seen from a shell: stderr has exactly the line, stdout nothing, exit 2."""
    pkg = _broken_copy(kit, "trunc", tmp_path, MODEL_CASES["truncated"][0])
    p = subprocess.run([sys.executable, "-m", "minewatch.cli.main", "evaluate", "--model", str(pkg), "--chips", str(kit / "chips"), "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and p.stderr.startswith(f"minewatch: error: {pkg / 'model.onnx'}: checksum differs")


def _have(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


# --------------------------------------------------------------------------------------------------
# postprocess / impacts: patch scores and zones
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vectors(tmp_path_factory) -> Path:
    import geopandas as gpd
    from shapely.geometry import box

    d = tmp_path_factory.mktemp("vec")
    gpd.GeoDataFrame({"period": ["2024"], "area_ha": [1.0], "n_patches": [1], "score_max": [0.9], "score_mean": [0.9]}, geometry=[box(-55, -5, -54.99, -4.99)], crs=4326).to_file(d / "layer.geojson")
    gpd.GeoDataFrame({"name": ["A"]}, geometry=[box(-55.1, -5.1, -54.9, -4.9)], crs=4326).to_file(d / "zones.geojson")
    gpd.GeoDataFrame({"tile": ["x"], "row": [0]}, geometry=[box(-55, -5, -54.99, -4.99)], crs=4326).to_parquet(d / "noscore.parquet")
    (d / "trunc.geojson").write_text('{"type": "FeatureCollection", "features": [')
    return d


def test_impacts_zones_without_the_id_field(vectors, tmp_path):
    out = tmp_path / "out"
    r = _run("impacts", str(vectors / "layer.geojson"), "--zones", str(vectors / "zones.geojson"), "--id-field", "TI_ID", "--out", str(out))
    assert r.exit_code == 2
    assert _err_line(r) == f"minewatch: error: {vectors / 'zones.geojson'}: --zone-id-field 'TI_ID' is not a property of the zones (properties: ['name'])"
    assert not out.exists()


@pytest.mark.parametrize(("name", "expected"), [("noscore.parquet", "no 'score' column"), ("trunc.geojson", "cannot read as a vector layer")])
def test_postprocess_refuses_unusable_patch_scores(vectors, tmp_path, name, expected):
    out = tmp_path / "out"
    r = _run("postprocess", str(vectors / name), "--out", str(out))
    assert r.exit_code == 2
    line = _err_line(r)
    assert line.startswith(f"minewatch: error: {vectors / name}: ") and expected in line
    assert not out.exists()
