"""Issue #12 §1–2: outputs never replace, delete or lie over inputs; every writing command is a run.

Driven through the CLI the way people type it: relative paths from a working directory of their own
(``monkeypatch.chdir``), names with spaces. Each test names the defect class it guards; every one of
them failed on the main branch before the output-safety mechanism (``minewatch/runs.py``) landed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from minewatch.cli.main import cli
from minewatch.detect.demo import load_demo
from minewatch.runs import MANIFEST, RunContext, RunLock, load_manifest, verify_run

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


def mw(*args: str):  # noqa: ANN201
    """The CLI as a user runs it (in process, from the current working directory)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` with its checksum (to prove nothing changed)."""
    return {p.relative_to(folder).as_posix(): sha(p) for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def one_line_error(r, *needles: str) -> None:  # noqa: ANN001
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("minewatch: error: "), r.output
    assert "Traceback" not in r.output
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real `minewatch run --demo` (detect → postprocess → map) to take inputs from."""
    root = tmp_path_factory.mktemp("demo")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        r = mw("run", "--demo", "--out", "demo run", "--scheduler", "synchronous", "--quiet")
    finally:
        os.chdir(cwd)
    assert r.exit_code == 0, r.output
    return root / "demo run"


@pytest.fixture()
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_run: Path) -> Path:
    """A user's working directory holding a detection and a mining layer, names with spaces."""
    w = tmp_path / "my work"
    w.mkdir()
    shutil.copytree(demo_run / "detect", w / "det run")
    shutil.copy(demo_run / "postprocess" / "mining.geojson", w / "mining layer.geojson")
    monkeypatch.chdir(w)
    return w


def zones_file(path: Path) -> Path:
    """Two zones over the demo region (WGS84 GeoJSON)."""
    import geopandas as gpd
    from shapely.geometry import box

    layer = gpd.read_file(Path("mining layer.geojson"))
    x0, y0, x1, y1 = layer.total_bounds
    xm = (x0 + x1) / 2
    z = gpd.GeoDataFrame({"zid": ["a", "b"], "name": ["West", "East"]}, geometry=[box(x0 - 0.01, y0 - 0.01, xm, y1 + 0.01), box(xm, y0 - 0.01, x1 + 0.01, y1 + 0.01)], crs=4326)
    z.to_file(path, driver="GeoJSON")
    return path


# ---- 1. outputs never replace or delete inputs ----------------------------------------------------


@pytest.mark.parametrize("command", ["map", "review", "report"])
def test_single_file_commands_refuse_to_write_over_their_input_layer(work: Path, command: str) -> None:
    before = sha(work / "mining layer.geojson")
    args = ["report", "--layer", "mining layer.geojson"] if command == "report" else [command, "mining layer.geojson"]
    r = mw(*args, "--out", "mining layer.geojson")
    one_line_error(r, "mining layer.geojson", "is also the input")
    assert sha(work / "mining layer.geojson") == before
    assert sorted(p.name for p in work.iterdir()) == ["det run", "mining layer.geojson"]  # nothing written


def test_impacts_and_airstrips_refuse_an_input_inside_out_that_they_would_replace(work: Path) -> None:
    (work / "res").mkdir()
    zones = zones_file(work / "res" / "zones.geojson")
    before = sha(zones)
    r = mw("impacts", "mining layer.geojson", "--zones", "res/zones.geojson", "--id-field", "zid", "--out", "res")
    one_line_error(r, "res", "holds the input 'zones'", "zones.geojson")
    assert sha(zones) == before and sorted(p.name for p in (work / "res").iterdir()) == ["zones.geojson"]
    import geopandas as gpd

    pts = gpd.GeoDataFrame({"n": [1]}, geometry=gpd.read_file(zones).representative_point().iloc[:1].values, crs=4326)
    pts.to_file(work / "res" / "airstrips.geojson", driver="GeoJSON")
    before = sha(work / "res" / "airstrips.geojson")
    r = mw("airstrips", "res/airstrips.geojson", "--mining", "mining layer.geojson", "--out", "res")
    one_line_error(r, "holds the input 'airstrips'")
    assert sha(work / "res" / "airstrips.geojson") == before
    # in a folder of their own both work, and their runs verify
    assert mw("impacts", "mining layer.geojson", "--zones", "res/zones.geojson", "--id-field", "zid", "--out", "impacts out").exit_code == 0
    assert verify_run(work / "impacts out") == []


def test_overwrite_never_deletes_another_commands_run(work: Path) -> None:
    """`detect --overwrite --out <a composite run>` used to delete every composite tile."""
    comp = work / "comp run"
    with RunContext(comp, "composite", {"period": "2024"}) as run:
        (comp / "tiles").mkdir()
        (comp / "tiles" / "t.tif").write_bytes(b"tile")
        run.tile_done("t", [comp / "tiles" / "t.tif"])
    before = tree(comp)
    r = mw("detect", "--imagery", str(load_demo().imagery), "--out", "comp run", "--overwrite", "--scheduler", "synchronous", "--quiet")
    one_line_error(r, "holds a 'composite' run, not 'detect'")
    assert tree(comp) == before and verify_run(comp) == []


def test_overwrite_never_deletes_the_commands_own_imagery(work: Path) -> None:
    img = work / "imagery dir"
    img.mkdir()
    shutil.copy(load_demo().imagery, img / "demo.tif")
    before = tree(img)
    r = mw("detect", "--imagery", "imagery dir", "--out", "imagery dir", "--overwrite", "--scheduler", "synchronous", "--quiet")
    one_line_error(r, "is also the input 'imagery'")
    assert tree(img) == before


def test_overwrite_removes_only_what_its_own_manifest_lists_never_an_input(work: Path) -> None:
    """A hand-edited (or hostile) manifest listing the input or a path outside the folder deletes nothing of them."""
    out = work / "det run"
    m = json.loads((out / MANIFEST).read_text())
    outside = work / "precious.txt"
    outside.write_text("keep me")
    m["outputs"]["../precious.txt"] = {"sha256": sha(outside), "size": outside.stat().st_size}
    (out / MANIFEST).write_text(json.dumps(m))
    r = mw("detect", "--imagery", str(load_demo().imagery), "--out", "det run", "--overwrite", "--scheduler", "synchronous", "--quiet")
    assert r.exit_code == 0, r.output
    assert outside.read_text() == "keep me"
    assert verify_run(out) == []


def test_postprocess_into_a_detect_folder_refuses_and_nesting_works(work: Path) -> None:
    det = work / "det run"
    before = tree(det)
    r = mw("postprocess", "det run/patches.parquet", "--out", "det run")
    one_line_error(r, "holds a 'detect' run, not 'postprocess'", "runs may nest")
    assert tree(det) == before
    r = mw("postprocess", "det run/patches.parquet", "--out", "det run/polygons")
    assert r.exit_code == 0, r.output
    assert verify_run(det) == []  # the nested run is verified in turn
    assert load_manifest(det / "polygons")["command"] == "postprocess"


def test_report_inside_a_run_folder_keeps_that_run_verifiable(work: Path) -> None:
    """`report --out <run>/report.html` made that run fail `verify` forever."""
    pp = work / "pp"
    assert mw("postprocess", "det run/patches.parquet", "--out", "pp").exit_code == 0
    r = mw("report", "pp", "--out", "pp/report.html", "--basemap", "none")
    assert r.exit_code == 0, r.output
    assert (pp / "report.html.manifest.json").is_file()
    assert verify_run(pp) == []
    assert verify_run(pp / "report.html") == []
    r = mw("verify", "pp/report.html")
    assert r.exit_code == 0 and "'report' run" in r.output


def test_a_file_no_minewatch_run_wrote_is_never_replaced(work: Path) -> None:
    mine = work / "notes.html"
    mine.write_text("<p>my notes</p>")
    r = mw("map", "mining layer.geojson", "--out", "notes.html")
    one_line_error(r, "notes.html", "was not written by an earlier 'map' run")
    assert mine.read_text() == "<p>my notes</p>"
    # its own earlier output is replaced by a rerun
    assert mw("map", "mining layer.geojson", "--out", "the map.html").exit_code == 0
    first = sha(work / "the map.html")
    assert mw("map", "mining layer.geojson", "--out", "the map.html", "--title", "other").exit_code == 0
    assert sha(work / "the map.html") != first and verify_run(work / "the map.html") == []


# ---- 2. every writing command is a run ------------------------------------------------------------


def test_every_single_unit_command_writes_a_verifiable_manifest(work: Path) -> None:
    zones_file(work / "zones.geojson")
    runs = {
        "pp": ["postprocess", "det run/patches.parquet", "--out", "pp"],
        "tl": ["timeline", "mining layer.geojson", "--out", "tl"],
        "im": ["impacts", "mining layer.geojson", "--zones", "zones.geojson", "--id-field", "zid", "--out", "im"],
        "m.html": ["map", "mining layer.geojson", "--out", "m.html"],
        "rv.html": ["review", "mining layer.geojson", "--sample", "3", "--out", "rv.html"],
    }
    for target, args in runs.items():
        r = mw(*args)
        assert r.exit_code == 0, (args, r.output)
        path = work / target
        m = load_manifest(path) if path.is_dir() else json.loads((work / f"{target}.manifest.json").read_text())
        assert m["command"] == args[0] and m["status"] == "complete"
        assert all(Path(v["path"]).is_absolute() and len(v["sha256"]) == 64 for v in m["inputs"].values()), m["inputs"]
        assert m["outputs"] and all(len(v["sha256"]) == 64 for v in m["outputs"].values())
        assert verify_run(path) == [], target
        r = mw("verify", target)
        assert r.exit_code == 0, r.output


def test_a_second_concurrent_run_is_refused(work: Path) -> None:
    zones_file(work / "zones.geojson")
    (work / "pp").mkdir()
    lock = RunLock(work / "pp")
    lock.acquire("postprocess")
    try:
        r = mw("postprocess", "det run/patches.parquet", "--out", "pp")
        one_line_error(r, "in use by another minewatch run")
        held = RunLock(work, ".m.html.minewatch.lock")
        held.acquire("map")
        try:
            one_line_error(mw("map", "mining layer.geojson", "--out", "m.html"), "in use by another minewatch run")
        finally:
            held.release()
    finally:
        lock.release()


def test_killed_run_leftovers_are_removed_by_the_next_run_of_the_same_command(work: Path) -> None:
    assert mw("map", "mining layer.geojson", "--out", "m.html").exit_code == 0
    stray = work / ".m.tmp-999999.html"  # what a map killed mid-write leaves
    stray.write_text("half")
    staging = work / ".m.html.tmp-999999"
    staging.mkdir()
    (staging / "m.html").write_text("half")
    assert any("stray temporary" in str(p) for p in verify_run(work / "m.html"))
    assert mw("map", "mining layer.geojson", "--out", "m.html").exit_code == 0
    assert not stray.exists() and not staging.exists()
    assert verify_run(work / "m.html") == []
    # a folder run: a killed postprocess leaves its staging folder
    assert mw("postprocess", "det run/patches.parquet", "--out", "pp").exit_code == 0
    left = work / "pp" / ".minewatch-staging.tmp-999999"
    left.mkdir()
    (left / "mining.parquet").write_bytes(b"half")
    assert any("stray temporary folder" in str(p) for p in verify_run(work / "pp"))
    assert mw("postprocess", "det run/patches.parquet", "--out", "pp").exit_code == 0
    assert not left.exists() and verify_run(work / "pp") == []


def test_a_run_killed_between_its_output_moves_is_caught_by_verify(work: Path) -> None:
    """Half old, half new outputs with exit 0 could not be told apart before; now the manifest says so."""
    assert mw("postprocess", "det run/patches.parquet", "--out", "pp").exit_code == 0
    m = load_manifest(work / "pp")
    m["status"] = "running"  # what the manifest says while the outputs are being moved into place
    (work / "pp" / MANIFEST).write_text(json.dumps(m))
    problems = [str(p) for p in verify_run(work / "pp")]
    assert any("did not finish" in p for p in problems), problems


def test_verify_works_on_a_read_only_run_folder(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An archived run on a read-only disk: every open for writing below it fails with EROFS."""
    det = (work / "det run").resolve()
    real_open = os.open

    def ro_open(path, flags, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        if str(Path(os.fspath(path)).resolve()).startswith(str(det)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", ro_open)
    r = mw("verify", "det run")
    assert r.exit_code == 0, r.output
    assert "ok" in r.output


def test_a_damaged_output_is_redone_on_rerun_not_skipped(work: Path) -> None:
    """A byte flipped in place (same size) used to give 'already finished, skipped', exit 0."""
    args = ("detect", "--imagery", str(load_demo().imagery), "--out", "my det", "--scheduler", "synchronous", "--quiet")
    assert mw(*args).exit_code == 0
    det = work / "my det"
    m = load_manifest(det)
    victim = next(det / rel for rel in sorted(m["outputs"]) if rel.startswith("tiles/") and rel.endswith(".parquet"))
    good = victim.read_bytes()
    data = bytearray(good)
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert victim.stat().st_size == len(good)
    r = mw(*args)
    assert r.exit_code == 0, r.output
    assert "checksum differs" in r.output and victim.name in r.output
    assert victim.read_bytes() == good  # redone: the same bytes as the first time
    assert verify_run(det) == []


def test_out_inside_the_imagery_folder_keeps_the_input_hash_so_the_run_resumes(work: Path) -> None:
    img = work / "imagery dir"
    img.mkdir()
    shutil.copy(load_demo().imagery, img / "demo.tif")
    args = ("detect", "--imagery", "imagery dir", "--out", "imagery dir/det", "--scheduler", "synchronous", "--quiet")
    r = mw(*args)
    assert r.exit_code == 0, r.output
    r = mw(*args)
    assert r.exit_code == 0, r.output
    assert "already finished, skipped" in r.output
    assert verify_run(img / "det") == []


def test_output_errors_are_one_line_with_the_path_and_the_cause(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # --out is an existing file (folder runs) or an existing folder (single-file runs)
    (work / "a file").write_text("x")
    for args in (["postprocess", "det run/patches.parquet"], ["timeline", "mining layer.geojson"]):
        one_line_error(mw(*args, "--out", "a file"), "a file", "not a folder")
    (work / "a folder").mkdir()
    for args in (["map", "mining layer.geojson"], ["review", "mining layer.geojson"], ["report", "--layer", "mining layer.geojson"]):
        one_line_error(mw(*args, "--out", "a folder"), "a folder", "is a folder")
    assert not list(work.glob("a folder_charts")) and not any((work / "a folder").iterdir())
    # a file where a parent folder is needed
    one_line_error(mw("postprocess", "det run/patches.parquet", "--out", "a file/sub"), "a file")
    # disk full while moving the outputs into place: one line, nothing half-written left
    import minewatch.runs as runs

    real_replace = os.replace

    def full(src, dst):  # noqa: ANN001, ANN202
        if "staging" in str(src) or ".tmp-" in str(src):
            raise OSError(errno.ENOSPC, "No space left on device", os.fspath(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(runs.os, "replace", full)
    r = mw("postprocess", "det run/patches.parquet", "--out", "full disk")
    one_line_error(r, "No space left on device", "disk is full")
    assert not (work / "full disk").exists()


def test_timeline_refuses_a_negative_min_piece(work: Path) -> None:
    one_line_error(mw("timeline", "mining layer.geojson", "--out", "tl", "--min-piece-ha", "-5"), "--min-piece-ha")
    one_line_error(mw("timeline", "mining layer.geojson", "--out", "tl", "--min-piece-ha", "nan"), "--min-piece-ha")
    assert not (work / "tl").exists()
