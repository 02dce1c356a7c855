"""Timeline: new mining per period (difference layer), cumulative union, area table — hand-built
geometry with known answers, the published 2018–2024 layers, and the CLI."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner

from minewatch.cli.main import cli
from minewatch.postprocess.geom import area_ha, transformer
from minewatch.postprocess.io import read_layers, read_metadata
from minewatch.postprocess.timeline import new_mining, timeline

EPSG = 32721  # UTM 21S
E0, N0 = 600_000.0, 9_300_000.0


def layer(rows: list[tuple[str, tuple[float, float, float, float], float | None]]) -> gpd.GeoDataFrame:
    """(period, UTM box, stated ha) rows → WGS84 layer with ``stated_ha``."""
    tr = transformer(EPSG, "EPSG:4326")
    boxes = np.array([shapely.box(E0 + b[0], N0 + b[1], E0 + b[2], N0 + b[3]) for _, b, _ in rows])
    g = shapely.transform(shapely.segmentize(boxes, 50.0), lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return gpd.GeoDataFrame({"period": [r[0] for r in rows], "stated_ha": [np.nan if r[2] is None else r[2] for r in rows]},
                            geometry=g, crs=4326)


def test_new_mining_and_cumulative_on_known_squares() -> None:
    # 2018: A = 1 km² (100 ha, stated 10 ha). 2019: B overlaps half of A (stated 20 ha) and C is new.
    # 2020: D lies entirely inside A ∪ B (nothing new).
    lay = layer([
        ("2018", (0, 0, 1000, 1000), 10.0),
        ("2019", (500, 0, 1500, 1000), 20.0),
        ("2019", (5000, 0, 5200, 200), 1.0),
        ("2020", (200, 200, 1200, 800), 5.0),
    ])
    new, cum, table = timeline(lay)
    t = table.set_index("period")
    fp = area_ha(lay.geometry)  # the equal-area area of each input (≈ grid ha / k²)
    k2 = fp[0] / 100.0
    assert t.loc["2018", "new_footprint_ha"] == pytest.approx(100 * k2, rel=1e-6)
    assert t.loc["2019", "new_footprint_ha"] == pytest.approx((50 + 4) * k2, rel=1e-4)
    assert t.loc["2019", "new_area_ha"] == pytest.approx(20 * 0.5 + 1.0, rel=1e-4)  # B half new, C whole
    assert t.loc["2020", "new_footprint_ha"] == pytest.approx(0.0, abs=1e-6)
    assert t.loc["2020", "footprint_ha"] == pytest.approx(60 * k2, rel=1e-4)  # detected, though not new
    assert t.loc["2020", "cumulative_footprint_ha"] == pytest.approx((150 + 4) * k2, rel=1e-4)
    assert t.loc["2020", "n_cumulative_polygons"] == 2  # A∪B, C
    assert t["cumulative_area_ha"].tolist() == pytest.approx([10.0, 21.0, 21.0], rel=1e-4)
    assert new.loc[new["src"] == 2, "whole"].item() and not new.loc[new["src"] == 1, "whole"].item()


def test_pieces_are_disjoint_and_sum_to_the_union() -> None:
    rng = np.random.default_rng(3)
    rows = []
    for p in ("2018", "2019", "2020"):
        for _ in range(25):
            x, y = rng.uniform(0, 4000, 2)
            w, h = rng.uniform(100, 900, 2)
            rows.append((p, (x, y, x + w, y + h), None))
    lay = layer(rows)  # overlaps within and across periods
    new = new_mining(lay, min_piece_ha=0.0)
    g = new.geometry.to_numpy()
    i, j = shapely.STRtree(g).query(g, predicate="intersects")
    m = i < j  # pieces only share boundaries: any overlap is floating-point noise (~1e-14 ha)
    assert area_ha(shapely.intersection(g[i[m]], g[j[m]])).sum() < 1e-9
    union = area_ha(np.array([shapely.union_all(lay.geometry.to_numpy())]))[0]
    assert new["footprint_ha"].sum() == pytest.approx(union, rel=1e-6)
    _, cum, table = timeline(lay)
    assert table["cumulative_footprint_ha"].iloc[-1] == pytest.approx(union, rel=1e-6)
    np.testing.assert_allclose(table["cumulative_footprint_ha"], table["new_footprint_ha"].cumsum(), rtol=1e-6)


def test_touching_is_not_cut_and_slivers_can_be_dropped() -> None:
    lay = layer([("2018", (0, 0, 1000, 1000), None), ("2019", (1000, 0, 2000, 1000), None),
                 ("2019", (990, 2000, 1100, 2100), None), ("2019", (999.5, 0, 1000.5, 1000), None)])
    new = new_mining(lay, min_piece_ha=0.1)
    assert new.loc[new["src"] == 1, "whole"].item()  # sharing an edge removes nothing
    assert 2 in new["src"].tolist()  # a small whole polygon is kept (1.1 ha)
    assert 3 not in new["src"].tolist()  # the 0.05 ha new half of a 0.1 ha strip is a sliver: dropped
    assert 3 in new_mining(lay, min_piece_ha=0.0)["src"].tolist()


def test_new_mining_suits_the_web_map() -> None:
    """The web map calls ``timeline.new_mining(layer)`` on its own layers (``area_ha`` = stated)."""
    lay = layer([("2018", (0, 0, 1000, 1000), None), ("2019", (500, 0, 1500, 1000), None)])
    lay = lay.drop(columns="stated_ha").assign(area_ha=[10.0, 20.0])
    out = new_mining(lay)
    assert {"period", "area_ha", "footprint_ha", "src", "whole"} <= set(out.columns)
    assert out["area_ha"].tolist() == pytest.approx([10.0, 10.0], rel=1e-4)


@pytest.fixture(scope="session")
def published_2018_2024(shared_data: Path) -> gpd.GeoDataFrame:
    d = shared_data / "upstream" / "detections"
    return read_layers([d / f"mining_{y}00_simplified.geojson" for y in range(2018, 2025)])


def test_published_2018_2024_yearly_new_area(published_2018_2024: gpd.GeoDataFrame) -> None:
    new, cum, t = timeline(published_2018_2024)
    assert t["period"].tolist() == [str(y) for y in range(2018, 2025)]
    # the union computed by dissolving equals the running sum of the disjoint new pieces
    np.testing.assert_allclose(t["cumulative_footprint_ha"], t["new_footprint_ha"].cumsum(), rtol=1e-6)
    # the published yearly layers are themselves "new mining" layers: < 0.1 % of each year overlaps earlier years
    assert ((t["footprint_ha"] - t["new_footprint_ha"]) / t["footprint_ha"]).max() < 1e-3
    assert t.loc[0, "new_footprint_ha"] == pytest.approx(963_020, rel=1e-5)
    assert t["cumulative_footprint_ha"].iloc[-1] == pytest.approx(2_238_930, rel=1e-5)
    assert t["new_area_ha"].sum() == pytest.approx(452_197, rel=1e-5)  # estimated mined (Mined area (ha))
    assert (t["new_area_ha"] <= t["stated_ha"] + 1e-6).all()


def test_cli_timeline(tmp_path: Path) -> None:
    a, b = layer([("2018", (0, 0, 1000, 1000), 10.0)]), layer([("2019", (500, 0, 1500, 1000), 20.0)])
    a.drop(columns="period").rename(columns={"stated_ha": "Mined area (ha)"}).to_file(tmp_path / "mining_201800_x.geojson")
    b.rename(columns={"stated_ha": "area_ha"}).to_parquet(tmp_path / "b.parquet")
    out = tmp_path / "tl"
    r = CliRunner().invoke(cli, ["timeline", str(tmp_path / "b.parquet"), str(tmp_path / "mining_201800_x.geojson"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    t = pd.read_csv(out / "areas.csv", dtype={"period": str})
    assert t["period"].tolist() == ["2018", "2019"] and t["new_area_ha"].tolist() == pytest.approx([10.0, 10.0], rel=1e-4)
    assert read_metadata(out / "areas.csv")["parameters"]["periods"] == ["2018", "2019"]
    assert read_metadata(out / "cumulative.parquet")["command"] == "timeline"
    assert len(gpd.read_file(out / "cumulative.geojson")) == 2  # one polygon at each period
    r = CliRunner().invoke(cli, ["timeline", str(tmp_path / "nowhere.geojson"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "nowhere.geojson: file not found" in r.output


@pytest.mark.parametrize("command", ["timeline", "change", "impacts", "map"])
def test_patch_scores_are_not_read_as_mining(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """detect's patches.parquet (every patch ≥ --min-score, overlapping by half, no threshold) given
    where a mining layer belongs — directly or inside a run folder — is refused, not summed as mining."""
    from minewatch.grid import Tile
    from minewatch.postprocess.synthetic import patches_on_tile

    monkeypatch.chdir(tmp_path)
    Path("my run/detect").mkdir(parents=True)
    pt = patches_on_tile(Tile(21, 20, -40), [(r, c, 0.5) for r in range(0, 96, 24) for c in range(0, 96, 24)])
    pt.to_parquet("my run/detect/patches.parquet")
    zones = gpd.GeoDataFrame({"id": ["z"]}, geometry=[shapely.box(*pt.total_bounds).buffer(0.01)], crs=4326)
    zones.to_file("zones.geojson")
    extra = {"impacts": ["--zones", "zones.geojson", "--zone-id-field", "id"]}.get(command, [])
    inputs = [["my run/detect/patches.parquet"]] + ([["my run"]] if command == "change" else [])
    for given in inputs:
        r = CliRunner().invoke(cli, [command, *given, *extra, "--out", "out/map.html" if command == "map" else "out"])
        assert r.exit_code == 2, r.output
        assert "patches.parquet: holds patch scores from 'minewatch detect', not mining polygons" in r.output
        assert not Path("out").exists()
