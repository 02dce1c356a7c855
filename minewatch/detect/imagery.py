"""Imagery for detection: find the rasters, read one tile (plus its halo) of the global grid.

Accepted inputs (:func:`open_imagery`):

* one GeoTIFF/COG;
* a folder: its ``collection.json`` when it is a ``minewatch composite`` run folder, otherwise
  every ``*.tif`` below it (a ``<name>_clear.tif`` beside ``<name>.tif`` is that raster's
  clear-observation count, not imagery);
* a STAC JSON file: an Item, an ItemCollection, or a Catalog/Collection whose ``item`` (and
  ``child``) links lead to items. The asset ``composite`` is the imagery (else the first data
  asset that is a GeoTIFF) and ``clear_count`` its clear-observation count.

Band names come from the raster's band descriptions (the composite stage writes ``B4``, ``B3``, …),
else the STAC ``eo:bands``/``minewatch:bands``, else the ``BANDS`` tag. The processing level comes
from the ``PROCESSING_LEVEL``/``MINEWATCH_LEVEL`` tag or ``processing:level``; dates from
``START_DATE``/``END_DATE`` or ``start_datetime``/``end_datetime``.

Reading a tile (:func:`read_tile`): the tile's pixel grid extended by ``halo`` pixels to the right
and bottom. A raster on the same CRS and pixel lattice is copied by window (no resampling: the
pixels are exactly the composite's); anything else is reprojected with nearest neighbour onto the
tile grid. Where rasters overlap, the first valid pixel (rasters in sorted order) wins.

A pixel is *valid* when a raster covers it, no selected band equals the raster's nodata value (a
raster that declares none: not every band 0), and its clear-observation count (when there is one)
is above zero. Imagery whose values are not digital numbers (float reflectance 0–1, 8-bit RGB) is
refused when it is opened (:func:`check_value_range`). Composites are harmonised with DN
clamped at 1, so 0 only ever means "no data".
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from minewatch.errors import MinewatchError
from minewatch.grid import FALSE_NORTHING_SOUTH, Tile, _transformer, tiles_for_geometry

LEVEL_TAGS = ("PROCESSING_LEVEL", "MINEWATCH_LEVEL")
TIF_SUFFIXES = (".tif", ".tiff")
CLEAR_SUFFIX = "_clear"
_BAND_RE = re.compile(r"^B(\d{1,2}A?)$", re.IGNORECASE)


@dataclass(frozen=True)
class RasterRef:
    """One imagery raster as detection needs to know it (picklable: travels to Dask workers)."""

    path: str
    """Local path or GDAL-readable URL of the GeoTIFF."""
    bands: tuple[str, ...]
    """Band names in file order (``B4``, ``B3``, …)."""
    epsg: int | None
    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    """Affine (a, b, c, d, e, f) of the raster."""
    width: int
    height: int
    nodata: float | None
    level: str | None
    """``L1C`` / ``L2A`` / None (unknown)."""
    clear_path: str | None = None
    """Clear-observation count raster on the same grid (pixels with 0 are not valid), if any."""
    start: str | None = None
    end: str | None = None
    where: str = ""
    """What to name in error messages (the file, or the STAC item that points at it)."""

    @property
    def resolution(self) -> float:
        return abs(self.transform[0])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        a, _, c, _, e, f = self.transform
        x0, x1 = c, c + a * self.width
        y0, y1 = f, f + e * self.height
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    @property
    def is_north_up(self) -> bool:
        a, b, _, d, e, _ = self.transform
        return b == 0 and d == 0 and a > 0 and e < 0

    def band_indexes(self, wanted: Sequence[str]) -> list[int]:
        """1-based band indexes of ``wanted``; a missing band is a one-line error naming the file."""
        lookup = {normalise_band_name(b): i + 1 for i, b in enumerate(self.bands)}
        missing = [b for b in wanted if normalise_band_name(b) not in lookup]
        if missing:
            raise MinewatchError(
                self.where or self.path,
                f"imagery lacks band(s) {','.join(missing)} that the model needs ({','.join(wanted)}); it has {','.join(self.bands) or 'no named bands'}"
                + (f" (the file does not name its bands: say which they are with --bands, e.g. --bands {','.join(wanted)})"
                   if all(b.upper().startswith("BAND") for b in self.bands) else ""),
            )
        return [lookup[normalise_band_name(b)] for b in wanted]


@dataclass(frozen=True)
class Imagery:
    """Every raster of one detection input, with what they have in common."""

    source: str
    rasters: tuple[RasterRef, ...]
    tile_px: int | None = None
    """Tile size the composites were made with (from STAC ``minewatch:tile_px``), if known."""

    @property
    def levels(self) -> list[str]:
        return sorted({r.level for r in self.rasters if r.level})

    @property
    def dates(self) -> tuple[str | None, str | None]:
        starts = sorted({r.start for r in self.rasters if r.start})
        ends = sorted({r.end for r in self.rasters if r.end})
        return (starts[0] if starts else None, ends[-1] if ends else None)

    def check_bands(self, wanted: Sequence[str]) -> None:
        for r in self.rasters:
            r.band_indexes(wanted)


def normalise_band_name(name: str) -> str:
    """``b04``/``B4``/``B04`` → ``B4``; ``B8A`` stays; anything else upper-cased."""
    s = str(name).strip().upper()
    m = _BAND_RE.match(s)
    if not m:
        return s
    num = m.group(1)
    return f"B{int(num[:-1])}A" if num.endswith("A") else f"B{int(num)}"


# --------------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------------


def open_imagery(path: str | os.PathLike[str], bands: Sequence[str] | None = None) -> Imagery:
    """Find every raster of a detection input (see the module docstring); one-line errors.

    ``bands`` (``detect --bands``) names the bands of GeoTIFFs that do not name their own (no band
    descriptions, no ``BANDS`` tag); a file that names them differently is an error.
    """
    p = Path(path)
    if not p.exists():
        raise MinewatchError(p, "imagery not found (give a GeoTIFF, a folder of GeoTIFFs or a STAC JSON file)")
    if p.is_dir():
        coll = p / "collection.json"
        if coll.is_file():
            return _from_stac(coll)
        tifs = sorted(f for f in p.rglob("*") if f.suffix.lower() in TIF_SUFFIXES and f.is_file() and not f.name.startswith("."))
        clear = {f for f in tifs if f.stem.endswith(CLEAR_SUFFIX) and f.with_name(f.stem[: -len(CLEAR_SUFFIX)] + f.suffix) in tifs}
        imgs = [f for f in tifs if f not in clear]
        if not imgs:
            raise MinewatchError(p, "folder holds no GeoTIFF (*.tif) and no collection.json")
        refs = []
        for f in imgs:
            c = f.with_name(f.stem + CLEAR_SUFFIX + f.suffix)
            refs.append(describe_raster(str(f), clear_path=str(c) if c in clear else None, assume_bands=bands))
        return Imagery(str(p), tuple(refs))
    if p.suffix.lower() in (".json", ".geojson"):
        return _from_stac(p)
    if p.suffix.lower() in TIF_SUFFIXES:
        c = p.with_name(p.stem + CLEAR_SUFFIX + p.suffix)
        return Imagery(str(p), (describe_raster(str(p), clear_path=str(c) if c.is_file() else None, assume_bands=bands),))
    return Imagery(str(p), (describe_raster(str(p), assume_bands=bands),))


def describe_raster(
    path: str,
    *,
    bands: Sequence[str] | None = None,
    level: str | None = None,
    clear_path: str | None = None,
    start: str | None = None,
    end: str | None = None,
    where: str | None = None,
    assume_bands: Sequence[str] | None = None,
) -> RasterRef:
    """Open a raster's header only and describe it; STAC-provided fields override the file's.

    ``assume_bands``: band names for a file that does not name its bands (see :func:`open_imagery`).
    """
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(path) as src:
            desc = [d or "" for d in src.descriptions]
            tags = src.tags()
            crs = src.crs
            if crs is None:
                raise MinewatchError(where or path, "raster has no CRS; detection needs georeferenced imagery")
            names = list(bands) if bands else None
            if not names:
                if all(desc):
                    names = desc
                elif tags.get("BANDS") and len(tags["BANDS"].split(",")) == src.count:
                    names = tags["BANDS"].split(",")
                elif assume_bands:
                    names = list(assume_bands)
                else:
                    names = [f"band{i + 1}" for i in range(src.count)]
                if assume_bands and [normalise_band_name(n) for n in names] != [normalise_band_name(n) for n in assume_bands]:
                    raise MinewatchError(where or path, f"the file names its bands {','.join(names)}, not {','.join(assume_bands)} as --bands says")
            if len(names) != src.count:
                if assume_bands and names == list(assume_bands):
                    raise MinewatchError(where or path, f"{src.count} bands in the file but --bands names {len(names)} ({','.join(names)})")
                raise MinewatchError(where or path, f"{src.count} bands in the file but {len(names)} band names given ({','.join(names)})")
            check_value_range(src, where or path)
            lvl = level or next((tags[t] for t in LEVEL_TAGS if tags.get(t)), None)
            ref = RasterRef(
                path=path,
                bands=tuple(normalise_band_name(n) for n in names),
                epsg=crs.to_epsg(),
                crs_wkt=crs.to_wkt(),
                transform=tuple(src.transform)[:6],  # type: ignore[arg-type]
                width=src.width,
                height=src.height,
                nodata=src.nodata,
                level=lvl.upper() if lvl else None,
                clear_path=clear_path,
                start=start or tags.get("START_DATE"),
                end=end or tags.get("END_DATE"),
                where=where or path,
            )
    except RasterioError as e:
        raise MinewatchError(where or path, f"cannot read as a raster ({str(e).splitlines()[0][:200]})") from None
    if not ref.is_north_up:
        raise MinewatchError(ref.where, "raster is rotated or not north-up; warp it to a north-up grid first")
    return ref


REFLECTANCE_MAX = 10.0
"""A float raster whose valid values all stay below this is on a reflectance scale (0–1), not DN."""


def check_value_range(src: Any, where: str) -> None:
    """Refuse imagery whose values are not Sentinel-2 digital numbers (reflectance × 10 000).

    Why: the models render DN (``clip(DN / 3000, 0, 1)``); reflectance 0–1 renders as black and
    scores "no mining" everywhere, exit 0. Integer rasters other than 8-bit are taken as DN (the
    header says enough, nothing is read); float rasters are sampled once (an overview or a
    decimated read of at most 512 × 512 px) and refused when every valid value is below
    :data:`REFLECTANCE_MAX`; 8-bit rasters cannot hold DN and are refused from the header.
    """
    dt = np.dtype(src.dtypes[0])
    if dt.kind in "ui" and dt.itemsize == 1:
        raise MinewatchError(where, f"imagery is 8-bit ({dt.name}, values 0–255): the models need Sentinel-2 digital numbers (reflectance × 10000, e.g. uint16 composites from 'minewatch composite'), not rendered RGB")
    if dt.kind != "f":
        return
    h, w = min(src.height, 512), min(src.width, 512)
    a = src.read(out_shape=(src.count, h, w)).astype(np.float64)
    ok = np.all(np.isfinite(a), axis=0) & np.any(a != 0, axis=0)
    if src.nodata is not None and not math.isnan(src.nodata):
        ok &= np.all(a != src.nodata, axis=0)
    if not ok.any():
        return  # nothing valid to judge by: the tiles will say "no data"
    vals = a[:, ok]
    lo, hi = float(vals.min()), float(vals.max())
    if hi < REFLECTANCE_MAX:
        raise MinewatchError(where, f"imagery values run {lo:.3g} to {hi:.3g} ({dt.name}): that is reflectance (0–1), but the models need Sentinel-2 digital numbers (reflectance × 10000); rescale it first, e.g. gdal_calc.py -A in.tif --allBands=A --calc='A*10000' --type=UInt16 --NoDataValue=0 --outfile=dn.tif")


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise MinewatchError(path, f"not readable JSON ({e})") from None


def _href(base: Path, href: str) -> str:
    """A STAC href resolved against the JSON file it appears in; local paths stay paths."""
    u = urlparse(href)
    if u.scheme in ("http", "https", "s3", "gs"):
        return href
    if u.scheme == "file":
        return unquote(u.path)
    return str((base.parent / href).resolve()) if not os.path.isabs(href) else href


def _items(path: Path, seen: set[Path] | None = None) -> Iterable[tuple[Path, dict[str, Any]]]:
    seen = set() if seen is None else seen
    if path in seen:
        return
    seen.add(path)
    doc = _load_json(path)
    if not isinstance(doc, dict):
        raise MinewatchError(path, "not a STAC Item, ItemCollection, Catalog or Collection")
    kind = doc.get("type")
    if kind == "Feature":
        yield path, doc
    elif kind == "FeatureCollection":
        for f in doc.get("features", []):
            if isinstance(f, dict) and f.get("type") == "Feature":
                yield path, f
    elif kind in ("Catalog", "Collection"):
        for link in doc.get("links", []):
            if link.get("rel") in ("item", "child") and link.get("href"):
                target = Path(_href(path, link["href"]))
                if not target.is_file():
                    raise MinewatchError(path, f"links to {link['href']}, which does not exist")
                yield from _items(target, seen)
    else:
        raise MinewatchError(path, f"not a STAC Item, ItemCollection, Catalog or Collection (type {kind!r})")


def _item_asset(item: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    assets = item.get("assets") or {}
    if "composite" in assets:
        return "composite", assets["composite"]
    for key, a in assets.items():
        media = str(a.get("type", ""))
        roles = a.get("roles") or []
        if ("tiff" in media or str(a.get("href", "")).lower().endswith(TIF_SUFFIXES)) and ("data" in roles or not roles):
            return key, a
    return None


def _from_stac(path: Path) -> Imagery:
    refs = []
    tile_px: set[int] = set()
    for file, item in _items(path):
        where = f"{file}#{item.get('id', '?')}"
        found = _item_asset(item)
        if found is None:
            raise MinewatchError(where, "STAC item has no GeoTIFF data asset (expected an asset 'composite')")
        _, asset = found
        props = item.get("properties") or {}
        names = [b.get("name") for b in asset.get("eo:bands") or props.get("eo:bands") or [] if b.get("name")]
        names = names or list(props.get("minewatch:bands") or [])
        clear = (item.get("assets") or {}).get("clear_count")
        start = props.get("start_datetime") or props.get("datetime")
        end = props.get("end_datetime") or props.get("datetime")
        refs.append(
            describe_raster(
                _href(file, asset["href"]),
                bands=names or None,
                level=props.get("processing:level"),
                clear_path=_href(file, clear["href"]) if clear and clear.get("href") else None,
                start=str(start)[:10] if start else None,
                end=str(end)[:10] if end else None,
                where=where,
            )
        )
        if props.get("minewatch:tile_px"):
            tile_px.add(int(props["minewatch:tile_px"]))
    if not refs:
        raise MinewatchError(path, "STAC file leads to no items")
    return Imagery(str(path), tuple(sorted(refs, key=lambda r: r.path)), tile_px.pop() if len(tile_px) == 1 else None)


# --------------------------------------------------------------------------------------------------
# Which tiles: pure geometry on raster footprints
# --------------------------------------------------------------------------------------------------


def utm_zone_of_epsg(epsg: int | None) -> tuple[int, bool] | None:
    """(zone, south) for a WGS84 UTM EPSG code (326zz / 327zz), else None."""
    if epsg is None:
        return None
    if 32601 <= epsg <= 32660:
        return epsg - 32600, False
    if 32701 <= epsg <= 32760:
        return epsg - 32700, True
    return None


def _on_lattice(v: float, res: float) -> bool:
    return abs(v / res - round(v / res)) < 1e-6


def tiles_for_raster(ref: RasterRef, tile_px: int, resolution: float, halo_px: int) -> list[Tile]:
    """Tiles of the global grid that own at least one patch touching ``ref``.

    A tile reads ``halo_px`` beyond its right and bottom edges, so the raster's footprint is grown by
    ``halo_px`` to the left and top before intersecting. A UTM raster on the 10 m lattice gets tiles
    of its own zone (its pixels are then copied, never resampled) and, where it reaches past its
    zone's strip, the next zone's tiles over that part; anything else gets the tiles
    :func:`minewatch.grid.tiles_for_geometry` assigns to its WGS84 footprint (split by zone strip).
    Which patches of a seam tile are scored is decided per patch by
    :func:`minewatch.detect.lattice.zone_owned`.
    """
    left, bottom, right, top = ref.bounds
    grow = halo_px * resolution  # metres
    utm = utm_zone_of_epsg(ref.epsg)
    size = tile_px * resolution
    from pyproj import CRS, Transformer

    tr = _transformer(ref.epsg, 4326) if ref.epsg is not None else Transformer.from_crs(CRS.from_wkt(ref.crs_wkt), 4326, always_xy=True)
    if utm is not None and math.isclose(ref.resolution, resolution) and _on_lattice(ref.transform[2], resolution) and _on_lattice(ref.transform[5], resolution):
        zone, south = utm
        gl, gt = left - grow, top + grow
        off = FALSE_NORTHING_SOUTH if south else 0.0
        eps = 1e-6 * size
        ix0, ix1 = math.floor(gl / size), math.ceil(right / size - eps)
        iy0, iy1 = math.floor((bottom - off) / size), math.ceil((gt - off) / size - eps)
        own = [Tile(zone, ix, iy, tile_px, resolution) for iy in range(iy0, iy1) for ix in range(ix0, ix1)]
        # The raster may reach past its zone's strip (a composite at a seam, a scene in its native
        # zone): that ground belongs to the next zone's tiles, which read it by reprojection.
        xs, ys = [left, right, left, right, (left + right) / 2, (left + right) / 2], [bottom, bottom, top, top, bottom, top]
        lon = np.asarray(tr.transform(xs, ys)[0])
        cm = -183.0 + 6.0 * zone
        d = (lon - cm + 180.0) % 360.0 - 180.0
        if d.min() > -3.0 and d.max() < 3.0:
            return own
        others = [t for t in _tiles_for_footprint(ref, tr, grow, tile_px, resolution) if t.zone != zone]
        return sorted(set(own) | set(others))
    return _tiles_for_footprint(ref, tr, grow, tile_px, resolution)


def _tiles_for_footprint(ref: RasterRef, tr: Any, grow: float, tile_px: int, resolution: float) -> list[Tile]:
    """Grid tiles (every zone) over the raster's WGS84 footprint grown west and north by ``grow`` m."""
    import shapely
    from shapely.geometry import box
    from shapely.ops import transform as shp_transform

    left, bottom, right, top = ref.bounds
    foot = shp_transform(tr.transform, shapely.segmentize(box(left, bottom, right, top), max(right - left, top - bottom) / 16))
    # grow west and north by the halo (metres → degrees; generous near the poles, never too small)
    x0, y0, x1, y1 = foot.bounds
    dlat = grow / 110_000.0
    dlon = dlat / max(math.cos(math.radians(max(abs(y0), abs(y1)) + dlat)), 0.05)
    foot = shapely.union(foot, box(x0 - dlon, y0, x1, y1 + dlat))
    return tiles_for_geometry(foot, tile_px, resolution)


