"""Web map: layer reading, new/cumulative mining, zone areas, the self-contained HTML, and the page
itself in headless Chromium (renders, no console errors, period control switches layers)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner

from minewatch.errors import MinewatchError
from minewatch.webmap.browser import Browser, find_chromium
from minewatch.postprocess.io import normalize_period
from minewatch.webmap.layers import (
    EQUAL_AREA_CRS,
    area_ha,
    new_mining,
    period_stats,
    read_layer,
    read_layers,
    read_zones,
    zone_period_area,
)
from minewatch.webmap.map import build_map_data, maplibre_assets, render_map_html, write_map

UTM = 32721  # UTM 21S: the Tapajós region, where the synthetic layers are placed


def squares(specs: list[tuple[float, float, float]], crs: int = UTM) -> list[shapely.Polygon]:
    """Squares (x, y, side in m) in UTM metres."""
    return [shapely.box(x, y, x + s, y + s) for x, y, s in specs]


def synthetic_layers(tmp: Path) -> list[Path]:
    """Three per-period layers with known overlaps, in minewatch's own format (GeoParquet)."""
    x0, y0 = 600_000, 9_300_000
    periods = {
        "2022": [(x0, y0, 480), (x0 + 2000, y0, 960)],
        "2023": [(x0 + 240, y0, 480), (x0 + 5000, y0 + 5000, 480)],  # half overlaps the first 2022 square
        "2024": [(x0, y0, 720), (x0 + 9000, y0, 480)],  # covers both earlier squares partly
    }
    out = []
    for p, specs in periods.items():
        g = gpd.GeoDataFrame({"period": p, "score_max": np.linspace(0.6, 0.9, len(specs))}, geometry=squares(specs), crs=UTM)
        g["area_ha"] = area_ha(g.to_crs(4326).geometry)
        path = tmp / f"mining_{p}.parquet"
        g.to_crs(4326).to_parquet(path)
        out.append(path)
    return out


def test_normalize_period_handles_upstream_codes() -> None:
    assert normalize_period(202400) == "2024"
    assert normalize_period("202502") == "2025Q2"
    assert normalize_period(2024) == "2024"
    assert normalize_period("2024q3") == "2024Q3"
    assert normalize_period("2024Q3") == "2024Q3"
    assert sorted(map(normalize_period, ["202503", "202400", "201800"])) == ["2018", "2024", "2025Q3"]


def test_read_layer_published_and_minewatch_formats(tmp_path: Path, shared_data: Path) -> None:
    pub = read_layer(shared_data / "upstream/detections/mining_202502_simplified.geojson")
    assert set(pub["period"]) == {"2025Q2"}
    assert pub.crs.to_epsg() == 4326
    raw = json.loads((shared_data / "upstream/detections/mining_202502_simplified.geojson").read_text())
    assert len(pub) == len(raw["features"])
    assert pub["area_ha"].sum() == pytest.approx(sum(f["properties"]["Mined area (ha)"] for f in raw["features"]))
    # published "Mined area" is smaller than the outline: both are kept
    assert (pub["footprint_ha"] >= pub["area_ha"] * 0.95).mean() > 0.95
    assert pub["score"].isna().all()

    own = read_layers(synthetic_layers(tmp_path))
    assert list(dict.fromkeys(own["period"])) == ["2022", "2023", "2024"]
    assert np.allclose(own["area_ha"], own["footprint_ha"])
    assert own["score"].notna().all()


def test_read_layer_errors_are_one_line(tmp_path: Path) -> None:
    pts = gpd.GeoDataFrame({"period": ["2024"]}, geometry=[shapely.Point(0, 0)], crs=4326)
    pts.to_file(tmp_path / "points.geojson")
    with pytest.raises(MinewatchError, match="expected polygons"):
        read_layer(tmp_path / "points.geojson")
    nop = gpd.GeoDataFrame({"x": [1]}, geometry=[shapely.box(0, 0, 0.01, 0.01)], crs=4326)
    nop.to_file(tmp_path / "noperiod.geojson")
    with pytest.raises(MinewatchError, match="no period"):
        read_layer(tmp_path / "noperiod.geojson")
    with pytest.raises(MinewatchError, match="not found"):
        read_layer(tmp_path / "missing.geojson")
    (tmp_path / "bad.geojson").write_text("{not json")
    with pytest.raises(MinewatchError) as e:
        read_layer(tmp_path / "bad.geojson")
    assert "\n" not in str(e.value) and "bad.geojson" in str(e.value)


