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
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--preset", type=click.Choice(["card", "single", "cumulative", "mean06"]), default="card", show_default=True,
              help="card: the scoring model's own operating point (its card's threshold; isolated patches at its 99 %-specificity threshold), "
                   "as `minewatch run` uses; the upstream presets, tuned for the upstream ensemble: single 0.43/0.75, cumulative 0.55/0.80, mean06 plain mean ≥ 0.6.")
@click.option("--model", default=None, help="With --preset card: the model whose card to use [default: the one recorded in PATCHES].")
@click.option("--t-main", type=float, default=None, help="Override: keep patches with mean score ≥ this.")
@click.option("--t-iso", type=float, default=None, help="Override: isolated patches must reach this.")
@click.option("--k", type=int, default=None, help="Override: k-th nearest kept neighbour decides isolation (5).")
@click.option("--distance-km", type=float, default=None, help="Override: isolated if that neighbour is farther (3 km).")
@click.option("--simplify", "simplify_m", type=float, default=None, metavar="METRES",
              help="Also write mining_simplified.* simplified by this many metres, topology unchanged.")
@click.option("--period", default=None, help="Period label when PATCHES has no 'period' column.")
def command(patches: Path, out_dir: Path, preset: str, model: str | None, t_main: float | None, t_iso: float | None, k: int | None,
            distance_km: float | None, simplify_m: float | None, period: str | None) -> None:
    """Threshold and dissolve PATCHES (GeoParquet from `minewatch detect`) into mining polygons.

    By default with the thresholds of the model that scored PATCHES (recorded in the file), the
    same calibration `minewatch run` uses; --preset picks the upstream thresholds instead.
    """
    from minewatch.postprocess.pipeline import run_postprocess
    from minewatch.postprocess.threshold import ThresholdParams
    from minewatch.postprocess.threshold import preset as make_preset
    from minewatch.runs import UnitRun, abs_path

    patches, out_dir = abs_path(patches), abs_path(out_dir)
    with UnitRun(out_dir, "postprocess", {}, {"patches": patches}, writes=WRITES) as run:  # refuses a bad --out first
        if preset == "card":
            from minewatch.detect.chain import patch_file_cards, thresholds_from_cards

            # overrides out of range are refused before anything is read
            ThresholdParams(0.5 if t_main is None else t_main, t_iso, k=5 if k is None else k, distance_km=3.0 if distance_km is None else distance_km)

            cards, where = patch_file_cards(patches, model)
            tm, ti = thresholds_from_cards(cards)
            custom = any(v is not None for v in (t_main, t_iso, k, distance_km))
            params = ThresholdParams(t_main if t_main is not None else tm, t_iso if t_iso is not None else ti,
                                     k=k if k is not None else 5, distance_km=distance_km if distance_km is not None else 3.0,
                                     name="card+custom" if custom else "card")  # fmt: skip
            click.echo(f"thresholds from {where} ({', '.join(str(c.get('name')) for c in cards)}): t_main {params.t_main:.3f}, "
                       f"t_iso {'off' if params.t_iso is None else format(params.t_iso, '.3f')}", err=True)  # fmt: skip
        else:
            params = make_preset(preset, t_main=t_main, t_iso=t_iso, k=k, distance_km=distance_km)
        run.params.update({**params.as_dict(), "preset": preset, "model": model, "simplify_m": simplify_m, "period": period})
        res = run_postprocess(patches, run.staging, params, simplify_m=simplify_m, period=period)
    s = res.stats
    click.echo(f"{s['patches_kept']:,} of {s['patches_in']:,} patches kept ({s['patches_isolated_dropped']:,} isolated dropped) "
               f"→ {s['polygons']:,} polygons, footprint {s['footprint_ha']:,.1f} ha, mined (estimate) "
               f"{'n/a' if s['mined_ha'] is None else format(s['mined_ha'], ',.1f')} ha; wrote {out_dir}/mining.parquet, mining.geojson")
