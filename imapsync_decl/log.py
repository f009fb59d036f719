"""Structured logs: JSON lines on stderr (console lines on a terminal), secrets redacted.

Events are snake_case past tense (``folder_archived``); context is bound once
with ``structlog.contextvars.bound_contextvars(run_id=..., profile=..., mailbox=...)``
and appears on every line logged inside.

A log file (``--log-file``) is opened by :func:`open_log_file`: append-only, created
0600, never through a symbolic link, and only if it is a regular file of the running
user that group and others cannot write.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Literal, TextIO

import structlog

from imapsync_decl.errors import UsageError
from imapsync_decl.fs import (
    FILE_MODE,
    UnsafePath,
    check_output_path,
    check_private_file,
    check_regular,
    open_nofollow,
)

LogFormat = Literal["auto", "json", "console"]

# Keys whose values never reach a log line, whatever logs them.
SECRET_KEYS = frozenset({"password", "passwd", "secret", "token", "authorization"})
REDACTED = "[redacted]"


def redact_secrets(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.lower() in SECRET_KEYS:
            event_dict[key] = REDACTED
    return event_dict


def open_log_file(path: Path) -> TextIO:
    """``path`` opened for appending log lines (line-buffered), created 0600 if new.

    Refused (UsageError, exit 10, naming the path) when its directory is missing, when
    it is a symbolic link, not a regular file, another user's, or writable by group or
    others.
    """
    try:
        check_output_path(path)
        check_private_file(path, what="log file")
        # O_NONBLOCK: a FIFO put there in the meantime must not hang the open.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK
        fd = open_nofollow(path, flags, FILE_MODE)
    except UnsafePath as exc:
        raise UsageError(f"cannot use the log file {exc}") from None
    except OSError as exc:
        reason = "the log file is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise UsageError(f"cannot use the log file {path}: {reason}") from None
    try:
        check_regular(path, os.fstat(fd), what="log file")
    except UnsafePath as exc:
        os.close(fd)
        raise UsageError(f"cannot use the log file {exc}") from None
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a", encoding="utf-8", buffering=1)


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the moment (progress bars redirect it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(
    log_format: LogFormat = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Set up structlog for this process. ``auto``: console on a terminal, else JSON."""
    out: Any = stream if stream is not None else _CurrentStderr()
    if log_format == "auto":
        log_format = "console" if out.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
