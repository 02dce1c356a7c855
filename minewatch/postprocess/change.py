"""Change products per period: new mining (growth), persisting mining, and receding (healing) mining.

The reference's rule, on an equal-area measure (EPSG:6933, not Web Mercator):

* each period has a **state** (the mining footprint it shows) and a **cumulative** footprint (the
  union of every state so far);
* **growth** of a period = its cumulative footprint minus the previous cumulative one, exploded into
  single polygons; pieces below ``min_polygon_ha`` (default 11 ha, the reference's value) are
  dropped *from the diffs only* (the states and cumulative footprints keep them);
* **persisting** = the state ∩ the previous state; **receding** = the previous state minus the state
  (exploded, small pieces dropped likewise);
* **quarters** are merged onto the previous full year: the state of ``2025Q2`` is the 2024 annual
  footprint ∪ the 2025 quarters up to Q2 (a quarter alone would show seasonal cloud loss as healing);
  once a year's annual layer exists it *supersedes* its quarters (they are left out; an OR of both
  would count the same expansion twice).
* **increment layers** (the published ones: each period holds only what is new in it) have as state
  their union so far, so receding is empty by construction: they cannot show healing.

All overlay work is done in EPSG:6933 (so areas are exact polygon areas there), outputs go back to
WGS84.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from minewatch.errors import MinewatchError
from minewatch.periods import Period, parse_period
from minewatch.postprocess.dissolve import dissolve_geometries
from minewatch.postprocess.geom import EQUAL_AREA_CRS, M2_PER_HA

DEFAULT_MIN_POLYGON_HA = 11.0
"""The reference's minimum polygon area for change products (hectares)."""


@dataclass
class ChangeResult:
    pieces: gpd.GeoDataFrame
    """WGS84 polygons: ``period``, ``change`` (growth | persisting | receding), ``area_ha``."""
    table: pd.DataFrame
    """Per period: hectares of each change, pieces kept and dropped by the size rule, cumulative."""


def effective_periods(periods: Sequence[str]) -> list[Period]:
    """The periods in time order without the quarters that their year's annual layer supersedes."""
    ps = sorted({parse_period(p) for p in periods}, key=lambda p: p.key)
    years = {p.year for p in ps if p.is_annual}
    return [p for p in ps if p.is_annual or p.year not in years]


def _parts(geoms: np.ndarray) -> np.ndarray:
    """Disjoint single polygons covering ``geoms``: touching or overlapping ones unioned (only those:
    :func:`~minewatch.postprocess.dissolve.dissolve_geometries`), then exploded."""
    g = np.asarray([x for x in geoms if x is not None and not shapely.is_empty(x)], dtype=object)
    if not len(g):
        return np.zeros(0, dtype=object)
    merged, _ = dissolve_geometries(g)
    parts = shapely.get_parts(merged)
    return parts[shapely.get_type_id(parts) == 3]


