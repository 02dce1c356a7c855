"""Training chips from labelled points: composite the tiles under the points, cut a window around each.

This is the dataset builder of the reference system, without Earth Engine: a GeoJSON of labelled
points (mine / not-mine sampling locations) becomes a chip dataset in the layout every training
and evaluation command reads (:mod:`minewatch.chips.dataset`).

Where a chip comes from: a point at (lon, lat) falls in one tile of the global grid (its *home*
tile, in the UTM zone of the point); the chip is the ``size`` × ``size`` window of that zone's
10 m lattice whose centre pixel (``size // 2``, ``size // 2``) contains the point. A window that
crosses a tile edge is assembled from the neighbouring tiles of the same zone, which share the
lattice, so a chip never depends on where tile edges happen to lie.

Per chip, ``chips.csv`` records: ``chip, source`` (the points file's name), ``label``,
``start_date, end_date`` (the compositing window), ``clear`` (mean over the chip's pixels of the
fraction of observations that were clear), ``cell`` (the point's feature index: one site),
``lon, lat``, and the extras ``valid_frac`` (pixels with data), ``tile, row, col`` (home tile and the
chip's top-left pixel in it, possibly negative near an edge), ``epsg``, ``level``,
``observations`` and ``composite`` (the home tile's COG, relative to the output folder).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from minewatch.bands import BandSpec, Rendering
from minewatch.errors import MinewatchError
from minewatch.grid import DEFAULT_RESOLUTION, DEFAULT_TILE_PX, Tile, _transformer, utm_epsg, utm_zone

DEFAULT_CHIP_BANDS = ("B4", "B3", "B2")
RENDERINGS = {"uint8": Rendering(kind="uint8_clip", scale=3000.0), "dn": Rendering(kind="linear", scale=1.0, offset=0.0)}
"""``uint8``: the reference rendering ``round(clip(DN/3000,0,1)*255)`` stored as uint8; ``dn``: raw DN (uint16)."""


@dataclass(frozen=True)
class LabelledPoint:
    index: int
    lon: float
    lat: float
    label: int


@dataclass(frozen=True)
class ChipWindow:
    """Where one chip lies on the lattice: its home tile and the top-left pixel in that tile."""

    point: LabelledPoint
    home: Tile
    row: int
    col: int
    size: int

    def tiles(self) -> list[tuple[Tile, int, int]]:
        """(tile, row offset, col offset) of every same-zone tile the window touches, offsets being
        the tile's top-left pixel relative to the home tile's."""
        px = self.home.tile_px
        out = []
        for dj in range(math.floor(self.row / px), math.floor((self.row + self.size - 1) / px) + 1):
            for di in range(math.floor(self.col / px), math.floor((self.col + self.size - 1) / px) + 1):
                t = Tile(self.home.zone, self.home.ix + di, self.home.iy - dj, px, self.home.resolution)
                out.append((t, dj * px, di * px))
        return out


def read_points(path: str | os.PathLike[str], label: int | None = None, label_field: str | None = None) -> list[LabelledPoint]:
    """Labelled points from a WGS84 GeoJSON (Point / MultiPoint features); one-line errors naming the file.

    Exactly one of ``label`` (the same label for every point) and ``label_field`` (a property holding
    0/1, true/false) must be given.
    """
    path = Path(path)
    where = str(path)
    if (label is None) == (label_field is None):
        raise MinewatchError("--label/--label-field", "give exactly one: --label 0|1 for all points, or --label-field NAME")
    if label is not None and label not in (0, 1):
        raise MinewatchError("--label", f"must be 0 or 1, got {label}")
    if not path.is_file():
        raise MinewatchError(where, "points file not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise MinewatchError(where, f"not valid JSON ({e})") from None
    feats = obj.get("features") if isinstance(obj, dict) and obj.get("type") == "FeatureCollection" else [obj] if isinstance(obj, dict) and obj.get("type") == "Feature" else None
    if feats is None:
        raise MinewatchError(where, "expected a GeoJSON FeatureCollection or Feature of points")
    out: list[LabelledPoint] = []
    for i, f in enumerate(feats):
        g = (f or {}).get("geometry") or {}
        if g.get("type") == "Point":
            coords = [g.get("coordinates")]
        elif g.get("type") == "MultiPoint":
            coords = g.get("coordinates") or []
        else:
            raise MinewatchError(where, f"feature {i} is a {g.get('type')}, not a Point")
        if label_field is not None:
            props = f.get("properties") or {}
            if label_field not in props:
                raise MinewatchError(where, f"feature {i} has no property {label_field!r} (--label-field)")
            lab = _as_label(props[label_field])
            if lab is None:
                raise MinewatchError(where, f"feature {i}: {label_field}={props[label_field]!r} is not a 0/1 label")
        else:
            lab = int(label)  # type: ignore[arg-type]
        for c in coords:
            try:
                lon, lat = float(c[0]), float(c[1])
            except (TypeError, ValueError, IndexError):
                raise MinewatchError(where, f"feature {i} has malformed coordinates {c!r}") from None
            if not (-180 <= lon <= 180 and -84 <= lat <= 84) or not (math.isfinite(lon) and math.isfinite(lat)):
                raise MinewatchError(where, f"feature {i}: ({lon}, {lat}) is not a WGS84 lon/lat within the UTM grid; points must be GeoJSON in degrees")
            out.append(LabelledPoint(i, lon, lat, lab))
    if not out:
        raise MinewatchError(where, "contains no points")
    return out


def _as_label(v: Any) -> int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)) and v in (0, 1):
        return int(v)
    if isinstance(v, str) and v.strip().lower() in ("0", "1", "true", "false"):
        return int(v.strip().lower() in ("1", "true"))
    return None


def chip_window(p: LabelledPoint, size: int, tile_px: int = DEFAULT_TILE_PX, resolution: float = DEFAULT_RESOLUTION) -> ChipWindow:
    """The chip window of a point (pure lattice arithmetic, see the module docstring)."""
    zone = utm_zone(p.lon)
    x, y = _transformer(4326, utm_epsg(zone, False)).transform(p.lon, p.lat)  # northern projection: one lattice
    s = tile_px * resolution
    ix, iy = math.floor(x / s), math.floor(y / s)
    col = math.floor((x - ix * s) / resolution)
    row = math.floor(((iy + 1) * s - y) / resolution)
    row, col = min(row, tile_px - 1), min(col, tile_px - 1)
    home = Tile(zone, ix, iy, tile_px, resolution)
    return ChipWindow(p, home, row - size // 2, col - size // 2, size)


def cut_chip(win: ChipWindow, read: Callable[[Tile, tuple[int, int, int, int]], np.ndarray], n_bands: int) -> np.ndarray:
    """Assemble a chip (bands, size, size) from the tiles it touches. ``read(tile, (r0, r1, c0, c1))``
    returns that pixel window of a tile as (bands, r1-r0, c1-c0); missing tiles may return zeros."""
    px = win.home.tile_px
    chip = np.zeros((n_bands, win.size, win.size), np.uint16)
    for tile, roff, coff in win.tiles():
        r0, c0 = max(win.row - roff, 0), max(win.col - coff, 0)
        r1, c1 = min(win.row + win.size - roff, px), min(win.col + win.size - coff, px)
        if r0 >= r1 or c0 >= c1:
            continue
        chip[:, r0 + roff - win.row : r1 + roff - win.row, c0 + coff - win.col : c1 + coff - win.col] = read(tile, (r0, r1, c0, c1))
    return chip


class _TileReader:
    """Window reads from composite COGs (and their clear counts), missing tiles read as zeros."""

    def __init__(self, comp_dir: Path, n_bands: int) -> None:
        self.comp_dir = comp_dir
        self.n_bands = n_bands

    def read(self, tile: Tile, win: tuple[int, int, int, int], clear: bool = False) -> np.ndarray:
        import rasterio
        from rasterio.windows import Window

        from minewatch.imagery.write import clear_path, composite_path

        r0, r1, c0, c1 = win
        path = (clear_path if clear else composite_path)(self.comp_dir, tile.id)
        if not path.exists():
            return np.zeros((1 if clear else self.n_bands, r1 - r0, c1 - c0), np.uint16)
        with rasterio.open(path) as src:
            return src.read(window=Window(c0, r0, c1 - c0, r1 - r0))

    def observations(self, tile: Tile) -> int:
        from minewatch.imagery.write import item_path

        p = item_path(self.comp_dir, tile.id)
        if not p.exists():
            return 0
        return int(json.loads(p.read_text(encoding="utf-8"))["properties"].get("minewatch:observations", 0))


def sample_chips(
    points_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    source: Any,
    start: dt.date,
    end: dt.date,
    label: int | None = None,
    label_field: str | None = None,
    bands: Sequence[str] = DEFAULT_CHIP_BANDS,
    size: int = 48,
    level: str = "L2A",
    rendering: str = "uint8",
    max_scene_cloud: float = 60.0,
    composites_dir: str | os.PathLike[str] | None = None,
    tile_px: int = DEFAULT_TILE_PX,
    resolution: float = DEFAULT_RESOLUTION,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    final_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Build (or reuse) composites for the tiles under the points and write a chip dataset to ``out_dir``.

    ``final_dir``: where the dataset will finally live when ``out_dir`` is a staging folder (the
    CLI's run); the chips' ``composite`` column is relative to it.

    ``source`` is a resolved :class:`minewatch.imagery.sources.Source`. Composites go to
    ``composites_dir`` (default ``out_dir/composites``), a resumable composite run folder: rerunning
    with the same arguments reuses the finished tiles. Chips with no valid pixel are left out (and
    counted in the log). Returns ``out_dir``.
    """
    from minewatch.chips.dataset import ChipSet, save_chips
    from minewatch.imagery.engine import CompositeRequest, run_composites
    from minewatch.imagery.write import composite_path

    if size <= 0 or size > tile_px:
        raise MinewatchError("--size", f"must be between 1 and the tile size {tile_px}, got {size}")
    if rendering not in RENDERINGS:
        raise MinewatchError("--rendering", f"must be one of {', '.join(RENDERINGS)}, got {rendering!r}")
    say = log or (lambda s: None)
    points = read_points(points_path, label, label_field)
    windows = [chip_window(p, size, tile_px, resolution) for p in points]
    tiles = sorted({t for w in windows for t, _, _ in w.tiles()})
    out = Path(out_dir)
    comp_dir = Path(composites_dir) if composites_dir is not None else out / "composites"
    req = CompositeRequest(start=start, end=end, bands=tuple(bands), level=level.upper(), max_scene_cloud=max_scene_cloud)
    say(f"{len(points)} point(s) on {len(tiles)} tile(s); composites in {comp_dir}")
    res = run_composites(tiles, req, source, comp_dir, roi_file=points_path, scheduler=scheduler, workers=workers, progress=progress, log=say)
    if res.failed:
        say(f"{len(res.failed)} tile(s) failed (chips there are partial or left out): {next(iter(res.failed.values()))}")
    if res.empty:
        say(f"{len(res.empty)} tile(s) without imagery (chips there are partial or left out): {next(iter(res.empty.values()))}")

    reader = _TileReader(comp_dir, len(bands))
    rend = RENDERINGS[rendering]
    pixels, rows, labels = [], [], []
    dropped = 0
    for k, w in enumerate(windows):
        dn = cut_chip(w, reader.read, len(bands))
        count = cut_chip(w, lambda t, win: reader.read(t, win, clear=True), 1)[0]
        valid = (dn > 0).all(axis=0)
        if not valid.any():
            dropped += 1
            continue
        n_obs = reader.observations(w.home)
        clear = float(count.mean() / n_obs) if n_obs else 0.0
        hwc = np.moveaxis(dn, 0, -1)
        pixels.append(rend.apply(hwc).astype(np.uint8) if rendering == "uint8" else hwc.astype(np.uint16))
        labels.append(w.point.label)
        rows.append({
            "chip": k, "source": Path(points_path).stem, "label": w.point.label,
            "start_date": start.isoformat(), "end_date": end.isoformat(), "clear": round(clear, 4),
            "cell": w.point.index, "lon": w.point.lon, "lat": w.point.lat,
            "valid_frac": round(float(valid.mean()), 4), "tile": w.home.id, "row": w.row, "col": w.col,
            "epsg": w.home.epsg, "level": level.upper(), "observations": n_obs,
            "composite": os.path.relpath(composite_path(comp_dir, w.home.id), final_dir or out),
        })  # fmt: skip
    if not pixels:
        raise MinewatchError(points_path, "no chip has any valid pixel (no imagery under the points in the window?)")
    if dropped:
        say(f"{dropped} chip(s) without any valid pixel left out")
    spec = BandSpec(bands=list(bands), rendering=rend, level=level.upper())
    chips = ChipSet(np.stack(pixels), np.asarray(labels, np.uint8), pd.DataFrame(rows), spec)
    save_chips(chips, out)
    return out
