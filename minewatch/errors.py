"""One error type whose message is the one line a user sees.

Every bad-input path raises :class:`MinewatchError` naming the offending file (or option) and the
problem; the CLI prints it as ``minewatch: error: <file>: <problem>`` and exits non-zero.
"""

from __future__ import annotations

from os import PathLike


class MinewatchError(Exception):
    """A user-facing error: ``where`` is the file or option at fault, ``problem`` says what is wrong."""

    def __init__(self, where: str | PathLike[str] | None, problem: str) -> None:
        self.where = None if where is None else str(where)
        self.problem = problem.strip().replace("\n", " ")
        super().__init__(self.oneline())

    def oneline(self) -> str:
        return f"{self.where}: {self.problem}" if self.where else self.problem
