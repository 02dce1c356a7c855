"""Composite benchmark: today's code vs the new code vs the plain way, interleaved in one script.

    python benchmarks/bench_composite.py [--dates 20] [--bands 12] [--tile-px 1008] [--rounds 3]
        [--today 6a0b765] [--workdir DIR]

"Today" is the code of commit ``--today`` (default: the last commit before the direct reader),
exported with ``git archive`` into a temporary folder and put first on ``PYTHONPATH`` of its
subprocesses, so it is measured exactly as it was, on the same machine in the same rounds.

1. Kernel (in this process): the median of a ``--kernel-px`` square window of ``--dates``
   observations × ``--bands`` bands: the sort kernel (today), the sorting network (new) and a
   plain ``numpy.nanmedian``; all three must agree exactly.
2. One tile as a worker runs it (``process_tile``: read, mask, median, COG + item), each in a fresh
   process with the libraries already imported (a worker's steady state): today (odc-stac, 512 px chunks, one thread), new (direct reader, all cores), new on one
   thread. Wall time, process CPU time and peak RSS (``VmHWM``).
3. The whole command: ``minewatch composite`` (today, new) against the plain way a user would write
   it with the same libraries (``odc.stac.load`` + SCL mask + ``xarray .median("time")`` on Dask
   threads, the same catalog and output grid, written as a DEFLATE GeoTIFF), each a fresh
   process from interpreter start to exit; wall and CPU time (children's rusage).
4. Roofline: bytes decoded per second in the read phase against this machine's measured peak
   (GDAL reading every file of the catalog whole, one thread, × cores), and the median kernel's
   comparator rate against NumPy's uint16 ``minimum`` on in-cache arrays.

Rounds are interleaved (today, new, plain, today, new, plain, …) and the best round is reported
with the median in brackets: the machine is shared, so compare ratios within one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TODAY_COMMIT = "6a0b765"

WORKER = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import datetime as dt
from minewatch.grid import Tile
from minewatch.imagery.engine import CompositeRequest, _plan_all, process_tile
from minewatch.imagery.sources import resolve_source
def hwm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
cfg = json.loads(sys.argv[1])
tile = Tile.from_id(cfg["tile"], cfg["tile_px"])
src = resolve_source(cfg["catalog"], "l2a")
req = CompositeRequest(start=dt.date(2021, 1, 1), end=dt.date(2022, 12, 31), bands=tuple(cfg["bands"]), level="L2A", max_scene_cloud=100)
plans = _plan_all([tile], req, src, lambda s: None)
import dask.array, odc.stac, rasterio, xarray  # a worker's steady state: imports paid by its first tile, not timed here
base = hwm_kib()
t0, c0 = time.perf_counter(), time.process_time()
process_tile(plans[0], src, cfg["out"], 512, cfg["threads"])
import minewatch
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "peak_kib": hwm_kib(), "import_kib": base,
                  "observations": len(plans[0].groups), "code": minewatch.__file__}))
"""

PLAIN = r'''
"""The plain way: odc-stac load + SCL mask + xarray median on Dask threads, written with rasterio."""
import sys, warnings
warnings.simplefilter("ignore")
import numpy as np, pystac, rasterio, odc.stac
from odc.geo.geobox import GeoBox
from rasterio.crs import CRS
from affine import Affine
cat, out, epsg, left, top, px, bands = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), sys.argv[7].split(",")
items = list(pystac.Catalog.from_file(cat).get_items(recursive=True))
gbox = GeoBox((px, px), Affine(10, 0, left, 0, -10, top), CRS.from_epsg(epsg))
ds = odc.stac.load(items, bands=bands + ["scl"], geobox=gbox, groupby="solar_day", chunks={"x": 512, "y": 512})
clear = ds["scl"].isin([4, 5, 6, 7, 11])
stack = ds[bands].to_array("band").where(clear & (ds[bands].to_array("band") > 0).all("band"))
med = stack.chunk({"time": -1}).median("time", skipna=True).compute(scheduler="threads")
data = np.nan_to_num(med.values).round().astype("uint16")
with rasterio.open(out, "w", driver="GTiff", width=px, height=px, count=len(bands), dtype="uint16", crs=gbox.crs.to_wkt(),
                   transform=gbox.transform, nodata=0, compress="deflate", predictor=2, tiled=True) as dst:
    dst.write(data)
'''


