"""Synthetic Sentinel-2 scenes in a local STAC catalog: for tests, benchmarks and offline demos.

Real catalogs cannot be reached from tests; this writes small GeoTIFFs shaped like Sentinel-2
products (10/20/60 m bands on nested grids, an SCL layer for L2A, cloudy and shadowed pixels,
nodata outside the swath, processing baselines before and after 04.00 with the +1000 DN offset)
and a self-contained pystac catalog pointing at them, with the metadata real catalogs carry
(``eo:cloud_cover``, ``s2:processing_baseline``, ``proj:code``/``proj:shape``/``proj:transform``
per asset, WGS84 footprints).

The pixel values are random but seeded: the same call writes the same files.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minewatch.bands import S2_BANDS_12
from minewatch.imagery.plan import BAND_RESOLUTION, BASELINE_CHANGE, HARMONISE_OFFSET
from minewatch.imagery.sources import COMMON_NAMES, padded_key


@dataclass(frozen=True)
class SceneSpec:
    """One synthetic acquisition."""

    date: dt.date
    cloud: float = 0.3
    """Fraction of the scene under cloud (approximate)."""
    baseline: str | None = "auto"
    """``s2:processing_baseline`` to write; ``"auto"``: 03.01 before 2022-01-25, 04.00 after; None: omit."""
    nodata_cols: float = 0.0
    """Fraction of the scene's west columns outside the swath (all bands 0, SCL 0)."""
    bounds: tuple[float, float, float, float] | None = None
    """Scene extent (left, bottom, right, top) in the catalog CRS; None: the catalog extent."""
    suffix: str = ""
    """Appended to the item id (two items of one overpass need distinct ids)."""
    hour: int = 14


def asset_key(band: str, style: str) -> str:
    if band == "CLOUDMASK":
        return "cloud_mask"
    if band == "SCL":
        return "scl" if style == "common" else "SCL"
    return COMMON_NAMES[band] if style == "common" else padded_key(band)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int = 6) -> np.ndarray:
    """A smooth 0..1 field (bilinear upsampling of a coarse random grid)."""
    coarse = rng.random((cells + 1, cells + 1))
    yy = np.linspace(0, cells, shape[0])
    xx = np.linspace(0, cells, shape[1])
    y0 = np.minimum(yy.astype(int), cells - 1)
    x0 = np.minimum(xx.astype(int), cells - 1)
    fy = (yy - y0)[:, None]
    fx = (xx - x0)[None, :]
    a = coarse[y0][:, x0]
    b = coarse[y0][:, x0 + 1]
    c = coarse[y0 + 1][:, x0]
    d = coarse[y0 + 1][:, x0 + 1]
    return a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx


def _blobs(rng: np.random.Generator, shape: tuple[int, int], fraction: float) -> np.ndarray:
    """Random round blobs covering roughly ``fraction`` of a grid."""
    mask = np.zeros(shape, bool)
    if fraction <= 0:
        return mask
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r_max = max(2, min(shape) // 5)
    for _ in range(200):
        if mask.mean() >= fraction:
            break
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r = rng.integers(1, r_max + 1)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return mask


def _write_tif(path: Path, data: np.ndarray, epsg: int, transform: object) -> None:
    import rasterio

    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype="uint16",
        crs=f"EPSG:{epsg}", transform=transform, nodata=0, compress="deflate",
        tiled=data.shape[0] >= 256 and data.shape[1] >= 256, blockxsize=256, blockysize=256,
    ) as dst:  # fmt: skip
        dst.write(data.astype(np.uint16), 1)


