"""Run manifest, run-folder lock and ``minewatch verify``: real files, real subprocesses, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from minewatch.atomic import sha256_file, write_text_atomic
from minewatch.cli.main import cli
from minewatch.errors import MinewatchError
from minewatch.runs import JOURNAL, MANIFEST, RunContext, load_manifest, verify_run


def _write_tile(run_dir: Path, tid: str, text: str | None = None) -> Path:
    return write_text_atomic(run_dir / "tiles" / f"{tid}.txt", text or f"scores of {tid}\n")


def _complete_run(run_dir: Path, tiles: list[str], params: dict | None = None, inputs: dict | None = None) -> None:
    with RunContext(run_dir, "detect", params or {"min_score": 0.1}, inputs or {}) as run:
        run.plan(tiles)
        for t in run.todo():
            run.tile_done(t, [_write_tile(run_dir, t)])
        write_text_atomic(run_dir / "summary.json", json.dumps({"tiles": len(tiles)}))
        run.add_output(run_dir / "summary.json")


def test_manifest_records_inputs_versions_tiles_and_checksums(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x01graph")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "card.json").write_text("{}")
    run_dir = tmp_path / "run"
    _complete_run(run_dir, ["a", "b"], {"min_score": 0.1, "bands": ("B4", "B3")}, {"model": model, "pkg": pkg, "stac": "http://127.0.0.1:1/stac"})
    m = json.loads((run_dir / MANIFEST).read_text())
    assert m["status"] == "complete" and m["command"] == "detect"
    assert m["versions"]["minewatch"] and m["versions"]["python"] and "numpy" in m["versions"] and "gdal" in m["versions"]
    assert m["inputs"]["model"]["sha256"] == sha256_file(model) and m["inputs"]["model"]["size"] == model.stat().st_size
    assert m["inputs"]["pkg"]["files"] == 1 and len(m["inputs"]["pkg"]["sha256"]) == 64
    assert m["inputs"]["stac"] == {"value": "http://127.0.0.1:1/stac"}
    assert m["parameters"] == {"min_score": 0.1, "bands": ["B4", "B3"]}
    assert m["tiles"]["a"]["status"] == "done" and m["tiles"]["a"]["outputs"] == ["tiles/a.txt"]
    for rel in ("tiles/a.txt", "tiles/b.txt", "summary.json"):
        assert m["outputs"][rel]["sha256"] == sha256_file(run_dir / rel)
        assert m["outputs"][rel]["size"] == (run_dir / rel).stat().st_size
    assert not (run_dir / JOURNAL).exists()
    assert verify_run(run_dir) == []


def test_failed_tile_is_reported_and_rerun_completes_it(tmp_path):
    run_dir = tmp_path / "run"
    with RunContext(run_dir, "composite", {"period": "2024"}) as run:
        run.plan(["t1", "t2", "t3"])
        for t in run.todo():
            if t == "t2":
                run.tile_failed(t, ConnectionError("HTTP 500 from 127.0.0.1\nbody"))
            else:
                run.tile_done(t, [_write_tile(run_dir, t)])
        assert "1 failed" in run.summary() and "t2" in run.summary()
    problems = [str(p) for p in verify_run(run_dir)]
    assert any("tile t2" in p and "ConnectionError: HTTP 500 from 127.0.0.1" in p for p in problems)
    assert any("incomplete" in p for p in problems)
    with RunContext(run_dir, "composite", {"period": "2024"}) as run:
        assert run.resumed and run.todo() == ["t2"]
        run.tile_done("t2", [_write_tile(run_dir, "t2")])
    assert verify_run(run_dir) == []
    assert [h["status"] for h in load_manifest(run_dir)["history"]] == ["incomplete", "complete"]


def test_verify_finds_missing_changed_unlisted_and_temp_files(tmp_path):
    run_dir = tmp_path / "run"
    _complete_run(run_dir, ["a", "b", "c"])
    (run_dir / "tiles" / "a.txt").unlink()
    (run_dir / "tiles" / "b.txt").write_text("scores of X\n")  # same size, different content
    (run_dir / "tiles" / "c.txt").write_text("longer than before\n")
    (run_dir / "tiles" / ".d.tmp-4242.txt").write_text("half")
    (run_dir / "stray.parquet").write_bytes(b"x")
    problems = {Path(p.path).name: p.problem for p in verify_run(run_dir)}
    assert "missing" in problems["a.txt"]
    assert "checksum" in problems["b.txt"]
    assert "size" in problems["c.txt"]
    assert "temporary" in problems[".d.tmp-4242.txt"]
    assert "not listed" in problems["stray.parquet"]
    assert len(problems) == 5
    # --quick (sizes only) cannot see the same-size change, and says so by passing it.
    assert "b.txt" not in {Path(p.path).name for p in verify_run(run_dir, checksums=False)}


def test_verify_cli_exit_codes(tmp_path):
    run_dir = tmp_path / "run"
    _complete_run(run_dir, ["a"])
    r = CliRunner().invoke(cli, ["verify", str(run_dir)])
    assert r.exit_code == 0 and "ok (2 outputs, 1 tiles" in r.output
    (run_dir / "tiles" / "a.txt").write_text("tampered\n")
    r = CliRunner().invoke(cli, ["verify", str(run_dir)])
    assert r.exit_code == 1
    lines = [ln for ln in r.stdout.splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith(str(run_dir / "tiles" / "a.txt")) and "size" in lines[0]
    r = CliRunner().invoke(cli, ["verify", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "not a folder" in r.output
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(cli, ["verify", str(tmp_path / "empty")])
    assert r.exit_code == 1 and "manifest.json missing" in r.output
    (run_dir / MANIFEST).write_text("{truncated")
    r = CliRunner().invoke(cli, ["verify", str(run_dir)])
    assert r.exit_code == 1 and "not valid JSON" in r.output


def test_nested_stage_runs_are_verified(tmp_path):
    top = tmp_path / "run"
    _complete_run(top / "detect", ["a"])
    _complete_run(top / "composite", ["a"])
    assert verify_run(top) == []
    (top / "composite" / "tiles" / "a.txt").unlink()
    assert [Path(p.path).name for p in verify_run(top)] == ["a.txt"]


def test_changed_parameters_or_inputs_are_refused_then_fresh_starts_over(tmp_path):
    run_dir = tmp_path / "run"
    model = tmp_path / "m.onnx"
    model.write_bytes(b"one")
    _complete_run(run_dir, ["a"], {"min_score": 0.1}, {"model": model})
    with pytest.raises(MinewatchError, match=r"different parameters \(min_score: 0.1 then, 0.2 now\)"):
        with RunContext(run_dir, "detect", {"min_score": 0.2}, {"model": model}):
            pass
    model.write_bytes(b"two")
    with pytest.raises(MinewatchError, match="different input 'model'"):
        with RunContext(run_dir, "detect", {"min_score": 0.1}, {"model": model}):
            pass
    with pytest.raises(MinewatchError, match="holds a 'detect' run, not 'composite'"):
        with RunContext(run_dir, "composite", {"min_score": 0.1}, {"model": model}):
            pass
    # The refusals changed nothing, and left the folder unlocked.
    assert verify_run(run_dir) == []
    with RunContext(run_dir, "detect", {"min_score": 0.2}, {"model": model}, fresh=True) as run:
        assert not run.resumed and run.todo(["a"]) == ["a"]
        assert not (run_dir / "tiles" / "a.txt").exists()  # the old run's outputs are gone
        run.tile_done("a", [_write_tile(run_dir, "a")])
    assert verify_run(run_dir) == []


def test_exception_marks_run_failed_and_is_not_verified(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with RunContext(run_dir, "detect") as run:
            run.plan(["a", "b"])
            run.tile_done("a", [_write_tile(run_dir, "a")])
            raise RuntimeError("disk full")
    m = load_manifest(run_dir)
    assert m["status"] == "failed" and m["history"][-1]["error"] == "disk full"
    problems = [str(p) for p in verify_run(run_dir)]
    assert any("run ended 'failed': disk full" in p for p in problems)
    assert any("tile b" in p and "pending" in p for p in problems)


def test_tile_done_from_many_threads_loses_nothing(tmp_path):
    run_dir = tmp_path / "run"
    ids = [f"t{i:03d}" for i in range(200)]
    with RunContext(run_dir, "detect", flush_interval_s=0.0) as run:
        run.plan(ids)

        def work(chunk: list[str]) -> None:
            for t in chunk:
                run.tile_done(t, [_write_tile(run_dir, t)])

        threads = [threading.Thread(target=work, args=(ids[i::4],)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    m = load_manifest(run_dir)
    assert sorted(m["tiles"]) == ids and {e["status"] for e in m["tiles"].values()} == {"done"}
    assert len(m["outputs"]) == 200 and verify_run(run_dir) == []


def test_stray_temp_files_of_a_killed_run_are_removed_on_rerun(tmp_path):
    run_dir = tmp_path / "run"
    _complete_run(run_dir, ["a"])
    (run_dir / "tiles" / ".b.tmp-999.txt").write_text("half-written")
    assert verify_run(run_dir)
    _complete_run(run_dir, ["a"])
    assert verify_run(run_dir) == []


# --------------------------------------------------------------------------------------------------
# Real processes: the lock across processes, and SIGKILL in the middle of a run
# --------------------------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from minewatch.atomic import write_text_atomic
    from minewatch.runs import RunContext
    run_dir = Path(sys.argv[1]); n_done = int(sys.argv[2])
    with RunContext(run_dir, "detect", {"min_score": 0.1}, argv=["minewatch", "detect"], flush_interval_s=3600) as run:
        ids = [f"t{i}" for i in range(10)]
        run.plan(ids)
        for t in ids[:n_done]:
            run.tile_done(t, [write_text_atomic(run_dir / "tiles" / f"{t}.txt", f"scores of {t}\\n")])
        # a write in flight when the kill comes
        (run_dir / "tiles" / ".t9.tmp-1.txt").write_text("half")
        print("ready", flush=True)
        time.sleep(60)
    """
)


