"""Mined area inside detected patches: a per-pixel scar mask, summarised per 24 px lattice cell.

Why: a detected 48 px patch (480 m, 23 ha) is mostly forest, river and regrowth around a few
hectares of pits, tailings and ponds; declaring the whole footprint "mined" overstates mining about
tenfold. The model scores patches, not pixels, so the mined share inside a patch comes from the
pixels themselves: a spectral rule on the bands that were scored (:class:`ScarRule`), whose one
free parameter is calibrated against the published layers' ``Mined area (ha)``
(``scripts/calibrate_mined.py``; figures in ``docs/impacts.md``).

* RGB (every model here): a pixel is *scar* (bare soil, tailings, turbid water) when its red DN
  (B4) is at least ``red_min`` and it is not green (B4 ≥ ``red_over_green`` × B3). Healthy
  vegetation absorbs red (chlorophyll), clear deep water is dark; exposed soil, sand and
  sediment-laden water reflect red strongly, in L1C and L2A alike.
* With B8 and B11 too (12-band imagery): the RGB rule, or bare soil by BSI, or turbid water by
  MNDWI + red — and never a pixel with NDVI above ``ndvi_max`` (vegetation, whatever its colour).

Counting each location once: the mask is reduced to the fraction of scar pixels among the valid
pixels of each 24 × 24 px lattice cell (:func:`cell_fractions`). A patch row carries the fractions
of its four cells (:func:`patch_quarters`); post-processing keys cells by their position on the
global UTM lattice and sums each distinct cell once (:mod:`minewatch.postprocess.mined`), so
overlapping patches and patches read across tile edges (the halo holds the same pixels the
neighbouring tile reads) add nothing twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

QUARTER_COLUMNS = ("mined_tl", "mined_tr", "mined_bl", "mined_br")
"""Patch-row columns: scar fraction of the patch's top-left, top-right, bottom-left, bottom-right cell."""
CALIBRATION_FILE = Path(__file__).resolve().parent.parent / "data" / "mined_calibration.json"
MASK_NODATA = 255
MASK_VALUES = "1 mined: scar inside a written patch; 2 scar outside written patches; 0 not scar; 255 no data"
MASKS_DIR = "masks"


@dataclass(frozen=True)
class ScarRule:
    """Per-pixel scar rule on DN (reflectance × 10 000). Defaults are overridden by the calibration file."""

    red_min: float = 900.0
    """B4 DN at or above which a not-green pixel is scar (the calibrated parameter)."""
    red_over_green: float = 1.0
    """B4 / B3 at or above which a pixel is not green."""
    ndvi_max: float = 0.4
    """12 bands: pixels with a higher NDVI are never scar."""
    bsi_min: float = 0.1
    """12 bands: bare-soil index at or above which a pixel is scar (with NDVI below ``ndvi_max``)."""
    mndwi_min: float = 0.0
    """12 bands: water (MNDWI above this) with red DN ≥ ``turbid_red_min`` is turbid water, scar."""
    turbid_red_min: float = 700.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScarRule:
        names = {f.name for f in fields(cls)}
        return cls(**{k: float(v) for k, v in d.items() if k in names})

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@lru_cache(maxsize=4)
def _calibration(path: str) -> dict[str, Any]:
    p = Path(path)
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}


