"""``minewatch review``: a reproducible random sample of detections to label by eye in the browser."""

from __future__ import annotations

from pathlib import Path

import click

from minewatch.vectors import crs_option


@click.command(name="review")
@crs_option
@click.argument("layers", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--imagery", type=click.Path(path_type=Path), help="A composite GeoTIFF or a folder of them (B4,B3,B2 or 12 bands).")
@click.option("--sample", "n", type=int, default=500, show_default=True, help="Number of detections to draw.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed: same layer + seed = same sample.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Output HTML page.")
@click.option("--title", default="minewatch: review a random sample of detections", show_default=True)
def command(layers: tuple[Path, ...], imagery: Path | None, n: int, seed: int, out: Path, title: str) -> None:
    """Write a review page for a random sample of the detections in LAYERS.

    Each detection is shown as an RGB thumbnail cut from the composites with its outline; label with
    y (mine), n (not a mine), s (skip); labels are kept in the browser and exported as CSV for
    'minewatch precision'.
    """
    from minewatch.runs import UnitRun, abs_path
    from minewatch.webmap.review import build_review

    layers = tuple(abs_path(p) for p in layers)
    out = abs_path(out)
    imagery = abs_path(imagery) if imagery is not None else None
    with UnitRun(out, "review", {"sample": n, "seed": seed, "title": title}, {"layer": list(layers), "imagery": imagery}, layout="file") as run:
        s = build_review(list(layers), imagery, n, seed, run.stage(out), title=title)
    click.echo(f"{out}: {len(s.items)} of {s.n_total:,} detections sampled (seed {seed}), "
               f"{len(s.items) - s.n_missing_imagery} with imagery, {s.n_missing_imagery} without; "
               f"{out.stat().st_size / 1e6:.1f} MB")
