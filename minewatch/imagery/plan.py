"""Per-tile compositing plans: which scenes, which bands, which mask, for one tile. Pure, no I/O.

A plan is computed before any pixel is read (the odc-stac habit: plan, then execute). It is small,
printable and picklable, so the engine can ship it to a Dask worker, record it, and a test can
build one by hand.

Processing-baseline harmonisation
---------------------------------
From processing baseline 04.00 (products from 2022-01-25 on), ESA adds ``BOA_ADD_OFFSET`` /
``RADIO_ADD_OFFSET`` = -1000 to Sentinel-2 L1C and L2A: a stored DN of ``d`` means reflectance
``(d - 1000) / 10000``. Older products store ``d / 10000``. To keep years comparable (and to keep
the models, trained on pre-offset DN scales, valid) every observation's DN are shifted down by its
offset. The offset of an item is read, in this order, from:

1. ``earthsearch:boa_offset_applied: true`` → 0 (Earth Search already removed it);
2. ``s2:processing_baseline`` (e.g. ``"05.10"``) → 1000 if ≥ 04.00 else 0;
3. the acquisition date → 1000 from 2022-01-25 on, else 0.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from minewatch.grid import Tile

HARMONISE_OFFSET = 1000
"""DN offset added by processing baseline 04.00 and later."""
BASELINE_CHANGE = dt.date(2022, 1, 25)
"""First acquisition day processed with baseline 04.00 (ESA, Sentinel-2 products upgrade)."""
BASELINE_WITH_OFFSET = (4, 0)

BAND_RESOLUTION: dict[str, int] = {
    "B1": 60, "B2": 10, "B3": 10, "B4": 10, "B5": 20, "B6": 20, "B7": 20, "B8": 10,
    "B8A": 20, "B9": 60, "B10": 60, "B11": 20, "B12": 20, "SCL": 20,
}  # fmt: skip
"""Native pixel size (m) of each Sentinel-2 band; everything is resampled onto the 10 m tile grid."""

SPECTRAL_BANDS = tuple(b for b in BAND_RESOLUTION if b != "SCL")
LEVELS = ("L2A", "L1C")

MASK_SCL = "scl"
"""L2A: the Scene Classification Layer (per-pixel classes) decides what is clear."""
MASK_SCENE = "scene-mask"
"""L1C: a per-scene cloud mask raster the catalog provides (non-zero = cloud)."""
MASK_S2CLOUDLESS = "s2cloudless"
"""L1C: cloud probability from the s2cloudless LightGBM model (optional dependency)."""
MASK_THRESHOLD = "threshold"
"""L1C fallback: a documented band-threshold rule (see :func:`minewatch.imagery.composite.threshold_clear`)."""
MASK_METHODS = (MASK_SCL, MASK_SCENE, MASK_S2CLOUDLESS, MASK_THRESHOLD)

S2CLOUDLESS_BANDS = ("B1", "B2", "B4", "B5", "B8", "B8A", "B9", "B10", "B11", "B12")
"""Inputs of the s2cloudless classifier, in its order (L1C top-of-atmosphere reflectance)."""
THRESHOLD_BANDS = ("B2", "B4")
"""Bands the fallback threshold rule needs (B10 cirrus is used too when it is loaded)."""


def normalise_band(name: str) -> str:
    """Canonical band name (``B4``, ``B8A``, ``SCL``) from ``B04``, ``b4``, ``scl`` …; ValueError if unknown."""
    n = name.strip().upper()
    if n.startswith("B") and n[1:].isdigit():
        n = f"B{int(n[1:])}"
    elif n.startswith("B0") and n.endswith("A"):
        n = "B8A"
    if n not in BAND_RESOLUTION:
        raise ValueError(f"unknown Sentinel-2 band {name!r} (known: {', '.join(BAND_RESOLUTION)})")
    return n


def parse_baseline(value: Any) -> tuple[int, int] | None:
    """``"05.10"`` → (5, 10); None when absent or unreadable."""
    if value is None:
        return None
    try:
        major, _, minor = str(value).strip().partition(".")
        return int(major), int(minor or 0)
    except ValueError:
        return None


def harmonisation_offset(properties: Mapping[str, Any], when: dt.datetime) -> int:
    """DN offset to subtract from an item's pixels (0 or 1000); see the module docstring for the rule."""
    if properties.get("earthsearch:boa_offset_applied") is True:
        return 0
    baseline = parse_baseline(properties.get("s2:processing_baseline"))
    if baseline is not None:
        return HARMONISE_OFFSET if baseline >= BASELINE_WITH_OFFSET else 0
    return HARMONISE_OFFSET if when.date() >= BASELINE_CHANGE else 0


