"""An archive directory: its blobs and its index, opened together."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from imapsync_decl.store.blobs import BlobStore
from imapsync_decl.store.fs import fsync_dir
from imapsync_decl.store.index import Index
from imapsync_decl.store.lock import ArchiveLock

INDEX_NAME = "index.sqlite"
ROOT_MODE = 0o700


class Archive:
    """``root/blobs/`` (a BlobStore) and ``root/index.sqlite`` (an Index).

    Opening does not lock; writers take ``lock(command)`` first.
    """

    def __init__(self, root: Path, blobs: BlobStore, index: Index) -> None:
        """Use ``Archive.open``."""
        self.root = root
        self.blobs = blobs
        self.index = index

    @classmethod
    def open(cls, root: Path) -> Archive:
        """Open the archive at ``root``, creating the directory (mode 0700) and index if new."""
        root = Path(root)
        if not root.is_dir():
            root.mkdir(parents=True, mode=ROOT_MODE, exist_ok=True)
            os.chmod(root, ROOT_MODE)
            fsync_dir(root.parent)
        index = Index.open(root / INDEX_NAME)
        return cls(root, BlobStore(root), index)

    def lock(self, command: str) -> ArchiveLock:
        """The archive lock for ``command`` (use it as a context manager)."""
        return ArchiveLock(self.root, command)

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
