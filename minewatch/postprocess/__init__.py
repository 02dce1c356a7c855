"""From patch scores to mining polygons and timelines.

* :mod:`~minewatch.postprocess.threshold` — dual threshold with a spatial prior (presets);
* :mod:`~minewatch.postprocess.dissolve` — dissolve patches into polygons, topology-safe simplify;
* :mod:`~minewatch.postprocess.timeline` — new mining per period, cumulative union, area table;
* :mod:`~minewatch.postprocess.io` — readers (patch scores, minewatch and published layers) and
  writers (GeoParquet, GeoJSON, CSV, each stating its parameters).

Submodules are imported on use; nothing heavy happens at package import.
"""
