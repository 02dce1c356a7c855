"""Build the demo region shipped in ``minewatch/data/demo/`` from real labelled chips.

    python scripts/make_demo.py            # reads ../shared/data/s2_rgb_chips (or $MINEWATCH_SHARED)

What it writes (see minewatch/data/demo/README.md):

* ``demo_l1c_2024.tif`` — a 16 × 16 mosaic of real 48 px Sentinel-2 L1C chips (768 × 768 px,
  7.68 km), converted back to DN (B4, B3, B2, uint16, nodata 0) and placed on the global grid in
  UTM zone 21S inside the Tapajós basin so that it straddles a tile corner (it covers parts of 2 × 2
  tiles, which exercises the tile halo). Three clusters of mine chips lie among not-mine chips; two
  cells are left empty (nodata) to stand for cloud gaps.
* ``truth.geojson`` — every cell's footprint (WGS84) with its label, chip index and source.
* ``roi.geojson`` — the mosaic's footprint (WGS84).

Chips are taken only from the site-level *validation* split the default model was not trained on
(``split_by_site(meta, 0.15, seed=0)``, the split recorded in its card) and only from whole-year
2024 composites, so the demo's period is honestly ``2024``. Chips are drawn at random (seeded), not
chosen for being detected: the demo shows misses and false alarms as they come.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minewatch.chips import load_chips  # noqa: E402
from minewatch.chips.splits import split_by_site  # noqa: E402
from minewatch.config import shared_data_dir  # noqa: E402
from minewatch.detect.demo import (  # noqa: E402
    CHIP_PX,
    DEMO_IMAGERY,
    DEMO_ROI,
    DEMO_TRUTH,
    NODATA_CELL,
    cell_polygons,
    chip_mosaic,
    demo_dir,
    write_geojson_features,
    write_mosaic,
)
from minewatch.grid import Tile, _transformer, utm_epsg  # noqa: E402

SEED = 0
GRID = 16
ANCHOR_LONLAT = (-56.95, -6.45)
"""A point in the Tapajós basin (Pará, Brazil); the mosaic's top-left sits in this point's tile."""
OFFSET_PX = 624
"""Row and column of the mosaic's top-left pixel inside the anchor tile: a multiple of the 24 px step,
1008 - 384, so the 768 px mosaic straddles the tile's bottom-right corner."""
CLUSTERS = [((3.0, 4.0), 2.3), ((9.5, 11.0), 2.6), ((12.5, 3.5), 1.6)]
"""Mine clusters: (row, col) centre in cells, radius in cells."""
NODATA_CELLS = [(1, 13), (7, 7)]
TILE_PX = 1008
RES = 10.0


def anchor_tile() -> Tile:
    lon, lat = ANCHOR_LONLAT
    zone = int((lon + 180) // 6) + 1
    x, y = _transformer(4326, utm_epsg(zone, False)).transform(lon, lat)  # northings from the equator
    size = TILE_PX * RES
    return Tile(zone, int(np.floor(x / size)), int(np.floor(y / size)), TILE_PX, RES)


def layout_mask() -> np.ndarray:
    """1 = mine cell, 0 = not-mine cell, -1 = nodata cell."""
    ii, jj = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    m = np.zeros((GRID, GRID), dtype=int)
    for (ci, cj), r in CLUSTERS:
        m[(ii - ci) ** 2 + (jj - cj) ** 2 <= r * r] = 1
    for i, j in NODATA_CELLS:
        m[i, j] = -1
    return m


def main() -> None:
    chips = load_chips(shared_data_dir() / "s2_rgb_chips")
    meta = chips.meta
    _, val = split_by_site(meta, 0.15, seed=0)
    is2024 = (meta["start_date"].astype(str) == "2024-01-01") & (meta["end_date"].astype(str) == "2025-01-01")
    pool = np.intersect1d(val, np.flatnonzero(is2024.to_numpy()))
    labels = chips.labels
    mines, others = pool[labels[pool] == 1], pool[labels[pool] == 0]
    rng = np.random.default_rng(SEED)
    mask = layout_mask()
    n_mine, n_other = int((mask == 1).sum()), int((mask == 0).sum())
    if n_mine > len(mines) or n_other > len(others):
        raise SystemExit(f"not enough chips: need {n_mine} mines / {n_other} others, have {len(mines)} / {len(others)}")
    layout = np.full(mask.shape, NODATA_CELL, dtype=int)
    layout[mask == 1] = rng.choice(mines, n_mine, replace=False)
    layout[mask == 0] = rng.choice(others, n_other, replace=False)

    tile = anchor_tile()
    out = demo_dir()
    out.mkdir(parents=True, exist_ok=True)
    dn = chip_mosaic(chips.pixels, layout)
    tags = {
        "START_DATE": "2024-01-01",
        "END_DATE": "2024-12-31",
        "SOURCE": "Earth Genome, Amazon Mining Watch: labelled Sentinel-2 L1C chips (CC BY 4.0); mosaic by scripts/make_demo.py",
        "DEMO": "chips are real imagery from many places; their arrangement and location are synthetic",
        "TILE": tile.id,
        "OFFSET_PX": str(OFFSET_PX),
    }
    write_mosaic(out / DEMO_IMAGERY, dn, tile, OFFSET_PX, OFFSET_PX, tags=tags)

    wgs, _ = cell_polygons(tile, OFFSET_PX, OFFSET_PX, mask.shape)
    feats = []
    for k, (i, j) in enumerate(np.ndindex(mask.shape)):
        c = int(layout[i, j])
        props = {"cell_row": i, "cell_col": j, "row_px": OFFSET_PX + i * CHIP_PX, "col_px": OFFSET_PX + j * CHIP_PX, "tile": tile.id}
        if c == NODATA_CELL:
            props.update({"truth": "nodata", "label": None, "chip": None})
        else:
            r = meta.iloc[c]
            props.update({
                "truth": "mine" if labels[c] == 1 else "not-mine", "label": int(labels[c]), "chip": int(r["chip"]),
                "source": str(r["source"]), "start_date": str(r["start_date"]), "end_date": str(r["end_date"]), "clear": float(r["clear"]),
            })  # fmt: skip
        feats.append({"type": "Feature", "properties": props, "geometry": _geojson(wgs[k])})
    credit = {"credit": "Earth Genome, Amazon Mining Watch (CC BY 4.0)", "tile": tile.id, "offset_px": OFFSET_PX, "chip_px": CHIP_PX, "seed": SEED}
    write_geojson_features(out / DEMO_TRUTH, feats, {"minewatch_demo": credit})
    import shapely

    foot = shapely.union_all(wgs).normalize()
    write_geojson_features(out / DEMO_ROI, [{"type": "Feature", "properties": {"name": "minewatch demo region (chip mosaic)"}, "geometry": _geojson(foot)}], {"minewatch_demo": credit})
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"{out}: tile {tile.id}, {n_mine} mine / {n_other} not-mine / {len(NODATA_CELLS)} nodata cells, {size / 1e6:.2f} MB")


def _geojson(g: object) -> dict:
    import shapely

    d = shapely.geometry.mapping(shapely.set_precision(g, 1e-7))  # type: ignore[arg-type]
    return {"type": d["type"], "coordinates": _lists(d["coordinates"])}


def _lists(x: object) -> object:
    return [_lists(v) for v in x] if isinstance(x, (list, tuple)) else x


if __name__ == "__main__":
    main()
