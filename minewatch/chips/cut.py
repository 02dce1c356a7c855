"""Chips cut from imagery that already exists: the adaptation loop's ``review → chips`` step.

``minewatch chips --imagery`` reads any input ``detect`` accepts (a GeoTIFF/COG, a folder of them,
a ``composite`` run folder or a STAC JSON; :func:`minewatch.detect.imagery.open_imagery`) instead
of compositing from a STAC source, so the chips hold exactly the pixels the detector scored.

Points come from a labelled GeoJSON (as for the STAC path) or from what ``minewatch review``
exports: its CSV (``detection_id, lon, lat, label, …``) or a GeoJSON of the same rows. Review labels
``yes``/``no`` become 1/0; ``skip`` and unlabelled rows are dropped (and counted).

Where a chip lies: on the imagery's own UTM lattice (the zone of the raster under the point, else
the point's zone), the same global 10 m lattice detection uses. Review points are snapped to the
*patch* they belong to: the 48 px patch of the 24 px detection lattice whose centre is nearest the
point, so the chip is exactly a patch the detector scored (``--snap patch``, the default for review
input); other points get the window centred on their pixel (``--snap pixel``, as the STAC path).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from minewatch.bands import BandSpec
from minewatch.errors import MinewatchError
from minewatch.grid import DEFAULT_RESOLUTION, DEFAULT_TILE_PX, STEP_PX, Tile, _transformer, utm_epsg, utm_zone

from .sample import RENDERINGS, ChipWindow, LabelledPoint, cut_chip, read_points

REVIEW_LABELS = {"yes": 1, "y": 1, "1": 1, "true": 1, "mine": 1, "no": 0, "n": 0, "0": 0, "false": 0, "not-mine": 0, "not mine": 0}
REVIEW_SKIP = {"skip", "s", "unsure", ""}
ID_FIELDS = ("detection_id", "patch_id", "id")


@dataclass(frozen=True)
class ReviewedPoint:
    """A labelled point plus what identifies it in the review (patch / detection id)."""

    point: LabelledPoint
    patch_id: str


@dataclass(frozen=True)
class PointsInput:
    points: list[ReviewedPoint]
    kind: str
    """``review`` (review CSV/GeoJSON: snapped to patches by default) or ``points``."""
    dropped: int
    """Review rows labelled skip or left unlabelled."""


def _review_label(raw: Any, where: str, what: str) -> int | None:
    s = "" if raw is None else str(raw).strip().lower()
    if s in REVIEW_SKIP:
        return None
    if s not in REVIEW_LABELS:
        raise MinewatchError(where, f"{what}: label {raw!r} is not yes, no, skip or empty")
    return REVIEW_LABELS[s]


def _lonlat(lon: Any, lat: Any, where: str, what: str) -> tuple[float, float]:
    try:
        x, y = float(lon), float(lat)
    except (TypeError, ValueError):
        raise MinewatchError(where, f"{what}: lon/lat {lon!r}, {lat!r} are not numbers") from None
    if not (math.isfinite(x) and math.isfinite(y) and -180 <= x <= 180 and -84 <= y <= 84):
        raise MinewatchError(where, f"{what}: ({x}, {y}) is not a WGS84 lon/lat within the UTM grid")
    return x, y


def read_review_csv(path: Path) -> PointsInput:
    """Rows of a ``minewatch review`` CSV export: lon, lat, label (yes/no/skip/empty), detection id."""
    where = str(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = {c.strip().lower(): c for c in reader.fieldnames or []}
            missing = [c for c in ("lon", "lat", "label") if c not in cols]
            if missing:
                raise MinewatchError(where, f"no {', '.join(repr(m) for m in missing)} column (expected the CSV exported by the review page)")
            idcol = next((cols[c] for c in ID_FIELDS if c in cols), None)
            out, dropped = [], 0
            for line, row in enumerate(reader, start=2):
                lab = _review_label(row.get(cols["label"]), where, f"line {line}")
                if lab is None:
                    dropped += 1
                    continue
                lon, lat = _lonlat(row.get(cols["lon"]), row.get(cols["lat"]), where, f"line {line}")
                pid = str(row.get(idcol) or "") if idcol else ""
                out.append(ReviewedPoint(LabelledPoint(line - 2, lon, lat, lab), pid or f"row{line - 2}"))
    except UnicodeDecodeError as e:
        raise MinewatchError(where, f"not a UTF-8 CSV ({e})") from None
    return PointsInput(out, "review", dropped)


def read_review_geojson(path: Path, obj: dict[str, Any]) -> PointsInput:
    """A GeoJSON of reviewed rows: features with a ``label`` property (yes/no/skip); a polygon stands
    for the detection at its representative point (the point the review page shows)."""
    import shapely
    from shapely.geometry import shape

    where = str(path)
    out, dropped = [], 0
    for i, f in enumerate(obj.get("features") or []):
        props = (f or {}).get("properties") or {}
        lab = _review_label(props.get("label"), where, f"feature {i}")
        if lab is None:
            dropped += 1
            continue
        g = (f or {}).get("geometry")
        if not g:
            if "lon" in props and "lat" in props:
                lon, lat = _lonlat(props["lon"], props["lat"], where, f"feature {i}")
            else:
                raise MinewatchError(where, f"feature {i} has no geometry and no lon/lat")
        else:
            try:
                geom = shape(g)
            except (ValueError, TypeError, AttributeError, KeyError) as e:
                raise MinewatchError(where, f"feature {i}: invalid geometry ({e})") from None
            if geom.is_empty:
                raise MinewatchError(where, f"feature {i}: empty geometry")
            p = geom if geom.geom_type == "Point" else shapely.point_on_surface(geom)
            lon, lat = _lonlat(p.x, p.y, where, f"feature {i}")
        pid = next((str(props[k]) for k in ID_FIELDS if props.get(k) not in (None, "")), f"feature{i}")
        out.append(ReviewedPoint(LabelledPoint(i, lon, lat, lab), pid))
    return PointsInput(out, "review", dropped)


def read_points_any(path: str | os.PathLike[str], label: int | None = None, label_field: str | None = None) -> PointsInput:
    """Points from a review CSV, a review GeoJSON (features with a yes/no ``label``, no --label given)
    or a labelled-points GeoJSON (``--label`` / ``--label-field``, as :func:`read_points`)."""
    path = Path(path)
    if not path.is_file():
        raise MinewatchError(path, "points file not found")
    if path.suffix.lower() == ".csv":
        if label is not None or label_field is not None:
            raise MinewatchError("--label/--label-field", "a review CSV carries its own labels; leave these out")
        got = read_review_csv(path)
    elif label is None and label_field is None:
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise MinewatchError(path, f"not valid JSON ({e})") from None
        if not (isinstance(obj, dict) and obj.get("type") == "FeatureCollection"):
            raise MinewatchError(path, "expected a GeoJSON FeatureCollection")
        if not any("label" in ((f or {}).get("properties") or {}) for f in obj.get("features") or []):
            raise MinewatchError("--label/--label-field", f"{path.name} has no review 'label' property: give --label 0|1 or --label-field NAME")
        got = read_review_geojson(path, obj)
    else:
        pts = read_points(path, label, label_field)
        got = PointsInput([ReviewedPoint(p, f"feature{p.index}") for p in pts], "points", 0)
    if not got.points:
        raise MinewatchError(path, f"no point labelled yes/no or 0/1 ({got.dropped} skipped or unlabelled)")
    return got


def lattice_window(
    p: LabelledPoint, size: int, zone: int, snap: str, tile_px: int = DEFAULT_TILE_PX, resolution: float = DEFAULT_RESOLUTION
) -> ChipWindow:
    """The chip window of ``p`` on zone ``zone``'s global lattice (northern projection: one lattice
    across the equator, as the grid). ``snap="pixel"``: centred on the point's pixel;
    ``snap="patch"``: the 48 px detection patch (top-left on the 24 px step) nearest the point,
    cut to ``size`` around that patch's centre."""
    x, y = _transformer(4326, utm_epsg(zone, False)).transform(p.lon, p.lat)
    u, v = x / resolution, -y / resolution  # global pixel column / row (rows grow southwards)
    if snap == "patch":
        half = 48 // 2
        c0 = round((u - half) / STEP_PX) * STEP_PX
        r0 = round((v - half) / STEP_PX) * STEP_PX
        gc, gr = c0 + half - size // 2, r0 + half - size // 2
    elif snap == "pixel":
        gc, gr = math.floor(u) - size // 2, math.floor(v) - size // 2
    else:
        raise MinewatchError("--snap", f"must be 'patch' or 'pixel', got {snap!r}")
    # home tile: the one holding the window's centre pixel; row/col relative to its top-left
    cc, cr = gc + size // 2, gr + size // 2
    ix, jy = math.floor(cc / tile_px), math.floor(cr / tile_px)
    home = Tile(zone, ix, -jy - 1, tile_px, resolution)
    return ChipWindow(p, home, gr - jy * tile_px, gc - ix * tile_px, size)


