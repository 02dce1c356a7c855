"""Training on real chips: it learns, it is deterministic and resumable, bad input fails cleanly."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from minewatch.chips import ChipSet, save_chips  # noqa: E402
from minewatch.cli.main import cli  # noqa: E402
from minewatch.models.package import load_package  # noqa: E402
from minewatch.train.augment import (  # noqa: E402
    REFERENCE_ATMOSPHERE,
    AugmentConfig,
    Atmosphere,
    HAZY_ATMOSPHERE,
    atmospheric_correction,
    augment_batch,
    dihedral,
    simulate_l2a,
)
from minewatch.train.loop import CHECKPOINT, TrainConfig, make_split, train_model, train_package  # noqa: E402


def _subset(chips: ChipSet, n: int, seed: int = 0) -> ChipSet:
    rng = np.random.default_rng(seed)
    return chips.subset(np.sort(rng.choice(len(chips), n, replace=False)))


# ------------------------------------------------------------------ augmentation


def test_dihedral_gives_the_eight_distinct_symmetries() -> None:
    x = torch.arange(2 * 5 * 5, dtype=torch.float32).reshape(1, 2, 5, 5).repeat(8, 1, 1, 1)
    y = dihedral(x, torch.arange(8))
    flat = {tuple(v.flatten().tolist()) for v in y}
    assert len(flat) == 8
    assert torch.equal(y[0], x[0])
    # each is a permutation of the same pixels, channel by channel
    assert all(torch.equal(v[0].flatten().sort().values, x[0, 0].flatten().sort().values) for v in y)


def test_numpy_l2a_simulation_equals_the_training_transform(real_chips: ChipSet) -> None:
    """Evaluation simulates L2A in NumPy (no torch); it must be the training transform to the byte."""
    rgb = real_chips.pixels[::7]
    for atm in (REFERENCE_ATMOSPHERE, HAZY_ATMOSPHERE):
        path, trans = atm.path_and_transmittance(["B4", "B3", "B2"])
        x = torch.from_numpy(rgb.astype(np.float32)).permute(0, 3, 1, 2)
        n = len(x)
        ref = atmospheric_correction(x, torch.tensor(path, dtype=torch.float32).expand(n, -1), torch.tensor(trans, dtype=torch.float32).expand(n, -1))
        ref = ref.permute(0, 2, 3, 1).numpy().astype(np.uint8)
        got = simulate_l2a(rgb, atmosphere=atm)
        assert got.dtype == np.uint8 and np.array_equal(got, ref)
        assert (got != rgb).mean() > 0.5  # and it changes the chips


def test_atmospheric_correction_removes_haze_mostly_in_blue(real_chips: ChipSet) -> None:
    path, trans = REFERENCE_ATMOSPHERE.path_and_transmittance(["B4", "B3", "B2"])
    assert path[2] > path[1] > path[0] > 0  # Rayleigh ∝ λ^-4: blue path reflectance largest
    assert 0 < trans[2] < trans[1] and trans[2] < trans[0] < 1
    hazier = Atmosphere(aot550=0.5)
    assert (hazier.path_and_transmittance(["B2"])[0] > REFERENCE_ATMOSPHERE.path_and_transmittance(["B2"])[0]).all()
    rgb = real_chips.pixels[:500]
    l2a = simulate_l2a(rgb)
    assert l2a.dtype == np.uint8 and l2a.shape == rgb.shape
    drop = rgb.reshape(-1, 3).mean(0) - l2a.reshape(-1, 3).mean(0)
    assert drop[2] > drop[0] > 0  # blue darkens most
    # undoing it in DN space recovers the L1C rendering (below saturation, up to rounding)
    dn_sr = l2a.astype(np.float64) / 255 * 3000 / 1e4
    back = np.round(np.clip((dn_sr * trans + path) * 1e4 / 3000, 0, 1) * 255)
    ok = (l2a > 0) & (l2a < 255)  # not clipped by the rendering
    assert np.abs(back[ok] - rgb[ok]).max() <= 2


def test_augment_is_reproducible_and_bounded() -> None:
    x = torch.rand(16, 3, 48, 48) * 255
    a = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(3))
    b = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(3))
    c = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 255


# ------------------------------------------------------------------ splits


def test_holdout_region_and_source_never_trained_on(real_chips: ChipSet, shared_data: Path) -> None:
    region = shared_data / "upstream" / "boundaries" / "geo_holdout_pará-kayapó.geojson"
    split = make_split(real_chips, 0.15, 0, [region], ["riverbank_negatives_bolivia*"])
    held = np.concatenate(list(split.holdouts.values()))
    assert len(split.holdouts["region:geo_holdout_pará-kayapó"]) == 31
    assert not np.intersect1d(held, split.train).size and not np.intersect1d(held, split.val).size
    assert not np.intersect1d(split.train, split.val).size
    assert (real_chips.meta["source"].iloc[split.train] != "riverbank_negatives_bolivia_v2025-08").all()


# ------------------------------------------------------------------ training


def test_short_training_on_real_chips_learns(real_chips: ChipSet, tmp_path: Path) -> None:
    """~1500 real chips, 3 epochs of a tiny network (< 60 s): validation AP well above the mine rate."""
    sub = _subset(real_chips, 1500)
    cfg = TrainConfig(arch="mwnet-tiny", epochs=3, lr=5e-3, patience=10, seed=0, batch_size=64)
    out = train_package(sub, cfg, tmp_path / "m", progress=False)
    pkg = load_package(out)
    val = pkg.card.metrics["val"]
    rate = val["n_pos"] / val["n"]
    assert val["ap"] > rate + 0.25, (val["ap"], rate)
    card = json.loads((out / "card.json").read_text())
    assert card["spec"]["bands"] == ["B4", "B3", "B2"] and card["fcn_stride"] == 24  # head on the step lattice
    assert card["training"]["chips_sha256"] and card["training"]["n_train"] + card["training"]["n_val"] == 1500
    assert {"L1C", "L2A"} <= set(card["validated_levels"]) and card["validated_levels"]["L2A"]["simulated"]
    assert card["metrics"]["per_source"] and card["metrics"]["onnx_vs_torch_max_abs_diff"] < 1e-5
    # the package's scores are those the card's metrics were computed from
    split = make_split(sub, cfg.val_fraction, cfg.seed)
    p = pkg.score_patches(sub.pixels[split.val])[:, 0]
    assert ((p >= pkg.card.threshold)[sub.labels[split.val] == 1]).mean() == pytest.approx(val["sensitivity"])


def test_split_seed_gives_members_one_validation_set(real_chips: ChipSet, tmp_path: Path) -> None:
    """Ensemble members differ in --seed but must be validated on the same chips (--split-seed)."""
    sub = _subset(real_chips, 400, seed=2)
    cfg = TrainConfig(arch="mwnet-tiny", epochs=1, batch_size=64, seed=3, split_seed=0)
    pkg = load_package(train_package(sub, cfg, tmp_path / "m", progress=False))
    val0, val3 = make_split(sub, 0.15, 0).val, make_split(sub, 0.15, 3).val
    assert not np.array_equal(val0, val3)  # the two seeds would give different validation sets
    assert pkg.card.metrics["val"]["n"] == len(val0) and pkg.card.metrics["split"].endswith("seed=0")
    assert pkg.card.training["seed"] == 3 and pkg.card.training["config"]["split_seed"] == 0
    # runs made before the field existed keep their checkpoint signature
    assert "split_seed" not in TrainConfig(seed=3).to_dict() and TrainConfig(seed=3).split_seed_ == 3


def test_resume_after_interruption_gives_identical_weights(real_chips: ChipSet, tmp_path: Path) -> None:
    sub = _subset(real_chips, 400, seed=1)
    split = make_split(sub, 0.2, 0)
    train, val = sub.subset(split.train), sub.subset(split.val)
    cfg = TrainConfig(arch="mwnet-tiny", epochs=3, batch_size=64, patience=10, ema_decay=0.9)
    full = train_model(train, val, cfg, tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_model(train, val, cfg, tmp_path / "cut", progress=False, stop_after_epoch=1)
    assert torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=False)["state"]["epoch"] == 1
    resumed = train_model(train, val, cfg, tmp_path / "cut", progress=False)
    assert resumed.epochs_run == 3 and [h["epoch"] for h in resumed.history] == [1, 2, 3]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["val_ap"] for h in full.history] == [h["val_ap"] for h in resumed.history]
    # where and how fast it runs is not a setting: another thread count picks the run up
    again = train_model(train, val, replace(cfg, threads=2), tmp_path / "full", progress=False)
    assert again.epochs_run == 3 and all(torch.equal(a[k], again.model.state_dict()[k]) for k in a)
    # a changed setting does not silently continue someone else's run
    from minewatch.errors import MinewatchError

    with pytest.raises(MinewatchError, match="different settings"):
        train_model(train, val, TrainConfig(arch="mwnet-tiny", epochs=4, batch_size=64), tmp_path / "cut", progress=False)


# ------------------------------------------------------------------ CLI errors


def _write_chips(folder: Path, pixels: np.ndarray, labels: np.ndarray | None) -> Path:
    folder.mkdir(parents=True)
    arrays = {"pixels": pixels} if labels is None else {"pixels": pixels, "label": labels}
    np.savez(folder / "chips.npz", **arrays)
    return folder


def test_cli_wrong_band_count_is_one_line_error(real_chips: ChipSet, tmp_path: Path) -> None:
    sub = _subset(real_chips, 40)
    d = tmp_path / "rgb"
    save_chips(sub, d)
    r = CliRunner().invoke(cli, ["train", "--chips", str(d), "--bands", "B4,B3,B2,B8", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("minewatch: error:") and "bands" in lines[0]
    assert not (tmp_path / "o").exists()


def test_cli_missing_label_is_one_line_error(tmp_path: Path) -> None:
    d = _write_chips(tmp_path / "nolabel", np.zeros((4, 48, 48, 3), np.uint8), None)
    r = CliRunner().invoke(cli, ["train", "--chips", str(d), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and "label" in r.output and "chips.npz" in r.output


def test_cli_unknown_arch(tmp_path: Path) -> None:
    d = _write_chips(tmp_path / "c", np.zeros((4, 48, 48, 3), np.uint8), np.array([0, 1, 0, 1], np.uint8))
    r = CliRunner().invoke(cli, ["train", "--chips", str(d), "--arch", "resnet9000", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--arch" in r.output and r.output.strip().count("\n") == 0
