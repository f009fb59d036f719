"""Safe file-system primitives: the one atomic write, directory syncs, and ownership checks.

Every file the project writes (blobs, exports, plan files, logs, the index) goes through
these helpers so that the same rules hold everywhere:

* new files are created exclusively (``O_EXCL``), never through a symbolic link
  (``O_NOFOLLOW``), mode 0600 unless said otherwise;
* a file that replaces another is written under a temporary name in the target's
  directory, synced, renamed over the target, and the directory is synced
  (:class:`AtomicFile`, :func:`atomic_write`): a crash leaves the old file or the new
  one, never a mix;
* a directory that receives private data must belong to the running user and must not
  be writable by group or others (:func:`check_private_dir`): a directory pre-created
  by another local user is refused, not used; so is a file of ours in it that another
  user could have replaced or can write (:func:`check_private_file`);
* a failure that means the file system cannot take writes at all (full, read-only)
  is recognised in one place (:func:`unwritable_reason`), so that callers stop the
  whole run for it instead of blaming one mailbox.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import sqlite3
import stat
from pathlib import Path
from types import TracebackType

FILE_MODE = 0o600
DIR_MODE = 0o700
TEMP_PREFIX = ".imapsync-decl-tmp-"

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(Exception):
    """A path the project refuses to write through; ``reason`` says why, for the message."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` (new names, renames) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def create_exclusive(path: Path, mode: int = FILE_MODE) -> int:
    """Create ``path`` as a new file and open it for writing; never through a symlink."""
    return os.open(path, _CREATE_FLAGS, mode)


def ensure_private_file(path: Path, mode: int = FILE_MODE) -> None:
    """Create ``path`` empty with exactly ``mode`` (whatever the umask) if it does not
    exist yet; never through a symlink. An existing file is left as it is."""
    try:
        fd = create_exclusive(path, mode)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def open_nofollow(path: Path, flags: int = os.O_RDONLY, mode: int = FILE_MODE) -> int:
    """``os.open`` that refuses a symbolic link as the last component (ELOOP)."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


class AtomicFile:
    """A new file at ``target``: written under a temporary name in ``directory``
    (default: the target's directory; mode ``mode``, created exclusively, never through
    a symlink), synced, then renamed over ``target``; with ``sync_dir`` the directory is
    synced too. On an exception the temporary file is removed and ``target`` is left as
    it was."""

    def __init__(
        self,
        target: Path,
        *,
        directory: Path | None = None,
        mode: int = FILE_MODE,
        mtime: float | None = None,
        sync_dir: bool = False,
    ) -> None:
        self.target = target
        self.directory = directory if directory is not None else target.parent
        self.mode = mode
        self.mtime = mtime
        self.sync_dir = sync_dir
        self._fd = -1
        self._temp = self.directory

    def __enter__(self) -> AtomicFile:
        while True:
            self._temp = self.directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
            try:
                self._fd = create_exclusive(self._temp, self.mode)
            except FileExistsError:
                continue
            if self.mode != FILE_MODE:  # exactly as asked, whatever the umask (0644 metrics)
                os.fchmod(self._fd, self.mode)
            return self

    def write(self, data: bytes | memoryview) -> None:
        write_all(self._fd, data)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        complete = exc is None
        try:
            if complete:
                os.fsync(self._fd)
                if self.mtime is not None:
                    os.utime(self._fd, (self.mtime, self.mtime))
        except BaseException:
            complete = False
            raise
        finally:
            os.close(self._fd)
            if not complete:
                with contextlib.suppress(OSError):
                    os.unlink(self._temp)
        if not complete:
            return
        try:
            os.replace(self._temp, self.target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(self._temp)
            raise
        if self.sync_dir:
            fsync_dir(self.target.parent)


def atomic_write(path: Path, data: bytes, *, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` atomically and durably (file and directory synced)."""
    with AtomicFile(path, mode=mode, sync_dir=True) as out:
        out.write(data)


def check_private_dir(path: Path, *, what: str = "directory") -> None:
    """Refuse ``path`` unless it is a real directory (not a symlink) owned by the running
    user and not writable by group or others. Raises :class:`UnsafePath`."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise UnsafePath(path, f"the {what} does not exist") from None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePath(path, f"the {what} is a symbolic link")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePath(path, f"the {what} is not a directory")
    check_owner_and_mode(path, info, what=what)


def check_private_file(path: Path, *, what: str = "file") -> bool:
    """Refuse ``path`` if it exists and is not a regular file (a symlink, a directory, a
    device) owned by the running user and not writable by group or others.

    False when it does not exist (the caller creates it). Raises :class:`UnsafePath`."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    check_regular(path, info, what=what)
    return True


def check_regular(path: Path, info: os.stat_result, *, what: str) -> None:
    """Refuse what ``info`` (an ``lstat`` or ``fstat``) describes unless it is a regular
    file of ours that group and others cannot write."""
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePath(path, f"the {what} is a symbolic link")
    if not stat.S_ISREG(info.st_mode):
        raise UnsafePath(path, f"the {what} is not a regular file")
    check_owner_and_mode(path, info, what=what)


def check_output_path(path: Path) -> None:
    """Refuse an output file path given by the user before anything is done: its
    directory must exist and be a directory, and it must not be a directory itself.
    Raises :class:`UnsafePath`."""
    parent = path.parent
    if not parent.exists():
        raise UnsafePath(path, f"the directory {parent} does not exist")
    if not parent.is_dir():
        raise UnsafePath(path, f"{parent} is not a directory")
    if path.is_dir():
        raise UnsafePath(path, "it is a directory")


def make_private_dir(path: Path, *, what: str = "directory") -> None:
    """Create ``path`` (and missing parents) mode 0700 whatever the umask, make the new
    entry durable, then check it as :func:`check_private_dir` does."""
    if not os.path.lexists(path):
        missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
        path.mkdir(parents=True, mode=DIR_MODE, exist_ok=True)
        for created in missing:
            with contextlib.suppress(OSError):
                os.chmod(created, DIR_MODE, follow_symlinks=False)
        fsync_dir(missing[-1].parent)
    check_private_dir(path, what=what)


def is_writable(path: Path) -> bool:
    """Whether the running user may create or change files at ``path`` (a directory or a
    file): False on a read-only mount, or where the permissions forbid it."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return False
    except OSError:
        return False
    return os.access(path, os.W_OK)


_NO_SPACE = "no space left on device"
_READ_ONLY = "the file system is read-only"
_UNWRITABLE_ERRNOS = {
    errno.ENOSPC: _NO_SPACE,
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: _READ_ONLY,
}


def unwritable_reason(exc: BaseException) -> str | None:
    """Why ``exc`` means the file system takes no more writes (full disk, exhausted
    quota, read-only mount), or None when it is some other failure.

    Recognises ``OSError`` by errno and SQLite's own reports of the same conditions.
    """
    if isinstance(exc, OSError):
        return _UNWRITABLE_ERRNOS.get(exc.errno or 0)
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        text = str(exc).lower()
        if code == sqlite3.SQLITE_FULL or "database or disk is full" in text:
            return _NO_SPACE
        if code is not None and code & 0xFF == sqlite3.SQLITE_READONLY:
            return "the index is read-only"
        if "readonly database" in text:
            return "the index is read-only"
    return None


def check_owner_and_mode(path: Path, info: os.stat_result, *, what: str) -> None:
    """Refuse a file or directory of another owner, or one writable by group or others."""
    if info.st_uid != os.geteuid():
        raise UnsafePath(path, f"the {what} belongs to uid {info.st_uid}, not to the running user")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePath(
            path, f"the {what} is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
        )
