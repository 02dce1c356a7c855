"""Ensembles merged at the ONNX level: the merged graphs equal their members, calibration is the
hand-computed F0.5 threshold of the mean score, incompatible members are one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from minewatch.bands import BandSpec  # noqa: E402
from minewatch.chips import ChipSet  # noqa: E402
from minewatch.cli.main import cli  # noqa: E402
from minewatch.errors import MinewatchError  # noqa: E402
from minewatch.models.ensemble import build_ensemble, write_ensemble  # noqa: E402
from minewatch.models.package import ModelCard, load_package  # noqa: E402
from minewatch.models.store import write_package  # noqa: E402
from minewatch.train import metrics  # noqa: E402
from minewatch.train.export import export_package_graphs, mosaic  # noqa: E402
from minewatch.train.loop import TrainConfig  # noqa: E402
from minewatch.train.scorecard import calibrate_ensemble, make_split  # noqa: E402
from test_export import _random_model, structured  # noqa: E402  (tests/ is on sys.path under pytest)


def _package(tmp: Path, name: str, arch: str, seed: int, in_bands: int = 3, threshold: float = 0.5, split_seed: int = 0) -> Path:
    m = _random_model(arch, in_bands, seed=seed)
    x = structured(8, 48, 48, in_bands, seed + 50)
    stride = 24 if arch != "cnn100k" else None
    patch, fcn, _ = export_package_graphs(m, in_bands, x, fcn_out_stride=stride)
    bands = ["B4", "B3", "B2"] if in_bands == 3 else ["B4", "B3", "B2", "B8"]
    cfg = TrainConfig(arch=arch, seed=seed + 7, split_seed=split_seed).to_dict()
    card = ModelCard(name=name, spec=BandSpec(bands=bands), architecture=arch, threshold=threshold, fcn_stride=stride, training={"config": cfg})
    return write_package(tmp / name, card, patch, fcn)


def test_merged_graphs_equal_the_members(tmp_path: Path) -> None:
    a = load_package(_package(tmp_path, "a", "mwnet-s2d", 1, threshold=0.4))
    b = load_package(_package(tmp_path, "b", "mwnet-tiny", 2, threshold=0.8))
    ens = load_package(write_ensemble([a, b], tmp_path / "ab"))
    assert ens.card.members == ["a", "b"] and ens.card.threshold == pytest.approx(0.6)
    assert ens.has_fast_path and ens.card.fcn_stride == 24
    x = structured(24, 48, 48, 3, 9)
    z = ens.logits(x)
    assert z.shape == (24, 2)
    assert np.abs(z - np.concatenate([a.logits(x), b.logits(x)], axis=1)).max() < 1e-6
    # the merged fully-convolutional graph scores a tile exactly like its members and like per-patch cutting
    raster = mosaic(structured(6, 48, 48, 3, 10), 3, 4)[0]
    fast = ens.score_tile(raster, fast=True)
    assert fast.shape[0] == 2 and fast.shape[1] > 2 and fast.shape[2] > 2
    assert np.abs(fast - ens.score_tile(raster, fast=False)).max() < 1e-4
    assert np.abs(fast[0] - a.score_tile(raster)[0]).max() < 1e-6 and np.abs(fast[1] - b.score_tile(raster)[0]).max() < 1e-6
    # an ensemble of ensembles flattens its members, names stay unique
    abb = load_package(write_ensemble([ens, b], tmp_path / "abb"))
    assert abb.card.members == ["ab.a", "ab.b", "b"]
    assert np.abs(abb.logits(x) - np.concatenate([z, b.logits(x)], axis=1)).max() < 1e-6


def test_member_without_fast_path_gives_patch_only_ensemble(tmp_path: Path) -> None:
    a = load_package(_package(tmp_path, "a", "mwnet-tiny", 1))
    c = load_package(_package(tmp_path, "c", "cnn100k", 3))
    ens = load_package(write_ensemble([a, c], tmp_path / "ac"))
    assert not ens.has_fast_path and ens.card.fcn_stride is None
    x = structured(5, 48, 48, 3, 4)
    assert np.abs(ens.logits(x) - np.concatenate([a.logits(x), c.logits(x)], axis=1)).max() < 1e-6
    raster = mosaic(structured(6, 48, 48, 3, 5))[0]
    assert ens.score_tile(raster).shape[0] == 2


def test_incompatible_members_are_one_line_errors(tmp_path: Path) -> None:
    a = load_package(_package(tmp_path, "a", "mwnet-tiny", 1))
    four = load_package(_package(tmp_path, "four", "mwnet-tiny", 2, in_bands=4))
    with pytest.raises(MinewatchError, match="bands differ") as e:
        build_ensemble([a, four], "x")
    assert str(four.path) in str(e.value)
    with pytest.raises(MinewatchError, match="at least two"):
        build_ensemble([a], "x")
    with pytest.raises(MinewatchError, match="unique names"):
        build_ensemble([a, a], "x", members=["s", "s"])
    assert build_ensemble([a, a], "x", members=["s2d", "fcn"])[0].members == ["s2d", "fcn"]
    r = CliRunner().invoke(cli, ["models", "ensemble", str(a.path), str(four.path), "--out", str(tmp_path / "bad")])
    assert r.exit_code == 2 and "bands differ" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "bad" / "card.json").exists()


def _subset(chips: ChipSet, n: int, seed: int = 0) -> ChipSet:
    idx = np.sort(np.random.default_rng(seed).choice(len(chips), n, replace=False))
    return chips.subset(idx)


def test_calibration_on_real_chips_matches_hand_computation(real_chips: ChipSet, tmp_path: Path) -> None:
    sub = _subset(real_chips, 600, seed=3)
    chips_dir = tmp_path / "chips"
    from minewatch.chips import save_chips

    save_chips(sub, chips_dir)
    a, b = _package(tmp_path, "a", "mwnet-tiny", 1), _package(tmp_path, "b", "mwnet-tiny", 2)
    r = CliRunner().invoke(cli, ["models", "ensemble", str(a), str(b), "--out", str(tmp_path / "ab"), "--chips", str(chips_dir)])
    assert r.exit_code == 0, r.output
    ens = load_package(tmp_path / "ab")
    split = make_split(sub, 0.15, 0)
    y = sub.labels[split.val]
    p = ens.score_patches(sub.pixels[split.val]).mean(axis=1)
    t, _ = metrics.fbeta_optimal_threshold(y, p, 0.5)
    assert ens.card.threshold == pytest.approx(t)
    val = ens.card.metrics["val"]
    assert val["n"] == len(y) and val["ap"] == pytest.approx(metrics.average_precision(y, p))
    assert set(ens.card.metrics["val_members"]) == {"a", "b"}
    assert ens.card.validated_levels["L2A"]["simulated"] and "val AP" in r.output
    # members validated on another split would leak their training chips into this validation set
    c = _package(tmp_path, "c", "mwnet-tiny", 4, split_seed=5)
    write_ensemble([load_package(a), load_package(c)], tmp_path / "ac")
    with pytest.raises(MinewatchError, match="another split"):
        calibrate_ensemble(tmp_path / "ac", sub, 0.15, 0)
    r = CliRunner().invoke(cli, ["models", "ensemble", str(a), str(c), "--out", str(tmp_path / "ac2"), "--chips", str(chips_dir)])
    assert r.exit_code == 2 and "another split" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "ac2").exists() and not list(tmp_path.glob(".ac2.*"))  # nothing half-written
