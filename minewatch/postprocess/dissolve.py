"""Dissolve kept patches into mining polygons, and simplify them for the web without changing topology.

Patches on the 24 px lattice overlap their neighbours by half, and patches of adjacent tiles share
edges exactly (the global grid guarantees identical corner coordinates), so "same mine" is simply
"footprints intersect" (overlap, shared edge or shared corner). Grouping is done as a graph problem:
one STRtree query returns every intersecting pair at once (vectorised in GEOS), SciPy labels the
connected components, and each component is unioned once — no Python loop over pairs.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from minewatch.errors import MinewatchError
from minewatch.postprocess.mined import mined_by_label
from minewatch.postprocess.geom import M2_PER_HA, area_ha, polygonal, transformer, utm_epsg_for


def component_labels(geoms: np.ndarray, predicate: str = "intersects") -> np.ndarray:
    """Label of the connected component of each geometry (geometries linked when ``predicate`` holds).

    Cost: one STRtree build and one bulk query (O(n log n) plus the number of linked pairs).
    """
    n = len(geoms)
    if n == 0:
        return np.zeros(0, dtype=int)
    i, j = shapely.STRtree(geoms).query(geoms, predicate=predicate)
    return _components_from_pairs(n, i, j)


def union_by_label(geoms: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique labels, union of the geometries of each label). Singletons are passed through as is."""
    order = np.argsort(labels, kind="stable")
    uniq, start, counts = np.unique(labels[order], return_index=True, return_counts=True)
    out = np.empty(len(uniq), dtype=object)
    single = counts == 1
    out[single] = geoms[order[start[single]]]
    for g in np.flatnonzero(~single):  # one GEOS cascaded union per multi-patch component
        out[g] = shapely.union_all(geoms[order[start[g] : start[g] + counts[g]]])
    return uniq, out


