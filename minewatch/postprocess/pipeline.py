"""File-level runs of post-processing and timelines: read inputs, compute, then write every output.

Everything is computed before the first file is written, and each file is written atomically, so a
bad input leaves no partial output behind. The CLI modules only parse options and call these.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from minewatch.atomic import write_json_atomic
from minewatch.postprocess.dissolve import dissolve_patches, simplification_report, simplify_layer
from minewatch.postprocess.mined import mined_note
from minewatch.postprocess.io import make_metadata, read_layers, read_patches, write_csv, write_layer
from minewatch.postprocess.threshold import ThresholdParams, classify
from minewatch.postprocess.timeline import timeline


@dataclass
class PostprocessResult:
    """Polygons (exact), the optional simplified copy, and the counts and timings of the run."""

    polygons: gpd.GeoDataFrame
    simplified: gpd.GeoDataFrame | None
    stats: dict[str, Any] = field(default_factory=dict)


def _finite_or_none(x: float) -> float | None:
    return x if x == x else None


def postprocess(patches: gpd.GeoDataFrame, params: ThresholdParams, simplify_m: float | None = None) -> PostprocessResult:
    """Threshold, dissolve and (optionally) simplify patch scores; pure, no I/O."""
    t0 = time.perf_counter()
    keep, isolated = classify(patches, params)
    t1 = time.perf_counter()
    polygons = dissolve_patches(patches[keep])
    t2 = time.perf_counter()
    simplified = simplify_layer(polygons, simplify_m) if simplify_m else None
    t3 = time.perf_counter()
    score = patches["score"].to_numpy(dtype=float)
    stats: dict[str, Any] = {
        "patches_in": int(len(patches)),
        "patches_main": int((score >= params.t_main).sum()),
        "patches_isolated": int(isolated.sum()),
        "patches_isolated_dropped": int((isolated & ~keep).sum()),
        "patches_kept": int(keep.sum()),
        "polygons": int(len(polygons)),
        "area_ha": float(polygons["area_ha"].sum()) if len(polygons) else 0.0,
        "footprint_ha": float(polygons["footprint_ha"].sum()) if len(polygons) else 0.0,
        "mined_ha": _finite_or_none(float(polygons["mined_ha"].sum(min_count=1))) if len(polygons) else 0.0,
        "seconds": {"threshold": round(t1 - t0, 3), "dissolve": round(t2 - t1, 3), "simplify": round(t3 - t2, 3)},
    }
    if simplified is not None:
        stats["simplification"] = simplification_report(polygons, simplified)
    return PostprocessResult(polygons, simplified, stats)


def run_postprocess(patches_path: str | Path, out_dir: str | Path, params: ThresholdParams,
                    simplify_m: float | None = None, period: str | None = None) -> PostprocessResult:
    """``minewatch postprocess``: writes ``mining.{parquet,geojson}`` (+ ``mining_simplified.*``) and
    ``summary.json`` in ``out_dir``."""
    patches = read_patches(patches_path, period=period)
    res = postprocess(patches, params, simplify_m)
    meta = make_metadata("postprocess", {**params.as_dict(), "simplify_m": simplify_m, "dissolve": "intersecting patches",
                                         "distance": "geocentric metres between patch centres"}, [patches_path])
    meta["areas"] = {"footprint_ha": "equal-area outline of the dissolved 480 m patches", "area_ha": "= footprint_ha (older readers)",
                     "mined_ha": mined_note()}
    out_dir = Path(out_dir)
    write_layer(res.polygons, out_dir, "mining", meta)
    if res.simplified is not None:
        write_layer(res.simplified, out_dir, "mining_simplified", {**meta, "note": "simplified for display; area_ha from the exact geometry"})
    write_json_atomic(out_dir / "summary.json", {**meta, "stats": res.stats})
    return res


@dataclass
class TimelineResult:
    new: gpd.GeoDataFrame
    cumulative: gpd.GeoDataFrame
    table: pd.DataFrame
    area_field: str | None = None
    """The per-polygon field behind the estimated columns (``mined_ha``, ``Mined area (ha)``, the footprint ``area_ha``, None)."""
    area_fields: list[str] = field(default_factory=list)
    """Every layer's field; more than one when the layers differ (then ``area_field`` is None)."""


def run_timeline(layers: Sequence[str | Path], out_dir: str | Path, area_field: str | None = "auto",
                 min_piece_ha: float = 0.0) -> TimelineResult:
    """``minewatch timeline``: writes ``new_mining.*``, ``cumulative.*`` and ``areas.csv`` in ``out_dir``."""
    layer = read_layers(layers, area_field=area_field)
    new, cum, table = timeline(layer, min_piece_ha=min_piece_ha)
    meta = make_metadata("timeline", {"area_field": layer.attrs.get("area_field"), "area_fields": layer.attrs.get("area_fields"), "min_piece_ha": min_piece_ha,
                                      "periods": table["period"].tolist()}, layers)
    out_dir = Path(out_dir)
    write_layer(new, out_dir, "new_mining", {**meta, "layer": "new mining per period (disjoint pieces)"})
    write_layer(cum, out_dir, "cumulative", {**meta, "layer": "dissolved union of all mining up to each period"})
    write_csv(table, out_dir / "areas.csv", {**meta, "table": "hectares per period (footprint: equal-area; area: stated estimate)"})
    return TimelineResult(new, cum, table, layer.attrs.get("area_field"), list(layer.attrs.get("area_fields", [])))
