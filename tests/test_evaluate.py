"""``evaluate_package`` / ``minewatch evaluate``: hand-computed numbers on a tiny known set, a real
subset with an imported model (and the shipped default when present), and one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from shapely.geometry import box

from minewatch.bands import DEFAULT_RGB_SPEC
from minewatch.chips import ChipSet, geographic_mask, load_chips, save_chips
from minewatch.cli.main import cli
from minewatch.config import package_data_dir
from minewatch.errors import MinewatchError
from minewatch.models.onnx_build import GraphBuilder, float_input
from minewatch.models.package import ModelCard, load_package, save_package
from minewatch.train import metrics as M
from minewatch.train.evaluate import evaluate_package, public, write_pr_curve

# ----------------------------------------------------------------------------------------------
# a tiny known set: chip i is constant v_i; member a's logit = mean(x) - 100, member b's = mean(x) - 101

V = np.array([110, 108, 106, 104, 102, 100, 98, 96])
Y = np.array([1, 0, 1, 1, 0, 0, 1, 0])


def _mean_model(folder: Path, threshold: float) -> Path:
    g = GraphBuilder("mean")
    m = g.op("ReduceMean", ["x"], prefix="mean", axes=[1, 2, 3], keepdims=0)
    m = g.op("Reshape", [m, g.const("shape", [-1, 1], np.int64)], prefix="col")
    a = g.op("Sub", [m, g.const("c100", 100.0)], prefix="a")
    b = g.op("Sub", [m, g.const("c101", 101.0)], prefix="b")
    g.op("Concat", [a, b], output="logits", axis=1)
    model = g.finish([float_input("x", ["N", 4, 4, 3])], [float_input("logits", ["N", 2])])
    card = ModelCard(name="mean", spec=DEFAULT_RGB_SPEC, members=["a", "b"], patch_px=4, step_px=2, threshold=threshold)
    return save_package(folder, card, model.SerializeToString())


def _tiny_chips(folder: Path) -> Path:
    pixels = np.broadcast_to(V[:, None, None, None], (8, 4, 4, 3)).astype(np.uint8).copy()
    meta = pd.DataFrame(
        {
            "chip": range(8),
            "source": ["A"] * 4 + ["B"] * 4,
            "label": Y,
            "cell": range(8),
            "lon": [-70.0, -70.1, -70.2, -70.3, -60.0, -60.1, np.nan, -60.3],
            "lat": [-5.0] * 4 + [-10.0] * 4,
        }
    )
    return save_chips(ChipSet(pixels, Y.astype(np.uint8), meta, DEFAULT_RGB_SPEC), folder)


def test_tiny_known_set_by_hand(tmp_path: Path) -> None:
    pkg = load_package(_mean_model(tmp_path / "m", threshold=0.9))
    chips = load_chips(_tiny_chips(tmp_path / "c"))
    region = box(-71, -6, -69, -4)  # holds chips 0–3
    r = evaluate_package(pkg, chips, {"west": region})
    ov = r["overall"]
    assert (ov["n"], ov["n_pos"]) == (8, 4)
    # scores fall with v, so the ranking is + - + + - - + -
    assert ov["ap"] == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 7) / 4)
    assert ov["roc_auc"] == pytest.approx(11 / 16)
    # ensemble mean at v=104 is (σ(4)+σ(3))/2 ≈ 0.967 ≥ 0.9 > (σ(2)+σ(1))/2 ≈ 0.806 at v=102
    assert (ov["sensitivity"], ov["specificity"]) == pytest.approx((3 / 4, 3 / 4))
    assert ov["sens_at_spec99"] == pytest.approx(1 / 4)
    assert ov["f05"] == pytest.approx(0.75)
    assert ov["f05_threshold"] == pytest.approx((1 / (1 + math.exp(-4)) + 1 / (1 + math.exp(-3))) / 2, rel=1e-5)
    # each member alone: member b is a at a shifted threshold; both keep the ranking
    assert set(r["members"]) == {"a", "b"}
    assert r["members"]["a"]["ap"] == pytest.approx(ov["ap"])
    assert r["members"]["b"]["sensitivity"] == pytest.approx(3 / 4)  # σ(104-101)=0.953 ≥ 0.9
    assert r["members"]["a"]["specificity"] == pytest.approx(3 / 4)
    # per source, by hand
    src = {row["source"]: row for row in r["by_source"]}
    assert src["A"]["ap"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert src["B"]["ap"] == pytest.approx(1 / 3)
    assert (src["A"]["n"], src["A"]["n_pos"], src["B"]["n_pos"]) == (4, 3, 1)
    assert src["A"]["sensitivity"] == 1.0 and src["A"]["specificity"] == 0.0
    assert src["B"]["sensitivity"] == 0.0 and src["B"]["specificity"] == 1.0
    # hold-out: 3 mines inside, all found
    h = r["holdouts"]["west"]
    assert (h["n"], h["n_pos"], h["detected"], h["sensitivity"]) == (4, 3, 3, 1.0)
    assert h["sensitivity_ci95"][0] == pytest.approx(M.wilson_interval(3, 3)[0])
    assert h["n_with_location"] == 7
    # threshold override
    r2 = evaluate_package(pkg, chips, threshold=0.5)
    assert r2["overall"]["sensitivity"] == pytest.approx(3 / 4) and r2["overall"]["specificity"] == pytest.approx(2 / 4)
    json.dumps(public(r), allow_nan=False)


def test_cli_json_and_table_on_tiny_set(tmp_path: Path) -> None:
    model, chips = _mean_model(tmp_path / "m", 0.9), _tiny_chips(tmp_path / "c")
    region = tmp_path / "west.geojson"
    region.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": box(-71, -6, -69, -4).__geo_interface__}]}))
    runner = CliRunner()
    r = runner.invoke(cli, ["evaluate", "--model", str(model), "--chips", str(chips), "--json", "--plots", str(tmp_path / "plots"), "--holdout-region", str(region)])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)  # exactly one JSON object on stdout
    assert d["overall"]["roc_auc"] == pytest.approx(11 / 16)
    assert d["holdouts"]["west"]["sensitivity"] == 1.0
    png = Path(d["plots"][0])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = runner.invoke(cli, ["evaluate", "--model", str(model), "--chips", str(chips), "--threshold", "0.5"])
    assert r.exit_code == 0 and "average precision" in r.stdout and "0.500" in r.stdout


# ----------------------------------------------------------------------------------------------
# real chips


@pytest.fixture(scope="module")
def real_subset(real_chips: ChipSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,200 real chips (stratified, fixed seed) from the shared data, as a chip folder."""
    rng = np.random.default_rng(7)
    pos, neg = np.flatnonzero(real_chips.labels == 1), np.flatnonzero(real_chips.labels == 0)
    idx = np.sort(np.r_[rng.choice(pos, 400, replace=False), rng.choice(neg, 800, replace=False)])
    return save_chips(real_chips.subset(idx), tmp_path_factory.mktemp("real") / "subset")


