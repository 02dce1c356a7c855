"""Post-processing: dual threshold semantics, dissolve and area against exact geometry, topology-safe
simplification, readers/writers with metadata, the CLI, and speed on the full 2018 layer."""

from __future__ import annotations

import json
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import shapely.affinity
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod, Proj

from minewatch.cli.main import cli
from minewatch.errors import MinewatchError
from minewatch.grid import Tile
from minewatch.postprocess.dissolve import (
    _lattice_dissolve,
    changed_relations,
    dissolve_geometries,
    dissolve_patches,
    simplify_layer,
)
from minewatch.postprocess.geom import area_ha, ecef, transformer
from minewatch.postprocess.io import (
    normalize_period,
    period_from_filename,
    read_layer,
    read_metadata,
    read_patches,
    write_csv,
    write_layer,
)
from minewatch.postprocess.pipeline import postprocess
from minewatch.postprocess.synthetic import patches_from_layer, patches_on_tile
from minewatch.postprocess.threshold import PRESETS, ThresholdParams, classify, dual_threshold, preset

TILE = Tile(21, 60, -60)  # a tile in Pará, Brazil (UTM 21S)
SINGLE = PRESETS["single"]


@pytest.fixture(scope="session")
def layer_2018(shared_data: Path) -> gpd.GeoDataFrame:
    return read_layer(shared_data / "upstream" / "detections" / "mining_201800_simplified.geojson")


# ----------------------------------------------------------------------------- dual threshold


def cluster(row0: int, col0: int, n: int, score: float) -> list[tuple[int, int, float]]:
    """n patches side by side on the lattice (480 m apart), all with ``score``."""
    return [(row0, col0 + 48 * i, score) for i in range(n)]


def test_presets_have_the_documented_values() -> None:
    assert (PRESETS["single"].t_main, PRESETS["single"].t_iso) == (0.43, 0.75)
    assert (PRESETS["cumulative"].t_main, PRESETS["cumulative"].t_iso) == (0.55, 0.80)
    assert (PRESETS["mean06"].t_main, PRESETS["mean06"].t_iso) == (0.60, None)
    assert all(p.k == 5 and p.distance_km == 3.0 for p in PRESETS.values())
    assert preset("single", t_iso=0.9).t_iso == 0.9 and preset("single", t_iso=0.9).t_main == 0.43
    with pytest.raises(MinewatchError, match="--preset"):
        preset("nope")
    with pytest.raises(MinewatchError, match="--t-main"):
        ThresholdParams(1.5, 0.8)


def test_isolated_high_kept_isolated_low_dropped_clustered_low_kept() -> None:
    cells = cluster(0, 0, 6, 0.50)  # clustered low: each has 5 kept neighbours within 2.4 km
    cells += [(600, 600, 0.90)]  # isolated high: > 6 km from everything
    cells += [(0, 900, 0.50)]  # isolated low
    cells += [(600, 0, 0.30)]  # below t_main anywhere
    p = patches_on_tile(TILE, cells)
    keep, isolated = classify(p, SINGLE)
    assert keep.tolist() == [True] * 6 + [True, False, False]
    assert isolated.tolist() == [False] * 6 + [True, True, False]


def test_sub_threshold_patches_are_not_neighbours() -> None:
    # 4 kept neighbours plus many below t_main around a low patch: still isolated (needs k=5 kept)
    cells = cluster(0, 0, 5, 0.50) + [(48, 48 * i, 0.40) for i in range(10)]
    keep = dual_threshold(patches_on_tile(TILE, cells), SINGLE)
    assert not keep[:5].any() and not keep[5:].any()
    cells[5] = (48, 0, 0.60)  # one of them now passes t_main: the 5 others gain a 5th kept neighbour
    keep = dual_threshold(patches_on_tile(TILE, cells), SINGLE)
    assert keep[:6].all()


