"""Where shared, non-packaged data lives.

The real labelled chips, published layers and upstream models are not shipped in git; tests,
benchmarks and training scripts find them through ``MINEWATCH_SHARED`` (default ``../shared/data``
next to the repository).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """The shared data folder: ``$MINEWATCH_SHARED`` or ``<repo>/../shared/data``."""
    env = os.environ.get("MINEWATCH_SHARED")
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT.parent / "shared" / "data").resolve()


def package_data_dir() -> Path:
    """Data shipped inside the package (default model, demo region)."""
    return Path(__file__).resolve().parent / "data"
