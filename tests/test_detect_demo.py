"""The shipped demo region and ``minewatch run --demo``: offline, the whole chain, checked against the
demo's known cells."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from minewatch.bands import Rendering
from minewatch.cli.main import cli
from minewatch.config import package_data_dir
from minewatch.detect.demo import CHIP_PX, chips_to_dn, load_demo
from minewatch.grid import Tile
from minewatch.runs import verify_run

DEFAULT = package_data_dir() / "models" / "default" / "card.json"


def test_inverse_rendering_round_trips_every_byte() -> None:
    rgb = np.arange(256, dtype=np.uint8)
    dn = chips_to_dn(rgb)
    assert dn.min() >= 1  # no real pixel reads as nodata
    np.testing.assert_array_equal(Rendering().apply(dn), rgb.astype(np.float32))


def test_demo_files_are_small_credited_and_on_the_grid() -> None:
    demo = load_demo()
    folder = demo.folder
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 5 * 1024 * 1024
    readme = (folder / "README.md").read_text()
    assert "Earth Genome, Amazon Mining Watch" in readme and "CC BY 4.0" in readme
    truth = gpd.read_file(demo.truth)
    with rasterio.open(demo.imagery) as src:
        assert list(src.descriptions) == ["B4", "B3", "B2"] and src.dtypes[0] == "uint16" and src.nodata == 0
        assert src.tags()["PROCESSING_LEVEL"] == "L1C" and src.crs.to_epsg() == 32721
        assert src.profile.get("tiled") and src.overviews(1)  # a COG: internal tiles and overviews
        tile = Tile.from_id(truth["tile"].iloc[0])
        col = (src.transform.c - tile.bounds[0]) / 10.0
        row = (tile.bounds[3] - src.transform.f) / 10.0
        assert col == int(col) and row == int(row) and int(col) % 24 == 0 and int(row) % 24 == 0
        assert (src.height, src.width) == (16 * CHIP_PX, 16 * CHIP_PX)
        assert (int(row) + src.height > tile.tile_px) and (int(col) + src.width > tile.tile_px)  # straddles tiles
        dn = src.read()
    counts = truth["truth"].value_counts().to_dict()
    assert counts["mine"] >= 40 and counts["not-mine"] >= 150 and counts.get("nodata", 0) >= 1
    nod = truth[truth["truth"] == "nodata"].iloc[0]
    r, c = nod["cell_row"] * CHIP_PX, nod["cell_col"] * CHIP_PX
    assert (dn[:, r : r + CHIP_PX, c : c + CHIP_PX] == 0).all()


def test_demo_cells_are_the_real_chips(real_chips) -> None:  # noqa: ANN001
    demo = load_demo()
    truth = gpd.read_file(demo.truth)
    with rasterio.open(demo.imagery) as src:
        rendered = Rendering().apply(np.moveaxis(src.read(), 0, -1))
    has = truth[truth["chip"].notna()]
    for t in has.itertuples():
        k = int(t.chip)
        cell = rendered[t.cell_row * CHIP_PX : (t.cell_row + 1) * CHIP_PX, t.cell_col * CHIP_PX : (t.cell_col + 1) * CHIP_PX]
        np.testing.assert_array_equal(cell, real_chips.pixels[k].astype(np.float32))
        assert int(real_chips.labels[k]) == int(t.label) and real_chips.meta["source"].iloc[k] == t.source
        assert real_chips.meta["start_date"].astype(str).iloc[k] == "2024-01-01"


@pytest.mark.skipif(not DEFAULT.exists(), reason="default model not shipped yet")
def test_run_demo_runs_the_whole_chain_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # `minewatch run` with no arguments = the demo into ./minewatch-demo
    r = CliRunner().invoke(cli, ["run", "--scheduler", "synchronous", "--quiet"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "minewatch-demo"
    patches = gpd.read_parquet(out / "detect" / "patches.parquet")
    mining = gpd.read_parquet(out / "postprocess" / "mining.parquet")
    assert len(patches) > 0 and set(patches["period"]) == {"2024"}
    assert len(mining) > 0 and (mining["area_ha"] > 0).all()
    html = (out / "map.html").read_text()
    assert "maplibre" in html.lower() and "Earth Genome" in html
    assert verify_run(out) == []
    summary = json.loads((out / "summary.json").read_text())
    check = summary["stages"]["demo_check"]
    # the demo's known cells: most mine cells end up inside a mining polygon, few others do
    assert check["mine"]["detected"] >= 0.6 * check["mine"]["cells"]
    assert check["not-mine"]["detected"] <= 0.08 * check["not-mine"]["cells"]
    assert "demo truth:" in r.output
    # skipped patches are counted, not scored: the nodata cells and the area around the mosaic
    det = json.loads((out / "detect" / "summary.json").read_text())["totals"]
    assert det["skipped_nodata"] > 0 and det["skipped_low_valid"] > 0 and det["scored"] == 31 * 31 - 2 * 9
    # a rerun resumes: detect skips its finished tiles and the folder still verifies
    r2 = CliRunner().invoke(cli, ["run", "--demo", "--out", str(out), "--scheduler", "synchronous", "--quiet"])
    assert r2.exit_code == 0 and "already finished, skipped" in r2.output
    assert verify_run(out) == []
