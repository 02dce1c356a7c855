"""``minewatch verify RUN``: check every output of a run against its manifest.

RUN is a run folder (``manifest.json``), or a single-file output such as ``map.html`` (its manifest
is ``map.html.manifest.json`` beside it). Verification only reads: archived runs on read-only
disks verify.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from minewatch.runs import MANIFEST, SIDECAR_SUFFIX, load_manifest, sidecar_of, verify_run


@click.command(name="verify")
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--quick", is_flag=True, help="Compare sizes only, skip SHA-256 checksums (fast on huge runs).")
def command(run_dir: Path, quick: bool) -> None:
    """Check RUN (a run folder, or a file such as map.html) against its manifest: exit 0 if every
    output is present and intact.

    Otherwise print one line per problem (missing, changed or unlisted files, stray temporary files,
    failed or pending tiles, an unfinished run) and exit 1.
    """
    problems = verify_run(run_dir, checksums=not quick)
    if problems:
        for p in problems:
            click.echo(str(p))
        click.echo(f"minewatch verify: {len(problems)} problem(s) in {run_dir}", err=True)
        sys.exit(1)
    what = "sizes" if quick else "checksums"
    if run_dir.is_file() or run_dir.name.endswith(SIDECAR_SUFFIX):
        import json

        side = sidecar_of(run_dir)
        m = json.loads(side.read_text(encoding="utf-8")) if side else {}
        click.echo(f"{run_dir}: ok ('{m.get('command')}' run, {len(m.get('outputs', {}))} outputs, {what} match)")
    elif (run_dir / MANIFEST).exists():
        m = load_manifest(run_dir)
        click.echo(f"{run_dir}: ok ({len(m.get('outputs', {}))} outputs, {len(m.get('tiles', {}))} tiles, {what} match)")
    else:
        click.echo(f"{run_dir}: ok (nested runs)")
