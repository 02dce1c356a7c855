"""ONNX export: ONNX Runtime equals PyTorch, and the fully-convolutional graph equals per-patch scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from minewatch.bands import BandSpec  # noqa: E402
from minewatch.models import arch  # noqa: E402
from minewatch.models.package import ModelCard, load_package, save_package  # noqa: E402
from minewatch.train.export import MAX_ABS_DIFF, export_package_graphs, mosaic, ort_run, torch_patch_logits  # noqa: E402


def _random_model(name: str, in_bands: int = 3, seed: int = 0) -> torch.nn.Module:
    """A network with random (He) weights *and* random BatchNorm statistics, its last layer scaled
    down if needed so logits on structured images stay within ±4, the range of a trained,
    label-smoothed model: float32 rounding (≈1e-6 of the largest logit, in PyTorch and in ONNX
    Runtime alike) then stays well below the 1e-5 bound, as it does for real models."""
    torch.manual_seed(seed)
    m = arch.build(name, in_bands)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    m.eval()
    x = torch.from_numpy(structured(64, 48, 48, in_bands, seed + 100)).permute(0, 3, 1, 2)
    with torch.no_grad():
        z = m(x).flatten()
        last = [mod for mod in m.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))][-1]
        k = min(1.0, 4.0 / float(z.abs().max()))
        last.weight.mul_(k)
        last.bias.mul_(k)
    return m


def structured(n: int, h: int, w: int, c: int, seed: int) -> np.ndarray:
    """Rendered-value images with per-image colour, gradients, texture and noise (i.i.d. noise alone
    gives every image the same features, hence near-identical logits)."""
    rng = np.random.default_rng(seed)
    yy, xx = (np.mgrid[0:h, 0:w] / 48.0)[:, None, :, :, None]
    base = rng.uniform(20, 200, (n, 1, 1, c))
    gy, gx = rng.uniform(-60, 60, (2, n, 1, 1, c))
    f, ph = rng.uniform(0.5, 4, (n, 1, 1, 1)), rng.uniform(0, 6.3, (n, 1, 1, 1))
    img = base + gy * yy + gx * xx + 40 * np.sin(f * 6.28 * xx + ph) * np.cos(f * 3 * yy) + rng.normal(0, 8, (n, h, w, c))
    return np.clip(img, 0, 255).astype(np.float32)


@pytest.mark.parametrize(("name", "in_bands"), [(a, 3) for a in arch.ARCHS] + [("cnn100k", 4), ("mwnet-s2d", 4)])
def test_onnx_equals_torch(name: str, in_bands: int) -> None:
    m = _random_model(name, in_bands)
    x = structured(32, 48, 48, in_bands, 1)
    patch, fcn, diff = export_package_graphs(m, in_bands, x)
    z = ort_run(patch, x)
    assert z.shape == (32, 1)
    ref = torch_patch_logits(m, x)
    assert ref.std() > 0.2  # a spread of logits: the comparison means something
    assert np.abs(z - ref).max() < MAX_ABS_DIFF
    assert diff < MAX_ABS_DIFF
    assert (fcn is None) == (arch.fcn_of(m) is None)
    # dynamic batch
    assert ort_run(patch, x[:3]).shape == (3, 1)


@pytest.mark.parametrize(
    ("name", "tta", "out_stride"),
    [("mwnet-s", False, None), ("mwnet-s", True, None), ("mwnet-s2d", False, 24), ("mwnet-s2d", True, 24), ("mwnet-tiny", False, 8)],
)
def test_fcn_graph_equals_per_patch(tmp_path: Path, name: str, tta: bool, out_stride: int | None) -> None:
    m = _random_model(name, 3, seed=2)
    x = structured(8, 48, 48, 3, 3)
    patch, fcn, _ = export_package_graphs(m, 3, x, tta=tta, fcn_out_stride=out_stride)
    assert fcn is not None
    s = out_stride or arch.fcn_of(m).fcn_stride
    card = ModelCard(name="t", spec=BandSpec(), fcn_stride=s)
    pkg = load_package(save_package(tmp_path / "pkg", card, patch, fcn))
    # ragged raster: not a whole number of steps, not square
    raster = mosaic(structured(20, 48, 48, 3, 4), 4, 5, (13, 41))[0, : 48 + 24 * 5 + 11, : 48 + 24 * 3 + 5]
    fast = pkg.score_tile(raster, fast=True)
    slow = pkg.score_tile(raster, fast=False)
    assert fast.shape == slow.shape == (1, 6, 4)
    assert slow.std() > 0.02  # scores vary over the raster
    assert np.abs(fast - slow).max() < 1e-4
    # dynamic H/W: the FCN logits on every lattice cell equal the patch graph's
    h, w = 48 + 2 * s + 3, 48 + 3 * s + 1
    z = ort_run(fcn, raster[None, :h, :w])[0, 0]
    cells = [(i, j) for i in range(0, h - 47, s) for j in range(0, w - 47, s)]
    patches = np.stack([raster[i : i + 48, j : j + 48] for i, j in cells])
    zp = ort_run(patch, patches)[:, 0]
    assert z.shape == (3, 4)
    assert np.abs(zp - np.array([z[i // s, j // s] for i, j in cells])).max() < 1e-4


def test_shipped_default_fcn_equals_per_patch_on_real_chips(real_chips) -> None:
    pkg = load_package("default")
    card = pkg.card
    assert card.spec.bands == ["B4", "B3", "B2"] and card.spec.level == "L1C"
    assert {"L1C", "L2A"} <= set(card.validated_levels)
    assert card.validated_levels["L2A"]["simulated"] is True
    assert pkg.has_fast_path and card.step_px % card.fcn_stride == 0
    assert not pkg.warn_if_level_unvalidated("L2A")
    # mosaic 4×5 real chips (mines and not-mines) into a 192×240 raster
    rng = np.random.default_rng(0)
    pos, neg = np.flatnonzero(real_chips.labels == 1), np.flatnonzero(real_chips.labels == 0)
    idx = np.concatenate([rng.choice(pos, 10, replace=False), rng.choice(neg, 10, replace=False)])
    rng.shuffle(idx)
    chips = real_chips.pixels[idx].astype(np.float32)
    raster = chips.reshape(4, 5, 48, 48, 3).transpose(0, 2, 1, 3, 4).reshape(192, 240, 3)
    fast = pkg.score_tile(raster, fast=True)
    slow = pkg.score_tile(raster, fast=False)
    assert fast.shape == slow.shape == (len(card.members), 7, 9)
    assert np.abs(fast - slow).max() < 1e-4
    # the lattice cells sitting exactly on a chip score that chip
    direct = pkg.score_patches(chips)[:, 0].reshape(4, 5)
    assert np.abs(fast[0, ::2, ::2] - direct).max() < 1e-4
    # and the model separates these real mines from not-mines
    lab = real_chips.labels[idx]
    assert direct.ravel()[lab == 1].mean() > direct.ravel()[lab == 0].mean() + 0.3


def test_package_stores_shared_weights_once_and_copies_cleanly(tmp_path: Path) -> None:
    from minewatch.train.loop import copy_package, write_package

    m = _random_model("mwnet-s2d", 3, seed=5)
    x = structured(8, 48, 48, 3, 6)
    patch, fcn, _ = export_package_graphs(m, 3, x, fcn_out_stride=24)
    card = ModelCard(name="t", spec=BandSpec(), fcn_stride=24)
    out = write_package(tmp_path / "a", card, patch, fcn)
    files = {p.name: p.stat().st_size for p in out.iterdir()}
    (wname,) = [n for n in files if n.startswith("weights-")]
    assert files["model.onnx"] < 50_000 and files["model_fcn.onnx"] < 50_000
    assert files[wname] < 1.05 * arch.n_params(m) * 4  # each weight stored once
    pkg = load_package(out)
    assert np.abs(pkg.logits(x) - ort_run(patch, x)).max() == 0
    raster = mosaic(structured(6, 48, 48, 3, 7))[0]
    assert np.abs(pkg.score_tile(raster, fast=True) - pkg.score_tile(raster, fast=False)).max() < 1e-4
    # re-writing with other weights replaces the weights file; a copy carries it along
    m2 = _random_model("mwnet-s2d", 3, seed=9)
    patch2, fcn2, _ = export_package_graphs(m2, 3, x, fcn_out_stride=24)
    write_package(out, card, patch2, fcn2)
    assert len(list(out.glob("weights-*.bin"))) == 1 and not (out / wname).exists()
    dest = copy_package(out, tmp_path / "b")
    assert np.abs(load_package(dest).logits(x) - ort_run(patch2, x)).max() == 0