def test_new_mining_pieces_are_disjoint_and_sum_to_the_union(tmp_path: Path) -> None:
    layer = read_layers(synthetic_layers(tmp_path))
    new = new_mining(layer)
    ea = new.to_crs(EQUAL_AREA_CRS).geometry.to_numpy()
    # disjoint: total area of pieces equals the area of their union
    assert shapely.area(shapely.union_all(ea)) == pytest.approx(shapely.area(ea).sum(), rel=1e-6)
    stats = period_stats(layer, new)
    lea = layer.to_crs(EQUAL_AREA_CRS)
    for s in stats:
        upto = lea[lea["period"] <= s.period].geometry.to_numpy()
        assert s.cumulative_ha == pytest.approx(shapely.area(shapely.union_all(upto)) / 1e4, rel=1e-6)
    # 2023's first square overlaps half of 2022's: only half of it is new; the far square is all new
    sq = 480 * 480 / 1e4
    got = new[new["period"] == "2023"].sort_values("area_ha")["area_ha"].to_numpy()
    assert got == pytest.approx([sq / 2, sq], rel=0.02)
    # whole-new flags point at the source polygon
    whole = new[new["whole"]]
    assert set(whole["src"]) >= {0, 1, 3}  # both 2022 squares and 2023's far square


def test_zone_areas_match_the_published_reference(shared_data: Path) -> None:
    """Mined area per territory for 2024 equals the upstream's own zonal table (real data)."""
    layer = read_layer(shared_data / "upstream/detections/mining_202400_simplified.geojson")
    zones = read_zones(shared_data / "upstream/boundaries/indigenous_territories.geojson")
    ours = zone_period_area(zones, layer, ["2024"])["2024"].groupby(level=0).sum()
    ref = pd.read_csv(shared_data / "upstream/reference/mining_by_indigenous_territories_2018-2025Q3.csv")
    ref = ref[ref["admin_year"] == 202400].groupby("id")["intersected_area_ha"].sum()
    top = ref.sort_values(ascending=False).head(20)
    assert np.allclose(ours.reindex(top.index).to_numpy(), top.to_numpy(), rtol=0.01)
    both = pd.concat([ref, ours], axis=1).fillna(0.0)
    assert both.iloc[:, 1].sum() == pytest.approx(both.iloc[:, 0].sum(), rel=0.01)


def test_read_zones_field_options(shared_data: Path) -> None:
    path = shared_data / "upstream/boundaries/indigenous_territories.geojson"
    z = read_zones(path)
    assert z["zone_id"].str.len().min() > 0 and z["zone_name"].notna().all()
    assert "Yanomami" in set(z["zone_name"])
    z2 = read_zones(path, id_field="id_field", name_field="country")
    assert set(z2["zone_name"]) >= {"Brazil", "Peru"}
    with pytest.raises(MinewatchError, match="--zone-name-field 'nope'"):
        read_zones(path, name_field="nope")


def _payload(page: str) -> dict:
    m = re.search(r'<script id="mw-data" type="application/json">(.*?)</script>', page, re.S)
    assert m
    return json.loads(m.group(1))


