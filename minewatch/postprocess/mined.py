"""Mined hectares of mining polygons from the per-cell scar fractions that ``detect`` writes.

A detect row is a 48 px patch made of four 24 px lattice cells and carries each cell's scar
fraction (:data:`minewatch.detect.mask.QUARTER_COLUMNS`). Patches overlap by half, and a patch at a
tile's right or bottom edge carries cells the next tile also owns, so the same cell arrives up to
four times. Each cell is keyed by its position on the global UTM lattice of its zone (EPSG code,
column, row of the 240 m cell, from the footprint's projected corners) and counted once:

    mined_ha(polygon) = Σ over its distinct cells of  scar fraction × cell area (EPSG:6933)

Every cell of a patch lies inside the polygon that patch was dissolved into, so no cell reaches two
polygons of one period. ``mined_ha`` ≤ ``footprint_ha`` always (the footprint is the union of those
same cells). Patches without the columns (older detect runs, other tools) get NaN, never the footprint.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

from minewatch.detect.mask import QUARTER_COLUMNS
from minewatch.grid import FALSE_NORTHING_SOUTH
from minewatch.postprocess.geom import EQUAL_AREA_CRS, M2_PER_HA, transformer, utm_epsg_for

_OFF = 1 << 20  # cell indices shifted positive; 2^21 cells × 240 m covers any UTM easting/northing
_BITS = 21


def has_mined(patches: pd.DataFrame) -> bool:
    """True when every quarter column is present and not all NaN."""
    return all(c in patches.columns for c in QUARTER_COLUMNS) and not patches[list(QUARTER_COLUMNS)].isna().all().all()


def cell_keys(geoms_wgs84: np.ndarray, epsg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global keys (N×4 int64, quarter order tl, tr, bl, br) of the cells of patch footprints.

    Also returns each patch's cell edge (metres) and a mask of the patches that are axis-aligned
    squares in their zone (only those have well-defined cells; the others get key -1).
    """
    n = len(geoms_wgs84)
    keys = np.full((n, 4), -1, dtype=np.int64)
    edge = np.zeros(n)
    ok = np.zeros(n, dtype=bool)
    for code in np.unique(epsg):
        sel = np.flatnonzero(epsg == code)
        fwd = transformer("EPSG:4326", int(code))
        local = shapely.transform(geoms_wgs84[sel], lambda c, fwd=fwd: np.column_stack(fwd.transform(c[:, 0], c[:, 1])))
        b = shapely.bounds(local)
        if 32701 <= int(code) <= 32760:  # the grid's rows count from the equator, not the false northing
            b[:, [1, 3]] -= FALSE_NORTHING_SOUTH
        b = np.round(b, 2)
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        square = (np.abs(w - h) < 0.05) & (np.abs(shapely.area(local) - w * h) <= 1e-6 * w * h) & (w > 0)
        cell = w / 2.0
        with np.errstate(divide="ignore", invalid="ignore"):
            cx = np.round(b[:, 0] / cell)
            cy = np.round(b[:, 3] / cell)  # index of the cell row whose top edge is the patch top
            on = square & (np.abs(cx * cell - b[:, 0]) < 0.05) & (np.abs(cy * cell - b[:, 3]) < 0.05)
        cx, cy = np.where(on, cx, 0).astype(np.int64), np.where(on, cy, 0).astype(np.int64)
        base = np.int64(code) << np.int64(2 * _BITS)
        for k, (dx, dy) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):  # tl, tr, bl, br (rows count down)
            keys[sel, k] = np.where(on, base | ((cx + dx + _OFF) << _BITS) | (cy - dy + _OFF), -1)
        edge[sel] = cell
        ok[sel] = on
    return keys, edge, ok


def cell_area_ha(keys: np.ndarray, edge_m: np.ndarray) -> np.ndarray:
    """Equal-area (EPSG:6933) hectares of cells given by their keys and edge length (metres)."""
    out = np.zeros(len(keys))
    codes = keys >> np.int64(2 * _BITS)
    mask = (np.int64(1) << _BITS) - 1
    cx = ((keys >> _BITS) & mask) - _OFF
    cy = (keys & mask) - _OFF
    for code in np.unique(codes):
        sel = np.flatnonzero(codes == code)
        e = edge_m[sel]
        x0, y1 = cx[sel] * e, cy[sel] * e + (FALSE_NORTHING_SOUTH if 32701 <= int(code) <= 32760 else 0.0)
        boxes = shapely.box(x0, y1 - e, x0 + e, y1)
        tr = transformer(int(code), EQUAL_AREA_CRS)
        ea = shapely.transform(shapely.segmentize(boxes, e), lambda c, tr=tr: np.column_stack(tr.transform(c[:, 0], c[:, 1])))
        out[sel] = shapely.area(ea) / M2_PER_HA
    return out


def mined_by_label(patches: pd.DataFrame, geoms_wgs84: np.ndarray, labels: np.ndarray, n_labels: int) -> np.ndarray:
    """Mined hectares per component label (length ``n_labels``), each lattice cell counted once.

    NaN for every label when the patches carry no scar fractions, and for a label any of whose
    patches is not a lattice square or has a NaN fraction (no estimate rather than a wrong one).
    """
    if not has_mined(patches) or len(patches) == 0:
        return np.full(n_labels, np.nan)
    if "epsg" in patches.columns:
        epsg = patches["epsg"].to_numpy(dtype=int)
    else:
        c = shapely.centroid(geoms_wgs84)
        epsg = utm_epsg_for(shapely.get_x(c), shapely.get_y(c))
    keys, edge, ok = cell_keys(geoms_wgs84, epsg)
    frac = patches[list(QUARTER_COLUMNS)].to_numpy(dtype=float)
    bad = ~ok | np.isnan(frac).any(axis=1)
    flat_key = keys.ravel()
    flat_lab = np.repeat(labels, 4)
    flat_frac = frac.ravel()
    flat_edge = np.repeat(edge, 4)
    good = np.repeat(~bad, 4)
    uk, first = np.unique(flat_key[good], return_index=True)
    area = cell_area_ha(uk, flat_edge[good][first])
    mined = np.bincount(flat_lab[good][first], weights=np.clip(flat_frac[good][first], 0.0, 1.0) * area, minlength=n_labels)
    out = mined[:n_labels].astype(float)
    if bad.any():
        out[np.unique(labels[bad])] = np.nan
    return out


def mined_note() -> str:
    """One line saying what ``mined_ha`` is and how far to trust it (from the shipped calibration)."""
    from minewatch.detect.mask import calibration

    cal = calibration()
    f = cal.get("figures", {}).get("2024 test half (held out)")
    text = "estimated mined area: scar pixels (bare soil, tailings, turbid water) of each 24 px cell inside the polygon, each cell once"
    if f:
        lo, hi = cal["total_interval90"]
        text += (f"; calibrated on published 2024 Mined area (ha), held-out polygons: median |error| of the mined fraction "
                 f"{f['median_abs_error']:.3f}, bias {f['median_bias']:+.3f}; 90 % interval of a total: {lo:.2f}–{hi:.2f} × the estimate")
    return text


__all__ = ["mined_note", "cell_area_ha", "cell_keys", "has_mined", "mined_by_label"]
