from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from shapely.geometry import box

from minewatch.bands import BandSpec, Rendering
from minewatch.chips import ChipSet, geographic_mask, load_chips, save_chips, site_ids, split_by_site
from minewatch.errors import MinewatchError


def test_real_chips_load(real_chips):
    assert real_chips.pixels.shape == (11993, 48, 48, 3)
    assert int(real_chips.labels.sum()) == 3138
    assert real_chips.spec.bands == ["B4", "B3", "B2"]


def test_site_split_never_splits_a_site(real_chips):
    tr, va = split_by_site(real_chips.meta, 0.2, seed=1)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(real_chips)
    key = real_chips.meta["source"] + ":" + real_chips.meta["cell"].astype(str)
    assert not set(key.iloc[tr]) & set(key.iloc[va])
    assert 0.15 < len(va) / len(real_chips) < 0.25
    assert 0.1 < real_chips.labels[va].mean() < 0.5


def test_site_ids_join_source_cell_and_location():
    meta = pd.DataFrame(
        {"source": ["a", "a", "b", "c"], "cell": [1, 1, 7, 9], "lon": [np.nan, -60.0012, -60.0013, -50.0], "lat": [np.nan, -5.0012, -5.0013, -5.0]}
    )
    s = site_ids(meta)
    assert s[0] == s[1] == s[2] and s[3] != s[0]


def test_geographic_mask():
    meta = pd.DataFrame({"lon": [-60.0, -50.0, np.nan], "lat": [-5.0, -5.0, np.nan]})
    assert geographic_mask(meta, box(-61, -6, -59, -4)).tolist() == [True, False, False]


def test_roundtrip_and_bad_inputs(tmp_path):
    px = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 5)).astype(np.float32)
    spec = BandSpec(["B2", "B3", "B4", "B8", "B11"], Rendering("linear", 1e-4))
    cs = ChipSet(px, np.array([0, 1, 0, 1], np.uint8), pd.DataFrame({"chip": range(4), "label": [0, 1, 0, 1]}), spec)
    save_chips(cs, tmp_path / "ds")
    back = load_chips(tmp_path / "ds")
    assert back.spec == spec and np.array_equal(back.pixels, px)

    bad = tmp_path / "bad"
    bad.mkdir()
    np.savez(bad / "chips.npz", rgb=np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(MinewatchError, match="no 'label' array"):
        load_chips(bad)
    np.savez(bad / "chips.npz", rgb=np.zeros((3, 8, 8), np.uint8), label=np.zeros(3, np.uint8))
    with pytest.raises(MinewatchError, match="N×H×W×C"):
        load_chips(bad)
    np.savez(bad / "chips.npz", pixels=np.full((3, 8, 8, 3), np.nan, np.float32), label=np.zeros(3, np.uint8))
    with pytest.raises(MinewatchError, match="NaN"):
        load_chips(bad)
    (bad / "chips.npz").write_bytes(b"not a zip")
    with pytest.raises(MinewatchError, match="unreadable"):
        load_chips(bad)


def test_rendering_roundtrip_below_saturation():
    r = Rendering()
    dn = np.array([0, 100, 1500, 2999, 5000])
    x = r.apply(dn)
    assert x.tolist() == [0, 8, 128, 255, 255]
    assert np.all(np.abs(r.invert(x)[:4] - dn[:4]) <= 3000 / 255 / 2 + 1e-3)


def test_cli_help_lists_pipeline():
    from minewatch.cli.main import cli

    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0 and "minewatch" in res.output
