"""Issue 12 §3: ``impacts`` (and the map's zone table) count every mined hectare once.

Before: polygons of one period were summed, so the same layer passed twice doubled every area and
overlapping polygons inflated it; rows sharing a zone id were merged silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minewatch.cli.main import cli
from minewatch.errors import MinewatchError
from minewatch.impacts.zonal import read_zones, zonal_stats

EA = "EPSG:6933"


@pytest.fixture(scope="module")
def real(shared_data, tmp_path_factory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("impacts real")
    src = gpd.read_file(shared_data / "upstream" / "detections" / "mining_202300_simplified.geojson")
    sub = src[src.intersects(shapely.box(-58.0, -8.0, -54.5, -4.0))].head(400).reset_index(drop=True)
    zones = gpd.read_file(shared_data / "upstream" / "boundaries" / "indigenous_territories.geojson")
    zones = zones[zones.intersects(shapely.union_all(sub.geometry.to_numpy()).envelope)].reset_index(drop=True)
    sub.to_file(d / "mining_202300 a.geojson", driver="GeoJSON")
    sub.to_file(d / "mining_202300 copy.geojson", driver="GeoJSON")
    zones.to_file(d / "zones.geojson", driver="GeoJSON")
    return {"dir": d, "idf": "id_field" if "id_field" in zones.columns else "id"}


def _impacts(*args: str):
    return CliRunner().invoke(cli, ["impacts", *args])


@pytest.mark.parametrize("area_field", [None, "Mined area (ha)"])
def test_same_layer_twice_counts_once(real, monkeypatch, area_field):
    monkeypatch.chdir(real["dir"])
    extra = ["--area-field", area_field] if area_field else []
    a = _impacts("mining_202300 a.geojson", "--zones", "zones.geojson", "--id-field", real["idf"], "--out", "once", *extra)
    b = _impacts("mining_202300 a.geojson", "mining_202300 copy.geojson", "--zones", "zones.geojson", "--id-field", real["idf"], "--out", "twice", *extra)
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    ta, tb = pd.read_csv("once/impacts.csv"), pd.read_csv("twice/impacts.csv")
    col = "apportioned_ha" if area_field else "intersect_ha"
    assert ta[col].sum() > 0
    assert tb[col].sum() == pytest.approx(ta[col].sum(), rel=1e-9)
    assert tb["n_polygons"].sum() == ta["n_polygons"].sum()
    assert "overlapped" in b.output and "overlapped" not in a.output
    s = json.loads(Path("twice/summary.json").read_text())
    assert s["overlaps"]["2023"]["polygons"] >= 100


def test_map_zone_table_counts_a_repeated_layer_once(real):
    from minewatch.webmap.layers import read_layers, read_zones as map_zones, zone_period_area

    d = real["dir"]
    zones = map_zones(d / "zones.geojson", real["idf"])
    once = zone_period_area(zones, read_layers([d / "mining_202300 a.geojson"]), ["2023"])
    twice = zone_period_area(zones, read_layers([d / "mining_202300 a.geojson", d / "mining_202300 copy.geojson"]), ["2023"])
    assert once.to_numpy().sum() > 0
    np.testing.assert_allclose(twice.to_numpy(), once.to_numpy(), rtol=1e-9)


def test_map_period_totals_count_a_repeated_layer_once(real):
    from minewatch.webmap.layers import new_mining, period_stats, read_layers

    d = real["dir"]
    one = read_layers([d / "mining_202300 a.geojson"])
    two = read_layers([d / "mining_202300 a.geojson", d / "mining_202300 copy.geojson"])
    a, b = period_stats(one, new_mining(one)), period_stats(two, new_mining(two))
    assert a[0].area_ha > 0 and b[0].area_ha == pytest.approx(a[0].area_ha, rel=1e-9)
    assert b[0].cumulative_ha == pytest.approx(a[0].cumulative_ha, rel=1e-9)


def _layer(geoms, period="2024") -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"period": [period] * len(geoms), "stated_ha": np.nan}, geometry=list(geoms), crs=4326)


def _zones(geoms) -> gpd.GeoDataFrame:
    z = gpd.GeoDataFrame({"zone_id": [str(i) for i in range(len(geoms))], "zone_name": "z"}, geometry=list(geoms), crs=4326)
    z["zone_area_ha"] = z.to_crs(EA).area / 1e4
    return z


def test_self_overlapping_multipolygon_counts_its_union():
    a, b = shapely.box(-55.0, -5.0, -54.99, -4.99), shapely.box(-54.995, -4.995, -54.985, -4.985)
    mp = shapely.MultiPolygon([a, b])  # invalid: its parts overlap
    zone = _zones([shapely.box(-56, -6, -54, -4)])
    got = zonal_stats(_layer([mp]), zone, apportion=False).table["intersect_ha"].sum()
    want = gpd.GeoSeries([shapely.union(a, b)], crs=4326).to_crs(EA).area.sum() / 1e4
    assert got == pytest.approx(want, rel=1e-9)


boxes = st.lists(
    st.tuples(st.floats(0, 0.09), st.floats(0, 0.09), st.floats(0.002, 0.05), st.floats(0.002, 0.05)), min_size=1, max_size=12
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(boxes=boxes, dup=st.booleans(), cut=st.floats(0.02, 0.12))
def test_impacts_area_is_the_area_of_the_union(boxes, dup, cut):
    """Property: random overlapping polygons of one period (optionally every one twice); the mined
    area in each zone equals the equal-area area of (union of the polygons) ∩ zone."""
    x0, y0 = -55.0, -5.0
    geoms = [shapely.box(x0 + x, y0 + y, x0 + x + w, y0 + y + h) for x, y, w, h in boxes]
    if dup:
        geoms = geoms + geoms[::-1]
    zones = [shapely.box(x0 - 1, y0 - 1, x0 + 1, y0 + 1), shapely.box(x0, y0, x0 + cut, y0 + cut)]
    res = zonal_stats(_layer(geoms), _zones(zones), apportion=False).table
    union = shapely.union_all(geoms)
    for k, z in enumerate(zones):
        want = gpd.GeoSeries([shapely.intersection(union, z)], crs=4326).to_crs(EA).area.sum() / 1e4
        got = res.loc[res["zone_id"] == str(k), "intersect_ha"].sum()
        assert got == pytest.approx(want, rel=1e-7, abs=1e-6)


def _zone_file(tmp_path: Path, ids, names=None, same_geom=False) -> Path:
    geoms = [shapely.box(-55 + (0 if same_geom else i), -5, -54.5 + (0 if same_geom else i), -4.5) for i in range(len(ids))]
    props = {"zid": ids}
    if names is not None:
        props["zname"] = names
    p = tmp_path / "zones file.geojson"
    gpd.GeoDataFrame(props, geometry=geoms, crs=4326).to_file(p, driver="GeoJSON")
    return p


def test_duplicate_ids_with_different_names_refused(tmp_path):
    p = _zone_file(tmp_path, [7, 7, 8], ["Alto Rio", "Baixo Rio", "Outro"])
    with pytest.raises(MinewatchError, match="different names") as e:
        read_zones(p, "zid", "zname")
    assert "zones file.geojson" in e.value.oneline()


def test_duplicate_ids_for_different_geometries_refused_without_names(tmp_path):
    p = _zone_file(tmp_path, [1.0, 1.5, 1.0])
    with pytest.raises(MinewatchError, match="different geometries"):
        read_zones(p, "zid")


def test_numeric_ids_one_and_one_point_zero_do_not_collide_silently(tmp_path):
    """A float id column (1.0, 2.0) reads as the integers it holds; 1 and 1.0 are the same id and a
    second zone with it is refused, not merged."""
    p = _zone_file(tmp_path, [1.0, 2.0])
    z = read_zones(p, "zid")
    assert list(z["zone_id"]) == ["1", "2"]
    p2 = tmp_path / "mixed.geojson"
    p2.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"zid": 1}, "geometry": shapely.geometry.mapping(shapely.box(-55, -5, -54.5, -4.5))},
        {"type": "Feature", "properties": {"zid": 1.0}, "geometry": shapely.geometry.mapping(shapely.box(-54, -5, -53.5, -4.5))},
    ]}))
    with pytest.raises(MinewatchError, match="different geometries"):
        read_zones(p2, "zid")


def test_rows_of_one_named_zone_are_merged_and_reported(tmp_path, monkeypatch):
    p = _zone_file(tmp_path, ["A", "A", "B"], ["Terra A", "Terra A", "Terra B"])
    z = read_zones(p, "zid", "zname")
    assert sorted(z["zone_id"]) == ["A", "B"] and z.attrs["merged_rows"] == {"A": 2}