def solar_day(when: dt.datetime, lon: float) -> dt.date:
    """Local solar date of an acquisition at longitude ``lon``: scenes of one overpass share it."""
    utc = when.astimezone(dt.timezone.utc) if when.tzinfo else when
    return (utc + dt.timedelta(hours=lon / 15.0)).date()


def item_datetime(item: Mapping[str, Any]) -> dt.datetime:
    """The acquisition time of a STAC item dict (``datetime``, else ``start_datetime``), UTC-aware."""
    props = item.get("properties", {})
    raw = props.get("datetime") or props.get("start_datetime")
    if not raw:
        raise ValueError(f"item {item.get('id')!r} has no datetime")
    t = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def item_epsg(item: Mapping[str, Any]) -> int | None:
    """The item's native EPSG code from the projection extension (``proj:epsg`` or ``proj:code``)."""
    props = item.get("properties", {})
    if props.get("proj:epsg") is not None:
        return int(props["proj:epsg"])
    code = props.get("proj:code")
    if isinstance(code, str) and code.upper().startswith("EPSG:"):
        return int(code.split(":")[1])
    return None


@dataclass(frozen=True)
class ItemRef:
    """One catalog scene as the plan sees it."""

    id: str
    datetime: dt.datetime
    """Acquisition time, UTC."""
    solar_day: dt.date
    """Local solar date at the tile: scenes of one overpass (adjacent MGRS tiles) share it."""
    offset: int
    """DN harmonisation offset to subtract (0 or 1000)."""
    cloud_cover: float | None
    """Scene cloud cover in percent (``eo:cloud_cover``), as reported by the catalog."""
    baseline: str | None
    """``s2:processing_baseline`` when the catalog gives it."""
    epsg: int | None
    """Native CRS of the scene (it is reprojected onto the tile's CRS when loaded)."""
    stac: dict[str, Any] = field(compare=False, repr=False, hash=False)
    """The full STAC item dict (absolute asset hrefs), for the loader."""

    @property
    def group(self) -> tuple[dt.date, int]:
        """Observation key: one composite observation per (solar day, offset)."""
        return (self.solar_day, self.offset)

    @classmethod
    def from_stac(cls, item: Mapping[str, Any], lon: float) -> ItemRef:
        when = item_datetime(item)
        props = item.get("properties", {})
        cc = props.get("eo:cloud_cover")
        pb = props.get("s2:processing_baseline")
        return cls(
            id=str(item["id"]),
            datetime=when,
            solar_day=solar_day(when, lon),
            offset=harmonisation_offset(props, when),
            cloud_cover=None if cc is None else float(cc),
            baseline=None if pb is None else str(pb),
            epsg=item_epsg(item),
            stac=dict(item),
        )


@dataclass(frozen=True)
class TilePlan:
    """Everything needed to composite one tile: a unit of work for a worker."""

    tile: Tile
    start: dt.date
    """First day of the compositing window (inclusive)."""
    end: dt.date
    """Last day of the compositing window (inclusive)."""
    bands: tuple[str, ...]
    """Output bands, in output order (canonical names, e.g. ``B4``)."""
    level: str
    """``L2A`` or ``L1C``."""
    source: str
    """Source name or location, for provenance."""
    asset_keys: tuple[tuple[str, str], ...]
    """(canonical band, asset key) for every band the loader must read (outputs + mask inputs)."""
    mask: str
    """Cloud-mask method, one of :data:`MASK_METHODS`."""
    items: tuple[ItemRef, ...]
    """Scenes intersecting the tile in the window, sorted by time then id."""
    resampling: str = "nearest"
    """Resampling of 20 m / 60 m bands onto the 10 m grid (masks always use nearest)."""
    max_scene_cloud: float = 100.0

    @property
    def id(self) -> str:
        return self.tile.id

    @property
    def groups(self) -> tuple[tuple[dt.date, int], ...]:
        """Distinct observations (solar day, offset) in time order: the composite's time axis."""
        return tuple(sorted({i.group for i in self.items}))

    @property
    def offsets(self) -> tuple[int, ...]:
        """Harmonisation offset per observation, aligned with :attr:`groups`."""
        return tuple(g[1] for g in self.groups)

    @property
    def load_bands(self) -> tuple[str, ...]:
        """Canonical bands to read: outputs first, then mask inputs not already among them."""
        return tuple(b for b, _ in self.asset_keys)

    def summary(self) -> str:
        return f"{self.tile.id}: {len(self.items)} scenes, {len(self.groups)} observations, {self.level}, mask={self.mask}"


