"""Issue 12 §3: at a UTM zone seam every location is scored by exactly one patch of one zone.

Before: a raster straddling a seam was scored by the tiles of both zones over the whole overlap of
their squares (~2× the patches near the seam, 13–33 % more mined area). Now a patch is scored only
when its central cell reaches into its zone's strip (minewatch.detect.lattice.zone_owned).

Real pixels: a mosaic of real labelled chips (../shared/data/s2_rgb_chips, DN ≈ rgb / 255 × 3000)
written as a GeoTIFF across lon −54 (zone 21|22, in zone 21's UTM on the 10 m lattice) and across
lon −60 (zone 20|21, in WGS84 degrees), detected through the CLI as typed.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.transform import Affine

from minewatch.cli.main import cli
from minewatch.grid import Tile, _transformer

P, S = 48, 24
LO = (P - S) // 2  # central cell of a patch: [offset + 12, offset + 36) px


def _write(path: Path, dn: np.ndarray, crs: str, transform: Affine) -> Path:
    """A uint16 GeoTIFF with band names, nodata 0 and the processing level, as composites are."""
    h, w, _ = dn.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint16", crs=crs, transform=transform, nodata=0) as dst:
        dst.write(np.moveaxis(dn, -1, 0))
        dst.descriptions = ("B4", "B3", "B2")
        dst.update_tags(PROCESSING_LEVEL="L1C", START_DATE="2024-01-01", END_DATE="2024-12-31")
    return path


def _chip_mosaic(chips, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(chips), n * n, replace=False)
    rgb = chips.pixels[idx] if chips.pixels.dtype == np.uint8 else chips.pixels[idx]
    rgb = rgb.reshape(n, n, P, P, 3).transpose(0, 2, 1, 3, 4).reshape(n * P, n * P, 3)
    return np.clip(np.round(rgb.astype(np.float64) / 255.0 * 3000.0), 1, None).astype(np.uint16)


def _centre_cells(df: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each scored patch's central cell (in its tile's UTM) and its tile's zone."""
    cells, zones = [], []
    for tid, row, col in zip(df["tile"], df["row"], df["col"], strict=True):
        t = Tile.from_id(tid, tile_px=480)
        left, _, _, top = t.bounds
        x0, y1 = left + (col + LO) * 10.0, top - (row + LO) * 10.0
        cells.append((t.epsg, shapely.box(x0, y1 - S * 10.0, x0 + S * 10.0, y1)))
        zones.append(t.zone)
    return np.array(cells, dtype=object), np.array(zones)


def _strip(zone: int) -> shapely.Polygon:
    w = -180.0 + 6.0 * (zone - 1)
    return shapely.box(w, -80, w + 6.0, 80)


def _check_exactly_once(df: gpd.GeoDataFrame, interior_wgs84: shapely.Polygon, rng: np.random.Generator) -> None:
    cells, zones = _centre_cells(df)
    # 1. no patch is scored for ground wholly outside its zone's strip
    cells_ll = np.array([shapely.transform(g, lambda xy, e=e: np.column_stack(_transformer(e, 4326).transform(xy[:, 0], xy[:, 1]))) for e, g in cells], dtype=object)
    strips = np.array([_strip(z) for z in zones], dtype=object)
    assert shapely.intersects(cells_ll, strips).all()
    # 2. every location inside the imagery (away from its edges) is owned by exactly one scored patch:
    #    the patch whose central cell holds it, of the zone whose strip holds it
    x0, y0, x1, y1 = interior_wgs84.bounds
    pts = np.column_stack([rng.uniform(x0, x1, 3000), rng.uniform(y0, y1, 3000)])
    pts = pts[shapely.contains_xy(interior_wgs84, pts[:, 0], pts[:, 1])]
    count = np.zeros(len(pts), dtype=int)
    owner = shapely.intersection(cells_ll, strips)
    tree = shapely.STRtree(owner)
    i, j = tree.query(shapely.points(pts), predicate="intersects")
    np.add.at(count, i, 1)
    assert len(pts) > 1000 and (count == 1).all(), np.bincount(count)
    # 3. ... and the central cells of one zone do not overlap each other (one lattice, one owner)
    for z in np.unique(zones):
        g = cells_ll[zones == z]
        a, b = shapely.STRtree(g).query(g, predicate="overlaps")
        assert len(a) == 0


def _detect(imagery: str, out: str):
    r = CliRunner().invoke(cli, ["detect", "--imagery", imagery, "--out", out, "--period", "2024", "--min-score", "0",
                                 "--tile-px", "480", "--scheduler", "synchronous", "--quiet"])
    return r


