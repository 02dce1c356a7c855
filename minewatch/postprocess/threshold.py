"""Dual threshold with a spatial prior: which scored patches count as mining.

Mining comes in clusters (pits, tailings, camps along a river); a lone high-ish patch far from any
other detection is more often a sandbar, a landslide or a cloud remnant. So:

1. keep patches whose ensemble-mean ``score`` ≥ ``t_main``;
2. among the kept, a patch whose k-th nearest *other* kept patch (distance between patch centres,
   in metres) is farther than ``distance_km`` is *isolated*: it stays only if ``score`` ≥ ``t_iso``.
   With fewer than k other kept patches in the whole layer every patch is isolated.

Distances are computed between patch centres in geocentric coordinates (see
:mod:`minewatch.postprocess.geom`): metric, exact to 1e-8 at a few km, and free of UTM-zone seams,
so a cluster straddling two tiles in different zones is still one cluster.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import geopandas as gpd
import numpy as np
import shapely
from scipy.spatial import cKDTree

from minewatch.errors import MinewatchError
from minewatch.postprocess.geom import ecef


def check_thresholds(t_main: float | None, t_iso: float | None) -> None:
    """One-line errors for thresholds outside [0, 1] (or NaN), before any work is done."""
    for label, v in (("--t-main", t_main), ("--t-iso", t_iso)):
        if v is not None and not 0.0 <= v <= 1.0:
            raise MinewatchError(label, f"must be a probability in [0, 1], got {v}")


@dataclass(frozen=True)
class ThresholdParams:
    """Thresholds of one post-processing run (probabilities in [0, 1], distance in km)."""

    t_main: float
    """Every kept patch has a mean score at least this."""
    t_iso: float | None
    """Isolated patches must also reach this; ``None`` turns the spatial prior off (plain threshold)."""
    k: int = 5
    """The k-th nearest kept neighbour decides isolation."""
    distance_km: float = 3.0
    """A patch is isolated when its k-th nearest kept neighbour is farther than this."""
    name: str = "custom"

    def __post_init__(self) -> None:
        check_thresholds(self.t_main, self.t_iso)
        if self.k < 1:
            raise MinewatchError("--k", f"must be ≥ 1, got {self.k}")
        if not self.distance_km > 0:
            raise MinewatchError("--distance-km", f"must be > 0, got {self.distance_km}")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


PRESETS: dict[str, ThresholdParams] = {
    # One period's composite: lower main threshold, strict for isolated patches.
    "single": ThresholdParams(0.43, 0.75, name="single"),
    # Several periods merged (more chances for a false positive): stricter on both.
    "cumulative": ThresholdParams(0.55, 0.80, name="cumulative"),
    # The 2024 release: plain mean score >= 0.6, then dissolve (no spatial prior).
    "mean06": ThresholdParams(0.60, None, name="mean06"),
}
"""Named threshold sets: ``single`` (0.43 / 0.75), ``cumulative`` (0.55 / 0.80), ``mean06`` (0.6, no prior)."""


def preset(name: str, **overrides: float | int | None) -> ThresholdParams:
    """A preset with some fields overridden (``None`` overrides are ignored)."""
    if name not in PRESETS:
        raise MinewatchError("--preset", f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[name].as_dict()
    changed = {k: v for k, v in overrides.items() if v is not None}
    base.update(changed)
    if changed:
        base["name"] = f"{name}+custom"
    return ThresholdParams(**base)  # type: ignore[arg-type]


def patch_centres(patches: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat (degrees) of each patch footprint's centre.

    The planar centroid of the WGS84 footprint: over 480 m the UTM → lon/lat map is affine to second
    order, so this lies within ~(480 m)²/R ≈ 4 cm of the true square's centre — a locating step only;
    all distances are then metric (:func:`isolated_mask`).
    """
    if len(patches) == 0:
        return np.zeros(0), np.zeros(0)
    c = shapely.centroid(patches.geometry.to_numpy())
    return shapely.get_x(c), shapely.get_y(c)


def kth_neighbour_distance(xyz: np.ndarray, k: int) -> np.ndarray:
    """Distance (m) from each point to its k-th nearest *other* point; ``inf`` if there are fewer than k others."""
    n = len(xyz)
    if n == 0:
        return np.zeros(0)
    if n <= k:
        return np.full(n, np.inf)
    d, _ = cKDTree(xyz).query(xyz, k=k + 1)  # column 0 is the point itself (distance 0)
    return np.asarray(d[:, k], dtype=float)


def isolated_mask(lon: np.ndarray, lat: np.ndarray, k: int, distance_km: float) -> np.ndarray:
    """True where the k-th nearest other point is farther than ``distance_km`` (metric, geocentric)."""
    return kth_neighbour_distance(ecef(lon, lat), k) > distance_km * 1000.0


def classify(patches: gpd.GeoDataFrame, params: ThresholdParams) -> tuple[np.ndarray, np.ndarray]:
    """(kept, isolated) boolean masks, per period (see the module docstring).

    ``isolated`` is only ever True for patches passing ``t_main``; isolation is judged among the
    patches kept by ``t_main`` *of the same period*, so a multi-period file is thresholded period by
    period. With ``t_iso`` None (``mean06``) nothing is isolated.
    """
    score = patches["score"].to_numpy(dtype=float)
    main = score >= params.t_main
    isolated = np.zeros(len(patches), dtype=bool)
    if params.t_iso is None or not main.any():
        return main, isolated
    periods = patches["period"].astype(str).to_numpy() if "period" in patches.columns else np.full(len(patches), "")
    cand = np.flatnonzero(main)
    lon, lat = patch_centres(patches.iloc[cand])
    for p in np.unique(periods[cand]):
        sel = periods[cand] == p
        isolated[cand[sel]] = isolated_mask(lon[sel], lat[sel], params.k, params.distance_km)
    keep = main & ~(isolated & (score < params.t_iso))
    return keep, isolated


def dual_threshold(patches: gpd.GeoDataFrame, params: ThresholdParams) -> np.ndarray:
    """Boolean mask of the patches that count as mining (see :func:`classify`)."""
    return classify(patches, params)[0]
