"""``minewatch verify RUN_DIR``: check every output of a run against its manifest."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from minewatch.runs import MANIFEST, load_manifest, verify_run


@click.command(name="verify")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--quick", is_flag=True, help="Compare sizes only, skip SHA-256 checksums (fast on huge runs).")
def command(run_dir: Path, quick: bool) -> None:
    """Check RUN_DIR against its manifest.json: exit 0 if every output is present and intact.

    Otherwise print one line per problem (missing, changed or unlisted files, stray temporary files,
    failed or pending tiles, an unfinished run) and exit 1.
    """
    problems = verify_run(run_dir, checksums=not quick)
    if problems:
        for p in problems:
            click.echo(str(p))
        click.echo(f"minewatch verify: {len(problems)} problem(s) in {run_dir}", err=True)
        sys.exit(1)
    if (run_dir / MANIFEST).exists():
        m = load_manifest(run_dir)
        what = "sizes" if quick else "checksums"
        click.echo(f"{run_dir}: ok ({len(m.get('outputs', {}))} outputs, {len(m.get('tiles', {}))} tiles, {what} match)")
    else:
        click.echo(f"{run_dir}: ok (nested runs)")
