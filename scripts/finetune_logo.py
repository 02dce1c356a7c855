"""How much do a few local labels buy on a place the model has never seen? (issue #14)

Leave-one-group-out, as ``scripts/train_default.py`` measures generalisation: a *base* network is
trained with one group of places left out (and every chip sharing a site with it); it is then
fine-tuned (:func:`minewatch.train.finetune.finetune_package`, the code behind
``minewatch train --init``) on N chips drawn from that group and evaluated on the rest of the group.

Steps (each resumable / skippable; from the repository root, ``[train]`` extra installed)::

    python scripts/finetune_logo.py base:geo-regions       # base run, group left out (runs/finetune-logo/base/...)
    python scripts/finetune_logo.py base:peru-bd-mineria
    python scripts/finetune_logo.py measure:geo-regions    # N = 25, 50, 100, 200 × 3 draws → JSON
    python scripts/finetune_logo.py measure:peru-bd-mineria
    python scripts/finetune_logo.py table                  # the markdown table of docs/models.md

The base recipe is the shipped ``fcn`` member's (``mwnet``, seed 1, split seed 0) with fewer epochs
(:data:`BASE_EPOCHS`, CPU time on the shared 2-core machine): the default's leave-one-group-out runs
used 16.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from minewatch.chips import load_chips  # noqa: E402
from minewatch.config import shared_data_dir  # noqa: E402

RUNS = REPO / "runs" / "finetune-logo"
BASE_EPOCHS = 6


def _td():  # scripts/train_default.py holds the recipes and the groups
    sys.path.insert(0, str(REPO / "scripts"))
    import train_default

    return train_default


def base_config():
    td = _td()
    return replace(td.LOSO_MEMBER, epochs=BASE_EPOCHS, patience=BASE_EPOCHS)


def group_args(group: str) -> tuple[list[Path], list[str]]:
    td = _td()
    b = shared_data_dir() / "upstream" / "boundaries"
    g = td.LOSO_GROUPS[group]
    return [b / r for r in g.get("regions", [])], list(g.get("sources", []))


def run_base(group: str) -> Path:
    from minewatch.train.loop import train_package

    regions, sources = group_args(group)
    t = time.time()
    out = train_package(load_chips(shared_data_dir() / "s2_rgb_chips"), base_config(), RUNS / "base" / group, regions, sources, name=f"logo-base-{group}")
    print(f"base {group}: {time.time() - t:.0f} s wall", flush=True)
    return out


STEPS = {"base": run_base}

if __name__ == "__main__":
    for arg in sys.argv[1:]:
        step, _, group = arg.partition(":")
        STEPS[step](group)