def test_map_html_is_self_contained(tmp_path: Path) -> None:
    layers = synthetic_layers(tmp_path)
    zones = gpd.GeoDataFrame({"id": ["Z1"], "name": ["Zone one"]}, geometry=[shapely.box(599_000, 9_299_000, 601_000, 9_301_000)], crs=UTM)
    zones.to_crs(4326).to_file(tmp_path / "zones.geojson")
    md = build_map_data(layers, tmp_path / "zones.geojson")
    page = render_map_html(md, "Test map")
    js, _, version = maplibre_assets()
    assert js[:2000] in page and version.count(".") == 2
    # nothing is loaded from elsewhere: no external script/link/img; the only URLs are basemap tiles and credits
    assert not re.search(r'<(script|link|img)[^>]+(src|href)=["\']https?:', page)
    data = _payload(page)
    assert data["periods"] == ["2022", "2023", "2024"]
    assert len(data["detections"]["features"]) == len(md.layer) == 6
    # every coordinate has at most 6 decimals
    coords = re.findall(r"-?\d+\.(\d+)", json.dumps(data["detections"]["features"][0]["geometry"]))
    assert coords and max(len(c) for c in coords) <= 6
    # zone popup numbers are the computed areas
    assert data["zoneStats"][0]["name"] == "Zone one"
    assert data["zoneStats"][0]["c"][-1] == pytest.approx(md.zone_stats.cumulative.iloc[0, -1], abs=0.05)
    # cumulative at the last period = union of everything
    assert data["stats"][-1]["cum_ha"] == pytest.approx(md.stats[-1].cumulative_ha)


def test_map_cli_writes_file_and_zone_csv(tmp_path: Path) -> None:
    from minewatch.cli.main import cli

    layers = synthetic_layers(tmp_path)
    r = CliRunner().invoke(cli, ["map", *map(str, layers), "--out", str(tmp_path / "m.html")])
    assert r.exit_code == 0, r.output
    assert "3 periods" in r.output and (tmp_path / "m.html").stat().st_size > 500_000
    r = CliRunner().invoke(cli, ["map", str(tmp_path / "nope.geojson"), "--out", str(tmp_path / "x.html")])
    assert r.exit_code == 2 and "nope.geojson: file not found" in r.output
    assert not (tmp_path / "x.html").exists()


# --- in the browser -----------------------------------------------------------------------------
def require_chromium() -> str:
    """Chromium is a test dependency (CI installs it): missing is a failure, never a skip."""
    exe = find_chromium()
    if exe is None or not Path(exe).exists():
        pytest.fail("Chromium not found: bash scripts/setup.sh installs it (as root, apt-get), or set MINEWATCH_CHROMIUM; the web map tests need it")
    return exe


def screenshot_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("MINEWATCH_SCREENSHOTS", tmp_path))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _rendered(b: Browser, layers: list[str]) -> list[int]:
    return b.evaluate(
        "window.minewatch.map.queryRenderedFeatures({layers: %s}).map(f => f.properties.p)" % json.dumps(layers)
    )


