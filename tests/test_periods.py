"""Periods: parsing, refusal of bad values, order, date windows, the published code, and every command refusing."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minewatch.errors import MinewatchError
from minewatch.periods import (
    Period,
    encode,
    from_dates,
    from_filename,
    iso_datetime,
    label,
    parse_period,
    parse_period_list,
    sort_periods,
)


@pytest.mark.parametrize(
    "value, want",
    [
        ("2024", "2024"), (2024, "2024"), (2018.0, "2018"), (np.int64(2024), "2024"), (np.float32(2019.0), "2019"),
        ("2025Q2", "2025Q2"), ("2025q2", "2025Q2"), ("2025-Q2", "2025Q2"), ("2025 Q2", "2025Q2"), (" 2025_q4 ", "2025Q4"),
        (202400, "2024"), ("202502", "2025Q2"), (202503.0, "2025Q3"), (np.int64(201800), "2018"),
    ],
)  # fmt: skip
def test_parse_accepts(value: object, want: str) -> None:
    assert label(value) == want


@pytest.mark.parametrize(
    "value", ["2024Q5", "2024Q0", "last year", "", "  ", "24", "2024Q", "Q3 2024", "202405", "202413", "2024.5", 2024.5, None,
              float("nan"), True, "1900", "3000", "2024Q1..2024Q2", "2024-01"],
)  # fmt: skip
def test_parse_refuses_with_one_line(value: object) -> None:
    with pytest.raises(MinewatchError) as e:
        parse_period(value, "--period")
    msg = e.value.oneline()
    assert "\n" not in msg and "--period" in msg and "2024Q3" in msg  # names the option and shows good forms


def test_windows_codes_and_order() -> None:
    y, q2, q4 = Period(2024), Period(2025, 2), Period(2024, 4)
    assert (y.start, y.end, y.end_exclusive) == (dt.date(2024, 1, 1), dt.date(2024, 12, 31), dt.date(2025, 1, 1))
    assert (q2.start, q2.end) == (dt.date(2025, 4, 1), dt.date(2025, 6, 30))
    assert (q4.start, q4.end, q4.end_exclusive) == (dt.date(2024, 10, 1), dt.date(2024, 12, 31), dt.date(2025, 1, 1))
    assert Period(2024, 1).end == dt.date(2024, 3, 31) and Period(2024, 3).end == dt.date(2024, 9, 30)
    assert (y.code, q2.code, encode("2025Q3"), encode(201800)) == (202400, 202502, 202503, 201800)
    for p in (y, q2, q4):
        assert parse_period(p.code) == p and parse_period(p.label) == p  # the code round-trips
    assert sort_periods(["2025Q3", "2024", 202502, "2024Q1", "2018", "2024", None, ""]) == ["2018", "2024", "2024Q1", "2025Q2", "2025Q3"]
    assert Period(2024) < Period(2024, 1) < Period(2024, 4) < Period(2025)
    assert y.contains(Period(2024, 3)) and not Period(2024, 3).contains(y) and not y.contains(Period(2025))
    assert Period(2025, 2).previous_year() == Period(2024) and Period(2025, 2).annual == Period(2025)
    assert iso_datetime(q2.start) == "2025-04-01T00:00:00Z" and iso_datetime(q2.end, end_of_day=True) == "2025-06-30T23:59:59Z"


def test_from_dates_and_filename() -> None:
    assert from_dates("2024-01-01", "2024-12-31") == Period(2024)
    assert from_dates("2024-01-01", "2025-01-01") == Period(2024)  # exclusive end
    assert from_dates("2024-07-01", "2024-09-30") == Period(2024, 3)
    assert from_dates("2024-10-01", "2025-01-01") == Period(2024, 4)
    assert from_dates("2024-01-01", "2024-03-31") == Period(2024, 1)
    assert from_dates("2024-02-01", "2024-04-30") is None and from_dates(None, "2024-01-01") is None and from_dates("x", "y") is None
    assert from_filename("mining_202503_simplified.geojson") == Period(2025, 3)
    assert from_filename("dir/mining_201800.parquet") == Period(2018)
    assert from_filename("patches.parquet") is None and from_filename("mining_202413.geojson") is None


def test_period_lists() -> None:
    got = [p.label for p in parse_period_list("2024,2025Q1..2025Q4")]
    assert got == ["2024", "2025Q1", "2025Q2", "2025Q3", "2025Q4"]
    assert [p.label for p in parse_period_list("2019..2021, 2020")] == ["2019", "2020", "2021"]
    assert [p.label for p in parse_period_list("2024Q4..2025Q1")] == ["2024Q4", "2025Q1"]
    for bad in ("2024,,2025", "2025..2024", "2024..2025Q2", "2024,2024Q5", ""):
        with pytest.raises(MinewatchError):
            parse_period_list(bad)


def test_layer_with_bad_period_column_is_refused(tmp_path: Path) -> None:
    from minewatch.postprocess.io import read_layer

    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"period": "2024Q5"},
         "geometry": {"type": "Polygon", "coordinates": [[[-60, -5], [-59.99, -5], [-59.99, -4.99], [-60, -5]]]}}]}  # fmt: skip
    p = tmp_path / "bad period.geojson"
    p.write_text(json.dumps(fc))
    with pytest.raises(MinewatchError) as e:
        read_layer(p)
    assert "bad period.geojson" in e.value.oneline() and "2024Q5" in e.value.oneline()


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "minewatch.cli.main", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("bad", ["2024Q5", "last year"])
def test_commands_refuse_bad_periods(tmp_path: Path, bad: str) -> None:
    """detect --period and run --period refuse before reading or writing anything (one line, exit 2)."""
    work = tmp_path / "my work"
    work.mkdir()
    (work / "roi.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [[[-60, -5], [-59.9, -5], [-59.9, -4.9], [-60, -5]]]}))
    for args in (
        ["detect", "--imagery", "no such.tif", "--out", "det out", "--period", bad],
        ["run", "--roi", "roi.geojson", "--period", bad, "--out", "run out"],
    ):
        r = _cli(args, work)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "--period" in lines[0] and bad in lines[0], r.stderr
    assert sorted(p.name for p in work.iterdir()) == ["roi.geojson"]  # nothing written


@pytest.mark.parametrize("opt,bad", [("--t-main", "1.5"), ("--t-iso", "nan"), ("--simplify", "-3")])
def test_run_refuses_bad_postprocess_options_before_detecting(tmp_path: Path, opt: str, bad: str) -> None:
    """run checks the post-processing options first: a typo must not cost a whole detect and then
    fail, leaving a half-made run."""
    work = tmp_path / "my work"
    work.mkdir()
    r = _cli(["run", "--demo", opt, bad, "--out", "run out", "--quiet"], work)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"minewatch: error: {opt}:"), r.stderr
    assert list(work.iterdir()) == []  # nothing written
