"""Structured logs: JSON lines on stderr (console lines on a terminal), secrets redacted.

Events are snake_case past tense (``folder_archived``); context is bound once
with ``structlog.contextvars.bound_contextvars(run_id=..., profile=..., mailbox=...)``
and appears on every line logged inside.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

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
