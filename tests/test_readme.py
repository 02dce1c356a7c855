"""Every command of README.md's "Commands" block, run as written (issue 17), in a folder laid out
the way the README assumes (``roi.geojson`` there, ``../shared/data`` beside it).

The compositing commands (``composite``, ``run --roi``) go to ``earth-search``: here a STAC API on
127.0.0.1 (``MINEWATCH_EARTH_SEARCH_URL``) serving synthetic L2A scenes of the ROI, with Earth
Search's collection id and asset keys, so the account-free default path is exercised end to end.
The two ``train`` lines (full trainings, hours here) and the ensemble built from them are left to
``scripts/readme_commands.py``; every other line runs. The quick start's two commands are what
``.ci/run`` runs.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import pytest
from shapely.geometry import mapping

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from _reliability_server import fault_server  # noqa: E402
from readme_commands import prepare, readme_commands, run_all  # noqa: E402

SKIP = ("train", "models ensemble")


def test_readme_block_is_parsed_into_commands() -> None:
    env, cmds = readme_commands()
    assert env == ["D=../shared/data/upstream"]
    assert all(c.startswith("minewatch ") for c in cmds) and len(cmds) >= 14
    assert any(c.startswith("minewatch run --roi roi.geojson --period 2024 --out run2024") for c in cmds)


@pytest.mark.timeout(1500)
def test_every_readme_command_runs_as_written(tmp_path: Path, shared_data: Path) -> None:
    from minewatch.grid import Tile
    from minewatch.imagery.sources import read_local_items
    from minewatch.imagery.synthetic import SceneSpec, make_catalog

    tile = Tile(21, 50, -71, 1008, 10.0)
    left, bottom, right, top = tile.bounds
    data = tmp_path / "stac"
    make_catalog(data, epsg=tile.epsg, bounds=(left - 600, bottom - 600, right + 600, top + 600),
                 scenes=[SceneSpec(dt.date(2024, m, 6), cloud=0.2) for m in (3, 8)], level="L2A", key_style="common", seed=5)  # fmt: skip
    roi = tmp_path / "roi.geojson"
    roi.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": mapping(tile.geometry_wgs84().buffer(-2e-3))}))
    work = tmp_path / "work"
    prepare(work, shared_data.parent, roi)
    assert (work / ".." / "shared" / "data" / "s2_rgb_chips").is_dir()
    with fault_server(data, lifetime_s=1400, max_requests=10**6) as srv:
        (data / "items").mkdir()
        for it in read_local_items(data / "catalog.json"):
            for a in it["assets"].values():
                a["href"] = f"{srv.url}/{Path(a['href']).relative_to(data.resolve()).as_posix()}"
            it["collection"], it["links"] = "sentinel-2-c1-l2a", []
            (data / "items" / f"{it['id']}.json").write_text(json.dumps(it))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MINEWATCH_EARTH_SEARCH_URL", srv.url)
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
                mp.delenv(k, raising=False)  # account-free: nothing to sign with
            lines: list[str] = []
            results = run_all(work, SKIP, log=lines.append)
    failed = [c for c, rc, _ in results if rc]
    assert not failed, "\n".join(lines)
    ran = {c.split()[1] for c, _, _ in results}
    assert {"composite", "detect", "postprocess", "run", "report", "timeline", "impacts", "airstrips", "map", "models", "evaluate"} <= ran
    # what those commands promised: L2A with no account, the card's calibration, the validation split
    comp = json.loads((work / "comp2024" / "manifest.json").read_text())
    assert comp["parameters"]["level"] == "L2A"
    run = json.loads((work / "run2024" / "composite" / "manifest.json").read_text())
    assert run["parameters"]["level"] == "L2A" and run["parameters"]["bands"] == ["B4", "B3", "B2"]
    from minewatch.postprocess.io import read_metadata

    assert read_metadata(work / "mining2024" / "mining.parquet")["parameters"]["name"] == "card"
    assert (work / "runs" / "demo" / "report.pdf").stat().st_size > 10_000
    assert (work / "models" / "rgb2021" / "card.json").is_file() and (work / "map.html").is_file()
