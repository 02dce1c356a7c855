"""``minewatch persist``: confirmed and provisional mining from a sequence of periods."""

from __future__ import annotations

from pathlib import Path

import click

WRITES = ("persistence.parquet", "persistence.geojson", "locations.parquet", "summary.csv", "summary.csv.meta.json", "summary.json")


@click.command(name="persist")
@click.argument("layers", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder (rerun into it to carry confirmed rows forward).")
@click.option("--k", type=int, default=2, show_default=True, help="Annual sightings needed to confirm a location.")
@click.option("--window", type=int, default=2, show_default=True, help="Years, counting the onset year, in which the k sightings must fall.")
@click.option("--t-prov", type=float, default=0.55, show_default=True, help="Provisional main threshold on the reference scale (mapped onto the model card's scale).")
@click.option("--t-prov-iso", type=float, default=0.80, show_default=True, help="Provisional isolated threshold on the reference scale (mapped likewise).")
@click.option("--t-main", type=float, default=None, help="Patch files: the usual main threshold [default: the card's].")
@click.option("--t-iso", type=float, default=None, help="Patch files: the usual isolated threshold [default: the card's spec99 threshold].")
@click.option("--model", default="default", show_default=True, help="Model package whose card calibrates the thresholds (patch files and scored polygons).")
@click.option("--layers-are", type=click.Choice(["auto", "increments", "detections"]), default="auto", show_default=True,
              help="Polygon layers hold each period's detections, or only what is new in it (the published layers); auto decides from their overlap.")
@click.option("--overwrite", is_flag=True, help="Ignore a previous persistence state in --out (start over).")
def command(layers: tuple[Path, ...], out_dir: Path, k: int, window: int, t_prov: float, t_prov_iso: float, t_main: float | None,
            t_iso: float | None, model: str, layers_are: str, overwrite: bool) -> None:  # fmt: skip
    """Temporal persistence of LAYERS (patch scores per period, mining layers, or a folder of them).

    A location is confirmed when it is detected in at least K annual periods within WINDOW years
    counting its onset year (onsets are annual only); periods whose window is still open give
    provisional rows, from detections passing the stricter provisional thresholds. Writes
    OUT/persistence.{parquet,geojson} (polygons), OUT/locations.parquet, OUT/summary.{csv,json}.

    \b
    Examples:
      minewatch persist ../shared/data/upstream/detections --out persist/
      minewatch persist mon/2024/detect/patches.parquet mon/2025/detect/patches.parquet --out persist/ --k 2 --window 2
    """
    from minewatch.postprocess.persist import PersistParams, card_thresholds_for, expand_inputs, run_persist
    from minewatch.runs import UnitRun, abs_path

    params = PersistParams(k=k, window=window)
    thresholds = card_thresholds_for(model, t_main=t_main, t_iso=t_iso, t_prov_ref=t_prov, t_prov_iso_ref=t_prov_iso)
    out_dir = abs_path(out_dir)
    files = [abs_path(f) for f in expand_inputs([abs_path(p) for p in layers])]
    run_params = {"rule": params.as_dict(), "thresholds": thresholds.as_dict(), "layers_are": layers_are, "overwrite": overwrite}
    # the inputs as given (a folder of layers stays a folder), so --out can never be that folder
    with UnitRun(out_dir, "persist", run_params, {"layers": [abs_path(p) for p in layers]}, writes=WRITES) as run:
        res = run_persist(files, run.staging, params, thresholds=thresholds, layers_are=layers_are, overwrite=overwrite, state_dir=out_dir)
    info = res.info
    click.echo(f"layers read as {info['layers_are']} ({info['repeat_share']:.1%} of locations seen in more than one year)")
    for r in res.summary.itertuples():
        click.echo(f"{r.period:>7} ({r.window:>10})  confirmed {r.confirmed:>7,} loc {r.confirmed_ha:>11,.1f} ha   "
                   f"provisional {r.provisional:>7,} loc {r.provisional_ha:>11,.1f} ha   unconfirmed {r.unconfirmed:>7,} loc {r.unconfirmed_ha:>11,.1f} ha")
    loc = info["locations"]
    click.echo(f"wrote {out_dir}/persistence.*, locations.parquet, summary.*: {loc['confirmed']:,} confirmed and {loc['provisional']:,} provisional locations, "
               f"{info['polygons']:,} polygons ({info['seconds']})")
