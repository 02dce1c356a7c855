"""Precision you can cite: review a reproducible random sample of detections by eye.

``build_review`` draws ``n`` detections with a seeded generator (same layer + seed → same sample),
cuts an RGB thumbnail for each from the composites (B4, B3, B2 rendered as ``clip(DN/3000)``, the
rendering the models see) and writes one self-contained HTML page where a reviewer labels each with
the keyboard (y = mine, n = not a mine, s = skip). Labels persist in the browser (localStorage) and
are exported as CSV; :func:`precision_from_csv` turns that CSV into precision with a 95 % Wilson
interval (the reference system reports 98.2 % on 500 reviewed detections).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from pyproj import Transformer

from minewatch.atomic import write_text_atomic
from minewatch.bands import RGB_BANDS, S2_BANDS_12, S2_BANDS_13, Rendering
from minewatch.errors import MinewatchError
from minewatch.train.metrics import wilson_interval
from minewatch.webmap.layers import read_layers

ASSETS = Path(__file__).resolve().parent / "assets"
THUMB_MIN_PX = 96
"""Smallest thumbnail side in pixels (960 m at 10 m): a 480 m patch with context around it."""
THUMB_MAX_PX = 256
CONTEXT = 1.6
"""Thumbnail side = CONTEXT × the detection's larger bbox side (before the min/max clamp)."""
LABELS = {"yes": "yes", "y": "yes", "1": "yes", "true": "yes", "mine": "yes",
          "no": "no", "n": "no", "0": "no", "false": "no", "not-mine": "no", "not mine": "no",
          "skip": "skip", "s": "skip", "unsure": "skip", "": ""}


# --- imagery ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageryTile:
    """One composite GeoTIFF and where its B4, B3, B2 bands are (1-based band indexes)."""

    path: Path
    crs: str
    bounds: tuple[float, float, float, float]
    bounds_wgs84: tuple[float, float, float, float]
    rgb: tuple[int, int, int]
    res: float


def rgb_band_indexes(descriptions: Sequence[str | None], count: int, where: Path) -> tuple[int, int, int]:
    """1-based indexes of B4, B3, B2: from band descriptions, else by the 12/13-band S2 order, else 3 = RGB."""
    names = [str(d).upper() if d else "" for d in descriptions]
    if all(b in names for b in RGB_BANDS):
        return tuple(names.index(b) + 1 for b in RGB_BANDS)  # type: ignore[return-value]
    for order in (S2_BANDS_12, S2_BANDS_13):
        if count == len(order):
            return tuple(order.index(b) + 1 for b in RGB_BANDS)  # type: ignore[return-value]
    if count == 3:
        return (1, 2, 3)
    raise MinewatchError(where, f"cannot find bands B4, B3, B2 (descriptions {descriptions}, {count} bands)")


def index_imagery(folder: str | Path) -> list[ImageryTile]:
    """Every composite GeoTIFF under ``folder`` (clear-count rasters skipped), with WGS84 bounds;
    ``folder`` may also be one GeoTIFF."""
    import rasterio
    from rasterio.warp import transform_bounds

    folder = Path(folder)
    if folder.is_file():
        if folder.suffix.lower() not in (".tif", ".tiff"):
            raise MinewatchError(folder, "imagery must be a GeoTIFF (.tif) or a folder of them")
        files = [folder]
    elif folder.is_dir():
        files = sorted(folder.rglob("*.tif")) + sorted(folder.rglob("*.tiff"))
    else:
        raise MinewatchError(folder, "imagery not found (give a GeoTIFF or a folder of composite GeoTIFFs)")
    tiles = []
    for p in files:
        if p.stem.endswith("_clear"):
            continue
        try:
            with rasterio.open(p) as src:
                if src.crs is None:
                    continue
                rgb = rgb_band_indexes(src.descriptions, src.count, p)
                b = tuple(src.bounds)
                tiles.append(ImageryTile(p, src.crs.to_string(), b, tuple(transform_bounds(src.crs, "EPSG:4326", *b, densify_pts=21)), rgb, abs(src.transform.a)))
        except MinewatchError:
            continue
        except Exception as e:  # noqa: BLE001 - report unreadable rasters in one line
            raise MinewatchError(p, f"cannot read GeoTIFF ({str(e).splitlines()[0][:160]})") from None
    if not tiles:
        raise MinewatchError(folder, "no GeoTIFF composite with bands B4, B3, B2 found")
    return tiles


