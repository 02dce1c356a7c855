"""Sentinel-2 imagery: STAC sources → per-tile plans → cloud-masked median composites (COG + STAC).

The stages, each in its own module (pure ones marked):

* :mod:`~minewatch.imagery.sources` — named catalogs, search with retries, asset-key mapping (I/O).
* :mod:`~minewatch.imagery.plan` — per-tile plans as frozen dataclasses, harmonisation offsets (pure).
* :mod:`~minewatch.imagery.composite` — cloud masks, baseline harmonisation, median, clear count (pure).
* :mod:`~minewatch.imagery.load` — odc-stac lazy loading onto a tile's exact grid (I/O).
* :mod:`~minewatch.imagery.write` — Cloud-Optimised GeoTIFF + STAC Item output (I/O).
* :mod:`~minewatch.imagery.engine` — many tiles on Dask, resumable, with progress (orchestration).

Nothing heavy is imported here: import the submodule you need.
"""
