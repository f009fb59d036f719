"""The archive store: content-addressed blobs, the SQLite index and its journal, search, verify.

Write order, which keeps the archive consistent after a crash at any point:
the blob is durably on disk, then the batch's journal records are durable, then
the index rows are committed in one transaction, then the folder checkpoint is
set. The index never names a blob that is not on disk, and the journal holds
every placement the index holds (``rebuild-index`` restores the index from it);
a crash leaves at worst an orphan blob, which ``verify`` reports as information
and the next put of the same content reuses.

The layers above use the store through the protocols of ``interfaces.py`` (the
operations, not SQL or paths). The store imports nothing but the base modules
(errors, secrets, log, fs) and its own.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imapsync_decl.store.archive import Archive
    from imapsync_decl.store.blobs import (
        BlobDamaged,
        BlobError,
        BlobInfo,
        BlobMissing,
        BlobStore,
        InvalidBlobName,
        check_hash,
    )
    from imapsync_decl.store.index import (
        MIGRATIONS,
        ArchivedMessage,
        ArchiveIndexError,
        Checkpoint,
        Index,
        IndexCorrupt,
        IndexTooNew,
        PlacementConflict,
        PlacementRow,
        Recorded,
        UserRecord,
    )
    from imapsync_decl.store.interfaces import (
        ArchiveStorage,
        BlobStorage,
        IndexReader,
        MessageIndex,
    )
    from imapsync_decl.store.journal import Journal
    from imapsync_decl.store.lock import ArchiveLock, ArchiveLocked
    from imapsync_decl.store.verify import (
        RepairOutcome,
        VerifyReport,
        remove_damaged_orphans,
        repair_outcome,
    )

# Imported on first use (PEP 562): a command that needs one module of the store, such as
# `archive search`, does not pay for the others (zstandard, the journal, verify).
_EXPORTS = {
    "Archive": "imapsync_decl.store.archive",
    "ArchiveIndexError": "imapsync_decl.store.index",
    "ArchiveLock": "imapsync_decl.store.lock",
    "ArchiveLocked": "imapsync_decl.store.lock",
    "ArchiveStorage": "imapsync_decl.store.interfaces",
    "ArchivedMessage": "imapsync_decl.store.index",
    "BlobDamaged": "imapsync_decl.store.blobs",
    "BlobError": "imapsync_decl.store.blobs",
    "BlobInfo": "imapsync_decl.store.blobs",
    "BlobMissing": "imapsync_decl.store.blobs",
    "BlobStorage": "imapsync_decl.store.interfaces",
    "BlobStore": "imapsync_decl.store.blobs",
    "Checkpoint": "imapsync_decl.store.index",
    "Index": "imapsync_decl.store.index",
    "IndexCorrupt": "imapsync_decl.store.index",
    "IndexReader": "imapsync_decl.store.interfaces",
    "IndexTooNew": "imapsync_decl.store.index",
    "InvalidBlobName": "imapsync_decl.store.blobs",
    "Journal": "imapsync_decl.store.journal",
    "MIGRATIONS": "imapsync_decl.store.index",
    "MessageIndex": "imapsync_decl.store.interfaces",
    "PlacementConflict": "imapsync_decl.store.index",
    "PlacementRow": "imapsync_decl.store.index",
    "Recorded": "imapsync_decl.store.index",
    "RepairOutcome": "imapsync_decl.store.verify",
    "UserRecord": "imapsync_decl.store.index",
    "VerifyReport": "imapsync_decl.store.verify",
    "check_hash": "imapsync_decl.store.blobs",
    "remove_damaged_orphans": "imapsync_decl.store.verify",
    "repair_outcome": "imapsync_decl.store.verify",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "MIGRATIONS",
    "Archive",
    "ArchiveIndexError",
    "ArchiveLock",
    "ArchiveLocked",
    "ArchiveStorage",
    "ArchivedMessage",
    "BlobDamaged",
    "BlobError",
    "BlobInfo",
    "BlobMissing",
    "BlobStorage",
    "BlobStore",
    "Checkpoint",
    "Index",
    "IndexCorrupt",
    "IndexReader",
    "IndexTooNew",
    "InvalidBlobName",
    "Journal",
    "MessageIndex",
    "PlacementConflict",
    "PlacementRow",
    "Recorded",
    "RepairOutcome",
    "UserRecord",
    "VerifyReport",
    "check_hash",
    "remove_damaged_orphans",
    "repair_outcome",
]
