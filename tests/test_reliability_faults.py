"""Network faults during a real composite run: scenes served over HTTP by a misbehaving server on
127.0.0.1 (STAC API + COG byte ranges), driven through the real ``minewatch composite`` command.

What must hold: transient faults (HTTP 500/503, a connection dropped mid-download, a slow answer)
are retried and leave no trace in the outputs; a fault that does not go away fails *that tile
only*, with one line saying why, while the other tiles finish; a rerun of the same command
completes the failed tile and the folder then verifies and matches a run that never saw a fault.
(The imagery engineer's tests cover STAC *search* retries and SIGKILL resume; these cover the
pixel reads.)
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import shapely
from click.testing import CliRunner
from shapely.geometry import mapping

from _reliability_server import FaultServer, fault_server
from minewatch.cli.main import cli
from minewatch.grid import Tile, tiles_for_geometry
from minewatch.imagery import load
from minewatch.imagery.sources import read_local_items
from minewatch.imagery.synthetic import SceneSpec, make_catalog
from minewatch.imagery.write import composite_path
from minewatch.retry import clear_gdal_http_cache
from minewatch.runs import load_manifest, verify_run

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

TILE_PX = 240
A = Tile(21, 80, -28, TILE_PX, 10)
B = Tile(21, 81, -28, TILE_PX, 10)
START, END = dt.date(2021, 1, 1), dt.date(2021, 12, 31)
COLLECTION = "sentinel-2-l2a"
SHIPPED_GDAL_SETTINGS = dict(load.GDAL_HTTP_SETTINGS)


@pytest.fixture(autouse=True)
def fast_gdal(monkeypatch: pytest.MonkeyPatch) -> None:
    """GDAL's retry pauses and timeouts shortened (shipped: 5 retries, 2 s doubling, 60 s timeout),
    or a persistent fault takes minutes per tile, as it would in production."""
    for k, v in {"GDAL_HTTP_MAX_RETRY": "2", "GDAL_HTTP_RETRY_DELAY": "0.1", "GDAL_HTTP_TIMEOUT": "2"}.items():
        monkeypatch.setitem(load.GDAL_HTTP_SETTINGS, k, v)


def _scene_bounds(t: Tile) -> tuple[float, float, float, float]:
    """Scenes of A stop 60 m short of B and vice versa, so that each tile reads only its own scenes."""
    left, bottom, right, top = t.bounds
    return (left - 600, bottom - 600, right - 60, top + 600) if t == A else (left + 60, bottom - 600, right + 600, top + 600)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scenes covering tile A only (ids *_A_*) and tile B only (*_B_*), plus the ROI of both tiles."""
    root = tmp_path_factory.mktemp("faultsite")
    left, bottom, _, top = _scene_bounds(A)
    _, _, right, _ = _scene_bounds(B)
    scenes = [SceneSpec(dt.date(2021, m, 4), cloud=0.2, bounds=_scene_bounds(A), suffix="_A") for m in (3, 7)]
    scenes += [SceneSpec(dt.date(2021, m, 9), cloud=0.2, bounds=_scene_bounds(B), suffix="_B") for m in (4, 8)]
    make_catalog(root / "data", epsg=A.epsg, bounds=(left, bottom, right, top), scenes=scenes, bands=("B2", "B3", "B4"), seed=3)
    geom = shapely.union_all([A.geometry_wgs84(), B.geometry_wgs84()]).buffer(-2e-4)
    assert tiles_for_geometry(geom, TILE_PX) == [A, B]
    (root / "roi.geojson").write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": mapping(geom)}))
    return root


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[FaultServer]:
    """The site's scenes behind a STAC API whose asset hrefs point back at the same server."""
    data = site / "data"
    with fault_server(data, stall_s=2.0, lifetime_s=240) as srv:
        items_dir = data / "items"
        items_dir.mkdir(exist_ok=True)
        for it in read_local_items(data / "catalog.json"):
            for a in it["assets"].values():
                a["href"] = f"{srv.url}/{Path(a['href']).relative_to(data.resolve()).as_posix()}"
            it["collection"] = COLLECTION
            it["links"] = []
            (items_dir / f"{it['id']}.json").write_text(json.dumps(it))
        yield srv


@pytest.fixture(autouse=True)
def no_faults_yet(server: FaultServer) -> None:
    server.set_faults({})
    server.log.clear()


def _composite(site: Path, srv: FaultServer, out: Path) -> tuple[int, str]:
    args = [
        "composite", "--roi", str(site / "roi.geojson"), "--start", START.isoformat(), "--end", END.isoformat(),
        "--out", str(out), "--source", srv.url, "--collection", COLLECTION, "--bands", "B4,B3,B2",
        "--tile-px", str(TILE_PX), "--scheduler", "synchronous", "--quiet", "--retries", "2",
    ]  # fmt: skip
    clear_gdal_http_cache()  # each CLI run starts with GDAL's memory of the server wiped, like a new process
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    return r.exit_code, r.output


def _tile_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "tiles").iterdir())}


