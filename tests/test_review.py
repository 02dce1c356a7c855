"""Review sample and precision: reproducible sampling, thumbnails from composites with the outline in
the right place, keyboard labelling in the browser exported as CSV, Wilson interval."""

from __future__ import annotations

import csv
import io
import math
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

from minewatch.errors import MinewatchError
from minewatch.webmap.browser import Browser, find_chromium
from minewatch.webmap.review import (
    build_review,
    index_imagery,
    precision_from_csv,
    precision_from_labels,
    read_labels,
    rgb_band_indexes,
    sample_indexes,
    thumbnail,
    wilson_interval,
)

UTM = "EPSG:32721"
X0, Y0, PX = 600_000.0, 9_300_000.0, 600
MINE_DN = (2600, 2100, 1500)  # B4, B3, B2 inside detections: renders to (221, 179, 128)


def write_scene(tmp: Path, n_poly: int = 30, bands12: bool = False, seed: int = 0) -> tuple[Path, Path]:
    """A uint16 composite (B4,B3,B2 with descriptions, or 12 bands without) and a layer of its bright boxes."""
    rng = np.random.default_rng(seed)
    nb = 12 if bands12 else 3
    data = rng.integers(300, 700, size=(nb, PX, PX)).astype("uint16")
    rgb_pos = (3, 2, 1) if bands12 else (0, 1, 2)  # 0-based positions of B4, B3, B2
    polys = []
    for _ in range(n_poly):
        c, r = (int(v) for v in rng.integers(20, PX - 80, 2))
        w, h = (int(v) for v in rng.integers(8, 40, 2))
        for pos, dn in zip(rgb_pos, MINE_DN, strict=True):
            data[pos, r : r + h, c : c + w] = dn
        polys.append(shapely.box(X0 + c * 10, Y0 - (r + h) * 10, X0 + (c + w) * 10, Y0 - r * 10))
    img = tmp / "imagery"
    img.mkdir(exist_ok=True)
    tif = img / ("comp12.tif" if bands12 else "comp.tif")
    with rasterio.open(tif, "w", driver="GTiff", width=PX, height=PX, count=nb, dtype="uint16", crs=UTM,
                       transform=from_origin(X0, Y0, 10, 10), nodata=0) as dst:
        dst.write(data)
        if not bands12:
            for i, b in enumerate(["B4", "B3", "B2"], 1):
                dst.set_band_description(i, b)
    layer = tmp / "mining_202400.geojson"
    gpd.GeoDataFrame({"score_max": rng.uniform(0.5, 1.0, n_poly)}, geometry=polys, crs=UTM).to_crs(4326).to_file(layer)
    return layer, img


def test_sample_is_reproducible_and_without_replacement() -> None:
    a, b = sample_indexes(1000, 500, 7), sample_indexes(1000, 500, 7)
    assert np.array_equal(a, b) and len(set(a.tolist())) == 500
    assert not np.array_equal(a, sample_indexes(1000, 500, 8))
    assert sorted(sample_indexes(20, 500, 1).tolist()) == list(range(20))  # all when fewer than asked
    with pytest.raises(MinewatchError, match="--sample"):
        sample_indexes(10, 0, 1)


def test_rgb_band_indexes() -> None:
    assert rgb_band_indexes(["B4", "B3", "B2"], 3, Path("x")) == (1, 2, 3)
    assert rgb_band_indexes(["B2", "B3", "B4", "B8"], 4, Path("x")) == (3, 2, 1)
    assert rgb_band_indexes([None] * 12, 12, Path("x")) == (4, 3, 2)
    assert rgb_band_indexes([None] * 13, 13, Path("x")) == (4, 3, 2)
    with pytest.raises(MinewatchError, match="B4, B3, B2"):
        rgb_band_indexes(["B8", "B11"], 2, Path("x.tif"))


