"""Lazy loading onto a tile's exact grid with odc-stac, and the lazy composite built on it.

Why an explicit GeoBox: odc-stac would otherwise choose a grid from the items (their CRS, their
pixel anchor). Building the GeoBox from :class:`~minewatch.grid.Tile` (``crs``, ``transform``,
``shape``) puts every output pixel on the global lattice, so reruns, neighbouring runs and other
periods share pixel boundaries exactly. Scenes in another UTM zone are reprojected onto the tile's
CRS by odc-stac; one array never mixes CRSs.

20 m and 60 m bands are resampled to the 10 m grid with nearest neighbour by default: each 10 m
pixel takes the value of the native pixel it lies in (Google Earth Engine's default, which the
reference models were trained on). Masks (SCL, scene masks) always use nearest neighbour.

Memory: the graph reads one ``chunk_px`` × ``chunk_px`` window of every band and observation at a
time and reduces it immediately, so a worker holds about
``2 × observations × (bands + mask inputs) × chunk_px² × 2 bytes`` plus the finished tile.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minewatch.grid import Tile
from minewatch.imagery.composite import composite_block
from minewatch.imagery.plan import TilePlan
from minewatch.imagery.sources import Source

MASK_BANDS = ("SCL", "CLOUDMASK")
DEFAULT_CHUNK_PX = 512

GDAL_HTTP_SETTINGS = {
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "2",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # Without a timeout curl waits forever on a server that accepted the connection and went silent
    # (tests/test_reliability_faults.py); with one, GDAL retries the request like any other failure.
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_CONNECTTIMEOUT": "15",
}


def tile_geobox(tile: Tile) -> Any:
    """The odc-geo GeoBox of a tile: its CRS, affine transform and shape, exactly."""
    from odc.geo.geobox import GeoBox

    return GeoBox(tile.shape, tile.transform, tile.crs)


def configure_reader(source: Source) -> None:
    """Process-wide GDAL settings for the source (retries; requester-pays for Earth Search L1C)."""
    from odc.stac import configure_rio

    aws = {"requester_pays": True} if source.requester_pays else None
    configure_rio(cloud_defaults=True, aws=aws, **GDAL_HTTP_SETTINGS)


def load_dataset(plan: TilePlan, source: Source, chunk_px: int = DEFAULT_CHUNK_PX) -> Any:
    """The lazy (Dask) ``xarray.Dataset`` of every band the plan reads, on the tile's grid.

    Variables are named by canonical band (``B4``, ``SCL`` …), dims ``(time, y, x)``, uint16, nodata 0;
    one time step per observation (solar day × harmonisation offset), scenes of the same overpass
    fused (first valid pixel wins, in time-then-id order).
    """
    import pystac
    from odc.stac import load

    if not plan.items:
        raise ValueError(f"{plan.tile.id}: no scenes to load")
    items = [pystac.Item.from_dict(ref.stac, preserve_dict=True) for ref in plan.items]
    group_of = {ref.id: ref.group for ref in plan.items}
    keys = dict(plan.asset_keys)
    resampling = {keys[b]: ("nearest" if b in MASK_BANDS else plan.resampling) for b in plan.load_bands}
    stac_cfg = {"*": {"assets": {"*": {"data_type": "uint16", "nodata": 0}}, "warnings": "ignore"}}
    ds = load(
        items,
        bands=[keys[b] for b in plan.load_bands],
        geobox=tile_geobox(plan.tile),
        groupby=lambda item, parsed, idx: group_of[item.id],
        resampling=resampling,
        dtype="uint16",
        nodata=0,
        chunks={"x": chunk_px, "y": chunk_px},
        stac_cfg=stac_cfg,
        patch_url=source.patch_url(),
        fail_on_error=True,
    )
    return ds.rename({keys[b]: b for b in plan.load_bands if keys[b] != b})


def lazy_composite(plan: TilePlan, source: Source, chunk_px: int = DEFAULT_CHUNK_PX) -> Any:
    """The composite of a plan as a Dask array ``(len(bands) + 1, y, x)`` uint16: the median bands,
    then the clear-observation count. Nothing is read until it is computed."""
    import dask.array as da

    ds = load_dataset(plan, source, chunk_px)
    n_t = ds.sizes["time"]
    if n_t != len(plan.groups):
        raise RuntimeError(f"{plan.tile.id}: loader made {n_t} observations, plan has {len(plan.groups)}")
    stack = da.stack([ds[b].data for b in plan.load_bands], axis=1)  # (T, L, Y, X)
    stack = stack.rechunk({0: -1, 1: -1})
    out_chunks = ((len(plan.bands) + 1,), stack.chunks[2], stack.chunks[3])
    return stack.map_blocks(
        composite_block,
        load_bands=plan.load_bands,
        out_bands=plan.bands,
        offsets=plan.offsets,
        method=plan.mask,
        drop_axis=0,
        chunks=out_chunks,
        dtype=np.uint16,
        meta=np.empty((0, 0, 0), np.uint16),
    )