# --------------------------------------------------------------------------------------------------
# Reading one tile
# --------------------------------------------------------------------------------------------------


@dataclass
class TileRaster:
    """A tile window read from the imagery: DN bands-last and the validity mask."""

    dn: np.ndarray
    """(H, W, C) float32 DN in the requested band order (exact for uint16 composites); 0 where not valid."""
    valid: np.ndarray
    """(H, W) bool."""
    sources: list[str] = field(default_factory=list)
    """The rasters that contributed pixels."""


def _window_bounds(tile: Tile, halo_px: int) -> tuple[float, float, float, float]:
    left, bottom, right, top = tile.bounds
    return (left, bottom - halo_px * tile.resolution, right + halo_px * tile.resolution, top)


def overlaps(ref: RasterRef, tile: Tile, halo_px: int) -> bool:
    """Cheap pre-filter: does ``ref`` (in the tile's CRS, or by WGS84 bbox otherwise) touch the window?"""
    left, bottom, right, top = _window_bounds(tile, halo_px)
    if ref.epsg == tile.epsg:
        a = ref.bounds
        return a[0] < right and a[2] > left and a[1] < top and a[3] > bottom
    utm = utm_zone_of_epsg(ref.epsg)
    if utm is not None and utm[0] == tile.zone:  # same zone, other hemisphere code: a pure shift
        shift = FALSE_NORTHING_SOUTH * ((1 if utm[1] else 0) - (1 if tile.south else 0))
        a = ref.bounds
        return a[0] < right and a[2] > left and a[1] - shift < top and a[3] - shift > bottom
    from pyproj import CRS
    from rasterio.warp import transform_bounds

    b = transform_bounds(CRS.from_wkt(ref.crs_wkt), tile.crs, *ref.bounds, densify_pts=21)
    return b[0] < right and b[2] > left and b[1] < top and b[3] > bottom


