"""Matplotlib charts for reports: mined area per period, new area per period, top zones.

Each chart is written as a PNG (atomically) and its bytes are returned so the HTML report can embed
it as a data URI and stay one self-contained file. The Agg backend is forced: reports are built on
headless machines.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from minewatch.atomic import atomic_path  # noqa: E402
from minewatch.webmap.layers import PeriodStats  # noqa: E402

DPI = 110
ORANGE, PINK, DARK = "#f28e2b", "#d6336c", "#6b1a00"
_ha = FuncFormatter(lambda v, _: f"{v:,.0f}")


def _save(fig: Figure, path: str | Path) -> bytes:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path).read_bytes()


def _bar_labels(ax: plt.Axes, values: Sequence[float]) -> None:
    top = max(values) if len(values) else 0
    for i, v in enumerate(values):
        ax.text(i, v + top * 0.01, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)


def _period_ticks(ax: plt.Axes, periods: Sequence[str]) -> None:
    """Period labels that never run into each other: slanted when they would not fit side by side
    (about 7 characters per bar at this width; ``2025Q2`` bars need it from 8 periods on)."""
    ax.set_xticks(range(len(periods)), [str(p) for p in periods])
    if sum(len(str(p)) + 2 for p in periods) > 56:
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        for t in ax.get_xticklabels():
            t.set_horizontalalignment("right")
            t.set_rotation_mode("anchor")


def area_per_period(stats: Sequence[PeriodStats], path: str | Path, label: str = "Mined area") -> bytes:
    """Bar chart of the area detected in each period (ha)."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    periods = [s.period for s in stats]
    values = [s.area_ha for s in stats]
    ax.bar(range(len(periods)), values, color=ORANGE)
    _period_ticks(ax, periods)
    _bar_labels(ax, values)
    ax.set_ylabel(f"{label} (ha)")
    ax.set_title(f"{label} detected per period")
    ax.yaxis.set_major_formatter(_ha)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def new_area_per_period(stats: Sequence[PeriodStats], path: str | Path, label: str = "Mined area") -> bytes:
    """New area per period (bars: not detected in any earlier period) and the cumulative total (line)."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    periods = [s.period for s in stats]
    new = [s.new_ha for s in stats]
    ax.bar(range(len(periods)), new, color=PINK, label="new in period")
    _period_ticks(ax, periods)
    _bar_labels(ax, new)
    ax.set_ylabel("New area (ha)")
    ax.yaxis.set_major_formatter(_ha)
    ax2 = ax.twinx()
    ax2.plot(range(len(periods)), [s.cumulative_ha for s in stats], color=DARK, marker="o", label="cumulative")
    ax2.set_ylabel("Cumulative (ha)")
    ax2.yaxis.set_major_formatter(_ha)
    ax2.set_ylim(bottom=0)
    ax.set_title(f"New and cumulative {label.lower()} per period")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.22 if len(periods) and sum(len(str(p)) + 2 for p in periods) > 56 else -0.1),
              ncol=2, frameon=False, fontsize=8)
    ax.spines[["top"]].set_visible(False)
    return _save(fig, path)


def top_zones(top: pd.DataFrame, path: str | Path, period: str, label: str = "Mined area") -> bytes:
    """Horizontal bars of the zones with most cumulative mined area; ``top`` has ``zone_name``, ``cumulative_ha``."""
    n = max(len(top), 1)
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.32 * n))
    names = [str(x)[:40] for x in top["zone_name"]][::-1]
    vals = list(top["cumulative_ha"])[::-1]
    pos = list(range(len(vals)))  # numeric positions: two zones may share a name
    ax.barh(pos, vals, color=ORANGE)
    ax.set_yticks(pos, names)
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
    ax.set_xlabel(f"Cumulative {label.lower()} up to {period} (ha)")
    ax.xaxis.set_major_formatter(_ha)
    ax.set_title("Most affected zones")
    ax.spines[["top", "right"]].set_visible(False)
    if not len(top):
        ax.text(0.5, 0.5, "no zone intersects the detections", transform=ax.transAxes, ha="center")
    return _save(fig, path)