def test_map_renders_in_headless_chromium(tmp_path: Path, shared_data: Path) -> None:
    """Real published layers 2023–2024 + territories + airstrips: the page draws, period control works."""
    require_chromium()
    up = shared_data / "upstream"
    md = build_map_data(
        [up / "detections/mining_202300_simplified.geojson", up / "detections/mining_202400_simplified.geojson"],
        up / "boundaries/indigenous_territories.geojson",
        up / "airstrips/Illegal-Airstrips-NYT-Intercept-Public.geojson",
    )
    page = write_map(tmp_path / "map.html", md, title="Amazon mining 2023–2024")
    shots = screenshot_dir(tmp_path)
    with Browser(width=1280, height=800) as b:
        b.goto(page.resolve().as_uri())
        b.wait_map_ready(timeout=120)
        assert b.evaluate("window.minewatch.period()") == "2024"
        # overview: detections drawn (as points at this zoom), all of the selected period
        ps = _rendered(b, ["detections-pts", "detections-fill"])
        assert len(ps) > 1000 and set(ps) == {1}
        assert len(_rendered(b, ["zones-line"])) > 50
        assert len(_rendered(b, ["airstrips"])) > 500
        b.screenshot(shots / "map_overview_2024.png")
        # zoom into the largest 2024 polygon: its outline is drawn as a polygon
        big = md.layer[md.layer["period"] == "2024"].sort_values("footprint_ha").iloc[-1].geometry
        c = big.centroid
        b.evaluate(f"window.minewatch.map.jumpTo({{center: [{c.x}, {c.y}], zoom: 11}}); true")
        b.evaluate("window.minewatch.settled()", timeout=60)
        ps = _rendered(b, ["detections-fill"])
        assert len(ps) > 0 and set(ps) == {1}
        # the period control switches the layer
        assert b.evaluate("window.minewatch.setPeriod(0)") == "2023"
        b.evaluate("window.minewatch.settled()", timeout=60)
        assert b.evaluate("document.getElementById('mw-period-label').textContent") == "2023"
        ps23 = _rendered(b, ["detections-fill"])
        assert set(ps23) <= {0}
        # the slider drives the same control
        b.evaluate("(function(){var s=document.getElementById('mw-period'); s.value='1'; s.dispatchEvent(new Event('input')); return true})()")
        b.evaluate("window.minewatch.settled()", timeout=60)
        assert b.evaluate("window.minewatch.period()") == "2024"
        # cumulative layer: 2023 and 2024 together
        b.evaluate("window.minewatch.setLayerVisible('detections', false); window.minewatch.setLayerVisible('cumulative', true); true")
        b.evaluate("window.minewatch.settled()", timeout=60)
        cum = _rendered(b, ["cumulative-fill", "cumulative-part-fill"])
        assert set(cum) == {0, 1} or (set(cum) <= {0, 1} and len(cum) > len(ps))
        assert _rendered(b, ["detections-fill"]) == []
        b.screenshot(shots / "map_zoom_cumulative.png")
        # a click on the zone opens a popup with its mined area per period
        b.evaluate("window.minewatch.setLayerVisible('cumulative', false); window.minewatch.setLayerVisible('detections', true); true")
        b.evaluate("window.minewatch.settled()", timeout=60)
        pt = b.evaluate(f"(function(){{var p=window.minewatch.map.project([{c.x}, {c.y}]); return [p.x, p.y]}})()")
        for t in ("mousePressed", "mouseReleased"):
            b.send("Input.dispatchMouseEvent", {"type": t, "x": pt[0], "y": pt[1], "button": "left", "clickCount": 1}, session=True)
        b.pump(0.5)
        popup = b.evaluate("(document.querySelector('.maplibregl-popup-content')||{}).textContent || ''")
        assert "Detection" in popup and "ha" in popup
        # offline: the basemap failed gracefully (note shown, style intact), and no script errors
        assert b.evaluate("window.minewatch.basemapFailures()") > 0
        assert b.evaluate("document.getElementById('mw-offline').hidden") is False
        assert b.evaluate("window.minewatch.map.isStyleLoaded()") is True
        assert b.errors() == [], b.errors()
    assert (shots / "map_overview_2024.png").stat().st_size > 20_000


def test_map_zones_csv_that_is_the_map_itself_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--zones-csv naming the --out page would replace the map with the CSV (exit 0, verify ok): refused."""
    from minewatch.cli.main import cli

    monkeypatch.chdir(tmp_path)
    layers = synthetic_layers(tmp_path)
    b = gpd.GeoDataFrame(geometry=[shapely.box(*gpd.read_parquet(layers[0]).total_bounds).buffer(0.05)], crs=4326)
    b["id"], b["name"] = ["z1"], ["Zone 1"]
    b.to_file("zones.geojson")
    Path("out dir").mkdir()
    args = ["map", *(p.name for p in layers), "--zones", "zones.geojson"]
    r = CliRunner().invoke(cli, [*args, "--zones-csv", "out dir/../out dir/map.html", "-o", "out dir/map.html"])
    assert r.exit_code == 2, r.output
    assert "--zones-csv" in r.output and "is also --out" in r.output
    assert not Path("out dir/map.html").exists()
    r = CliRunner().invoke(cli, [*args, "--simplify", "-3", "-o", "out dir/map.html"])
    assert r.exit_code == 2 and r.output.strip().splitlines() == ["minewatch: error: --simplify: tolerance must be ≥ 0 metres, got -3.0"]
    assert not Path("out dir/map.html").exists()
    r = CliRunner().invoke(cli, [*args, "--zones-csv", "out dir/zones.csv", "-o", "out dir/map.html"])
    assert r.exit_code == 0, r.output
    assert Path("out dir/map.html").read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    assert Path("out dir/zones.csv").read_text().startswith("zone_id,")