def find_tile(tiles: Sequence[ImageryTile], geom_wgs84: Any) -> ImageryTile | None:
    """The tile whose footprint holds the detection's representative point (first match)."""
    pt = shapely.point_on_surface(geom_wgs84)
    x, y = pt.x, pt.y
    for t in tiles:
        w, s, e, n = t.bounds_wgs84
        if w <= x <= e and s <= y <= n:
            tx, ty = Transformer.from_crs(4326, t.crs, always_xy=True).transform(x, y)
            l, b, r, tp = t.bounds
            if l <= tx <= r and b <= ty <= tp:
                return t
    return None


def thumbnail(tile: ImageryTile, geom_wgs84: Any, rendering: Rendering = Rendering()) -> tuple[bytes, int, int, str]:
    """(PNG bytes, width, height, SVG path of the outline in thumbnail pixels) for one detection.

    The window is square, centred on the detection, ``CONTEXT`` times its size (96–256 px); pixels
    outside the raster read as 0 (black).
    """
    import rasterio
    from PIL import Image
    from rasterio.windows import Window

    to_tile = Transformer.from_crs(4326, tile.crs, always_xy=True)
    g = shapely.transform(geom_wgs84, lambda c: np.column_stack(to_tile.transform(c[:, 0], c[:, 1])))
    minx, miny, maxx, maxy = g.bounds
    side_px = int(np.clip(math.ceil(max(maxx - minx, maxy - miny) / tile.res * CONTEXT), THUMB_MIN_PX, THUMB_MAX_PX))
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    with rasterio.open(tile.path) as src:
        inv = ~src.transform
        col, row = inv @ (cx, cy)
        c0, r0 = int(round(col - side_px / 2)), int(round(row - side_px / 2))
        win = Window(c0, r0, side_px, side_px)
        dn = src.read(list(tile.rgb), window=win, boundless=True, fill_value=0)
        wt = src.window_transform(win)
    rgb = rendering.apply(np.moveaxis(dn, 0, -1)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", optimize=True)
    to_px = ~wt
    path = []
    for poly in shapely.get_parts(g):
        for ring in [poly.exterior, *poly.interiors]:
            cs = np.asarray(ring.coords)
            px = [to_px @ (float(x), float(y)) for x, y in cs]
            path.append("M" + "L".join(f"{a:.1f},{b:.1f}" for a, b in px) + "Z")
    return buf.getvalue(), side_px, side_px, "".join(path)


# --- sample -------------------------------------------------------------------------------------
def sample_indexes(n_total: int, n: int, seed: int) -> np.ndarray:
    """A reproducible random sample (without replacement) of ``min(n, n_total)`` row indexes."""
    if n <= 0:
        raise MinewatchError("--sample", "must be a positive number of detections")
    rng = np.random.default_rng(seed)
    return rng.choice(n_total, size=min(n, n_total), replace=False)


@dataclass
class ReviewSample:
    key: str
    """Identifies the sample (layers, seed, size): the browser stores labels under it."""
    items: list[dict[str, Any]]
    n_total: int
    n_missing_imagery: int


def build_sample(layer: gpd.GeoDataFrame, tiles: Sequence[ImageryTile] | None, n: int, seed: int, sources: Sequence[str]) -> ReviewSample:
    """Draw the sample and cut a thumbnail for each detection (None where no imagery covers it)."""
    idx = sample_indexes(len(layer), n, seed)
    key = hashlib.sha256(json.dumps([sorted(sources), seed, n, len(layer)]).encode()).hexdigest()[:16]
    items = []
    missing = 0
    for k, i in enumerate(idx):
        r = layer.iloc[int(i)]
        geom = r.geometry
        pt = shapely.point_on_surface(geom)
        item: dict[str, Any] = {
            "sample": k + 1,
            "detection_id": f"{r['source']}:{int(r['fid'])}" if "fid" in layer.columns else str(int(i)),
            "period": str(r["period"]),
            "area_ha": round(float(r["area_ha"]), 2),
            "score": None if not math.isfinite(float(r["score"])) else round(float(r["score"]), 4),
            "lon": round(pt.x, 6),
            "lat": round(pt.y, 6),
            "img": None,
        }
        tile = find_tile(tiles, geom) if tiles else None
        if tile is None:
            missing += 1
        else:
            png, w, h, path = thumbnail(tile, geom)
            item.update(img="data:image/png;base64," + base64.b64encode(png).decode("ascii"), w=w, h=h, outline=path,
                        tile=tile.path.name)
        items.append(item)
    return ReviewSample(key, items, len(layer), missing)


def render_review_html(sample: ReviewSample, title: str) -> str:
    css = (ASSETS / "review.css").read_text(encoding="utf-8")
    js = (ASSETS / "review.js").read_text(encoding="utf-8")
    data = json.dumps({"key": sample.key, "title": title, "items": sample.items, "n_total": sample.n_total},
                      separators=(",", ":")).replace("</", "<\\/")
    e = html.escape
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title><style>{css}</style></head><body>
<header><h1>{e(title)}</h1>
<div id="rv-progress"></div>
<div class="rv-buttons"><button id="rv-export">Export CSV</button><button id="rv-clear">Clear labels</button></div></header>
<main>
 <section id="rv-card">
  <div id="rv-view"><img id="rv-img" alt="thumbnail"><svg id="rv-svg" preserveAspectRatio="none"><path id="rv-outline"></path></svg>
   <div id="rv-noimg" hidden>No imagery covers this detection: skip it (s).</div></div>
  <div id="rv-meta"></div>
  <div class="rv-keys"><button data-label="yes"><kbd>y</kbd> mine</button><button data-label="no"><kbd>n</kbd> not a mine</button>
   <button data-label="skip"><kbd>s</kbd> skip / unsure</button><button id="rv-prev"><kbd>←</kbd> back</button><button id="rv-next"><kbd>→</kbd> next</button>
   <button id="rv-toggle"><kbd>o</kbd> outline</button></div>
  <p class="rv-help">Is this a mine? Judge the area inside the outline: bare, pitted ground and turbid ponds along
  streams are typical of artisanal gold mining; river sandbars, farm ponds, roads and clouds are not. Labels are
  saved in this browser as you go; export the CSV and run <code>minewatch precision review.csv</code>.</p>
 </section>
 <section id="rv-strip"></section>
</main>
<script id="rv-data" type="application/json">{data}</script>
<script>{js}</script>
</body></html>
"""


def build_review(
    layers: Sequence[str | Path], imagery: str | Path | None, n: int, seed: int, out: str | Path,
    title: str = "minewatch: review a random sample of detections",
) -> ReviewSample:
    """Read the layer(s), draw the sample, cut thumbnails, write the review page; returns the sample."""
    layer = read_layers(list(layers))
    if len(layer) == 0:
        raise MinewatchError(str(layers[0]), "no detections to review")
    tiles = index_imagery(imagery) if imagery is not None else None
    sample = build_sample(layer, tiles, n, seed, [Path(p).name for p in layers])
    write_text_atomic(out, render_review_html(sample, title))
    return sample


# --- precision ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrecisionResult:
    mines: int
    not_mines: int
    skipped: int
    unlabelled: int
    precision: float
    low: float
    high: float

    @property
    def reviewed(self) -> int:
        return self.mines + self.not_mines

    def line(self) -> str:
        if self.reviewed == 0:
            return f"precision: no detection labelled yes or no ({self.skipped} skipped, {self.unlabelled} unlabelled)"
        return (f"precision {self.precision * 100:.1f} % ({self.mines}/{self.reviewed} reviewed detections are mines), "
                f"95 % Wilson interval {self.low * 100:.1f}–{self.high * 100:.1f} %; "
                f"{self.skipped} skipped, {self.unlabelled} unlabelled")


def precision_from_labels(labels: Sequence[str]) -> PrecisionResult:
    """Precision = yes / (yes + no); skipped and unlabelled rows are left out (and counted)."""
    yes = sum(1 for x in labels if x == "yes")
    no = sum(1 for x in labels if x == "no")
    skip = sum(1 for x in labels if x == "skip")
    blank = sum(1 for x in labels if x == "")
    n = yes + no
    lo, hi = wilson_interval(yes, n)
    return PrecisionResult(yes, no, skip, blank, yes / n if n else math.nan, lo, hi)


def read_labels(path: str | Path) -> list[str]:
    """The ``label`` column of a review CSV, normalised to yes / no / skip / '' (one-line errors)."""
    path = Path(path)
    if not path.exists():
        raise MinewatchError(path, "file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise MinewatchError(path, "not a text CSV (not UTF-8): expected the CSV exported by the review page") from None
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "label" not in [c.strip().lower() for c in reader.fieldnames]:
            raise MinewatchError(path, "no 'label' column (expected the CSV exported by the review page)")
        col = next(c for c in reader.fieldnames if c.strip().lower() == "label")
        out = []
        for line, row in enumerate(reader, start=2):
            raw = (row.get(col) or "").strip().lower()
            if raw not in LABELS:
                raise MinewatchError(path, f"line {line}: label {raw!r} is not yes, no, skip or empty")
            out.append(LABELS[raw])
    return out


def precision_from_csv(path: str | Path) -> PrecisionResult:
    return precision_from_labels(read_labels(path))