def read_tile(refs: Sequence[RasterRef], tile: Tile, bands: Sequence[str], halo_px: int) -> TileRaster:
    """Read ``bands`` of the rasters over ``tile`` grown by ``halo_px`` right and bottom.

    Memory: (tile_px + halo)² × bands × 4 bytes plus one source window at a time (≈ 13 MB for a
    1032² RGB window).
    """
    size = tile.tile_px + halo_px
    nb = len(bands)
    dn = np.zeros((size, size, nb), dtype=np.float32)
    valid = np.zeros((size, size), dtype=bool)
    used: list[str] = []
    # rasters of the tile's own zone first: their pixels are copied exactly, others are reprojected
    refs = sorted(refs, key=lambda r: (utm_zone_of_epsg(r.epsg) or (0, False))[0] != tile.zone)
    for ref in refs:
        if valid.all():
            break
        idx = ref.band_indexes(bands)
        got = _read_aligned(ref, tile, idx, size)
        if got is False:
            got = _read_warped(ref, tile, idx, size)
        if got is None or got is False:
            continue
        data, ok = got
        if not valid.any():  # the usual case, one raster per tile: no masked copy
            if ok.any():
                dn, valid = data, ok
                used.append(ref.where or ref.path)
            continue
        take = ok & ~valid
        if take.any():
            dn[take] = data[take]
            valid |= take
            used.append(ref.where or ref.path)
    return TileRaster(dn, valid, used)


