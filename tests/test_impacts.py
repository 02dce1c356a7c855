"""Zonal statistics: hand-built zones (overlapping, invalid, multi-part, repeated ids) with known
answers, the one-line errors, and agreement with the published Amazon Mining Watch territory table."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner

from minewatch.cli.main import cli
from minewatch.errors import MinewatchError
from minewatch.impacts.reference import compare, read_reference
from minewatch.impacts.zonal import read_zones, wide_table, zonal_stats
from minewatch.postprocess.geom import area_ha, transformer
from minewatch.postprocess.io import read_layers, read_metadata

EPSG = 32721
E0, N0 = 600_000.0, 9_300_000.0
TO84 = transformer(EPSG, "EPSG:4326")


def to84(g: shapely.Geometry) -> shapely.Geometry:
    """UTM metres (offset from E0, N0) → WGS84, edges densified every 25 m."""
    g = shapely.transform(g, lambda xy: xy + np.array([E0, N0]))
    g = shapely.segmentize(g, 25.0)
    return shapely.transform(g, lambda xy: np.column_stack(TO84.transform(xy[:, 0], xy[:, 1])))


def write_zones(path: Path) -> None:
    bowtie = shapely.Polygon([(2000, 0), (3000, 1000), (3000, 0), (2000, 1000)])  # invalid: self-crossing
    assert not bowtie.is_valid
    rows = [
        ("Z1", "One", shapely.box(0, 0, 1000, 1000)),
        ("Z2", "Two", shapely.box(500, 0, 1500, 1000)),  # overlaps Z1
        ("Z3", "Bow-tie", bowtie),
        ("Z4", "", shapely.MultiPolygon([shapely.box(4000, 0, 4500, 500), shapely.box(5000, 0, 5500, 500)])),
        ("Z5", "Five", shapely.box(6000, 0, 7000, 1000)),
        ("Z5", "Five", shapely.box(6500, 0, 7500, 1000)),  # same id again, overlapping its first row
        ("Z6", "Empty", shapely.box(9000, 0, 9100, 100)),
    ]
    feats = [{"type": "Feature", "properties": {"zid": i, "label": n},
              "geometry": json.loads(shapely.to_geojson(shapely.transform(g, lambda xy: np.column_stack(
                  TO84.transform(*(xy + np.array([E0, N0])).T)))))} for i, n, g in rows]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))


def mining() -> gpd.GeoDataFrame:
    rows = [
        ("2024", shapely.box(400, 400, 600, 600), 1.0),  # M1: Z1 whole, Z2 half
        ("2024", shapely.box(2050, 450, 2150, 550), 0.2),  # M2: in the bow-tie's left triangle
        ("2024", shapely.box(4400, 100, 5100, 200), 0.7),  # M3: 2 of its 7 ha in Z4's two parts
        ("2024", shapely.box(6600, 0, 6800, 100), 0.5),  # M4: in both rows of Z5 (counted once)
        ("2023", shapely.box(100, 100, 200, 200), 0.1),  # M5: Z1, earlier period
    ]
    return gpd.GeoDataFrame({"period": [r[0] for r in rows], "Mined area (ha)": [r[2] for r in rows]},
                            geometry=[to84(r[1]) for r in rows], crs=4326)


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    write_zones(tmp_path / "zones.geojson")
    mining().to_file(tmp_path / "mining.geojson")
    return tmp_path / "zones.geojson", tmp_path / "mining.geojson"


def test_zones_are_repaired_and_merged_by_id(files: tuple[Path, Path]) -> None:
    z = read_zones(files[0], "zid", "label").set_index("zone_id")
    assert list(z.index) == ["Z1", "Z2", "Z3", "Z4", "Z5", "Z6"]
    assert shapely.is_valid(z.geometry.to_numpy()).all()
    k2 = z.loc["Z1", "zone_area_ha"] / 100.0  # equal-area ha per UTM-grid ha here (1/k², ≈ 1.0008)
    assert k2 == pytest.approx(1.0, abs=3e-3)
    assert z.loc["Z3", "zone_area_ha"] == pytest.approx(50 * k2, rel=1e-4)  # both triangles kept
    assert z.loc["Z4", "zone_area_ha"] == pytest.approx(50 * k2, rel=1e-4)
    assert z.loc["Z5", "zone_area_ha"] == pytest.approx(150 * k2, rel=1e-4)  # union of its rows
    assert z.loc["Z4", "zone_name"] == "Z4"  # empty name falls back to the id


def test_apportioned_and_intersection_areas(files: tuple[Path, Path]) -> None:
    zones = read_zones(files[0], "zid", "label")
    lay = read_layers([files[1]], area_field="Mined area (ha)")
    res = zonal_stats(lay, zones, apportion=True)
    t = res.table.set_index(["zone_id", "period"])
    k2 = zones.set_index("zone_id").loc["Z1", "zone_area_ha"] / 100.0
    expect = {  # (intersect grid ha, apportioned ha)
        ("Z1", "2024"): (4.0, 1.0), ("Z2", "2024"): (2.0, 0.5), ("Z3", "2024"): (1.0, 0.2),
        ("Z4", "2024"): (2.0, 0.2), ("Z5", "2024"): (2.0, 0.5), ("Z1", "2023"): (1.0, 0.1),
    }
    assert set(t.index) == set(expect)  # nothing for Z6, no zone-period without mining
    for key, (ha, app) in expect.items():
        assert t.loc[key, "intersect_ha"] == pytest.approx(ha * k2, rel=2e-4), key
        assert t.loc[key, "apportioned_ha"] == pytest.approx(app, rel=1e-4), key
    assert t.loc[("Z2", "2024"), "intersect_pct"] == pytest.approx(2.0, rel=1e-3)
    assert t.loc[("Z1", "2024"), "apportioned_pct"] == pytest.approx(1.0, rel=2e-3)
    # overlapping zones are each counted in full: zone sums exceed the layer total
    assert t["apportioned_ha"].sum() > lay["stated_ha"].sum() - 0.7 + 0.2
    w = wide_table(res).set_index("zone_id")
    assert w.loc["Z1", "ha_2023"] == pytest.approx(0.1, rel=1e-4) and w.loc["Z6", "total_ha"] == 0.0
    plain = zonal_stats(lay, zones, apportion=False).table
    assert "apportioned_ha" not in plain.columns
    np.testing.assert_allclose(plain["intersect_ha"], res.table["intersect_ha"])


def test_cli_impacts_outputs_and_metadata(files: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["impacts", str(files[1]), "--zones", str(files[0]), "--id-field", "zid",
                                 "--name-field", "label", "--area-field", "Mined area (ha)", "--out", str(out)])
    assert r.exit_code == 0, r.output
    t = pd.read_csv(out / "impacts.csv", dtype={"period": str})
    assert {"intersect_ha", "apportioned_ha", "intersect_pct", "apportioned_pct"} <= set(t.columns)
    gj = gpd.read_file(out / "zones.geojson")
    assert len(gj) == 6 and gj.crs.to_epsg() == 4326
    assert read_metadata(out / "zones.parquet")["parameters"]["area_field"] == "Mined area (ha)"
    assert read_metadata(out / "impacts.csv")["parameters"]["id_field"] == "zid"


def test_missing_fields_are_one_line_errors_naming_the_file(files: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["impacts", str(files[1]), "--zones", str(files[0]), "--id-field", "nope", "--out", str(out)])
    assert r.exit_code == 2
    line = r.output.strip()
    assert len(line.splitlines()) == 1 and "zones.geojson" in line and "--zone-id-field 'nope'" in line
    assert not out.exists()
    r = CliRunner().invoke(cli, ["impacts", str(files[1]), "--zones", str(files[0]), "--id-field", "zid", "--name-field", "label",
                                 "--area-field", "Area", "--out", str(out)])
    assert r.exit_code == 2 and "mining.geojson" in r.output and "--area-field 'Area'" in r.output
    assert not out.exists()
    with pytest.raises(MinewatchError, match="--zone-name-field"):
        read_zones(files[0], "zid", "nom")


# --------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="session")
def upstream(shared_data: Path) -> Path:
    return shared_data / "upstream"


@pytest.fixture(scope="session")
def real_run(upstream: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``minewatch impacts`` on all published layers × the territories, compared with the upstream CSV."""
    out = tmp_path_factory.mktemp("impacts_real")
    layers = sorted(str(p) for p in (upstream / "detections").glob("mining_*_simplified.geojson"))
    r = CliRunner().invoke(cli, ["impacts", *layers, "--zones", str(upstream / "boundaries" / "indigenous_territories.geojson"),
                                 "--id-field", "id", "--name-field", "name_field", "--area-field", "Mined area (ha)",
                                 "--reference", str(upstream / "reference" / "mining_by_indigenous_territories_2018-2025Q3.csv"),
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="session")
def real_layer(upstream: Path) -> gpd.GeoDataFrame:
    return read_layers(sorted((upstream / "detections").glob("mining_*_simplified.geojson")), area_field="Mined area (ha)")


CROSS_BORDER = {"BR50901_0", "VE50065_0", "VE50027_0", "GY13055_0"}


def test_reproduces_the_published_territory_table(real_run: Path) -> None:
    a = pd.read_csv(real_run / "agreement.csv", dtype={"period": str})
    assert len(a) == 837  # territory-periods in either table
    assert a["within"].mean() >= 0.97  # measured: 814 / 837 = 97.25 %
    assert a["within_strict"].mean() >= 0.97
    assert ((a["ours_ha"] > 0) == (a["ref_ha"] > 0)).all()  # the same territory-periods have mining
    # the 8 worst all lie on international borders (see docs/impacts.md)
    assert set(a.head(8)["zone_id"]) <= CROSS_BORDER
    ok = a[~a["zone_id"].isin(CROSS_BORDER)]
    assert ok["within"].mean() >= 0.985  # measured: 794 / 803 = 98.9 %


def test_cross_border_overlap_explains_the_yanomami_cases(real_layer: gpd.GeoDataFrame, upstream: Path) -> None:
    """Upstream went through each territory's own country's admin units, so mining in the strip where
    the Brazilian (BR50901_0) and Venezuelan (VE50065_0) Yanomami polygons overlap was counted in
    neither. Removing overlaps with other countries' territories reproduces every Yanomami case."""
    zones = read_zones(upstream / "boundaries" / "indigenous_territories.geojson", "id", "name_field")
    g = zones.geometry.to_numpy()
    i, j = shapely.STRtree(g).query(g, predicate="intersects")
    cc = zones["zone_id"].str[:2].to_numpy()
    m = (i != j) & (cc[i] != cc[j])
    overlap_br_ve = shapely.intersection(g[zones.zone_id == "BR50901_0"][0], g[zones.zone_id == "VE50065_0"][0])
    assert area_ha(np.array([overlap_br_ve]))[0] > 70_000
    clipped = zones.copy()
    for k in np.unique(i[m]):
        clipped.loc[k, "geometry"] = shapely.difference(g[k], shapely.union_all(g[j[m][i[m] == k]]))
    ref = read_reference(upstream / "reference" / "mining_by_indigenous_territories_2018-2025Q3.csv")
    before = compare(zonal_stats(real_layer, zones, True).table, ref)
    after = compare(zonal_stats(real_layer, clipped, True).table, ref)
    yan = ["BR50901_0", "VE50065_0"]
    assert not before[before.zone_id.isin(yan)]["within"].all()
    assert after[after.zone_id.isin(yan)]["within"].all()
    assert after["within"].mean() >= 0.984  # measured 98.45 %


def test_territory_totals_match_the_territories_file(real_run: Path, upstream: Path) -> None:
    terr = gpd.read_file(upstream / "boundaries" / "indigenous_territories.geojson")
    prop = terr.set_index("id")["mining_affected_area_ha"]
    # the upstream files agree with each other: CSV sums = property (rounded to 0.01 ha)
    ref = read_reference(upstream / "reference" / "mining_by_indigenous_territories_2018-2025Q3.csv")
    ref_tot = ref.groupby("zone_id")["ref_ha"].sum().reindex(prop.index)
    assert ((ref_tot - prop).abs() <= 0.005 + 1e-9).all()
    ours = pd.read_csv(real_run / "zones.csv").set_index("zone_id")["total_ha"].reindex(prop.index)
    diff = (ours - prop).abs()
    within = diff <= np.maximum(0.01 * prop, 0.005)
    assert within.mean() >= 0.96  # measured: 228 / 237 = 96.2 %
    assert ours.sum() == pytest.approx(prop.sum(), rel=2e-3)  # 84,394 vs 84,278 ha


def test_summary_reports_the_agreement(real_run: Path) -> None:
    s = json.loads((real_run / "summary.json").read_text())
    assert s["reference"]["within"] == round(s["reference"]["within_share"] * s["reference"]["pairs"])
    assert s["zones"] == 237