@pytest.fixture(scope="module")
def clean(site: Path, server: FaultServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "out"
    code, output = _composite(site, server, out)
    assert code == 0, output
    assert any("_B_" in p for _, p, _ in server.log) and any("_A_" in p for _, p, _ in server.log)
    server.log.clear()
    return out


def test_transient_faults_on_pixel_reads_are_retried_and_leave_no_trace(site, server, clean, tmp_path):
    # Every kind of transient trouble, on the scene files of both tiles.
    server.set_faults({"_A_L2A/": ["500", "503", "drop"], "_B_L2A/": ["drop", "timeout", "500"]})
    out = tmp_path / "faulty"
    code, output = _composite(site, server, out)
    assert code == 0, output
    assert "2 tiles done, 0 failed" in output
    seen = [a for _, _, a in server.log]
    for fault in ("500", "503", "drop", "timeout"):
        assert fault in seen  # the faults really happened
    assert verify_run(out) == []
    assert _tile_bytes(out) == _tile_bytes(clean)


def test_persistent_fault_fails_that_tile_only_and_rerun_completes(site, server, clean, tmp_path):
    server.set_faults({"_B_L2A/": ["always500"]})
    out = tmp_path / "run"
    t0 = time.monotonic()
    code, output = _composite(site, server, out)
    elapsed = time.monotonic() - t0
    assert code == 1
    assert "1 tiles done, 1 failed" in output and B.id in output
    failed = load_manifest(out)["tiles"][B.id]
    assert failed["status"] == "failed" and "\n" not in failed["error"]
    assert failed["error"] == "gave up after 3 attempts: RasterioIOError: HTTP response code: 500"
    assert composite_path(out, A.id).exists() and not composite_path(out, B.id).exists()
    assert len(server.requests_for("_B_L2A/")) > 1  # retried before giving up
    assert elapsed < 60
    problems = [str(p) for p in verify_run(out)]
    assert any(B.id in p and "failed" in p for p in problems) and not any(".tmp-" in p for p in problems)

    server.set_faults({})
    server.log.clear()
    code, output = _composite(site, server, out)
    assert code == 0, output
    assert "2 tiles done, 0 failed" in output
    assert not any("_A_L2A/" in p for _, p, _ in server.log)  # the finished tile was not redone
    assert verify_run(out) == []
    assert _tile_bytes(out) == _tile_bytes(clean)


def test_a_server_that_stops_answering_cannot_hang_the_run(site, server, clean, tmp_path, monkeypatch):
    """A connection accepted but never answered: only a client timeout ends it. GDAL has none by
    default (curl waits forever); the loader must set one. Shortened here to keep the test quick."""
    assert int(SHIPPED_GDAL_SETTINGS.get("GDAL_HTTP_TIMEOUT", 0)) > 0, "GDAL reads have no HTTP timeout"
    monkeypatch.setitem(load.GDAL_HTTP_SETTINGS, "GDAL_HTTP_MAX_RETRY", "0")  # each hang costs the full timeout
    server.set_faults({"_B_L2A/": ["alwayshang"]})
    out = tmp_path / "run"
    t0 = time.monotonic()
    code, output = _composite(site, server, out)
    assert time.monotonic() - t0 < 90
    assert code == 1 and "1 tiles done, 1 failed" in output and B.id in output
    assert composite_path(out, A.id).read_bytes() == composite_path(clean, A.id).read_bytes()


def test_two_runs_on_one_folder_second_is_refused_first_unharmed(site, server, clean, tmp_path):
    """Two real ``minewatch composite`` processes on one output folder: the second fails at once
    with the lock message; the first, slowed by a stalling server, finishes a verifiable run."""
    import subprocess
    import sys

    server.set_faults({"_A_L2A/": ["timeout"], "_B_L2A/": ["timeout"]})  # 2 s stalls keep run 1 busy
    out = tmp_path / "shared"
    args = [
        "composite", "--roi", str(site / "roi.geojson"), "--start", START.isoformat(), "--end", END.isoformat(),
        "--out", str(out), "--source", server.url, "--collection", COLLECTION, "--bands", "B4,B3,B2",
        "--tile-px", str(TILE_PX), "--scheduler", "synchronous", "--quiet",
    ]  # fmt: skip
    first = subprocess.Popen([sys.executable, "-m", "minewatch.cli.main", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "manifest.json").exists():
            assert first.poll() is None and time.monotonic() < deadline, "first run ended before taking the lock"
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "minewatch.cli.main", *args], capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the first run should still be working"
        assert second.returncode == 2 and second.stdout == ""
        errors = [ln for ln in second.stderr.splitlines() if ln.startswith("minewatch: error:")]
        assert len(errors) == 1 and second.stderr.strip().endswith(errors[0])
        line = errors[0]
        assert line.startswith(f"minewatch: error: {out}: output folder is in use by another minewatch run")
        assert f"pid {first.pid}" in line
        stdout, stderr = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    assert verify_run(out) == []
    assert _tile_bytes(out) == _tile_bytes(clean)
