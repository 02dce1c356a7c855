"""Metrics against hand computations on tiny known sets, and against scikit-learn on random data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from minewatch.train import metrics as M

# Ranked from the highest score: + - + + - - + -
Y = np.array([1, 0, 1, 1, 0, 0, 1, 0])
P = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])


def test_average_precision_by_hand() -> None:
    # precision at each positive's rank: 1/1, 2/3, 3/4, 4/7
    assert M.average_precision(Y, P) == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 7) / 4)


def test_roc_auc_by_hand() -> None:
    # positive/negative pairs ranked correctly: 4 + 3 + 3 + 1 out of 16
    assert M.roc_auc(Y, P) == pytest.approx(11 / 16)


def test_sensitivity_specificity_by_hand() -> None:
    assert M.sensitivity_specificity(Y, P, 0.55) == pytest.approx((3 / 4, 3 / 4))
    # threshold is inclusive: p >= t is a mine
    assert M.sensitivity_specificity(Y, P, 0.6) == pytest.approx((3 / 4, 3 / 4))
    assert M.sensitivity_specificity(Y, P, 0.61) == pytest.approx((2 / 4, 3 / 4))


def test_sensitivity_at_specificity_by_hand() -> None:
    # 4 negatives: spec 0.99 allows no false positive -> only the 0.9 mine is above the top negative 0.8
    assert M.sensitivity_at_specificity(Y, P, 0.99) == pytest.approx(1 / 4)
    # spec 0.75 allows one false positive -> threshold just above 0.5 -> 3 of 4 mines
    assert M.sensitivity_at_specificity(Y, P, 0.75) == pytest.approx(3 / 4)
    t = M.threshold_at_specificity(Y, P, 0.75)
    assert 0.5 < t <= 0.6
    assert M.sensitivity_specificity(Y, P, t)[1] >= 0.75


def test_fbeta_optimal_threshold_by_hand() -> None:
    # at t=0.6: precision 3/4, recall 3/4 -> F0.5 = 0.75, the best of the 8 thresholds
    t, f = M.fbeta_optimal_threshold(Y, P, beta=0.5)
    assert t == pytest.approx(0.6)
    assert f == pytest.approx(0.75)
    # beta=1 (F1) prefers t=0.3 (P=4/7, R=1 -> 8/11) over t=0.6 (0.75)? 8/11 = 0.727 < 0.75
    t1, f1 = M.fbeta_optimal_threshold(Y, P, beta=1.0)
    assert (t1, f1) == pytest.approx((0.6, 0.75))
    # beta=2 favours recall: t=0.3 gives 5*(4/7)/(4*(4/7)+1) = 20/23
    t2, f2 = M.fbeta_optimal_threshold(Y, P, beta=2.0)
    assert (t2, f2) == pytest.approx((0.3, 20 / 23))


def test_ties_by_hand() -> None:
    y, p = [1, 0, 1, 0], [0.5, 0.5, 0.5, 0.1]
    assert M.average_precision(y, p) == pytest.approx(2 / 3)
    assert M.roc_auc(y, p) == pytest.approx(0.75)
    # the tied negative at 0.5 cannot be excluded without excluding both mines
    assert M.sensitivity_at_specificity(y, p, 0.99) == 0.0


def test_wilson_interval_by_hand() -> None:
    lo, hi = M.wilson_interval(8, 10)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert M.wilson_interval(0, 10)[0] == 0.0
    assert M.wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert all(math.isnan(v) for v in M.wilson_interval(0, 0))
    with pytest.raises(ValueError):
        M.wilson_interval(11, 10)


def test_matches_sklearn_on_random_scores() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = rng.integers(0, 2, 300)
        p = np.round(rng.random(300) * 0.5 + y * rng.random(300) * 0.5, 2)  # rounded -> many ties
        assert M.average_precision(y, p) == pytest.approx(average_precision_score(y, p))
        assert M.roc_auc(y, p) == pytest.approx(roc_auc_score(y, p))


def test_summary_is_json_and_nan_safe() -> None:
    s = M.summary(Y, P, 0.55)
    assert set(s) == {"n", "n_pos", "ap", "roc_auc", "sensitivity", "specificity", "threshold", "sens_at_spec99", "f05_threshold", "f05"}
    assert s["n"] == 8 and s["n_pos"] == 4 and isinstance(s["n"], int)
    assert s["ap"] == pytest.approx(M.average_precision(Y, P))
    json.dumps(s, allow_nan=False)

    only_neg = M.summary([0, 0, 0], [0.1, 0.7, 0.2], 0.5)
    assert math.isnan(only_neg["ap"]) and math.isnan(only_neg["roc_auc"]) and math.isnan(only_neg["sensitivity"])
    assert only_neg["specificity"] == pytest.approx(2 / 3)
    json.loads(json.dumps(M.json_safe(only_neg), allow_nan=False))

    only_pos = M.summary([1, 1], [0.9, 0.4], 0.5)
    assert only_pos["sensitivity"] == 0.5 and math.isnan(only_pos["specificity"]) and only_pos["ap"] == 1.0

    empty = M.summary([], [], 0.5)
    assert empty["n"] == 0 and math.isnan(empty["ap"])


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError):
        M.average_precision([1, 0], [0.5])
    with pytest.raises(ValueError):
        M.average_precision([2, 0], [0.5, 0.1])
    with pytest.raises(ValueError):
        M.roc_auc([1, 0], [np.nan, 0.1])