@pytest.fixture(scope="module")
def seam_rasters(real_chips, tmp_path_factory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("seam imagery")
    n = 12  # 12 × 12 real chips: 576 px, 5.76 km
    # across lon −54 in zone 21's own UTM, on the 10 m lattice (the seam near easting 832.7 km at 5°S)
    x0, y0 = 830_000.0, 9_447_000.0
    utm = _write(d / "across 54 utm21.tif", _chip_mosaic(real_chips, n, 1), "EPSG:32721", Affine(10, 0, x0, 0, -10, y0))
    # across lon −60 in WGS84 degrees (reprojected onto each zone's tiles)
    res = 0.0001
    geo = _write(d / "across 60 wgs84.tif", _chip_mosaic(real_chips, n, 2), "EPSG:4326", Affine(res, 0, -60.028, 0, -res, -4.0))
    # composites at a seam: the same ground as two rasters, one per zone, each on its zone's lattice
    # and each reaching past the seam (as the composite stage writes seam tiles)
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    both = d / "seam composites"
    both.mkdir()
    _write(both / "21S.tif", _chip_mosaic(real_chips, n, 3), "EPSG:32721", Affine(10, 0, x0, 0, -10, y0))
    with rasterio.open(both / "21S.tif") as src:
        t22, w22, h22 = calculate_default_transform(src.crs, "EPSG:32722", src.width, src.height, *src.bounds, resolution=10)
        t22 = Affine(10, 0, np.floor(t22.c / 10) * 10, 0, -10, np.ceil(t22.f / 10) * 10)
        dst = np.zeros((3, h22 + 1, w22 + 1), dtype=np.uint16)
        reproject(src.read(), dst, src_transform=src.transform, src_crs=src.crs, dst_transform=t22, dst_crs="EPSG:32722",
                  resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
    _write(both / "22S.tif", np.moveaxis(dst, 0, -1), "EPSG:32722", t22)
    return {"dir": d, "utm": utm, "geo": geo, "both": both, "n": n}


@pytest.mark.parametrize("case", ["utm", "geo", "both"])
def test_real_pixels_across_a_seam_are_scored_once(seam_rasters, case, monkeypatch):
    d = seam_rasters["dir"]
    monkeypatch.chdir(d)
    name = Path(seam_rasters[case]).name
    r = _detect(name, f"det {case}")
    assert r.exit_code == 0, r.output
    df = gpd.read_parquet(d / f"det {case}" / "patches.parquet")
    assert df["epsg"].nunique() == 2  # both zones scored their side
    with rasterio.open(seam_rasters[case] if case != "both" else seam_rasters["both"] / "21S.tif") as src:
        b = src.bounds
        foot = shapely.box(*b)
        if case in ("utm", "both"):
            foot = shapely.transform(shapely.segmentize(foot, 100), lambda xy: np.column_stack(_transformer(32721, 4326).transform(xy[:, 0], xy[:, 1])))
    interior = foot.buffer(-0.005)  # ~550 m: every patch around an interior point lies on the imagery
    _check_exactly_once(df, interior, np.random.default_rng(0))
    # about one patch per 240 m cell of ground, not one per zone (the old way scored ~1.6× as many here)
    ground_m2 = gpd.GeoSeries([foot], crs=4326).to_crs("EPSG:6933").area.iloc[0]
    assert len(df) < 1.1 * ground_m2 / (S * 10.0) ** 2


# ------------------------------------------------------------------------------- property (pure path)


@pytest.fixture(scope="module")
def scorer():
    from minewatch.detect.scorer import Scorer

    return Scorer.load(["default"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    seam=st.sampled_from([-54.0, -60.0, -48.0]),
    lat=st.floats(-12.0, 4.0),
    dx=st.floats(-0.04, 0.0),
    w=st.integers(300, 700),
    h=st.integers(250, 500),
    kind=st.sampled_from(["west-utm", "east-utm", "wgs84"]),
    seed=st.integers(0, 2**16),
)
def test_property_random_rasters_across_a_seam_every_location_once(tmp_path_factory, scorer, seam, lat, dx, w, h, kind, seed):
    """Random rasters placed across a zone seam, in either zone's UTM or in degrees: the patches
    detect would score (its own planning, tile reading and ownership code) own every location once."""
    from minewatch.detect.engine import DetectRequest, patches_to_score, plan_detect
    from minewatch.detect.imagery import open_imagery, read_tile
    from minewatch.grid import utm_zone

    d = tmp_path_factory.mktemp("prop")
    rng = np.random.default_rng(seed)
    dn = rng.integers(1, 3000, size=(h, w, 3), dtype=np.uint16)
    west = utm_zone(seam - 0.5)
    south = lat < 0
    if kind == "wgs84":
        res = 0.0001
        tr = Affine(res, 0, seam + dx, 0, -res, lat)
        crs = "EPSG:4326"
        foot = shapely.box(seam + dx, lat - h * res, seam + dx + w * res, lat)
    else:
        zone = west if kind == "west-utm" else west + 1
        epsg = (32700 if south else 32600) + zone
        x, y = _transformer(4326, epsg).transform(seam + dx, lat)
        x, y = round(x / 10) * 10.0, round(y / 10) * 10.0
        tr = Affine(10, 0, x, 0, -10, y)
        crs = f"EPSG:{epsg}"
        box = shapely.segmentize(shapely.box(x, y - 10 * h, x + 10 * w, y), 50)
        foot = shapely.transform(box, lambda xy: np.column_stack(_transformer(epsg, 4326).transform(xy[:, 0], xy[:, 1])))
    path = _write(d / "r.tif", dn, crs, tr)
    req = DetectRequest(models=("default",), period="2024", min_valid=1.0, tile_px=480)
    plan = plan_detect(open_imagery(path), req, scorer)
    rows = []
    for job in plan.jobs:
        raster = read_tile(job.rasters, job.tile, plan.bands, P - S)
        _, _, keep = patches_to_score(raster.valid, job.tile, P, S, 1.0)
        r, c = np.nonzero(keep)
        rows += [(job.tile.id, rr * S, cc * S) for rr, cc in zip(r, c, strict=True)]
    df = gpd.GeoDataFrame({"tile": [x[0] for x in rows], "row": [x[1] for x in rows], "col": [x[2] for x in rows]})
    interior = foot.buffer(-0.0045)
    if interior.is_empty or not interior.intersects(shapely.LineString([(seam, -80), (seam, 80)])):
        return  # the seam runs too near the raster's edge for an interior on both sides
    _check_exactly_once(df, interior, rng)
