"""Detection speed: per-patch vs fast (FCN) path, ONNX Runtime vs PyTorch, 1 vs 2 Dask workers.

    python benchmarks/bench_detect.py [--repeats 5] [--tiles 8] [--json out.json]

What is timed (the default model, ``mwnet-s2d``, RGB 48 px patches on the 24 px lattice):

1. Scoring one full tile window (1032 × 1032 px = a 1008 px tile + the 24 px halo; 42 × 42 = 1,764
   patches, 101.6 km²) of real pixels (a mosaic of the shared chips, DN → rendering as detect does):
   * ONNX Runtime, per patch — the baseline: patches cut and scored in batches of 512 (``model.onnx``);
   * ONNX Runtime, fast path — the fully-convolutional graph once over the window (``model_fcn.onnx``);
   * PyTorch (if installed), the same architecture from :mod:`minewatch.models.arch`, per patch and
     fully convolutional (head at the 24 px lattice only, as exported). The package ships ONNX only
     (no torch state dict), so the torch network has freshly initialised weights: speed does not
     depend on the weight values; the parameter count is checked against the card.
   Median of ``--repeats`` runs after one warm-up, threads = 2 (ORT intra-op / ``torch.set_num_threads``).
2. The whole engine (read GeoTIFF windows, valid fractions, score, footprints, Parquet + JSON per
   tile, manifest) over ``--tiles`` full tiles: in process (synchronous) and on a Dask LocalCluster
   with 1 and 2 workers (cluster start-up excluded; it is reported separately).

Throughput is patches/s and km²/s, where a patch stands for its 240 m × 240 m lattice cell (each
cell of a region is the top-left cell of exactly one patch), so km²/s = patches/s × 0.0576.
The extrapolation to one pass over the 8.2 million km² Amazon basin is area / (km²/s) and is given
both as wall hours on this machine and as CPU-hours (wall × cores the measurement used).
Ratios are against the ORT per-patch baseline measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from minewatch.config import shared_data_dir
from minewatch.detect.demo import chip_mosaic, write_mosaic
from minewatch.detect.engine import DetectRequest, run_detect
from minewatch.detect.scorer import load_scoring_package
from minewatch.grid import Tile

warnings.simplefilter("ignore")

AMAZON_KM2 = 8.2e6
CELL_KM2 = 0.24 * 0.24
THREADS = 2
ANCHOR = Tile(21, 50, -71)


def real_window(px: int, seed: int = 0) -> np.ndarray:
    """(bands, px, px) uint16 DN: real chips tiled at random (synthetic texture if the data is absent)."""
    n = -(-px // 48)
    rng = np.random.default_rng(seed)
    path = shared_data_dir() / "s2_rgb_chips" / "chips.npz"
    if path.exists():
        rgb = np.load(path)["rgb"]
    else:  # pragma: no cover - benchmarks normally run beside the shared data
        rgb = rng.integers(0, 255, (512, 48, 48, 3), dtype=np.uint8)
    layout = rng.integers(0, len(rgb), (n, n))
    return chip_mosaic(rgb, layout)[:, :px, :px]


def time_it(fn: Any, repeats: int) -> tuple[float, float]:
    fn()  # warm-up (session creation, allocations)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), min(ts)


def row(name: str, patches: int, seconds: float, cores: int, best: float | None = None) -> dict[str, Any]:
    pps = patches / seconds
    kms = pps * CELL_KM2
    wall_h = AMAZON_KM2 / kms / 3600
    return {"name": name, "patches": patches, "seconds": seconds, "best_seconds": best, "patches_per_s": pps, "km2_per_s": kms,
            "amazon_wall_h": wall_h, "amazon_cpu_h": wall_h * cores, "cores": cores}  # fmt: skip


def bench_models(repeats: int) -> list[dict[str, Any]]:
    pkg = load_scoring_package("default", threads=THREADS)
    win = real_window(1032)
    x = pkg.card.spec.rendering.apply(np.moveaxis(win, 0, -1))
    n = 42 * 42
    out = []
    m, b = time_it(lambda: pkg.score_tile(x, fast=False), repeats)
    out.append(row("ONNX Runtime, per patch (baseline)", n, m, THREADS, b))
    m, b = time_it(lambda: pkg.score_tile(x, fast=True), repeats)
    out.append(row("ONNX Runtime, fast path (FCN)", n, m, THREADS, b))
    assert np.abs(pkg.score_tile(x, fast=True) - pkg.score_tile(x, fast=False)).max() < 1e-4
    out.extend(bench_torch(x, pkg, repeats))
    return out


def bench_torch(x: np.ndarray, pkg: Any, repeats: int) -> list[dict[str, Any]]:
    try:
        import torch

        from minewatch.models.arch import build, fcn_of, n_params
    except ImportError:
        print("PyTorch not installed: torch rows skipped")
        return []
    torch.set_num_threads(THREADS)
    arch = pkg.card.architecture
    model = build(arch, len(pkg.card.spec.bands)).eval()
    want = pkg.card.training.get("params")
    if want is not None and n_params(model) != want:
        raise SystemExit(f"torch {arch} has {n_params(model)} parameters, the card says {want}")
    fcn = fcn_of(model)
    xt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 0)))[None]  # 1×C×H×W
    patches = torch.from_numpy(np.ascontiguousarray(
        np.lib.stride_tricks.sliding_window_view(x, (48, 48), axis=(0, 1))[::24, ::24].reshape(-1, x.shape[-1], 48, 48)))  # fmt: skip
    n = patches.shape[0]

    def per_patch() -> None:
        with torch.inference_mode():
            for i in range(0, n, 512):
                model(patches[i : i + 512])

    def fast() -> None:
        with torch.inference_mode():
            fcn.forward_strided(xt, head_stride=24 // fcn.fcn_stride)  # type: ignore[union-attr]

    out = []
    m, b = time_it(per_patch, repeats)
    out.append(row(f"PyTorch {torch.__version__.split('+')[0]}, per patch", n, m, THREADS, b))
    if fcn is not None:
        m, b = time_it(fast, repeats)
        out.append(row(f"PyTorch {torch.__version__.split('+')[0]}, fast path (FCN)", n, m, THREADS, b))
    return out


def bench_engine(n_tiles: int, tmp: Path) -> list[dict[str, Any]]:
    """The whole engine over ``n_tiles`` full tiles (a strip of them)."""
    cols = n_tiles // 2 if n_tiles >= 2 else 1
    rows_ = -(-n_tiles // cols)
    dn = np.concatenate([np.concatenate([real_window(1008, seed=10 * i + j) for j in range(cols)], axis=2) for i in range(rows_)], axis=1)
    img = write_mosaic(tmp / "bench.tif", dn, ANCHOR, 0, 0, tags={"START_DATE": "2024-01-01", "END_DATE": "2024-12-31"}, cog=False)
    out = []
    for label, sched, workers, cores in (("engine, in process (synchronous)", "synchronous", None, os.cpu_count() or 1),
                                         ("engine, Dask LocalCluster, 1 worker", None, 1, 1),
                                         ("engine, Dask LocalCluster, 2 workers", None, 2, 2)):  # fmt: skip
        t0 = time.perf_counter()
        res = run_detect(img, DetectRequest(models=("default",), period="2024", min_score=0.4), tmp / f"out_{workers}_{sched}",
                         scheduler=sched, workers=workers, progress=False)  # fmt: skip
        total = time.perf_counter() - t0
        tc = res.totals["this_call"]
        r = row(label, res.totals["scored"], tc["seconds"], cores)
        r["total_seconds_incl_startup"] = total
        r["tiles"] = len(res.done)
        out.append(r)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tiles", type=int, default=8)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    load0 = os.getloadavg()
    models = bench_models(a.repeats)
    with tempfile.TemporaryDirectory() as d:
        engine = bench_engine(a.tiles, Path(d))
    load1 = os.getloadavg()
    base = models[0]["patches_per_s"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load0[0]:.2f} → {load1[0]:.2f}")
    print("| what | patches/s | km²/s | × baseline | Amazon 8.2 M km²: wall h (this machine) | CPU-h |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in models + engine:
        print(f"| {r['name']} | {r['patches_per_s']:,.0f} | {r['km2_per_s']:,.1f} | {r['patches_per_s'] / base:.2f} | {r['amazon_wall_h']:,.1f} | {r['amazon_cpu_h']:,.1f} |")
    for r in engine:
        print(f"{r['name']}: {r['tiles']} tiles, {r['seconds']:.2f} s scoring wall, {r['total_seconds_incl_startup']:.2f} s with start-up and merge")
    if a.json:
        a.json.write_text(json.dumps({"models": models, "engine": engine, "load": [load0, load1], "cores": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
