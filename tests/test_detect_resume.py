"""A real ``minewatch detect`` process killed with SIGKILL mid-run, then resumed: the output equals
an uninterrupted run's, no patch duplicated or missing, and the folder verifies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
from _procs import paused
from test_detect import TILE_PX, make_package, smooth_dn, write_raster

from minewatch.detect.engine import DetectRequest, run_detect
from minewatch.runs import load_manifest, verify_run

SIZE = 1440  # 15 × 15 tiles of 96 px (+ the halo row and column of tiles west and north)


def _cmd(pkg: Path, img: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "minewatch.cli.main", "detect", "--model", str(pkg), "--imagery", str(img), "--out", str(out),
            "--tile-px", str(TILE_PX), "--min-score", "0.3", "--scheduler", "synchronous", "--quiet"]  # fmt: skip


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "pkg")
    img = write_raster(tmp_path / "img.tif", smooth_dn((SIZE, SIZE), seed=21), 0, 0)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(pkg, img, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tiles = out / "tiles"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if tiles.is_dir() and len(list(tiles.glob("*.json"))) >= 30:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"run finished before it could be killed: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    m = load_manifest(out)
    n_done = sum(e.get("status") == "done" for e in m["tiles"].values())
    assert m["status"] == "running" and 0 < n_done < len(m["tiles"])
    assert not (out / "patches.parquet").exists()

    r = subprocess.run(_cmd(pkg, img, out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "already finished, skipped" in r.stderr

    ref_out = tmp_path / "ref"
    req = DetectRequest(models=(str(pkg),), period="2024", min_score=0.3, tile_px=TILE_PX)
    run_detect(img, req, ref_out, scheduler="synchronous", progress=False)
    got, ref = gpd.read_parquet(out / "patches.parquet"), gpd.read_parquet(ref_out / "patches.parquet")
    assert len(got) > 500 and got.equals(ref)
    assert not got.duplicated(["tile", "row", "col"]).any()
    for f in sorted((ref_out / "tiles").glob("*.parquet")):
        assert (out / "tiles" / f.name).read_bytes() == f.read_bytes(), f.name
    for f in sorted((ref_out / "tiles").glob("*.json")):  # per-tile counts (timings aside)
        a, b = json.loads((out / "tiles" / f.name).read_text()), json.loads(f.read_text())
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert verify_run(out) == []
    s = json.loads((out / "summary.json").read_text())
    assert s["complete"] and s["totals"]["tiles"] == len(load_manifest(out)["tiles"])
    # the per-tile counts add up over the region
    t = s["totals"]
    assert t["scored"] + t["skipped_nodata"] + t["skipped_low_valid"] == t["patches"]
    assert t["scored"] == ((SIZE - 48) // 24 + 1) ** 2


def test_second_run_on_the_same_folder_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "pkg")
    img = write_raster(tmp_path / "img.tif", smooth_dn((960, 960), seed=2), 0, 0)
    out = tmp_path / "out"
    first = subprocess.Popen(_cmd(pkg, img, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out / "tiles").is_dir() and first.poll() is None:
            time.sleep(0.01)
        with paused(first):  # a stopped process keeps its lock
            second = subprocess.run(_cmd(pkg, img, out), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert "output folder is in use by another minewatch run" in second.stderr
        assert len([ln for ln in second.stderr.splitlines() if ln.strip()]) == 1
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0 and verify_run(out) == []
