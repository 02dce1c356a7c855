"""Composite outputs: Cloud-Optimised GeoTIFFs and a STAC Item per tile, written atomically.

Layout of a composite run folder (``OUT``)::

    OUT/tiles.geojson              the tile list (written first), WGS84
    OUT/tiles/<tile>.tif           median composite: uint16 DN, nodata 0, one band per S2 band
    OUT/tiles/<tile>_clear.tif     clear-observation count per pixel (uint16)
    OUT/tiles/<tile>.json          STAC Item: proj (code, transform, shape), level, dates, bands
    OUT/collection.json            STAC Collection linking every finished item (a local catalog)
    OUT/manifest.json              the run manifest (minewatch.runs)

Both GeoTIFFs are COGs (GDAL's COG driver: 256 px tiles, DEFLATE with horizontal predictor,
internal overviews), carry band descriptions equal to the band names and tags
``MINEWATCH_LEVEL``/``PROCESSING_LEVEL`` (``L2A``/``L1C``), ``BANDS``, ``START_DATE``, ``END_DATE``,
``SOURCE``, ``CLOUD_MASK``, ``HARMONISED``. No timestamps are written into any file, so a rerun on
the same inputs produces byte-identical outputs.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from minewatch.atomic import atomic_path, write_json_atomic
from minewatch.grid import Tile
from minewatch.imagery.plan import TilePlan

TILES_DIR = "tiles"
BLOCK_PX = 256
MIN_OVERVIEW_PX = 64
COMPOSITE_VERSION = 1


def composite_path(out_dir: str | os.PathLike[str], tile_id: str) -> Path:
    return Path(out_dir) / TILES_DIR / f"{tile_id}.tif"


def clear_path(out_dir: str | os.PathLike[str], tile_id: str) -> Path:
    return Path(out_dir) / TILES_DIR / f"{tile_id}_clear.tif"


def item_path(out_dir: str | os.PathLike[str], tile_id: str) -> Path:
    return Path(out_dir) / TILES_DIR / f"{tile_id}.json"


def overview_count(size_px: int) -> int:
    """Overview levels (factors 2, 4, …) until the smallest is about :data:`MIN_OVERVIEW_PX`; ≥ 1."""
    return max(1, int(math.floor(math.log2(max(size_px, 2) / MIN_OVERVIEW_PX))))


def write_cog(
    path: str | os.PathLike[str],
    data: np.ndarray,
    tile: Tile,
    band_names: Sequence[str],
    tags: Mapping[str, str],
    nodata: int | None = 0,
    overview_resampling: str = "average",
) -> Path:
    """Write ``data`` (bands, y, x) uint16 on ``tile``'s grid as a COG, atomically.

    The raster is assembled in memory (GTiff) and copied with GDAL's COG driver into a temporary
    file beside ``path``, renamed into place only when complete.
    """
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy

    data = np.asarray(data)
    if data.ndim != 3 or data.shape[1:] != tile.shape:
        raise ValueError(f"data shape {data.shape} does not match tile {tile.id} shape {tile.shape}")
    if data.shape[0] != len(band_names):
        raise ValueError(f"{data.shape[0]} bands but {len(band_names)} names")
    profile = {
        "driver": "GTiff", "width": tile.shape[1], "height": tile.shape[0], "count": data.shape[0],
        "dtype": "uint16", "crs": tile.crs.to_wkt(), "transform": tile.transform, "nodata": nodata,
    }  # fmt: skip
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data.astype(np.uint16, copy=False))
            for i, name in enumerate(band_names, start=1):
                dst.set_band_description(i, name)
            dst.update_tags(**{k: str(v) for k, v in tags.items()})
        with mem.open() as src, atomic_path(path) as tmp:
            rio_copy(
                src,
                str(tmp),
                driver="COG",
                BLOCKSIZE=BLOCK_PX,
                COMPRESS="DEFLATE",
                PREDICTOR="2",
                OVERVIEWS="AUTO",
                OVERVIEW_COUNT=overview_count(max(tile.shape)),
                OVERVIEW_RESAMPLING=overview_resampling.upper(),
                NUM_THREADS="1",
            )
            with rasterio.open(tmp) as chk:  # fail here, not in a later stage, if GDAL dropped metadata
                if list(chk.descriptions) != list(band_names):
                    raise RuntimeError(f"{path}: band descriptions were not preserved")
    return Path(path)


def cog_tags(plan: TilePlan, n_observations: int) -> dict[str, str]:
    return {
        "MINEWATCH_LEVEL": plan.level,
        "PROCESSING_LEVEL": plan.level,
        "BANDS": ",".join(plan.bands),
        "START_DATE": plan.start.isoformat(),
        "END_DATE": plan.end.isoformat(),
        "SOURCE": plan.source,
        "CLOUD_MASK": plan.mask,
        "HARMONISED": "baseline>=04.00 offset removed (-1000 DN, clamped at 1)",
        "OBSERVATIONS": str(n_observations),
        "SCENES": str(len(plan.items)),
        "TILE": plan.tile.id,
        "MINEWATCH_COMPOSITE": str(COMPOSITE_VERSION),
    }


def composite_item(plan: TilePlan, cog: Path, clear: Path, item_file: Path) -> Any:
    """The STAC Item describing a tile composite (asset hrefs relative to the item file)."""
    import pystac
    from pystac.extensions.eo import Band, EOExtension
    from pystac.extensions.projection import ProjectionExtension

    tile = plan.tile
    geom = tile.geometry_wgs84()
    start = dt.datetime.combine(plan.start, dt.time(0, 0), tzinfo=dt.timezone.utc)
    end = dt.datetime.combine(plan.end, dt.time(23, 59, 59), tzinfo=dt.timezone.utc)
    item = pystac.Item(
        id=f"{tile.id}_{plan.start.isoformat()}_{plan.end.isoformat()}_{plan.level}",
        geometry=json.loads(json.dumps(geom.__geo_interface__)),
        bbox=list(geom.bounds),
        datetime=None,
        start_datetime=start,
        end_datetime=end,
        properties={
            "processing:level": plan.level,
            "minewatch:tile": tile.id,
            "minewatch:tile_px": int(tile.tile_px),
            "minewatch:resolution": float(tile.resolution),
            "minewatch:bands": list(plan.bands),
            "minewatch:source": plan.source,
            "minewatch:cloud_mask": plan.mask,
            "minewatch:resampling": plan.resampling,
            "minewatch:max_scene_cloud": plan.max_scene_cloud,
            "minewatch:harmonised": True,
            "minewatch:observations": len(plan.groups),
            "minewatch:scenes": [r.id for r in plan.items],
            "constellation": "sentinel-2",
        },
    )
    rel = os.path.relpath
    base = item_file.parent
    item.add_asset(
        "composite",
        pystac.Asset(rel(cog, base), media_type=pystac.MediaType.COG, roles=["data"], title=f"Median composite ({plan.level}), bands {','.join(plan.bands)}"),
    )
    item.add_asset(
        "clear_count",
        pystac.Asset(rel(clear, base), media_type=pystac.MediaType.COG, roles=["metadata"], title="Clear observations per pixel"),
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.epsg = tile.epsg
    proj.transform = list(tile.transform)[:6]
    proj.shape = list(tile.shape)
    eo = EOExtension.ext(item.assets["composite"], add_if_missing=True)
    eo.bands = [Band.create(name=b) for b in plan.bands]
    return item


def write_item(path: str | os.PathLike[str], item: Any) -> Path:
    d = item.to_dict(include_self_link=False, transform_hrefs=False)
    return write_json_atomic(path, d)


def write_tile_outputs(out_dir: str | os.PathLike[str], plan: TilePlan, result: np.ndarray) -> list[Path]:
    """Write the composite COG, the clear-count COG, then the STAC Item (the item last: its presence
    marks a finished tile). ``result`` is (bands + 1, y, x) uint16 from the composite."""
    tid = plan.tile.id
    cog, clear, itm = composite_path(out_dir, tid), clear_path(out_dir, tid), item_path(out_dir, tid)
    tags = cog_tags(plan, len(plan.groups))
    write_cog(cog, result[:-1], plan.tile, plan.bands, tags, nodata=0, overview_resampling="average")
    write_cog(clear, result[-1:], plan.tile, ["clear_count"], {**tags, "BANDS": "clear_count"}, nodata=None, overview_resampling="nearest")
    write_item(itm, composite_item(plan, cog, clear, itm))
    return [cog, clear, itm]


def outputs_valid(out_dir: str | os.PathLike[str], tile: Tile, bands: Sequence[str], level: str) -> bool:
    """True when a tile's COG, clear count and item exist, open, and match the tile grid, bands and level."""
    import rasterio

    tid = tile.id
    paths = composite_path(out_dir, tid), clear_path(out_dir, tid), item_path(out_dir, tid)
    if not all(p.is_file() for p in paths):
        return False
    try:
        item = json.loads(paths[2].read_text(encoding="utf-8"))
        props = item["properties"]
        if props.get("minewatch:tile") != tid or props.get("processing:level") != level or props.get("minewatch:bands") != list(bands):
            return False
        for p, n in ((paths[0], len(bands)), (paths[1], 1)):
            with rasterio.open(p) as src:
                if src.count != n or (src.height, src.width) != tile.shape or src.crs.to_epsg() != tile.epsg:
                    return False
                if not src.transform.almost_equals(tile.transform) or src.dtypes[0] != "uint16":
                    return False
                if p == paths[0] and src.tags().get("PROCESSING_LEVEL") != level:
                    return False
    except (OSError, ValueError, KeyError, TypeError, rasterio.errors.RasterioError):
        return False
    return True


def read_composite(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """A composite COG as (bands, y, x) uint16 plus metadata (band names, level, crs, transform)."""
    import rasterio

    with rasterio.open(path) as src:
        data = src.read()
        meta = {
            "bands": list(src.descriptions),
            "level": src.tags().get("PROCESSING_LEVEL"),
            "crs": src.crs,
            "transform": src.transform,
            "nodata": src.nodata,
            "tags": src.tags(),
        }
    return data, meta
