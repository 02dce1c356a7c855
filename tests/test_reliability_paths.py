"""Issue #12 §5 (paths and messages) and §2 for the tiled and package commands, through the CLI as
typed: relative paths from a working directory of the user's own, spaces in names.

The imagery is a local STAC catalog of synthetic scenes made by the test (no network).
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import shapely
from click.testing import CliRunner
from pyproj import Transformer
from shapely.geometry import mapping

from minewatch.cli.main import cli
from minewatch.config import package_data_dir
from minewatch.grid import Tile
from minewatch.imagery.synthetic import SceneSpec, make_catalog
from minewatch.runs import load_manifest, verify_run

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

PX = 240
T0, T1 = Tile(21, 80, -28, PX, 10), Tile(21, 81, -28, PX, 10)
FAR = Tile(21, 120, -28, PX, 10)  # no scene covers it
WINDOW = ("--start", "2021-01-01", "--end", "2021-12-31")


def mw(*args: str):  # noqa: ANN201
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(r, *needles: str) -> None:  # noqa: ANN001
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("minewatch: error: ") and "Traceback" not in r.output, r.output
    for n in needles:
        assert n in lines[-1], (n, lines[-1])


def _fc(*geoms) -> str:  # noqa: ANN002
    return json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": mapping(g)} for g in geoms]})


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local STAC catalog over T0 and T1 (never over FAR)."""
    l, b, _, t = T0.bounds
    r = T1.bounds[2]
    sc = [SceneSpec(dt.date(2021, m, 10), cloud=0.35) for m in (1, 3, 5, 7, 9)]
    cat = make_catalog(tmp_path_factory.mktemp("scenes"), epsg=T0.epsg, bounds=(l - 600, b - 600, r + 600, t + 600), scenes=sc, bands=("B2", "B3", "B4", "B8"), seed=21)
    return cat.parent


