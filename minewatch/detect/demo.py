"""The shipped demo region, and the builder of georeferenced mosaics of real chips.

Why a mosaic of chips: the project has real labelled Sentinel-2 pixels (the 48 px chips of
``s2_rgb_chips``, Earth Genome, Amazon Mining Watch, CC BY 4.0) but no network in tests or on a
fresh machine. Laid edge to edge on the 24 px patch lattice, converted back to L1C digital numbers
with the inverse of the rendering the models were trained with, and written as a GeoTIFF on the
global grid, they make a small region where the truth of every cell is known: the chain can run on
it offline and its answers can be checked. The cells are real imagery; their arrangement is not (the
chips come from many places; the mosaic sits at an arbitrary spot, so a satellite basemap under it
shows another landscape).

``DN = round(rgb / 255 × 3000)``, clamped to at least 1 (0 is nodata), renders back to exactly the
chip's bytes with ``round(clip(DN / 3000, 0, 1) × 255)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minewatch.atomic import atomic_path
from minewatch.bands import RGB_BANDS, Rendering
from minewatch.config import package_data_dir
from minewatch.errors import MinewatchError
from minewatch.grid import Tile

DEMO_IMAGERY = "demo_l1c_2024.tif"
DEMO_ROI = "roi.geojson"
DEMO_TRUTH = "truth.geojson"
DEMO_PERIOD = "2024"
CHIP_PX = 48
NODATA_CELL = -1
"""Layout value of a cell left empty (nodata), e.g. to stand for a cloud gap."""


@dataclass(frozen=True)
class Demo:
    """Paths of the shipped demo region."""

    folder: Path

    @property
    def imagery(self) -> Path:
        return self.folder / DEMO_IMAGERY

    @property
    def roi(self) -> Path:
        return self.folder / DEMO_ROI

    @property
    def truth(self) -> Path:
        return self.folder / DEMO_TRUTH

    @property
    def period(self) -> str:
        return DEMO_PERIOD


def demo_dir() -> Path:
    return package_data_dir() / "demo"


def load_demo(folder: str | os.PathLike[str] | None = None) -> Demo:
    """The demo region; a one-line error naming the missing file when the package lacks it."""
    d = Demo(Path(folder) if folder else demo_dir())
    for p in (d.imagery, d.roi, d.truth):
        if not p.is_file():
            raise MinewatchError(p, "demo file missing from the package (rebuild it with scripts/make_demo.py)")
    return d


# --------------------------------------------------------------------------------------------------
# Mosaic of chips (pure)
# --------------------------------------------------------------------------------------------------


def chips_to_dn(rgb: np.ndarray, rendering: Rendering | None = None) -> np.ndarray:
    """Rendered chips (…, 3) uint8 back to DN uint16, ≥ 1 so that no real pixel reads as nodata."""
    r = rendering or Rendering()
    dn = np.round(r.invert(np.asarray(rgb, dtype=np.float32)))
    return np.clip(dn, 1, 65535).astype(np.uint16)


def chip_mosaic(rgb: np.ndarray, layout: np.ndarray, rendering: Rendering | None = None) -> np.ndarray:
    """DN mosaic (bands, H, W) uint16 of chips placed edge to edge.

    ``rgb`` is (N, 48, 48, C) uint8 rendered chips; ``layout`` an (R, C) integer array of chip
    indices, :data:`NODATA_CELL` for an empty (nodata = 0) cell.
    """
    layout = np.asarray(layout)
    n_r, n_c = layout.shape
    p = rgb.shape[1]
    out = np.zeros((rgb.shape[-1], n_r * p, n_c * p), dtype=np.uint16)
    dn = chips_to_dn(rgb, rendering)
    for i in range(n_r):
        for j in range(n_c):
            k = int(layout[i, j])
            if k != NODATA_CELL:
                out[:, i * p : (i + 1) * p, j * p : (j + 1) * p] = np.moveaxis(dn[k], -1, 0)
    return out


def mosaic_transform(tile: Tile, row0: int, col0: int) -> Any:
    """Affine of a mosaic whose top-left pixel is pixel (row0, col0) of ``tile``."""
    from rasterio.transform import Affine

    left, _, _, top = tile.bounds
    r = tile.resolution
    return Affine(r, 0.0, left + col0 * r, 0.0, -r, top - row0 * r)


def cell_polygons(tile: Tile, row0: int, col0: int, shape: tuple[int, int], chip_px: int = CHIP_PX) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's footprint (WGS84) and its UTM box, row-major, for a mosaic placed at (row0, col0)."""
    from minewatch.detect.lattice import footprints_utm, footprints_wgs84

    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    rows = row0 + ii.ravel() * chip_px
    cols = col0 + jj.ravel() * chip_px
    return footprints_wgs84(tile, rows, cols, chip_px), footprints_utm(tile, rows, cols, chip_px)


# --------------------------------------------------------------------------------------------------
# Writing (I/O)
# --------------------------------------------------------------------------------------------------


def write_mosaic(
    path: str | os.PathLike[str],
    dn: np.ndarray,
    tile: Tile,
    row0: int,
    col0: int,
    *,
    bands: Sequence[str] = tuple(RGB_BANDS),
    level: str = "L1C",
    tags: Mapping[str, str] | None = None,
    cog: bool = True,
) -> Path:
    """Write a (bands, H, W) uint16 DN mosaic on ``tile``'s grid at pixel (row0, col0), atomically.

    Band descriptions are the band names and tags carry the level (``PROCESSING_LEVEL``), the way
    the composite stage writes them; nodata is 0. ``cog``: Cloud-Optimised GeoTIFF (DEFLATE,
    predictor 2, internal overviews), else a plain tiled GeoTIFF (faster to write in tests).
    """
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy

    if dn.ndim != 3 or dn.shape[0] != len(bands):
        raise ValueError(f"mosaic of shape {dn.shape} does not match bands {list(bands)}")
    profile = {
        "driver": "GTiff", "width": dn.shape[2], "height": dn.shape[1], "count": dn.shape[0], "dtype": "uint16",
        "crs": tile.crs.to_wkt(), "transform": mosaic_transform(tile, row0, col0), "nodata": 0,
    }  # fmt: skip
    all_tags = {"PROCESSING_LEVEL": level, "MINEWATCH_LEVEL": level, "BANDS": ",".join(bands), **dict(tags or {})}
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(dn.astype(np.uint16, copy=False))
            for i, b in enumerate(bands, start=1):
                dst.set_band_description(i, b)
            dst.update_tags(**{k: str(v) for k, v in all_tags.items()})
        with mem.open() as src, atomic_path(path) as tmp:
            if cog:
                rio_copy(src, str(tmp), driver="COG", BLOCKSIZE=256, COMPRESS="DEFLATE", PREDICTOR="2", LEVEL="9", OVERVIEWS="AUTO", NUM_THREADS="1")
            else:
                rio_copy(src, str(tmp), driver="GTiff", TILED="YES", COMPRESS="DEFLATE")
            with rasterio.open(tmp) as chk:
                if list(chk.descriptions) != list(bands):
                    raise RuntimeError(f"{path}: band descriptions were not preserved")
    return Path(path)


def write_geojson_features(path: str | os.PathLike[str], features: list[dict[str, Any]], extra: Mapping[str, Any] | None = None) -> Path:
    """A small RFC 7946 FeatureCollection (WGS84), atomically."""
    doc: dict[str, Any] = {"type": "FeatureCollection", **dict(extra or {}), "features": features}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return Path(path)
