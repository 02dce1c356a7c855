"""The ``minewatch`` entry point: a click group whose sub-commands are imported on demand.

Each sub-command lives in its own module (``minewatch/cli/<name>.py``) exposing a click command
called ``command``; importing lazily keeps ``minewatch --help`` fast and lets the inference path run
without optional extras such as PyTorch.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from minewatch import __version__
from minewatch.errors import MinewatchError

# name -> (module, one-line help). Order is the pipeline order shown by --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("minewatch.cli.run", "One shot: composite (or demo imagery) → detect → post-process → map."),
    "composite": ("minewatch.cli.composite", "Cloud-free Sentinel-2 median composites from STAC, per tile."),
    "chips": ("minewatch.cli.chips", "Cut labelled training chips around points from composites."),
    "train": ("minewatch.cli.train", "Train a mine classifier on a chip dataset (needs the [train] extra)."),
    "evaluate": ("minewatch.cli.evaluate", "Evaluate a model package on a chip dataset."),
    "models": ("minewatch.cli.models", "List, inspect and import model packages (Keras .h5 → ONNX)."),
    "detect": ("minewatch.cli.detect", "Score every patch of imagery with a model; write patch scores."),
    "postprocess": ("minewatch.cli.postprocess", "Threshold and dissolve patch scores into mining polygons."),
    "timeline": ("minewatch.cli.timeline", "Cumulative and new-mining layers over periods, with areas."),
    "persist": ("minewatch.cli.persist", "Confirmed and provisional mining: temporal persistence over periods."),
    "change": ("minewatch.cli.change", "Growth, persisting and receding mining per period (11 ha rule, equal-area)."),
    "alerts": ("minewatch.cli.alerts", "New confirmed/provisional mining as alerts (GeoJSON, CSV, GeoPackage, CoMapeo, Guardian Connector)."),
    "impacts": ("minewatch.cli.impacts", "Mined area per zone (territories, protected areas) per period."),
    "airstrips": ("minewatch.cli.airstrips", "Distance from each airstrip to the nearest mining."),
    "map": ("minewatch.cli.map", "A self-contained interactive HTML web map of layers."),
    "report": ("minewatch.cli.report", "A shareable HTML report of a run."),
    "review": ("minewatch.cli.review", "Draw a random sample of detections for visual review."),
    "precision": ("minewatch.cli.precision", "Precision with a 95% Wilson interval from a review CSV."),
    "verify": ("minewatch.cli.verify", "Check every output of a run against its manifest."),
}


class LazyGroup(click.Group):
    """A group that imports a sub-command's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [n for n, (mod, _) in COMMANDS.items() if importlib.util.find_spec(mod) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, short_help = COMMANDS[cmd_name]
        if importlib.util.find_spec(module_name) is None:
            return None
        if ctx.resilient_parsing or "--help" in sys.argv[1:2]:
            # `minewatch --help` only needs the one-line help: no heavy import.
            return click.Command(cmd_name, short_help=short_help, help=short_help)
        cmd = importlib.import_module(module_name).command
        cmd.short_help = cmd.short_help or short_help
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MinewatchError as e:
            click.echo(f"minewatch: error: {e.oneline()}", err=True)
            sys.exit(2)
        except OSError as e:
            # the backstop for every output (and input) edge: one line naming the path and the cause
            from minewatch.runs import output_error

            click.echo(f"minewatch: error: {output_error(e, ctx.invoked_subcommand or 'minewatch').oneline()}", err=True)
            sys.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="minewatch")
def cli() -> None:
    """minewatch — find artisanal gold mines in Sentinel-2 imagery.

    \b
    Pipeline:  composite → detect → postprocess → timeline / impacts / airstrips → map / report
    Models:    chips → train → evaluate;  models import-keras
    Quick demo (offline, ships with the package):  minewatch run --demo
    """


if __name__ == "__main__":  # pragma: no cover
    cli()
