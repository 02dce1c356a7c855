"""Post-processing and zonal-statistics benchmark on the published 2018 layer, against naive baselines.

    python benchmarks/bench_postprocess.py [--subset 4000] [--json out.json]

1. Patches: the full published 2018 layer (5,444 polygons, 963,020 ha) is turned into the patch
   scores a detector would write over it (every 480 m patch on the 24 px lattice touching mining,
   ~300,000 patches; :func:`minewatch.postprocess.synthetic.patches_from_layer`).
2. Post-processing of all of them: dual threshold (``single`` preset; k-d tree on geocentric patch
   centres) + dissolve (lattice fast path: envelope STRtree + connected components + coverage union)
   + 20 m topology-safe simplification. Baselines in the same process:
   * dissolve, full size: the usual GeoPandas idiom ``union_all`` of everything, ``explode``, then
     a spatial join to give each polygon its patches' scores (``explode`` also splits patches that
     touch only at a corner, which minewatch keeps as one MultiPolygon: hence a few more polygons);
   * dual threshold and dissolve, on a ``--subset`` of patches (a naive loop is quadratic): isolation
     by a Python loop over patches with a distance to every other kept patch (shapely, UTM metres),
     dissolve by a Python loop merging each patch into every polygon it touches.
3. Zonal statistics of all 9 published layers (45,011 polygons) × 237 indigenous territories:
   :func:`minewatch.impacts.zonal.zonal_stats` against ``geopandas.overlay(how="intersection")``
   followed by a group-by (the usual idiom), both with the same apportioning.

Prints one line per measurement and the ratios; the machine is whatever runs it (state it).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from minewatch.config import shared_data_dir
from minewatch.impacts.zonal import read_zones, zonal_stats
from minewatch.postprocess.dissolve import dissolve_patches, simplify_layer
from minewatch.postprocess.geom import EQUAL_AREA_CRS, area_ha, transformer
from minewatch.postprocess.io import read_layer, read_layers
from minewatch.postprocess.synthetic import patches_from_layer
from minewatch.postprocess.threshold import PRESETS, classify

warnings.simplefilter("ignore")


def timed(fn, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN201
    t = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t


# ------------------------------------------------------------------------------------ baselines


def naive_dissolve_union(patches: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """GeoPandas idiom: one union of everything, explode to parts, spatial join back for scores."""
    parts = gpd.GeoDataFrame(geometry=[shapely.union_all(patches.geometry.to_numpy())], crs=4326).explode(index_parts=False)
    parts = parts.reset_index(drop=True)
    j = gpd.sjoin(patches[["score", "geometry"]], parts, predicate="intersects")
    agg = j.groupby("index_right")["score"].agg(["size", "max", "mean"])
    parts = parts.join(agg)
    parts["area_ha"] = area_ha(parts.geometry)
    return parts


def naive_isolation(patches: gpd.GeoDataFrame, k: int, distance_km: float) -> np.ndarray:
    """Loop over patches; distance (UTM metres) to every other patch; k-th smallest."""
    epsg = int(patches["epsg"].iloc[0])
    tr = transformer("EPSG:4326", epsg)
    pts = [shapely.Point(*tr.transform(c.x, c.y)) for c in patches.geometry.centroid]
    out = np.zeros(len(pts), dtype=bool)
    for i, p in enumerate(pts):
        d = sorted(p.distance(q) for j, q in enumerate(pts) if j != i)
        out[i] = len(d) < k or d[k - 1] > distance_km * 1000
    return out


def naive_dissolve_loop(geoms: list) -> list:  # noqa: ANN001
    """Merge each patch into every polygon it touches (Python loop over pairs)."""
    polys: list = []
    for g in geoms:
        touching = [p for p in polys if p.intersects(g)]
        rest = [p for p in polys if not p.intersects(g)]
        polys = rest + [shapely.union_all([g, *touching])]
    return polys


def naive_zonal(layer: gpd.GeoDataFrame, zones: gpd.GeoDataFrame) -> pd.DataFrame:
    lay = layer.to_crs(EQUAL_AREA_CRS)
    lay["poly_m2"] = lay.area
    x = gpd.overlay(lay[["period", "stated_ha", "poly_m2", "geometry"]], zones[["zone_id", "geometry"]].to_crs(EQUAL_AREA_CRS),
                    how="intersection", keep_geom_type=True)
    x["apportioned_ha"] = x.area / x["poly_m2"] * x["stated_ha"]
    return x.groupby(["zone_id", "period"], as_index=False)["apportioned_ha"].sum()


# ----------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subset", type=int, default=4000, help="patches for the quadratic baselines")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    up = shared_data_dir() / "upstream"
    res: dict[str, float | int | str] = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip()}

    layer, t = timed(read_layer, up / "detections" / "mining_201800_simplified.geojson")
    patches, t_syn = timed(patches_from_layer, layer, seed=0)
    res.update(polygons_2018=len(layer), patches=len(patches), synth_s=round(t_syn, 2))
    print(f"2018 layer: {len(layer):,} polygons → {len(patches):,} synthetic patches ({t_syn:.1f} s to make)")

    params = PRESETS["single"]
    (keep, iso), t_thr = timed(classify, patches, params)
    kept = patches[keep]
    polys, t_dis = timed(dissolve_patches, kept)
    _, t_simp = timed(simplify_layer, polys, 20.0)
    res.update(threshold_s=round(t_thr, 2), dissolve_s=round(t_dis, 2), simplify_s=round(t_simp, 2),
               total_s=round(t_thr + t_dis + t_simp, 2), polygons_out=len(polys), kept=int(keep.sum()))
    print(f"minewatch: threshold {t_thr:.2f} s + dissolve {t_dis:.2f} s + simplify(20 m) {t_simp:.2f} s "
          f"= {t_thr + t_dis + t_simp:.2f} s → {len(polys):,} polygons, {polys['area_ha'].sum():,.0f} ha")

    naive, t_nu = timed(naive_dissolve_union, kept)
    res.update(naive_union_dissolve_s=round(t_nu, 2), dissolve_ratio=round(t_nu / t_dis, 1))
    print(f"baseline union_all+explode+sjoin dissolve: {t_nu:.2f} s ({len(naive):,} polygons, "
          f"{naive['area_ha'].sum():,.0f} ha) → minewatch {t_nu / t_dis:.1f}× faster")

    # quadratic baselines on a contiguous subset (one UTM zone, one region)
    zone = kept[kept["epsg"] == kept["epsg"].mode()[0]]
    sub = zone.iloc[np.argsort(zone.geometry.centroid.x.to_numpy())[: args.subset]]
    _, t_iso_ours = timed(classify, sub, params)
    naive_iso, t_iso_naive = timed(naive_isolation, sub, params.k, params.distance_km)
    ours_iso = classify(sub, params)[1]
    assert (naive_iso == ours_iso).all(), "isolation differs from the naive loop"
    d_ours, t_d_ours = timed(dissolve_patches, sub)
    d_naive, t_d_naive = timed(naive_dissolve_loop, list(sub.geometry))
    assert len(d_naive) == len(d_ours), "dissolve differs from the naive loop"
    res.update(subset=len(sub), subset_threshold_s=round(t_iso_ours, 3), subset_naive_threshold_s=round(t_iso_naive, 2),
               subset_threshold_ratio=round(t_iso_naive / t_iso_ours, 0), subset_dissolve_s=round(t_d_ours, 3),
               subset_naive_dissolve_s=round(t_d_naive, 2), subset_dissolve_ratio=round(t_d_naive / t_d_ours, 0))
    print(f"subset of {len(sub):,} patches: isolation {t_iso_ours:.3f} s vs loop {t_iso_naive:.1f} s "
          f"({t_iso_naive / t_iso_ours:.0f}×); dissolve {t_d_ours:.3f} s vs pairwise loop {t_d_naive:.1f} s "
          f"({t_d_naive / t_d_ours:.0f}×); same results")

    layers = read_layers(sorted((up / "detections").glob("mining_*_simplified.geojson")), area_field="Mined area (ha)")
    zones = read_zones(up / "boundaries" / "indigenous_territories.geojson", "id", "name_field")
    z, t_z = timed(zonal_stats, layers, zones, True)
    zn, t_zn = timed(naive_zonal, layers, zones)
    m = z.table.merge(zn, on=["zone_id", "period"], suffixes=("", "_naive"))
    assert np.allclose(m["apportioned_ha"], m["apportioned_ha_naive"], rtol=1e-6, atol=1e-9)
    res.update(zonal_polygons=len(layers), zonal_zones=len(zones), zonal_s=round(t_z, 2), naive_overlay_s=round(t_zn, 2),
               zonal_ratio=round(t_zn / t_z, 1))
    print(f"zonal: {len(layers):,} polygons × {len(zones)} territories: {t_z:.2f} s vs geopandas.overlay {t_zn:.2f} s "
          f"({t_zn / t_z:.1f}×); same {len(m)} zone-period values")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
