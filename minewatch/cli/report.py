"""``minewatch report``: a shareable HTML (and optionally PDF) report of a run."""

from __future__ import annotations

import time
from pathlib import Path

import click

from minewatch.vectors import crs_option


@click.command(name="report")
@crs_option
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Output HTML file.")
@click.option("--layer", "layers", multiple=True, type=click.Path(path_type=Path), hidden=True,
              help="Deprecated: give the layers as arguments.")
@click.option("--run", "run_opt", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder for the model card, imagery and zones when the layers are given as arguments.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
@click.option("--zones", type=click.Path(path_type=Path), help="Zone polygons (default: zones*/territor* in RUN_DIR).")
@click.option("--airstrips", type=click.Path(path_type=Path), help="Airstrip points (default: airstrip* in RUN_DIR).")
@click.option("--card", type=click.Path(path_type=Path), help="Model card (card.json or a package folder).")
@click.option("--alerts", type=click.Path(path_type=Path), help="Alerts (alerts.geojson of 'minewatch alerts'): on the map and as new alerts per zone.")
@click.option("--imagery", multiple=True, type=click.Path(path_type=Path), help="Composite folder(s) or GeoTIFF(s) for imagery dates and clouds (repeatable).")
@click.option("--zone-id-field", help="Zone id column.")
@click.option("--zone-name-field", help="Zone name column.")
@click.option("--title", default="minewatch report: artisanal mining detections", show_default=True)
@click.option("--top", "top_n", type=int, default=15, show_default=True, help="Zones listed as most affected.")
@click.option("--basemap", type=click.Choice(["eox", "esri", "none"]), default="eox", show_default=True)
@click.option("--pdf", type=click.Path(path_type=Path), help="Also print the report to this PDF (headless Chromium).")
def command(inputs: tuple[Path, ...], out: Path, layers: tuple[Path, ...], run_opt: Path | None, quiet: bool, zones: Path | None,
            airstrips: Path | None, card: Path | None, alerts: Path | None, imagery: tuple[Path, ...], zone_id_field: str | None, zone_name_field: str | None,
            title: str, top_n: int, basemap: str, pdf: Path | None) -> None:  # fmt: skip
    """Write a self-contained HTML report of a run folder, or of mining LAYERS (files), like the
    other commands take them: page one the findings, then the map, a table per zone and period,
    the short model card, caveats, credits, and an appendix (charts, imagery, model details).

    \b
    Examples:
      minewatch report runs/demo -o report.html --pdf report.pdf
      minewatch report mining_2023.geojson mining_2024.geojson --zones territories.geojson -o report.html

    Charts are also written as PNGs in <out>_charts/.
    """
    run_dir = run_opt
    files = list(layers)
    for p in inputs:
        if p.is_dir() and run_dir is None and not files and len(inputs) == 1:
            run_dir = p
        else:
            files.append(p)
    from minewatch.runs import UnitRun, abs_path
    from minewatch.webmap.report import build_report, discover_run, write_pdf

    t0 = time.monotonic()
    from minewatch.cli.options import progress_lines

    say = progress_lines(quiet)

    def opt(p: Path | None) -> Path | None:
        return abs_path(p) if p is not None else None

    run_dir, out, zones, airstrips, card, pdf, alerts = (opt(p) for p in (run_dir, out, zones, airstrips, card, pdf, alerts))
    layers = tuple(abs_path(p) for p in files)
    imagery = tuple(abs_path(p) for p in imagery)
    assert out is not None
    if pdf is not None and pdf.resolve() == out.resolve():
        from minewatch.errors import MinewatchError

        raise MinewatchError("--pdf", f"{pdf} is also --out (the HTML report): give the PDF a file name of its own")
    say("report: finding the run's layers, card and imagery …")
    ri = discover_run(run_dir, layers, zones, airstrips, card, imagery)
    params = {"title": title, "top": top_n, "basemap": basemap, "zone_id_field": zone_id_field,
              "zone_name_field": zone_name_field, "pdf": str(pdf) if pdf else None, "run_dir": str(run_dir) if run_dir else None}
    # the files the report was made from (not the whole run folder: hashing composites would cost more than the report)
    inputs = {"layer": [abs_path(p) for p in ri.layers], "zones": opt(ri.zones), "airstrips": opt(ri.airstrips), "card": opt(ri.card_path), **({"alerts": alerts} if alerts else {})}
    with UnitRun(out, "report", params, inputs, layout="file", writes=(out.name, out.stem + "_charts")) as run:
        if pdf is not None:
            run.stage(pdf)  # refuse a PDF path over an input before the work
        path = build_report(ri, run.stage(out), title=title, zone_id_field=zone_id_field, zone_name_field=zone_name_field,
                            top_n=top_n, basemap=basemap, progress=say, alerts=alerts)
        if pdf is not None:
            say("report: printing the PDF in headless Chromium …")
            write_pdf(path, run.stage(pdf))
    click.echo(f"{out}: {out.stat().st_size / 1e6:.1f} MB from {len(ri.layers)} layer(s); "
               f"model card: {ri.card_path or 'not available'}; imagery tiles: {len(ri.imagery) or 'not available'}; "
               f"charts in {out.with_name(out.stem + '_charts')} ({time.monotonic() - t0:.1f} s)")
    if pdf is not None:
        click.echo(f"{pdf}: {pdf.stat().st_size / 1e6:.1f} MB")
