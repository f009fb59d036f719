"""Errors and problems: what went wrong, where, and the exit code that says so.

Two kinds of failure live here:

* :class:`Problem` is a value: one finding about the user's input (a document, a
  CSV file) with its place. Loaders collect problems and never raise on the
  first one, so a user sees every mistake in one pass.
* :class:`ImapsyncError` and its subclasses end a command. Each class carries its
  exit code; ``cli.main`` turns them into a message on stderr and that code.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class ExitCode(enum.IntEnum):
    """The exit codes of every command (also listed in ``--help`` and README)."""

    OK = 0
    INTERNAL = 1
    CHANGES_PENDING = 2
    PARTIAL = 3
    CONFIG = 10
    STALE_PLAN = 11
    INTEGRITY = 12
    LOCKED = 13
    NOT_WRITABLE = 14
    INTERRUPTED = 130
    TERMINATED = 143


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Problem:
    """One finding about user input, with its place.

    Rendered as ``path:line:col: field: message`` (``col`` and ``field`` are left
    out when unknown, e.g. CSV problems are ``path:line: message``).
    """

    path: str
    line: int | None
    col: int | None
    field: str | None
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        place = self.path
        if self.line is not None:
            place += f":{self.line}"
            if self.col is not None:
                place += f":{self.col}"
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        where = f"{self.field}: " if self.field else ""
        return f"{place}: {prefix}{where}{self.message}"

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


class ImapsyncError(Exception):
    """Base of all errors that end a command with a message and an exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(ImapsyncError):
    """The command line itself is wrong (unknown option, missing argument)."""

    exit_code = ExitCode.CONFIG


class ArchiveNotWritable(ImapsyncError):
    """The archive cannot be written: read-only, full, or of the wrong owner or mode."""

    exit_code = ExitCode.NOT_WRITABLE


class ConfigError(ImapsyncError):
    """The configuration is invalid; carries every problem found, not just the first."""

    exit_code = ExitCode.CONFIG

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(sorted(problems, key=_problem_order))
        super().__init__("\n".join(str(p) for p in self.problems))


def _problem_order(p: Problem) -> tuple[str, int, int]:
    return (p.path, p.line or 0, p.col or 0)
