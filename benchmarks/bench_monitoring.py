"""Monitoring commands (issue #13) on the 2018–2025Q3 published layers, whole commands and baselines.

    python benchmarks/bench_monitoring.py [--repeats 2] [--skip-plain]

1. ``minewatch persist``, ``change`` and ``alerts`` as a user types them (a new process each, fresh
   output folder, Python start-up and imports included): the issue's goal is under 10 s each.
2. In this process, the plain way with the same libraries (GeoPandas, shapely), for the two
   commands that have one:
   * change: read every layer with ``gpd.read_file``, project to EPSG:6933, ``union_all`` per
     period, growth = ``difference`` with the running union, ``explode``, drop pieces under 11 ha,
     ``to_file`` GeoJSON;
   * alerts: ``gpd.read_parquet`` the persistence layer, keep what is new since 2024, ``sjoin``
     with the territories (first match, not the largest overlap), ``sjoin_nearest`` to the airstrips
     in EPSG:6933, then ``to_file`` GeoJSON, GeoPackage and a CSV; against ``make_alerts`` +
     ``write_alerts`` (largest-overlap zones, geocentric nearest airstrip, six files).
   persist has no plain equivalent (the rule is minewatch's own), so only its whole-command time.

Prints one line per measurement and the ratios; the machine is whatever runs it (state it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.simplefilter("ignore")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from minewatch.config import shared_data_dir  # noqa: E402


def _cli(args: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "minewatch.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    if r.returncode:
        raise SystemExit(f"minewatch {' '.join(args)} failed: {r.stderr.strip()[-300:]}")
    return time.perf_counter() - t


def plain_change(files: list[Path], out: Path) -> None:
    import geopandas as gpd
    import pandas as pd
    import shapely

    cum = None
    pieces = []
    for f in files:  # file names sort in time order (mining_YYYYQQ_…)
        g = gpd.read_file(f).to_crs(6933).geometry.union_all()
        growth = g if cum is None else shapely.difference(g, cum)
        parts = gpd.GeoDataFrame(geometry=[growth], crs=6933).explode(index_parts=False)
        parts = parts[parts.area >= 11 * 1e4]
        parts["period"] = f.name.split("_")[1]
        pieces.append(parts)
        cum = g if cum is None else shapely.union(cum, g)
    gpd.GeoDataFrame(pd.concat(pieces, ignore_index=True), crs=6933).to_crs(4326).to_file(out / "change.geojson", driver="GeoJSON")


def plain_alerts(persistence: Path, zones: Path, airstrips: Path, out: Path) -> None:
    import geopandas as gpd

    p = gpd.read_parquet(persistence)
    new = p[((p["status"] == "confirmed") & (p["confirmed_in"].fillna("0") >= "2024")) | ((p["status"] == "provisional") & (p["period"] >= "2024"))]
    z = gpd.read_file(zones)[["id", "name_field", "geometry"]]
    a = gpd.sjoin(new, z, how="left", predicate="intersects").drop_duplicates("polygon_id").drop(columns="index_right")
    s = gpd.read_file(airstrips)[["geometry"]].to_crs(6933)
    a = gpd.sjoin_nearest(a.to_crs(6933), s, how="left", distance_col="airstrip_distance_m").drop_duplicates("polygon_id").drop(columns="index_right").to_crs(4326)
    a.to_file(out / "alerts.geojson", driver="GeoJSON")
    a.to_file(out / "alerts.gpkg", driver="GPKG")
    c = a.representative_point()
    a.drop(columns="geometry").assign(lat=c.y, lon=c.x).to_csv(out / "alerts.csv", index=False)


def minewatch_change(files: list[Path], out: Path) -> None:
    from minewatch.postprocess.change import run_change

    run_change([str(f) for f in files], str(out))


def minewatch_alerts(persistence: Path, zones: Path, airstrips: Path, out: Path) -> None:
    from minewatch.impacts.alerts import run_alerts

    run_alerts(persistence, out, "2024", zones, airstrips=airstrips)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-plain", action="store_true", help="only the whole commands")
    args = ap.parse_args()
    shared = shared_data_dir()
    det = shared / "upstream" / "detections"
    zones = shared / "upstream" / "boundaries" / "indigenous_territories.geojson"
    strips = shared / "upstream" / "airstrips" / "Illegal-Airstrips-NYT-Intercept-Public.geojson"
    files = sorted(det.glob("mining_*.geojson"))
    print(f"{len(files)} published layers; load average {os.getloadavg()[0]:.1f}; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        times: dict[str, list[float]] = {}
        for r in range(args.repeats):
            for name, cmd in (("persist", ["persist", str(det), "--out", f"persist {r}"]),
                              ("change", ["change", str(det), "--out", f"change {r}"]),
                              ("alerts", ["alerts", f"persist {r}", "--since", "2024", "--zones", str(zones), "--airstrips", str(strips), "--out", f"alerts {r}"])):  # fmt: skip
                times.setdefault(name, []).append(_cli(cmd, tmp))
        for name, v in times.items():
            print(f"minewatch {name:8s} (whole command): median {statistics.median(v):6.2f} s  rounds {', '.join(f'{x:.2f}' for x in v)}  goal < 10 s: {'yes' if max(v) < 10 else 'NO'}")
        if args.skip_plain:
            return
        for label, ours, plain in (
            ("change", lambda o: minewatch_change(files, o), lambda o: plain_change(files, o)),
            ("alerts", lambda o: minewatch_alerts(tmp / "persist 0" / "persistence.parquet", zones, strips, o),
             lambda o: plain_alerts(tmp / "persist 0" / "persistence.parquet", zones, strips, o)),
        ):  # fmt: skip
            res = {}
            for who, fn in (("minewatch", ours), ("plain", plain)):
                best = float("inf")
                for r in range(args.repeats):
                    o = tmp / f"{label}-{who}-{r}"
                    o.mkdir()
                    t = time.perf_counter()
                    fn(o)
                    best = min(best, time.perf_counter() - t)
                    shutil.rmtree(o)
                res[who] = best
            print(f"{label:8s} in process: minewatch {res['minewatch']:6.2f} s, plain GeoPandas {res['plain']:6.2f} s  → {res['plain'] / res['minewatch']:.1f}× faster")


if __name__ == "__main__":
    main()