def minus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Single polygons of ``∪a − ∪b`` for disjoint part arrays: only parts of ``a`` that overlap
    ``b`` are cut (STRtree candidates), each against the union of its own candidates."""
    if len(a) == 0 or len(b) == 0:
        return a
    ia, ib = shapely.STRtree(b).query(a, predicate="intersects")
    if len(ia):  # touching neighbours (shared edges of increments) are not overlaps: keep interior contacts only
        inner = shapely.relate_pattern(a[ia], b[ib], "T********")
        ia, ib = ia[inner], ib[inner]
    out = [a[np.setdiff1d(np.arange(len(a)), ia)]]
    if len(ia):
        order = np.argsort(ia, kind="stable")
        ia, ib = ia[order], ib[order]
        uniq, start, counts = np.unique(ia, return_index=True, return_counts=True)
        one = counts == 1
        cut1 = shapely.difference(a[uniq[one]], b[ib[start[one]]])  # vectorised for the usual single overlap
        many = [shapely.difference(a[i], shapely.union_all(b[ib[s_:s_ + c]])) for i, s_, c in zip(uniq[~one], start[~one], counts[~one])]
        cut = shapely.get_parts(np.array([*cut1, *many], dtype=object))  # one vectorised explode, input order kept
        out.append(cut[(shapely.get_type_id(cut) == 3) & ~shapely.is_empty(cut)])  # a part cut away whole is an empty polygon
    return np.concatenate(out)


def meet(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Single polygons of ``∪a ∩ ∪b`` for disjoint part arrays (pairwise, vectorised)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, dtype=object)
    ia, ib = shapely.STRtree(b).query(a, predicate="intersects")
    if not len(ia):
        return np.zeros(0, dtype=object)
    inter = shapely.intersection(a[ia], b[ib])
    parts = shapely.get_parts(inter)
    return parts[(shapely.get_type_id(parts) == 3) & (shapely.area(parts) > 0)]


def change_products(layer: gpd.GeoDataFrame, increments: bool = False, min_polygon_ha: float = DEFAULT_MIN_POLYGON_HA) -> ChangeResult:
    """Growth, persisting and receding mining per period of ``layer`` (polygons with ``period``).

    ``increments``: each period's polygons are only what is new in it (its state is the union so far).
    The cumulative footprint is kept as disjoint parts (previous parts + growth pieces), so no step
    overlays a continent-sized multipolygon.
    """
    if min_polygon_ha < 0 or not np.isfinite(min_polygon_ha):
        raise MinewatchError("--min-polygon-ha", f"must be ≥ 0, got {min_polygon_ha}")
    if len(layer) == 0:
        raise MinewatchError("LAYERS", "no polygons in the layers")
    ea = layer.to_crs(EQUAL_AREA_CRS)
    geoms = shapely.make_valid(ea.geometry.to_numpy())
    label_of = {v: parse_period(v).label for v in pd.unique(layer["period"].to_numpy(dtype=object))}
    labels = layer["period"].map(label_of).to_numpy(dtype=object)
    seq = effective_periods(labels.tolist())
    own = {p.label: _parts(geoms[labels == p.label]) for p in seq}
    min_m2 = min_polygon_ha * M2_PER_HA

    states: dict[str, np.ndarray] = {}
    cum: np.ndarray | None = None
    state_prev: np.ndarray | None = None
    rows, pieces = [], []
    for p in seq:
        if increments:
            new_parts = own[p.label] if cum is None else minus(own[p.label], cum)
            state = new_parts if cum is None else np.concatenate([cum, new_parts])
        elif p.is_annual:
            state = own[p.label]
        else:  # quarter: previous full year ∪ this year's quarters so far
            parts = [own[q.label] for q in seq if not q.is_annual and q.year == p.year and q.quarter <= p.quarter]
            prev_year = states.get(str(p.year - 1))
            state = _parts(np.concatenate(([prev_year] if prev_year is not None else []) + parts))
        states[p.label] = state
        row: dict[str, object] = {"period": p.label, "kind": "year" if p.is_annual else "quarter", "state_ha": float(shapely.area(state).sum()) / M2_PER_HA}
        if cum is None:
            growth = state
            row["baseline"] = True
        else:
            growth = minus(state, cum) if not increments else new_parts
            row["baseline"] = False
            receding = np.zeros(0, dtype=object) if increments else minus(state_prev, state)
            persisting = cum if increments else meet(state, state_prev)
            row["persisting_ha"] = float(shapely.area(persisting).sum()) / M2_PER_HA
            pieces.append((p.label, "persisting", persisting))
            for name, parts_ in (("growth", growth), ("receding", receding)):
                a = shapely.area(parts_)
                keep = a >= min_m2
                row[f"{name}_ha"] = float(a[keep].sum()) / M2_PER_HA
                row[f"{name}_pieces"] = int(keep.sum())
                row[f"{name}_dropped_ha"] = float(a[~keep].sum()) / M2_PER_HA
                row[f"{name}_dropped_pieces"] = int((~keep).sum())
                pieces.append((p.label, name, parts_[keep]))
        cum = growth if cum is None else np.concatenate([cum, growth])  # disjoint: growth lies outside cum
        row["cumulative_ha"] = float(shapely.area(cum).sum()) / M2_PER_HA
        rows.append(row)
        state_prev = state
    frames = [gpd.GeoDataFrame({"period": lab, "change": name, "area_ha": shapely.area(g) / M2_PER_HA}, geometry=g, crs=EQUAL_AREA_CRS)
              for lab, name, g in pieces if len(g) and name != "persisting"]  # fmt: skip
    if frames:
        out = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=EQUAL_AREA_CRS).to_crs(4326)
    else:
        out = gpd.GeoDataFrame({"period": [], "change": [], "area_ha": []}, geometry=gpd.GeoSeries([], crs=4326), crs=4326)
    table = pd.DataFrame(rows)
    cols = ["period", "kind", "baseline", "state_ha", "cumulative_ha", "growth_ha", "growth_pieces", "growth_dropped_ha",
            "growth_dropped_pieces", "persisting_ha", "receding_ha", "receding_pieces", "receding_dropped_ha", "receding_dropped_pieces"]  # fmt: skip
    table = table.reindex(columns=cols)
    return ChangeResult(out, table)


def run_change(paths: Sequence[str], out_dir: str, min_polygon_ha: float = DEFAULT_MIN_POLYGON_HA, layers_are: str = "auto") -> ChangeResult:
    """Read mining layers, compute :func:`change_products`, write ``change.{parquet,geojson}`` and ``change.csv``."""
    from pathlib import Path

    from minewatch.postprocess.io import make_metadata, read_layers, write_csv, write_geoparquet
    from minewatch.postprocess.persist import expand_inputs, write_geojson_fast

    files = expand_inputs(paths)
    layer = read_layers(files, area_field=None)
    if layers_are not in ("auto", "increments", "detections"):
        raise MinewatchError("--layers-are", f"expected auto, increments or detections, got {layers_are!r}")
    inc = layers_are == "increments" or (layers_are == "auto" and overlap_share(layer) < 0.01)
    res = change_products(layer, increments=inc, min_polygon_ha=min_polygon_ha)
    # no timings in the files: the same inputs give the same bytes
    meta = make_metadata("change", {"min_polygon_ha": min_polygon_ha, "layers_are": "increments" if inc else "detections"}, files)
    out = Path(out_dir)
    write_geoparquet(res.pieces, out / "change.parquet", meta)
    write_geojson_fast(res.pieces, out / "change.geojson", meta)
    write_csv(res.table, out / "change.csv", meta)
    res.table.attrs["layers_are"] = meta["parameters"]["layers_are"]
    return res


def overlap_share(layer: gpd.GeoDataFrame) -> float:
    """Largest share of a year's area that the previous year's polygons cover (~0 for increment layers)."""
    years = sorted({q for q in map(parse_period, pd.unique(layer["period"].to_numpy(dtype=object))) if q.is_annual}, key=lambda p: p.key)
    ea = layer.to_crs(EQUAL_AREA_CRS)
    best = 0.0
    for a, b in zip(years, years[1:]):
        ga = ea.geometry[layer["period"] == a.label].to_numpy()
        gb = ea.geometry[layer["period"] == b.label].to_numpy()
        if not len(ga) or not len(gb):
            continue
        i, j = shapely.STRtree(ga).query(gb, predicate="intersects")
        inter = shapely.area(shapely.intersection(gb[i], ga[j])).sum() if len(i) else 0.0
        best = max(best, float(inter / shapely.area(gb).sum()))
    return best
