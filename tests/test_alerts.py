"""Alerts: stable ids, byte-identical reruns, every format readable, CoMapeo payloads valid against a schema."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest

from minewatch.config import shared_data_dir
from minewatch.impacts.alerts import ALERT_COLUMNS, comapeo_payloads, previous_period
from minewatch.periods import Period
from minewatch.postprocess.persist import run_persist

UP = shared_data_dir() / "upstream"
SCHEMA = Path(__file__).parent / "schemas" / "comapeo_remote_detection_alert.schema.json"


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "minewatch.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder with the persistence layer of the published 2018-2025Q3 layers in 'persist out/'."""
    w = tmp_path_factory.mktemp("alerts") / "field team"
    w.mkdir()
    shutil.copy(UP / "boundaries" / "indigenous_territories.geojson", w / "territories.geojson")
    run_persist([UP / "detections"], w / "persist out")
    return w


def test_alerts_all_formats_and_byte_identical_reruns(work: Path) -> None:
    args = ["alerts", "persist out", "--since", "2025Q2", "--zones", "territories.geojson", "--id-field", "id", "--name-field", "name_field",
            "--airstrips", str(UP / "airstrips" / "Illegal-Airstrips-NYT-Intercept-Public.geojson")]  # fmt: skip
    r1 = _cli([*args, "--out", "alerts one"], work)
    assert r1.returncode == 0, r1.stderr
    r2 = _cli([*args, "--out", "alerts two"], work)
    assert r2.returncode == 0, r2.stderr
    one, two = work / "alerts one", work / "alerts two"
    from minewatch.cli.alerts import WRITES

    names = sorted(p.name for p in one.iterdir() if not p.name.startswith(".") and p.name != "manifest.json")
    assert names == sorted(WRITES) == sorted(p.name for p in two.iterdir() if not p.name.startswith(".") and p.name != "manifest.json")
    for n in names:  # the same command twice: the same bytes, GeoPackage included (the run manifest records times)
        assert (one / n).read_bytes() == (two / n).read_bytes(), n
    assert _cli(["verify", "alerts one"], work).returncode == 0

    gj = json.loads((one / "alerts.geojson").read_text())
    feats = gj["features"]
    assert feats and gj["minewatch"]["command"] == "alerts"
    props = pd.DataFrame([f["properties"] for f in feats])
    assert list(props.columns) == ALERT_COLUMNS
    assert props["alert_id"].is_unique and set(props["status"]) == {"provisional"}  # nothing can be confirmed in 2025 before 2026 closes its window
    assert set(props["period"]) <= {"2025Q2", "2025Q3"} and (props["date_start"] >= "2025-04-01").all()
    assert props["zone_id"].notna().any() and props["airstrip_distance_m"].notna().all()
    # coordinates are WGS84 lon/lat
    b = gpd.read_file(one / "alerts.geojson").total_bounds
    assert -80 < b[0] and b[2] < -40 and -20 < b[1] and b[3] < 12

    csv = pd.read_csv(one / "alerts.csv")
    assert {"latitude", "longitude", "date", "date_start", "alert_id"} <= set(csv.columns) and len(csv) == len(feats)
    assert csv["date"].map(lambda s: dt.date.fromisoformat(s)).le(dt.date(2025, 9, 30)).all()

    import pyogrio

    layers = {name for name, _ in pyogrio.list_layers(one / "alerts.gpkg")}
    assert layers == {"alerts", "alert_points"}
    info = pyogrio.read_info(one / "alerts.gpkg", layer="alerts")
    assert info["features"] == len(feats) and info["geometry_type"] == "MultiPolygon" and "4326" in info["crs"]
    assert list(info["fields"]) == [c for c in ALERT_COLUMNS]
    back = gpd.read_file(one / "alerts.gpkg", layer="alert_points")
    assert len(back) == len(feats) and back.crs.equals("EPSG:4326")
    with sqlite3.connect(one / "alerts.gpkg") as db:  # a real GeoPackage: the OGC tables QGIS reads
        assert db.execute("select count(*) from gpkg_contents").fetchone()[0] == 2
        assert db.execute("select srs_id from gpkg_geometry_columns where table_name='alerts'").fetchone()[0] == 4326
    if shutil.which("ogrinfo"):
        r = subprocess.run(["ogrinfo", "-so", str(one / "alerts.gpkg"), "alerts"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "alert_id" in r.stdout

    gc = json.loads((one / "guardian_connector.geojson").read_text())
    gp = gc["features"][0]["properties"]
    for field in ("alert_id", "alert_type", "area_alert_ha", "date_start_t0", "date_end_t0", "date_start_t1", "date_end_t1",
                  "month_detec", "year_detec", "territory_id", "territory_name"):  # fmt: skip
        assert field in gp
    assert gp["alert_type"] == "gold mining" and gp["date_end_t0"] < gp["date_start_t1"]

    summary = json.loads((one / "summary.json").read_text())["summary"]
    assert summary["alerts"] == len(feats) and sum(v["alerts"] for v in summary["by_zone"].values()) + summary["outside_zones"] == len(feats)


def test_comapeo_payloads_validate_against_the_schema(work: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the [test] extra")
    schema = json.loads(SCHEMA.read_text())
    r = _cli(["alerts", "persist out", "--since", "2025Q3", "--out", "alerts 2024"], work)
    assert r.returncode == 0, r.stderr
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    for name in ("comapeo_alerts.json", "comapeo_alerts_points.json"):
        payloads = json.loads((work / "alerts 2024" / name).read_text())
        assert len(payloads) > 100
        for body in payloads:
            errors = list(validator.iter_errors(body))
            assert not errors, (name, errors[0].message)
            start = dt.datetime.fromisoformat(body["detectionDateStart"].replace("Z", "+00:00"))
            end = dt.datetime.fromisoformat(body["detectionDateEnd"].replace("Z", "+00:00"))
            assert start < end and start.tzinfo is not None
        assert {b["geometry"]["type"] for b in payloads} <= ({"Point"} if "points" in name else {"Polygon", "MultiPolygon"})
    # the schema is not vacuous: what the server would refuse, it refuses
    good = payloads[0]
    for bad in ({**good, "sourceId": ""}, {k: v for k, v in good.items() if k != "metadata"}, {**good, "extra": 1},
                {**good, "metadata": {"x": {"nested": 1}}}, {**good, "geometry": {"type": "Point", "coordinates": [10, 95]}}):  # fmt: skip
        assert list(validator.iter_errors(bad))


def test_alert_ids_are_stable_and_dates_follow_the_period(work: Path) -> None:
    from minewatch.impacts.alerts import make_alerts, read_persistence

    polys, _ = read_persistence(work / "persist out")
    a = make_alerts(polys, Period(2024)).alerts
    b = make_alerts(polys.sample(frac=1.0, random_state=3), Period(2024)).alerts  # input order does not matter
    assert list(a["alert_id"]) == list(b["alert_id"])
    later = make_alerts(polys, Period(2025, 3)).alerts
    assert set(later["alert_id"]) < set(a["alert_id"])  # a later --since gives a subset with the same ids
    conf = a[a["status"] == "confirmed"]
    assert (conf["confirmed_in"].map(lambda p: p >= "2024")).all() and (conf["period"] == conf["onset"]).all()
    body = comapeo_payloads(a.head(1))[0]
    assert body["detectionDateStart"].startswith(a["date_start"].iloc[0]) and body["detectionDateEnd"].startswith(a["date_end"].iloc[0])
    assert previous_period(Period(2025, 1)) == Period(2024, 4) and previous_period(Period(2024)) == Period(2023)


def test_alerts_refuse_bad_input(work: Path) -> None:
    r = _cli(["alerts", "persist out", "--since", "2024Q5", "--out", "bad"], work)
    assert r.returncode == 2 and "2024Q5" in r.stderr
    for opt in ("--id-field", "--zone-id-field"):  # the second spelling, as impacts and map name it
        r = _cli(["alerts", "persist out", "--since", "2024", "--zones", "territories.geojson", opt, "nope", "--out", "bad"], work)
        assert r.returncode == 2 and "--id-field 'nope' not among the columns" in r.stderr, r.stderr
    r = _cli(["alerts", "territories.geojson", "--since", "2024", "--out", "bad"], work)
    assert r.returncode == 2 and "persistence" in r.stderr
    assert not (work / "bad").exists()


def test_alerts_on_the_map_and_in_the_report(work: Path) -> None:
    r = _cli(["alerts", "persist out", "--since", "2025Q3", "--zones", "territories.geojson", "--name-field", "name_field", "--out", "map alerts"], work)
    assert r.returncode == 0, r.stderr
    n = len(json.loads((work / "map alerts" / "alerts.geojson").read_text())["features"])
    layer = str(UP / "detections" / "mining_202503_simplified.geojson")
    r = _cli(["map", layer, "--alerts", "map alerts/alerts.geojson", "-o", "alerts map.html"], work)
    assert r.returncode == 0, r.stderr
    page = (work / "alerts map.html").read_text()
    data = json.loads(page.split('<script id="mw-data" type="application/json">', 1)[1].split("</script>", 1)[0].replace("<\\/", "</"))
    assert len(data["alerts"]["features"]) == n and data["alertColors"]["confirmed"] != data["alertColors"]["provisional"]
    assert {f["properties"]["st"] for f in data["alerts"]["features"]} == {"provisional"}
    assert "Alerts: confirmed" in page and 'data-layer="alerts"' in page
    r = _cli(["report", layer, "--alerts", "map alerts/alerts.geojson", "--zones", "territories.geojson", "--zone-name-field", "name_field",
              "-o", "alerts report.html", "--quiet"], work)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rep = (work / "alerts report.html").read_text()
    assert "New alerts per zone" in rep and f"{n:,} alerts" in rep


def test_alerts_carry_mined_ha_beside_area_ha(tmp_path: Path) -> None:
    """Patch files with scar fractions: every alert's ``mined_ha`` is the locations' mined fraction ×
    their hectares (≤ ``area_ha``), in every format; inputs without the fractions give NaN/null, not the footprint."""
    import numpy as np

    from minewatch.grid import Tile
    from minewatch.impacts.alerts import guardian_connector_features, make_alerts
    from minewatch.postprocess.synthetic import patches_on_tile

    t = Tile(21, 20, -40)
    cells = [(r, c, 0.97) for r in range(0, 240, 24) for c in range(0, 240, 24)]
    quarters = {"2022": (0.2, 0.4, 0.6, 0.8), "2023": (0.1, 0.1, 0.1, 0.1), "2024": (0.1, 0.2, 0.3, 0.4)}  # means 0.5, 0.1, 0.25
    for with_fractions in (True, False):
        work = tmp_path / f"run {with_fractions}"
        for year, cl in (("2022", cells), ("2023", cells[:50]), ("2024", cells[:60])):
            (work / year).mkdir(parents=True)
            pt = patches_on_tile(t, cl, period=year)
            if with_fractions:
                pt = pt.assign(**dict(zip(("mined_tl", "mined_tr", "mined_bl", "mined_br"), quarters[year])))
            pt.to_parquet(work / year / "patches.parquet")
        res = run_persist([work], tmp_path / f"out {with_fractions}")
        aset = make_alerts(res.polygons, Period(2023))
        a = aset.alerts
        assert set(a["status"]) == {"confirmed", "provisional"} and list(a.columns[:-1]) == ALERT_COLUMNS
        comapeo, gc = comapeo_payloads(a), guardian_connector_features(a)["features"]
        if with_fractions:
            # confirmed rows are dated by their 2022 onset (mean fraction 0.5), provisional ones by 2024 (0.25)
            frac = a["status"].map({"confirmed": 0.5, "provisional": 0.25}).to_numpy()
            assert a["mined_ha"].to_numpy() == pytest.approx(frac * a["area_ha"].to_numpy(), abs=1e-3)
            assert (a["mined_ha"] <= a["area_ha"]).all() and (a["mined_ha"] > 0).all()
            assert aset.summary["mined_ha"] == pytest.approx(float((frac * a["area_ha"]).sum()), abs=0.01)
            assert [p["metadata"]["mined_ha"] for p in comapeo] == pytest.approx(a["mined_ha"].tolist())
            assert [f["properties"]["mined_area_alert_ha"] for f in gc] == pytest.approx(a["mined_ha"].tolist())
            assert [f["properties"]["area_alert_ha"] for f in gc] == pytest.approx(a["area_ha"].tolist())
            per = res.summary.set_index("period")
            assert per.loc["2022", "mined_ha"] == pytest.approx(0.5 * per.loc["2022", "area_ha"])
            assert per.loc["2024", "provisional_mined_ha"] == pytest.approx(0.25 * per.loc["2024", "provisional_ha"])
        else:
            assert a["mined_ha"].isna().all() and aset.summary["mined_ha"] is None
            assert res.locations["mined_ha"].isna().all() and res.polygons["mined_ha"].isna().all()
            assert res.summary["mined_ha"].isna().all() and res.summary["confirmed_mined_ha"].isna().all()
            assert all(p["metadata"]["mined_ha"] is None for p in comapeo)
            assert all(f["properties"]["mined_area_alert_ha"] is None for f in gc)
        assert np.isfinite(a["area_ha"]).all()


def test_layers_without_a_mined_field_give_no_mined_ha(tmp_path: Path) -> None:
    """A polygon layer with neither ``Mined area (ha)`` nor ``mined_ha``: NaN, never the footprint;
    with ``Mined area (ha)``: that figure, shared over the polygon's cells."""
    from minewatch.impacts.alerts import make_alerts

    src = gpd.read_file(UP / "detections" / "mining_202400_simplified.geojson").head(40)
    for name, layer in (("bare", src.drop(columns=["Mined area (ha)"])), ("stated", src)):
        d = tmp_path / name
        d.mkdir()
        layer.to_file(d / "mining_202400_simplified.geojson", driver="GeoJSON")
        res = run_persist([d], tmp_path / f"out {name}")
        a = make_alerts(res.polygons, Period(2024)).alerts
        assert len(a) > 0
        if name == "bare":
            assert a["mined_ha"].isna().all() and res.polygons["mined_ha"].isna().all()
        else:
            stated = pd.to_numeric(src["Mined area (ha)"]).sum()
            assert res.polygons["mined_ha"].sum() == pytest.approx(stated, rel=1e-6)
            assert a["mined_ha"].notna().all()
