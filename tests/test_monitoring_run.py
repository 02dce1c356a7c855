"""``minewatch run --periods``: one chain per period into one monitoring folder, resumable, then persist."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from click.testing import CliRunner

from minewatch.cli.main import cli
from minewatch.grid import Tile
from tests.test_detect import TILE_PX, make_package

T0 = Tile(21, 500, -700, TILE_PX, 10.0)


def test_run_periods_into_one_monitoring_folder(tmp_path: Path) -> None:
    from minewatch.imagery.synthetic import SceneSpec, make_catalog
    from minewatch.runs import verify_run

    pkg = make_package(tmp_path / "pkg")
    left, bottom, right, top = T0.bounds
    scenes = [SceneSpec(dt.date(2024, m, 5), cloud=0.2) for m in (2, 5, 8)] + [SceneSpec(dt.date(2025, m, 9), cloud=0.2) for m in (1, 2, 4, 5)]
    cat = make_catalog(tmp_path / "cat", epsg=T0.epsg, bounds=(left - 600, bottom - 600, right + 600, top + 600), scenes=scenes,
                       bands=("B2", "B3", "B4"), level="L1C", seed=4)  # fmt: skip
    roi = tmp_path / "roi.geojson"
    roi.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(T0.geometry_wgs84().buffer(-1e-4))}))
    mon = tmp_path / "my monitoring"
    args = ["run", "--roi", str(roi), "--periods", "2024,2025Q1..2025Q2", "--source", str(cat), "--model", str(pkg), "--out", str(mon),
            "--tile-px", str(TILE_PX), "--scheduler", "synchronous", "--quiet", "--min-score", "0", "--no-map"]  # fmt: skip
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "3 of 3 periods complete" in r.output
    for label in ("2024", "2025Q1", "2025Q2"):
        patches = gpd.read_parquet(mon / label / "detect" / "patches.parquet")
        assert len(patches) > 0 and set(patches["period"]) == {label}
        assert verify_run(mon / label) == []
    # resumable: the same command again finds every period done
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    # every later command takes the folder
    r = CliRunner().invoke(cli, ["persist", str(mon), "--out", str(tmp_path / "persist"), "--model", str(pkg)])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "persist" / "summary.json").read_text())
    assert doc["periods"] == ["2024", "2025Q1", "2025Q2"] and doc["layers_are"] == "detections"


@pytest.mark.parametrize("extra, word", [(["--period", "2024"], "not both"), (["--imagery", "x.tif"], "--roi"), ([], "--periods")])
def test_run_periods_refuses(tmp_path: Path, extra: list[str], word: str) -> None:
    roi = tmp_path / "roi.geojson"
    roi.write_text(json.dumps({"type": "Polygon", "coordinates": [[[-60, -5], [-59.9, -5], [-59.9, -4.9], [-60, -5]]]}))
    periods = "2024,2025Q5" if not extra else "2024,2025Q1"
    r = CliRunner().invoke(cli, ["run", "--roi", str(roi), "--periods", periods, "--out", str(tmp_path / "m"), *extra])
    assert r.exit_code == 2 and word in r.output, r.output
    assert not (tmp_path / "m").exists()
