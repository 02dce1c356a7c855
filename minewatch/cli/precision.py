"""``minewatch precision``: precision with a 95 % Wilson interval from a review CSV."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command(name="precision")
@click.argument("csv_path", metavar="REVIEW_CSV", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(csv_path: Path, as_json: bool) -> None:
    """Precision = yes / (yes + no) over the labelled rows of REVIEW_CSV (skipped rows left out)."""
    from minewatch.webmap.review import precision_from_csv

    r = precision_from_csv(csv_path)
    if as_json:
        def num(x: float) -> float | None:  # no labelled row: null, not NaN (which is not JSON)
            return None if x != x else x

        click.echo(json.dumps({"precision": num(r.precision), "ci95": [num(r.low), num(r.high)], "mines": r.mines,
                               "not_mines": r.not_mines, "skipped": r.skipped, "unlabelled": r.unlabelled}))
    else:
        click.echo(r.line())
