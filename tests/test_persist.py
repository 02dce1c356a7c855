"""Temporal persistence: the rule on hand-built period sequences, patch files, and the published layers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from minewatch.config import shared_data_dir
from minewatch.errors import MinewatchError
from minewatch.grid import Tile
from minewatch.postprocess.persist import (
    PersistParams,
    Sightings,
    card_thresholds_for,
    cell_squares,
    map_reference_threshold,
    merge_previous,
    patch_locations,
    persistence,
    persistence_increments,
    polygon_locations,
    run_persist,
)
from minewatch.postprocess.synthetic import patches_on_tile

DETECTIONS = shared_data_dir() / "upstream" / "detections"


def lid(name: str) -> tuple[int, int]:
    """A cell of zone 21 for a location name (odd lattice indices, apart for different names)."""
    return 2 * (1000 + 3 * (zlib.crc32(name.encode()) % 10_000)) + 1, -2 * 100 + 1


def sightings(seen: dict[str, list[str]], prov: dict[tuple[str, str], bool] | None = None) -> Sightings:
    """Hand-built sightings: location name -> periods seen."""
    rows = []
    for name, periods in sorted(seen.items()):
        i, j = lid(name)
        geom = cell_squares(np.array([21]), np.array([i]), np.array([j]))[0]
        for p in periods:
            rows.append({"location_id": f"21:{i}:{j}", "name": name, "period": p, "prov": (prov or {}).get((name, p), True),
                         "score": 0.9, "area_ha": 23.04, "geometry": geom})  # fmt: skip
    return Sightings.from_frame(pd.DataFrame(rows))


def run(seen: dict[str, list[str]], periods: list[str], prov: dict | None = None, **kw) -> dict[str, dict]:
    s = sightings(seen, prov)
    ids = {name: "21:{}:{}".format(*lid(name)) for name in seen}
    table = persistence(s, periods, PersistParams(**kw))
    rows = {r["location_id"]: r for r in table.to_dict("records")}
    return {name: rows[lid] for name, lid in ids.items() if lid in rows}


YEARS = ["2018", "2019", "2020", "2021"]


def test_seen_once_is_not_confirmed() -> None:
    assert run({"once": ["2019"]}, YEARS) == {}


def test_twice_in_the_window_is_confirmed_at_the_second_sighting() -> None:
    r = run({"twice": ["2019", "2020"], "early": ["2018", "2019", "2020", "2021"]}, YEARS)
    assert (r["twice"]["status"], r["twice"]["onset"], r["twice"]["confirmed_in"], r["twice"]["n_witness"]) == ("confirmed", "2019", "2020", 2)
    # the earliest onset wins; confirmed_in is the k-th sighting counting the onset
    assert (r["early"]["onset"], r["early"]["confirmed_in"], r["early"]["first_seen"], r["early"]["last_seen"]) == ("2018", "2019", "2018", "2021")


def test_twice_outside_the_window_is_not_confirmed() -> None:
    assert run({"gap": ["2018", "2020"]}, YEARS) == {}
    r = run({"gap": ["2018", "2020"]}, YEARS, window=3)  # a 3-year window reaches it
    assert (r["gap"]["status"], r["gap"]["onset"], r["gap"]["confirmed_in"], r["gap"]["n_witness"]) == ("confirmed", "2018", "2020", 2)
    r = run({"three": ["2018", "2020", "2021"]}, YEARS, k=3, window=3)
    # 2018..2020 (closed) holds two of three: not confirmed; 2020 and 2021 start windows still open
    assert (r["three"]["status"], r["three"]["onset"], r["three"]["n_witness"]) == ("provisional", "2020", 2)
    r = run({"three": ["2018", "2019", "2020"]}, YEARS, k=3, window=3)
    assert r["three"]["confirmed_in"] == "2020"


def test_quarters_never_date_an_onset() -> None:
    periods = ["2023", "2024", "2025Q2", "2025Q3"]
    r = run({"q": ["2025Q2"], "q_weak": ["2025Q3"]}, periods, prov={("q_weak", "2025Q3"): False})
    assert set(r) == {"q"}
    assert (r["q"]["status"], r["q"]["onset"], r["q"]["confirmed_in"], r["q"]["first_seen"]) == ("provisional", None, None, "2025Q2")
    # quarters do not count towards confirmation: 2024 + 2025Q2 stays provisional, onset 2024
    r = run({"yq": ["2024", "2025Q2"]}, periods)
    assert (r["yq"]["status"], r["yq"]["onset"], r["yq"]["n_witness"]) == ("provisional", "2024", 2)
    # once 2025's annual layer exists, its quarters are superseded: a quarter-only sighting is gone
    assert run({"q": ["2025Q2"]}, ["2023", "2024", "2025", "2025Q2"]) == {}


def test_gap_years_in_the_inputs_keep_a_window_open() -> None:
    periods = ["2018", "2020", "2021", "2022"]  # no 2019 layer
    r = run({"a": ["2018"], "b": ["2020", "2021"], "c": ["2018", "2020"]}, periods)
    assert r["a"]["status"] == "provisional" and r["a"]["onset"] == "2018"  # its window 2018-2019 never closed
    assert (r["b"]["status"], r["b"]["onset"], r["b"]["confirmed_in"]) == ("confirmed", "2020", "2021")
    assert r["c"]["status"] == "provisional"  # 2018 open; 2020 closed but seen once in 2020-2021


def test_open_windows_need_the_stricter_thresholds() -> None:
    periods = ["2022", "2023", "2024"]
    r = run({"strong": ["2024"], "weak": ["2024"], "old": ["2022"]}, periods, prov={("weak", "2024"): False})
    assert set(r) == {"strong"} and r["strong"]["status"] == "provisional" and r["strong"]["onset"] == "2024"


def test_provisional_rows_are_replaced_by_the_next_run() -> None:
    s1 = sightings({"grows": ["2024"], "fades": ["2024"]})
    run1 = persistence(s1, ["2023", "2024"])
    assert sorted(run1["status"]) == ["provisional", "provisional"]
    s2 = sightings({"grows": ["2024", "2025"], "fades": ["2024"]})
    run2 = merge_previous(persistence(s2, ["2023", "2024", "2025"]), run1)
    rows = {r["location_id"]: r for r in run2.to_dict("records")}
    grows, fades = "21:{}:{}".format(*lid("grows")), "21:{}:{}".format(*lid("fades"))
    assert rows[grows]["status"] == "confirmed" and rows[grows]["confirmed_in"] == "2025"
    assert fades not in rows  # its provisional row is gone: 2024's window closed without a second sighting
    assert (run2["status"] == "provisional").sum() == 0


def test_confirmed_rows_are_kept_when_a_later_period_misses_them() -> None:
    s1 = sightings({"mine": ["2018", "2019"]})
    run1 = persistence(s1, ["2018", "2019", "2020"])
    assert list(run1["status"]) == ["confirmed"]
    s2 = sightings({"other": ["2021", "2022"]})  # the new inputs miss the mine entirely
    run2 = merge_previous(persistence(s2, ["2020", "2021", "2022"]), run1)
    rows = {r["location_id"]: r for r in run2.to_dict("records")}
    kept = rows[run1["location_id"].iloc[0]]
    assert (kept["status"], kept["onset"], kept["confirmed_in"]) == ("confirmed", "2018", "2019")
    assert len(rows) == 2


def test_increments_equal_the_rule_on_cumulated_states() -> None:
    """The fast path for increment layers gives the rows the general rule gives on their unions."""
    periods = ["2018", "2019", "2020", "2021", "2022", "2023", "2024", "2025Q2", "2025Q3"]
    firsts = {"a": "2018", "b": "2021", "c": "2023", "d": "2024", "e": "2025Q2", "f": "2025Q3"}
    inc = sightings({k: [v] for k, v in firsts.items()})
    cum = sightings({k: [p for p in periods if periods.index(p) >= periods.index(v)] for k, v in firsts.items()})
    fast = persistence_increments(inc, periods).drop(columns=["geometry", "n_seen", "period"])
    slow = persistence(cum, periods).drop(columns=["geometry", "n_seen", "period"])
    pd.testing.assert_frame_equal(fast.reset_index(drop=True), slow.reset_index(drop=True), check_dtype=False)
    assert set(fast[fast["status"] == "confirmed"]["onset"]) == {"2018", "2021", "2023"}


def test_threshold_mapping_onto_the_card() -> None:
    assert map_reference_threshold(0.43, 0.889, 0.926) == pytest.approx(0.889)
    assert map_reference_threshold(0.75, 0.889, 0.926) == pytest.approx(0.926)
    t = card_thresholds_for("default")
    assert t.t_main < t.t_prov < 1 and t.t_iso is not None and t.t_iso < t.t_prov_iso < 1
    with pytest.raises(MinewatchError):
        map_reference_threshold(1.5, 0.889, 0.926)
    with pytest.raises(MinewatchError):
        PersistParams(k=3, window=2)


def test_patch_locations_are_stable_lattice_ids_across_tiles_and_periods() -> None:
    t = Tile(21, 20, -40)
    a = patches_on_tile(t, [(0, 0, 0.95), (24, 48, 0.95)], period="2023")
    b = patches_on_tile(t, [(24, 48, 0.97)], period="2024")
    la, lb = patch_locations(a), patch_locations(b)
    assert la[1] == lb[0] and la[0] != la[1]
    # ids are the patch centre on the global lattice: easting / 240 m, northing from the equator / 240 m
    zone, i, j = la[0].split(":")
    assert zone == "21" and int(i) * 240 == t.bounds[0] + 240 and (int(j) * 240) == (t.bounds[3] - 10_000_000 - 240)
    # the last patch column of this tile and the first of the next tile are neighbours on one lattice
    last = patch_locations(patches_on_tile(t, [(0, 1008 - 24, 0.9)]))[0]
    first_next = patch_locations(patches_on_tile(Tile(21, 21, -40), [(0, 0, 0.9)]))[0]
    assert int(first_next.split(":")[1]) - int(last.split(":")[1]) == 1


def test_polygon_locations_cover_every_polygon() -> None:
    layer = gpd.read_file(DETECTIONS / "mining_202503_simplified.geojson")
    idx, lids, cells, centre = polygon_locations(layer.geometry.to_numpy())
    assert set(idx) == set(range(len(layer)))  # every polygon has at least one location
    assert 0.5 < centre.mean() < 1  # thin increments often hold no 480 m cell centre: they get their representative point's cell
    one = lids[idx == 0]
    assert all(len(x.split(":")) == 3 and int(x.split(":")[1]) % 2 == 1 for x in one)


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "minewatch.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip


def test_persist_on_patch_files(tmp_path: Path) -> None:
    """Own detections: two years of patch files; a patch seen twice is confirmed, the rest is not."""
    t = Tile(21, 20, -40)
    cells = [(r, c, 0.97) for r in range(0, 240, 24) for c in range(0, 240, 24)]  # a 10×10 cluster: never isolated
    work = tmp_path / "my run"
    for year, cl in (("2022", cells), ("2023", cells[:50]), ("2024", cells[:60] + [(600, 600, 0.97)])):
        (work / year).mkdir(parents=True)
        patches_on_tile(t, cl, period=year).to_parquet(work / year / "patches.parquet")
    r = _cli(["persist", "my run", "--out", "persist out"], tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "persist out" / "summary.json").read_text())
    per = {p["period"]: p for p in doc["per_period"]}
    assert doc["layers_are"] == "detections"
    assert per["2022"]["confirmed"] == 50 and per["2022"]["unconfirmed"] == 50
    assert per["2023"]["confirmed"] == 50 and per["2024"]["confirmed"] == 50
    assert per["2024"]["provisional"] == 11  # 10 more of the cluster + 1 isolated but scoring above the strict bar
    loc = gpd.read_parquet(tmp_path / "persist out" / "locations.parquet")
    assert loc.crs.equals("EPSG:4326") and set(loc["status"]) == {"confirmed", "provisional"}
    # a run: manifest + verify; the next year's run into the same folder carries the confirmed rows
    assert _cli(["verify", "persist out"], tmp_path).returncode == 0
    (work / "2022").rename(tmp_path / "2022 archived")  # the folder no longer holds 2022 ...
    r = _cli(["persist", "my run", "--out", "persist out"], tmp_path)
    assert r.returncode == 0, r.stderr
    again = gpd.read_parquet(tmp_path / "persist out" / "locations.parquet")
    assert (again["status"] == "confirmed").sum() == 50  # ... yet the 50 locations confirmed in 2023 stay confirmed
    assert set(again.loc[again["status"] == "confirmed", "onset"]) == {"2022"}


def test_persist_on_published_layers(tmp_path: Path) -> None:
    """The published 2018-2025Q3 layers: read as increments; windows closed up to 2023; quarters open."""
    res = run_persist([DETECTIONS], tmp_path / "p")
    info, summ = res.info, res.summary.set_index("period")
    assert info["layers_are"] == "increments" and info["repeat_share"] < 0.01
    assert list(summ.index) == ["2018", "2019", "2020", "2021", "2022", "2023", "2024", "2025Q2", "2025Q3"]
    closed = summ.loc["2018":"2023"]
    assert (closed["window"] == "closed").all() and (closed["provisional"] == 0).all() and (closed["new_unconfirmed"] == 0).all()
    assert (summ.loc[["2024", "2025Q2", "2025Q3"], "window"] == "open").all()
    # each period's increment is split exactly among statuses: hectares add up to the layer's area;
    # in open periods it is provisional except growth inside 480 m cells confirmed by 2023
    for code, p in (("202400", "2024"), ("202503", "2025Q3")):
        layer = gpd.read_file(DETECTIONS / f"mining_{code}_simplified.geojson").to_crs(6933)
        row = summ.loc[p]
        assert row["new_area_ha"] == pytest.approx(layer.area.sum() / 1e4, rel=1e-6)
        assert row["new_unconfirmed_ha"] == 0
        assert row["new_confirmed_ha"] + row["new_provisional_ha"] == pytest.approx(row["new_area_ha"])
        assert row["new_provisional_ha"] > 0.9 * row["new_area_ha"]
    polys = gpd.read_parquet(tmp_path / "p" / "persistence.parquet")
    gj = json.loads((tmp_path / "p" / "persistence.geojson").read_text())
    assert len(gj["features"]) == len(polys) and gj["minewatch"]["command"] == "persist"
    assert polys["polygon_id"].is_unique


def test_persist_refuses_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad layer.geojson"
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"period": "2024Q5"},
        "geometry": {"type": "Polygon", "coordinates": [[[-60, -5], [-59.99, -5], [-59.99, -4.99], [-60, -5]]]}}]}))  # fmt: skip
    r = _cli(["persist", "bad layer.geojson", "--out", "out"], tmp_path)
    assert r.returncode == 2 and "2024Q5" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli(["persist", "missing.geojson", "--out", "out"], tmp_path)
    assert r.returncode == 2 and "missing.geojson" in r.stderr
    r = _cli(["persist", "bad layer.geojson", "--out", "out", "--k", "3"], tmp_path)
    assert r.returncode == 2 and "--k" in r.stderr
    assert not (tmp_path / "out").exists()


def test_persist_counts_a_layer_once_however_it_is_given(tmp_path: Path) -> None:
    """A postprocess folder holds each layer twice (mining.parquet and mining.geojson), and a file may be
    named twice: either way its hectares are counted once, as when the file is given alone."""
    from shapely.geometry import box

    g = gpd.GeoDataFrame({"period": ["2024", "2024"], "mined_ha": [5.0, 7.0]},
                         geometry=[box(-56.90, -6.45, -56.88, -6.43), box(-56.86, -6.45, -56.85, -6.44)], crs=4326)  # fmt: skip
    (tmp_path / "pp out").mkdir()
    g.to_parquet(tmp_path / "pp out" / "mining.parquet")
    g.to_file(tmp_path / "pp out" / "mining.geojson")
    (tmp_path / "pp out" / "summary.json").write_text("{}")
    (tmp_path / "pp out" / "areas.csv.meta.json").write_text("{}")

    def summary(args: list[str], out: str) -> dict:
        r = _cli(["persist", *args, "--out", out], tmp_path)
        assert r.returncode == 0, r.stderr
        return json.loads((tmp_path / out / "summary.json").read_text())["per_period"][0]

    alone = summary(["pp out/mining.parquet"], "alone")
    assert alone["mined_ha"] == pytest.approx(12.0)
    for args, out in ((["pp out"], "folder"), (["pp out/mining.parquet", "./pp out/mining.parquet"], "twice")):
        s = summary(args, out)
        assert s["area_ha"] == pytest.approx(alone["area_ha"]) and s["mined_ha"] == pytest.approx(12.0), (args, s)
