"""Scale-out that survives a lost worker: a real ``dask scheduler`` and two ``dask worker`` processes
on 127.0.0.1, composite + detect over 24 small tiles, one worker SIGKILLed mid-run, and outputs
identical (byte for byte) to an uninterrupted in-process run.

Why it holds: a tile is one task whose outputs are written atomically (temporary file + rename),
so a task killed half-way leaves no partial output; the scheduler sees the worker's connection
drop and reruns its tasks on the survivor; the computation is deterministic. Temporary files the
killed worker left behind are swept at the end of the run (``minewatch verify`` stays clean).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import geopandas as gpd
import pytest

from minewatch.detect.engine import DetectRequest, run_detect
from minewatch.grid import Tile
from minewatch.imagery.engine import CompositeRequest, run_composites
from minewatch.imagery.sources import resolve_source
from minewatch.imagery.synthetic import SceneSpec, make_catalog
from minewatch.runs import verify_run

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

TILE_PX = 96
ORIGIN = Tile(21, 800, -280, TILE_PX, 10)
GRID = [Tile(21, ORIGIN.ix + i, ORIGIN.iy + j, TILE_PX, 10) for j in range(4) for i in range(6)]  # 24 tiles
REQ = CompositeRequest(start=dt.date(2021, 1, 1), end=dt.date(2021, 12, 31), bands=("B4", "B3", "B2"), level="L2A", max_scene_cloud=100)
DASK = str(Path(sys.executable).with_name("dask"))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    left = min(t.bounds[0] for t in GRID) - 600
    bottom = min(t.bounds[1] for t in GRID) - 600
    right = max(t.bounds[2] for t in GRID) + 600
    top = max(t.bounds[3] for t in GRID) + 600
    scenes = [SceneSpec(dt.date(2021, m, 5), cloud=0.3) for m in (2, 5, 8, 11)]
    return make_catalog(tmp_path_factory.mktemp("scalecat"), epsg=ORIGIN.epsg, bounds=(left, bottom, right, top), scenes=scenes, bands=("B2", "B3", "B4"), seed=21)


@pytest.fixture(scope="module")
def reference(catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ref")
    assert run_composites(GRID, REQ, resolve_source(str(catalog), "l2a"), root / "comp", scheduler="synchronous", progress=False).ok
    det = DetectRequest(models=("default",), period="2021", min_score=0.0, tile_px=TILE_PX)
    assert run_detect(root / "comp", det, root / "det", scheduler="synchronous", progress=False).ok
    return root / "comp", root / "det"


class Cluster:
    """A scheduler and worker processes started with the ``dask`` command line, as on a real cluster."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.file = root / "scheduler.json"
        self.procs: list[subprocess.Popen] = []
        self.procs.append(self._start([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(self.file)]))
        deadline = time.monotonic() + 60
        while not self.file.exists():
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.1)
        self.address = json.loads(self.file.read_text())["address"]
        self.workers: list[subprocess.Popen] = []

    def _start(self, cmd: list[str]) -> subprocess.Popen:
        log = open(self.root / f"proc{len(self.procs)}.log", "wb")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True)
        self.procs.append(p) if cmd[1] == "worker" else None
        return p

    def add_workers(self, n: int) -> None:
        from distributed import Client

        for _ in range(n):
            self.workers.append(self._start([DASK, "worker", "--scheduler-file", str(self.file), "--nthreads", "1", "--no-nanny", "--no-dashboard", "--memory-limit", "2GiB"]))
        with Client(self.address, timeout=30) as c:
            c.wait_for_workers(len([w for w in self.workers if w.poll() is None]), timeout=90)

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.kill()
            p.wait()


def _kill_when(count: callable, at: int, total: int, victim: subprocess.Popen, box: dict) -> None:  # type: ignore[valid-type]
    deadline = time.monotonic() + 120
    while count() < at and time.monotonic() < deadline:
        time.sleep(0.01)
    box["done_at_kill"] = count()
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()


def _same_files(ref: Path, got: Path, pattern: str) -> int:
    files = sorted(ref.glob(pattern))
    for f in files:
        assert (got / f.relative_to(ref)).read_bytes() == f.read_bytes(), f.name
    return len(files)


def test_lost_worker_mid_run_gives_the_uninterrupted_outputs(catalog: Path, reference: tuple[Path, Path], tmp_path: Path) -> None:
    ref_comp, ref_det = reference
    cluster = Cluster(tmp_path)
    try:
        cluster.add_workers(2)
        # composite: kill worker 0 once 3 of 24 tiles are written
        comp = tmp_path / "comp"
        box: dict = {}
        killer = threading.Thread(target=_kill_when, args=(lambda: len(list((comp / "tiles").glob("*_clear.tif"))), 3, len(GRID), cluster.workers[0], box))
        killer.start()
        res = run_composites(GRID, REQ, resolve_source(str(catalog), "l2a"), comp, scheduler=cluster.address, progress=False)
        killer.join()
        assert res.ok and sorted(res.done) == sorted(t.id for t in GRID), res.failed
        assert box["done_at_kill"] < len(GRID) and cluster.workers[0].returncode == -signal.SIGKILL  # killed mid-run
        assert _same_files(ref_comp, comp, "tiles/*") == 3 * len(GRID)
        assert (comp / "collection.json").read_bytes() == (ref_comp / "collection.json").read_bytes()
        assert verify_run(comp) == []

        # detect on the same cluster: a fresh worker joins, then the other original one is killed
        cluster.add_workers(1)
        det = tmp_path / "det"
        box = {}
        killer = threading.Thread(target=_kill_when, args=(lambda: len(list((det / "tiles").glob("*.parquet"))), 3, len(GRID), cluster.workers[1], box))
        killer.start()
        req = DetectRequest(models=("default",), period="2021", min_score=0.0, tile_px=TILE_PX)
        dres = run_detect(comp, req, det, scheduler=cluster.address, progress=False)
        killer.join()
        assert dres.ok, dres
        assert box["done_at_kill"] < len(GRID) and cluster.workers[1].returncode == -signal.SIGKILL
        got, want = gpd.read_parquet(det / "patches.parquet"), gpd.read_parquet(ref_det / "patches.parquet")
        assert len(got) > 10 * len(GRID) and got.equals(want)  # border patches lack valid halo pixels
        assert _same_files(ref_det, det, "tiles/*.parquet") == len(GRID)
        assert verify_run(det) == []
    finally:
        cluster.close()
