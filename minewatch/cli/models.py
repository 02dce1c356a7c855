"""``minewatch models``: list and inspect model packages; import the upstream Keras models."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("models")
def command() -> None:
    """List, inspect and import model packages."""


@command.command("import-keras")
@click.argument("h5_file", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Model package folder to write.")
@click.option("--name", default=None, help="Model name in the card (default: patch size and version from the file name).")
@click.option("--bands", default=None, help="Input bands, comma-separated, in channel order (default: the upstream order for the channel count).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None, help="Operating threshold (default: from the config log beside the file, else 0.5).")
@click.option("--config-log", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Upstream config .txt (default: found beside the .h5).")
@click.option(
    "--input-norm",
    type=click.Choice(["auto", "reflectance", "unit_norm_2021", "none"]),
    default="auto",
    show_default=True,
    help="Normalisation built into the graph after x = DN/10000: auto picks by upstream era (v2 and older: unit_norm_2021; v3+: reflectance clip).",
)
def import_keras_cmd(h5_file: Path, out_dir: Path, name: str | None, bands: str | None, threshold: float | None, config_log: Path | None, input_norm: str) -> None:
    """Convert a published upstream Keras HDF5 model into a minewatch package (no TensorFlow)."""
    import time

    from minewatch.models.keras_import import import_keras
    from minewatch.models.package import load_package

    t0 = time.perf_counter()
    from minewatch.runs import DirectRun, abs_path

    h5_file, out_dir = abs_path(h5_file), abs_path(out_dir)
    config_log = abs_path(config_log) if config_log is not None else None
    band_list = [b.strip() for b in bands.split(",") if b.strip()] if bands else None
    params = {"name": name, "bands": band_list, "threshold": threshold, "input_norm": input_norm}
    with DirectRun(out_dir, "models import-keras", params, {"h5": h5_file, "config_log": config_log}) as run:
        path = import_keras(h5_file, run.target, name=name, bands=band_list, threshold=threshold, config_log=config_log, input_norm=input_norm)
    pkg = load_package(path)
    c = pkg.card
    click.echo(
        f"{path}: {c.name}, {len(c.members)} member(s), {c.patch_px} px, bands {','.join(c.spec.bands)}, "
        f"threshold {c.threshold:g} ({c.training.get('threshold_source')}), input norm {c.training.get('input_norm')}, "
        f"{time.perf_counter() - t0:.2f} s"
    )


@command.command("list")
def list_cmd() -> None:
    """List the models shipped with minewatch (usable as --model NAME)."""
    from minewatch.config import package_data_dir
    from minewatch.errors import MinewatchError
    from minewatch.models.package import load_package

    root = package_data_dir() / "models"
    found = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not found:
        click.echo(f"no shipped models in {root}")
        return
    for p in found:
        try:
            c = load_package(p).card
        except MinewatchError as e:
            click.echo(f"{p.name:<16} (broken: {e.problem})")
            continue
        ap = c.metrics.get("val", {}).get("ap") if isinstance(c.metrics.get("val"), dict) else None
        extra = f", val AP {ap:.3f}" if isinstance(ap, (int, float)) else ""
        click.echo(f"{p.name:<16} {c.name}: {len(c.members)} member(s), bands {','.join(c.spec.bands)}, {c.patch_px} px, threshold {c.threshold:g}{extra}")


@command.command("show")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print the whole model card as JSON.")
def show_cmd(model: str, as_json: bool) -> None:
    """Summarise MODEL (a package folder or a shipped name) on one screen; --json for the whole card."""
    from minewatch.models.package import load_package
    from minewatch.models.summary import summary_lines

    pkg = load_package(model)
    if as_json:
        click.echo(json.dumps(pkg.card.to_dict(), indent=2, ensure_ascii=False))
        return
    click.echo("\n".join(summary_lines(pkg.card.to_dict(), where=pkg.path.name)))


@command.command("ensemble")
@click.argument("models", nargs=-1, required=True)
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Ensemble package folder to write.")
@click.option("--name", default=None, help="Model name in the card (default: the folder name).")
@click.option("--member-names", default=None, help="Comma-separated names of the members' score columns (default: the packages' names).")
@click.option("--chips", "chips_dir", type=click.Path(path_type=Path), default=None, help="Calibrate: set the threshold and measure the card's figures on this chip set's validation split.")
@click.option("--val-fraction", default=0.15, show_default=True, type=click.FloatRange(0.01, 0.9), help="With --chips: the members' site-level validation fraction.")
@click.option("--split-seed", default=0, show_default=True, type=int, help="With --chips: the members' split seed.")
@click.option("--holdout-region", multiple=True, type=click.Path(), help="With --chips: report chips inside this polygon separately (repeatable).")
@click.option("--holdout-source", multiple=True, help="With --chips: report this source (glob) separately (repeatable).")
def ensemble_cmd(
    models: tuple[str, ...],
    out_dir: Path,
    name: str | None,
    member_names: str | None,
    chips_dir: Path | None,
    val_fraction: float,
    split_seed: int,
    holdout_region: tuple[str, ...],
    holdout_source: tuple[str, ...],
) -> None:
    """Merge MODELS (package folders or shipped names) into one ensemble package.

    The ensemble score is the mean of the member probabilities; every member's score is kept. The
    merged ONNX graphs run all members in one call (the fast tile graph too, when every member has
    one). Without --chips the threshold is the mean of the members' thresholds.
    """
    from minewatch.models.package import load_package
    from minewatch.runs import DirectRun, abs_path

    out_dir = abs_path(out_dir)
    chips_dir = abs_path(chips_dir) if chips_dir is not None else None
    pkgs = [load_package(m) for m in models]
    names = [n.strip() for n in member_names.split(",")] if member_names else None
    params = {"name": name, "member_names": names, "val_fraction": val_fraction, "split_seed": split_seed,
              "holdout_source": list(holdout_source)}  # fmt: skip
    inputs = {"member": [str(p.path.resolve()) for p in pkgs], "chips": chips_dir, "holdout_region": [abs_path(r) for r in holdout_region]}
    with DirectRun(out_dir, "models ensemble", params, inputs) as run:
        path = _ensemble(pkgs, run.target, name, names, chips_dir, val_fraction, split_seed, holdout_region, holdout_source)
    c = load_package(path).card
    val = c.metrics.get("val") or {}
    figs = f", val AP {val['ap']:.4f}, sensitivity@spec99 {val['sens_at_spec99']:.3f}" if "ap" in val else " (uncalibrated)"
    click.echo(f"{path}: {c.name}, {len(c.members)} members ({', '.join(c.members)}), threshold {c.threshold:.4g}{figs}, fast path {'yes' if c.fcn_stride else 'no'}")


def _ensemble(pkgs: list, out_dir: Path, name: str | None, names: list[str] | None, chips_dir: Path | None, val_fraction: float,
              split_seed: int, holdout_region: tuple[str, ...], holdout_source: tuple[str, ...]) -> Path:  # fmt: skip
    """Merge (and with ``chips_dir`` calibrate) the members into ``out_dir``."""
    from minewatch.models.ensemble import write_ensemble

    if chips_dir is None:
        return write_ensemble(pkgs, out_dir, name or out_dir.name, names)
    else:  # merge and calibrate beside the output; only a calibrated package reaches --out
        import shutil
        import tempfile

        from minewatch.chips import load_chips
        from minewatch.models.store import copy_package
        from minewatch.train.scorecard import calibrate_ensemble

        chips = load_chips(chips_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        try:
            write_ensemble(pkgs, tmp / "pkg", name or out_dir.name, names)
            calibrate_ensemble(tmp / "pkg", chips, val_fraction, split_seed, list(holdout_region), list(holdout_source))
            path = copy_package(tmp / "pkg", out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path