@pytest.mark.parametrize("fifth_px, isolated", [(290, False), (310, True)])
def test_distance_threshold_is_metric_and_uses_the_kth_neighbour(fifth_px: int, isolated: bool) -> None:
    # target at col 0; four neighbours close by, the fifth at 2.9 km or 3.1 km (same row)
    cells = [(500, 0, 0.5)] + [(500, 48 * i, 0.9) for i in range(1, 5)] + [(500, fifth_px, 0.9)]
    cells += [(500, fifth_px + 48 * i, 0.9) for i in range(1, 5)]  # keep the far group non-isolated
    keep, iso = classify(patches_on_tile(TILE, cells), SINGLE)
    assert bool(iso[0]) is isolated and bool(keep[0]) is (not isolated)


def test_geocentric_distance_matches_geodesic() -> None:
    geod = Geod(ellps="WGS84")
    lon2, lat2, _ = geod.fwd(-55.0, -6.0, 37.0, 3000.0)
    xyz = ecef(np.array([-55.0, lon2]), np.array([-6.0, lat2]))
    assert np.linalg.norm(xyz[0] - xyz[1]) == pytest.approx(3000.0, rel=1e-7)


def patch_at(lon: float, lat: float, score: float) -> gpd.GeoDataFrame:
    """One 480 m patch centred on (lon, lat), square in that longitude's own UTM zone."""
    zone = int((lon + 180) // 6) + 1
    epsg = (32700 if lat < 0 else 32600) + zone
    e, n = transformer("EPSG:4326", epsg).transform(lon, lat)
    sq = shapely.box(e - 240, n - 240, e + 240, n + 240)
    g = shapely.transform(sq, lambda xy: np.column_stack(transformer(epsg, "EPSG:4326").transform(xy[:, 0], xy[:, 1])))
    return gpd.GeoDataFrame({"epsg": [epsg], "score": [score], "period": ["2024"]}, geometry=[g], crs=4326)


def test_clusters_across_a_utm_zone_seam_are_not_isolated() -> None:
    # six overlapping patches (≈ 400 m apart) straddling the zone 21/22 boundary at lon -54
    lons = (-54.0105, -54.007, -54.0035, -53.9965, -53.993, -53.9895)
    p = gpd.GeoDataFrame(pd.concat([patch_at(lon, -6.0, 0.5) for lon in lons[:3]] + [patch_at(-53.99999, -6.0, 0.5)]
                                   + [patch_at(lon, -6.0, 0.5) for lon in lons[3:]], ignore_index=True), crs=4326)
    assert p["epsg"].nunique() == 2
    keep, iso = classify(p, SINGLE)
    assert keep.all() and not iso.any()
    d = dissolve_patches(p)  # per-zone dissolves, then the cross-zone pass joins them
    assert len(d) == 1 and d.loc[0, "n_patches"] == 7


def test_mean06_is_a_plain_threshold() -> None:
    p = patches_on_tile(TILE, [(0, 0, 0.65), (600, 600, 0.59), (0, 900, 0.60)])
    keep, iso = classify(p, PRESETS["mean06"])
    assert keep.tolist() == [True, False, True] and not iso.any()


def test_isolation_is_judged_within_each_period() -> None:
    cells = cluster(0, 0, 3, 0.5)
    a = patches_on_tile(TILE, cells, period="2023")
    b = patches_on_tile(TILE, cluster(0, 144, 3, 0.5), period="2024")
    both = gpd.GeoDataFrame(pd.concat([a, b], ignore_index=True), crs=4326)
    assert not dual_threshold(both, SINGLE).any()  # 3 per period < k+1
    same = both.assign(period="2024")
    assert dual_threshold(same, SINGLE).all()  # 6 together: each has 5 kept neighbours


# -------------------------------------------------------------------------------- dissolve/area


def test_three_adjacent_patches_dissolve_to_69_12_ha() -> None:
    """3 × (480 m)² = 69.12 ha in UTM grid metres.

    Tolerance: UTM is conformal, not equal-area; a grid square covers (1/k²) of its grid area on the
    ellipsoid (k = point scale, 0.9996 on the central meridian, up to ~1.001 at zone edges), so the
    equal-area hectares differ from 69.12 by up to ~0.2 %. Against the exact ellipsoidal area
    (69.12 / areal scale from PROJ's factors) the equal-area figure agrees to 1e-5: that residual is
    the equal-area projection's own error (straight edges), i.e. negligible.
    """
    p = patches_on_tile(TILE, cluster(96, 96, 3, 0.8))
    d = dissolve_patches(p)
    assert len(d) == 1 and d.loc[0, "n_patches"] == 3
    assert d.loc[0, "geometry"].geom_type == "Polygon"
    c = d.loc[0, "geometry"].centroid
    scale = Proj(f"EPSG:{TILE.epsg}").get_factors(c.x, c.y).areal_scale
    assert d.loc[0, "area_ha"] == pytest.approx(69.12, rel=2e-3)
    assert d.loc[0, "area_ha"] == pytest.approx(69.12 / scale, rel=1e-5)
    # the same area computed by shapely in the tile's own CRS is exactly 69.12 ha
    local = shapely.transform(d.geometry.values, lambda xy: np.column_stack(transformer("EPSG:4326", TILE.epsg).transform(xy[:, 0], xy[:, 1])))
    assert shapely.area(local)[0] / 1e4 == pytest.approx(69.12, abs=1e-6)


def test_overlapping_and_corner_touching_patches() -> None:
    # 2×2 block on the half-patch lattice: union is 720 m × 720 m = 51.84 ha (grid)
    block = [(0, 0, 0.9), (0, 24, 0.8), (24, 0, 0.7), (24, 24, 0.6)]
    corner = [(300, 300, 0.5), (348, 348, 0.7)]  # share one corner only
    apart = [(600, 600, 0.5), (600, 696, 0.5)]  # 480 m gap
    d = dissolve_patches(patches_on_tile(TILE, block + corner + apart))
    assert sorted(d["n_patches"].tolist()) == [1, 1, 2, 4]
    blk = d[d["n_patches"] == 4].iloc[0]
    assert blk["score_max"] == 0.9 and blk["score_mean"] == pytest.approx(0.75)
    local = shapely.transform(np.array([blk.geometry]), lambda xy: np.column_stack(transformer("EPSG:4326", TILE.epsg).transform(xy[:, 0], xy[:, 1])))
    assert shapely.area(local)[0] / 1e4 == pytest.approx(51.84, abs=1e-6)
    assert d[d["n_patches"] == 2].iloc[0].geometry.geom_type == "MultiPolygon"


def test_patches_across_tiles_merge() -> None:
    east = Tile(TILE.zone, TILE.ix + 1, TILE.iy)
    a = patches_on_tile(TILE, [(0, 1008 - 48, 0.9)])  # last column of the west tile
    b = patches_on_tile(east, [(0, 0, 0.9)])  # first column of the east tile: shares an edge
    d = dissolve_patches(gpd.GeoDataFrame(pd.concat([a, b], ignore_index=True), crs=4326))
    assert len(d) == 1 and d.loc[0, "area_ha"] == pytest.approx(46.08, rel=2e-3)


def test_periods_are_dissolved_separately() -> None:
    a = patches_on_tile(TILE, cluster(0, 0, 2, 0.9), period="2023")
    b = patches_on_tile(TILE, cluster(0, 0, 2, 0.9), period="2024")
    d = dissolve_patches(gpd.GeoDataFrame(pd.concat([a, b], ignore_index=True), crs=4326))
    assert d["period"].tolist() == ["2023", "2024"] and d["n_patches"].tolist() == [2, 2]


@settings(max_examples=25, deadline=None)
@given(st.sets(st.tuples(st.integers(0, 14), st.integers(0, 14)), min_size=1, max_size=60))
def test_lattice_fast_path_equals_general_union(cells: set[tuple[int, int]]) -> None:
    """The coverage-union fast path gives the same polygons as a plain GEOS union of the squares.

    Not bit-identical: the fast path keeps the lattice's intermediate vertices (exact images of the
    UTM edges), the plain union draws straight lon/lat lines between patch corners; the two outlines
    differ by < 1 m² per patch (< 1e-6 relative area).
    """
    p = patches_on_tile(TILE, [(24 * r, 24 * c, 0.9) for r, c in sorted(cells)])
    fast = dissolve_patches(p)
    merged, labels = dissolve_geometries(p.geometry.to_numpy())
    assert len(fast) == len(merged)
    assert fast["area_ha"].sum() == pytest.approx(area_ha(merged).sum(), rel=1e-6)
    assert sorted(fast["n_patches"]) == sorted(np.bincount(labels).tolist())
    sym = shapely.symmetric_difference(shapely.union_all(fast.geometry.values), shapely.union_all(merged))
    assert area_ha(np.array([sym]))[0] < 1e-4 * len(cells)


def test_densified_and_off_lattice_footprints() -> None:
    """Densified patch edges still take the fast path; rotated footprints fall back, same answer."""
    cells = [(0, 0, 0.9), (0, 24, 0.8), (0, 96, 0.7)]
    p = patches_on_tile(TILE, cells)
    fwd, back = transformer("EPSG:4326", TILE.epsg), transformer(TILE.epsg, "EPSG:4326")
    local = shapely.transform(p.geometry.to_numpy(), lambda xy: np.column_stack(fwd.transform(xy[:, 0], xy[:, 1])))
    dense = shapely.transform(shapely.segmentize(local, 60.0), lambda xy: np.column_stack(back.transform(xy[:, 0], xy[:, 1])))
    assert (shapely.get_num_coordinates(dense) > 5).all()
    turned = np.array([shapely.affinity.rotate(g, 10, origin=local[0].centroid) for g in local])
    rotated = shapely.transform(turned, lambda xy: np.column_stack(back.transform(xy[:, 0], xy[:, 1])))
    assert _lattice_dissolve(dense, TILE.epsg) is not None and _lattice_dissolve(rotated, TILE.epsg) is None
    base = dissolve_patches(p)
    for geoms in (dense, rotated):
        d = dissolve_patches(p.set_geometry(gpd.GeoSeries(geoms, crs=4326)))
        assert sorted(d["n_patches"]) == sorted(base["n_patches"]) == [1, 2]
        assert d["area_ha"].sum() == pytest.approx(base["area_ha"].sum(), rel=1e-6)


def test_empty_input_gives_empty_layer() -> None:
    p = patches_on_tile(TILE, [(0, 0, 0.1)])
    res = postprocess(p, SINGLE)
    assert len(res.polygons) == 0 and res.stats["patches_kept"] == 0


# ----------------------------------------------------------------------------- simplification


def notched(x0: float, y0: float) -> shapely.Polygon:
    """A 200 m square with a 20 m × 20 m notch (a bay) in its east edge, UTM metres."""
    return shapely.Polygon([(x0, y0), (x0 + 200, y0), (x0 + 200, y0 + 90), (x0 + 180, y0 + 90), (x0 + 180, y0 + 110),
                            (x0 + 200, y0 + 110), (x0 + 200, y0 + 200), (x0, y0 + 200)])


def zigzag(x0: float, y0: float, teeth: int = 20) -> shapely.Polygon:
    """A polygon whose east edge zigzags by 10 m (many vertices, all removable at 25 m)."""
    east = [(x0 + 200 + 10 * (i % 2), y0 + 15 * i) for i in range(teeth + 1)]
    return shapely.Polygon([(x0, y0), *east, (x0, y0 + 15 * teeth)])


def test_simplify_keeps_topology_where_naive_simplify_would_not() -> None:
    e0, n0 = TILE.bounds[0] + 2000, TILE.bounds[1] + 2000
    a = notched(e0, n0)
    b = shapely.box(e0 + 186, n0 + 96, e0 + 194, n0 + 104)  # a separate small mine inside a's bay
    c = zigzag(e0 + 2000, n0)  # alone: free to simplify
    local = np.array([a, b, c], dtype=object)
    naive = shapely.simplify(local, 25.0, preserve_topology=True)
    assert not shapely.intersects(a, b) and shapely.intersects(naive[0], naive[1])  # naive: new overlap
    to84 = transformer(TILE.epsg, "EPSG:4326")
    g84 = shapely.transform(local, lambda xy: np.column_stack(to84.transform(xy[:, 0], xy[:, 1])))
    layer = gpd.GeoDataFrame({"period": "2024", "area_ha": area_ha(g84)}, geometry=g84, crs=4326)
    out = simplify_layer(layer, 25.0)
    g0, g1 = layer.geometry.to_numpy(), out.geometry.to_numpy()
    assert len(out) == len(layer)
    assert shapely.is_valid(g1).all() and not shapely.is_empty(g1).any()
    assert len(changed_relations(g0, g1)) == 0
    assert not shapely.intersects(g1[0], g1[1])
    nv0, nv1 = shapely.get_num_coordinates(g0), shapely.get_num_coordinates(g1)
    assert nv1[2] < nv0[2] / 3  # the free polygon was simplified
    assert out["area_ha"].tolist() == layer["area_ha"].tolist()


def test_simplify_real_polygons_topology_unchanged(layer_2018: gpd.GeoDataFrame) -> None:
    region = layer_2018.cx[-57.5:-56.0, -7.0:-5.5]
    out = simplify_layer(region, 60.0)
    g0, g1 = region.geometry.to_numpy(), out.geometry.to_numpy()
    assert len(out) == len(region) > 100
    assert shapely.is_valid(g1).all()
    assert len(changed_relations(g0, g1)) == 0
    i, j = shapely.STRtree(g1).query(g1, predicate="overlaps")
    assert not (i != j).any()  # no new overlaps (the published polygons have none)
    assert shapely.get_num_coordinates(g1).sum() < shapely.get_num_coordinates(g0).sum()


# -------------------------------------------------------------------------------------------- io


def test_periods_from_every_form() -> None:
    assert normalize_period(202400) == "2024" and normalize_period("202502") == "2025Q2"
    assert normalize_period("2024q3") == "2024Q3" and normalize_period(2018.0) == "2018"
    assert normalize_period(None) == "" and normalize_period(float("nan")) == ""
    assert period_from_filename("mining_202503_simplified.geojson") == "2025Q3"
    assert period_from_filename("patches.parquet") is None


def test_outputs_carry_their_parameters(tmp_path: Path) -> None:
    d = dissolve_patches(patches_on_tile(TILE, cluster(0, 0, 3, 0.8)))
    meta = {"command": "test", "parameters": {"t_main": 0.43}}
    pq_path, gj_path = write_layer(d, tmp_path, "mining", meta)
    csv_path = write_csv(pd.DataFrame({"a": [1]}), tmp_path / "t.csv", meta)
    for path in (pq_path, gj_path, csv_path):
        assert read_metadata(path)["parameters"] == {"t_main": 0.43}
    gj = json.loads(gj_path.read_text())
    assert gj["type"] == "FeatureCollection" and "crs" not in gj  # RFC 7946: WGS84, no crs member
    back = read_layer(pq_path)
    assert back["stated_ha"].tolist() == pytest.approx(d["area_ha"].tolist())
    assert back["footprint_ha"].tolist() == pytest.approx(d["area_ha"].tolist())
    assert read_layer(gj_path)["period"].tolist() == ["2024"]


def test_bad_patch_files_fail_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(MinewatchError, match="file not found"):
        read_patches(tmp_path / "missing.parquet")
    p = patches_on_tile(TILE, cluster(0, 0, 2, 0.5)).drop(columns="score")
    p.to_parquet(tmp_path / "noscore.parquet")
    with pytest.raises(MinewatchError, match="no 'score' column"):
        read_patches(tmp_path / "noscore.parquet")
    q = patches_on_tile(TILE, cluster(0, 0, 2, 0.5)).assign(score=[0.5, 1.7])
    q.to_parquet(tmp_path / "range.parquet")
    with pytest.raises(MinewatchError, match=r"\[0, 1\]"):
        read_patches(tmp_path / "range.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(MinewatchError, match="cannot read"):
        read_patches(tmp_path / "junk.parquet")


def test_cli_postprocess_end_to_end(tmp_path: Path) -> None:
    cells = cluster(0, 0, 6, 0.5) + [(600, 600, 0.9), (0, 900, 0.5)]
    patches_on_tile(TILE, cells).to_parquet(tmp_path / "patches.parquet")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["postprocess", str(tmp_path / "patches.parquet"), "--out", str(out), "--simplify", "10", "--preset", "single"])
    assert r.exit_code == 0, r.output
    layer = gpd.read_parquet(out / "mining.parquet")
    assert sorted(layer["n_patches"]) == [1, 6]
    md = read_metadata(out / "mining.geojson")
    assert md["parameters"]["t_main"] == 0.43 and md["parameters"]["simplify_m"] == 10
    assert (out / "mining_simplified.geojson").exists()
    assert json.loads((out / "summary.json").read_text())["stats"]["patches_isolated_dropped"] == 1
    r = CliRunner().invoke(cli, ["postprocess", str(tmp_path / "patches.parquet"), "--out", str(out), "--preset", "mean06"])
    assert r.exit_code == 0 and len(gpd.read_parquet(out / "mining.parquet")) == 1


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"PAR1garbage")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["postprocess", str(tmp_path / "bad.parquet"), "--out", str(out)])
    assert r.exit_code == 2
    assert "bad.parquet" in r.output and len(r.output.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())
    r = CliRunner().invoke(cli, ["postprocess", str(tmp_path / "bad.parquet"), "--out", str(out), "--t-main", "2"])
    assert r.exit_code == 2 and "--t-main" in r.output


