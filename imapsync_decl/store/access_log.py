"""The access log: who signed in, viewed, downloaded or restored what, when, from where.

``access.log`` in the archive directory, append-only JSON lines, one object per
record (``time``, ``user``, ``action``, ``target``, ``address``, ``detail``). The file
is created 0600 and opened ``O_APPEND | O_NOFOLLOW``; a symbolic link, a file of
another user or one others can write is refused. Each record is one ``write()`` of
one line, then ``fsync``: records of several threads or processes do not interleave,
and a record is on disk before the action it describes is answered.

A crash in the middle of a write can leave a torn last line; the next record starts
on a line of its own, and reading skips the torn line and says so. Reading is bounded
for a file in a shared directory: lines are streamed, a line longer than
:data:`MAX_LINE_BYTES` is skipped without being held in memory, and lines that do not
parse are skipped and reported with their numbers, never a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from imapsync_decl.errors import ExitCode, ImapsyncError
from imapsync_decl.fs import (
    FILE_MODE,
    UnsafePath,
    check_private_file,
    check_regular,
    make_private_dir,
    open_nofollow,
    unwritable_reason,
    write_all,
)

ACCESS_LOG_NAME = "access.log"
ACTIONS = (
    "sign_in",
    "sign_in_failed",
    "sign_out",
    "view",
    "download",
    "restore",
    "password_changed",
)
MAX_LINE_BYTES = 64 * 1024
MAX_FIELD_CHARS = 1024  # user, target and address are cut to this length when written
_FIELDS = ("user", "target", "address")
_append_lock = threading.Lock()


class AccessLogError(ImapsyncError):
    """The access log cannot be written (exit 14) or read."""

    exit_code = ExitCode.NOT_WRITABLE


@dataclass(frozen=True)
class AccessEntry:
    """One record of the access log.

    ``user`` is who did it (for ``sign_in_failed``: the name tried), ``target`` what
    it was done to (``message 123``, ``folder alice/INBOX``), ``address`` the client's
    address, ``detail`` anything else the action has to say (JSON values).
    """

    time: str
    user: str | None
    action: str
    target: str | None
    address: str | None
    detail: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "time": self.time,
            "user": self.user,
            "action": self.action,
            "target": self.target,
            "address": self.address,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True)
class AccessLogReading:
    """What reading the log found: the entries, and the lines it had to skip."""

    entries: list[AccessEntry]
    skipped_lines: list[int]  # line numbers (from 1) that did not parse or were too long
    torn_last_line: bool  # the last line had no end: a write that a crash cut short

    def warnings(self) -> list[str]:
        found = []
        if self.skipped_lines:
            shown = ", ".join(str(n) for n in self.skipped_lines[:10])
            more = " ..." if len(self.skipped_lines) > 10 else ""
            found.append(
                f"{len(self.skipped_lines)} line(s) of the access log are not records and were"
                f" skipped (line {shown}{more})"
            )
        if self.torn_last_line:
            found.append("the last line of the access log is incomplete (a write cut short)")
        return found


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _cut(value: str | None) -> str | None:
    if value is None:
        return None
    return value[:MAX_FIELD_CHARS]


def append_access(
    archive_root: Path,
    *,
    user: str | None,
    action: str,
    target: str | None = None,
    address: str | None = None,
    detail: Mapping[str, object] | None = None,
) -> AccessEntry:
    """Append one record to the archive's access log and make it durable; the entry.

    ``action`` is one of :data:`ACTIONS` (ValueError otherwise: a bug of the caller).
    ``detail`` must be JSON-serialisable. Strings are cut to :data:`MAX_FIELD_CHARS`;
    a record whose detail would make the line longer than :data:`MAX_LINE_BYTES` keeps
    ``{"truncated": true}`` as its detail. AccessLogError (exit 14) when the log cannot
    be written.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown access log action {action!r}")
    entry = AccessEntry(
        time=_now(),
        user=_cut(user),
        action=action,
        target=_cut(target),
        address=_cut(address),
        detail=dict(detail or {}),
    )
    line = _line(entry)
    if len(line) > MAX_LINE_BYTES:
        entry = AccessEntry(
            entry.time, entry.user, entry.action, entry.target, entry.address, {"truncated": True}
        )
        line = _line(entry)
    root = Path(archive_root)
    path = root / ACCESS_LOG_NAME
    try:
        with _append_lock:
            make_private_dir(root, what="archive directory")
            check_private_file(path, what="access log")
            fd = open_nofollow(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK)
            try:
                info = os.fstat(fd)
                check_regular(path, info, what="access log")
                if info.st_mode & 0o777 != FILE_MODE:
                    os.fchmod(fd, FILE_MODE)
                os.set_blocking(fd, True)
                if info.st_size and os.pread(fd, 1, info.st_size - 1) != b"\n":
                    line = b"\n" + line  # the torn line of a crash stays a line of its own
                write_all(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
    except UnsafePath as exc:
        raise AccessLogError(f"the access log cannot be written: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            reason = "it is a symbolic link"
        else:
            reason = unwritable_reason(exc) or exc.strerror or str(exc)
        raise AccessLogError(f"the access log {path} cannot be written: {reason}") from None
    return entry


def _line(entry: AccessEntry) -> bytes:
    text = json.dumps(entry.to_json(), ensure_ascii=True, separators=(",", ":"))
    return text.encode("ascii") + b"\n"


def read_access_log(
    archive_root: Path, *, user: str | None = None, limit: int | None = None
) -> list[AccessEntry]:
    """The records of the archive's access log, oldest first (only ``user``'s when given;
    only the newest ``limit`` when given). Lines that are not records are skipped (see
    :func:`scan_access_log` for which)."""
    return scan_access_log(archive_root, user=user, limit=limit).entries


def scan_access_log(
    archive_root: Path, *, user: str | None = None, limit: int | None = None
) -> AccessLogReading:
    """Read the access log as :func:`read_access_log` does, with the lines skipped.

    No log yet: no entries. AccessLogError (exit 14) when it is a symbolic link or not
    a regular file, or cannot be opened.
    """
    path = Path(archive_root) / ACCESS_LOG_NAME
    kept: deque[AccessEntry] = deque(maxlen=limit)
    skipped: list[int] = []
    torn = False
    try:
        fd = open_nofollow(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return AccessLogReading([], [], False)
    except OSError as exc:
        reason = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise AccessLogError(f"the access log {path} cannot be read: {reason}") from None
    with os.fdopen(fd, "rb") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise AccessLogError(f"the access log {path} cannot be read: not a regular file")
        os.set_blocking(stream.fileno(), True)
        for number, raw, complete in _lines(stream):
            entry = _parse(raw) if raw is not None else None
            if entry is None:
                if complete:
                    skipped.append(number)
                else:
                    torn = True
                continue
            if user is None or entry.user == user:
                kept.append(entry)
    return AccessLogReading(list(kept), skipped, torn)


def _lines(stream: BinaryIO) -> Iterator[tuple[int, bytes | None, bool]]:
    """(line number, its bytes or None when too long, whether it ended with a newline);
    at most :data:`MAX_LINE_BYTES` + 1 bytes are held at a time. Empty lines are left out."""
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # the rest of the overlong line
                raw = stream.readline(MAX_LINE_BYTES + 1)
            yield number, None, True
            continue
        complete = raw.endswith(b"\n")
        if raw.strip():
            yield number, raw, complete


def _parse(raw: bytes) -> AccessEntry | None:
    try:
        doc: Any = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    time, action, detail = doc.get("time"), doc.get("action"), doc.get("detail", {})
    if not isinstance(time, str) or not isinstance(action, str) or not isinstance(detail, dict):
        return None
    values = {name: doc.get(name) for name in _FIELDS}
    if any(v is not None and not isinstance(v, str) for v in values.values()):
        return None
    return AccessEntry(
        time=time,
        user=values["user"],
        action=action,
        target=values["target"],
        address=values["address"],
        detail=detail,
    )
