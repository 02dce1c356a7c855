"""Detection under interruption and contention: real ``minewatch detect`` processes, real signals.

* SIGKILL in the middle of a many-tile run, then the same command again: the patch table equals an
  uninterrupted run's row for row — no patch missing, none twice — and the folder verifies.
  (The detect engineer's tests cover resume after lost files in-process; this is the hard kill.)
* Two runs on one output folder: the second is refused at once with the lock line.
* All-nodata imagery: nothing can be scored, and the command says so on one line (exit 2).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from _procs import paused

from minewatch.detect.demo import write_mosaic
from minewatch.grid import Tile
from minewatch.runs import JOURNAL, MANIFEST, load_manifest, verify_run

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

TILE_PX = 96
ORIGIN = Tile(21, 500, -700, TILE_PX, 10.0)
N = 12  # 12 x 12 tiles of 96 px


def _dn(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(3, H, W) uint16 DN with structure at several scales, so that scores vary across patches."""
    rng = np.random.default_rng(seed)
    out = np.zeros((3, *shape))
    for cells in (4, 16, 48):
        coarse = rng.random((3, cells + 1, cells + 1))
        out += coarse[:, np.linspace(0, cells, shape[0]).astype(int)][:, :, np.linspace(0, cells, shape[1]).astype(int)]
    return np.clip(out / out.max() * 3000, 1, 60000).astype(np.uint16)


@pytest.fixture(scope="module")
def imagery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("detimg")
    return write_mosaic(d / "mosaic.tif", _dn((N * TILE_PX, N * TILE_PX)), ORIGIN, 0, 0, tags={"START_DATE": "2024-01-01", "END_DATE": "2024-12-31"}, cog=False)


def _cmd(imagery: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "minewatch.cli.main", "detect", "--model", "default", "--imagery", str(imagery),
        "--out", str(out), "--period", "2024", "--min-score", "0", "--tile-px", str(TILE_PX),
        "--scheduler", "synchronous", "--quiet",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(imagery: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("detref") / "out"
    p = subprocess.run(_cmd(imagery, out), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return out


def _rows(out: Path) -> gpd.GeoDataFrame:
    df = gpd.read_parquet(out / "patches.parquet")
    return df.sort_values(["tile", "row", "col"]).reset_index(drop=True)


def _done_in_journal(out: Path) -> int:
    try:
        return sum('"status": "done"' in ln for ln in (out / JOURNAL).read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_sigkill_mid_detect_then_rerun_equals_an_uninterrupted_run(imagery, reference, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(_cmd(imagery, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while _done_in_journal(out) < 20:
            assert proc.poll() is None, "run finished before it could be killed: make the imagery larger"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    m = load_manifest(out)
    done = [t for t, e in m["tiles"].items() if e["status"] == "done"]
    assert 20 <= len(done) < N * N, "the kill must land mid-run"
    assert not (out / "patches.parquet").exists()  # the region file is only written at the end
    assert any("did not finish" in str(p) for p in verify_run(out))

    p = subprocess.run(_cmd(imagery, out), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert f"{len(done)} tile(s) already finished, skipped" in p.stderr
    assert verify_run(out) == []
    got, want = _rows(out), _rows(reference)
    assert not got.duplicated(["tile", "row", "col"]).any()
    # Every lattice patch lying wholly on the mosaic, once: 4 positions per tile and axis, less the
    # last one, which runs past the mosaic's edge (half nodata, below --min-valid 0.8).
    assert len(got) == len(want) == (N * (TILE_PX // 24) - 1) ** 2
    assert got.drop(columns="geometry").equals(want.drop(columns="geometry"))
    assert got.geometry.geom_equals_exact(want.geometry, tolerance=0).all()
    # Per-tile files of the resumed run are the same bytes as the reference's.
    for f in sorted((reference / "tiles").glob("*.parquet")):
        assert (out / "tiles" / f.name).read_bytes() == f.read_bytes(), f.name


def test_two_detect_runs_on_one_folder(imagery, tmp_path):
    out = tmp_path / "out"
    first = subprocess.Popen(_cmd(imagery, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / MANIFEST).exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        with paused(first):
            second = subprocess.run(_cmd(imagery, out), capture_output=True, text=True, timeout=120)
        errors = [ln for ln in second.stderr.splitlines() if ln.startswith("minewatch: error:")]
        assert second.returncode == 2 and len(errors) == 1
        assert errors[0].startswith(f"minewatch: error: {out}: output folder is in use by another minewatch run ('detect' pid {first.pid}")
        first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0
    assert verify_run(out) == []


def test_all_nodata_imagery_is_an_error_not_an_empty_success(tmp_path):
    img = write_mosaic(tmp_path / "empty.tif", np.zeros((3, 2 * TILE_PX, 2 * TILE_PX), np.uint16), ORIGIN, 0, 0, tags={"START_DATE": "2024-01-01", "END_DATE": "2024-12-31"}, cog=False)
    from click.testing import CliRunner

    from minewatch.cli.main import cli

    r = CliRunner().invoke(cli, _cmd(img, tmp_path / "out")[3:])
    assert r.exit_code == 2, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("minewatch: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"minewatch: error: {img}: no valid pixel")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["totals"]["scored"] == 0  # nothing was scored as if it were forest


def test_detect_refuses_a_truncated_copy_of_the_default_model(imagery, tmp_path):
    import shutil

    from click.testing import CliRunner

    from minewatch.cli.main import cli
    from minewatch.config import package_data_dir

    pkg = tmp_path / "model"
    shutil.copytree(package_data_dir() / "models" / "default", pkg)
    weights = next(pkg.glob("*.bin"), pkg / "model.onnx")  # external weights when the graphs share them
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # an interrupted copy
    args = _cmd(imagery, tmp_path / "out")[3:]
    args[args.index("default")] = str(pkg)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2
    errors = [ln for ln in r.output.splitlines() if ln.startswith("minewatch: error:")]
    assert errors == [f"minewatch: error: {weights}: checksum differs from card.json: the file is truncated, corrupted or replaced (copy or export the package again)"]
    assert not (tmp_path / "out").exists()
