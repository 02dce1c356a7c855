"""Shared fixtures: the real shared data folder (path from MINEWATCH_SHARED, default ../shared/data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from minewatch.config import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if not (d / "s2_rgb_chips" / "chips.npz").exists():
        pytest.skip(f"shared data not found at {d} (set MINEWATCH_SHARED)")
    return d


@pytest.fixture(scope="session")
def real_chips(shared_data: Path):
    from minewatch.chips import load_chips

    return load_chips(shared_data / "s2_rgb_chips")
