"""Composites from a local STAC catalog of synthetic Sentinel-2 scenes, checked against numpy.

The catalog (written by the test with pystac) has scenes on several dates, cloudy, shadowed and
clear pixels with an SCL layer, nodata outside a swath, two half-scenes of one overpass, a scene
too cloudy for --max-scene-cloud, a scene outside the date range, and scenes before and after the
2022-01-25 processing-baseline change (one without ``s2:processing_baseline``: the date decides).
The reference composite below is computed directly from the GeoTIFFs with numpy (rasterio reads,
index arithmetic for the 20/60 m → 10 m nearest resampling, ``numpy.nanmedian``), independently of
the odc-stac loader and of :func:`minewatch.imagery.composite.median_composite`.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from shapely.geometry import mapping

from minewatch.errors import MinewatchError
from minewatch.grid import Tile, tiles_for_geometry
from minewatch.imagery.engine import CompositeRequest, run_composites
from minewatch.imagery.sources import resolve_source
from minewatch.imagery.synthetic import SceneSpec, make_catalog
from minewatch.imagery.write import clear_path, composite_path, item_path

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

TILE_PX = 240
T0 = Tile(21, 80, -28, TILE_PX, 10)
T1 = Tile(21, 81, -28, TILE_PX, 10)
START, END = dt.date(2021, 1, 1), dt.date(2022, 12, 31)
BANDS = ("B4", "B3", "B2", "B8", "B5", "B11", "B1", "B9")  # 10, 20 and 60 m bands
MAX_CLOUD = 80.0
CLEAR_SCL = (4, 5, 6, 7, 11)


def _catalog_bounds(margin_m: float = 1200.0) -> tuple[float, float, float, float]:
    l0, b0, _, t0 = T0.bounds
    _, _, r1, _ = T1.bounds
    return (l0 - margin_m, b0 - margin_m, r1 + margin_m, t0 + margin_m)


def _scenes() -> list[SceneSpec]:
    left, bottom, right, top = _catalog_bounds()
    mid = left + 60 * round((right - left) / 2 / 60)
    d = dt.date
    return [
        SceneSpec(d(2021, 3, 1), cloud=0.3),
        SceneSpec(d(2021, 6, 10), cloud=0.4, nodata_cols=0.35),
        SceneSpec(d(2021, 9, 15), cloud=0.1),
        SceneSpec(d(2021, 12, 20), cloud=0.92),  # eo:cloud_cover > MAX_CLOUD: skipped
        SceneSpec(d(2022, 2, 10), cloud=0.2),  # baseline 04.00: +1000 DN
        SceneSpec(d(2022, 5, 5), cloud=0.3, baseline=None),  # no baseline property: the date decides
        SceneSpec(d(2022, 8, 1), cloud=0.25, bounds=(left, bottom, mid, top), suffix="a"),  # one overpass,
        SceneSpec(d(2022, 8, 1), cloud=0.25, bounds=(mid, bottom, right, top), suffix="b"),  # two items
        SceneSpec(d(2023, 2, 1), cloud=0.0),  # outside the window
    ]


@pytest.fixture(scope="module")
def l2a_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_catalog(tmp_path_factory.mktemp("cat_l2a"), epsg=T0.epsg, bounds=_catalog_bounds(), scenes=_scenes(), level="L2A", seed=3)


def _roi(*tiles: Tile, shrink_deg: float = 2e-4) -> shapely.Geometry:
    return shapely.union_all([t.geometry_wgs84() for t in tiles]).buffer(-shrink_deg)


def _write_roi(path: Path, geom: shapely.Geometry) -> Path:
    path.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": mapping(geom)}))
    return path


# --------------------------------------------------------------------------------------------------
# The independent numpy reference
# --------------------------------------------------------------------------------------------------


def _read_on_tile(href: str, tile: Tile) -> np.ndarray:
    """A band file's values on the tile's 10 m grid: each output pixel takes the native pixel its
    centre falls in (nearest); outside the file → 0."""
    with rasterio.open(href) as src:
        arr = src.read(1)
        tr = src.transform
    left, _, _, top = tile.bounds
    res = tile.resolution
    xs = left + (np.arange(tile.shape[1]) + 0.5) * res
    ys = top - (np.arange(tile.shape[0]) + 0.5) * res
    col = np.floor((xs - tr.c) / tr.a).astype(int)
    row = np.floor((ys - tr.f) / tr.e).astype(int)
    out = np.zeros(tile.shape, np.uint16)
    okr = (row >= 0) & (row < arr.shape[0])
    okc = (col >= 0) & (col < arr.shape[1])
    out[np.ix_(okr, okc)] = arr[np.ix_(row[okr], col[okc])]
    return out


def reference_composite(catalog: Path, tile: Tile, bands: tuple[str, ...], level: str = "L2A", rule: str = "scl") -> tuple[np.ndarray, np.ndarray]:
    import pystac

    from minewatch.imagery.sources import COMMON_NAMES

    items = []
    for it in pystac.Catalog.from_file(str(catalog)).get_items(recursive=True):
        day = it.datetime.date()
        if not START <= day <= END or it.properties["eo:cloud_cover"] > MAX_CLOUD:
            continue
        items.append(it)
    by_day: dict[dt.date, list] = {}
    for it in sorted(items, key=lambda i: (i.datetime, i.id)):
        by_day.setdefault(it.datetime.date(), []).append(it)
    obs = []
    for day, group in sorted(by_day.items()):
        planes: dict[str, np.ndarray] = {}
        for it in group:
            pb = it.properties.get("s2:processing_baseline")
            offset = 1000 if (pb is not None and pb >= "04.00") or (pb is None and day >= dt.date(2022, 1, 25)) else 0
            keys = [*bands, *(["SCL"] if rule == "scl" else ["B10"] if rule == "threshold" and "B10" in bands else ["CLOUDMASK"] if rule == "scene" else [])]
            for b in [*keys, "B2", "B4"] if rule == "threshold" else keys:
                key = {"SCL": "scl", "CLOUDMASK": "cloud_mask"}.get(b, COMMON_NAMES.get(b))
                v = _read_on_tile(it.assets[key].get_absolute_href(), tile).astype(np.int64)
                if b not in ("SCL", "CLOUDMASK"):
                    v = np.where(v > 0, np.maximum(v - offset, 1), 0)
                cur = planes.get(b)
                planes[b] = v if cur is None else np.where(cur > 0, cur, v)  # first valid wins
        obs.append(planes)
    stack = np.stack([np.stack([o[b] for b in bands]) for o in obs]).astype(np.float64)  # T,B,Y,X
    if rule == "scl":
        clear = np.stack([np.isin(o["SCL"], CLEAR_SCL) for o in obs])
    elif rule == "scene":
        clear = np.stack([o["CLOUDMASK"] == 0 for o in obs])
    else:
        clear = np.stack([~(((o["B2"] > 1800) & (o["B2"] >= 0.85 * o["B4"])) | ((o["B10"] > 120) if "B10" in o else False)) for o in obs])
    usable = clear & (stack > 0).all(axis=1)
    vals = np.where(usable[:, None], stack, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(vals, axis=0)
    med = np.where(np.isnan(med), 0, np.round(med)).astype(np.uint16)
    return med, usable.sum(axis=0).astype(np.uint16)


# --------------------------------------------------------------------------------------------------
# Composites against the reference
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def l2a_run(l2a_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run_l2a")
    tiles = tiles_for_geometry(_roi(T0, T1), TILE_PX)
    assert tiles == [T0, T1]
    req = CompositeRequest(start=START, end=END, bands=BANDS, level="L2A", max_scene_cloud=MAX_CLOUD, chunk_px=96)
    res = run_composites(tiles, req, resolve_source(str(l2a_catalog), "L2A"), out, scheduler="synchronous", progress=False)
    assert res.ok and sorted(res.done) == [T0.id, T1.id]
    return out


@pytest.mark.parametrize("tile", [T0, T1], ids=lambda t: t.id)
def test_composite_matches_numpy_reference_pixel_for_pixel(l2a_run: Path, l2a_catalog: Path, tile: Tile) -> None:
    want_med, want_count = reference_composite(l2a_catalog, tile, BANDS)
    with rasterio.open(composite_path(l2a_run, tile.id)) as src:
        got = src.read()
    with rasterio.open(clear_path(l2a_run, tile.id)) as src:
        count = src.read(1)
    # The fixture is demanding enough to mean something:
    assert 0 < (want_count == 0).mean() < 0.5, "some pixels never clear, most have data"
    assert want_count.max() >= 4 and len(np.unique(want_count)) >= 4
    np.testing.assert_array_equal(count, want_count)
    for i, b in enumerate(BANDS):
        np.testing.assert_array_equal(got[i], want_med[i], err_msg=f"band {b}")


def test_composite_files_record_level_bands_grid_and_are_cogs(l2a_run: Path) -> None:
    with rasterio.open(composite_path(l2a_run, T0.id)) as src:
        assert src.descriptions == BANDS
        assert src.dtypes == ("uint16",) * len(BANDS) and src.nodata == 0
        assert src.crs.to_epsg() == T0.epsg and src.transform == T0.transform and src.shape == T0.shape
        assert src.tags()["PROCESSING_LEVEL"] == "L2A" and src.tags()["BANDS"] == ",".join(BANDS)
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
        assert src.overviews(1) and src.block_shapes[0] == (256, 256)
    item = json.loads(item_path(l2a_run, T0.id).read_text())
    props = item["properties"]
    assert props["processing:level"] == "L2A" and props["minewatch:bands"] == list(BANDS)
    assert props["proj:code"] == f"EPSG:{T0.epsg}" and props["proj:shape"] == [TILE_PX, TILE_PX]
    assert props["proj:transform"] == list(T0.transform)[:6]
    assert props["start_datetime"].startswith("2021-01-01") and props["end_datetime"].startswith("2022-12-31")
    assert props["minewatch:observations"] == 6  # 9 scenes - too cloudy - out of range - one overpass in two items
    assert [b["name"] for b in item["assets"]["composite"]["eo:bands"]] == list(BANDS)
    assert (item_path(l2a_run, T0.id).parent / item["assets"]["composite"]["href"]).resolve() == composite_path(l2a_run, T0.id).resolve()
    # The run folder is itself a local catalog the next stage (or another composite) can read.
    coll = json.loads((l2a_run / "collection.json").read_text())
    assert len([link for link in coll["links"] if link["rel"] == "item"]) == 2


def test_tile_list_written_and_covers_roi_without_gaps_or_overlaps(l2a_run: Path) -> None:
    from pyproj import Transformer
    from shapely.ops import transform

    fc = json.loads((l2a_run / "tiles.geojson").read_text())
    assert [f["properties"]["tile"] for f in fc["features"]] == [T0.id, T1.id]
    to_utm = Transformer.from_crs(4326, T0.epsg, always_xy=True).transform
    squares = [Tile.from_id(f["properties"]["tile"], TILE_PX).geometry() for f in fc["features"]]
    roi_utm = transform(to_utm, _roi(T0, T1))
    assert shapely.union_all(squares).covers(roi_utm)
    assert squares[0].intersection(squares[1]).area == 0
    assert squares[0].touches(squares[1])


def test_shifted_roi_shares_pixel_boundaries(l2a_catalog: Path, l2a_run: Path, tmp_path: Path) -> None:
    """A second run over an ROI shifted by a fraction of a pixel lands on the same lattice: the
    shared tile is byte-for-byte the same raster, and every tile's origin is on the 10 m grid."""
    shifted = shapely.affinity.translate(T1.geometry_wgs84().buffer(-2e-4), xoff=3.3e-5, yoff=-4.1e-5)
    tiles = tiles_for_geometry(shifted, TILE_PX)
    assert T1 in tiles
    req = CompositeRequest(start=START, end=END, bands=BANDS, level="L2A", max_scene_cloud=MAX_CLOUD, chunk_px=128)
    run_composites(tiles, req, resolve_source(str(l2a_catalog), "L2A"), tmp_path, scheduler="threads", workers=2, progress=False)
    for t in tiles:
        with rasterio.open(composite_path(tmp_path, t.id)) as src:
            assert src.transform.c % 10 == 0 and src.transform.f % 10 == 0
    with rasterio.open(composite_path(tmp_path, T1.id)) as a, rasterio.open(composite_path(l2a_run, T1.id)) as b:
        assert a.transform == b.transform
        np.testing.assert_array_equal(a.read(), b.read())