def dissolve_geometries(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union touching/overlapping geometries: (merged geometries, component label of each input)."""
    labels = component_labels(geoms)
    _, merged = union_by_label(geoms, labels)
    return merged, labels


def _components_from_pairs(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _lattice_dissolve(geoms: np.ndarray, epsg: int, max_cells: int = 16) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact, fast dissolve of axis-aligned lattice squares of one UTM zone; ``None`` if they are not.

    "Lattice": all corners (to the centimetre) are multiples of one cell size from a common origin,
    with at most ``max_cells`` cells per patch (4 for 48 px patches on the 24 px step); anything else
    (rotated, holed, off-lattice footprints) returns ``None`` and takes the general path.

    In the zone's CRS each detect patch is an axis-aligned square whose corners sit on the lattice
    (multiples of the 240 m step). Then "footprints intersect" is exactly "envelopes intersect" (a
    bulk STRtree envelope query, no predicate evaluation), and the union of a component is the
    coverage union of the distinct lattice cells its patches cover: cells never overlap and share
    edges exactly, so GEOS's linear-time coverage union replaces the costly overlay of half-
    overlapping squares. Returns (merged geometries in WGS84, component label of each input).
    """
    fwd, back = transformer("EPSG:4326", int(epsg)), transformer(int(epsg), "EPSG:4326")
    n = len(geoms)
    if n == 0 or not np.all(shapely.get_type_id(geoms) == 3) or shapely.get_num_interior_rings(geoms).any():
        return None
    local = shapely.transform(geoms, lambda c: np.column_stack(fwd.transform(c[:, 0], c[:, 1])))
    b = shapely.bounds(local)
    cm = np.round(b * 100).astype(np.int64)  # centimetres: absorbs the ~1e-9 m round-trip noise
    # axis-aligned rectangles fill their envelope (a square rotated by θ fills 1/(1+2θ) of it);
    # extra collinear vertices (densified edges) are fine
    env = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    if not np.all(np.abs(shapely.area(local) - env) <= 1e-6 * env):
        return None
    w, h = cm[:, 2] - cm[:, 0], cm[:, 3] - cm[:, 1]
    origin = cm[:, :2].min(0)
    cell = int(np.gcd.reduce(np.concatenate([w, h, cm[:, 0] - origin[0], cm[:, 1] - origin[1]])))
    if cell <= 0 or int((w // cell * (h // cell)).max()) > max_cells:
        return None
    boxes = shapely.box(*(cm.T / 100.0))
    i, j = shapely.STRtree(boxes).query(boxes)  # envelope test: exact for axis-aligned boxes
    labels = _components_from_pairs(n, i, j)
    # distinct cells: keys encode (cx, cy); all patches covering a cell share one component
    cx0, cy0 = (cm[:, 0] - origin[0]) // cell, (cm[:, 1] - origin[1]) // cell
    nx, ny = w // cell, h // cell
    span = int(cy0.max() + ny.max() + 1)
    keys, owner = [], []
    for dx in range(int(nx.max())):
        for dy in range(int(ny.max())):
            m = (dx < nx) & (dy < ny)
            keys.append((cx0[m] + dx) * span + (cy0[m] + dy))
            owner.append(np.flatnonzero(m))
    key = np.concatenate(keys)
    uk, first = np.unique(key, return_index=True)
    cell_label = labels[np.concatenate(owner)[first]]
    ccx, ccy = uk // span, uk % span
    x0 = (origin[0] + ccx * cell) / 100.0
    y0 = (origin[1] + ccy * cell) / 100.0
    cells = shapely.box(x0, y0, x0 + cell / 100.0, y0 + cell / 100.0)
    order = np.argsort(cell_label, kind="stable")
    lab_sorted = cell_label[order]
    uniq, start, counts = np.unique(lab_sorted, return_index=True, return_counts=True)
    merged = np.empty(len(uniq), dtype=object)
    for g in range(len(uniq)):  # one linear-time coverage union per component
        part = cells[order[start[g] : start[g] + counts[g]]]
        merged[g] = part[0] if counts[g] == 1 else shapely.coverage_union_all(part)
    merged = shapely.transform(merged, lambda c: np.column_stack(back.transform(c[:, 0], c[:, 1])))
    # component labels are 0..k-1 in order, so merged[g] belongs to label uniq[g] == g
    return merged, labels


def dissolve_patch_geometries(geoms: np.ndarray, epsg: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dissolve patch footprints (WGS84): (merged geometries, label of each input into them).

    Patches of each UTM zone go through the exact lattice fast path when they are lattice squares
    (detect output), otherwise through the general STRtree + union path; polygons of different
    zones that meet (a mine across a zone seam) are then merged by a second, small general pass.
    """
    n = len(geoms)
    if n == 0:
        return np.zeros(0, dtype=object), np.zeros(0, dtype=int)
    if epsg is None:
        c = shapely.centroid(geoms)
        epsg = utm_epsg_for(shapely.get_x(c), shapely.get_y(c))
    epsg = np.asarray(epsg, dtype=int)
    stage_geoms: list[np.ndarray] = []
    labels = np.empty(n, dtype=int)
    offset = 0
    for code in np.unique(epsg):
        sel = np.flatnonzero(epsg == code)
        res = _lattice_dissolve(geoms[sel], int(code))
        merged, lab = res if res is not None else dissolve_geometries(geoms[sel])
        labels[sel] = lab + offset
        offset += len(merged)
        stage_geoms.append(merged)
    stage = np.concatenate(stage_geoms)
    if len(stage_geoms) == 1:
        return stage, labels
    merged, second = dissolve_geometries(stage)  # cross-zone seams: few polygons, general path
    return merged, second[labels]


def dissolve_patches(patches: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Mining polygons from kept patches, one dissolve per period.

    Returns WGS84 polygons with ``period``, ``footprint_ha`` (equal-area, of the dissolved outline —
    the overlap between neighbouring patches counted once), ``area_ha`` (the same footprint, kept for
    older readers), ``mined_ha`` (estimated mined area inside it: :mod:`minewatch.postprocess.mined`;
    NaN when the patches carry no scar fractions), ``n_patches``, ``score_max``, ``score_mean`` (over
    the component's patches), sorted by period then decreasing footprint.
    """
    cols = ["period", "footprint_ha", "area_ha", "mined_ha", "n_patches", "score_max", "score_mean"]
    if len(patches) == 0:
        return gpd.GeoDataFrame({c: pd.Series(dtype=object if c == "period" else float) for c in cols},
                                geometry=gpd.GeoSeries([], crs=4326), crs=4326)
    parts = []
    periods = patches["period"].astype(str).to_numpy()
    scores = patches["score"].to_numpy(dtype=float)
    geoms_all = patches.to_crs(4326).geometry.to_numpy()
    epsg_all = patches["epsg"].to_numpy(dtype=int) if "epsg" in patches.columns else None
    for p in pd.unique(periods):
        idx = np.flatnonzero(periods == p)
        merged, labels = dissolve_patch_geometries(geoms_all[idx], None if epsg_all is None else epsg_all[idx])
        s = pd.Series(scores[idx]).groupby(labels)
        mined = mined_by_label(patches.iloc[idx], geoms_all[idx], labels, len(merged))
        parts.append(
            pd.DataFrame(
                {
                    "period": p,
                    "mined_ha": mined,
                    "n_patches": s.size().reindex(range(len(merged)), fill_value=0).to_numpy(),
                    "score_max": s.max().reindex(range(len(merged))).to_numpy(),
                    "score_mean": s.mean().reindex(range(len(merged))).to_numpy(),
                    "geometry": merged,
                }
            )
        )
    df = pd.concat(parts, ignore_index=True)
    out = gpd.GeoDataFrame(df, geometry="geometry", crs=4326)
    fp = area_ha(out.geometry)
    out.insert(1, "footprint_ha", fp)
    out.insert(2, "area_ha", fp)
    out.insert(3, "mined_ha", np.minimum(out.pop("mined_ha").to_numpy(dtype=float), fp))  # float noise only
    out["n_patches"] = out["n_patches"].astype(int)
    return out.sort_values(["period", "footprint_ha"], ascending=[True, False], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------- simplification


def _project_by_zone(geoms: np.ndarray, forward: bool, epsg: np.ndarray) -> np.ndarray:
    out = np.empty(len(geoms), dtype=object)
    for code in np.unique(epsg):
        sel = np.flatnonzero(epsg == code)
        tr = transformer("EPSG:4326", int(code)) if forward else transformer(int(code), "EPSG:4326")
        out[sel] = shapely.transform(geoms[sel], lambda xy, tr=tr: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return out


def _candidate_pairs(*arrays: np.ndarray) -> np.ndarray:
    """Unique (i, j), i < j, pairs whose envelopes intersect in any of the geometry arrays (K×2)."""
    found = []
    for geoms in arrays:
        i, j = shapely.STRtree(geoms).query(geoms)
        m = i < j
        found.append(np.column_stack([i[m], j[m]]))
    pairs = np.concatenate(found) if found else np.zeros((0, 2), dtype=int)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def _disjoint(de9im: np.ndarray) -> np.ndarray:
    """Interiors and boundaries all apart (DE-9IM ``FF*FF****``)."""
    s = np.asarray(de9im, dtype="U9")
    c = s.view("U1").reshape(len(s), 9) if len(s) else np.zeros((0, 9), dtype="U1")
    return (c[:, 0] == "F") & (c[:, 1] == "F") & (c[:, 3] == "F") & (c[:, 4] == "F")


def changed_relations(orig: np.ndarray, simp: np.ndarray) -> np.ndarray:
    """Indices of geometries in a pair whose DE-9IM relation differs between ``orig`` and ``simp``.

    Vectorised: candidate pairs from two bulk STRtree queries, ``shapely.relate`` on all of them at once.
    """
    pairs = _candidate_pairs(orig, simp)
    if len(pairs) == 0:
        return np.zeros(0, dtype=int)
    i, j = pairs[:, 0], pairs[:, 1]
    r0, r1 = shapely.relate(orig[i], orig[j]), shapely.relate(simp[i], simp[j])
    same = (r0 == r1) | (_disjoint(r0) & _disjoint(r1))
    return np.unique(pairs[~same])


def simplify_layer(layer: gpd.GeoDataFrame, tolerance_m: float, max_rounds: int = 20) -> gpd.GeoDataFrame:
    """Simplify polygons for web display by ``tolerance_m`` metres, never changing topology.

    Each polygon is simplified in its own UTM zone (so the tolerance is in metres) with
    ``simplify(preserve_topology=True)`` (rings stay valid, holes are kept). Simplification can still
    make two *separate* polygons meet; every pair whose DE-9IM relation differs from the original's
    (a new overlap or touch, or a changed one) is put back to its original geometry, repeated until
    no pair changed. Guarantees, tested: same number of polygons, all valid and non-empty, every
    pairwise relation unchanged. Areas (``area_ha``) are left as computed on the exact geometry.
    """
    if tolerance_m < 0:
        raise MinewatchError("--simplify", f"tolerance must be ≥ 0 metres, got {tolerance_m}")
    if tolerance_m == 0 or len(layer) == 0:
        return layer.copy()
    orig = polygonal(layer.to_crs(4326).geometry.to_numpy())
    c = shapely.centroid(orig)
    epsg = utm_epsg_for(shapely.get_x(c), shapely.get_y(c))
    simp = _project_by_zone(shapely.simplify(_project_by_zone(orig, True, epsg), tolerance_m, preserve_topology=True), False, epsg)
    bad = ~shapely.is_valid(simp) | shapely.is_empty(simp) | (shapely.get_num_geometries(simp) != shapely.get_num_geometries(orig))
    simp[bad] = orig[bad]
    for _ in range(max_rounds):
        idx = changed_relations(orig, simp)
        idx = idx[~shapely.equals_identical(simp[idx], orig[idx])] if len(idx) else idx
        if len(idx) == 0:
            break
        simp[idx] = orig[idx]
    else:  # pragma: no cover - each round reverts at least one polygon, so this needs > max_rounds conflicts in a chain
        simp = orig.copy()
    out = layer.to_crs(4326).copy()
    out = out.set_geometry(gpd.GeoSeries(simp, index=out.index, crs=4326))
    return out


def simplification_report(before: gpd.GeoDataFrame, after: gpd.GeoDataFrame) -> dict[str, float]:
    """Vertices before/after and the largest area change (%), for the run's metadata."""
    gb, ga = before.geometry.to_numpy(), after.geometry.to_numpy()
    ab, aa = area_ha(gb), area_ha(ga)
    rel = np.divide(np.abs(aa - ab), ab, out=np.zeros_like(ab), where=ab > 0)
    return {
        "vertices_before": int(shapely.get_num_coordinates(gb).sum()),
        "vertices_after": int(shapely.get_num_coordinates(ga).sum()),
        "max_area_change_pct": float(rel.max() * 100) if len(rel) else 0.0,
        "total_area_change_ha": float(aa.sum() - ab.sum()),
    }


__all__ = [
    "M2_PER_HA",
    "component_labels",
    "dissolve_geometries",
    "dissolve_patch_geometries",
    "dissolve_patches",
    "simplification_report",
    "simplify_layer",
    "changed_relations",
    "union_by_label",
]
