"""Detection: score every patch of a region with a model package, tile by tile, at any scale.

* :mod:`~minewatch.detect.imagery` — find rasters (COG, folder, STAC), read one tile + halo (I/O).
* :mod:`~minewatch.detect.lattice` — patch ownership, valid fractions, footprints (pure).
* :mod:`~minewatch.detect.scorer` — ONNX Runtime scoring, fast (FCN) and per-patch paths, ensembles.
* :mod:`~minewatch.detect.engine` — plan, tiles as Dask tasks, resume, merge (orchestration).
* :mod:`~minewatch.detect.demo` — the shipped demo region and the chip-mosaic builder.

Nothing heavy is imported here: import the submodule you need.
"""