@pytest.fixture()
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scenes: Path) -> Path:
    w = tmp_path / "my work"
    w.mkdir()
    shutil.copytree(scenes, w / "my scenes")
    near = shapely.union_all([T0.geometry_wgs84(), T1.geometry_wgs84()]).buffer(-2e-4)
    (w / "my roi.geojson").write_text(_fc(near))
    (w / "roi with far tile.geojson").write_text(_fc(near, FAR.geometry_wgs84().buffer(-2e-4)))
    tr = Transformer.from_crs(T0.epsg, 4326, always_xy=True)

    def pt(tile: Tile, mine: int) -> dict:
        left, _, _, top = tile.bounds
        return {"type": "Feature", "properties": {"mine": mine}, "geometry": {"type": "Point", "coordinates": list(tr.transform(left + 1205, top - 1205))}}

    (w / "my points.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [pt(T0, 1), pt(T1, 0)]}))
    (w / "points far.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [pt(T0, 1), pt(FAR, 0)]}))
    monkeypatch.chdir(w)
    return w


def composite(roi: str, out: str, *extra: str):  # noqa: ANN201
    return mw("composite", "--roi", roi, *WINDOW, "--out", out, "--source", "my scenes/catalog.json", "--bands", "B4,B3,B2",
              "--tile-px", PX, "--scheduler", "synchronous", "--quiet", *extra)  # fmt: skip


def chips(points: str, out: str):  # noqa: ANN201
    return mw("chips", "--points", points, "--label-field", "mine", *WINDOW, "--out", out, "--source", "my scenes/catalog.json",
              "--tile-px", PX, "--scheduler", "synchronous", "--quiet")  # fmt: skip


def test_composite_and_chips_accept_a_relative_out(work: Path) -> None:
    """Both crashed with `comp/comp/tiles.geojson: No such file or directory` (the README's own example)."""
    r = composite("my roi.geojson", "comp out")
    assert r.exit_code == 0, r.output
    assert "2 tiles done, 0 failed" in r.output
    assert verify_run(work / "comp out") == []
    m = load_manifest(work / "comp out")
    assert Path(m["inputs"]["roi"]["path"]).is_absolute() and Path(m["inputs"]["catalog"]["path"]).is_absolute()
    r = chips("my points.geojson", "my chips")
    assert r.exit_code == 0, r.output
    assert verify_run(work / "my chips") == []  # the chip run and its nested composite run
    assert load_manifest(work / "my chips")["command"] == "chips"
    import pandas as pd

    rel = pd.read_csv(work / "my chips" / "chips.csv")["composite"].iloc[0]
    assert (work / "my chips" / rel).is_file()  # relative to the dataset, not to a staging folder


def test_relative_imagery_works_where_workers_run_elsewhere(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative --imagery failed every tile on a Dask cluster: workers do not share the working directory."""
    (work / "my imagery").mkdir()
    shutil.copy(package_data_dir() / "demo" / "demo_l1c_2024.tif", work / "my imagery" / "demo 2024.tif")
    import minewatch.detect.engine as engine

    real = engine.detect_tile
    elsewhere = work.parent / "a worker's folder"
    elsewhere.mkdir()

    def on_a_worker(*a, **k):  # noqa: ANN002, ANN003, ANN202
        here = os.getcwd()
        os.chdir(elsewhere)  # what a worker on another machine (or started elsewhere) sees
        try:
            return real(*a, **k)
        finally:
            os.chdir(here)

    monkeypatch.setattr(engine, "detect_tile", on_a_worker)
    for imagery, out in (("my imagery", "det folder"), ("my imagery/demo 2024.tif", "det file")):
        r = mw("detect", "--imagery", imagery, "--out", out, "--scheduler", "synchronous", "--quiet")
        assert r.exit_code == 0, r.output
        m = load_manifest(work / out)
        assert len(m["tiles"]) == 4 and all(e["status"] == "done" for e in m["tiles"].values()), m["tiles"]
        assert Path(m["inputs"]["imagery"]["path"]).is_absolute()


def test_a_tile_without_scenes_is_a_final_empty_state(work: Path) -> None:
    """The first run said 'rerun to retry'; the rerun then exited 2 ('no scenes over any tile still to do')."""
    r = composite("roi with far tile.geojson", str(work / "comp far"))
    assert r.exit_code == 0, r.output
    assert "2 tiles done, 0 failed, 0 pending, 1 empty" in r.output
    m = load_manifest(work / "comp far")
    assert m["tiles"][FAR.id]["status"] == "empty" and "no Sentinel-2" in m["tiles"][FAR.id]["error"]
    assert m["status"] == "complete" and verify_run(work / "comp far") == []
    r = composite("roi with far tile.geojson", str(work / "comp far"))
    assert r.exit_code == 0, r.output
    assert "3 tile(s) already finished" in r.output


def test_a_point_outside_the_imagery_is_recorded_not_retried_forever(work: Path) -> None:
    r = chips("points far.geojson", str(work / "chips far"))
    assert r.exit_code == 0, r.output
    assert "1 chip(s) (1 labelled 1)" in r.output and "without imagery" in r.output
    r = chips("points far.geojson", str(work / "chips far"))
    assert r.exit_code == 0, r.output
    assert verify_run(work / "chips far") == []


def test_model_commands_never_write_over_their_inputs(work: Path) -> None:
    shutil.copytree(package_data_dir() / "models" / "default", work / "my model")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (work / "my model").iterdir()}
    one_line_error(mw("models", "ensemble", "my model", "default", "--out", "my model"), "is also the input")
    (work / "stuff").mkdir()
    (work / "stuff" / "notes.txt").write_text("mine")
    one_line_error(mw("models", "ensemble", "my model", "default", "--out", "stuff"), "already holds files", "notes.txt")
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (work / "my model").iterdir()} == before
    assert sorted(p.name for p in (work / "stuff").iterdir()) == ["notes.txt"]
    r = mw("models", "ensemble", "my model", "default", "--member-names", "a,b,c,d", "--out", "my ensemble")
    assert r.exit_code == 0, r.output
    assert verify_run(work / "my ensemble") == []
    assert load_manifest(work / "my ensemble")["command"] == "models ensemble"
    r = mw("detect", "--imagery", str(package_data_dir() / "demo" / "demo_l1c_2024.tif"), "--model", "my ensemble", "--out", "det", "--scheduler", "synchronous", "--quiet")
    assert r.exit_code == 0, r.output  # the package with its manifest still loads and scores


def test_detect_output_errors_are_one_line(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (work / "a file").write_text("x")
    img = str(package_data_dir() / "demo" / "demo_l1c_2024.tif")
    one_line_error(mw("detect", "--imagery", img, "--out", "a file/det", "--scheduler", "synchronous", "--quiet"), "a file")
    real = os.replace

    def full(src, dst):  # noqa: ANN001, ANN202
        if "patches" in os.fspath(dst):
            raise OSError(errno.ENOSPC, "No space left on device", os.fspath(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", full)
    r = mw("detect", "--imagery", img, "--out", "det full", "--scheduler", "synchronous", "--quiet")
    one_line_error(r, "No space left on device", "disk is full")
    problems = [str(p) for p in verify_run(work / "det full")]
    assert any("run ended 'failed'" in p for p in problems), problems