def _start_holder(run_dir: Path, n_done: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), str(n_done)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_second_run_on_same_folder_fails_at_once_naming_the_holder(tmp_path):
    run_dir = tmp_path / "run"
    proc = _start_holder(run_dir, 2)
    try:
        t0 = time.monotonic()
        with pytest.raises(MinewatchError) as e:
            with RunContext(run_dir, "detect", {"min_score": 0.1}):
                pass
        assert time.monotonic() - t0 < 2.0
        msg = e.value.oneline()
        assert msg.startswith(str(run_dir)) and "in use by another minewatch run" in msg
        assert f"pid {proc.pid}" in msg and "started" in msg and "\n" not in msg
        # The refused run touched nothing: the holder's manifest is intact.
        assert load_manifest(run_dir)["history"][-1]["pid"] == proc.pid
        assert any("still in progress" in str(p) for p in verify_run(run_dir))
    finally:
        proc.kill()
        proc.wait()


def test_sigkill_mid_run_loses_no_finished_tile_and_rerun_completes(tmp_path):
    run_dir = tmp_path / "run"
    proc = _start_holder(run_dir, 6)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # manifest.json was last rewritten at the start; the journal holds the six finished tiles.
    raw = json.loads((run_dir / MANIFEST).read_text())
    assert all(e["status"] == "pending" for e in raw["tiles"].values())
    m = load_manifest(run_dir)
    assert sorted(t for t, e in m["tiles"].items() if e["status"] == "done") == [f"t{i}" for i in range(6)]
    problems = [str(p) for p in verify_run(run_dir)]
    assert any("did not finish" in p for p in problems) and any(".t9.tmp-1.txt" in p for p in problems)
    # The lock died with the process: a rerun starts at once and does only the four missing tiles.
    with RunContext(run_dir, "detect", {"min_score": 0.1}) as run:
        assert run.resumed and run.todo() == [f"t{i}" for i in range(6, 10)]
        for t in run.todo():
            run.tile_done(t, [_write_tile(run_dir, t)])
    assert verify_run(run_dir) == []
    assert [h["status"] for h in load_manifest(run_dir)["history"]] == ["running", "complete"]


