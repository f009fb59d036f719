"""One writer at a time: an exclusive lock on ``<archive>/lock``.

The lock is an ``flock`` on the file, so the kernel releases it when the holder
exits in any way, including ``kill -9``; a file left with a dead holder's details
never blocks. The holder writes who it is (pid, host, command, start time) into
the file so that a refused command can say what it is waiting for.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from imapsync_decl.errors import ExitCode, ImapsyncError

LOCK_NAME = "lock"


class ArchiveLocked(ImapsyncError):
    """Another process holds the archive lock."""

    exit_code = ExitCode.LOCKED

    def __init__(self, root: Path, holder: dict[str, Any] | None) -> None:
        self.root = root
        self.holder = holder
        if holder:
            who = (
                f"`{holder.get('command', '?')}` (pid {holder.get('pid', '?')} on"
                f" {holder.get('host', '?')} since {holder.get('started_at', '?')})"
            )
        else:
            who = "another process"
        super().__init__(f"the archive {root} is in use by {who}; wait for it to finish")


class ArchiveLock:
    """Exclusive use of an archive for one command; a context manager.

    Creates the archive directory (mode 0700) if needed. Raises ArchiveLocked
    at once, without waiting, if another process holds the lock.
    """

    def __init__(self, root: Path, command: str) -> None:
        self.root = Path(root)
        self.command = command
        self.path = self.root / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError("the archive lock is already held by this object")
        if not self.root.exists():
            self.root.mkdir(parents=True, mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ArchiveLocked(self.root, holder) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            holder = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": self.command,
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
        except BaseException:
            os.close(fd)  # closing releases the lock
            raise
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no stale holder details once released
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> ArchiveLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, Any] | None:
    """The holder's details from the lock file; None if unreadable (e.g. being written)."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
        holder = json.loads(text)
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None
