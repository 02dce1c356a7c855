"""Issue 12 §4: model cards are checked when loaded (once, before any tile), and a package's checksums
cover its own files only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from minewatch.errors import MinewatchError
from minewatch.models.package import CARD, load_package, save_package
from minewatch.models.package import resolve_package_path


@pytest.fixture()
def pkg(tmp_path) -> Path:
    dest = tmp_path / "my model"
    shutil.copytree(resolve_package_path("default"), dest)
    return dest


def _edit(pkg: Path, **changes) -> None:
    card = json.loads((pkg / CARD).read_text())
    card.update(changes)
    (pkg / CARD).write_text(json.dumps(card))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"patch_px": 44}, "44"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"step_px": 0}, "step_px"),
        ({"step_px": 96}, "step_px"),
        ({"fcn_stride": 7}, "fcn_stride"),
    ],
)
def test_inconsistent_card_is_refused_at_load(pkg, changes, expected):
    _edit(pkg, **changes)
    with pytest.raises(MinewatchError) as e:
        load_package(pkg)
    assert expected in e.value.oneline() and "my model" in e.value.oneline()


def test_missing_listed_weights_refused_at_load(pkg):
    w = next(pkg.glob("weights-*.bin"))
    w.unlink()
    with pytest.raises(MinewatchError, match="missing"):
        load_package(pkg)


def test_good_package_still_loads(pkg):
    p = load_package(pkg)
    assert p.card.patch_px == 48


def test_detect_refuses_a_bad_card_before_any_tile(pkg, tmp_path, monkeypatch):
    """The CLI run stops with one line and writes no run folder (today: every tile fails in turn)."""
    from click.testing import CliRunner

    from minewatch.cli.main import cli
    from minewatch.config import package_data_dir

    _edit(pkg, patch_px=44)
    demo = next((package_data_dir() / "demo").rglob("*.tif"))
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["detect", "--imagery", str(demo), "--model", "my model", "--out", "det out", "--period", "2024", "--scheduler", "synchronous"])
    assert r.exit_code == 2, r.output
    assert "patch_px" in r.output and not Path("det out").exists()


def test_save_package_records_only_the_weights_its_graphs_use(pkg, tmp_path):
    """``train --out`` into a folder that holds other files: the card's checksums list the package's own."""
    import onnx

    from minewatch.models.store import write_package

    out = tmp_path / "train out"
    out.mkdir()
    (out / "notes.bin").write_bytes(b"unrelated")
    (out / "old.data").write_bytes(b"unrelated")
    card = load_package(pkg).card
    patch = onnx.load(str(pkg / "model.onnx")).SerializeToString()  # weights embedded
    fcn = onnx.load(str(pkg / "model_fcn.onnx")).SerializeToString()
    save_package(out, card, patch, None)
    assert set(card.checksums) == {"model.onnx"}
    write_package(out, card, patch, fcn)
    weights = [p.name for p in out.glob("weights-*.bin")]
    assert len(weights) == 1
    assert set(card.checksums) == {"model.onnx", "model_fcn.onnx", weights[0]}
    assert (out / "notes.bin").exists() and (out / "old.data").exists()
    assert load_package(out).card.checksums == card.checksums
