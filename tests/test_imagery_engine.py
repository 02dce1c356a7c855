"""The composite engine end to end: the real CLI, a SIGKILLed run resumed, a real Dask LocalCluster."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from shapely.geometry import mapping

from minewatch.grid import Tile, tiles_for_geometry
from minewatch.imagery.engine import CompositeRequest, run_composites
from minewatch.imagery.sources import resolve_source
from minewatch.imagery.synthetic import SceneSpec, make_catalog
from minewatch.imagery.write import composite_path, item_path

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

TILE_PX = 240
ORIGIN = Tile(21, 80, -28, TILE_PX, 10)
GRID = [Tile(21, ORIGIN.ix + i, ORIGIN.iy + j, TILE_PX, 10) for j in range(2) for i in range(3)]  # 3 x 2 tiles
START, END = dt.date(2021, 1, 1), dt.date(2022, 12, 31)
BANDS = "B4,B3,B2,B11"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    left = min(t.bounds[0] for t in GRID) - 600
    bottom = min(t.bounds[1] for t in GRID) - 600
    right = max(t.bounds[2] for t in GRID) + 600
    top = max(t.bounds[3] for t in GRID) + 600
    scenes = [SceneSpec(dt.date(2021, m, 3), cloud=0.3) for m in (2, 4, 6, 8)] + [SceneSpec(dt.date(2022, m, 3), cloud=0.3) for m in (3, 7)]
    return make_catalog(tmp_path_factory.mktemp("engcat"), epsg=ORIGIN.epsg, bounds=(left, bottom, right, top), scenes=scenes, bands=("B2", "B3", "B4", "B11"), seed=11)


@pytest.fixture(scope="module")
def roi_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    geom = shapely.union_all([t.geometry_wgs84() for t in GRID]).buffer(-2e-4)
    assert tiles_for_geometry(geom, TILE_PX) == sorted(GRID)
    p = tmp_path_factory.mktemp("roi") / "roi.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": mapping(geom)}]}))
    return p


def _cli(roi: Path, catalog: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "minewatch.cli.main", "composite", "--roi", str(roi), "--start", START.isoformat(),
        "--end", END.isoformat(), "--out", str(out), "--source", str(catalog), "--bands", BANDS, "--tile-px", str(TILE_PX),
        "--scheduler", "synchronous", "--quiet", *extra,
    ]  # fmt: skip


def _outputs(out: Path) -> dict[str, bytes]:
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "tiles").iterdir())}
    for name in ("tiles.geojson", "collection.json"):
        files[name] = (out / name).read_bytes()
    return files


@pytest.fixture(scope="module")
def clean_run(roi_file: Path, catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the real command line, run once without interruption."""
    out = tmp_path_factory.mktemp("clean") / "out"
    res = subprocess.run(_cli(roi_file, catalog, out), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "6 tiles done, 0 failed, 0 pending" in res.stdout
    return out


def test_cli_writes_every_tile_and_a_verifiable_run(clean_run: Path) -> None:
    from minewatch.runs import verify_run

    for t in GRID:
        with rasterio.open(composite_path(clean_run, t.id)) as src:
            assert src.descriptions == ("B4", "B3", "B2", "B11") and src.tags()["PROCESSING_LEVEL"] == "L2A"
            assert src.read(1).any()
    assert verify_run(clean_run) == []
    # A rerun of a finished run does nothing and says so.
    m = json.loads((clean_run / "manifest.json").read_text())
    assert all(e["status"] == "done" for e in m["tiles"].values())


def test_sigkill_mid_run_then_rerun_gives_identical_files(roi_file: Path, catalog: Path, clean_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(_cli(roi_file, catalog, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list((out / "tiles").glob("*.json")):
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    finished = [t for t in GRID if item_path(out, t.id).exists()]
    assert 0 < len(finished) < len(GRID)
    for tif in (out / "tiles").glob("*.tif"):  # whatever is under a real name is a complete COG
        if not tif.name.startswith("."):
            with rasterio.open(tif) as src:
                src.read()
    res = subprocess.run(_cli(roi_file, catalog, out), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{len(finished)} tile(s) already finished" in res.stderr or "already finished" in res.stderr
    assert _outputs(out) == _outputs(clean_run)
    assert not [p for p in (out / "tiles").iterdir() if ".tmp-" in p.name]


def test_interrupted_in_process_run_resumes_identically(roi_file: Path, catalog: Path, clean_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that dies after two tiles (simulated crash in the writer) resumes to identical files."""
    import minewatch.imagery.engine as engine

    out = tmp_path / "out"
    real = engine.write_tile_outputs
    calls = {"n": 0}

    def crashing(out_dir: str, plan, result):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt("simulated kill")
        return real(out_dir, plan, result)

    monkeypatch.setattr(engine, "write_tile_outputs", crashing)
    req = CompositeRequest(start=START, end=END, bands=tuple(BANDS.split(",")), level="L2A", max_scene_cloud=60.0)
    src = resolve_source(str(catalog), "l2a")
    with pytest.raises(KeyboardInterrupt):
        run_composites(sorted(GRID), req, src, out, roi_file=roi_file, scheduler="synchronous", progress=False)
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(engine, "write_tile_outputs", real)
    res = run_composites(sorted(GRID), req, src, out, roi_file=roi_file, scheduler="synchronous", progress=False)
    assert len(res.skipped) == 2 and len(res.done) == 4
    assert _outputs(out) == _outputs(clean_run)


def test_real_local_cluster(catalog: Path, clean_run: Path, tmp_path: Path) -> None:
    """One tile on a real distributed.LocalCluster (one process worker): same bytes as in-process."""
    pytest.importorskip("distributed")
    req = CompositeRequest(start=START, end=END, bands=tuple(BANDS.split(",")), level="L2A", max_scene_cloud=60.0)
    tile = GRID[0]
    try:
        res = run_composites([tile], req, resolve_source(str(catalog), "l2a"), tmp_path, scheduler="local", workers=1, memory_limit="1GiB", progress=False)
    except (OSError, TimeoutError) as e:  # no room to start worker processes on this machine
        pytest.skip(f"could not start a LocalCluster: {e}")
    assert res.ok and res.done == [tile.id]
    with rasterio.open(composite_path(tmp_path, tile.id)) as a, rasterio.open(composite_path(clean_run, tile.id)) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    assert composite_path(tmp_path, tile.id).read_bytes() == composite_path(clean_run, tile.id).read_bytes()


def test_failed_tile_is_reported_and_others_finish(catalog: Path, tmp_path: Path) -> None:
    """A tile with no scenes is recorded empty with a reason; a tile whose asset file vanished fails; the rest finish."""
    import shutil

    cat_copy = tmp_path / "cat"
    shutil.copytree(catalog.parent, cat_copy)
    far = Tile(21, ORIGIN.ix + 40, ORIGIN.iy, TILE_PX, 10)  # no scene covers it
    req = CompositeRequest(start=START, end=END, bands=("B4",), level="L2A", max_scene_cloud=60.0)
    res = run_composites([GRID[0], far], req, resolve_source(str(cat_copy / "catalog.json"), "l2a"), tmp_path / "out", scheduler="synchronous", progress=False)
    # A tile with no scene is a final, recorded state ("empty", issue #12), not a failure retried forever.
    assert res.done == [GRID[0].id] and not res.failed and list(res.empty) == [far.id] and "no Sentinel-2 L2A scenes" in res.empty[far.id]
    # Break one scene file: the tile that needs it fails with a one-line reason, the run completes.
    victim = next(cat_copy.glob("scenes/*/*_B4.tif"))
    victim.write_bytes(b"not a tiff")
    res2 = run_composites([GRID[1]], req, resolve_source(str(cat_copy / "catalog.json"), "l2a"), tmp_path / "out2", scheduler="synchronous", progress=False)
    assert list(res2.failed) == [GRID[1].id] and "\n" not in res2.failed[GRID[1].id]
    assert not composite_path(tmp_path / "out2", GRID[1].id).exists()
    assert "1 failed" in res2.summary
