"""Temporal persistence: which detections are *confirmed*, which are *provisional*, and since when.

A single-period detection is often a cloud remnant, a sandbar or a landslide; a mine stays. The rule
(the reference system's published design, with its defaults ``k = 2``, ``window = 2``):

* **Locations.** Persistence is judged per *location*, a place that has the same identity in every
  period: a patch of the global lattice (:mod:`minewatch.grid`: 48 px patches every 24 px, i.e. a
  vertex every 240 m in the UTM zone of the place). Its id is ``"<zone>:<i>:<j>"`` where the patch
  centre is at easting ``i·240 m`` and northing-from-the-equator ``j·240 m`` of UTM zone ``zone``.
  - our own patch scores (``minewatch detect``): the patch *is* the location (its centre is a vertex);
  - polygon layers without patches (the published Amazon Mining Watch layers, or our polygons):
    the lattice cells (240 m squares centred on the vertices, which tile the plane) that a polygon
    overlaps are its locations, each with the piece of the polygon inside the cell — so the
    pieces partition every layer exactly and areas per status add up to the layer's area.
* **Onset** is dated by annual periods only (quarterly cloud loss is seasonal). A location is
  **confirmed** when it is detected in at least ``k`` annual periods within ``window`` years counting
  the onset year; a candidate onset year ``y`` is evaluated only once every annual period
  ``y … y+window-1`` exists among the inputs; ``confirmed_in`` is the year of the k-th sighting; the
  earliest confirming onset wins. ``n_witness`` counts the annual sightings in that window.
* Sightings whose window is not closed yet (the newest years, and quarters of years whose annual
  layer does not exist yet) make a location **provisional**, but only from detections that pass
  the stricter provisional thresholds (``t_prov``/``t_prov_iso``; layers without scores — the
  published ones — are taken as they are). A quarter is superseded by its year's annual layer once
  that exists. Provisional onset is the earliest open annual sighting (``None`` when only quarters
  saw it).
* Across runs into the same folder (:func:`merge_previous`): provisional rows are dropped and
  recomputed (never promoted in place: a provisional row and the confirmed row that may follow it are
  different rows); confirmed rows are never withdrawn, even when a later input misses them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from minewatch.errors import MinewatchError
from minewatch.periods import Period, parse_period
from minewatch.postprocess.dissolve import dissolve_patch_geometries
from minewatch.postprocess.geom import area_ha, transformer

STEP_M = 240.0
"""Lattice step (24 px × 10 m): patch centres lie on multiples of it in their UTM zone."""

REF_SINGLE = (0.43, 0.75)
"""The reference's single-period thresholds (main, isolated) on its own score scale (``single`` preset)."""
REF_PROVISIONAL = (0.55, 0.80)
"""The reference's stricter provisional thresholds (main, isolated) on its own scale."""

PATCH_CELL_HA = STEP_M * STEP_M / 10_000.0
"""Area a lattice patch stands for (its 240 m step cell: patches overlap by half, cells tile the plane)."""

STATUS_CONFIRMED = "confirmed"
STATUS_PROVISIONAL = "provisional"

LOCATION_COLUMNS = ["location_id", "status", "onset", "confirmed_in", "n_witness", "first_seen", "last_seen",
                    "period", "n_seen", "score", "area_ha", "mined_ha"]  # fmt: skip


@dataclass(frozen=True)
class PersistParams:
    """The persistence rule's parameters (see the module docstring)."""

    k: int = 2
    window: int = 2

    def __post_init__(self) -> None:
        if self.k < 1:
            raise MinewatchError("--k", f"must be ≥ 1, got {self.k}")
        if self.window < 1:
            raise MinewatchError("--window", f"must be ≥ 1 year, got {self.window}")
        if self.k > self.window:
            raise MinewatchError("--k", f"k = {self.k} sightings cannot fit in a window of {self.window} years")

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def map_reference_threshold(t_ref: float, card_main: float, card_iso: float, ref: tuple[float, float] = REF_SINGLE) -> float:
    """A threshold on the reference's score scale mapped onto a model's calibrated scale.

    Piecewise linear through three anchors: 0 → 0, the reference's single-period main threshold →
    the card's threshold, the reference's isolated threshold → the card's isolated (spec99)
    threshold, and 1 → 1. So "as much stricter than the usual operating point" is preserved in
    the model's own terms: with the shipped card (0.889 / 0.926) the reference's provisional 0.55 /
    0.80 become 0.903 / 0.932.
    """
    if not 0.0 <= t_ref <= 1.0:
        raise MinewatchError("--t-prov", f"must be a probability in [0, 1], got {t_ref}")
    xs = [0.0, ref[0], ref[1], 1.0]
    ys = [0.0, card_main, max(card_iso, card_main), 1.0]
    return float(np.interp(t_ref, xs, ys))


# ------------------------------------------------------------------------------------------ locations