def window_centre_lonlat(w: ChipWindow) -> tuple[float, float]:
    left, _, _, top = w.home.bounds
    off = 10_000_000.0 if w.home.south else 0.0
    x = left + (w.col + w.size / 2) * w.home.resolution
    y = top - off - (w.row + w.size / 2) * w.home.resolution
    lon, lat = _transformer(utm_epsg(w.home.zone, False), 4326).transform(x, y)
    return float(lon), float(lat)


class _ImageryReader:
    """Tile reads through detection's reader (aligned copy or nearest-neighbour warp), a few cached."""

    def __init__(self, refs: Any, bands: list[str], keep: int = 6) -> None:
        self.refs, self.bands, self.keep = refs, bands, keep
        self.cache: OrderedDict[str, Any] = OrderedDict()

    def tile(self, t: Tile) -> Any:
        from minewatch.detect.imagery import read_tile

        if t.id not in self.cache:
            self.cache[t.id] = read_tile(self.refs, t, self.bands, 0)
            while len(self.cache) > self.keep:
                self.cache.popitem(last=False)
        self.cache.move_to_end(t.id)
        return self.cache[t.id]

    def read(self, t: Tile, win: tuple[int, int, int, int]) -> np.ndarray:
        r0, r1, c0, c1 = win
        return np.moveaxis(self.tile(t).dn[r0:r1, c0:c1], -1, 0)

    def valid(self, t: Tile, win: tuple[int, int, int, int]) -> np.ndarray:
        r0, r1, c0, c1 = win
        return self.tile(t).valid[None, r0:r1, c0:c1]


