"""Consistent commands (issue 17): one vocabulary, shared options, devices reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from minewatch.cli.main import COMMANDS, cli

WRITERS = ("run", "composite", "chips", "train", "detect", "postprocess", "timeline", "impacts", "airstrips", "map", "report", "review")


@pytest.mark.parametrize("name", WRITERS)
def test_every_writing_command_takes_o_and_out(name: str) -> None:
    r = CliRunner().invoke(cli, [name, "--help"])
    assert r.exit_code == 0, r.output
    assert "-o, --out" in r.output, r.output


def test_zone_options_are_spelled_one_way() -> None:
    """map, report and impacts all say --zone-id-field / --zone-name-field (impacts keeps --id-field, hidden)."""
    for name in ("map", "report", "impacts"):
        out = CliRunner().invoke(cli, [name, "--help"]).output
        assert "--zone-id-field" in out and "--zone-name-field" in out, name
        assert "--id-field " not in out.replace("--zone-id-field", ""), name


def test_impacts_old_and_new_zone_field_spellings_agree(tmp_path: Path) -> None:
    import geopandas as gpd
    import shapely

    layer = gpd.GeoDataFrame({"period": ["2024"], "area_ha": [23.04]}, geometry=[shapely.box(-55.0, -5.0, -54.99, -4.99)], crs=4326)
    zones = gpd.GeoDataFrame({"zid": ["A"], "label": ["Zone A"]}, geometry=[shapely.box(-55.1, -5.1, -54.9, -4.9)], crs=4326)
    layer.to_file(tmp_path / "mining_2024.geojson")
    zones.to_file(tmp_path / "zones.geojson")
    new = CliRunner().invoke(cli, ["impacts", str(tmp_path / "mining_2024.geojson"), "--zones", str(tmp_path / "zones.geojson"),
                                   "--zone-id-field", "zid", "--zone-name-field", "label", "-o", str(tmp_path / "new")])  # fmt: skip
    old = CliRunner().invoke(cli, ["impacts", str(tmp_path / "mining_2024.geojson"), "--zones", str(tmp_path / "zones.geojson"),
                                   "--id-field", "zid", "--name-field", "label", "--out", str(tmp_path / "old")])  # fmt: skip
    assert new.exit_code == 0 and old.exit_code == 0, (new.output, old.output)
    assert (tmp_path / "new" / "impacts.csv").read_text() == (tmp_path / "old" / "impacts.csv").read_text()
    none = CliRunner().invoke(cli, ["impacts", str(tmp_path / "mining_2024.geojson"), "--zones", str(tmp_path / "zones.geojson"), "-o", str(tmp_path / "x")])
    assert none.exit_code == 2 and "--zone-id-field" in none.output


def test_level_and_preset_defaults_agree() -> None:
    """composite and run default to the same account-free level rule; run and postprocess to the card's thresholds."""
    comp = CliRunner().invoke(cli, ["composite", "--help"]).output
    run = CliRunner().invoke(cli, ["run", "--help"]).output
    post = CliRunner().invoke(cli, ["postprocess", "--help"]).output
    assert "l2a" in comp and "no account" in comp and "no account" in run
    assert "[default: card]" in run.replace("\n", " ").replace("  ", " ") or "default: card" in run
    assert "default: card" in post.replace("\n", " ")


def test_shared_options_come_from_one_module() -> None:
    from minewatch.cli import options

    assert {"out_option", "workers_option", "level_option", "zone_fields_options"} <= set(options.__all__)
    assert set(COMMANDS) >= set(WRITERS)


# --- devices ----------------------------------------------------------------------------------------
def test_scoring_reports_its_onnx_runtime_provider() -> None:
    import onnxruntime as ort

    from minewatch.models.package import load_package, ort_providers

    pkg = load_package("default")
    assert pkg.execution_provider in ort.get_available_providers()
    assert pkg.execution_provider == ort_providers()[0] or pkg.execution_provider == "CPUExecutionProvider"


def _tiny_chips(real_chips, tmp: Path) -> Path:  # noqa: ANN001
    from minewatch.chips.dataset import save_chips

    rng = np.random.default_rng(0)
    return save_chips(real_chips.subset(np.sort(rng.choice(len(real_chips), 300, replace=False))), tmp / "tiny chips")


def test_train_device_cpu_is_reported_and_recorded(real_chips, tmp_path: Path) -> None:  # noqa: ANN001
    pytest.importorskip("torch")
    d = _tiny_chips(real_chips, tmp_path)
    r = CliRunner().invoke(cli, ["train", "--chips", str(d), "--arch", "mwnet-tiny", "--epochs", "1", "--batch-size", "64",
                                 "--device", "cpu", "--workers", "1", "-o", str(tmp_path / "m")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "training on cpu (1 thread" in r.output
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["training"]["device"].startswith("cpu (1 thread")


def test_train_device_cuda(real_chips, tmp_path: Path) -> None:  # noqa: ANN001
    """On a machine with a CUDA GPU (and a CUDA build of PyTorch) train there; elsewhere --device cuda is one clear error."""
    torch = pytest.importorskip("torch")
    d = _tiny_chips(real_chips, tmp_path)
    args = ["train", "--chips", str(d), "--arch", "mwnet-tiny", "--epochs", "1", "--batch-size", "64", "--device", "cuda", "-o", str(tmp_path / "m")]
    r = CliRunner().invoke(cli, args)
    if not torch.cuda.is_available():
        assert r.exit_code == 2 and "sees no CUDA GPU" in r.output and not (tmp_path / "m" / "card.json").exists()
        pytest.skip(f"no CUDA GPU for PyTorch {torch.__version__} here: training on cuda not exercised (the refusal was)")
    assert r.exit_code == 0, r.output
    assert "training on cuda (" in r.output
    assert json.loads((tmp_path / "m" / "card.json").read_text())["training"]["device"].startswith("cuda")


def test_progress_lines_for_long_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path) -> None:
    """timeline, map and report say what they are doing (on a terminal, or with MINEWATCH_PROGRESS=1);
    piped output without it stays results only."""
    up = shared_data / "upstream" / "detections"
    layers = [str(up / "mining_202300_simplified.geojson"), str(up / "mining_202400_simplified.geojson")]
    monkeypatch.setenv("MINEWATCH_PROGRESS", "1")
    r = CliRunner().invoke(cli, ["timeline", *layers, "-o", str(tmp_path / "tl")])
    assert r.exit_code == 0 and "timeline: reading 2 layer(s)" in r.output, r.output
    r = CliRunner().invoke(cli, ["map", *layers, "-o", str(tmp_path / "m.html")])
    assert r.exit_code == 0 and "map: reading 2 layer(s)" in r.output and "writing the page" in r.output, r.output
    r = CliRunner().invoke(cli, ["report", *layers, "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0 and "report: charts" in r.output and "report: map" in r.output, r.output
    monkeypatch.delenv("MINEWATCH_PROGRESS")
    r = CliRunner().invoke(cli, ["timeline", *layers, "-o", str(tmp_path / "tl2")])
    assert r.exit_code == 0 and "timeline: reading" not in r.output
