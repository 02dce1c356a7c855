"""Binary classification metrics for mine/not-mine scores, in plain NumPy.

Why not just scikit-learn: we need a few operating-point metrics it lacks (sensitivity at a fixed
specificity, the F0.5-optimal threshold, Wilson intervals), all with the same tie rules, and every
function must return a plain float (NaN when a class is absent) so results drop straight into a JSON
model card. Conventions used throughout:

- ``y`` holds 0/1 labels, ``p`` scores (probabilities); a chip is *predicted positive* when
  ``p >= threshold``.
- Average precision is the step-wise area ``sum_n (R_n - R_{n-1}) P_n`` over distinct score
  thresholds (no interpolation) — the same definition as ``sklearn.metrics.average_precision_score``.
- Undefined values (e.g. sensitivity without positives) are ``nan``; :func:`json_safe` turns them
  into ``None`` for strict JSON.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _check(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and scores ({p.size}) differ in length")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(p).all():
        raise ValueError("scores contain NaN or infinite values")
    return y.astype(np.int8), p


def _curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (tp, fp, threshold) at each distinct score, from the highest score down."""
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(ps)), ps.size - 1]
    tp = np.cumsum(ys)[last_of_run].astype(np.float64)
    fp = (last_of_run + 1) - tp
    return tp, fp, ps[last_of_run]


def average_precision(y: Any, p: Any) -> float:
    """Step-wise average precision; ``nan`` without positives."""
    y, p = _check(y, p)
    n_pos = int(y.sum())
    if n_pos == 0:
        return math.nan
    tp, fp, _ = _curve(y, p)
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(y: Any, p: Any) -> float:
    """Area under the ROC curve (Mann–Whitney U with tied scores counted half); ``nan`` if a class is absent."""
    y, p = _check(y, p)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    ranks = np.empty(p.size, dtype=np.float64)
    # average ranks (1-based) over tied runs
    starts = np.r_[0, np.flatnonzero(np.diff(ps)) + 1]
    ends = np.r_[starts[1:], ps.size]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def sensitivity_specificity(y: Any, p: Any, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) when chips with ``p >= threshold`` are called mines."""
    y, p = _check(y, p)
    pred = p >= threshold
    pos, neg = y == 1, y == 0
    sens = float(pred[pos].mean()) if pos.any() else math.nan
    spec = float((~pred[neg]).mean()) if neg.any() else math.nan
    return sens, spec


def threshold_at_specificity(y: Any, p: Any, specificity: float = 0.99) -> float:
    """Lowest threshold whose specificity is at least ``specificity`` (``nan`` without negatives).

    At most ``floor(n_neg * (1 - specificity))`` negatives may score at or above it; with tied
    scores the threshold sits just above the tie so the bound is never exceeded.
    """
    y, p = _check(y, p)
    neg = np.sort(p[y == 0])[::-1]
    if neg.size == 0:
        return math.nan
    allowed = int(math.floor(neg.size * (1.0 - specificity) + 1e-9))
    if allowed >= neg.size:
        return float(min(p.min(), neg.min()))
    return float(np.nextafter(neg[allowed], np.inf))


def sensitivity_at_specificity(y: Any, p: Any, specificity: float = 0.99) -> float:
    """Best sensitivity reachable while keeping specificity ≥ ``specificity``; ``nan`` if a class is absent."""
    y, p = _check(y, p)
    if not (y == 1).any() or not (y == 0).any():
        return math.nan
    t = threshold_at_specificity(y, p, specificity)
    return float((p[y == 1] >= t).mean())


def fbeta_optimal_threshold(y: Any, p: Any, beta: float = 0.5) -> tuple[float, float]:
    """(threshold, F_beta) maximising F_beta over all distinct score thresholds.

    ``beta=0.5`` weights precision twice as much as recall: the right trade for a map whose false
    alarms cost reviewers' time. Ties between thresholds go to the highest one. ``(nan, nan)``
    without positives.
    """
    y, p = _check(y, p)
    n_pos = int(y.sum())
    if n_pos == 0 or y.size == 0:
        return math.nan, math.nan
    tp, fp, thr = _curve(y, p)
    precision = tp / (tp + fp)
    recall = tp / n_pos
    b2 = beta * beta
    denom = b2 * precision + recall
    f = np.where(denom > 0, (1 + b2) * precision * recall / np.where(denom > 0, denom, 1.0), 0.0)
    i = int(np.argmax(f))
    return float(thr[i]), float(f[i])


def precision_recall_curve(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, threshold) at each distinct threshold, highest threshold first."""
    y, p = _check(y, p)
    n_pos = int(y.sum())
    tp, fp, thr = _curve(y, p)
    recall = tp / n_pos if n_pos else np.full_like(tp, np.nan)
    return tp / (tp + fp), recall, thr


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion ``k/n`` (default 95%); ``(nan, nan)`` when ``n == 0``.

    Preferred over the normal approximation because it stays inside [0, 1] and behaves at k=0 or k=n,
    which is common for small review samples.
    """
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must lie in [0, n={n}]")
    phat = k / n
    z2 = z * z
    centre = (phat + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(phat * (1 - phat) / n + z2 / (4 * n * n))
    # Exact ends: rounding leaves ~1e-17 above 0 at k = 0 (or below 1 at k = n).
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def summary(y: Any, p: Any, threshold: float) -> dict[str, Any]:
    """All headline metrics in one JSON-ready dict (floats may be ``nan``; see :func:`json_safe`)."""
    y, p = _check(y, p)
    sens, spec = sensitivity_specificity(y, p, threshold)
    f_t, f_v = fbeta_optimal_threshold(y, p, 0.5)
    return {
        "n": int(y.size),
        "n_pos": int(y.sum()),
        "ap": average_precision(y, p),
        "roc_auc": roc_auc(y, p),
        "sensitivity": sens,
        "specificity": spec,
        "threshold": float(threshold),
        "sens_at_spec99": sensitivity_at_specificity(y, p, 0.99),
        "f05_threshold": f_t,
        "f05": f_v,
    }


def json_safe(obj: Any) -> Any:
    """Recursively replace NaN/inf floats with ``None`` and NumPy scalars with Python ones (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
