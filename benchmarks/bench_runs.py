"""What the run machinery (manifest, lock, staging, checksums, output-safety checks) costs on the happy path.

Issue #12 asks that making every writing command a run slows nothing by more than 5 %. Measured in
one process, each against the plain way a user would do the same with the same libraries:

* ``detect`` on the shipped demo imagery (real Sentinel-2 chips, 4 tiles, the default model),
  in process: the time spent inside :mod:`minewatch.runs` (input and output SHA-256, manifest and
  journal writes, the guard) as a share of the whole run; and the resume check (size + SHA-256 of
  every finished tile, new in #12) against the size-only check it replaced.
* ``timeline`` and ``map`` on the published 2022–2024 layers (``../shared/data``), through the CLI
  (staged outputs, checksums, input hashes, manifest) against the library call writing straight
  to the same kind of folder.

    python benchmarks/bench_runs.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner


def _best(fn, repeats: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _stopwatch():  # noqa: ANN202
    """(spent, timed): ``timed(f)`` wraps f so that the seconds spent in it add up in spent["t"]."""
    spent = {"t": 0.0}

    def timed(f):  # noqa: ANN001, ANN202
        def w(*a, **k):  # noqa: ANN002, ANN003, ANN202
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                spent["t"] += time.perf_counter() - t0

        return w

    return spent, timed


def bench_detect(tmp: Path, repeats: int) -> None:
    import minewatch.runs as runs
    from minewatch.detect.demo import load_demo
    from minewatch.detect.engine import DetectRequest, run_detect

    spent, timed = _stopwatch()

    img = load_demo().imagery
    req = DetectRequest(models=("default",), period="2024")
    walls, shares = [], []
    for i in range(repeats):
        out = tmp / f"det{i}"
        originals = {n: getattr(runs, n) for n in ("sha256_file", "write_json_atomic", "describe_input", "check_output_safety")}
        for n, f in originals.items():
            setattr(runs, n, timed(f))
        orig_event = runs.RunContext._event
        runs.RunContext._event = timed(orig_event)  # journal appends + periodic manifest rewrites
        spent["t"] = 0.0
        try:
            t0 = time.perf_counter()
            run_detect(img, req, out, scheduler="synchronous", progress=False)
            wall = time.perf_counter() - t0
        finally:
            for n, f in originals.items():
                setattr(runs, n, f)
            runs.RunContext._event = orig_event
        walls.append(wall)
        shares.append(spent["t"] / wall)
    print(f"detect, demo imagery, in process: best wall {min(walls):.2f} s; time inside the run machinery "
          f"{statistics.median(shares):.2%} of the run (median of {repeats}; max {max(shares):.2%})")

    # the resume check: size + SHA-256 (now) vs size only (before), on the finished run's tile outputs
    out = tmp / "det0"
    m = runs.load_manifest(out)
    rels = [rel for e in m["tiles"].values() for rel in e.get("outputs", [])]
    nbytes = sum((out / r).stat().st_size for r in rels)
    t_size = _best(lambda: [(out / r).stat().st_size for r in rels], repeats)
    t_sha = _best(lambda: [runs.sha256_file(out / r) for r in rels], repeats)
    print(f"resume check of {len(rels)} tile outputs ({nbytes / 1e6:.2f} MB): size only {t_size * 1e3:.2f} ms, "
          f"size + SHA-256 {t_sha * 1e3:.2f} ms = {t_sha / min(walls):.3%} of one detect run "
          f"(SHA-256 at {nbytes / max(t_sha, 1e-9) / 1e9:.2f} GB/s)")


def bench_commands(shared: Path, tmp: Path, repeats: int) -> None:
    from minewatch.cli.main import cli
    from minewatch.postprocess.pipeline import run_timeline
    from minewatch.webmap.map import build_map_data, write_map

    layers = sorted((shared / "upstream" / "detections").glob("mining_20[12]?00_simplified.geojson"))[4:7]
    runner = CliRunner()

    def cli_timeline() -> None:
        out = tmp / "tl-cli"
        shutil.rmtree(out, ignore_errors=True)
        r = runner.invoke(cli, ["timeline", *map(str, layers), "--out", str(out)])
        assert r.exit_code == 0, r.output

    def plain_timeline() -> None:
        out = tmp / "tl-plain"
        shutil.rmtree(out, ignore_errors=True)
        run_timeline(layers, out)

    one = layers[-1:]

    def cli_map() -> None:
        out = tmp / "m-cli" / "map.html"
        shutil.rmtree(out.parent, ignore_errors=True)
        r = runner.invoke(cli, ["map", *map(str, one), "--out", str(out)])
        assert r.exit_code == 0, r.output

    def plain_map() -> None:
        out = tmp / "m-plain" / "map.html"
        shutil.rmtree(out.parent, ignore_errors=True)
        out.parent.mkdir()
        write_map(out, build_map_data(list(one)))

    import minewatch.runs as runs

    spent, timed = _stopwatch()

    for name, plain, run in (("timeline, the published 2022–2024 yearly layers", plain_timeline, cli_timeline),
                             ("map, the published 2024 layer", plain_map, cli_map)):  # fmt: skip
        # interleave so that machine load hits both alike
        tp, tc, share = [], [], []
        for _ in range(repeats):
            tp.append(_best(plain, 1))
            orig = runs.UnitRun.__enter__, runs.UnitRun.__exit__
            runs.UnitRun.__enter__, runs.UnitRun.__exit__ = timed(orig[0]), timed(orig[1])  # guard + lock / staging → place, checksums, manifest
            spent["t"] = 0.0
            try:
                tc.append(_best(run, 1))
            finally:
                runs.UnitRun.__enter__, runs.UnitRun.__exit__ = orig
            share.append(spent["t"] / tc[-1])
        p, c = min(tp), min(tc)
        print(f"{name}: library call {p:.3f} s, CLI run (staged, checksummed, manifest) {c:.3f} s = {c / p:.3f}× ({(c - p) / p:+.1%}); "
              f"time inside the run machinery {statistics.median(share):.2%} of the CLI run (median of {repeats})")


def main() -> None:
    from minewatch.config import shared_data_dir

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bench_detect(tmp, a.repeats)
        bench_commands(shared_data_dir(), tmp, a.repeats)


if __name__ == "__main__":
    main()