@pytest.fixture(scope="module")
def rgb2021(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from minewatch.models.keras_import import import_keras

    h5 = shared_data / "upstream" / "models" / "44px_v2.6_rgb_2021-11-11.h5"
    if not h5.exists():
        pytest.skip("upstream RGB model not in shared data")
    return import_keras(h5, tmp_path_factory.mktemp("pkg") / "rgb2021")


def test_real_subset_with_imported_rgb_model(real_subset: Path, rgb2021: Path, shared_data: Path) -> None:
    pkg, chips = load_package(rgb2021), load_chips(real_subset)
    holdout = shared_data / "upstream" / "boundaries" / "geo_holdout_napo-caquetá.geojson"
    from minewatch.train.evaluate import load_holdout

    name, geom = load_holdout(holdout)
    r = evaluate_package(pkg, chips, {name: geom}, rerender=True)
    assert r["input"]["crop_offset_px"] == 2 and r["input"]["rerendered"]
    # independent scoring: crop, re-render through DN, score
    x = pkg.card.spec.rendering.apply(chips.spec.rendering.invert(chips.pixels[:, 2:46, 2:46, :]))
    p = pkg.score_patches(x)[:, 0]
    assert r["overall"]["ap"] == pytest.approx(M.average_precision(chips.labels, p))
    assert r["overall"]["ap"] > 0.5  # well above the 1/3 positive rate: the import is not noise
    assert sum(row["n"] for row in r["by_source"]) == len(chips)
    h = r["holdouts"][name]
    assert h["n"] == int(geographic_mask(chips.meta, geom).sum())
    d = json.loads(json.dumps(public(r), allow_nan=False))
    assert all(row["ap"] is None for row in d["by_source"] if row["n_pos"] in (0, row["n"]))
    out = write_pr_curve(r, real_subset.parent / "pr.png")
    assert out.stat().st_size > 5000


@pytest.mark.skipif(not (package_data_dir() / "models" / "default" / "card.json").exists(), reason="default model not shipped yet")
def test_default_model_on_real_subset(real_subset: Path) -> None:
    r = CliRunner().invoke(cli, ["evaluate", "--model", "default", "--chips", str(real_subset), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["overall"]["n"] == 1200 and d["overall"]["ap"] > 0.5


# ----------------------------------------------------------------------------------------------
# bad inputs: one line, names the file, exit 2


def _err(r) -> str:  # type: ignore[no-untyped-def]
    assert r.exit_code == 2, (r.exit_code, r.output)
    line = r.stderr.strip()
    assert line.startswith("minewatch: error: ") and "\n" not in line, line
    return line


def test_bad_inputs(tmp_path: Path, real_subset: Path, rgb2021: Path, shared_data: Path) -> None:
    from minewatch.models.keras_import import import_keras

    runner = CliRunner()
    ens = import_keras(shared_data / "upstream" / "models" / "48px_v3.2-3.7ensemble_2024-02-13.h5", tmp_path / "ens")
    # 12-band model on RGB chips
    line = _err(runner.invoke(cli, ["evaluate", "--model", str(ens), "--chips", str(real_subset), "--rerender"]))
    assert f"{real_subset}: band mismatch" in line and "12 bands" in line
    # reflectance model on uint8 chips without --rerender
    line = _err(runner.invoke(cli, ["evaluate", "--model", str(rgb2021), "--chips", str(real_subset)]))
    assert "rendering mismatch" in line and "--rerender" in line
    # missing label
    bad = tmp_path / "nolabel"
    bad.mkdir()
    np.savez(bad / "chips.npz", rgb=np.zeros((2, 48, 48, 3), np.uint8))
    line = _err(runner.invoke(cli, ["evaluate", "--model", str(rgb2021), "--chips", str(bad)]))
    assert f"{bad / 'chips.npz'}: no 'label' array" in line
    # truncated model graph
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "card.json").write_text((rgb2021 / "card.json").read_text())
    data = (rgb2021 / "model.onnx").read_bytes()
    (broken / "model.onnx").write_bytes(data[: len(data) // 2])
    line = _err(runner.invoke(cli, ["evaluate", "--model", str(broken), "--chips", str(real_subset), "--rerender"]))
    assert str(broken / "model.onnx") in line
    # unreadable card
    (broken / "card.json").write_text("{not json")
    line = _err(runner.invoke(cli, ["evaluate", "--model", str(broken), "--chips", str(real_subset)]))
    assert "card.json" in line
    # a Keras .h5 given as --model, and a .h5 that is not a Keras model given to the importer
    h5 = shared_data / "upstream" / "models" / "44px_v2.6_rgb_2021-11-11.h5"
    assert "import-keras" in _err(runner.invoke(cli, ["evaluate", "--model", str(h5), "--chips", str(real_subset)]))
    import h5py

    not_keras = tmp_path / "data.h5"
    with h5py.File(not_keras, "w") as f:
        f["x"] = np.arange(3)
    line = _err(runner.invoke(cli, ["models", "import-keras", str(not_keras), "--out", str(tmp_path / "o")]))
    assert f"{not_keras}: HDF5 file is not a Keras model" in line
    # missing chips folder / hold-out file
    assert "not found" in _err(runner.invoke(cli, ["evaluate", "--model", str(rgb2021), "--chips", str(tmp_path / "nope")]))
    line = _err(runner.invoke(cli, ["evaluate", "--model", str(rgb2021), "--chips", str(real_subset), "--holdout-region", str(tmp_path / "r.geojson")]))
    assert "r.geojson: hold-out region file not found" in line
    # chips smaller than the model's patch
    small = save_chips(ChipSet(np.zeros((2, 40, 40, 3), np.uint8), np.array([0, 1], np.uint8), pd.DataFrame({"chip": [0, 1]}), DEFAULT_RGB_SPEC), tmp_path / "small")
    with pytest.raises(MinewatchError, match="40×40 px but model"):
        evaluate_package(load_package(rgb2021), load_chips(small), rerender=True)
