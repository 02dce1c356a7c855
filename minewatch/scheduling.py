"""Which scheduler a run uses when nobody says: the rule, in one place for composite, detect and run.

Measured on the 2-core development machine (``benchmarks/README.md``): in-process threads beat a
Dask ``LocalCluster`` for both stages, because the heavy parts (GDAL decoding, NumPy kernels, ONNX
Runtime) release the GIL, while process workers pay a start-up of seconds plus pickling and
inter-process traffic per tile. So on one machine the default (``None`` or ``"auto"``) is
**in process**, tiles one after another (``threads`` in-process workers for composite), every
core inside the tile.

Processes only pay when the Python-level glue of many concurrent tiles (GIL-bound) would make
threads queue: the rule switches to a ``LocalCluster`` when the machine has at least
:data:`CLUSTER_MIN_CORES` cores **and** there are at least two tiles per worker, with one worker
per :data:`CORES_PER_WORKER` cores (each using all of its cores inside a tile). Both numbers are
an extrapolation (no machine with more than 2 cores was available to measure on). A cluster is
always used when asked for: ``"local"``, or an address ``tcp://host:8786``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

CLUSTER_MIN_CORES = 16
CORES_PER_WORKER = 8
IN_PROCESS = ("threads", "synchronous")


def cores() -> int:
    """Cores this process may use (the affinity mask where the OS has one, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def map_threads(fn: Callable[[T], R], items: Iterable[T], threads: int | None = None) -> list[R]:
    """``[fn(x) for x in items]`` on ``threads`` threads (default: every core), in order.

    For work that releases the GIL (GDAL decoding, GEOS, PROJ, NumPy); one thread runs inline, so a
    traceback points at the work, not at the pool.
    """
    n = cores() if threads is None else max(1, threads)
    todo = list(items)
    if n <= 1 or len(todo) <= 1:
        return [fn(x) for x in todo]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(n, len(todo))) as pool:
        return list(pool.map(fn, todo))


def resolve_scheduler(requested: str | None, n_tiles: int, n_cores: int | None = None) -> str:
    """The scheduler a run uses: ``requested`` unless it is ``None``/``"auto"``, then the rule above
    (``"threads"`` or ``"local"``)."""
    if requested not in (None, "auto"):
        return requested  # type: ignore[return-value]
    c = cores() if n_cores is None else n_cores
    workers = c // CORES_PER_WORKER
    if c >= CLUSTER_MIN_CORES and n_tiles >= 2 * workers:
        return "local"
    return "threads"


def cluster_workers(n_cores: int | None = None) -> int:
    """Default LocalCluster size: one process per :data:`CORES_PER_WORKER` cores (at least 1)."""
    c = cores() if n_cores is None else n_cores
    return max(1, c // CORES_PER_WORKER)
