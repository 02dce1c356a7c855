"""One calibrated chain (issue 17): detect → postprocess uses the scoring model's card by default,
the same thresholds as ``minewatch run``; the upstream presets are explicit choices."""

from __future__ import annotations

import shutil
from pathlib import Path

import geopandas as gpd
import pytest
from click.testing import CliRunner

from minewatch.cli.main import cli

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


@pytest.fixture(scope="module")
def demo_patches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from minewatch.detect.demo import load_demo

    work = tmp_path_factory.mktemp("chain")
    shutil.copy(load_demo().imagery, work / "demo mosaic.tif")
    r = CliRunner().invoke(cli, ["detect", "--model", "default", "--imagery", str(work / "demo mosaic.tif"), "--out", str(work / "det 2024"),
                                 "--scheduler", "synchronous", "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    return work / "det 2024" / "patches.parquet"


def test_postprocess_defaults_to_the_cards_thresholds(demo_patches: Path, tmp_path: Path) -> None:
    from minewatch.detect.chain import card_thresholds
    from minewatch.detect.scorer import Scorer
    from minewatch.postprocess.io import read_metadata

    t_main, t_iso = card_thresholds(Scorer.load(["default"]).packages)
    r = CliRunner().invoke(cli, ["postprocess", str(demo_patches), "--out", str(tmp_path / "pp")])
    assert r.exit_code == 0, r.output
    assert f"t_main {t_main:.3f}" in r.output and f"t_iso {t_iso:.3f}" in r.output
    meta = read_metadata(tmp_path / "pp" / "mining.parquet")
    assert meta["parameters"]["name"] == "card"
    assert meta["parameters"]["t_main"] == pytest.approx(t_main) and meta["parameters"]["t_iso"] == pytest.approx(t_iso)
    card_area = gpd.read_parquet(tmp_path / "pp" / "mining.parquet").to_crs(6933).area.sum() / 1e4
    # the upstream preset is still there, and on our model's calibration it flags far more
    r2 = CliRunner().invoke(cli, ["postprocess", str(demo_patches), "--out", str(tmp_path / "single"), "--preset", "single"])
    assert r2.exit_code == 0, r2.output
    single_area = gpd.read_parquet(tmp_path / "single" / "mining.parquet").to_crs(6933).area.sum() / 1e4
    assert single_area > 1.5 * card_area > 0


def test_postprocess_card_needs_to_know_the_model(demo_patches: Path, tmp_path: Path) -> None:
    """A patch file without minewatch metadata: the card preset asks for --model (or a preset)."""
    import geopandas as gpd

    bare = tmp_path / "bare.parquet"
    gpd.read_parquet(demo_patches).to_parquet(bare)
    r = CliRunner().invoke(cli, ["postprocess", str(bare), "--out", str(tmp_path / "pp")])
    assert r.exit_code == 2 and "give --model" in r.output and not (tmp_path / "pp" / "mining.parquet").exists()
    r = CliRunner().invoke(cli, ["postprocess", str(bare), "--out", str(tmp_path / "pp"), "--model", "default"])
    assert r.exit_code == 0, r.output


# --- evaluate: the card's validation split by default ----------------------------------------------
def test_evaluate_own_training_chips_uses_the_cards_validation_split(shared_data: Path) -> None:
    """`evaluate --model default --chips <shared chips>`: only the card's validation split is scored,
    and the figures are the card's (not the inflated all-chips ones); the output says which chips."""
    import json

    from minewatch.models.package import load_package

    card = load_package("default").card
    r = CliRunner().invoke(cli, ["evaluate", "--model", "default", "--chips", str(shared_data / "s2_rgb_chips"), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    assert res["chips"]["n"] == card.metrics["val"]["n"] and "validation split" in res["chips"]["which"]
    assert res["overall"]["ap"] == pytest.approx(card.metrics["val"]["ap"], abs=1e-6)
    assert res["overall"]["sens_at_spec99"] == pytest.approx(card.metrics["val"]["sens_at_spec99"], abs=1e-6)


def test_evaluate_other_chips_all_of_them_and_all_flag(shared_data: Path, tmp_path: Path) -> None:
    """Chips that are not the card's training set are all scored (and said so); a package whose card
    names a chip set gets its split by default and every chip with --all."""
    import json

    import numpy as np

    from minewatch.atomic import sha256_file
    from minewatch.chips import load_chips
    from minewatch.chips.dataset import save_chips
    from minewatch.models.package import resolve_package_path

    chips = load_chips(shared_data / "s2_rgb_chips")
    small = save_chips(chips.subset(np.arange(0, len(chips), 40)), tmp_path / "small chips")
    n = len(load_chips(small))
    r = CliRunner().invoke(cli, ["evaluate", "--model", "default", "--chips", str(small), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    assert res["chips"]["n"] == n and "not the model's recorded training set" in res["chips"]["which"]
    # a copy of the package whose card says it trained on `small`
    pkg = tmp_path / "pkg"
    shutil.copytree(resolve_package_path("default"), pkg)
    card = json.loads((pkg / "card.json").read_text())
    card["training"]["chips_sha256"] = sha256_file(small / "chips.npz")
    (pkg / "card.json").write_text(json.dumps(card))
    r = CliRunner().invoke(cli, ["evaluate", "--model", str(pkg), "--chips", str(small), "--json"])
    own = json.loads(r.output.strip().splitlines()[-1])
    assert r.exit_code == 0 and 0 < own["chips"]["n"] < n and "validation split" in own["chips"]["which"]
    r = CliRunner().invoke(cli, ["evaluate", "--model", str(pkg), "--chips", str(small), "--all"])
    assert r.exit_code == 0 and f"n={n}" in r.output and "training chips included" in r.output


# --- readable outputs -------------------------------------------------------------------------------
def test_models_show_is_one_screen_with_the_cards_figures() -> None:
    from minewatch.models.package import load_package

    card = load_package("default").card
    r = CliRunner().invoke(cli, ["models", "show", "default"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert len(lines) <= 24
    text = r.output
    assert f"{card.metrics['val']['ap']:.3f}" in text and f"{card.validated_levels['L2A']['ap']:.3f}" in text
    assert f"{card.metrics['val']['sens_at_spec99'] * 100:.0f} %" in text and "left out of training" in text
    assert "s2d, fcn" in text and "B4,B3,B2" in text
    full = CliRunner().invoke(cli, ["models", "show", "default", "--json"])
    assert full.exit_code == 0 and len(full.output.splitlines()) > 500


def test_shipped_card_holds_no_machine_paths() -> None:
    import json

    from minewatch.models.package import load_package, resolve_package_path

    raw = (resolve_package_path("default") / "card.json").read_text()
    strings: list[str] = []

    def walk(o: object) -> None:
        if isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
        elif isinstance(o, str):
            strings.append(o)

    walk(json.loads(raw))
    assert not [s for s in strings if s.startswith(("/", "~")) or ":\\" in s]
    load_package("default")  # its checksums still hold
