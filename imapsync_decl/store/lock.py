"""One writer at a time: an exclusive lock on ``<archive>/lock``.

The lock is an ``flock`` on the file, so the kernel releases it when the holder
exits in any way, including ``kill -9``; a file left with a dead holder's details
never blocks. The holder writes who it is (pid, host, command, start time) into
the file so that a refused command can say what it is waiting for; that text is
best effort (a full disk leaves it empty), the lock is the ``flock``.

The file is opened without ``O_TRUNC`` and never through a symbolic link, and must
be a regular file of the running user that group and others cannot write: a lock
file planted by another local user is refused (exit 14), never written through.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from imapsync_decl.errors import ArchiveNotWritable, ExitCode, ImapsyncError
from imapsync_decl.fs import (
    FILE_MODE,
    UnsafePath,
    check_regular,
    make_private_dir,
    open_nofollow,
    unwritable_reason,
)

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
    at once, without waiting, if another process holds the lock, and
    ArchiveNotWritable if the directory or the lock file is not safely ours.
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
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ArchiveLocked(self.root, holder) from None
        except BaseException:
            os.close(fd)
            raise
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with contextlib.suppress(OSError):  # best effort: the flock is the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
        self._fd = fd

    def _open(self) -> int:
        """The lock file, created 0600 if new; refused unless a regular file of ours."""
        try:
            make_private_dir(self.root, what="archive directory")
            fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except UnsafePath as exc:
            raise ArchiveNotWritable(f"the archive cannot be written: {exc}") from None
        except OSError as exc:
            raise lock_error(self.path, exc) from None
        try:
            check_regular(self.path, os.fstat(fd), what="lock file")
        except UnsafePath as exc:
            os.close(fd)
            raise ArchiveNotWritable(f"the archive cannot be written: {exc}") from None
        return fd

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


def lock_error(path: Path, exc: OSError) -> ImapsyncError:
    """The error for a lock file that cannot be opened: a symlink (ELOOP), a read-only or
    full file system, no permission: the archive cannot be written (exit 14)."""
    if exc.errno == errno.ELOOP:
        reason = "the lock file is a symbolic link"
    else:
        reason = unwritable_reason(exc) or exc.strerror or str(exc)
    where = exc.filename or path  # the archive directory, when it cannot be made
    return ArchiveNotWritable(f"the archive cannot be written: {where}: {reason}")


def _read_holder(fd: int) -> dict[str, Any] | None:
    """The holder's details from the lock file; None if unreadable (e.g. being written)."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
        holder = json.loads(text)
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None
