"""What the issue-12 geometry and value checks cost on the happy path, as a share of the stage.

    python benchmarks/bench_geo_checks.py [--repeats 5]

Measured in one process, each against the plain way with the same libraries:

1. reading the nine published detection layers: ``geopandas.read_file`` alone vs
   ``minewatch.vectors.read_vector`` (the same read plus the lon/lat range check and CRS decision),
   run alternately;
2. ``run_impacts`` on the nine layers and the real territories, with the per-period overlap pass
   (``impacts.zonal.disjoint_pieces``) and with it replaced by the identity, run alternately; and
   the pass alone against ``zonal_stats``;
3. detect per tile: the zone-seam ownership test (``detect.lattice.zone_owned``) for an interior
   tile and for a seam tile vs scoring one full 1032 × 1032 px window with the default model;
4. loading a model package: the card and graph checks (``check_card`` + ``check_graph_file``) vs
   ``load_package`` as a whole.

Needs the shared data (``MINEWATCH_SHARED``, default ../shared/data).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any


def paired(plain: Callable[[], Any], ours: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median seconds of ``plain`` and ``ours`` run alternately (so machine load hits both alike)."""
    a, b = [], []
    for _ in range(repeats):
        for fn, ts in ((plain, a), (ours, b)):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return statistics.median(a), statistics.median(b)


def best(fn: Callable[[], Any], repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    r = a.repeats

    import geopandas as gpd
    import numpy as np

    from minewatch.config import shared_data_dir
    from minewatch.detect.lattice import zone_owned
    from minewatch.detect.scorer import Scorer
    from minewatch.grid import Tile
    from minewatch.impacts.zonal import disjoint_pieces, read_zones, zonal_stats
    from minewatch.models.package import check_card, check_graph_file, load_package, resolve_package_path
    from minewatch.postprocess.geom import polygonal, to_equal_area
    from minewatch.postprocess.io import read_layers
    from minewatch.vectors import read_vector

    up = shared_data_dir() / "upstream"
    layers = sorted((up / "detections").glob("mining_20*.geojson"))
    rows = []

    plain, ours = paired(lambda: [gpd.read_file(p) for p in layers], lambda: [read_vector(p) for p in layers], r)
    rows.append(("read 9 published layers", plain, ours - plain))

    import tempfile

    import minewatch.impacts.zonal as zonal
    from minewatch.impacts.pipeline import run_impacts

    terr = up / "boundaries" / "indigenous_territories.geojson"
    real_pieces = zonal.disjoint_pieces

    def impacts(with_pass: bool) -> None:
        zonal.disjoint_pieces = real_pieces if with_pass else (lambda g, p: (np.asarray(g, dtype=object), {}))
        try:
            with tempfile.TemporaryDirectory() as d:
                run_impacts(layers, terr, "id_field", "name_field", d, area_field="Mined area (ha)")
        finally:
            zonal.disjoint_pieces = real_pieces

    plain, ours = paired(lambda: impacts(False), lambda: impacts(True), max(3, r // 2))
    rows.append(("impacts: 9 layers x territories (overlap pass)", plain, ours - plain))
    zones = read_zones(terr, "id_field", "name_field")
    layer = read_layers(layers, area_field="Mined area (ha)")
    ea = polygonal(to_equal_area(layer.geometry))
    periods = layer["period"].astype(str).to_numpy()
    extra = best(lambda: disjoint_pieces(ea, periods), r)
    whole = best(lambda: zonal_stats(layer, zones, apportion=True), max(2, r // 2))
    rows.append(("  of which zonal_stats / the overlap pass alone", whole, extra))

    scorer = Scorer.load(["default"])
    x = np.random.default_rng(0).integers(200, 2000, size=(1032, 1032, 3)).astype(np.float32)
    keep = np.ones((42, 42), dtype=bool)
    score = best(lambda: scorer.score(x, keep, None), r)
    inner, seam = Tile(21, 60, -60), Tile(21, 82, -55)  # seam: easting 826.6-836.7 km at 5 S, lon -54 inside
    assert zone_owned(inner, 48, 24, 42) is None and zone_owned(seam, 48, 24, 42) is not None
    rows.append(("detect tile: ownership, interior tile", score, best(lambda: zone_owned(inner, 48, 24, 42), r * 20)))
    rows.append(("detect tile: ownership, seam tile", score, best(lambda: zone_owned(seam, 48, 24, 42), r * 20)))

    pkg = resolve_package_path("default")
    card = load_package(pkg).card
    load = best(lambda: load_package(pkg), r)
    chk = best(lambda: (check_card(card, pkg / "card.json"), check_graph_file(pkg / "model.onnx", card), check_graph_file(pkg / "model_fcn.onnx", card, fcn=True)), r)
    rows.append(("load_package (default)", load - chk, chk))

    print(f"{'stage':42s} {'baseline s':>11s} {'added s':>10s} {'added %':>8s}")
    for name, base, add in rows:
        print(f"{name:42s} {base:11.4f} {add:10.5f} {100 * add / base:7.2f}%")


if __name__ == "__main__":
    main()