def _valid_from(ref: RasterRef, data: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Covered pixels minus nodata; a raster that declares no nodata has its all-zero pixels (every
    band 0, the fill GDAL and most tools leave outside the data) treated as nodata."""
    ok = covered.copy()
    if ref.nodata is not None and not (isinstance(ref.nodata, float) and math.isnan(ref.nodata)):
        ok &= np.all(data != ref.nodata, axis=-1)
    elif ref.nodata is not None:
        ok &= ~np.any(np.isnan(data), axis=-1)
    else:
        ok &= np.any(data != 0, axis=-1)
    return ok


def _read_aligned(ref: RasterRef, tile: Tile, idx: list[int], size: int) -> tuple[np.ndarray, np.ndarray] | None | bool:
    """Window copy when ``ref`` lies on the tile's pixel lattice (same zone, same pixel size); else False."""
    import rasterio
    from rasterio.windows import Window

    utm = utm_zone_of_epsg(ref.epsg)
    if ref.epsg != tile.epsg and not (utm is not None and utm[0] == tile.zone):
        return False
    res = tile.resolution
    if not math.isclose(ref.resolution, res) or not math.isclose(abs(ref.transform[4]), res):
        return False
    shift = 0.0
    if ref.epsg != tile.epsg:
        shift = FALSE_NORTHING_SOUTH * ((1 if utm and utm[1] else 0) - (1 if tile.south else 0))
    left, _, _, top = tile.bounds
    col_f = (left - ref.transform[2]) / res
    row_f = (ref.transform[5] - shift - top) / res
    if abs(col_f - round(col_f)) > 1e-6 or abs(row_f - round(row_f)) > 1e-6:
        return False
    c0, r0 = round(col_f), round(row_f)
    # intersection of [r0, r0+size) x [c0, c0+size) with the raster
    rr0, rr1 = max(r0, 0), min(r0 + size, ref.height)
    cc0, cc1 = max(c0, 0), min(c0 + size, ref.width)
    if rr0 >= rr1 or cc0 >= cc1:
        return None
    data = np.zeros((size, size, len(idx)), dtype=np.float32)
    covered = np.zeros((size, size), dtype=bool)
    win = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
    with rasterio.open(ref.path) as src:
        block = src.read(idx, window=win)
    ys, xs = slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0)
    data[ys, xs] = np.moveaxis(block, 0, -1)
    covered[ys, xs] = True
    ok = _valid_from(ref, data, covered)
    if ref.clear_path:
        with rasterio.open(ref.clear_path) as src:
            clear = src.read(1, window=win)
        cl = np.zeros((size, size), dtype=bool)
        cl[ys, xs] = clear > 0
        ok &= cl
    if not ok.all():
        data[~ok] = 0
    return data, ok