@pytest.mark.parametrize("bands12", [False, True])
def test_thumbnail_renders_rgb_and_places_the_outline(tmp_path: Path, bands12: bool) -> None:
    layer, img = write_scene(tmp_path, n_poly=5, bands12=bands12)
    tiles = index_imagery(img)
    assert len(tiles) == 1 and tiles[0].rgb == ((4, 3, 2) if bands12 else (1, 2, 3))
    g = gpd.read_file(layer).geometry.iloc[0]
    png, w, h, path = thumbnail(tiles[0], g)
    im = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert im.shape == (h, w, 3) and w >= 96
    # outline vertices in thumbnail pixels; the pixel at the outline's centre has the mine colour
    xy = np.array([[float(a), float(b)] for a, b in re.findall(r"(-?[\d.]+),(-?[\d.]+)", path)])
    assert ((xy >= -0.5) & (xy <= w + 0.5)).all()
    cx, cy = xy[:, 0].mean(), xy[:, 1].mean()
    expected = np.round(np.clip(np.array(MINE_DN) / 3000, 0, 1) * 255)
    assert np.array_equal(im[int(cy), int(cx)], expected)
    # the outline's box matches the bright block: just inside is bright, just outside is not
    x0, y0 = xy.min(axis=0)
    assert np.array_equal(im[int(y0) + 1, int(x0) + 1], expected)
    assert not np.array_equal(im[int(y0) - 2, int(x0) - 2], expected) or x0 < 2 or y0 < 2


