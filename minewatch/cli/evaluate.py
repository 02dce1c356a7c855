"""``minewatch evaluate``: score a chip dataset with a model package and report the metrics."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("evaluate")
@click.option("--model", "model", required=True, help="Model package folder, or a shipped model name such as 'default'.")
@click.option("--chips", "chips_dir", required=True, type=click.Path(path_type=Path), help="Chip dataset folder (chips.npz + chips.csv [+ bands.json]).")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout instead of the table.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Write the precision–recall curve PNG into this folder.")
@click.option("--holdout-region", "holdout_regions", multiple=True, type=click.Path(path_type=Path), help="Polygon file (GeoJSON, WGS84): report sensitivity on the mines inside it (repeatable).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None, help="Operating threshold (default: the model card's).")
@click.option("--rerender", is_flag=True, help="Allow chips rendered differently from the model's input (e.g. uint8 RGB chips for a reflectance model): convert through DN.")
@click.option("--all", "all_chips", is_flag=True, help="Score every chip, even when CHIPS is the model's own training set (figures then include training chips).")
@click.option("--batch-size", default=512, show_default=True, type=click.IntRange(1))
def command(
    model: str,
    chips_dir: Path,
    as_json: bool,
    plots_dir: Path | None,
    holdout_regions: tuple[Path, ...],
    threshold: float | None,
    rerender: bool,
    all_chips: bool,
    batch_size: int,
) -> None:
    """Evaluate MODEL on the labelled chips in CHIPS.

    Reports average precision, ROC AUC, sensitivity and specificity at the model's threshold,
    sensitivity at specificity 0.99, the F0.5-optimal threshold, the same per ensemble member and per
    chip `source`, and sensitivity inside each --holdout-region. Bands must match the model card.

    When CHIPS is the model's own training set (its card records the chips' digest and split),
    only the card's validation split is scored, so the figures are on chips the model never
    trained on; --all scores every chip. The output says which chips were used.
    """
    from minewatch.chips import load_chips
    from minewatch.models.package import load_package
    from minewatch.train.evaluate import check_inputs, evaluate_package, format_report, load_holdout, own_validation_split, to_json, write_pr_curve

    holdouts = dict(load_holdout(p) for p in holdout_regions)
    pkg = load_package(model)
    chips = load_chips(chips_dir)
    check_inputs(pkg, chips, rerender)  # a band or size mismatch is the one line the user sees
    which = f"all {len(chips):,} chips (not the model's recorded training set)"
    own = own_validation_split(pkg, chips)
    if own is not None:
        if all_chips:
            which = f"all {len(chips):,} chips, --all: the model's own training set, training chips included (figures are optimistic)"
        else:
            chips, which = chips.subset(own[0]), own[1]
    from minewatch.cli.options import progress_lines

    progress_lines(as_json)(f"evaluating {pkg.card.name} on {which}; ONNX Runtime on {pkg.execution_provider}")
    result = evaluate_package(pkg, chips, holdouts or None, threshold=threshold, rerender=rerender, batch_size=batch_size, progress=not as_json)
    result["chips"]["which"] = which
    result["model"]["execution_provider"] = pkg.execution_provider
    result["chips"]["path"] = str(chips_dir)
    if plots_dir is not None:
        from minewatch.runs import UnitRun, abs_path

        target = abs_path(plots_dir) / f"pr_curve_{pkg.card.name}_{chips_dir.resolve().name}.png"
        params = {"model": pkg.card.name, "threshold": threshold, "rerender": rerender}
        with UnitRun(target, "evaluate", params, {"chips": abs_path(chips_dir), "model": str(pkg.path.resolve())}, layout="file") as run:
            write_pr_curve(result, run.stage(target))
        result["plots"] = [str(target)]
    click.echo(to_json(result) if as_json else format_report(result))
