"""An archive directory: its blobs and its index, opened together, for writing or reading.

Opening for writing (``apply``, ``users sync``, the daemon) is where the archive's
ownership rules hold: the directory, ``blobs/`` and the index must belong to the
running user and must not be writable by group or others, or the command stops
with exit 14 naming the path and what is wrong. Opening for reading (``verify``,
``stats``, ``runs``, ``plan``, ``export``) accepts a readable archive of any owner,
and one on a read-only file system. :func:`writing` turns a full or read-only file
system met while writing into the same exit 14, naming the archive.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from imapsync_decl.errors import ArchiveNotWritable, UsageError
from imapsync_decl.fs import (
    UnsafePath,
    check_private_dir,
    is_writable,
    make_private_dir,
    unwritable_reason,
)
from imapsync_decl.store.blobs import BlobStore
from imapsync_decl.store.index import Index
from imapsync_decl.store.lock import ArchiveLock

INDEX_NAME = "index.sqlite"
BLOBS_NAME = "blobs"
ROOT_MODE = 0o700


class Archive:
    """``root/blobs/`` (a BlobStore) and ``root/index.sqlite`` (an Index).

    Opening does not lock; writers open it with :func:`open_for_writing`, which takes
    the archive's lock first.
    """

    def __init__(self, root: Path, blobs: BlobStore, index: Index) -> None:
        """Use ``Archive.open``."""
        self.root = root
        self.blobs = blobs
        self.index = index

    @classmethod
    def open(cls, root: Path, *, read_only: bool = False) -> Archive:
        """Open the archive at ``root``.

        For writing: creates the directory (mode 0700) and the index if new, and checks
        the directory, ``blobs/`` and the index are the running user's and private
        (ArchiveNotWritable, exit 14, otherwise; also when the directory is read-only).
        ``read_only``: the archive must exist; nothing is created or changed.
        """
        root = Path(root)
        check_archive_path(root)
        if read_only:
            return cls(root, BlobStore(root), Index.open(root / INDEX_NAME, read_only=True))
        with writing(root):
            try:
                make_private_dir(root, what="archive directory")
                if os.path.lexists(root / BLOBS_NAME):
                    check_private_dir(root / BLOBS_NAME, what="blob directory")
            except UnsafePath as exc:
                raise ArchiveNotWritable(f"the archive cannot be written: {exc}") from None
            if not is_writable(root):
                raise ArchiveNotWritable(
                    f"the archive cannot be written: {root}: the directory is read-only"
                )
            index = Index.open(root / INDEX_NAME)
        return cls(root, BlobStore(root), index)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextmanager
def open_for_writing(root: Path, command: str) -> Iterator[Archive]:
    """The archive at ``root``, locked for ``command`` and open for writing, for the body
    of the ``with``; a full or read-only file system inside is exit 14 (:func:`writing`)."""
    root = Path(root)
    check_archive_path(root)
    with writing(root), ArchiveLock(root, command), Archive.open(root) as archive:
        yield archive


def check_archive_path(root: Path) -> None:
    """Refuse an archive path that exists and is not a directory (exit 10, naming it)."""
    problem = archive_path_problem(root)
    if problem is not None:
        raise UsageError(problem)


def archive_path_problem(root: Path) -> str | None:
    """What is wrong with ``root`` as an archive path (it, or a parent of it, exists and is
    not a directory), or None. Also what `validate` reports at the Archive document."""
    if os.path.lexists(root) and not root.is_dir():
        return f"the archive path {root} exists and is not a directory"
    for parent in root.parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                return f"the archive path {root} goes through {parent}, which is not a directory"
            break
    return None


@contextmanager
def writing(root: Path) -> Iterator[None]:
    """Writes to the archive at ``root`` inside: a full disk or a read-only file system
    (OSError or SQLite's report of it), or a permission refused, becomes
    ArchiveNotWritable naming the archive (or the file)."""
    try:
        yield
    except PermissionError as exc:
        where = exc.filename or root
        raise ArchiveNotWritable(
            f"the archive cannot be written: {where}: permission denied"
        ) from None
    except Exception as exc:
        reason = unwritable_reason(exc)
        if reason is None:
            raise
        raise ArchiveNotWritable(f"the archive {root} cannot be written: {reason}") from None
