"""Options shared by several ``minewatch`` commands, defined once so they read the same everywhere.

Why one place: a user who learns ``-o/--out``, ``--workers``, ``--level`` or ``--zone-id-field`` on
one command can type it on the next. Each helper returns a click decorator; old spellings stay as
hidden aliases that still work (and say which name to use).

Also here: the small resolvers behind those options (``--bands model:NAME``, a tile size that suits
the model's patch step), so every command resolves them the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from minewatch.errors import MinewatchError

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def out_option(help: str = "Output folder.", *, required: bool = True, file_okay: bool = False, dir_okay: bool = True,
               dest: str = "out_dir", default: Any = None) -> Decorator:  # fmt: skip
    """``-o/--out``: where a command writes (a folder, or a file for map/report/review)."""
    return click.option("-o", "--out", dest, required=required, default=default, help=help,
                        type=click.Path(file_okay=file_okay, dir_okay=dir_okay, path_type=Path))  # fmt: skip


def workers_option(help: str = "Parallel workers: Dask LocalCluster workers [default: one per 8 cores], or tiles at once in process [default: 1, every core inside the tile].") -> Decorator:
    return click.option("--workers", type=click.IntRange(1, 512), default=None, help=help)


def scheduler_option() -> Decorator:
    return click.option("--scheduler", default=None,
                        help="Dask scheduler: a cluster address (tcp://host:8786), 'local' (a LocalCluster), 'threads' or 'synchronous' (in process); default 'auto': in process on one machine (minewatch.scheduling says the rule).")  # fmt: skip


def quiet_option() -> Decorator:
    return click.option("--quiet", is_flag=True, help="No progress bars.")


def overwrite_option() -> Decorator:
    return click.option("--overwrite", is_flag=True, help="Start over: delete a previous run's outputs in --out.")


LEVEL_CHOICE = click.Choice(["l2a", "l1c"], case_sensitive=False)
LEVEL_HELP = ("Processing level: l2a (surface reflectance; free from Earth Search and Planetary Computer, no account) "
              "or l1c (top of atmosphere, the level the shipped models were trained on; Earth Search L1C needs AWS credentials)")  # fmt: skip


def level_option(default: str | None = "l2a", extra_help: str = "") -> Decorator:
    """``--level l2a|l1c``; L2A by default everywhere imagery is fetched (no account needed)."""
    return click.option("--level", type=LEVEL_CHOICE, default=default, show_default=default is not None,
                        help=LEVEL_HELP + (f" {extra_help}" if extra_help else "") + ".")  # fmt: skip


def source_option() -> Decorator:
    return click.option("--source", default="earth-search", show_default=True,
                        help="earth-search | planetary-computer | a STAC API URL | a local catalog.json / ItemCollection file.")  # fmt: skip


def zone_fields_options(required_id: bool = False) -> Decorator:
    """``--zone-id-field`` / ``--zone-name-field`` (``--id-field`` / ``--name-field`` kept, hidden)."""

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option("--name-field", "zone_name_field_old", default=None, hidden=True, help="Deprecated: --zone-name-field.")(f)
        f = click.option("--id-field", "zone_id_field_old", default=None, hidden=True, help="Deprecated: --zone-id-field.")(f)
        f = click.option("--zone-name-field", default=None, help="Zone name column [default: guessed from the zone file].")(f)
        f = click.option("--zone-id-field", default=None, help="Zone id column" + (" (required)." if required_id else " [default: guessed]."))(f)
        return f

    return deco


def pick_zone_fields(zone_id_field: str | None, zone_name_field: str | None, id_old: str | None, name_old: str | None) -> tuple[str | None, str | None]:
    """The zone id/name columns from the new or the deprecated spelling (both given and different: error)."""
    out = []
    for new, old, name in ((zone_id_field, id_old, "zone-id-field"), (zone_name_field, name_old, "zone-name-field")):
        if new and old and new != old:
            raise MinewatchError(f"--{name}", f"given twice with different values ({new!r} and {old!r} via the old spelling)")
        out.append(new or old)  # the old spelling is silent: scripts and docs of earlier versions keep working
    return out[0], out[1]


def progress_lines(quiet: bool = False) -> Callable[[str], None]:
    """A ``say(line)`` for the steps of a command that runs more than a few seconds: each line goes to
    stderr with the seconds since the start, when stderr is a terminal (as tqdm's bars) or
    ``MINEWATCH_PROGRESS=1``; never with ``--quiet``. Piped output stays what it was: results and,
    on failure, the one error line."""
    import os
    import sys
    import time

    t0 = time.monotonic()
    on = not quiet and (os.environ.get("MINEWATCH_PROGRESS") == "1" or sys.stderr.isatty())

    def say(line: str) -> None:
        if on:
            click.echo(f"{line} ({time.monotonic() - t0:.0f} s)", err=True)

    return say


# --- resolvers ------------------------------------------------------------------------------------
def parse_band_names(text: str | None) -> tuple[str, ...] | None:
    """``"B4,B3,B2"`` → ``("B4", "B3", "B2")`` (canonical names); None/empty → None."""
    if not text:
        return None
    from minewatch.detect.imagery import normalise_band_name

    names = tuple(normalise_band_name(p) for p in text.split(",") if p.strip())
    if len(set(names)) != len(names):
        raise MinewatchError("--bands", f"duplicate band in {text}")
    return names or None


def model_bands(text: str | None) -> tuple[str, ...] | None:
    """``model:NAME`` → that model's input bands (card order); anything else → None."""
    if text and text.lower().startswith("model:"):
        from minewatch.models.package import load_package

        name = text.split(":", 1)[1].strip() or "default"
        return tuple(load_package(name).card.spec.bands)
    return None


def composite_bands(text: str | None, level: str) -> tuple[str, ...]:
    """Bands to composite: ``model:NAME`` (the bands that model scores), a list, or the level's default."""
    from minewatch.imagery.engine import parse_bands

    mb = model_bands(text)
    if mb is not None and level.upper() == "L2A" and "B10" in mb:
        raise MinewatchError("--bands", f"{text} needs B10 (cirrus), which L2A products do not have: use --level l1c")
    return parse_bands(mb if mb is not None else text, level)


def auto_tile_px(tile_px: int | None, imagery: Any, models: Sequence[str], bands: Sequence[str] | None = None,
                 log: Callable[[str], None] | None = None) -> int:  # fmt: skip
    """The detection tile size: ``--tile-px`` as given, else the composites' own tile size, else
    1008 — moved to the nearest multiple of the model's patch step when that does not divide it
    (said in ``log``), so a model with a 22 px step runs without a hidden flag."""
    from minewatch.detect.imagery import open_imagery
    from minewatch.grid import DEFAULT_TILE_PX, tile_px_for_step
    from minewatch.models.package import load_package

    if tile_px is not None:
        return tile_px
    base = open_imagery(imagery, bands).tile_px or DEFAULT_TILE_PX
    step = load_package(models[0] if models else "default").card.step_px
    if base % step == 0:
        return base
    chosen = tile_px_for_step(base, step)
    if log is not None:
        log(f"note: tile size {base} px is not a multiple of the model's {step} px patch step; using {chosen} px (set --tile-px to choose)")
    return chosen


__all__ = [
    "out_option", "workers_option", "scheduler_option", "quiet_option", "overwrite_option", "level_option", "source_option",
    "zone_fields_options", "pick_zone_fields", "progress_lines", "parse_band_names", "model_bands", "composite_bands", "auto_tile_px",
]  # fmt: skip
