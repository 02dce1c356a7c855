"""Calibrate and measure the mined-area estimate on real chips against the published layers.

    python scripts/calibrate_mined.py                 # measure, print the table (writes nothing)
    python scripts/calibrate_mined.py --write         # also write minewatch/data/mined_calibration.json

Reference: for each polygon of a published layer (``upstream/detections/mining_YYYY00_simplified.geojson``)
the reference mined fraction is ``Mined area (ha)`` / the polygon's footprint (EPSG:6933). Estimate:
the mean, over the shared mine chips whose centre lies in the polygon, of the chip's scar fraction
(:func:`minewatch.detect.mask.scar_pixels` on DN = rgb / 255 × 3000, bands B4, B3, B2; a chip is one
48 px patch, its four 24 px cells all valid).

The 2024 polygons are split in two by polygon (seeded permutation): the rule's parameters are chosen
on the calibration half (grid search, least median absolute error of the fraction), and every figure
is reported on the other half, and on the chips inside the 2020, 2022 and 2023 layers (chips
inside those layers' polygons, all dates; polygons already in the 2024 calibration half are
excluded by location, so no chip used to calibrate is reported on).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minewatch.config import shared_data_dir  # noqa: E402
from minewatch.detect.mask import CALIBRATION_FILE, ScarRule, scar_pixels  # noqa: E402

BANDS = ("B4", "B3", "B2")
SEED = 16
RED_GRID = np.arange(500.0, 2001.0, 25.0)
RATIO_GRID = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2)


def load(shared: Path):  # noqa: ANN201 - script helper
    import pandas as pd

    d = np.load(shared / "s2_rgb_chips" / "chips.npz")
    meta = pd.read_csv(shared / "s2_rgb_chips" / "chips.csv")
    sel = meta["lon"].notna().to_numpy() & (meta["label"].to_numpy() == 1)
    dn = d["rgb"][sel].astype(np.float32) / 255.0 * 3000.0
    return meta[sel].reset_index(drop=True), dn


def layer(shared: Path, year: int):  # noqa: ANN201
    import geopandas as gpd

    from minewatch.postprocess.geom import area_ha

    g = gpd.read_file(shared / "upstream" / "detections" / f"mining_{year}00_simplified.geojson").to_crs(4326)
    g["footprint_ha"] = area_ha(g.geometry)
    g["ref_frac"] = g["Mined area (ha)"].astype(float) / g["footprint_ha"]
    return g.reset_index(drop=True)


def chips_in(meta, g):  # noqa: ANN001, ANN201
    """(chip index, polygon index) for chips whose centre lies inside a polygon (first polygon wins)."""
    import geopandas as gpd

    pts = gpd.GeoDataFrame(meta[["lon", "lat"]], geometry=gpd.points_from_xy(meta["lon"], meta["lat"]), crs=4326)
    j = gpd.sjoin(pts, g[["geometry"]], predicate="within", how="inner")
    j = j[~j.index.duplicated(keep="first")]
    return j.index.to_numpy(), j["index_right"].to_numpy()


def chip_fractions(dn: np.ndarray, rule: ScarRule) -> np.ndarray:
    valid = np.ones(dn.shape[:3], dtype=bool)
    return np.array([scar_pixels(x, BANDS, v, rule).mean() for x, v in zip(dn, valid, strict=True)])


def polygon_table(frac: np.ndarray, chip_idx: np.ndarray, poly_idx: np.ndarray, g):  # noqa: ANN001, ANN201
    import pandas as pd

    df = pd.DataFrame({"poly": poly_idx, "est": frac[chip_idx]}).groupby("poly").agg(est=("est", "mean"), n=("est", "size"))
    df["ref"] = g["ref_frac"].to_numpy()[df.index.to_numpy()]
    df["footprint_ha"] = g["footprint_ha"].to_numpy()[df.index.to_numpy()]
    df["ref_ha"] = g["Mined area (ha)"].astype(float).to_numpy()[df.index.to_numpy()]
    return df


def figures(df) -> dict[str, float]:  # noqa: ANN001
    from scipy.stats import pearsonr, spearmanr

    err = df["est"] - df["ref"]
    est_ha = df["est"] * df["footprint_ha"]
    out = {
        "polygons": int(len(df)),
        "chips": int(df["n"].sum()),
        "ref_median": float(df["ref"].median()),
        "est_median": float(df["est"].median()),
        "median_abs_error": float(err.abs().median()),
        "median_bias": float(err.median()),
        "mean_bias": float(err.mean()),
        "pearson_r": float(pearsonr(df["est"], df["ref"])[0]) if len(df) > 2 else float("nan"),
        "spearman_r": float(spearmanr(df["est"], df["ref"])[0]) if len(df) > 2 else float("nan"),
        "total_ratio": float(est_ha.sum() / df["ref_ha"].sum()),
    }
    return out


def total_ratio_interval(df, n_boot: int = 2000, seed: int = SEED) -> tuple[float, float]:  # noqa: ANN001
    """90 % bootstrap interval (over polygons) of Σ reference ha / Σ estimated ha: multiply a total by it."""
    rng = np.random.default_rng(seed)
    est = (df["est"] * df["footprint_ha"]).to_numpy()
    ref = df["ref_ha"].to_numpy()
    r = []
    for _ in range(n_boot):
        k = rng.integers(0, len(df), len(df))
        if est[k].sum() > 0:
            r.append(ref[k].sum() / est[k].sum())
    return float(np.quantile(r, 0.05)), float(np.quantile(r, 0.95))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"write {CALIBRATION_FILE.relative_to(CALIBRATION_FILE.parents[2])}")
    ap.add_argument("--shared", type=Path, default=None)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    shared = a.shared or shared_data_dir()
    meta, dn = load(shared)
    g24 = layer(shared, 2024)
    ci, pi = chips_in(meta, g24)
    polys = np.unique(pi)
    rng = np.random.default_rng(SEED)
    perm = rng.permutation(polys)
    cal_polys = set(perm[: len(perm) // 2].tolist())
    is_cal = np.array([p in cal_polys for p in pi])
    print(f"2024 layer: {len(ci)} mine chips inside {len(polys)} polygons; calibration {len(cal_polys)} polygons "
          f"({is_cal.sum()} chips), test {len(polys) - len(cal_polys)} polygons ({(~is_cal).sum()} chips)")

    # grid search on the calibration half: least median absolute error of the polygon fraction
    best = None
    sub = dn[ci[is_cal]]
    r, gch = sub[..., 0], sub[..., 1]
    for ratio in RATIO_GRID:
        notgreen = r >= ratio * gch
        for red in RED_GRID:
            frac = ((r >= red) & notgreen).mean(axis=(1, 2))
            full = np.zeros(len(meta))
            full[ci[is_cal]] = frac
            df = polygon_table(full, ci[is_cal], pi[is_cal], g24)
            mae = float((df["est"] - df["ref"]).abs().median())
            if best is None or mae < best[0]:
                best = (mae, red, ratio)
    assert best is not None
    rule = ScarRule(red_min=float(best[1]), red_over_green=float(best[2]))
    print(f"chosen on calibration polygons: red_min {rule.red_min:g} DN, red_over_green {rule.red_over_green:g} (median |error| {best[0]:.4f})")

    frac = np.zeros(len(meta))
    frac[ci] = chip_fractions(dn[ci], rule)
    cal_df = polygon_table(frac, ci[is_cal], pi[is_cal], g24)
    test_df = polygon_table(frac, ci[~is_cal], pi[~is_cal], g24)
    rows = {"2024 calibration half (in-sample)": figures(cal_df), "2024 test half (held out)": figures(test_df)}
    lo, hi = total_ratio_interval(test_df)
    q = (test_df["ref"] / test_df["est"].where(test_df["est"] > 0)).dropna()

    # the same rule on simulated L2A (the L1C chips through the fixed reference atmosphere): how far
    # the L1C-calibrated threshold moves the estimate on surface reflectance
    from minewatch.train.atmosphere import simulate_l2a

    test_chips = ci[~is_cal]
    l2a = simulate_l2a(np.round(dn[test_chips] / 3000.0 * 255.0).astype(np.uint8)).astype(np.float32) / 255.0 * 3000.0
    frac_l2a = np.zeros(len(meta))
    frac_l2a[test_chips] = chip_fractions(l2a, rule)
    rows["2024 test half, simulated L2A (same rule)"] = figures(polygon_table(frac_l2a, test_chips, pi[~is_cal], g24))

    # other years: chips inside that layer's polygons, excluding chips in 2024 calibration polygons
    import shapely

    cal_union = shapely.union_all(g24.geometry.to_numpy()[sorted(cal_polys)])
    for year in (2020, 2022, 2023):
        g = layer(shared, year)
        c, p = chips_in(meta, g)
        pts = shapely.points(meta["lon"].to_numpy()[c], meta["lat"].to_numpy()[c])
        keep = ~shapely.within(pts, cal_union)
        missing = np.setdiff1d(c[keep], ci)
        if len(missing):
            frac[missing] = chip_fractions(dn[missing], rule)
        rows[f"{year} layer (chips outside 2024 calibration polygons)"] = {
            **figures(polygon_table(frac, c[keep], p[keep], g)), "chips_in_layer": int(len(c))}

    print("\n| set | polygons | chips | reference median | estimate median | median abs error | median bias | mean bias | Pearson r | Spearman r | Σ est / Σ ref |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k, f in rows.items():
        print(f"| {k} | {f['polygons']} | {f['chips']} | {f['ref_median']:.3f} | {f['est_median']:.3f} | {f['median_abs_error']:.3f} | "
              f"{f['median_bias']:+.3f} | {f['mean_bias']:+.3f} | {f['pearson_r']:.2f} | {f['spearman_r']:.2f} | {f['total_ratio']:.2f} |")
    print(f"\nheld-out 2024: a total of estimated ha × [{lo:.2f}, {hi:.2f}] is the 90 % bootstrap interval of the reference total; "
          f"per polygon, reference/estimate 10th–90th percentile [{q.quantile(0.1):.2f}, {q.quantile(0.9):.2f}]")
    print(f"({time.perf_counter() - t0:.1f} s)")
    if a.write:
        rec = {
            "rule": rule.as_dict(),
            "method": "rgb: B4 >= red_min and B4 >= red_over_green * B3 (DN); indices rule uncalibrated (no 12-band labelled chips)",
            "reference": "published Amazon Mining Watch 2024 layer, Mined area (ha) / footprint (EPSG:6933), per polygon",
            "split": {"seed": SEED, "calibration_polygons": len(cal_polys), "test_polygons": len(polys) - len(cal_polys)},
            "figures": rows,
            "total_interval90": [lo, hi],
            "polygon_ratio_p10_p90": [float(q.quantile(0.1)), float(q.quantile(0.9))],
            "command": "python scripts/calibrate_mined.py --write",
        }
        CALIBRATION_FILE.write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {CALIBRATION_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