def write_scene(
    folder: Path,
    item_id: str,
    spec: SceneSpec,
    *,
    epsg: int,
    bounds: tuple[float, float, float, float],
    bands: Sequence[str],
    level: str,
    key_style: str,
    rng: np.random.Generator,
    base: Mapping[str, np.ndarray],
    catalog_bounds: tuple[float, float, float, float],
    scene_mask: bool = False,
) -> object:
    """Write one scene's band files and return its pystac Item."""
    import pystac
    from pyproj import Transformer
    from rasterio.transform import from_origin
    from shapely.geometry import box, mapping
    from shapely.ops import transform as shp_transform

    left, bottom, right, top = bounds
    folder.mkdir(parents=True, exist_ok=True)
    when = dt.datetime.combine(spec.date, dt.time(spec.hour, 0), tzinfo=dt.timezone.utc)
    baseline = spec.baseline
    if baseline == "auto":
        baseline = "04.00" if spec.date >= BASELINE_CHANGE else "03.01"
    offset = HARMONISE_OFFSET if (spec.date >= BASELINE_CHANGE) else 0
    # Clouds and shadows on the 20 m grid, shared by every band.
    shape20 = (round((top - bottom) / 20), round((right - left) / 20))
    cloud20 = _blobs(rng, shape20, spec.cloud)
    shadow20 = _blobs(rng, shape20, spec.cloud / 3) & ~cloud20
    dark20 = _blobs(rng, shape20, 0.03) & ~cloud20 & ~shadow20
    nod_cols20 = int(round(shape20[1] * spec.nodata_cols))
    item = pystac.Item(
        id=item_id,
        geometry=None,
        bbox=None,
        datetime=when,
        properties={
            "eo:cloud_cover": round(100.0 * float(cloud20.mean()), 2),
            "platform": "sentinel-2a",
            "constellation": "sentinel-2",
            "s2:product_type": "S2MSI2A" if level == "L2A" else "S2MSI1C",
            "processing:level": level,
        },
    )
    if baseline is not None:
        item.properties["s2:processing_baseline"] = baseline
    extra = ["SCL"] if level == "L2A" else (["CLOUDMASK"] if scene_mask else [])
    for band in [*bands, *extra]:
        res = BAND_RESOLUTION.get(band, 20)
        shape = (round((top - bottom) / res), round((right - left) / res))
        f = 20 / res
        iy = np.minimum((np.arange(shape[0]) / f).astype(int), shape20[0] - 1)
        ix = np.minimum((np.arange(shape[1]) / f).astype(int), shape20[1] - 1)
        cloud, shadow, dark = cloud20[iy][:, ix], shadow20[iy][:, ix], dark20[iy][:, ix]
        if band == "CLOUDMASK":
            data = np.where(cloud, 1, 0).astype(np.uint16)
        elif band == "SCL":
            b = base["SCL"]
            data = np.where(b[_win(b, catalog_bounds, bounds, res)] > 0.5, 5, 4).astype(np.uint16)
            data[(b[_win(b, catalog_bounds, bounds, res)] < 0.15)] = 6
            data[dark] = 2
            data[shadow] = 3
            data[cloud] = rng.choice(np.array([8, 9, 10], np.uint16), size=int(cloud.sum()))
        else:
            b = base[band]
            refl = 300 + 2500 * b[_win(b, catalog_bounds, bounds, res)]
            refl = refl + rng.normal(0, 40, shape)
            refl = np.where(shadow, refl * 0.4, refl)
            refl = np.where(cloud, 4000 + 3000 * rng.random(shape), refl)
            data = np.clip(np.round(refl), 1, 20000).astype(np.uint16) + np.uint16(offset)
        nod = int(round(shape[1] * spec.nodata_cols))
        if nod_cols20:
            data[:, :nod] = 0
        key = asset_key(band, key_style)
        fname = f"{item_id}_{band}.tif"
        transform = from_origin(left, top, res, res)
        _write_tif(folder / fname, data, epsg, transform)
        asset = pystac.Asset(
            href=str(folder / fname),
            media_type=pystac.MediaType.GEOTIFF,
            roles=["data"],
            extra_fields={
                "proj:code": f"EPSG:{epsg}",
                "proj:shape": list(shape),
                "proj:transform": list(transform)[:6],
                "gsd": res,
            },
        )
        item.add_asset(key, asset)
    tr = Transformer.from_crs(epsg, 4326, always_xy=True)
    fp = shp_transform(tr.transform, box(left, bottom, right, top).segmentize(max(right - left, top - bottom) / 8))
    item.geometry = mapping(fp)
    item.bbox = list(fp.bounds)
    item.properties["proj:code"] = f"EPSG:{epsg}"
    item.stac_extensions = [
        "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
        "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    ]
    return item


def _win(arr: np.ndarray, cat_bounds: tuple[float, float, float, float], bounds: tuple[float, float, float, float], res: int) -> tuple[slice, slice]:
    """The slice of a catalog-wide base field (at ``res``) under a scene's bounds."""
    r0 = round((cat_bounds[3] - bounds[3]) / res)
    c0 = round((bounds[0] - cat_bounds[0]) / res)
    h = round((bounds[3] - bounds[1]) / res)
    w = round((bounds[2] - bounds[0]) / res)
    return slice(r0, r0 + h), slice(c0, c0 + w)


def make_catalog(
    out_dir: str | os.PathLike[str],
    *,
    epsg: int,
    bounds: tuple[float, float, float, float],
    scenes: Sequence[SceneSpec],
    bands: Sequence[str] = tuple(S2_BANDS_12),
    level: str = "L2A",
    key_style: str = "common",
    seed: int = 0,
    scene_mask: bool = False,
) -> Path:
    """Write scenes + a self-contained STAC catalog under ``out_dir``; return ``catalog.json``'s path.

    ``scene_mask`` (L1C only) adds a ``cloud_mask`` asset per scene (20 m, 1 = cloud, 0 = clear), the
    way some catalogs expose the L1C product's cloud mask. ``bounds`` (left, bottom, right, top) in ``epsg`` metres: width and height multiples of 60 m so
    that the 10, 20 and 60 m grids nest from the same corner, as in real Sentinel-2 tiles.
    """
    import pystac

    if round(bounds[2] - bounds[0]) % 60 or round(bounds[3] - bounds[1]) % 60 or any(round(v) % 10 for v in bounds):
        raise ValueError(f"bounds {bounds}: width and height must be multiples of 60 m, corners on the 10 m grid")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    left, bottom, right, top = bounds
    base: dict[str, np.ndarray] = {}
    for band in [*bands, "SCL"]:
        res = BAND_RESOLUTION[band]
        shape = (round((top - bottom) / res), round((right - left) / res))
        base[band] = _smooth_field(rng, shape)
    cat = pystac.Catalog(id="synthetic-s2", description=f"Synthetic Sentinel-2 {level} scenes (minewatch tests)")
    for k, spec in enumerate(scenes):
        sb = spec.bounds or bounds
        item_id = f"S2_SYN_{spec.date.strftime('%Y%m%d')}_{k:03d}{spec.suffix}_{level}"
        item = write_scene(
            out / "scenes" / item_id, item_id, spec, epsg=epsg, bounds=sb, bands=bands, level=level,
            key_style=key_style, rng=rng, base=base, catalog_bounds=bounds, scene_mask=scene_mask,
        )  # fmt: skip
        cat.add_item(item)  # type: ignore[arg-type]
    cat.normalize_hrefs(str(out))
    cat.make_all_asset_hrefs_relative()
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return out / "catalog.json"
