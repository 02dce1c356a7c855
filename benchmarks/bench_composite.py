"""Composite benchmark: kernel throughput against numpy.nanmedian, and peak memory per worker per tile.

    python benchmarks/bench_composite.py [--dates 20] [--bands 12] [--tile-px 1008] [--workdir DIR]

1. Kernel: :func:`minewatch.imagery.composite.median_composite` (uint16 sort + index, exact
   round-half-even) against a plain ``numpy.nanmedian`` over the same float32 stack with NaN for
   masked observations, on a ``--kernel-px`` square window; reported as observations × pixels
   (× bands) per second.
2. Worker: one full tile end to end (odc-stac load from a synthetic local catalog of
   ``--dates`` scenes × ``--bands`` bands + SCL at native 10/20/60 m, mask, median, COG + item),
   exactly as a Dask worker runs it (``process_tile``, chunks computed one after another), in a
   fresh process; peak RSS from ``VmHWM`` in ``/proc/self/status`` and, for reference, the RSS of a process that only
   imported the same modules.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

WORKER = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
import datetime as dt
from minewatch.grid import Tile
from minewatch.imagery.engine import CompositeRequest, _plan_all, process_tile
from minewatch.imagery.sources import resolve_source
def hwm_kib():
    # VmHWM: this process's own peak RSS. (getrusage's ru_maxrss would include the parent's peak,
    # which Linux carries over an exec from a vfork-ed child.)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cfg = json.loads(sys.argv[1])
base = hwm_kib()
if cfg["mode"] == "imports":
    print(json.dumps({"peak_kib": base})); sys.exit(0)
tile = Tile.from_id(cfg["tile"], cfg["tile_px"])
src = resolve_source(cfg["catalog"], "l2a")
req = CompositeRequest(start=dt.date(2021, 1, 1), end=dt.date(2022, 12, 31), bands=tuple(cfg["bands"]), level="L2A", max_scene_cloud=100, chunk_px=cfg["chunk_px"])
plans = _plan_all([tile], req, src, lambda s: None)
t0 = time.perf_counter()
process_tile(plans[0], src, cfg["out"], cfg["chunk_px"], 1)
dt_s = time.perf_counter() - t0
print(json.dumps({"peak_kib": hwm_kib(), "seconds": dt_s, "observations": len(plans[0].groups)}))
"""


def kernel_bench(n_dates: int, n_bands: int, px: int, seed: int = 0) -> dict[str, float]:
    from minewatch.imagery.composite import median_composite

    rng = np.random.default_rng(seed)
    stack = rng.integers(1, 6000, size=(n_dates, n_bands, px, px), dtype=np.uint16)
    clear = rng.random((n_dates, px, px)) > 0.35
    t0 = time.perf_counter()
    med, count = median_composite(stack, clear)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    vals = np.where(clear[:, None], stack.astype(np.float32), np.float32(np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = np.nanmedian(vals, axis=0)
    t_np = time.perf_counter() - t0
    ref = np.where(np.isnan(ref), 0, np.round(ref)).astype(np.uint16)
    assert np.array_equal(med, ref), "kernel disagrees with nanmedian"
    work = n_dates * px * px * n_bands
    return {"ours_s": t_ours, "nanmedian_s": t_np, "ours_rate": work / t_ours, "nanmedian_rate": work / t_np}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dates", type=int, default=20)
    ap.add_argument("--bands", type=int, default=12)
    ap.add_argument("--tile-px", type=int, default=1008)
    ap.add_argument("--kernel-px", type=int, default=504)
    ap.add_argument("--chunk-px", type=int, nargs="+", default=[512, 1008])
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    from minewatch.bands import S2_BANDS_12
    from minewatch.grid import Tile
    from minewatch.imagery.synthetic import SceneSpec, make_catalog

    k = kernel_bench(args.dates, args.bands, args.kernel_px)
    print(f"kernel ({args.dates} obs x {args.bands} bands x {args.kernel_px}^2 px):")
    print(f"  median_composite  {k['ours_s']:7.2f} s  {k['ours_rate'] / 1e6:8.1f} M obs*px*band/s")
    print(f"  numpy.nanmedian   {k['nanmedian_s']:7.2f} s  {k['nanmedian_rate'] / 1e6:8.1f} M obs*px*band/s   (x{k['nanmedian_s'] / k['ours_s']:.1f} slower)")

    bands = list(S2_BANDS_12)[: args.bands]
    tile = Tile(21, 80, -28, args.tile_px, 10)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        t0 = time.perf_counter()
        days = [dt.date(2021, 1, 1) + dt.timedelta(days=int(d)) for d in np.linspace(0, 700, args.dates)]
        cat = make_catalog(Path(tmp) / "cat", epsg=tile.epsg, bounds=tile.bounds, scenes=[SceneSpec(d, cloud=0.3) for d in days], bands=bands, seed=1)
        print(f"synthetic catalog: {args.dates} scenes x ({len(bands)} bands + SCL) written in {time.perf_counter() - t0:.1f} s")
        imp = json.loads(subprocess.run([sys.executable, "-c", WORKER, json.dumps({"mode": "imports"})], capture_output=True, text=True, check=True).stdout)
        print(f"worker process after imports: {imp['peak_kib'] / 1024:.0f} MiB RSS")
        for chunk in args.chunk_px:
            cfg = {"mode": "run", "tile": tile.id, "tile_px": args.tile_px, "catalog": str(cat), "bands": bands, "chunk_px": chunk, "out": str(Path(tmp) / f"out{chunk}")}
            r = subprocess.run([sys.executable, "-c", WORKER, json.dumps(cfg)], capture_output=True, text=True)
            if r.returncode:
                print(r.stderr[-2000:])
                raise SystemExit(1)
            res = json.loads(r.stdout.strip().splitlines()[-1])
            work = res["observations"] * args.tile_px**2 * len(bands)
            print(
                f"full tile {args.tile_px}^2 px, {res['observations']} obs, {len(bands)} bands, chunk {chunk}: "
                f"{res['seconds']:.1f} s ({work / res['seconds'] / 1e6:.1f} M obs*px*band/s end to end), "
                f"peak RSS {res['peak_kib'] / 1024:.0f} MiB"
            )


if __name__ == "__main__":
    main()