def location_ids(zone: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``"<zone>:<i>:<j>"`` strings (see the module docstring)."""
    return np.array([f"{z}:{a}:{b}" for z, a, b in zip(zone.tolist(), i.tolist(), j.tolist())], dtype=object)


def _zone_of_lon(lon: np.ndarray) -> np.ndarray:
    lon = ((np.asarray(lon, dtype=float) + 180.0) % 360.0) - 180.0
    return np.minimum(((lon + 180.0) // 6.0).astype(int) + 1, 60)


def patch_locations(patches: gpd.GeoDataFrame) -> np.ndarray:
    """Location id of each patch footprint: its centre snapped to the lattice of its UTM zone.

    The zone is the patch's ``epsg`` column when present (the tile's zone), else the zone of the
    centre's longitude. Northings are measured from the equator (one lattice across hemispheres).
    """
    n = len(patches)
    if n == 0:
        return np.zeros(0, dtype=object)
    c = shapely.centroid(patches.to_crs(4326).geometry.to_numpy())
    lon, lat = shapely.get_x(c), shapely.get_y(c)
    if "epsg" in patches.columns:
        zone = patches["epsg"].to_numpy(dtype=int) % 100
    else:
        zone = _zone_of_lon(lon)
    ii, jj = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for z in np.unique(zone):
        sel = zone == z
        x, y = transformer("EPSG:4326", f"EPSG:{32600 + int(z)}").transform(lon[sel], lat[sel])
        ii[sel] = np.rint(np.asarray(x) / STEP_M).astype(np.int64)
        jj[sel] = np.rint(np.asarray(y) / STEP_M).astype(np.int64)
    return location_ids(zone, ii, jj)


CELL_M = 2 * STEP_M
"""Side of the cells that polygon layers are cut into: 480 m, one patch."""


def polygon_locations(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The lattice locations of WGS84 polygons: (polygon index, location id, cell square in WGS84,
    True where the polygon contains the cell's centre / False for a representative-point cell).

    Cells are the non-overlapping patches of the global lattice: 480 m squares whose centres are
    the vertices with odd indices (``i``, ``j`` odd) in the UTM zone of the centre's longitude
    (northern EPSG 326xx coordinates, negative south of the equator, so one lattice spans both
    hemispheres). A polygon's locations are the cells whose centre it contains; a polygon that
    contains no cell centre (a thin or small one) gets the cell under its representative point, so
    every polygon has at least one location. Vectorised: one point-in-polygon test over the
    candidate centres of every polygon's bounding box.
    """
    geoms = np.asarray(geoms, dtype=object)
    if len(geoms) == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=object), np.zeros(0, dtype=object), np.zeros(0, dtype=bool)
    b = shapely.bounds(geoms)
    z_lo, z_hi = _zone_of_lon(b[:, 0]), _zone_of_lon(b[:, 2])
    rep = shapely.point_on_surface(geoms)
    z_rep = _zone_of_lon(shapely.get_x(rep))
    out_idx, out_i, out_j, out_z = [], [], [], []
    for z in np.unique(np.concatenate([z_lo, z_hi])):
        sel = np.flatnonzero((z_lo <= z) & (z_hi >= z))
        fwd = transformer("EPSG:4326", f"EPSG:{32600 + int(z)}")
        inv = transformer(f"EPSG:{32600 + int(z)}", "EPSG:4326")
        utm = shapely.transform(geoms[sel], lambda xy, t=fwd: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
        shapely.prepare(utm)
        ub = shapely.bounds(utm)
        # odd vertex indices: centre = (2a+1)·240 m
        a0 = np.ceil((ub[:, 0] / STEP_M - 1) / 2).astype(np.int64)
        a1 = np.floor((ub[:, 2] / STEP_M - 1) / 2).astype(np.int64)
        b0 = np.ceil((ub[:, 1] / STEP_M - 1) / 2).astype(np.int64)
        b1 = np.floor((ub[:, 3] / STEP_M - 1) / 2).astype(np.int64)
        na, nb = np.maximum(a1 - a0 + 1, 0), np.maximum(b1 - b0 + 1, 0)
        counts = na * nb
        poly = np.repeat(np.arange(len(sel)), counts)
        start = np.repeat(np.cumsum(counts) - counts, counts)
        k = np.arange(len(poly)) - start
        ci = 2 * (a0[poly] + k % np.maximum(na[poly], 1)) + 1
        cj = 2 * (b0[poly] + k // np.maximum(na[poly], 1)) + 1
        cx, cy = ci * STEP_M, cj * STEP_M
        inside = shapely.contains_xy(utm[poly], cx.astype(float), cy.astype(float))
        poly, ci, cj, cx, cy = poly[inside], ci[inside], cj[inside], cx[inside], cy[inside]
        lon_c, _ = inv.transform(cx.astype(float), cy.astype(float))
        in_zone = _zone_of_lon(np.asarray(lon_c)) == z
        out_idx.append(sel[poly[in_zone]])
        out_i.append(ci[in_zone])
        out_j.append(cj[in_zone])
        out_z.append(np.full(int(in_zone.sum()), int(z)))
    idx = np.concatenate(out_idx)
    n_centre = len(idx)
    # polygons without any cell centre: the cell under the representative point
    lonely = np.setdiff1d(np.arange(len(geoms)), idx)
    for z in np.unique(z_rep[lonely]):
        sel = lonely[z_rep[lonely] == z]
        x, y = transformer("EPSG:4326", f"EPSG:{32600 + int(z)}").transform(shapely.get_x(rep[sel]), shapely.get_y(rep[sel]))
        out_idx.append(sel)
        out_i.append(2 * np.floor(np.asarray(x) / CELL_M).astype(np.int64) + 1)
        out_j.append(2 * np.floor(np.asarray(y) / CELL_M).astype(np.int64) + 1)
        out_z.append(np.full(len(sel), int(z)))
    idx, ci, cj, zz = (np.concatenate(v) for v in (out_idx, out_i, out_j, out_z))
    centre = np.arange(len(idx)) < n_centre
    return idx, location_ids(zz, ci, cj), cell_squares(zz, ci, cj), centre


def cell_squares(zone: np.ndarray, i: np.ndarray, j: np.ndarray, side_m: float = CELL_M) -> np.ndarray:
    """WGS84 squares of side ``side_m`` centred on lattice vertices (corners projected)."""
    out = np.empty(len(zone), dtype=object)
    h = side_m / 2
    for z in np.unique(zone):
        sel = zone == z
        cx, cy = i[sel] * STEP_M, j[sel] * STEP_M
        xs = np.stack([cx - h, cx + h, cx + h, cx - h, cx - h], axis=1).astype(float)
        ys = np.stack([cy - h, cy - h, cy + h, cy + h, cy - h], axis=1).astype(float)
        lon, lat = transformer(f"EPSG:{32600 + int(z)}", "EPSG:4326").transform(xs.ravel(), ys.ravel())
        n = int(sel.sum())
        out[sel] = shapely.polygons(np.stack([np.asarray(lon).reshape(n, 5), np.asarray(lat).reshape(n, 5)], axis=-1))
    return out


# ------------------------------------------------------------------------------------------ the rule


@dataclass
class Sightings:
    """One row per (location, period) detection: ``location_id``, ``period`` (label), ``prov``
    (passes the provisional thresholds), ``score`` (NaN when the layer has none), ``area_ha`` (the
    hectares it stands for), ``mined_ha`` (the mined-area estimate of those hectares: scar fraction ×
    hectares, NaN where the input carries none — never the footprint) and ``geometry`` (the
    location's footprint, WGS84)."""

    table: gpd.GeoDataFrame

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> Sightings:
        need = {"location_id", "period", "prov", "score", "area_ha", "geometry"}
        missing = need - set(df.columns)
        if missing:
            raise ValueError(f"sightings need columns {sorted(missing)}")
        labels = {v: parse_period(v, "period").label for v in pd.unique(df["period"])}
        t = pd.DataFrame({
            "location_id": df["location_id"].astype(str).to_numpy(), "period": df["period"].map(labels).to_numpy(),
            "prov": df["prov"].to_numpy(dtype=bool), "score": pd.to_numeric(df["score"]).to_numpy(dtype=float),
            "area_ha": pd.to_numeric(df["area_ha"]).to_numpy(dtype=float),
            "mined_ha": pd.to_numeric(df["mined_ha"]).to_numpy(dtype=float) if "mined_ha" in df.columns else np.full(len(df), np.nan),
            "centre": df["centre"].to_numpy(dtype=bool) if "centre" in df.columns else np.ones(len(df), dtype=bool),
            "geometry": np.asarray(df["geometry"], dtype=object),
        })  # fmt: skip
        # one row per (location, period): best score, any prov, summed hectares
        g = t.groupby(["location_id", "period"], sort=True)
        agg = g.agg(prov=("prov", "any"), score=("score", "max"), area_ha=("area_ha", "sum"), centre=("centre", "any"),
                    geometry=("geometry", "first")).reset_index()
        agg.insert(agg.columns.get_loc("area_ha") + 1, "mined_ha", g["mined_ha"].sum(min_count=1).to_numpy(dtype=float))
        return cls(agg)


def open_periods(periods: Sequence[str], window: int) -> tuple[set[str], set[int]]:
    """(periods whose window is not closed, years whose annual window is closed) among ``periods``.

    A year ``y`` is closed when every year ``y … y+window-1`` is present; a quarter is open when its
    year has no annual layer (once it has, the quarter is superseded and plays no part).
    """
    ps = [parse_period(p, "period") for p in periods]
    years = {p.year for p in ps if p.is_annual}
    closed = {y for y in years if all(y + d in years for d in range(window))}
    open_ = {p.label for p in ps if (p.is_annual and p.year not in closed) or (not p.is_annual and p.year not in years)}
    return open_, closed


def superseded(periods: Sequence[str]) -> set[str]:
    """Quarters whose year's annual layer is among ``periods`` (the annual layer replaces them)."""
    ps = [parse_period(p, "period") for p in periods]
    years = {p.year for p in ps if p.is_annual}
    return {p.label for p in ps if not p.is_annual and p.year in years}


def persistence(sightings: Sightings, periods: Sequence[str], params: PersistParams = PersistParams()) -> gpd.GeoDataFrame:
    """One row per confirmed or provisional location (columns :data:`LOCATION_COLUMNS` + geometry).

    ``periods``: every period given as input (a period with no detection still closes windows).
    ``period`` on a row is the period that dates it (and its geometry, score and hectares): the
    onset year for a confirmed row, the first open sighting passing the provisional thresholds for a
    provisional one. Alerts take their detection-date window from it.
    """
    t = sightings.table
    open_, closed = open_periods(periods, params.window)
    if len(t) == 0:
        return _empty_locations()
    uniq = {p: parse_period(p) for p in pd.unique(t["period"])}
    t = t.assign(_year=t["period"].map({k: v.year for k, v in uniq.items()}), _q=t["period"].map({k: v.quarter for k, v in uniq.items()}))
    t = t.sort_values(["location_id", "_year", "_q"], kind="stable").reset_index(drop=True)

    first = t.drop_duplicates("location_id", keep="first").set_index("location_id")["period"]
    last = t.drop_duplicates("location_id", keep="last").set_index("location_id")["period"]
    sup = superseded(list(periods))
    n_seen = t[~t["period"].isin(sup)].groupby("location_id", sort=False).size()

    # confirmed: annual sightings, candidate onsets in closed years
    a = t[t["_q"] == 0].reset_index(drop=True)
    ak = pd.factorize(a["location_id"])[0].astype(np.int64)
    ay = a["_year"].to_numpy(dtype=np.int64)
    comb = ak * 10_000 + ay
    hi = np.searchsorted(comb, comb + params.window - 1, side="right")
    count = hi - np.arange(len(a))
    cand = np.isin(ay, np.array(sorted(closed), dtype=np.int64)) & (count >= params.k)
    ci = np.flatnonzero(cand)
    r = pd.Series(ci).groupby(ak[ci]).min().to_numpy().astype(np.int64) if len(ci) else np.zeros(0, np.int64)
    conf = a.iloc[r]
    lid_c = conf["location_id"].to_numpy()
    confirmed = pd.DataFrame({
        "location_id": lid_c, "status": STATUS_CONFIRMED, "onset": conf["period"].to_numpy(),
        "confirmed_in": a["period"].to_numpy()[r + params.k - 1], "n_witness": count[r],
        "first_seen": first.reindex(lid_c).to_numpy(), "last_seen": last.reindex(lid_c).to_numpy(),
        "period": conf["period"].to_numpy(), "n_seen": n_seen.reindex(lid_c).fillna(0).to_numpy(dtype=int),
        "score": conf["score"].to_numpy(), "area_ha": conf["area_ha"].to_numpy(), "mined_ha": conf["mined_ha"].to_numpy(dtype=float),
        "geometry": conf["geometry"].to_numpy(),
    })  # fmt: skip

    # provisional: not confirmed, an open sighting passing the stricter thresholds
    o = t[t["period"].isin(open_) & ~t["location_id"].isin(set(lid_c))]
    pv = o[o["prov"]]
    lid_p = pd.unique(pv["location_id"])
    o = o[o["location_id"].isin(set(lid_p))]
    last_prov = pv.drop_duplicates("location_id", keep="first").set_index("location_id").reindex(lid_p)  # first provisional-grade sighting
    onset_p = o[o["_q"] == 0].groupby("location_id", sort=False)["period"].first().reindex(lid_p)
    provisional = pd.DataFrame({
        "location_id": lid_p, "status": STATUS_PROVISIONAL, "onset": onset_p.astype(object).where(onset_p.notna(), None).to_numpy(),
        "confirmed_in": None, "n_witness": o.groupby("location_id", sort=False).size().reindex(lid_p).to_numpy(dtype=int),
        "first_seen": first.reindex(lid_p).to_numpy(), "last_seen": last.reindex(lid_p).to_numpy(),
        "period": last_prov["period"].to_numpy(), "n_seen": n_seen.reindex(lid_p).fillna(0).to_numpy(dtype=int),
        "score": last_prov["score"].to_numpy(), "area_ha": last_prov["area_ha"].to_numpy(), "mined_ha": last_prov["mined_ha"].to_numpy(dtype=float),
        "geometry": last_prov["geometry"].to_numpy(),
    })  # fmt: skip
    rows = pd.concat([confirmed, provisional], ignore_index=True)
    if len(rows) == 0:
        return _empty_locations()
    return _finish(gpd.GeoDataFrame(rows, geometry="geometry", crs=4326))


def _empty_locations() -> gpd.GeoDataFrame:
    cols = {c: pd.Series(dtype=float if c in ("score", "area_ha", "mined_ha") else (int if c in ("n_witness", "n_seen") else object)) for c in LOCATION_COLUMNS}
    return gpd.GeoDataFrame(cols, geometry=gpd.GeoSeries([], crs=4326), crs=4326)


def _finish(out: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Column order and a deterministic row order (status, then location id)."""
    out["n_witness"] = out["n_witness"].astype(int)
    out["n_seen"] = out["n_seen"].astype(int)
    out = out.sort_values(["status", "location_id"], kind="stable").reset_index(drop=True)
    return out[[*LOCATION_COLUMNS, "geometry"]]


def merge_previous(new: gpd.GeoDataFrame, previous: gpd.GeoDataFrame | None) -> gpd.GeoDataFrame:
    """Carry the previous run's confirmed rows that the new run does not confirm; drop its provisional rows.

    A location confirmed in both keeps the earlier onset (and that row's ``confirmed_in``), with the
    newer ``last_seen``. A location confirmed before and only provisional now stays confirmed (the
    previous row). Provisional rows of the previous run are simply not carried: this run's provisional
    rows replace them.
    """
    if previous is None or len(previous) == 0:
        return new
    prev_c = previous[previous["status"] == STATUS_CONFIRMED]
    if len(prev_c) == 0:
        return new
    if "mined_ha" not in prev_c.columns:  # a state written before the mined-area estimate
        prev_c = prev_c.assign(mined_ha=np.nan)
    prev_c = prev_c.set_index("location_id")
    cur = new.set_index("location_id")
    both = prev_c.index.intersection(cur.index[cur["status"] == STATUS_CONFIRMED])
    pkey = {p: parse_period(p).key for p in pd.unique(pd.concat([prev_c["onset"], prev_c["last_seen"], cur["onset"].dropna(), cur["last_seen"]]))}
    rank = {p: i for i, p in enumerate(sorted(pkey, key=pkey.__getitem__))}
    po, co = prev_c.loc[both, "onset"].map(rank).to_numpy(), cur.loc[both, "onset"].map(rank).to_numpy()
    older = both[po < co]
    cur_conf = cur.index[cur["status"] == STATUS_CONFIRMED]
    carried = prev_c.loc[prev_c.index.difference(cur_conf).union(older)].copy()
    if len(older):
        pl, cl = prev_c.loc[older, "last_seen"], cur.loc[older, "last_seen"]
        carried.loc[older, "last_seen"] = np.where(pl.map(rank).to_numpy() >= cl.map(rank).to_numpy(), pl.to_numpy(), cl.to_numpy())
    keep_new = new[~new["location_id"].isin(set(carried.index))]
    if len(carried) == 0:
        return _finish(keep_new.copy())
    carried = gpd.GeoDataFrame(carried.reset_index(), geometry="geometry", crs=4326)
    return _finish(gpd.GeoDataFrame(pd.concat([keep_new, carried[keep_new.columns]], ignore_index=True), geometry="geometry", crs=4326))


# ------------------------------------------------------------------------------------------ products


def _has_mined(t: pd.DataFrame) -> bool:
    """Whether any sighting carries a mined-area estimate (else every mined sum is NaN)."""
    return "mined_ha" in t.columns and bool(np.isfinite(t["mined_ha"].to_numpy(dtype=float)).any())


def _mined_sum(x: pd.Series | np.ndarray, known: bool) -> float:
    """Sum of mined hectares, NaN-aware: NaN when no input has an estimate (``known`` False, or every
    value NaN), 0 for no pieces when the inputs do carry estimates; NaNs among numbers are skipped."""
    v = np.asarray(x, dtype=float)
    if not known:
        return float("nan")
    if len(v) == 0:
        return 0.0
    return float("nan") if np.isnan(v).all() else float(np.nansum(v))


def period_summary(sightings: Sightings, locations: gpd.GeoDataFrame, periods: Sequence[str], params: PersistParams) -> pd.DataFrame:
    """Per input period: detections by status — counts of locations and hectares of their pieces.

    A period's detection at a location is *confirmed* when the location is confirmed with onset at or
    before that period's year, *provisional* when the location is provisional and the period is open,
    else *unconfirmed* (a sighting that its closed window did not confirm, or a quarter superseded by
    its year). Areas are the pieces' equal-area hectares (EPSG:6933), so for polygon layers the three
    add up to the period's area.
    """
    t = sightings.table
    open_, _ = open_periods(periods, params.window)
    sup = superseded(periods)
    known = _has_mined(t)
    status = locations.set_index("location_id")["status"] if len(locations) else pd.Series(dtype=object)
    onset = locations.set_index("location_id")["onset"] if len(locations) else pd.Series(dtype=object)
    rows = []
    for p in sorted({parse_period(x) for x in periods}, key=lambda x: x.key):
        s = t[t["period"] == p.label]
        st = s["location_id"].map(status)
        on = s["location_id"].map(onset)
        on_year = pd.to_numeric(on, errors="coerce")
        is_conf = (st == STATUS_CONFIRMED) & (on_year <= p.year)
        is_prov = (st == STATUS_PROVISIONAL) & (p.label in open_) & s["prov"].to_numpy()
        rows.append({
            "period": p.label, "kind": "year" if p.is_annual else "quarter",
            "window": "superseded" if p.label in sup else ("open" if p.label in open_ else "closed"),
            "locations": int(len(s)), "area_ha": float(s["area_ha"].sum()),
            "confirmed": int(is_conf.sum()), "confirmed_ha": float(s["area_ha"][is_conf].sum()),
            "provisional": int(is_prov.sum()), "provisional_ha": float(s["area_ha"][is_prov].sum()),
            "unconfirmed": int((~is_conf & ~is_prov).sum()), "unconfirmed_ha": float(s["area_ha"][~is_conf & ~is_prov].sum()),
            "mined_ha": _mined_sum(s["mined_ha"], known), "confirmed_mined_ha": _mined_sum(s["mined_ha"][is_conf], known),
            "provisional_mined_ha": _mined_sum(s["mined_ha"][is_prov], known),
        })  # fmt: skip
    return pd.DataFrame(rows)


def persistence_polygons(locations: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Dissolve touching locations of the same status and dates into polygons, each with a stable id.

    Groups: confirmed by (onset, confirmed_in); provisional by (onset, ``period``: its latest open
    sighting). ``polygon_id`` is a hash of the status, dates and the sorted location ids, so the same
    locations give the same id on any machine and rerun. ``area_ha`` sums the locations' hectares
    (for polygon layers: their shares of the input polygons' equal-area hectares);
    ``mined_ha`` sums their mined-area estimates the same way (NaN only when none of them has one);
    ``outline_ha`` is the dissolved outline's own equal-area hectares.
    """
    cols = ["polygon_id", "status", "onset", "confirmed_in", "period", "first_seen", "last_seen", "n_witness",
            "n_locations", "score_max", "area_ha", "mined_ha", "outline_ha"]  # fmt: skip
    if len(locations) == 0:
        return gpd.GeoDataFrame({c: pd.Series(dtype=object) for c in cols}, geometry=gpd.GeoSeries([], crs=4326), crs=4326)
    loc = locations.sort_values("location_id", kind="stable").reset_index(drop=True)
    if "mined_ha" not in loc.columns:
        loc["mined_ha"] = np.nan

    def col(c: str) -> pd.Series:
        return loc[c].astype(object).where(loc[c].notna(), "").astype(str)

    loc["_key"] = col("status") + "|" + col("onset") + "|" + col("confirmed_in") + "|" + col("period")
    pkey = {p: parse_period(p).key for p in pd.unique(pd.concat([loc["first_seen"], loc["last_seen"]]))}
    loc["_f"] = loc["first_seen"].map(pkey)
    loc["_l"] = loc["last_seen"].map(pkey)
    # order-free digest of a polygon's locations: the wrapping sum of 64-bit hashes of their ids
    loc["_h"] = np.array([int.from_bytes(hashlib.sha256(x.encode()).digest()[:8], "little") for x in loc["location_id"]], dtype=np.uint64)
    from minewatch.scheduling import map_threads

    def group(key: str) -> pd.DataFrame:
        g = loc[loc["_key"] == key]
        zone = g["location_id"].str.split(":", n=1).str[0].astype(int).to_numpy()
        merged, labels = dissolve_patch_geometries(g.geometry.to_numpy(), 32600 + zone)  # lattice squares: exact fast path
        order = np.argsort(labels, kind="stable")
        lab_sorted = labels[order]
        uniq, start = np.unique(lab_sorted, return_index=True)
        with np.errstate(over="ignore"):
            digest = np.add.reduceat(g["_h"].to_numpy()[order], start) if len(start) else np.zeros(0, np.uint64)
        gg = g.assign(_lab=labels).groupby("_lab", sort=True)
        status, onset, cin, period = key.split("|")
        fs, ls = gg["_f"].idxmin(), gg["_l"].idxmax()
        return pd.DataFrame({
            "polygon_id": [hashlib.sha256(f"{key}|{int(d)}".encode()).hexdigest()[:16] for d in digest],
            "status": status, "onset": onset or None, "confirmed_in": cin or None, "period": period,
            "first_seen": loc.loc[fs.to_numpy(), "first_seen"].to_numpy(), "last_seen": loc.loc[ls.to_numpy(), "last_seen"].to_numpy(),
            "n_witness": gg["n_witness"].max().to_numpy(dtype=int), "n_locations": gg.size().to_numpy(dtype=int),
            "score_max": gg["score"].max().to_numpy(dtype=float), "area_ha": gg["area_ha"].sum().to_numpy(dtype=float),
            "mined_ha": gg["mined_ha"].sum(min_count=1).to_numpy(dtype=float), "geometry": shapely.make_valid(merged[uniq]),
        })  # fmt: skip

    # one status/date group per thread: the dissolve (GEOS) releases the GIL
    parts = map_threads(group, sorted(pd.unique(loc["_key"])))
    out = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs=4326)
    out.insert(len(cols) - 1, "outline_ha", area_ha(out.geometry))
    return out.sort_values(["status", "period", "polygon_id"], kind="stable").reset_index(drop=True)


def annual_periods(periods: Sequence[str]) -> list[Period]:
    return sorted({parse_period(p) for p in periods if parse_period(p).is_annual}, key=lambda p: p.key)


# ------------------------------------------------------------------------------------------ I/O edge


@dataclass(frozen=True)
class Thresholds:
    """Detection thresholds on the model's calibrated scale: the usual pair and the provisional pair."""

    t_main: float
    t_iso: float | None
    t_prov: float
    t_prov_iso: float | None
    source: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def card_thresholds_for(model: str | None, t_main: float | None = None, t_iso: float | None = None,
                        t_prov_ref: float = REF_PROVISIONAL[0], t_prov_iso_ref: float = REF_PROVISIONAL[1]) -> Thresholds:
    """The usual and provisional thresholds for a model card (shipped name or package folder).

    The usual pair is the card's (threshold, spec99 threshold), as ``minewatch run`` post-processes;
    the provisional pair is the reference's (0.55, 0.80 by default) mapped onto the card's scale by
    :func:`map_reference_threshold`. Explicit ``t_main``/``t_iso`` override the card's.
    """
    import json

    from minewatch.models.package import resolve_package_path

    path = resolve_package_path(model or "default") / "card.json"
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
        c_main = float(card["threshold"])
        s99 = card.get("metrics", {}).get("val_threshold_spec99")
        c_iso = max(c_main, float(s99)) if s99 is not None else c_main
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MinewatchError(path, f"cannot read the card's thresholds ({type(e).__name__}: {str(e)[:100]})") from None
    tm = c_main if t_main is None else t_main
    ti = c_iso if t_iso is None else t_iso
    return Thresholds(
        t_main=tm, t_iso=ti if ti > tm else None,
        t_prov=max(tm, map_reference_threshold(t_prov_ref, c_main, c_iso)),
        t_prov_iso=max(ti, map_reference_threshold(t_prov_iso_ref, c_main, c_iso)),
        source=str(path.parent),
    )  # fmt: skip


LAYER_SUFFIXES = (".parquet", ".geoparquet", ".geojson", ".json", ".gpkg")


def expand_inputs(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files from LAYERS_OR_FOLDER: files as given; a folder gives its ``*/patches.parquet`` (a
    monitoring folder: one detect run per period) or else its layer files (non-recursive), sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise MinewatchError(p, "file or folder not found")
        if p.is_dir():
            found = sorted(p.glob("*/detect/patches.parquet")) or sorted(p.glob("*/patches.parquet"))
            if not found:
                found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in LAYER_SUFFIXES and not f.name.startswith("."))
                found = [f for f in found if f.name not in ("manifest.json", "summary.json") and not f.name.endswith((".meta.json", ".manifest.json"))]
                # one layer per name: minewatch writes each layer twice (mining.parquet and mining.geojson),
                # and reading both would count every polygon twice
                rank = {s: i for i, s in enumerate(LAYER_SUFFIXES)}
                by_stem: dict[str, Path] = {}
                for f in sorted(found, key=lambda f: rank[f.suffix.lower()]):
                    by_stem.setdefault(f.stem, f)
                found = sorted(by_stem.values())
            if not found:
                raise MinewatchError(p, "no patches.parquet per period and no layer files (.parquet, .geojson, .gpkg) in this folder")
            out.extend(found)
        else:
            out.append(p)
    if not out:
        raise MinewatchError("LAYERS_OR_FOLDER", "give at least one layer file or folder")
    # the same file named twice (or reached through a folder and by name) is read once
    seen: set[Path] = set()
    unique = []
    for f in out:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _is_patch_file(path: Path) -> bool:
    if path.suffix.lower() not in (".parquet", ".geoparquet"):
        return False
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(path).names)
    except Exception:  # noqa: BLE001 - unreadable: let the layer reader give the one-line error
        return False
    return {"score", "tile", "row", "col"} <= names


def _sightings_of(path: Path, thresholds: Thresholds | None) -> tuple[pd.DataFrame, set[str], str]:
    """One input's sightings (see :func:`read_sightings`), the periods it holds and its kind."""
    from minewatch.detect.mask import QUARTER_COLUMNS
    from minewatch.postprocess.io import MINED_FIELDS, read_layer, read_patches
    from minewatch.postprocess.threshold import ThresholdParams, classify

    if _is_patch_file(path):
        assert thresholds is not None
        pt = read_patches(path)
        keep, _ = classify(pt, ThresholdParams(thresholds.t_main, thresholds.t_iso))
        prov, _ = classify(pt, ThresholdParams(thresholds.t_prov, thresholds.t_prov_iso))
        kept = pt[keep]
        if all(c in kept.columns for c in QUARTER_COLUMNS):  # the location's mined fraction: mean of its four cells' scar fractions
            frac = np.clip(kept[list(QUARTER_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float).mean(axis=1), 0.0, 1.0)
        else:
            frac = np.full(len(kept), np.nan)
        df = pd.DataFrame({
            "location_id": patch_locations(kept), "period": kept["period"].to_numpy(), "prov": prov[keep],
            "score": kept["score"].to_numpy(dtype=float), "area_ha": PATCH_CELL_HA, "mined_ha": PATCH_CELL_HA * frac,
            "centre": True, "geometry": kept.geometry.to_numpy(),
        })  # fmt: skip
        return df, set(pt["period"].unique().tolist()), "patches"
    try:  # the layer's mined-area field (published ``Mined area (ha)``, else minewatch's ``mined_ha``)
        layer = read_layer(path, area_field="auto")
    except MinewatchError:  # e.g. a mined field with gaps: no estimate for this layer
        layer = read_layer(path, area_field=None)
    idx, lids, cells, centre = polygon_locations(layer.geometry.to_numpy())
    n_cells = np.bincount(idx, minlength=len(layer)).clip(min=1)
    share = layer["footprint_ha"].to_numpy(dtype=float) / n_cells
    stated = layer["stated_ha"].to_numpy(dtype=float) if layer.attrs.get("area_field") in MINED_FIELDS else np.full(len(layer), np.nan)
    mined_share = stated / n_cells  # NaN when the layer has no mined field (never the footprint)
    score = layer["score_max"].to_numpy(dtype=float) if "score_max" in layer.columns else np.full(len(layer), np.nan)
    sc = score[idx]
    prov = np.ones(len(idx), dtype=bool) if thresholds is None or np.isnan(score).all() else (sc >= thresholds.t_prov)
    df = pd.DataFrame({"location_id": lids, "period": layer["period"].to_numpy()[idx], "prov": prov,
                       "score": sc, "area_ha": share[idx], "mined_ha": mined_share[idx], "centre": centre,
                       "geometry": cells})  # fmt: skip
    return df, set(layer["period"].unique().tolist()), "polygons" + ("" if "score_max" in layer.columns else " (no score)")


def read_sightings(paths: Sequence[Path], thresholds: Thresholds | None) -> tuple[Sightings, list[str], dict[str, object]]:
    """Sightings from patch files and/or polygon layers, the periods given, and what was read.

    Patch files are thresholded here (usual pair → a detection; provisional pair → ``prov``), with
    ``thresholds`` (required for patch files). Polygon layers are detections as they stand; ``prov``
    is ``score_max ≥ t_prov`` when they carry a score, else True (the published layers have no score).
    ``mined_ha``: for patches :data:`PATCH_CELL_HA` × the mean of the four cells' scar fractions
    (``mined_tl`` … ``mined_br``); for polygon layers the layer's mined field (``Mined area (ha)``,
    else ``mined_ha``) shared over the polygon's cells like ``footprint_ha``; NaN without them.
    """
    from minewatch.scheduling import map_threads

    if any(_is_patch_file(p) for p in paths) and thresholds is None:
        raise MinewatchError(next(p for p in paths if _is_patch_file(p)), "patch scores need thresholds (a model card)")
    # one file per thread: pyogrio, GEOS and PROJ release the GIL, and the files are independent
    read = map_threads(lambda p: _sightings_of(p, thresholds), paths)
    parts = [r[0] for r in read]
    periods = set().union(*(r[1] for r in read)) if read else set()
    kinds = {p.name: r[2] for p, r in zip(paths, read)}
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["location_id", "period", "prov", "score", "geometry"])
    return Sightings.from_frame(df), sorted(periods, key=lambda p: parse_period(p).key), {"inputs": kinds}


def write_geojson_fast(gdf: gpd.GeoDataFrame, target: Path, meta: dict[str, object], precision: int = 7) -> Path:
    """RFC 7946 GeoJSON (WGS84) with ``meta`` as the ``minewatch`` member, byte-stable for equal input.

    Geometries through GEOS's vectorised GeoJSON writer and properties through pandas' JSON writer
    (both C), where GeoPandas' ``to_json`` walks Python objects feature by feature (~30× slower on
    100k features). Coordinates are rounded to ``precision`` decimals (1e-7° ≈ 1 cm).
    """
    import json

    from minewatch.atomic import atomic_path
    from minewatch.postprocess.io import _json_default

    gdf = gdf.to_crs(4326) if gdf.crs is not None and not gdf.crs.equals("EPSG:4326") else gdf
    geoms = shapely.transform(gdf.geometry.to_numpy(), lambda c: np.round(c, precision)) if len(gdf) else np.zeros(0, dtype=object)
    gj = shapely.to_geojson(geoms) if len(gdf) else np.zeros(0, dtype=object)
    props = pd.DataFrame(gdf.drop(columns=gdf.geometry.name)).to_json(orient="records", lines=True, double_precision=10) if len(gdf) else ""
    lines = props.splitlines() if props else []
    head = json.dumps({"type": "FeatureCollection", "minewatch": meta}, default=_json_default, separators=(",", ":"))[:-1]
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(head + ',"features":[')
        for i, (pr, g) in enumerate(zip(lines, gj)):
            f.write(("," if i else "") + '{"type":"Feature","properties":' + pr + ',"geometry":' + (g or "null") + "}")
        f.write("]}")
    return target


def repeat_share(sightings: Sightings) -> float:
    """Share of locations detected in more than one annual period (~0 for layers of disjoint increments).

    Counted over cells whose centre a polygon contains (a small polygon's representative-point cell
    may reach into a neighbouring increment, which is not a re-detection)."""
    t = sightings.table
    t = t[t["centre"]] if "centre" in t.columns else t
    annual_labels = {p for p in pd.unique(t["period"]) if parse_period(p).is_annual}
    annual = t[t["period"].isin(annual_labels)]
    if len(annual) == 0:
        return 0.0
    n = annual.groupby("location_id").size()
    return float((n > 1).mean())


def _first_sightings(sightings: Sightings, periods: Sequence[str]) -> tuple[pd.DataFrame, list[Period]]:
    """Each location's first sighting (``_r``: its period's rank), ``area_ha`` summed over all its sightings."""
    t = sightings.table
    order = sorted({parse_period(p) for p in periods}, key=lambda p: p.key)
    rank = {p.label: i for i, p in enumerate(order)}
    total = t.groupby("location_id")["area_ha"].sum()
    mined = t.groupby("location_id")["mined_ha"].sum(min_count=1)
    first = t.assign(_r=t["period"].map(rank)).sort_values(["location_id", "_r"], kind="stable").drop_duplicates("location_id")
    first = first.assign(area_ha=first["location_id"].map(total).to_numpy(), mined_ha=first["location_id"].map(mined).to_numpy(dtype=float))
    return first.reset_index(drop=True), order


def persistence_increments(sightings: Sightings, periods: Sequence[str], params: PersistParams = PersistParams()) -> gpd.GeoDataFrame:
    """:func:`persistence` for *increment* layers, where each period holds only what is new in it.

    The published layers are such increments (consecutive years overlap by ~0 ha): their union up
    to a period is the period's state (mining scars persist — the reference's cumulative layer).
    A location first seen in period ``f`` is therefore seen in every given period from ``f`` on, and
    the rule reduces to: the onset is the first *closed* year at or after ``f``'s year (a quarter
    superseded by its year counts as that year), ``confirmed_in`` the k-th given year from it;
    locations whose years are all still open are provisional (if their first sighting passes the
    provisional thresholds), with the onset of their first annual sighting (none for a quarter).
    Rows carry the geometry and hectares of the first sighting. Equals :func:`persistence` on the
    cumulated sightings, without materialising them.
    """
    if len(sightings.table) == 0:
        return _empty_locations()
    first, order = _first_sightings(sightings, periods)
    open_, closed = open_periods(periods, params.window)
    years = sorted({p.year for p in order if p.is_annual})
    last_label = order[-1].label
    by_label = {p.label: p for p in order}
    fyear = first["period"].map({k: v.year for k, v in by_label.items()}).to_numpy(dtype=np.int64)
    ystate = {k: (v.is_annual or v.year in set(years)) for k, v in by_label.items()}  # superseded quarter → its year
    f_is_year_state = first["period"].map(ystate).to_numpy(dtype=bool)
    closed_sorted = np.array(sorted(closed), dtype=np.int64)
    years_arr = np.array(years, dtype=np.int64)
    # earliest closed year ≥ the first year (only when the first sighting reaches an annual state)
    pos = np.searchsorted(closed_sorted, fyear, side="left")
    has_closed = f_is_year_state & (pos < len(closed_sorted))
    onset = np.where(has_closed, closed_sorted[np.minimum(pos, max(len(closed_sorted) - 1, 0))] if len(closed_sorted) else 0, 0)
    kpos = np.searchsorted(years_arr, onset, side="left") + params.k - 1
    cin = years_arr[np.minimum(kpos, len(years_arr) - 1)] if len(years_arr) else np.zeros(len(first), np.int64)
    n_w = np.searchsorted(years_arr, onset + params.window - 1, side="right") - np.searchsorted(years_arr, onset, side="left")
    rank_open = [p for p in order if p.label in open_]
    sup = superseded(periods)
    # periods seen from each first period on (not superseded), by the first period's rank
    seen_from = {p.label: sum(1 for q in order if q.key >= p.key and q.label not in sup) for p in order}
    open_from = {p.label: sum(1 for q in rank_open if q.key >= p.key) for p in order}
    onset_open = {p.label: (p.label if p.is_annual else None) for p in order}
    conf = first[has_closed]
    confirmed = pd.DataFrame({
        "location_id": conf["location_id"].to_numpy(), "status": STATUS_CONFIRMED, "onset": onset[has_closed].astype(str),
        "confirmed_in": cin[has_closed].astype(str), "n_witness": n_w[has_closed], "first_seen": conf["period"].to_numpy(),
        "last_seen": last_label, "period": onset[has_closed].astype(str),
        "n_seen": conf["period"].map(seen_from).to_numpy(dtype=int),
        "score": conf["score"].to_numpy(), "area_ha": conf["area_ha"].to_numpy(), "mined_ha": conf["mined_ha"].to_numpy(dtype=float),
        "geometry": conf["geometry"].to_numpy(),
    })  # fmt: skip
    pmask = ~has_closed & first["prov"].to_numpy()
    prov = first[pmask]
    provisional = pd.DataFrame({
        "location_id": prov["location_id"].to_numpy(), "status": STATUS_PROVISIONAL,
        "onset": prov["period"].map(onset_open).to_numpy(dtype=object), "confirmed_in": None,
        "n_witness": prov["period"].map(open_from).to_numpy(dtype=int), "first_seen": prov["period"].to_numpy(),
        "last_seen": last_label, "period": prov["period"].to_numpy(),
        "n_seen": prov["period"].map(seen_from).to_numpy(dtype=int),
        "score": prov["score"].to_numpy(), "area_ha": prov["area_ha"].to_numpy(), "mined_ha": prov["mined_ha"].to_numpy(dtype=float),
        "geometry": prov["geometry"].to_numpy(),
    })  # fmt: skip
    rows = pd.concat([confirmed, provisional], ignore_index=True)
    if len(rows) == 0:
        return _empty_locations()
    return _finish(gpd.GeoDataFrame(rows, geometry="geometry", crs=4326))


def period_summary_increments(sightings: Sightings, locations: gpd.GeoDataFrame, periods: Sequence[str], params: PersistParams) -> pd.DataFrame:
    """:func:`period_summary` of the cumulated states of increment layers, plus ``new_*`` columns: the
    period's own increment by status. Every sighting keeps its own hectares (a location reached by
    increments of several periods counts each of them once, in its period), so ``new_area_ha`` is the
    layer's own area and the state's ``area_ha`` the union's."""
    t = sightings.table
    order = sorted({parse_period(p) for p in periods}, key=lambda p: p.key)
    rank = {p.label: i for i, p in enumerate(order)}
    open_, _ = open_periods(periods, params.window)
    sup = superseded(periods)
    lt = locations.set_index("location_id") if len(locations) else None
    st = t["location_id"].map(lt["status"]).to_numpy(dtype=object) if lt is not None else np.full(len(t), None, dtype=object)
    on = pd.to_numeric(t["location_id"].map(lt["onset"]), errors="coerce").to_numpy() if lt is not None else np.full(len(t), np.nan)
    area = t["area_ha"].to_numpy(dtype=float)
    mined = t["mined_ha"].to_numpy(dtype=float)
    known = _has_mined(t)
    srank = t["period"].map(rank).to_numpy()
    codes, uniq_ids = pd.factorize(t["location_id"])
    seen = np.zeros(len(uniq_ids), dtype=bool)

    def n_loc(mask: np.ndarray) -> int:  # distinct locations among the masked sightings (int codes: no string sort)
        seen[:] = False
        seen[codes[mask]] = True
        return int(seen.sum())

    rows = []
    for i, p in enumerate(order):
        conf = (st == STATUS_CONFIRMED) & (on <= p.year)
        prov = (st == STATUS_PROVISIONAL) & (p.label in open_)
        row: dict[str, object] = {"period": p.label, "kind": "year" if p.is_annual else "quarter",
                                  "window": "superseded" if p.label in sup else ("open" if p.label in open_ else "closed")}  # fmt: skip
        for prefix, m in (("", srank <= i), ("new_", srank == i)):
            un = m & ~conf & ~prov
            row.update({
                f"{prefix}locations": n_loc(m), f"{prefix}area_ha": float(area[m].sum()),
                f"{prefix}confirmed": n_loc(m & conf), f"{prefix}confirmed_ha": float(area[m & conf].sum()),
                f"{prefix}provisional": n_loc(m & prov), f"{prefix}provisional_ha": float(area[m & prov].sum()),
                f"{prefix}unconfirmed": n_loc(un), f"{prefix}unconfirmed_ha": float(area[un].sum()),
                f"{prefix}mined_ha": _mined_sum(mined[m], known), f"{prefix}confirmed_mined_ha": _mined_sum(mined[m & conf], known),
                f"{prefix}provisional_mined_ha": _mined_sum(mined[m & prov], known),
            })  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class PersistResult:
    locations: gpd.GeoDataFrame
    polygons: gpd.GeoDataFrame
    summary: pd.DataFrame
    info: dict[str, object]


def run_persist(paths: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], params: PersistParams = PersistParams(),
                thresholds: Thresholds | None = None, layers_are: str = "auto", overwrite: bool = False,
                state_dir: str | os.PathLike[str] | None = None) -> PersistResult:
    """Read, compute, then write the persistence products into ``out_dir`` (each file atomically).

    Outputs: ``persistence.{parquet,geojson}`` (the persistence layer: confirmed and provisional
    locations dissolved by status and dates, :func:`persistence_polygons`), ``locations.parquet``
    (one row per confirmed/provisional location), ``summary.csv`` (per period) and ``summary.json``.
    A previous ``locations.parquet`` in ``state_dir`` (default ``out_dir``; the CLI writes into a
    staging folder and reads the state from the final one) is the state carried forward
    (:func:`merge_previous`), unless ``overwrite``.
    """
    import json
    import time

    from minewatch.atomic import write_json_atomic
    from minewatch.postprocess.io import make_metadata, read_metadata, write_csv, write_geoparquet

    t0 = time.perf_counter()
    out = Path(out_dir)
    files = expand_inputs(paths)
    if out.exists() and not out.is_dir():
        raise MinewatchError(out, "--out is a file, not a folder")
    resolved_out = Path(state_dir if state_dir is not None else out).resolve()
    for f in files:
        if f.resolve().parent == resolved_out and f.name.startswith(("persistence.", "locations.")):
            raise MinewatchError(f, "this input is an output of persist in --out; give the layers, or another --out")
    has_patches = any(_is_patch_file(f) for f in files)
    if has_patches and thresholds is None:
        thresholds = card_thresholds_for("default")
    sightings, periods, info = read_sightings(files, thresholds)
    t1 = time.perf_counter()
    share = repeat_share(sightings)
    if layers_are not in ("auto", "increments", "detections"):
        raise MinewatchError("--layers-are", f"expected auto, increments or detections, got {layers_are!r}")
    mode = layers_are
    if mode == "auto":
        mode = "increments" if (not has_patches and len({parse_period(p).year for p in periods}) > 1 and share < 0.05) else "detections"
    locations = persistence_increments(sightings, periods, params) if mode == "increments" else persistence(sightings, periods, params)
    previous = None
    prev_path = Path(state_dir if state_dir is not None else out) / "locations.parquet"
    if prev_path.exists() and not overwrite:
        try:
            prev_meta = read_metadata(prev_path)
            previous = gpd.read_parquet(prev_path)
        except Exception as e:  # noqa: BLE001 - one line naming the file
            raise MinewatchError(prev_path, f"cannot read the previous persistence state ({str(e).splitlines()[0][:120]}); use --overwrite to start over") from None
        old = prev_meta.get("parameters", {}).get("rule")
        if old is not None and old != params.as_dict():
            raise MinewatchError(prev_path, f"previous run used {old}, this one {params.as_dict()}; use another --out or --overwrite")
    n_carried_before = len(locations)
    locations = merge_previous(locations, previous)
    polygons = persistence_polygons(locations)
    if mode == "increments":
        summary = period_summary_increments(sightings, locations, periods, params)
    else:
        summary = period_summary(sightings, locations, periods, params)
    t2 = time.perf_counter()
    meta = make_metadata("persist", {"rule": params.as_dict(), "thresholds": thresholds.as_dict() if thresholds else None,
                                     "layers_are": mode, "repeat_share": round(share, 4)}, files)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_geoparquet(locations, out / "locations.parquet", meta)
    write_geoparquet(polygons, out / "persistence.parquet", meta)
    write_geojson_fast(polygons, out / "persistence.geojson", meta)
    write_csv(summary, out / "summary.csv", meta)
    counts = locations["status"].value_counts().to_dict() if len(locations) else {}
    doc = {
        **meta, "periods": list(periods), "layers_are": mode, "repeat_share": share,
        "locations": {"confirmed": int(counts.get(STATUS_CONFIRMED, 0)), "provisional": int(counts.get(STATUS_PROVISIONAL, 0))},
        "carried_from_previous": int(len(locations) - n_carried_before) if previous is not None else 0,
        "polygons": int(len(polygons)), "per_period": json.loads(summary.to_json(orient="records")),
        "seconds": {"read": round(t1 - t0, 2), "compute": round(t2 - t1, 2), "write": round(time.perf_counter() - t2, 2)},
        "inputs_read": info["inputs"],
    }  # fmt: skip
    write_json_atomic(out / "summary.json", doc)
    return PersistResult(locations, polygons, summary, doc)