def calibration(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The shipped calibration record (rule parameters and measured error), ``{}`` when absent."""
    return _calibration(str(path or CALIBRATION_FILE))


def default_rule() -> ScarRule:
    """The calibrated rule (``minewatch/data/mined_calibration.json``), else the built-in defaults."""
    return ScarRule.from_dict(calibration().get("rule", {}))


def _band(dn: np.ndarray, bands: Sequence[str], name: str) -> np.ndarray | None:
    names = [str(b).upper() for b in bands]
    return dn[..., names.index(name)].astype(np.float32, copy=False) if name in names else None


def mask_method(bands: Sequence[str]) -> str:
    """``indices`` when B8 and B11 are among ``bands`` (with B4, B3, B2), ``rgb`` with B4 and B3, else ``none``."""
    names = {str(b).upper() for b in bands}
    if not {"B4", "B3"} <= names:
        return "none"
    return "indices" if {"B8", "B11", "B2"} <= names else "rgb"


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    s = a + b
    return np.divide(a - b, s, out=np.zeros_like(s), where=s > 0)


def scar_pixels(dn: np.ndarray, bands: Sequence[str], valid: np.ndarray | None = None, rule: ScarRule | None = None) -> np.ndarray:
    """Boolean (H, W) scar mask of a DN raster (H, W, C) in ``bands`` order; False where not valid."""
    rule = rule or default_rule()
    r, g = _band(dn, bands, "B4"), _band(dn, bands, "B3")
    if r is None or g is None:
        raise ValueError(f"the scar mask needs bands B4 and B3, got {','.join(bands)}")
    scar = (r >= rule.red_min) & (r >= rule.red_over_green * g)
    if mask_method(bands) == "indices":
        b, nir, swir = _band(dn, bands, "B2"), _band(dn, bands, "B8"), _band(dn, bands, "B11")
        assert b is not None and nir is not None and swir is not None
        ndvi = _ratio(nir, r)
        mndwi = _ratio(g, swir)
        bsi = _ratio(swir + r, nir + b)
        scar = (scar | (bsi >= rule.bsi_min) | ((mndwi > rule.mndwi_min) & (r >= rule.turbid_red_min))) & (ndvi <= rule.ndvi_max)
    if valid is not None:
        scar &= valid
    return scar


def cell_fractions(scar: np.ndarray, valid: np.ndarray, step_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Per lattice cell (``step_px`` square, from the array's top-left): (scar share of valid pixels, valid share).

    The scar share is NaN where a cell has no valid pixel. Cells cut by the array edge are dropped.
    """
    h, w = (scar.shape[0] // step_px) * step_px, (scar.shape[1] // step_px) * step_px
    ny, nx = h // step_px, w // step_px

    def cellsum(a: np.ndarray) -> np.ndarray:
        return a[:h, :w].reshape(ny, step_px, nx, step_px).sum(axis=(1, 3), dtype=np.int64)

    n_valid = cellsum(valid)
    n_scar = cellsum(scar & valid)
    frac = np.divide(n_scar, n_valid, out=np.full((ny, nx), np.nan), where=n_valid > 0)
    return frac.astype(np.float32), (n_valid / float(step_px * step_px)).astype(np.float32)


def patch_quarters(frac: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """N×4 scar fractions of the cells of the 2×2-cell patches with top-left cells (rows, cols).

    Column order as :data:`QUARTER_COLUMNS`. A cell with no valid pixel takes the mean of the
    patch's other cells (the patch passed ``min_valid``, so at least one cell has data); a patch
    with no valid cell at all gets 0.
    """
    rows, cols = np.asarray(rows, dtype=int), np.asarray(cols, dtype=int)
    q = np.stack([frac[rows, cols], frac[rows, cols + 1], frac[rows + 1, cols], frac[rows + 1, cols + 1]], axis=1).astype(np.float32)
    if np.isnan(frac).all():
        return q  # no mask at all (no B4/B3): NaN, not 0
    if np.isnan(q).any():
        with np.errstate(invalid="ignore"):
            fill = np.nanmean(np.where(np.isnan(q).all(axis=1, keepdims=True), 0.0, q), axis=1)
        q = np.where(np.isnan(q), fill[:, None], q).astype(np.float32)
    return q


def mined_mask_bands(imagery: Any, model_bands: Sequence[str]) -> tuple[str, ...]:
    """Bands to read beyond the models' for the mask: B4/B3 if the models lack them, and B2, B8, B11
    when every raster has all three (then the 12-band rule applies). Only bands every raster has."""
    model = {str(m).upper() for m in model_bands}
    have = set.intersection(*[{str(b).upper() for b in r.bands} for r in imagery.rasters]) if imagery.rasters else set()
    extra = [b for b in ("B4", "B3") if b not in model and b in have]
    if {"B2", "B8", "B11"} <= have | model:
        extra += [b for b in ("B2", "B8", "B11") if b not in model]
    return tuple(extra)


def tile_scar(raster: Any, bands: Sequence[str], step_px: int, rule: ScarRule | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scar mask, per-cell scar fractions) of a read tile window (:class:`minewatch.detect.imagery.TileRaster`).

    Imagery without B4 and B3 has no mask: the mask is all False and every fraction NaN."""
    if not {"B4", "B3"} <= {str(b).upper() for b in bands}:
        scar = np.zeros(raster.valid.shape, dtype=bool)
        return scar, np.full((raster.valid.shape[0] // step_px, raster.valid.shape[1] // step_px), np.nan, np.float32)
    scar = scar_pixels(raster.dn, bands, raster.valid, rule)
    return scar, cell_fractions(scar, raster.valid, step_px)[0]


def mask_path(out_dir: str | os.PathLike[str], tile_id: str) -> Path:
    return Path(out_dir) / MASKS_DIR / f"{tile_id}.tif"


def tile_mask(scar: np.ndarray, valid: np.ndarray, tile_px: int, step_px: int, rows: np.ndarray, cols: np.ndarray, patch_px: int) -> np.ndarray:
    """uint8 mask of a tile's own pixels (see :data:`MASK_VALUES`).

    "Inside" means inside a patch this tile wrote (score ≥ ``min_score``); the polygons' thresholds
    come later, in post-processing, and a patch of the tile to the left or above that reaches into
    this tile is not known here, so its pixels in this tile's first 24 px show as 2. The numbers
    (``mined_ha``) do not come from this picture but from the cells of the kept patches.
    """
    inside = np.zeros((tile_px + patch_px, tile_px + patch_px), dtype=bool)
    for r, c in zip(np.asarray(rows, int) * step_px, np.asarray(cols, int) * step_px, strict=True):
        inside[r : r + patch_px, c : c + patch_px] = True
    own = scar[:tile_px, :tile_px]
    out = np.zeros((tile_px, tile_px), dtype=np.uint8)
    out[own] = 2
    out[own & inside[:tile_px, :tile_px]] = 1
    out[~valid[:tile_px, :tile_px]] = MASK_NODATA
    return out


def write_mask_cog(path: str | os.PathLike[str], mask: np.ndarray, tile: Any, tags: Mapping[str, str]) -> Path:
    """A uint8 single-band COG of ``mask`` on ``tile``'s grid (nodata 255, overviews by mode), atomically."""
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy

    from minewatch.atomic import atomic_path
    from minewatch.imagery.write import overview_count

    profile = {"driver": "GTiff", "width": mask.shape[1], "height": mask.shape[0], "count": 1, "dtype": "uint8",
               "crs": tile.crs.to_wkt(), "transform": tile.transform, "nodata": MASK_NODATA}  # fmt: skip
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(mask[None].astype(np.uint8, copy=False))
            dst.set_band_description(1, "mined")
            dst.update_tags(**{k: str(v) for k, v in tags.items()})
        with mem.open() as src, atomic_path(path) as tmp:
            rio_copy(src, str(tmp), driver="COG", BLOCKSIZE=256, COMPRESS="DEFLATE", OVERVIEWS="AUTO",
                     OVERVIEW_COUNT=overview_count(max(mask.shape)), OVERVIEW_RESAMPLING="MODE", NUM_THREADS="1")  # fmt: skip
            with rasterio.open(tmp) as chk:
                if chk.nodata != MASK_NODATA or not chk.overviews(1):
                    raise RuntimeError(f"{path}: nodata or overviews were not written")
    return Path(path)


__all__ = [
    "QUARTER_COLUMNS",
    "ScarRule",
    "mask_path",
    "mined_mask_bands",
    "tile_scar",
    "calibration",
    "cell_fractions",
    "default_rule",
    "mask_method",
    "patch_quarters",
    "scar_pixels",
    "tile_mask",
    "write_mask_cog",
]
