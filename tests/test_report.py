"""Report: discovers a run folder's layers, model card and imagery; writes charts and a self-contained
HTML page (and PDF) with the right numbers; says "not available" for what the run lacks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from PIL import Image
from rasterio.transform import from_origin

from minewatch.bands import BandSpec
from minewatch.errors import MinewatchError
from minewatch.models.package import ModelCard
from minewatch.webmap.browser import Browser, find_chromium
from minewatch.webmap.layers import area_ha
from minewatch.webmap.report import build_report, discover_run, find_layers, write_pdf

UTM = 32721
X0, Y0 = 600_000, 9_300_000


def make_run(tmp: Path, card: bool = True, imagery: bool = True) -> Path:
    """A run folder shaped like ``minewatch run`` output, with known areas per zone."""
    run = tmp / "run"
    run.mkdir()
    sq = lambda x, y, s: shapely.box(X0 + x, Y0 + y, X0 + x + s, Y0 + y + s)  # noqa: E731
    geoms = [sq(0, 0, 480), sq(20_000, 0, 960), sq(0, 0, 720), sq(20_000, 0, 480), sq(40_000, 0, 480)]
    periods = ["2023", "2023", "2024", "2024", "2024"]
    g = gpd.GeoDataFrame({"period": periods, "score_max": [0.9, 0.8, 0.95, 0.7, 0.6], "score_mean": 0.6, "n_patches": 3},
                         geometry=geoms, crs=UTM).to_crs(4326)
    g["area_ha"] = area_ha(g.geometry)
    g.to_parquet(run / "mining.parquet")
    g.to_file(run / "mining.geojson")  # same layer as GeoJSON: must not be counted twice
    g.to_parquet(run / "mining_simplified.parquet")  # postprocess's display copy: same polygons
    g.assign(tile="x", row=0, col=0, epsg=UTM, score=0.9, valid_frac=1.0).to_parquet(run / "patches.parquet")
    zones = gpd.GeoDataFrame(
        {"id": ["A", "B", "C"], "name": ["Zone West", "Zone Middle", "Zone Empty"]},
        geometry=[shapely.box(X0 - 1000, Y0 - 1000, X0 + 5000, Y0 + 5000), shapely.box(X0 + 19_000, Y0 - 1000, X0 + 25_000, Y0 + 5000),
                  shapely.box(X0 + 90_000, Y0, X0 + 95_000, Y0 + 5000)],
        crs=UTM,
    ).to_crs(4326)
    zones.to_file(run / "zones.geojson")
    manifest = {"minewatch_manifest": 1, "command": "run", "created": "2024-10-01T00:00:00Z", "parameters": {}, "inputs": {},
                "tiles": {}, "outputs": {}, "history": [], "status": "complete"}
    (run / "manifest.json").write_text(json.dumps(manifest))
    if card:
        c = ModelCard(name="test-ensemble-v1", spec=BandSpec(), members=["m0", "m1"], architecture="cnn", threshold=0.62,
                      metrics={"ap": 0.91, "val": {"precision": 0.95}}, validated_levels={"L1C": {"ap": 0.9}})
        (run / "card.json").write_text(json.dumps(c.to_dict()))
    if imagery:
        tiles = run / "composite" / "tiles"
        tiles.mkdir(parents=True)
        clear = np.full((64, 64), 5, dtype="uint16")
        clear[:16, :] = 0  # a quarter never seen clear
        with rasterio.open(tiles / "21M_1_2_clear.tif", "w", driver="GTiff", width=64, height=64, count=1, dtype="uint16",
                           crs=f"EPSG:{UTM}", transform=from_origin(X0, Y0, 10, 10)) as dst:
            dst.write(clear, 1)
        item = {"type": "Feature", "stac_version": "1.0.0", "id": "21M_1_2_2024-06-01_2024-09-30_L1C",
                "geometry": None, "bbox": [0, 0, 1, 1],
                "properties": {"start_datetime": "2024-06-01T00:00:00Z", "end_datetime": "2024-09-30T23:59:59Z",
                               "datetime": None, "processing:level": "L1C", "minewatch:tile": "21M_1_2",
                               "minewatch:scenes": ["s1", "s2", "s3"], "minewatch:max_scene_cloud": 40},
                "assets": {"clear_count": {"href": "21M_1_2_clear.tif"}}}
        (tiles / "21M_1_2.json").write_text(json.dumps(item))
    return run


def test_discover_run_finds_layers_card_imagery(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    assert find_layers(run) == [run / "mining.parquet"]
    ri = discover_run(run)
    assert ri.zones == run / "zones.geojson" and ri.airstrips is None
    assert ri.card and ri.card["name"] == "test-ensemble-v1"
    assert len(ri.imagery) == 1
    im = ri.imagery[0]
    assert (im["start"], im["end"], im["level"], im["scenes"]) == ("2024-06-01", "2024-09-30", "L1C", 3)
    assert im["never_clear_pct"] == pytest.approx(25.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MinewatchError, match="no mining layer"):
        discover_run(tmp_path / "empty")
    with pytest.raises(MinewatchError, match="not a folder"):
        discover_run(tmp_path / "nope")


def test_report_contents_and_charts(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    out = tmp_path / "out" / "report.html"
    build_report(discover_run(run), out)
    page = out.read_text()
    # charts: written as PNGs and embedded
    for name in ("area_per_period", "new_area_per_period", "top_zones"):
        png = out.parent / "report_charts" / f"{name}.png"
        with Image.open(png) as im:
            assert im.size[0] > 500 and im.size[1] > 150
    assert page.count("<img class='chart") == 3 and page.count("src='data:image/png;base64,") == 3
    # model card (short, then the appendix), imagery, caveats, credits
    for text in ("test-ensemble-v1", "0.620", "0.9100", "2024-06-01", "2024-09-30",
                 "25.0 % of pixels had no clear observation", "480 m × 480 m", "L1C versus L2A", "Clouds",
                 "Earth Genome, Amazon Mining Watch", "CC BY 4.0"):
        assert text in page, text
    assert "not available" not in page[page.index("<h2>Model</h2>"):]
    assert "The card records no validation figures" in page  # the test card has none of the headline ones
    # page one: the findings come before the map, the appendix after the credits
    assert page.index("<h2>Findings</h2>") < page.index("<h2>Map</h2>") < page.index("<h2>Credits") < page.index("<h2>Appendix</h2>")
    findings = page[page.index("<h2>Findings</h2>"):page.index("<h2>Map</h2>")]
    assert "Mining touches 2 of 3 zones up to 2024" in findings and "Zone Middle" in findings
    # numbers: 2024 area = 720² + 480² + 480² m²; zone order by cumulative area (Middle 960² > West 720²)
    a24 = (720**2 + 2 * 480**2) / 1e4
    assert f"{a24:,.0f} ha" in page
    zone_table = page[page.index("<h2>Most affected zones"):]
    assert zone_table.index("Zone Middle") < zone_table.index("Zone West")
    assert "Zone Empty" not in zone_table.split("<h2>")[1]
    # one table, a row per zone and a column per period: Zone West has 480² m² in 2023 and 720² in 2024
    west = re.search(r"<tr><td>Zone West</td><td>A</td><td class=n>([\d,]+)</td><td class=n>([\d,]+)</td><td class=n>([\d,]+)</td></tr>", zone_table)
    assert west is not None and west.groups() == (f"{480**2 / 1e4:,.0f}", f"{720**2 / 1e4:,.0f}", f"{720**2 / 1e4:,.0f}")
    # only the parquet was read (the GeoJSON twin would double the polygon count)
    assert "5 polygons" in page or "5 polygons · 2 periods" in page


def test_report_without_card_or_imagery_says_not_available(tmp_path: Path) -> None:
    run = make_run(tmp_path, card=False, imagery=False)
    out = tmp_path / "r.html"
    build_report(discover_run(run), out)
    page = out.read_text()
    assert "Model card not available" in page
    assert "Imagery dates and cloud coverage: not available" in page


def test_report_cli_on_published_layers(tmp_path: Path, shared_data: Path) -> None:
    from minewatch.cli.main import cli

    up = shared_data / "upstream"
    det = [up / "detections/mining_202300_simplified.geojson", up / "detections/mining_202400_simplified.geojson"]
    out = tmp_path / "report.html"
    r = CliRunner().invoke(cli, ["report", *map(str, det), "--zones",
                                 str(up / "boundaries/indigenous_territories.geojson"), "--airstrips",
                                 str(up / "airstrips/Illegal-Airstrips-NYT-Intercept-Public.geojson"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "model card: not available" in r.output
    page = out.read_text()
    raw = json.loads(det[1].read_text())
    total24 = sum(f["properties"]["Mined area (ha)"] for f in raw["features"])
    assert f"{total24:,.0f} ha" in page
    assert re.search(r"zones with mining up to 2024", page)
    assert "Airstrips: The Intercept Brasil / The New York Times / Earth Genome" in page
    r = CliRunner().invoke(cli, ["report", str(tmp_path / "missing"), "--out", str(tmp_path / "x.html")])
    assert r.exit_code == 2 and "not found" in r.output and not (tmp_path / "x.html").exists()
    # the old spelling still works (hidden from --help)
    r = CliRunner().invoke(cli, ["report", "--layer", str(det[1]), "--out", str(tmp_path / "old.html"), "--quiet"])
    assert r.exit_code == 0 and "from 1 layer(s)" in r.output and "--layer" not in CliRunner().invoke(cli, ["report", "--help"]).output


def test_report_opens_in_chromium_and_prints_pdf(tmp_path: Path) -> None:
    if find_chromium() is None:
        pytest.fail("Chromium not found: bash scripts/setup.sh installs it (as root, apt-get), or set MINEWATCH_CHROMIUM")
    run = make_run(tmp_path)
    out = tmp_path / "report.html"
    build_report(discover_run(run), out, basemap="none")
    with Browser(width=1100, height=900) as b:
        b.goto(out.resolve().as_uri())
        b.wait_map_ready()
        n = b.evaluate("window.minewatch.map.queryRenderedFeatures({layers: ['detections-fill', 'detections-pts']}).length")
        assert n >= 3
        assert b.errors() == [], b.errors()
    pdf = write_pdf(out, tmp_path / "report.pdf")
    data = pdf.read_bytes()
    assert data[:5] == b"%PDF-" and len(data) > 50_000


def test_top_zones_chart_keeps_zones_with_the_same_name(tmp_path: Path) -> None:
    """Two territories can share a name: each keeps its own bar (not merged into one category)."""
    import pandas as pd
    from matplotlib import pyplot as plt

    from minewatch.webmap import charts

    captured = {}
    real_save = charts._save

    def spy(fig, path):  # noqa: ANN001
        captured["bars"] = [p.get_width() for p in fig.axes[0].patches]
        captured["labels"] = [t.get_text() for t in fig.axes[0].get_yticklabels()]
        return real_save(fig, path)

    charts._save = spy
    try:
        top = pd.DataFrame({"zone_name": ["Same", "Other", "Same"], "cumulative_ha": [30.0, 20.0, 10.0]})
        charts.top_zones(top, tmp_path / "t.png", "2024")
    finally:
        charts._save = real_save
        plt.close("all")
    assert captured["bars"] == [10.0, 20.0, 30.0]
    assert captured["labels"] == ["Same", "Other", "Same"]


def test_report_pdf_that_is_the_page_itself_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--pdf naming the -o page (however it is spelled) would overwrite the HTML with the PDF: refused
    in one line before anything is read or written."""
    from minewatch.cli.main import cli

    monkeypatch.chdir(tmp_path)
    Path("my run").mkdir()
    r = CliRunner().invoke(cli, ["report", "my run", "-o", "my run/report.html", "--pdf", "./my run/../my run/report.html"])
    assert r.exit_code == 2, r.output
    assert [ln for ln in r.output.splitlines() if ln.strip()] == [f"minewatch: error: --pdf: {tmp_path / 'my run' / 'report.html'} is also --out (the HTML report): give the PDF a file name of its own"]
    assert list(Path("my run").iterdir()) == []