# --------------------------------------------------------------------------------------------------
# Resumability
# --------------------------------------------------------------------------------------------------


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "tiles").iterdir())} | {"collection.json": (out / "collection.json").read_bytes()}


def test_rerun_after_lost_outputs_is_identical_and_skips_finished_tiles(l2a_catalog: Path, l2a_run: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(l2a_run, out)
    want = _files(l2a_run)
    # Simulate a run killed while writing T1: its COG gone, a stray temp file left, T0 finished.
    composite_path(out, T1.id).unlink()
    stray = out / "tiles" / f".{T1.id}.tmp-99999.tif"
    stray.write_bytes(b"half a tiff")
    t0_mtime = composite_path(out, T0.id).stat().st_mtime_ns
    req = CompositeRequest(start=START, end=END, bands=BANDS, level="L2A", max_scene_cloud=MAX_CLOUD, chunk_px=96)
    res = run_composites([T0, T1], req, resolve_source(str(l2a_catalog), "L2A"), out, scheduler="synchronous", progress=False)
    assert res.done == [T1.id] and res.skipped == [T0.id]
    assert composite_path(out, T0.id).stat().st_mtime_ns == t0_mtime
    assert not stray.exists()
    assert _files(out) == want


def test_rerun_with_other_parameters_is_refused(l2a_catalog: Path, l2a_run: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(l2a_run, out)
    req = CompositeRequest(start=START, end=END, bands=("B4", "B3", "B2"), level="L2A", max_scene_cloud=MAX_CLOUD)
    with pytest.raises(MinewatchError, match="different parameters"):
        run_composites([T0, T1], req, resolve_source(str(l2a_catalog), "L2A"), out, scheduler="synchronous", progress=False)


# --------------------------------------------------------------------------------------------------
# L1C: scene mask and the threshold fallback
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["scene", "threshold"])
def test_l1c_composite_matches_reference(tmp_path: Path, rule: str) -> None:
    bands = ("B4", "B3", "B2", "B10", "B12")
    cat = make_catalog(tmp_path / "cat", epsg=T0.epsg, bounds=_catalog_bounds(), scenes=_scenes()[:6], bands=("B2", "B3", "B4", "B10", "B12"), level="L1C", seed=5, scene_mask=rule == "scene")
    req = CompositeRequest(start=START, end=END, bands=bands, level="L1C", max_scene_cloud=MAX_CLOUD, mask="threshold" if rule == "threshold" else None)
    res = run_composites([T0], req, resolve_source(str(cat), "l1c"), tmp_path / "out", scheduler="synchronous", progress=False)
    assert res.ok
    want_med, want_count = reference_composite(cat, T0, bands, level="L1C", rule=rule)
    with rasterio.open(composite_path(tmp_path / "out", T0.id)) as src:
        got = src.read()
        assert src.tags()["PROCESSING_LEVEL"] == "L1C"
        assert src.tags()["CLOUD_MASK"] == ("scene-mask" if rule == "scene" else "threshold")
    with rasterio.open(clear_path(tmp_path / "out", T0.id)) as src:
        np.testing.assert_array_equal(src.read(1), want_count)
    np.testing.assert_array_equal(got, want_med)
    assert json.loads(item_path(tmp_path / "out", T0.id).read_text())["properties"]["processing:level"] == "L1C"


def test_local_catalog_of_other_level_is_refused(l2a_catalog: Path) -> None:
    with pytest.raises(MinewatchError, match="is L2A but --level is l1c"):
        resolve_source(str(l2a_catalog), "l1c").search(_roi(T0), START, END)


def test_scene_in_another_utm_zone_is_reprojected_onto_the_tile_crs(tmp_path: Path) -> None:
    """A scene stored in the neighbouring zone's CRS comes out on the tile's own grid (never a mixed-CRS array)."""
    from pyproj import Transformer

    other = 32720  # zone 20S; T0 is in zone 21S
    tr = Transformer.from_crs(T0.epsg, other, always_xy=True)
    l, b, r, t = T0.bounds
    xs, ys = tr.transform([l, r, l, r], [b, b, t, t])
    bounds = (60 * np.floor(min(xs) / 60) - 600, 60 * np.floor(min(ys) / 60) - 600, 60 * np.ceil(max(xs) / 60) + 600, 60 * np.ceil(max(ys) / 60) + 600)
    cat = make_catalog(tmp_path / "cat", epsg=other, bounds=bounds, scenes=[SceneSpec(dt.date(2021, 5, 1), cloud=0.0), SceneSpec(dt.date(2021, 6, 1), cloud=0.2)], bands=("B4", "B8"), seed=1)
    req = CompositeRequest(start=START, end=END, bands=("B4", "B8"), level="L2A")
    assert run_composites([T0], req, resolve_source(str(cat), "l2a"), tmp_path / "out", scheduler="synchronous", progress=False).ok
    with rasterio.open(composite_path(tmp_path / "out", T0.id)) as src:
        assert src.crs.to_epsg() == T0.epsg and src.transform == T0.transform
        data = src.read()
    assert (data > 0).mean() > 0.99 and 300 < np.median(data[0]) < 3000


def test_item_collection_file_with_relative_hrefs_is_a_source(l2a_catalog: Path, l2a_run: Path, tmp_path: Path) -> None:
    """An ItemCollection (FeatureCollection of items) file works like a catalog; relative asset hrefs
    resolve against the file's folder."""
    import os

    from minewatch.imagery.sources import read_local_items

    items = read_local_items(l2a_catalog)
    for it in items:
        for a in it["assets"].values():
            assert os.path.isabs(a["href"])
            a["href"] = os.path.relpath(a["href"], l2a_catalog.parent)
    ic = l2a_catalog.parent / "items.json"
    ic.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    back = read_local_items(ic, "L2A")
    assert len(back) == len(items) and all(Path(a["href"]).is_file() for it in back for a in it["assets"].values())
    req = CompositeRequest(start=START, end=END, bands=BANDS, level="L2A", max_scene_cloud=MAX_CLOUD)
    assert run_composites([T0], req, resolve_source(str(ic), "l2a"), tmp_path, scheduler="synchronous", progress=False).ok
    with rasterio.open(composite_path(tmp_path, T0.id)) as a, rasterio.open(composite_path(l2a_run, T0.id)) as b:
        np.testing.assert_array_equal(a.read(), b.read())