def _zone_for(lon: float, lat: float, zones: list[tuple[int, tuple[float, float, float, float]]]) -> int:
    for zone, (w, s, e, n) in zones:
        if w <= lon <= e and s <= lat <= n:
            return zone
    return utm_zone(lon)


def chips_from_imagery(
    points_path: str | os.PathLike[str],
    imagery_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    label: int | None = None,
    label_field: str | None = None,
    bands: list[str] | None = None,
    size: int = 48,
    rendering: str = "uint8",
    snap: str | None = None,
    min_valid: float = 0.5,
    tile_px: int = DEFAULT_TILE_PX,
    log: Any = None,
) -> Path:
    """Cut a chip around every labelled point from existing imagery and write a chip dataset.

    ``bands`` default: B4,B3,B2 when the imagery has them, else all its bands. Chips with less than
    ``min_valid`` of their pixels valid (no data, clouds masked in the composite) are left out and
    counted. ``bands.json`` records the bands, rendering and the imagery's processing level.
    """
    from rasterio.warp import transform_bounds

    from minewatch.chips.dataset import ChipSet, save_chips
    from minewatch.detect.imagery import open_imagery, utm_zone_of_epsg

    say = log or (lambda s: None)
    if size <= 0 or size > tile_px:
        raise MinewatchError("--size", f"must be between 1 and the tile size {tile_px}, got {size}")
    if rendering not in RENDERINGS:
        raise MinewatchError("--rendering", f"must be one of {', '.join(RENDERINGS)}, got {rendering!r}")
    if not 0 <= min_valid <= 1:
        raise MinewatchError("--min-valid", f"must be between 0 and 1, got {min_valid}")
    pts = read_points_any(points_path, label, label_field)
    snap = snap or ("patch" if pts.kind == "review" else "pixel")
    img = open_imagery(imagery_path, bands)
    have = list(img.rasters[0].bands)
    if bands is None:
        bands = ["B4", "B3", "B2"] if all(b in have for b in ("B4", "B3", "B2")) else have
    img.check_bands(bands)
    levels = img.levels
    if len(levels) > 1:
        raise MinewatchError(imagery_path, f"imagery mixes processing levels {', '.join(levels)}; cut chips from one level at a time")
    level = levels[0] if levels else "unknown"
    start, end = img.dates
    zones = []
    for r in img.rasters:
        z = utm_zone_of_epsg(r.epsg)
        if z is not None:
            from pyproj import CRS

            zones.append((z[0], tuple(transform_bounds(CRS.from_wkt(r.crs_wkt), "EPSG:4326", *r.bounds, densify_pts=21))))
    windows = [lattice_window(rp.point, size, _zone_for(rp.point.lon, rp.point.lat, zones), snap, tile_px) for rp in pts.points]
    order = sorted(range(len(windows)), key=lambda k: (windows[k].home.zone, windows[k].home.iy, windows[k].home.ix))
    reader = _ImageryReader(img.rasters, list(bands))
    rend = RENDERINGS[rendering]
    keep: dict[int, tuple[np.ndarray, dict[str, Any]]] = {}
    low = 0
    for k in order:
        w, rp = windows[k], pts.points[k]
        dn = cut_chip(w, reader.read, len(bands))
        valid = cut_chip(w, lambda t, win: reader.valid(t, win).astype(np.uint16), 1)[0] > 0
        vf = float(valid.mean())
        if vf < min_valid or not valid.any():
            low += 1
            continue
        hwc = np.moveaxis(dn, 0, -1)
        px = rend.apply(hwc).astype(np.uint8) if rendering == "uint8" else hwc.astype(np.uint16)
        lon, lat = window_centre_lonlat(w)
        keep[k] = (px, {
            "chip": k, "source": Path(points_path).stem, "label": rp.point.label, "start_date": start or "", "end_date": end or "",
            "clear": float("nan"), "cell": rp.point.index, "lon": round(lon, 7), "lat": round(lat, 7), "patch_id": rp.patch_id,
            "point_lon": rp.point.lon, "point_lat": rp.point.lat, "valid_frac": round(vf, 4), "tile": w.home.id,
            "row": w.row, "col": w.col, "epsg": w.home.epsg, "level": level, "snap": snap,
        })  # fmt: skip
    if not keep:
        raise MinewatchError(points_path, f"no chip has at least {min_valid:.0%} valid pixels in {imagery_path} (do the points lie on the imagery?)")
    if pts.dropped:
        say(f"{pts.dropped} review row(s) skipped or unlabelled, left out")
    if low:
        say(f"{low} chip(s) with less than {min_valid:.0%} valid pixels (outside the imagery or no data) left out")
    ks = sorted(keep)
    spec = BandSpec(bands=list(bands), rendering=rend, level=level)
    chips = ChipSet(np.stack([keep[k][0] for k in ks]), np.asarray([keep[k][1]["label"] for k in ks], np.uint8), pd.DataFrame([keep[k][1] for k in ks]), spec)
    save_chips(chips, out_dir)
    return Path(out_dir)