def test_build_review_page_and_cli(tmp_path: Path) -> None:
    from minewatch.cli.main import cli

    layer, img = write_scene(tmp_path)
    out = tmp_path / "review.html"
    r = CliRunner().invoke(cli, ["review", str(layer), "--imagery", str(img), "--sample", "12", "--seed", "4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "12 of 30 detections sampled (seed 4), 12 with imagery" in r.output
    page = out.read_text()
    assert page.count("data:image/png;base64,") >= 12
    assert not re.search(r'<(script|link|img)[^>]+(src|href)=["\']https?:', page)
    # same seed → same sample (same detection ids in the same order); another seed differs
    ids = re.findall(r'"detection_id":"([^"]+)"', page)
    s2 = build_review([layer], img, 12, 4, tmp_path / "again.html")
    assert [it["detection_id"] for it in s2.items] == ids
    s3 = build_review([layer], img, 12, 5, tmp_path / "other.html")
    assert [it["detection_id"] for it in s3.items] != ids
    # a detection outside every composite is kept but has no thumbnail
    s4 = build_review([layer], None, 3, 1, tmp_path / "noimg.html")
    assert s4.n_missing_imagery == 3 and all(it["img"] is None for it in s4.items)
    r = CliRunner().invoke(cli, ["review", str(layer), "--imagery", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.html")])
    assert r.exit_code == 2 and "imagery not found" in r.output and not (tmp_path / "x.html").exists()


def _wilson_by_bisection(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson interval from its definition: the p with |k/n - p| = z·sqrt(p(1-p)/n), solved numerically."""
    ph = k / n

    def f(p: float) -> float:
        return abs(ph - p) - z * math.sqrt(p * (1 - p) / n)

    def root(a: float, b: float) -> float:
        for _ in range(200):
            m = (a + b) / 2
            if (f(a) > 0) == (f(m) > 0):
                a = m
            else:
                b = m
        return (a + b) / 2

    eps = 1e-12  # f vanishes at p = 0 and p = 1: bracket strictly inside
    lo = 0.0 if k == 0 else root(eps, min(ph, 1 - eps))
    hi = 1.0 if k == n else root(max(ph, eps), 1 - eps)
    return lo, hi


@pytest.mark.parametrize("k,n", [(491, 500), (9, 10), (0, 25), (25, 25), (250, 500)])
def test_wilson_interval_matches_its_definition(k: int, n: int) -> None:
    lo, hi = wilson_interval(k, n)
    blo, bhi = _wilson_by_bisection(k, n)
    assert lo == pytest.approx(blo, abs=1e-3) and hi == pytest.approx(bhi, abs=1e-3)
    assert lo <= k / n <= hi


def test_precision_from_csv_and_cli(tmp_path: Path) -> None:
    from minewatch.cli.main import cli

    rows = ["yes"] * 491 + ["no"] * 9 + ["skip"] * 4 + [""] * 2
    p = tmp_path / "review.csv"
    with p.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample", "detection_id", "label"])
        for i, lab in enumerate(rows):
            w.writerow([i + 1, f"x:{i}", lab])
    res = precision_from_csv(p)
    assert (res.mines, res.not_mines, res.skipped, res.unlabelled) == (491, 9, 4, 2)
    assert res.precision == pytest.approx(0.982)
    r = CliRunner().invoke(cli, ["precision", str(p)])
    assert r.exit_code == 0
    lo, hi = wilson_interval(491, 500)
    assert f"precision 98.2 % (491/500" in r.output and f"{lo * 100:.1f}–{hi * 100:.1f} %" in r.output
    assert "4 skipped, 2 unlabelled" in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("sample,label\n1,yes\n2,maybe\n")
    r = CliRunner().invoke(cli, ["precision", str(bad)])
    assert r.exit_code == 2 and "bad.csv: line 3: label 'maybe'" in r.output
    (tmp_path / "nolabel.csv").write_text("a,b\n1,2\n")
    with pytest.raises(MinewatchError, match="no 'label' column"):
        read_labels(tmp_path / "nolabel.csv")
    assert math.isnan(precision_from_labels(["skip", ""]).precision)


def test_review_page_keyboard_labels_persist_and_export(tmp_path: Path) -> None:
    """In Chromium: y / n / s keys label, labels survive a reload (localStorage), the CSV feeds precision."""
    exe = find_chromium()
    if exe is None:
        pytest.fail("Chromium not found: bash scripts/setup.sh installs it (as root, apt-get), or set MINEWATCH_CHROMIUM")
    layer, img = write_scene(tmp_path)
    out = tmp_path / "review.html"
    build_review([layer], img, 10, 2, out)

    def key(b: Browser, k: str) -> None:
        down = {"type": "keyDown", "key": k, **({"text": k} if len(k) == 1 else {})}
        b.send("Input.dispatchKeyEvent", down, session=True)
        b.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": k}, session=True)

    with Browser(width=1200, height=800) as b:
        b.goto(out.resolve().as_uri())
        b.wait_for("!!window.minewatchReview")
        assert b.evaluate("window.minewatchReview.current()") == 1
        for k in "yynsy":
            key(b, k)
        assert b.evaluate("window.minewatchReview.counts()") == {"yes": 3, "no": 1, "skip": 1, "unlabelled": 5}
        assert b.evaluate("window.minewatchReview.current()") == 6
        key(b, "ArrowLeft")
        assert b.evaluate("window.minewatchReview.current()") == 5
        b.screenshot(tmp_path / "review.png")
        b.goto(out.resolve().as_uri())  # reload: labels come back from localStorage
        b.wait_for("!!window.minewatchReview")
        assert b.evaluate("window.minewatchReview.counts()")["yes"] == 3
        assert b.evaluate("window.minewatchReview.current()") == 6  # first unlabelled
        text = b.evaluate("window.minewatchReview.csv()")
        assert b.errors() == [], b.errors()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["label"] for r in rows[:6]] == ["yes", "yes", "no", "skip", "yes", ""]
    assert all(r["labelled_at"] for r in rows[:5])
    (tmp_path / "review.csv").write_text(text)
    res = precision_from_csv(tmp_path / "review.csv")
    assert (res.mines, res.not_mines, res.skipped, res.unlabelled) == (3, 1, 1, 5)
    assert (tmp_path / "review.png").stat().st_size > 10_000


def test_precision_cli_binary_file_and_json_without_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that is not text (e.g. a parquet picked by mistake) is a one-line error, and --json with
    no yes/no row prints null, not NaN (which is not JSON)."""
    import json

    from minewatch.cli.main import cli

    monkeypatch.chdir(tmp_path)
    Path("my reviews").mkdir()
    Path("my reviews/patches.parquet").write_bytes(b"PAR1\x15\x04\x15\xbe\xff\x00label\x00" * 8)
    r = CliRunner().invoke(cli, ["precision", "my reviews/patches.parquet"])
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines() == ["minewatch: error: my reviews/patches.parquet: not a text CSV (not UTF-8): expected the CSV exported by the review page"]
    Path("my reviews/skipped.csv").write_text("sample,label\n1,skip\n2,\n")
    r = CliRunner().invoke(cli, ["precision", "my reviews/skipped.csv", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert doc["precision"] is None and doc["ci95"] == [None, None] and doc["skipped"] == 1 and doc["unlabelled"] == 1
