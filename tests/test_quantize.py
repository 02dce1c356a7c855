"""int8 scoring (minewatch.models.quantize): the shipped default's int8 tile graph keeps validation
AP within 0.005 of fp32, it is only used while it matches the fp32 graphs, and calibration never
sees a validation chip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from minewatch.config import package_data_dir
from minewatch.detect.scorer import Scorer, load_scoring_package
from minewatch.errors import MinewatchError
from minewatch.models.package import FCN_GRAPH, load_package
from minewatch.models.quantize import FCN_INT8, MAX_AP_DROP, PATCH_INT8, int8_graphs, quantize_package, tile_graph_scores
from minewatch.train import metrics
from minewatch.train.scorecard import make_split

DEFAULT = package_data_dir() / "models" / "default"


def test_shipped_default_scores_in_int8_by_its_card() -> None:
    pkg = load_package("default")  # also checks the int8 graphs' checksums
    q = pkg.card.metrics["quantized"]
    assert int8_graphs(pkg.card) == {"patch": PATCH_INT8, "fcn": FCN_INT8}
    assert q["default"] and abs(q["val"]["ap_change"]) <= MAX_AP_DROP and q["calibration"]["split"].startswith("training")
    assert Scorer.load(["default"]).precisions == ["int8"]
    assert Scorer.load(["default"], precision="fp32").precisions == ["fp32"]


def test_int8_tile_graph_ap_within_0005_of_fp32_on_validation_chips(real_chips) -> None:  # noqa: ANN001
    """Re-measured here, on the site-level validation split the members were selected on."""
    card = load_package("default").card
    split = make_split(real_chips, 0.15, 0)
    val = real_chips.subset(split.val)
    p32 = tile_graph_scores(DEFAULT / FCN_GRAPH, val.pixels).mean(axis=1)
    p8 = tile_graph_scores(DEFAULT / FCN_INT8, val.pixels).mean(axis=1)
    ap32, ap8 = metrics.average_precision(val.labels, p32), metrics.average_precision(val.labels, p8)
    assert abs(ap32 - card.metrics["val"]["ap"]) < 1e-6  # the fp32 tile graph is the card's model
    assert abs(ap8 - ap32) <= MAX_AP_DROP
    assert abs(ap8 - card.metrics["quantized"]["val"]["ap_int8"]) < 2e-3  # the card's figure (other CPUs round a little differently)
    assert 0 < np.abs(p8 - p32).mean() < 0.03  # really another graph, and close
    # the scorer's int8 package runs the same int8 graph through the fast path
    tile = np.concatenate([np.concatenate(list(val.pixels[i * 4 : i * 4 + 4]), axis=1) for i in range(4)], axis=0).astype(np.float32)
    grid = load_scoring_package("default", precision="int8").score_tile(tile, fast=True).mean(axis=0)
    np.testing.assert_allclose(grid[::2, ::2].ravel(), p8[:16], atol=1e-5)


def test_int8_dropped_when_fp32_graphs_change(tmp_path: Path) -> None:
    """A retrained or recalibrated package whose int8 graphs were made from other fp32 graphs scores
    in fp32 until quantized again; asking for int8 then is a one-line error."""
    pkg = tmp_path / "pkg"
    shutil.copytree(DEFAULT, pkg)
    card = json.loads((pkg / "card.json").read_text())
    card["metrics"]["quantized"]["made_from"][FCN_GRAPH] = "0" * 64
    (pkg / "card.json").write_text(json.dumps(card))
    assert int8_graphs(load_package(pkg).card) is None
    assert Scorer.load([pkg]).precisions == ["fp32"]
    with pytest.raises(MinewatchError, match="no current int8 graphs"):
        Scorer.load([pkg], precision="int8")


@pytest.mark.slow  # ~25 s: calibration and two graphs over the validation chips; the shipped card is checked above
def test_quantize_package_calibrates_on_training_chips_only(tmp_path: Path, shared_data: Path) -> None:
    pkg = tmp_path / "pkg"
    shutil.copytree(DEFAULT, pkg)
    for f in (PATCH_INT8, FCN_INT8):
        (pkg / f).unlink()
    card = json.loads((pkg / "card.json").read_text())
    del card["metrics"]["quantized"]
    card["checksums"] = {k: v for k, v in card["checksums"].items() if "int8" not in k}
    (pkg / "card.json").write_text(json.dumps(card))
    block = quantize_package(pkg, shared_data / "s2_rgb_chips", n_calibration=64)
    assert block["calibration"]["n"] == 64 and block["val"]["n"] == 1803
    assert (pkg / PATCH_INT8).stat().st_size > 100_000 and (pkg / FCN_INT8).stat().st_size > 100_000
    loaded = load_package(pkg)  # checksums recorded and right
    assert set(loaded.card.checksums) >= {PATCH_INT8, FCN_INT8} and loaded.card.metrics["quantized"]["made_from"]
    assert np.isfinite(block["val"]["ap_int8"]) and block["default"] == (block["val"]["ap_fp32"] - block["val"]["ap_int8"] <= MAX_AP_DROP)