def test_torn_journal_line_is_ignored(tmp_path):
    run_dir = tmp_path / "run"
    proc = _start_holder(run_dir, 3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open(run_dir / JOURNAL, "a") as f:
        f.write('{"ev": "tile", "id": "t5", "sta')  # killed mid-append
    m = load_manifest(run_dir)
    assert [t for t, e in m["tiles"].items() if e["status"] == "done"] == ["t0", "t1", "t2"]


def test_unusable_output_folder_is_one_line(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(MinewatchError, match="exists and is not a folder"):
        with RunContext(f, "detect"):
            pass
    with pytest.raises(MinewatchError, match=r"cannot create the output folder"):
        with RunContext(f / "sub", "detect"):
            pass


def test_corrupt_manifest_refuses_resume_but_allows_fresh_start(tmp_path):
    run_dir = tmp_path / "run"
    _complete_run(run_dir, ["a"])
    (run_dir / MANIFEST).write_text('{"minewatch_manifest": 1, "tiles": {')
    with pytest.raises(MinewatchError, match="not valid JSON .*cannot resume this folder — start over with --overwrite"):
        with RunContext(run_dir, "detect", {"min_score": 0.1}):
            pass
    with RunContext(run_dir, "detect", {"min_score": 0.1}, fresh=True) as run:
        run.tile_done("a", [_write_tile(run_dir, "a")])
        write_text_atomic(run_dir / "summary.json", "{}")
        run.add_output(run_dir / "summary.json")
    assert verify_run(run_dir) == []