# ------------------------------------------------------------------------------ real, large input


def test_real_region_postprocess_reproduces_the_layer(layer_2018: gpd.GeoDataFrame) -> None:
    """Synthetic scores over part of the real 2018 layer (Tapajós, UTM 21S) come back as polygons
    covering the same mining: every input polygon is touched by an output polygon."""
    region = layer_2018.cx[-58.0:-55.0, -8.0:-5.0]
    patches = patches_from_layer(region, seed=1)
    t = time.perf_counter()
    res = postprocess(patches, SINGLE, simplify_m=20)
    elapsed = time.perf_counter() - t
    assert len(patches) > 20_000 and elapsed < 20
    polys = res.polygons.geometry.to_numpy()
    hit = shapely.STRtree(polys).query(region.geometry.to_numpy(), predicate="intersects")[0]
    assert len(np.unique(hit)) == len(region)
    assert res.polygons["n_patches"].sum() == res.stats["patches_kept"]
    assert len(res.simplified) == len(res.polygons)


@pytest.mark.slow
def test_full_2018_layer_postprocesses_in_seconds(layer_2018: gpd.GeoDataFrame) -> None:
    patches = patches_from_layer(layer_2018, seed=0)
    t = time.perf_counter()
    res = postprocess(patches, SINGLE)
    elapsed = time.perf_counter() - t
    assert len(patches) > 250_000
    assert elapsed < 30, f"{elapsed:.1f} s"
    assert res.polygons["n_patches"].sum() == res.stats["patches_kept"]
