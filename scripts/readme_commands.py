"""Run the commands of README.md's "Commands" block as written, one after another, in a folder.

Why: a README whose commands do not run is the first thing a newcomer meets. This reads the bash
block under "## Commands" (joining backslash continuations, keeping ``D=…`` assignments and
comments out of the command list) and runs each line with bash in ``--workdir``, which is set up
the way the README assumes: ``roi.geojson`` there (``--roi``; default: the demo region's ROI) and
``../shared/data`` beside it (a link to ``--shared``), and ``runs/demo`` from the quick start's demo
run when a command needs it.

    python scripts/readme_commands.py --workdir /tmp/readme --shared ../shared      # everything
    python scripts/readme_commands.py --workdir /tmp/readme --skip train --skip "models ensemble"

The compositing commands fetch from Earth Search unless ``MINEWATCH_EARTH_SEARCH_URL`` points at
another STAC API with the same collections (``tests/test_readme.py`` serves one on 127.0.0.1). The
two ``train`` lines train full models (hours on a laptop).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands(readme: Path = ROOT / "README.md", section: str = "## Commands") -> tuple[list[str], list[str]]:
    """(shell assignments, commands) of the first bash block after ``section``, continuations joined."""
    text = readme.read_text(encoding="utf-8")
    start = text.index(section)
    m = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    if m is None:
        raise SystemExit(f"{readme}: no bash block after {section!r}")
    joined = re.sub(r"\\\n\s*", " ", m.group(1))
    env, cmds = [], []
    for line in joined.splitlines():
        line = line.split(" # ")[0].strip() if not line.lstrip().startswith("#") else ""
        if not line:
            continue
        (env if re.match(r"^[A-Z_]+=\S+$", line) else cmds).append(line)
    return env, cmds


def prepare(workdir: Path, shared: Path, roi: Path | None) -> None:
    """``roi.geojson`` and ``../shared`` where the README expects them."""
    workdir.mkdir(parents=True, exist_ok=True)
    link = workdir.parent / "shared"
    if not link.exists():
        link.symlink_to(shared.resolve(), target_is_directory=True)
    if roi is None:
        from minewatch.detect.demo import load_demo

        roi = load_demo().roi
    if not (workdir / "roi.geojson").exists():
        shutil.copy(roi, workdir / "roi.geojson")


def run_all(workdir: Path, skip: tuple[str, ...] = (), log=print) -> list[tuple[str, int, float]]:  # noqa: ANN001
    """Run every README command (except those starting ``minewatch <skip>``); returns (command, rc, seconds)."""
    env_lines, cmds = readme_commands()
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this venv's minewatch
    results = []
    for cmd in cmds:
        if any(cmd.startswith(f"minewatch {s}") for s in skip):
            log(f"skip: {cmd}")
            continue
        if "runs/demo" in cmd and not (workdir / "runs" / "demo" / "manifest.json").exists():
            # the quick start's demo run, as the README's quick start runs it
            subprocess.run(["bash", "-c", "minewatch run --demo --out runs/demo"], cwd=workdir, env=env, check=True, capture_output=True)
        t0 = time.monotonic()
        p = subprocess.run(["bash", "-c", "\n".join([*env_lines, cmd])], cwd=workdir, env=env, capture_output=True, text=True)
        dt = time.monotonic() - t0
        log(f"{'ok ' if p.returncode == 0 else 'FAIL'} {dt:6.1f} s  {cmd}")
        if p.returncode != 0:
            log(p.stdout[-2000:] + p.stderr[-2000:])
        results.append((cmd, p.returncode, dt))
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the folder holding data/ [default: ../shared]")
    ap.add_argument("--roi", type=Path, default=None, help="ROI for the compositing commands [default: the demo region's]")
    ap.add_argument("--skip", action="append", default=[], help="skip commands starting 'minewatch SKIP' (repeatable)")
    a = ap.parse_args()
    prepare(a.workdir, a.shared, a.roi)
    res = run_all(a.workdir, tuple(a.skip))
    bad = [c for c, rc, _ in res if rc]
    print(f"{len(res) - len(bad)} passed, {len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
