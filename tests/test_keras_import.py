"""Keras HDF5 → ONNX importer: the published models against their reference vectors, a synthetic
Keras file against a NumPy forward pass, and one-line errors for files that are not usable models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from minewatch.cli.main import cli
from minewatch.errors import MinewatchError
from minewatch.models.keras_import import (
    UNIT_NORM_2021,
    UPSTREAM_L1C_12,
    UPSTREAM_L1C_13,
    convert_keras_h5,
    find_config_log,
    import_keras,
)
from minewatch.models.package import load_package

FILES = {
    "ens2024": "48px_v3.2-3.7ensemble_2024-02-13.h5",
    "cnn100k2026": "48px_v4.21-CNN100ka_2026-05-08ep179.h5",
    "rgb2021": "44px_v2.6_rgb_2021-11-11.h5",
}


@pytest.fixture(scope="module")
def upstream(shared_data: Path) -> Path:
    d = shared_data / "upstream" / "models"
    if not (d / "keras_reference_outputs.npz").exists():
        pytest.skip("upstream models not in shared data")
    return d


@pytest.fixture(scope="module")
def ref(upstream: Path) -> dict[str, np.ndarray]:
    with np.load(upstream / "keras_reference_outputs.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def packages(upstream: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keras_pkgs")
    return {k: import_keras(upstream / f, root / k) for k, f in FILES.items()}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


@pytest.mark.parametrize("key", list(FILES))
def test_bare_graph_matches_keras_reference(upstream: Path, ref: dict[str, np.ndarray], key: str) -> None:
    conv = convert_keras_h5(upstream / FILES[key], input_norm="none")
    sess = ort.InferenceSession(conv.onnx_bytes)
    keras_logits, logits = sess.run(["keras_logits", "logits"], {"x": ref[f"{key}_input"]})
    want = ref[f"{key}_logit"]
    assert keras_logits.shape == want.shape
    np.testing.assert_allclose(keras_logits, want, rtol=1e-3, atol=0)
    # the contract output turns into the published probability of "mine"
    prob = ref[f"{key}_prob"]
    prob_mine = prob[:, 1:] if key == "rgb2021" else prob
    np.testing.assert_allclose(_sigmoid(logits.astype(np.float64)), prob_mine, atol=1e-5)


@pytest.mark.parametrize("key", ["ens2024", "cnn100k2026"])
def test_package_matches_reference_on_reflectance_input(packages: dict[str, Path], ref: dict[str, np.ndarray], key: str) -> None:
    # the reference inputs lie in [0, 1], so the built-in reflectance clip leaves them unchanged
    pkg = load_package(packages[key])
    z = pkg.logits(ref[f"{key}_input"])
    np.testing.assert_allclose(z, ref[f"{key}_logit"], rtol=1e-3, atol=0)


def test_ensemble_keeps_each_member(packages: dict[str, Path], ref: dict[str, np.ndarray]) -> None:
    pkg = load_package(packages["ens2024"])
    assert pkg.card.members == [f"48px_v3.{i}" for i in range(2, 8)]
    probs = pkg.score_patches(ref["ens2024_input"])
    assert probs.shape == (16, 6)
    np.testing.assert_allclose(probs, ref["ens2024_prob"], atol=1e-5)
    # members are genuinely different models, not one column repeated
    assert np.ptp(ref["ens2024_logit"], axis=1).min() > 1.0


def test_cards_record_bands_rendering_threshold(packages: dict[str, Path]) -> None:
    ens, cnn, rgb = (load_package(packages[k]).card for k in ("ens2024", "cnn100k2026", "rgb2021"))
    assert ens.spec.bands == UPSTREAM_L1C_12 and "B10" not in ens.spec.bands
    assert cnn.spec.bands == UPSTREAM_L1C_13
    assert rgb.spec.bands == ["B4", "B3", "B2"]
    for c in (ens, cnn, rgb):
        assert c.spec.level == "L1C"
        assert c.spec.rendering.kind == "linear" and c.spec.rendering.scale == pytest.approx(1e-4)
        assert c.fcn_stride is None
    assert (ens.threshold, cnn.threshold, rgb.threshold) == (0.8, 0.5, 0.8)
    assert (ens.patch_px, ens.step_px, rgb.patch_px, rgb.step_px) == (48, 24, 44, 22)
    assert cnn.metrics["upstream_reported"]["average_precision"]["val"] == pytest.approx(0.9536, abs=1e-4)
    assert ens.training["input_norm"] == "reflectance" and rgb.training["input_norm"] == "unit_norm_2021"
    assert len(ens.training["sha256"]) == 64
    assert not (packages["ens2024"] / "model_fcn.onnx").exists()


def test_rgb_package_is_keras_after_unit_norm(upstream: Path, packages: dict[str, Path], ref: dict[str, np.ndarray]) -> None:
    pkg = load_package(packages["rgb2021"])
    bare = ort.InferenceSession(convert_keras_h5(upstream / FILES["rgb2021"], "none").onnx_bytes)
    x = ref["rgb2021_input"]  # reflectance DN/10000
    mean = np.array([UNIT_NORM_2021[b][0] for b in pkg.card.spec.bands], np.float32)
    std = np.array([UNIT_NORM_2021[b][1] for b in pkg.card.spec.bands], np.float32)
    want = bare.run(["logits"], {"x": ((x * 1e4 - mean) / std).astype(np.float32)})[0]
    np.testing.assert_allclose(pkg.logits(x), want, rtol=1e-4, atol=1e-3)


def test_config_log_discovery(upstream: Path) -> None:
    assert find_config_log(upstream / FILES["ens2024"]).name == "48px_v3.2_2024-01-07_config.txt"
    assert find_config_log(upstream / FILES["cnn100k2026"]).name.startswith("48px_v4.21-CNN100ka_2026-05-08ep179_config")
    assert find_config_log(upstream / FILES["rgb2021"]).name == "44px_v2.6_rgb_2021-11-11_config.txt"


# ----------------------------------------------------------------------------------------------
# a synthetic Keras 2 HDF5 (valid padding, stride 2, two Dense layers) against NumPy


def _write_keras_h5(path: Path, layers: list[dict], weights: dict[str, dict[str, np.ndarray]], input_shape: tuple[int, int, int]) -> None:
    cfg = {
        "class_name": "Sequential",
        "config": {"name": "toy", "layers": [{"class_name": "InputLayer", "config": {"batch_input_shape": [None, *input_shape], "name": "in"}}] + layers},
    }
    with h5py.File(path, "w") as h:
        h.attrs["model_config"] = json.dumps(cfg)
        h.attrs["keras_version"] = "2.15.0"
        mw = h.create_group("model_weights")
        for name, ws in weights.items():
            g = mw.create_group(name)
            g.attrs["weight_names"] = [f"{name}/{k}:0".encode() for k in ws]
            for k, v in ws.items():
                g.create_dataset(f"{name}/{k}:0", data=v)


def _np_conv_valid(x: np.ndarray, k: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    n, h, w, _ = x.shape
    kh, kw, _, co = k.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, oh, ow, co))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[:, i, j, :] = np.tensordot(patch, k, axes=([1, 2, 3], [0, 1, 2]))
    return out + b


def test_synthetic_keras_file_matches_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    k1, b1 = rng.normal(size=(3, 3, 2, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    d1, db1 = rng.normal(size=(2 * 2 * 4, 5)).astype(np.float32), rng.normal(size=5).astype(np.float32)
    d2, db2 = rng.normal(size=(5, 1)).astype(np.float32), rng.normal(size=1).astype(np.float32)
    layers = [
        {"class_name": "Conv2D", "config": {"name": "c1", "filters": 4, "kernel_size": [3, 3], "strides": [2, 2], "padding": "valid", "activation": "relu", "use_bias": True}},
        {"class_name": "MaxPooling2D", "config": {"name": "p1", "pool_size": [2, 2], "strides": [2, 2], "padding": "valid"}},
        {"class_name": "Flatten", "config": {"name": "f"}},
        {"class_name": "Dense", "config": {"name": "d1", "units": 5, "activation": "relu"}},
        {"class_name": "Dropout", "config": {"name": "dr", "rate": 0.5}},
        {"class_name": "Dense", "config": {"name": "d2", "units": 1, "activation": "sigmoid"}},
    ]
    path = tmp_path / "toy_v9.h5"
    _write_keras_h5(path, layers, {"c1": {"kernel": k1, "bias": b1}, "d1": {"kernel": d1, "bias": db1}, "d2": {"kernel": d2, "bias": db2}}, (11, 11, 2))
    x = rng.random((5, 11, 11, 2)).astype(np.float32)
    h = np.maximum(_np_conv_valid(x, k1, b1, 2), 0)  # 5×5×4
    h = h[:, :4, :4, :].reshape(5, 2, 2, 2, 2, 4).max(axis=(2, 4))  # 2×2 max-pool → 2×2×4
    h = np.maximum(h.reshape(5, -1) @ d1 + db1, 0)  # Keras flattens H, W, C
    want = h @ d2 + db2
    sess = ort.InferenceSession(convert_keras_h5(path, "none").onnx_bytes)
    np.testing.assert_allclose(sess.run(["logits"], {"x": x})[0], want, rtol=1e-4, atol=1e-4)

    # an unsupported layer is refused by name, naming the file
    bad = tmp_path / "bn_v9.h5"
    _write_keras_h5(bad, [{"class_name": "BatchNormalization", "config": {"name": "bn"}}], {}, (11, 11, 2))
    with pytest.raises(MinewatchError, match=r"bn_v9\.h5: unsupported Keras layer type 'BatchNormalization'"):
        convert_keras_h5(bad)


def test_bad_files_give_one_line_errors(tmp_path: Path, upstream: Path) -> None:
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(MinewatchError, match=r"notes\.h5: not an HDF5 file"):
        convert_keras_h5(text)

    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as h:
        h.create_dataset("data", data=np.arange(4))
    with pytest.raises(MinewatchError, match=r"plain\.h5: HDF5 file is not a Keras model"):
        convert_keras_h5(plain)

    truncated = tmp_path / "trunc.h5"
    data = (upstream / FILES["cnn100k2026"]).read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(MinewatchError) as e:
        convert_keras_h5(truncated)
    assert "trunc.h5" in str(e.value) and "\n" not in str(e.value)

    with pytest.raises(MinewatchError, match="file not found"):
        convert_keras_h5(tmp_path / "missing.h5")


def test_cli_import_list_show(tmp_path: Path, upstream: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "rgb"
    r = runner.invoke(cli, ["models", "import-keras", str(upstream / FILES["rgb2021"]), "--out", str(out), "--name", "rgb-2021"])
    assert r.exit_code == 0, r.output
    assert load_package(out).card.name == "rgb-2021"
    r = runner.invoke(cli, ["models", "show", str(out), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["spec"]["bands"] == ["B4", "B3", "B2"]
    r = runner.invoke(cli, ["models", "show", str(out)])  # the one-screen summary
    assert r.exit_code == 0 and "bands B4,B3,B2" in r.output and len(r.output.splitlines()) < 25
    r = runner.invoke(cli, ["models", "list"])
    assert r.exit_code == 0

    bad = tmp_path / "x.h5"
    shutil.copy(upstream / "keras_reference_outputs.npz", bad)  # a zip, not HDF5
    r = runner.invoke(cli, ["models", "import-keras", str(bad), "--out", str(tmp_path / "never")])
    assert r.exit_code == 2
    line = r.stderr.strip()
    assert line.startswith(f"minewatch: error: {bad}:") and "\n" not in line
    assert not (tmp_path / "never").exists()

    r = runner.invoke(cli, ["models", "import-keras", str(upstream / FILES["ens2024"]), "--out", str(tmp_path / "e"), "--bands", "B4,B3,B2"])
    assert r.exit_code == 2 and "--bands: 3 bands given" in r.stderr
