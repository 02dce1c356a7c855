"""``minewatch postprocess``: patch scores → mining polygons (dual threshold, dissolve, simplify)."""

from __future__ import annotations

from pathlib import Path

import click

from minewatch.vectors import crs_option

WRITES = ("mining.parquet", "mining.geojson", "mining_simplified.parquet", "mining_simplified.geojson", "summary.json")
"""What ``postprocess`` writes in its folder (an input there under one of these names is refused)."""


@click.command(name="postprocess")
@crs_option
@click.argument("patches", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--preset", type=click.Choice(["single", "cumulative", "mean06"]), default="single", show_default=True,
              help="single 0.43/0.75, cumulative 0.55/0.80, mean06 plain mean ≥ 0.6 (2024 release).")
@click.option("--t-main", type=float, default=None, help="Override: keep patches with mean score ≥ this.")
@click.option("--t-iso", type=float, default=None, help="Override: isolated patches must reach this.")
@click.option("--k", type=int, default=None, help="Override: k-th nearest kept neighbour decides isolation (5).")
@click.option("--distance-km", type=float, default=None, help="Override: isolated if that neighbour is farther (3 km).")
@click.option("--simplify", "simplify_m", type=float, default=None, metavar="METRES",
              help="Also write mining_simplified.* simplified by this many metres, topology unchanged.")
@click.option("--period", default=None, help="Period label when PATCHES has no 'period' column.")
def command(patches: Path, out_dir: Path, preset: str, t_main: float | None, t_iso: float | None, k: int | None,
            distance_km: float | None, simplify_m: float | None, period: str | None) -> None:
    """Threshold and dissolve PATCHES (GeoParquet from `minewatch detect`) into mining polygons."""
    from minewatch.postprocess.pipeline import run_postprocess
    from minewatch.postprocess.threshold import preset as make_preset
    from minewatch.runs import UnitRun, abs_path

    patches, out_dir = abs_path(patches), abs_path(out_dir)
    params = make_preset(preset, t_main=t_main, t_iso=t_iso, k=k, distance_km=distance_km)
    recorded = {**params.as_dict(), "preset": preset, "simplify_m": simplify_m, "period": period}
    with UnitRun(out_dir, "postprocess", recorded, {"patches": patches}, writes=WRITES) as run:
        res = run_postprocess(patches, run.staging, params, simplify_m=simplify_m, period=period)
    s = res.stats
    click.echo(f"{s['patches_kept']:,} of {s['patches_in']:,} patches kept ({s['patches_isolated_dropped']:,} isolated dropped) "
               f"→ {s['polygons']:,} polygons, footprint {s['footprint_ha']:,.1f} ha, mined (estimate) "
               f"{'n/a' if s['mined_ha'] is None else format(s['mined_ha'], ',.1f')} ha; wrote {out_dir}/mining.parquet, mining.geojson")
