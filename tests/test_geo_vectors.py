"""Issue 12 §3: one vector reader places every layer/zones/airstrips file or refuses it.

Real data: a published Amazon Mining Watch layer (../shared/data/upstream/detections) reprojected to
UTM metres with its ``crs`` member stripped — the way a GIS export without CRS looks. Before the
one reader, ``impacts`` said "0 of N zones with mining", exit 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from click.testing import CliRunner

from minewatch.cli.main import cli
from minewatch.errors import MinewatchError
from minewatch.vectors import read_vector

UTM = 32721  # zone 21 south: lon -60 .. -54


def _strip_crs(gdf: gpd.GeoDataFrame, path: Path) -> Path:
    doc = json.loads(gdf.to_json(drop_id=True))
    doc.pop("crs", None)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def published(shared_data, tmp_path_factory) -> dict[str, Path]:
    """A real published layer clipped to zone 21 south, in WGS84 and in metres without a CRS."""
    d = tmp_path_factory.mktemp("published layer")  # a space in the folder name
    src = gpd.read_file(shared_data / "upstream" / "detections" / "mining_202400_simplified.geojson")
    zone = shapely.box(-58.0, -8.0, -54.5, -4.0)
    sub = src[src.intersects(zone)].head(300).reset_index(drop=True)
    assert len(sub) >= 100
    zones = gpd.read_file(shared_data / "upstream" / "boundaries" / "indigenous_territories.geojson")
    zones = zones[zones.intersects(shapely.union_all(sub.geometry.to_numpy()).envelope)].reset_index(drop=True)
    assert len(zones) >= 2
    idf = next(c for c in ("id", "ID", "id_field") if c in zones.columns)
    wgs = d / "mining_202400 wgs84.geojson"
    sub.to_file(wgs, driver="GeoJSON")
    metres = _strip_crs(sub.to_crs(UTM), d / "mining_202400 metres.geojson")
    zwgs = d / "zones wgs84.geojson"
    zones.to_file(zwgs, driver="GeoJSON")
    zmetres = _strip_crs(zones.to_crs(UTM), d / "zones metres.geojson")
    air = gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=shapely.centroid(sub.geometry.to_numpy()[:2]), crs=4326)
    airm = _strip_crs(air.to_crs(UTM), d / "airstrips metres.geojson")
    patches = gpd.GeoDataFrame({"score": [0.9] * len(sub), "period": ["2024"] * len(sub)}, geometry=sub.geometry.to_numpy(), crs=4326)
    _strip_crs(patches.to_crs(UTM), d / "patches metres.geojson")
    return {"dir": d, "wgs": wgs, "metres": metres, "zwgs": zwgs, "zmetres": zmetres, "idf": idf, "air": airm}


def test_reader_refuses_metres_without_crs_naming_the_file(published):
    with pytest.raises(MinewatchError) as e:
        read_vector(published["metres"])
    msg = e.value.oneline()
    assert "mining_202400 metres.geojson" in msg and "--crs" in msg and "\n" not in msg


def test_reader_with_crs_places_the_layer_where_it_was(published):
    a = read_vector(published["wgs"])
    b = read_vector(published["metres"], crs="EPSG:32721")
    assert len(a) == len(b)
    # the round trip through metres moves a vertex by well under a centimetre
    assert shapely.hausdorff_distance(shapely.union_all(a.to_crs(UTM).geometry.to_numpy()), shapely.union_all(b.to_crs(UTM).geometry.to_numpy())) < 0.01


def test_a_wrong_crs_for_lonlat_is_not_applied(published):
    """--crs is for files that do not fit lon/lat: a WGS84 file without a crs member stays WGS84."""
    a = read_vector(published["wgs"], crs="EPSG:32721")
    assert a.total_bounds[0] > -60 and a.total_bounds[2] < -54


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


def _cases(p: dict[str, Path]) -> dict[str, list[str]]:
    idf = p["idf"]
    return {
        "impacts layer": ["impacts", "mining_202400 metres.geojson", "--zones", "zones wgs84.geojson", "--id-field", idf, "--out", "imp out"],
        "impacts zones": ["impacts", "mining_202400 wgs84.geojson", "--zones", "zones metres.geojson", "--id-field", idf, "--out", "imp out"],
        "airstrips": ["airstrips", "airstrips metres.geojson", "--mining", "mining_202400 wgs84.geojson", "--out", "air out"],
        "timeline": ["timeline", "mining_202400 metres.geojson", "--out", "tl out"],
        "map": ["map", "mining_202400 metres.geojson", "--out", "map out.html"],
        "map zones": ["map", "mining_202400 wgs84.geojson", "--zones", "zones metres.geojson", "--out", "map out.html"],
        "report": ["report", "--layer", "mining_202400 metres.geojson", "--out", "report out.html"],
        "review": ["review", "mining_202400 metres.geojson", "--out", "review out.html"],
        "postprocess": ["postprocess", "patches metres.geojson", "--out", "pp out"],
    }


@pytest.mark.parametrize("case", ["impacts layer", "impacts zones", "airstrips", "timeline", "map", "map zones", "report", "review", "postprocess"])
def test_every_command_refuses_a_projected_file_without_crs(published, case, monkeypatch):
    monkeypatch.chdir(published["dir"])
    args = _cases(published)[case]
    r = _run(*args)
    assert r.exit_code == 2, r.output
    assert "metres.geojson" in r.output and "--crs" in r.output
    assert not any((published["dir"] / o).exists() for o in ("imp out", "air out", "tl out", "map out.html", "report out.html", "review out.html", "pp out"))


def test_impacts_with_crs_equals_impacts_in_wgs84(published, monkeypatch):
    monkeypatch.chdir(published["dir"])
    idf = published["idf"]
    a = _run("impacts", "mining_202400 wgs84.geojson", "--zones", "zones wgs84.geojson", "--id-field", idf, "--out", "ref out")
    b = _run("impacts", "mining_202400 metres.geojson", "--zones", "zones metres.geojson", "--id-field", idf, "--out", "crs out", "--crs", "EPSG:32721")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    sa = json.loads(Path("ref out/summary.json").read_text())
    sb = json.loads(Path("crs out/summary.json").read_text())
    assert sa["zones_with_mining"] >= 1 and sa["zones_with_mining"] == sb["zones_with_mining"]
    import pandas as pd

    ta, tb = pd.read_csv("ref out/impacts.csv"), pd.read_csv("crs out/impacts.csv")
    assert ta["intersect_ha"].sum() == pytest.approx(tb["intersect_ha"].sum(), rel=1e-6)


def test_csv_airstrips_out_of_range_refused(tmp_path):
    p = tmp_path / "air.csv"
    p.write_text("name,latitude,longitude\na,-5.0,-55.0\nb,9400000,612000\n")
    with pytest.raises(MinewatchError, match="out-of-range"):
        read_vector(p, csv_points=True)
