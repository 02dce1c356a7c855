"""Helpers for tests that race two real ``minewatch`` processes."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused(proc: subprocess.Popen) -> Iterator[None]:
    """Hold ``proc`` stopped (SIGSTOP) for the block, so it keeps its run lock however fast the
    machine: without this, a quick CI machine finished the first run before the second started."""
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        assert proc.poll() is None, f"the first run ended before the second could start: {proc.communicate()}"
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)
