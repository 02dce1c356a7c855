"""Change products: growth / persisting / receding, the 11 ha rule, quarters merged onto the previous year."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from minewatch.config import shared_data_dir
from minewatch.postprocess.change import change_products, effective_periods

X0, Y0 = -5_800_000.0, -600_000.0  # EPSG:6933 metres, in the Amazon


def sq(x_km: float, y_km: float, side_m: float) -> shapely.Polygon:
    x, y = X0 + x_km * 1000, Y0 + y_km * 1000
    return shapely.box(x, y, x + side_m, y + side_m)


def layer(rows: list[tuple[str, shapely.Polygon]]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"period": [p for p, _ in rows]}, geometry=[g for _, g in rows], crs=6933).to_crs(4326)


def test_growth_receding_and_the_size_rule() -> None:
    a = sq(0, 0, 1000)  # 100 ha
    b = sq(5, 0, 800)  # 64 ha, new in 2024
    c = sq(10, 0, 300)  # 9 ha, new in 2024: below 11 ha, dropped from the diffs
    a_half = sq(0, 0, 1000).intersection(shapely.box(X0, Y0, X0 + 500, Y0 + 1000))  # half of A remains
    res = change_products(layer([("2023", a), ("2024", a_half), ("2024", b), ("2024", c)]), min_polygon_ha=11)
    t = res.table.set_index("period")
    assert bool(t.loc["2023", "baseline"]) and t.loc["2023", "state_ha"] == pytest.approx(100, rel=1e-6)
    r = t.loc["2024"]
    assert r["growth_ha"] == pytest.approx(64, rel=1e-6) and r["growth_pieces"] == 1
    assert r["growth_dropped_ha"] == pytest.approx(9, rel=1e-6) and r["growth_dropped_pieces"] == 1
    assert r["receding_ha"] == pytest.approx(50, rel=1e-6) and r["persisting_ha"] == pytest.approx(50, rel=1e-6)
    assert r["cumulative_ha"] == pytest.approx(173, rel=1e-6)  # the cumulative footprint keeps the small piece
    assert r["state_ha"] == pytest.approx(50 + 64 + 9, rel=1e-6)
    kinds = res.pieces.groupby(["period", "change"]).size().to_dict()
    assert kinds == {("2024", "growth"): 1, ("2024", "receding"): 1}
    assert res.pieces.crs.equals("EPSG:4326")
    # areas are equal-area: the same squares give the same hectares however far from the equator
    assert (res.pieces["area_ha"] >= 11).all()


def test_quarters_merge_onto_the_previous_year_and_are_superseded() -> None:
    a, b, q = sq(0, 0, 1000), sq(5, 0, 1000), sq(10, 0, 1000)
    # 2025Q2 is cloudy and sees only q: merged onto 2024, nothing recedes
    res = change_products(layer([("2024", a), ("2024", b), ("2025Q2", q)]))
    r = res.table.set_index("period").loc["2025Q2"]
    assert r["receding_ha"] == 0 and r["growth_ha"] == pytest.approx(100, rel=1e-6) and r["persisting_ha"] == pytest.approx(200, rel=1e-6)
    # once 2025 closes, its annual layer replaces its quarters (no OR: q seen in Q2 but not in 2025 is not counted)
    res = change_products(layer([("2024", a), ("2024", b), ("2025Q2", q), ("2025", a)]))
    t = res.table.set_index("period")
    assert list(t.index) == ["2024", "2025"]
    assert t.loc["2025", "growth_ha"] == 0 and t.loc["2025", "receding_ha"] == pytest.approx(100, rel=1e-6)
    assert [p.label for p in effective_periods(["2025Q3", "2024", "2025", "2025Q2", "2026Q1"])] == ["2024", "2025", "2026Q1"]


def test_increments_grow_and_never_recede() -> None:
    a, b = sq(0, 0, 1000), sq(1, 0, 1000)  # b touches a: new mining beside old
    res = change_products(layer([("2023", a), ("2024", b)]), increments=True)
    r = res.table.set_index("period").loc["2024"]
    assert r["growth_ha"] == pytest.approx(100, rel=1e-6) and r["receding_ha"] == 0 and r["cumulative_ha"] == pytest.approx(200, rel=1e-6)


def test_change_cli_on_the_published_layers(tmp_path: Path) -> None:
    det = shared_data_dir() / "upstream" / "detections"
    r = subprocess.run([sys.executable, "-m", "minewatch.cli.main", "change", str(det), "--out", "change out"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "layers read as increments" in r.stdout
    t = pd.read_csv(tmp_path / "change out" / "change.csv").set_index("period")
    assert list(t.index) == ["2018", "2019", "2020", "2021", "2022", "2023", "2024", "2025Q2", "2025Q3"]
    for code, p in (("201900", "2019"), ("202503", "2025Q3")):
        own = gpd.read_file(det / f"mining_{code}_simplified.geojson").to_crs(6933).area.sum() / 1e4
        # growth of an increment layer is (almost) the layer itself: kept + dropped pieces
        assert t.loc[p, "growth_ha"] + t.loc[p, "growth_dropped_ha"] == pytest.approx(own, rel=1e-3)
    assert (t["receding_ha"].fillna(0) == 0).all()
    assert (t["growth_pieces"].dropna() > 0).all()
    pieces = gpd.read_parquet(tmp_path / "change out" / "change.parquet")
    assert (pieces["area_ha"] >= 11).all() and set(pieces["change"]) == {"growth"}
    # the same command again (another folder): the same bytes (no timings or run ids in the files)
    r = subprocess.run([sys.executable, "-m", "minewatch.cli.main", "change", str(det), "--out", "again"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    for name in ("change.geojson", "change.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "change out" / name).read_bytes(), name
    r = subprocess.run([sys.executable, "-m", "minewatch.cli.main", "change", str(det), "--out", "x", "--min-polygon-ha", "-1"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2 and "--min-polygon-ha" in r.stderr


@pytest.mark.parametrize("command", ["change", "persist"])
def test_out_that_is_the_input_folder_is_refused(tmp_path: Path, command: str) -> None:
    """``--out`` pointed at the folder of layers it reads: one-line refusal, the folder untouched
    (outputs there would also be read as layers by the next command)."""
    det = shared_data_dir() / "upstream" / "detections"
    layers = tmp_path / "my layers"
    layers.mkdir()
    for code in ("202300", "202400"):
        (layers / f"mining_{code}_simplified.geojson").write_bytes((det / f"mining_{code}_simplified.geojson").read_bytes())
    before = {p.name: p.read_bytes() for p in layers.iterdir()}
    r = subprocess.run([sys.executable, "-m", "minewatch.cli.main", command, "my layers", "--out", "my layers"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "is also the input" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in layers.iterdir()} == before
