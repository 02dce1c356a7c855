"""Compare per-zone areas with a published reference table (Amazon Mining Watch's territory CSV).

The upstream CSV ``mining_by_indigenous_territories_2018-2025Q3.csv`` has one row per territory
(``id``) × period (``admin_year``, upstream code ``YYYYQQ``) × sub-national admin unit
(``admin_id_field``/``admin_name_field``) × illegality level (``admin_illegality_max``), with the
apportioned ``intersected_area_ha``. Summing over admin units and illegality levels gives the
territory × period figure that :func:`minewatch.impacts.zonal.zonal_stats` computes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from minewatch.errors import MinewatchError
from minewatch.postprocess.io import normalize_period

REFERENCE_COLUMNS = ("id", "admin_year", "intersected_area_ha")


def read_reference(path: str | Path, id_col: str = "id", period_col: str = "admin_year",
                   value_col: str = "intersected_area_ha") -> pd.DataFrame:
    """The reference summed to ``zone_id`` × ``period`` → ``ref_ha``."""
    path = Path(path)
    if not path.exists():
        raise MinewatchError(path, "file not found")
    df = pd.read_csv(path)
    missing = [c for c in (id_col, period_col, value_col) if c not in df.columns]
    if missing:
        raise MinewatchError(path, f"missing columns {missing} (columns: {list(df.columns)})")
    df = df.assign(zone_id=df[id_col].astype(str), period=df[period_col].map(normalize_period))
    return df.groupby(["zone_id", "period"], as_index=False)[value_col].sum().rename(columns={value_col: "ref_ha"})


def compare(ours: pd.DataFrame, ref: pd.DataFrame, value: str = "apportioned_ha",
            rel_tol: float = 0.01, abs_tol: float = 0.005) -> pd.DataFrame:
    """Outer join of ``ours`` (zone_id, period, value) and ``ref`` (zone_id, period, ref_ha).

    ``within`` is True when ``|ours − ref| ≤ max(rel_tol·ref, abs_tol)``: ``abs_tol`` (default
    0.005 ha, half the 0.01 ha rounding step of the published per-polygon areas) only matters for
    reference values under 0.5 ha. ``within_strict`` uses the relative tolerance alone.
    """
    o = ours.groupby(["zone_id", "period"], as_index=False)[value].sum().rename(columns={value: "ours_ha"})
    j = o.merge(ref, on=["zone_id", "period"], how="outer").fillna({"ours_ha": 0.0, "ref_ha": 0.0})
    diff = j["ours_ha"] - j["ref_ha"]
    j["diff_ha"] = diff
    j["rel"] = np.divide(diff.abs(), j["ref_ha"], out=np.where(diff.abs() > 0, np.inf, 0.0), where=j["ref_ha"] > 0)
    j["within"] = diff.abs() <= np.maximum(rel_tol * j["ref_ha"], abs_tol)
    j["within_strict"] = diff.abs() <= rel_tol * j["ref_ha"]
    return j.sort_values("rel", ascending=False, kind="stable").reset_index(drop=True)