def export_today(commit: str, dest: Path) -> Path | None:
    """``git archive`` of ``commit`` into ``dest`` (None when this is not a git checkout)."""
    try:
        tar = subprocess.run(["git", "-C", str(REPO), "archive", commit, "minewatch"], capture_output=True, check=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    return dest


def child_run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, float, str]:
    """(wall s, CPU s of the child, stdout) of one subprocess run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        sys.stderr.write(r.stderr[-3000:])
        raise SystemExit(f"failed: {' '.join(cmd[:4])} …")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r.stdout


def env_with(path: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = str(path) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def kernel_bench(n_dates: int, n_bands: int, px: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    from minewatch.imagery.composite import median_composite, median_composite_network

    rng = np.random.default_rng(0)
    stack = rng.integers(1, 6000, size=(n_dates, n_bands, px, px), dtype=np.uint16)
    clear = rng.random((n_dates, px, px)) > 0.35
    times: dict[str, list[float]] = {"sort (today)": [], "network (new)": [], "numpy.nanmedian": []}
    cpu: dict[str, list[float]] = {k: [] for k in times}

    def timed(name: str, fn: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times[name].append(time.perf_counter() - t0)
        cpu[name].append(time.process_time() - c0)
        return out

    def nanmed() -> np.ndarray:
        vals = np.where(clear[:, None], stack.astype(np.float32), np.float32(np.nan))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(vals, axis=0)

    for _ in range(rounds):
        a = timed("sort (today)", lambda: median_composite(stack, clear))
        b = timed("network (new)", lambda: median_composite_network(stack, clear))
        ref = timed("numpy.nanmedian", nanmed)
        ref = np.where(np.isnan(ref), 0, np.round(ref)).astype(np.uint16)
        assert np.array_equal(a[0], ref) and np.array_equal(b[0], ref) and np.array_equal(a[1], b[1]), "kernels disagree"
    return {"wall": times, "cpu": cpu}


def roofline(catalog: Path, tile_id: str, tile_px: int, bands: list[str]) -> dict[str, float]:
    """Measured peaks and the new path's read phase and kernel, single thread."""
    import glob

    import rasterio

    from minewatch.grid import Tile
    from minewatch.imagery.composite import median_composite_network, merge_exchange_pairs
    from minewatch.imagery.engine import CompositeRequest, _plan_all
    from minewatch.imagery.load import read_tile_windows
    from minewatch.imagery.sources import resolve_source

    files = sorted(glob.glob(str(catalog.parent / "**" / "*.tif"), recursive=True))
    c0, nbytes = time.process_time(), 0
    for f in files:
        with rasterio.open(f) as src:
            nbytes += src.read(1).nbytes
    peak_decode = nbytes / (time.process_time() - c0)
    tile = Tile.from_id(tile_id, tile_px)
    src = resolve_source(str(catalog), "l2a")
    req = CompositeRequest(start=dt.date(2021, 1, 1), end=dt.date(2022, 12, 31), bands=tuple(bands), level="L2A", max_scene_cloud=100)
    plan = _plan_all([tile], req, src, lambda s: None)[0]
    c0 = time.process_time()
    windows = read_tile_windows(plan, src, 1)
    read_cpu = time.process_time() - c0
    read_bytes = sum(w.data.nbytes for group in windows for item in group for w in item.values())
    # kernel: comparator planes per second vs numpy's uint16 minimum on the same plane size
    n_t, plane = len(plan.groups), (len(bands), 16, tile_px)
    rng = np.random.default_rng(1)
    st = rng.integers(1, 6000, size=(n_t, *plane), dtype=np.uint16)
    cl = rng.random((n_t, *plane[1:])) > 0.3
    reps = 40
    c0 = time.process_time()
    for _ in range(reps):
        median_composite_network(st, cl)
    k_cpu = (time.process_time() - c0) / reps
    a, b, o = st[0].copy(), st[1].copy(), np.empty_like(st[0])
    c0 = time.process_time()
    for _ in range(2000):
        np.minimum(a, b, out=o)
    min_rate = 2000 * a.size / (time.process_time() - c0)
    ops = 2 * len(merge_exchange_pairs(n_t)) * st[0].size  # min + max per comparator
    return {
        "peak_decode_Bps": peak_decode, "read_Bps": read_bytes / read_cpu, "read_bytes": read_bytes, "read_cpu": read_cpu,
        "kernel_ops_per_s": ops / k_cpu, "numpy_min_per_s": min_rate, "comparators": len(merge_exchange_pairs(n_t)),
    }  # fmt: skip


