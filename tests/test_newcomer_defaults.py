"""A newcomer's defaults (issue 17): levels follow the items' own metadata, account-free sources."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely

from minewatch.errors import MinewatchError
from minewatch.imagery.sources import declared_level


@pytest.mark.parametrize(
    ("item", "level"),
    [
        ({"id": "x", "properties": {"processing:level": "L1C"}}, "L1C"),
        ({"id": "x", "properties": {"s2:product_type": "S2MSI2A"}}, "L2A"),
        ({"id": "x", "properties": {}, "assets": {"SCL": {}, "B04": {}}}, "L2A"),  # only L2A products carry an SCL
        ({"id": "x", "collection": "sentinel-2-c1-l2a", "properties": {}}, "L2A"),
        ({"id": "S2B_MSIL1C_20240105T140049_N0510_R067_T21LYG", "properties": {}}, "L1C"),
        ({"id": "S2A_21LYG_20240101_0_L2A", "properties": {}}, "L2A"),
        ({"id": "scene-1", "properties": {}, "assets": {"B04": {}}}, None),
        ({"id": "MYL2ASCENE", "properties": {}}, None),  # a token inside a word is not a level
    ],
)
def test_declared_level_reads_the_items_own_metadata(item: dict, level: str | None) -> None:
    assert declared_level(item) == level


# --- account-free level defaults ------------------------------------------------------------------
def test_run_composites_l2a_by_default_with_the_cards_level_note() -> None:
    """No --level: L2A from the public catalog (no requester-pays bucket), and the line names the
    card's simulated-L2A figure next to its L1C one."""
    from minewatch.detect.chain import composite_level
    from minewatch.detect.scorer import Scorer
    from minewatch.imagery.sources import resolve_source

    scorer = Scorer.load(["default"])
    level, line = composite_level(None, scorer, "earth-search")
    assert level == "L2A"
    card = scorer.packages[0].card
    l2a, l1c = card.validated_levels["L2A"]["ap"], card.validated_levels["L1C"]["ap"]
    assert f"{l2a:.3f} on simulated L2A" in line and f"vs {l1c:.3f} on L1C" in line
    src = resolve_source("earth-search", level)
    assert not src.requester_pays and src.collection == "sentinel-2-c1-l2a"
    src.check_access()  # no AWS credentials needed (would raise for L1C without them)
    # L1C only when asked for
    assert composite_level("l1c", scorer, "earth-search")[0] == "L1C"


def _l2a_catalog_without_level_properties(tmp: Path) -> Path:
    """A synthetic L2A catalog whose items do not state processing:level (but carry an SCL asset)."""
    import datetime as dt
    import json

    from minewatch.grid import Tile
    from minewatch.imagery.synthetic import SceneSpec, make_catalog

    t = Tile(21, 30, 860, 96, 10.0)
    left, bottom, right, top = t.bounds
    cat = make_catalog(tmp / "cat", epsg=t.epsg, bounds=(left - 600, bottom - 600, right + 600, top + 600),
                       scenes=[SceneSpec(dt.date(2024, m, 5), cloud=0.2) for m in (2, 5)], bands=("B2", "B3", "B4"), level="L2A", seed=1)  # fmt: skip
    for f in (tmp / "cat").rglob("*.json"):
        d = json.loads(f.read_text())
        if d.get("type") == "Feature":
            d["properties"].pop("processing:level", None)
            d["properties"].pop("s2:product_type", None)
            d["id"] = d["id"].replace("_L2A", "")
            f.write_text(json.dumps(d))
    return cat


def test_l2a_catalog_composited_as_l1c_is_refused_and_the_default_follows_the_items(tmp_path: Path) -> None:
    from minewatch.imagery.sources import default_level, resolve_source

    cat = _l2a_catalog_without_level_properties(tmp_path)
    with pytest.raises(MinewatchError, match="is L2A but --level is l1c"):
        resolve_source(str(cat), "l1c").search(shapely.box(-180, -90, 180, 90), dt.date(2024, 1, 1), dt.date(2024, 12, 31))
    assert default_level(str(cat))[0] == "L2A"


def test_composite_bands_model_name_and_b10(tmp_path: Path) -> None:
    from minewatch.cli.options import composite_bands

    assert composite_bands("model:default", "L2A") == ("B4", "B3", "B2")
    assert composite_bands(None, "L1C") == ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
    pkg = _package(tmp_path, bands=("B2", "B3", "B4", "B10"))
    assert composite_bands(f"model:{pkg}", "L1C")[-1] == "B10"
    with pytest.raises(MinewatchError, match="B10 .*L2A products do not have"):
        composite_bands(f"model:{pkg}", "L2A")


def test_run_of_a_b10_model_composites_l1c_by_default(tmp_path: Path) -> None:
    from minewatch.detect.chain import composite_level
    from minewatch.detect.scorer import Scorer

    pkg = _package(tmp_path, bands=("B2", "B3", "B4", "B10"))
    level, line = composite_level(None, Scorer.load([pkg]), "earth-search")
    assert level == "L1C" and "needs B10" in line


def _package(tmp: Path, bands: tuple[str, ...] = ("B4", "B3", "B2"), step_px: int | None = None) -> Path:
    import json

    from test_detect import make_package

    pkg = make_package(tmp / f"pkg{len(bands)}{step_px or ''}", bands=bands, fast=step_px is None)  # its FCN graph steps 24 px
    if step_px is not None:
        card = json.loads((pkg / "card.json").read_text())
        card["step_px"] = step_px
        (pkg / "card.json").write_text(json.dumps(card))
    return pkg


