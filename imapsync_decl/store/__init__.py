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
    verify,
)

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
    "verify",
]