def fmt(xs: list[float]) -> str:
    return f"{min(xs):6.2f} s [{statistics.median(xs):.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dates", type=int, default=20)
    ap.add_argument("--bands", type=int, default=12)
    ap.add_argument("--tile-px", type=int, default=1008)
    ap.add_argument("--kernel-px", type=int, default=504)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--today", default=TODAY_COMMIT, help="commit whose code is 'today' (git archive)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["kernel", "tile", "command", "roofline"])
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    from minewatch.bands import S2_BANDS_12
    from minewatch.grid import Tile
    from minewatch.imagery.synthetic import SceneSpec, make_catalog
    from minewatch.scheduling import cores

    n_cores = cores()
    load = os.getloadavg()
    print(f"machine: {n_cores} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at start (shared machine: compare ratios)")
    if "kernel" not in args.skip:
        k = kernel_bench(args.dates, args.bands, args.kernel_px, args.rounds)
        base, base_cpu = min(k["wall"]["sort (today)"]), min(k["cpu"]["sort (today)"])
        print(f"\n1. kernel, {args.dates} obs x {args.bands} bands x {args.kernel_px}^2 px, one thread (best [median] of {args.rounds}):")
        for name, xs in k["wall"].items():
            c = min(k["cpu"][name])
            print(f"  {name:18s} {fmt(xs)} CPU {c:6.2f} s  x{base / min(xs):5.2f} wall, x{base_cpu / c:5.2f} CPU vs today  {args.dates * args.bands * args.kernel_px**2 / c / 1e6:7.1f} M values per CPU-s")

    bands = list(S2_BANDS_12)[: args.bands]
    tile = Tile(21, 80, -28, args.tile_px, 10)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp_s:
        tmp = Path(tmp_s)
        today = export_today(args.today, tmp / "today")
        if today is None:
            print(f"(not a git checkout: 'today' rows skipped; they need commit {args.today})")
        days = [dt.date(2021, 1, 1) + dt.timedelta(days=int(d)) for d in np.linspace(0, 700, args.dates)]
        t0 = time.perf_counter()
        cat = make_catalog(tmp / "cat", epsg=tile.epsg, bounds=tile.bounds, scenes=[SceneSpec(d, cloud=0.3) for d in days], bands=bands, seed=1)
        size = sum(p.stat().st_size for p in (tmp / "cat").rglob("*.tif"))
        print(f"\nsynthetic catalog: {args.dates} scenes x ({len(bands)} bands + SCL), DEFLATE GeoTIFFs, {size / 1e6:.0f} MB on disk, written in {time.perf_counter() - t0:.1f} s")

        if "tile" not in args.skip:
            configs = [("today: odc-stac, 512 px chunks, 1 thread", today, 1), (f"new: direct reader, {n_cores} threads", None, n_cores), ("new: direct reader, 1 thread", None, 1)]
            configs = [c for c in configs if not (c[0].startswith("today") and today is None)]
            res: dict[str, list[dict]] = {c[0]: [] for c in configs}
            for r in range(args.rounds):
                for name, path, threads in configs:
                    cfg = {"tile": tile.id, "tile_px": args.tile_px, "catalog": str(cat), "bands": bands, "threads": threads, "out": str(tmp / f"tile-{r}-{threads}-{path is None}")}
                    _, _, out = child_run([sys.executable, "-c", WORKER, json.dumps(cfg)], env_with(path), cwd=tmp)  # not the repo: '' leads sys.path
                    got = json.loads(out.strip().splitlines()[-1])
                    assert (path is None) == (not got["code"].startswith(str(tmp))), f"{name} ran the wrong code: {got['code']}"
                    res[name].append(got)
            base = min(x["seconds"] for x in res[configs[0][0]])
            print(f"\n2. one tile {args.tile_px}^2 px, {args.dates} obs, {len(bands)} bands, as a worker runs it (best [median] of {args.rounds}):")
            for name, xs in res.items():
                s = [x["seconds"] for x in xs]
                c = [x["cpu"] for x in xs]
                print(f"  {name:42s} {fmt(s)} CPU {min(c):5.2f} s  x{base / min(s):5.2f} wall vs today  peak RSS {max(x['peak_kib'] for x in xs) / 1024:5.0f} MiB (after imports {xs[0]['import_kib'] / 1024:.0f})")

        if "command" not in args.skip:
            roi = tmp / "my area.geojson"
            import shapely
            from shapely.geometry import mapping

            roi.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": mapping(tile.geometry_wgs84().buffer(-2e-4))}))
            left, _, _, top = tile.bounds
            runs = {"today: minewatch composite": today, "new: minewatch composite": None, "plain: odc.stac.load + .median('time')": None}
            if today is None:
                runs.pop("today: minewatch composite")
            res2: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
            for r in range(args.rounds):
                for name, path in runs.items():
                    out = tmp / f"cmd {r} {name[:5]}"
                    if name.startswith("plain"):
                        cmd = [sys.executable, "-c", PLAIN, str(cat), str(tmp / f"plain-{r}.tif"), str(tile.epsg), str(left), str(top), str(args.tile_px), ",".join(_common(b) for b in bands)]
                    else:
                        cmd = [sys.executable, "-c", "from minewatch.cli.main import cli; cli()", "composite", "--roi", str(roi), "--start", "2021-01-01", "--end", "2022-12-31",
                               "--out", str(out), "--source", str(cat), "--level", "l2a", "--max-scene-cloud", "100", "--tile-px", str(args.tile_px), "--quiet"]  # fmt: skip
                    w, c, _ = child_run(cmd, env_with(path), cwd=tmp)
                    res2[name].append((w, c))
            print(f"\n3. the whole command, one {args.tile_px} px tile, interpreter start to exit (best [median] of {args.rounds}; CPU = the process and its children):")
            plain = min(w for w, _ in res2["plain: odc.stac.load + .median('time')"])
            today_best = min(w for w, _ in res2["today: minewatch composite"]) if today is not None else None
            for name, xs in res2.items():
                w = [x[0] for x in xs]
                extra = f"  x{today_best / min(w):5.2f} vs today" if today_best else ""
                print(f"  {name:42s} {fmt(w)} CPU {min(x[1] for x in xs):5.2f} s  x{plain / min(w):5.2f} vs plain{extra}")

        if "roofline" not in args.skip:
            rf = roofline(cat, tile.id, args.tile_px, bands)
            print("\n4. roofline (one thread, CPU time):")
            print(f"  peak: GDAL reads every catalog file whole at {rf['peak_decode_Bps'] / 1e6:6.0f} MB/s decoded per core ({n_cores} cores: {n_cores * rf['peak_decode_Bps'] / 1e6:.0f} MB/s)")
            print(f"  read phase of the new path: {rf['read_bytes'] / 1e6:.0f} MB decoded in {rf['read_cpu']:.2f} s = {rf['read_Bps'] / 1e6:.0f} MB/s ({100 * rf['read_Bps'] / rf['peak_decode_Bps']:.0f} % of peak)")
            print(f"  median network: {rf['comparators']} comparators, {rf['kernel_ops_per_s'] / 1e9:.2f} G uint16 min/max per s vs numpy.minimum alone {rf['numpy_min_per_s'] / 1e9:.2f} G/s ({100 * rf['kernel_ops_per_s'] / rf['numpy_min_per_s']:.0f} %)")


def _common(band: str) -> str:
    from minewatch.imagery.sources import COMMON_NAMES

    return COMMON_NAMES[band]


if __name__ == "__main__":
    main()