def _read_warped(ref: RasterRef, tile: Tile, idx: list[int], size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Nearest-neighbour reprojection onto the tile grid (other CRS or another pixel lattice).

    The destination starts as NaN and GDAL's warper leaves NaN wherever the source has no pixel or
    its nodata value, so coverage and validity come out of the same pass.
    """
    import rasterio
    from rasterio.warp import Resampling, reproject

    if not overlaps(ref, tile, size - tile.tile_px):
        return None
    dst_tr = tile.transform
    data = np.full((len(idx), size, size), np.nan, dtype=np.float64)
    with rasterio.open(ref.path) as src:
        for k, b in enumerate(idx):
            reproject(
                rasterio.band(src, b), data[k], dst_transform=dst_tr, dst_crs=tile.crs, dst_nodata=np.nan,
                src_nodata=ref.nodata, resampling=Resampling.nearest, init_dest_nodata=True,
            )  # fmt: skip
    arr = np.moveaxis(data, 0, -1)
    ok = ~np.any(np.isnan(arr), axis=-1)
    if ref.nodata is None:  # no declared nodata: all-zero pixels are fill, as in _valid_from
        ok &= np.any(arr != 0, axis=-1)
    if ref.clear_path:
        clear = np.full((size, size), np.nan, dtype=np.float64)
        with rasterio.open(ref.clear_path) as csrc:
            reproject(rasterio.band(csrc, 1), clear, dst_transform=dst_tr, dst_crs=tile.crs, dst_nodata=np.nan, resampling=Resampling.nearest, init_dest_nodata=True)
        ok &= np.nan_to_num(clear) > 0
    if not ok.any():
        return None
    out = np.where(ok[..., None], np.nan_to_num(arr), 0).astype(np.float32)
    return out, ok


def period_from_dates(start: str | None, end: str | None) -> str | None:
    """``2024`` for a whole calendar year, ``2024Q3`` for a whole quarter, else None.

    Accepts an inclusive end (``2024-12-31``) or an exclusive one (``2025-01-01``), as both
    conventions appear in composites and chip metadata (see :func:`minewatch.periods.from_dates`).
    """
    from minewatch.periods import from_dates

    p = from_dates(start, end)
    return p.label if p is not None else None
    try:
        d0, d1 = dt.date.fromisoformat(start[:10]), dt.date.fromisoformat(end[:10])
    except ValueError:
        return None
    for last in (d1, d1 - dt.timedelta(days=1)):
        if d0.month == 1 and d0.day == 1 and last == dt.date(d0.year, 12, 31):
            return str(d0.year)
        if d0.day == 1 and d0.month in (1, 4, 7, 10):
            q_end_month = d0.month + 2
            nxt = dt.date(d0.year + (q_end_month == 12), q_end_month % 12 + 1, 1)
            if last == nxt - dt.timedelta(days=1):
                return f"{d0.year}Q{(d0.month - 1) // 3 + 1}"
    return None