def mask_inputs(mask: str) -> tuple[str, ...]:
    """Extra canonical bands (or the mask pseudo-band) a mask method reads."""
    if mask == MASK_SCL:
        return ("SCL",)
    if mask == MASK_SCENE:
        return ("CLOUDMASK",)
    if mask == MASK_S2CLOUDLESS:
        return S2CLOUDLESS_BANDS
    return THRESHOLD_BANDS


def to_date(value: str | dt.date, where: str) -> dt.date:
    from minewatch.errors import MinewatchError

    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise MinewatchError(where, f"not a date (YYYY-MM-DD): {value!r}") from None


def check_window(start: str | dt.date, end: str | dt.date, tile_px: int) -> tuple[dt.date, dt.date]:
    """Validate the ``--start``/``--end``/``--tile-px`` options every imagery command shares."""
    from minewatch.errors import MinewatchError

    d0, d1 = to_date(start, "--start"), to_date(end, "--end")
    if d1 < d0:
        raise MinewatchError("--end", f"{d1} is before --start {d0}")
    if tile_px <= 0 or tile_px % 24:
        raise MinewatchError("--tile-px", f"must be a positive multiple of 24, got {tile_px}")
    return d0, d1


def item_footprint(item: Mapping[str, Any]) -> BaseGeometry | None:
    geom = item.get("geometry")
    if geom:
        return shape(geom)
    bbox = item.get("bbox")
    return shapely.box(*bbox[:2], *bbox[-2:]) if bbox else None


def select_items(
    items: Iterable[Mapping[str, Any]],
    footprint_wgs84: BaseGeometry,
    start: dt.date,
    end: dt.date,
    max_scene_cloud: float = 100.0,
) -> list[Mapping[str, Any]]:
    """Items whose footprint overlaps ``footprint_wgs84`` (more than touching), acquired within
    ``[start, end]`` (UTC dates, inclusive) and with ``eo:cloud_cover`` ≤ ``max_scene_cloud``
    (items without a cloud cover are kept: the pixel mask still applies)."""
    out = []
    shapely.prepare(footprint_wgs84)
    for it in items:
        when = item_datetime(it).astimezone(dt.timezone.utc).date()
        if not start <= when <= end:
            continue
        cc = it.get("properties", {}).get("eo:cloud_cover")
        if cc is not None and float(cc) > max_scene_cloud:
            continue
        fp = item_footprint(it)
        if fp is None or not footprint_wgs84.intersects(fp) or footprint_wgs84.touches(fp):
            continue
        out.append(it)
    return out


def plan_tile(
    tile: Tile,
    items: Iterable[Mapping[str, Any]],
    *,
    start: dt.date,
    end: dt.date,
    bands: Sequence[str],
    level: str,
    source: str,
    asset_keys: Mapping[str, str],
    mask: str,
    max_scene_cloud: float = 100.0,
    resampling: str = "nearest",
) -> TilePlan:
    """The plan for one tile from candidate catalog items (already searched), pure.

    ``asset_keys`` maps canonical band names (and ``SCL``/``CLOUDMASK``) to the source's asset keys;
    it must cover the output bands and the mask inputs.
    """
    fp = tile.geometry_wgs84()
    lon = fp.centroid.x
    chosen = select_items(items, fp, start, end, max_scene_cloud)
    refs = sorted((ItemRef.from_stac(it, lon) for it in chosen), key=lambda r: (r.datetime, r.id))
    need = list(dict.fromkeys([*bands, *mask_inputs(mask)]))
    missing = [b for b in need if b not in asset_keys]
    if missing:
        raise ValueError(f"no asset key for band(s) {', '.join(missing)}")
    return TilePlan(
        tile=tile,
        start=start,
        end=end,
        bands=tuple(bands),
        level=level,
        source=source,
        asset_keys=tuple((b, asset_keys[b]) for b in need),
        mask=mask,
        items=tuple(refs),
        resampling=resampling,
        max_scene_cloud=max_scene_cloud,
    )
