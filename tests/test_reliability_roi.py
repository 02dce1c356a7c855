"""Bad and awkward ROIs: each refused with one line naming the file, or (the awkward ones) handled."""

from __future__ import annotations

import json
import math

import geopandas as gpd
import pytest
import shapely
from shapely.geometry import box

from minewatch.errors import MinewatchError
from minewatch.grid import tiles_for_geometry, utm_zone
from minewatch.roi import estimate_tile_count, plan_tiles, read_roi, roi_from_bbox


def _poly(x0: float, y0: float, x1: float, y1: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def _fc(*geoms: dict, **extra: object) -> dict:
    return {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": g} for g in geoms], **extra}


BAD = {
    "empty.geojson": ("", "file is empty"),
    "invalid.geojson": ('{"type": "FeatureCollection", "features": [', "not valid JSON"),
    "list.geojson": ([1, 2], "not a GeoJSON object"),
    "notype.geojson": ({"features": []}, "no 'type' member"),
    "nofeatures.geojson": (_fc(), "contains no geometry"),
    "nullgeom.geojson": ({"type": "Feature", "geometry": None, "properties": {}}, "contains no geometry"),
    "point.geojson": (_fc(_poly(-55, -5, -54.9, -4.9), {"type": "Point", "coordinates": [-55, -5]}), "feature 1 is a Point, not a Polygon"),
    "line.geojson": ({"type": "LineString", "coordinates": [[-55, -5], [-54, -4]]}, "LineString, not a Polygon"),
    "utm_no_crs.geojson": (_fc(_poly(600000, 9400000, 610000, 9410000)), "coordinates out of lon/lat range"),
    "utm_crs.geojson": (
        _fc(_poly(600000, 9400000, 610000, 9410000), crs={"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32721"}}),
        "declares projected CRS 'urn:ogc:def:crs:EPSG::32721' (WGS 84 / UTM zone 21S)",
    ),
    "webmerc_crs.geojson": (_fc(_poly(-55, -5, -54.9, -4.9), crs={"type": "name", "properties": {"name": "EPSG:3857"}}), "declares projected CRS"),
    "junk_crs.geojson": (_fc(_poly(-55, -5, -54.9, -4.9), crs={"type": "name", "properties": {"name": "EPSG:999999"}}), "unknown CRS"),
    "lat_out.geojson": (_fc(_poly(-55, 95, -54, 96)), "out of lon/lat range"),
    "nan.geojson": ('{"type": "Polygon", "coordinates": [[[NaN, 0], [1, 0], [1, 1], [NaN, 0]]]}', "non-finite"),
    "degenerate.geojson": (_fc({"type": "Polygon", "coordinates": [[[-55, -5], [-54, -4], [-55, -5]]]}), "zero area"),
    "flat.geojson": (_fc({"type": "Polygon", "coordinates": [[[-55, -5], [-54, -4], [-53, -3], [-55, -5]]]}), "zero area"),
    "polar.geojson": (_fc(_poly(10, 84.5, 11, 85)), "beyond the ±84°"),
    "badcoords.geojson": (_fc({"type": "Polygon", "coordinates": [[["a", "b"]]]}), "feature 0 has malformed coordinates"),
    "shortring.geojson": (_fc({"type": "Polygon", "coordinates": [[[-55, -5], [-54, -4]]]}), "feature 0 is not a valid polygon"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_roi_is_one_line_naming_the_file(tmp_path, name):
    content, expected = BAD[name]
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(MinewatchError) as e:
        read_roi(path)
    line = e.value.oneline()
    assert line.startswith(f"{path}: ") and expected in line and "\n" not in line


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(MinewatchError, match="ROI file not found"):
        read_roi(tmp_path / "nope.geojson")
    with pytest.raises(MinewatchError, match="is a folder"):
        read_roi(tmp_path)


def test_shapefile_without_crs_is_refused_and_gpkg_is_reprojected(tmp_path):
    g = box(600000, 9400000, 610000, 9410000)
    with pytest.warns(UserWarning, match="crs"):
        gpd.GeoDataFrame(geometry=[g], crs=None).to_file(tmp_path / "nocrs.shp")
    with pytest.raises(MinewatchError, match=r"nocrs.shp: has no CRS"):
        read_roi(tmp_path / "nocrs.shp")
    gpd.GeoDataFrame(geometry=[g], crs=32721).to_file(tmp_path / "utm.gpkg")
    roi = read_roi(tmp_path / "utm.gpkg")
    lon, lat = roi.geometry.centroid.x, roi.geometry.centroid.y
    assert -57 < lon < -56 and -5.5 < lat < -5.2  # zone 21S: central meridian -57, 9.4e6 N ≈ 5.4°S
    gpd.GeoDataFrame(geometry=[shapely.Point(-55, -5)], crs=4326).to_file(tmp_path / "pts.gpkg")
    with pytest.raises(MinewatchError, match="Point geometries, not only polygons"):
        read_roi(tmp_path / "pts.gpkg")
    (tmp_path / "garbage.gpkg").write_bytes(b"not sqlite")
    with pytest.raises(MinewatchError, match="garbage.gpkg: not a readable vector file"):
        read_roi(tmp_path / "garbage.gpkg")


def test_geographic_legacy_crs_is_accepted(tmp_path):
    for name in ("urn:ogc:def:crs:OGC:1.3:CRS84", "EPSG:4326", "EPSG:4674"):
        p = tmp_path / "r.geojson"
        p.write_text(json.dumps(_fc(_poly(-55, -5, -54.9, -4.9), crs={"type": "name", "properties": {"name": name}})))
        b = read_roi(p).geometry.bounds
        assert all(abs(u - v) < 1e-5 for u, v in zip(b, (-55, -5, -54.9, -4.9))), name


def test_roi_across_utm_zones_is_split_and_tiled_in_both(tmp_path):
    p = tmp_path / "r.geojson"
    p.write_text(json.dumps(_fc(_poly(-54.2, -5.0, -53.8, -4.9))))  # the 21/22 zone boundary is at -54
    roi = read_roi(p)
    zones = roi.zones()
    assert sorted(zones) == [21, 22]
    assert math.isclose(sum(z.area for z in zones.values()), roi.geometry.area, rel_tol=1e-9)
    tiles = roi.tiles()
    assert {t.zone for t in tiles} == {21, 22} and all(t.epsg in (32721, 32722) for t in tiles)


ANTIMERIDIAN = {
    "beyond180": _poly(179.8, -17.2, 180.3, -16.9),  # Fiji, written with longitudes beyond 180
    "jump": {"type": "Polygon", "coordinates": [[[179.8, -17.2], [-179.7, -17.2], [-179.7, -16.9], [179.8, -16.9], [179.8, -17.2]]]},
    "split": {
        "type": "MultiPolygon",
        "coordinates": [_poly(179.8, -17.2, 180, -16.9)["coordinates"], _poly(-180, -17.2, -179.7, -16.9)["coordinates"]],
    },
    "beyond-180": _poly(-180.2, -17.2, -179.7, -16.9),
}


@pytest.mark.parametrize("form", sorted(ANTIMERIDIAN))
def test_antimeridian_roi_in_every_form_gives_the_same_tiles(tmp_path, form):
    p = tmp_path / f"{form}.geojson"
    p.write_text(json.dumps(ANTIMERIDIAN[form]))
    roi = read_roi(p)
    minx, _, maxx, _ = roi.geometry.bounds
    assert -180 <= minx and maxx <= 180 and roi.geometry.geom_type == "MultiPolygon"
    assert sorted(roi.zones()) == [1, 60]
    reference = read_roi_text(tmp_path, ANTIMERIDIAN["split"]).tiles()
    if form != "beyond-180":
        assert roi.tiles() == reference
        assert math.isclose(roi.geometry.area, 0.5 * 0.3, rel_tol=1e-9)
    # Every tile's zone matches the part of the ROI it was planned for.
    for t in roi.tiles():
        assert t.zone in (1, 60)
        assert t.geometry_wgs84().intersects(shapely.affinity.translate(roi.zones()[t.zone], 360 if t.zone == 1 else 0, 0)) or t.geometry_wgs84().intersects(roi.zones()[t.zone])


def read_roi_text(tmp_path, obj):
    p = tmp_path / "ref.geojson"
    p.write_text(json.dumps(obj))
    return read_roi(p)


def test_bbox_option_across_antimeridian():
    roi = roi_from_bbox("179.8,-17.2,-179.7,-16.9")
    assert sorted(roi.zones()) == [1, 60]
    with pytest.raises(MinewatchError, match=r"--bbox: minlat -16.9 must be below maxlat -17.2"):
        roi_from_bbox("179.8,-16.9,-179.7,-17.2")
    with pytest.raises(MinewatchError, match=r"--bbox: expected minlon,minlat,maxlon,maxlat"):
        roi_from_bbox("1,2,3")


def test_tile_budget_refuses_with_the_number_needed():
    roi = box(-56.0, -6.0, -55.0, -5.0)  # about 1° x 1°: ~120 tiles of 10 km
    need = len(tiles_for_geometry(roi))
    assert plan_tiles(roi, max_tiles=need) == tiles_for_geometry(roi)
    with pytest.raises(MinewatchError) as e:
        plan_tiles(roi, max_tiles=need - 1, where="aoi.geojson")
    assert e.value.oneline() == (
        f"aoi.geojson: ROI needs {need:,} tiles of 10.08 km, more than --max-tiles {need - 1}; split the ROI or raise --max-tiles"
    )
    assert estimate_tile_count(roi) <= need


def test_tile_budget_on_a_continent_answers_fast_with_a_lower_bound():
    import time

    t0 = time.monotonic()
    with pytest.raises(MinewatchError, match=r"needs at least [\d,]+ tiles .* \(from its area\), more than --max-tiles 1000"):
        plan_tiles(box(-180, -80, 180, 80), max_tiles=1000)
    assert time.monotonic() - t0 < 5


def test_roi_touching_lon_180_is_tiled():
    # Regression: a zone range ending at lon 180 used to wrap to zone 1 and plan no tile at all.
    tiles = tiles_for_geometry(box(179.9, -10, 180, -9.9))
    assert tiles and {t.zone for t in tiles} == {60} and utm_zone(179.95) == 60