def test_tile_size_follows_a_model_with_another_step(tmp_path: Path) -> None:
    """The 2021 RGB model steps 22 px: 1008 px tiles do not hold whole steps; the tile size moves to
    1012 (46 steps) with a note instead of an error, and an explicit bad one names a valid size."""
    from minewatch.cli.options import auto_tile_px
    from minewatch.detect.demo import load_demo
    from minewatch.detect.engine import DetectRequest, plan_detect
    from minewatch.detect.imagery import open_imagery
    from minewatch.detect.scorer import Scorer

    pkg = _package(tmp_path, step_px=22)
    notes: list[str] = []
    demo = load_demo().imagery
    assert auto_tile_px(None, demo, [str(pkg)], log=notes.append) == 1012
    assert "22 px patch step; using 1012 px" in notes[0]
    assert auto_tile_px(None, demo, ["default"], log=notes.append) == 1008 and len(notes) == 1
    with pytest.raises(MinewatchError, match="e.g. --tile-px 1012"):
        plan_detect(open_imagery(demo), DetectRequest(models=(str(pkg),), period="2024", tile_px=1008), Scorer.load([pkg]))


def test_detect_bands_names_a_plain_geotiff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GeoTIFF without band descriptions: refused with a hint, accepted with --bands."""
    from click.testing import CliRunner
    from rasterio.transform import from_origin

    from minewatch.cli.main import cli

    tif = tmp_path / "plain scene.tif"
    rng = np.random.default_rng(0)
    with rasterio.open(tif, "w", driver="GTiff", width=192, height=192, count=3, dtype="uint16", crs="EPSG:32721",
                       transform=from_origin(600000, 8700000, 10, 10), nodata=0) as dst:  # fmt: skip
        dst.write(rng.integers(300, 3000, (3, 192, 192)).astype("uint16"))
    monkeypatch.chdir(tmp_path)
    base = ["detect", "--imagery", "plain scene.tif", "--period", "2024", "--scheduler", "synchronous", "--quiet", "--level", "l1c"]
    r = CliRunner().invoke(cli, [*base, "--out", "det a"])
    assert r.exit_code == 2 and "--bands B4,B3,B2" in r.output
    r = CliRunner().invoke(cli, [*base, "--out", "det b", "--bands", "B4,B3,B2"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "det b" / "patches.parquet").is_file()
    r = CliRunner().invoke(cli, [*base, "--out", "det c", "--bands", "B4,B3"])
    assert r.exit_code == 2 and "--bands names 2" in r.output


def test_review_imagery_accepts_one_geotiff(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from test_review import write_scene

    from minewatch.cli.main import cli

    layer, img = write_scene(tmp_path)
    r = CliRunner().invoke(cli, ["review", str(layer), "--imagery", str(img / "comp.tif"), "--sample", "5", "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    assert "5 with imagery" in r.output


def test_collection_licence_is_the_copernicus_terms(tmp_path: Path) -> None:
    """collection.json: not "proprietary" — Copernicus Sentinel data terms (STAC "other" + a licence link)."""
    import json

    from minewatch.imagery.engine import CompositeRequest, data_licence, write_collection
    from minewatch.imagery.write import item_path

    p = item_path(tmp_path, "21_30_860")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"type": "Feature", "id": "21_30_860", "bbox": [-55.0, -5.0, -54.9, -4.9]}))
    req = CompositeRequest(start=dt.date(2024, 1, 1), end=dt.date(2024, 12, 31), bands=("B4", "B3", "B2"), level="L2A")
    coll = json.loads(write_collection(tmp_path, ["21_30_860"], req).read_text())
    assert coll["license"] == "other" and "Copernicus Sentinel data" in coll["minewatch:attribution"]
    assert [link["title"] for link in coll["links"] if link["rel"] == "license"] == ["Copernicus Sentinel data terms and conditions"]
    assert {k: coll[k] for k in data_licence()} == data_licence()


def test_composite_with_relative_out_and_no_level_follows_the_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a newcomer types it: a relative --out (was joined twice by the run record) and no --level
    (a local catalog's own L2A)."""
    import json

    from click.testing import CliRunner
    from shapely.geometry import mapping

    from minewatch.cli.main import cli
    from minewatch.grid import Tile

    cat = _l2a_catalog_without_level_properties(tmp_path)
    t = Tile(21, 30, 860, 96, 10.0)
    (tmp_path / "my roi.geojson").write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": mapping(t.geometry_wgs84().buffer(-1e-4))}))
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["composite", "--roi", "my roi.geojson", "--start", "2024-01-01", "--end", "2024-12-31", "-o", "comp 2024",
                                 "--source", str(cat), "--bands", "model:default", "--tile-px", "96", "--scheduler", "synchronous", "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "comp 2024" / "manifest.json").read_text())
    assert m["parameters"]["level"] == "L2A" and m["parameters"]["bands"] == ["B4", "B3", "B2"]
    with rasterio.open(next((tmp_path / "comp 2024" / "tiles").glob("*[0-9].tif"))) as src:
        assert src.tags()["CLOUD_MASK"] == "scl"
