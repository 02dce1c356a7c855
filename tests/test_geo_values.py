"""Issue 12 §4: imagery and chips whose values are not on the scale the models read are refused,
and a GeoTIFF without a nodata value does not count its zero fill as imagery.

Real pixels: real labelled chips (../shared/data/s2_rgb_chips) turned back into DN
(rgb / 255 × 3000) and written as a GeoTIFF in UTM zone 21 S, the way a user's export looks.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import Affine

from minewatch.cli.main import cli

P = 48


def _mosaic(chips, n: int, seed: int = 0) -> np.ndarray:
    idx = np.random.default_rng(seed).choice(len(chips), n * n, replace=False)
    rgb = chips.pixels[idx].reshape(n, n, P, P, 3).transpose(0, 2, 1, 3, 4).reshape(n * P, n * P, 3)
    return np.clip(np.round(rgb.astype(np.float64) / 255.0 * 3000.0), 1, None)


def _write(path: Path, arr: np.ndarray, dtype: str, nodata) -> Path:
    h, w, _ = arr.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype=dtype, crs="EPSG:32721",
                       transform=Affine(10, 0, 600_000, 0, -10, 9_450_000), nodata=nodata) as dst:
        dst.write(np.moveaxis(arr.astype(dtype), -1, 0))
        dst.descriptions = ("B4", "B3", "B2")
        dst.update_tags(PROCESSING_LEVEL="L1C")
    return path


def _detect(imagery: str, out: str, *extra: str):
    return CliRunner().invoke(cli, ["detect", "--imagery", imagery, "--out", out, "--period", "2024", "--tile-px", "480",
                                    "--scheduler", "synchronous", "--quiet", *extra])


@pytest.fixture(scope="module")
def dn(real_chips) -> np.ndarray:
    return _mosaic(real_chips, 8)


@pytest.mark.parametrize(("name", "scale", "dtype", "expected"), [
    ("reflectance float32.tif", 1e-4, "float32", "reflectance"),
    ("reflectance float64.tif", 1e-4, "float64", "reflectance"),
    ("rendered rgb 8bit.tif", 255 / 3000, "uint8", "8-bit"),
])
def test_imagery_on_another_scale_is_refused(dn, tmp_path, monkeypatch, name, scale, dtype, expected):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / name, np.clip(dn * scale, 0, 255 if dtype == "uint8" else None), dtype, None)
    r = _detect(name, "det out")
    assert r.exit_code == 2, r.output
    line = [x for x in r.output.splitlines() if "error" in x][0]
    assert name in line and expected in line
    assert not Path("det out").exists()


def test_float_dn_imagery_is_accepted(dn, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "dn float.tif", dn, "float32", None)
    r = _detect("dn float.tif", "det out")
    assert r.exit_code == 0, r.output


def test_zero_fill_without_nodata_is_not_imagery(dn, tmp_path, monkeypatch):
    """The same real pixels inside a zero frame, once with nodata 0 declared and once with none:
    the same patches are scored (before: the frame's zeros were scored as dark ground)."""
    monkeypatch.chdir(tmp_path)
    framed = np.zeros((dn.shape[0] + 240, dn.shape[1] + 240, 3))
    framed[120:-120, 120:-120] = dn
    _write(tmp_path / "with nodata.tif", framed, "uint16", 0)
    _write(tmp_path / "no nodata.tif", framed, "uint16", None)
    a = _detect("with nodata.tif", "a out", "--min-score", "0")
    b = _detect("no nodata.tif", "b out", "--min-score", "0")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    sa = json.loads(Path("a out/summary.json").read_text())["totals"]
    sb = json.loads(Path("b out/summary.json").read_text())["totals"]
    assert sa["scored"] > 0 and sb["scored"] == sa["scored"] and sb["skipped_nodata"] == sa["skipped_nodata"]


def test_evaluate_refuses_chips_on_a_zero_to_one_scale(real_chips, tmp_path, monkeypatch):
    from minewatch.chips.dataset import save_chips

    idx = np.random.default_rng(0).choice(len(real_chips), 300, replace=False)
    sub = real_chips.subset(idx)
    scaled = replace(sub, pixels=(sub.pixels.astype(np.float32) / 255.0))
    save_chips(scaled, tmp_path / "chips 0-1")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["evaluate", "--model", "default", "--chips", "chips 0-1"])
    assert r.exit_code == 2, r.output
    assert "chips 0-1" in r.output and "0 to 1" in r.output
    save_chips(sub, tmp_path / "chips ok")
    r = CliRunner().invoke(cli, ["evaluate", "--model", "default", "--chips", "chips ok"])
    assert r.exit_code == 0, r.output
