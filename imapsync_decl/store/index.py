"""The archive index: opening it, and the ``Index`` that holds its operations together.

An SQLite database (``index.sqlite`` beside ``blobs/``) in WAL mode with
``synchronous=FULL``: a committed transaction survives a crash of the process
and of the machine. Rows refer to blobs by SHA-256; a blob is always written
(and synced) before the rows that name it, so the index never names a blob that
is not on disk.

Every change is also appended to the archive's journal (``store/journal.py``),
written and synced just before the transaction that makes it commits
(``atomic``), so the journal holds every placement the index holds and
``replay`` can rebuild the index from it. A damaged database file is an
``IndexCorrupt`` (exit 12) that says to run ``archive rebuild-index``.

``Index`` is one object over one connection; its operations live with the tables
they work on: the transactions and the journal (``store/connection.py``), the
schema and its migrations (``store/schema.py``), users, mailboxes, folders and
checkpoints (``store/mailboxes.py``), placements (``store/placements.py``), runs
(``store/runlog.py``), the jobs of a run (``store/jobs.py``), counts and sums
(``store/totals.py``), snapshot and replay (``store/replay.py``). This module opens the database file safely, for writing or
only for reading, and upgrades it.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
import uuid
from pathlib import Path

from imapsync_decl.errors import ArchiveNotWritable
from imapsync_decl.fs import (
    UnsafePath,
    check_private_dir,
    check_private_file,
    ensure_private_file,
    is_writable,
)
from imapsync_decl.store.connection import (
    BUSY_TIMEOUT_SECONDS,
    ArchiveIndexError,
    IndexCorrupt,
    IndexTooNew,
    PlacementConflict,
    configure,
)
from imapsync_decl.store.jobs import JobQueue
from imapsync_decl.store.journal import JOURNAL_NAME, Journal
from imapsync_decl.store.replay import JournalReplay
from imapsync_decl.store.restoring import RestoreLookup
from imapsync_decl.store.rows import (
    ArchivedMessage,
    Checkpoint,
    PlacementRow,
    Recorded,
    UserRecord,
    tree_folder,
)
from imapsync_decl.store.runlog import RunLog
from imapsync_decl.store.schema import MIGRATIONS, Migrations
from imapsync_decl.store.totals import ArchiveTotals

__all__ = [
    "MIGRATIONS",
    "ArchiveIndexError",
    "ArchivedMessage",
    "Checkpoint",
    "Index",
    "IndexCorrupt",
    "IndexTooNew",
    "PlacementConflict",
    "PlacementRow",
    "Recorded",
    "UserRecord",
    "default_journal_dir",
    "tree_folder",
]

DB_MODE = 0o600


class Index(JournalReplay, RunLog, JobQueue, ArchiveTotals, RestoreLookup, Migrations):
    """The archive's SQLite index. Safe to share between threads (one connection, locked)."""

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        journal_dir: Path | None = None,
        journaling: bool = True,
        read_only: bool = False,
    ) -> Index:
        """Open (creating and upgrading as needed) the index database at ``path``.

        Its journal is ``journal_dir`` (default: ``journal/`` beside ``index.sqlite``,
        else ``<name>.journal``). ``journaling=False`` (only for a rebuild from the
        journal) writes nothing to it. A damaged database, or an empty one beside a
        journal with records (the index was lost), is an ``IndexCorrupt``.

        For writing (the default) the database and its ``-wal`` / ``-shm`` files must be
        regular files of the running user that group and others cannot write
        (ArchiveNotWritable otherwise); a new database is created 0600, never through a
        symlink. ``read_only``: the database is only read, and may be another user's or
        on a read-only file system; then it is opened by an SQLite read-only connection,
        which creates no file (see ``_read_only_uri``). Our own writable index is opened
        as for writing (a read-only connection would leave -wal / -shm files behind), but
        writes no journal snapshot.
        """
        path = Path(path)
        if journal_dir is None:
            journal_dir = default_journal_dir(path)
        journal = Journal(journal_dir) if journaling else None
        if journal is not None and journal.exists() and not _has_content(path):
            raise IndexCorrupt(path, "the index is missing or empty, but the journal is not")
        if read_only and not _ours_and_writable(path):
            return cls._open_read_only(path)
        _check_index_files(path)
        ensure_private_file(path, DB_MODE)
        connection = sqlite3.connect(
            str(path),
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,  # transactions are explicit: see atomic()
            check_same_thread=False,
        )
        index = cls(connection, path, journal)
        try:
            with index._guarded():
                configure(connection)
                index._migrate()
                known = index._one("SELECT value FROM meta WHERE key = 'archive_id'")
                if read_only and known is not None:  # nothing written: a full disk still reads
                    index._archive_id = str(known[0])
                else:
                    index._archive_id = index._ensure_archive_id()
                if journal is not None and not read_only:
                    index._ensure_journal()
        except BaseException:
            index.close()
            raise
        return index

    @classmethod
    def _open_read_only(cls, path: Path) -> Index:
        """The index through a read-only SQLite connection; no migration, no writes."""
        connection = sqlite3.connect(
            _read_only_uri(path),
            uri=True,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
        index = cls(connection, path)
        try:
            with index._guarded():
                connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000):d}")
                version = index.schema_version
                target = len(MIGRATIONS)
                if version > target:
                    raise IndexTooNew(
                        f"the archive index {path} has schema version {version}, newer"
                        f" than this version of imapsync-decl knows ({target}); upgrade it"
                    )
                if version < target:
                    raise ArchiveNotWritable(
                        f"the archive index {path} has schema version {version}, older than"
                        f" this version of imapsync-decl ({target}), and cannot be upgraded"
                        " here: it is read-only or not the running user's; run `apply` as its"
                        " owner first"
                    )
                row = index._one("SELECT value FROM meta WHERE key = 'archive_id'")
                index._archive_id = str(row[0]) if row is not None else ""
        except BaseException:
            index.close()
            raise
        return index

    def _ensure_archive_id(self) -> str:
        with self.atomic() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('archive_id', ?)"
                " ON CONFLICT (key) DO NOTHING",
                (str(uuid.uuid4()),),
            )
            row = db.execute("SELECT value FROM meta WHERE key = 'archive_id'").fetchone()
            return str(row[0])


def default_journal_dir(path: Path) -> Path:
    """``journal/`` beside ``index.sqlite``; ``<name>.journal`` beside any other name."""
    return (
        path.parent / JOURNAL_NAME if path.name == "index.sqlite" else path.with_suffix(".journal")
    )


def _has_content(path: Path) -> bool:
    """Whether the database file (or its write-ahead log) holds anything."""
    for candidate in (path, path.with_name(path.name + "-wal")):
        try:
            if candidate.stat().st_size > 0:
                return True
        except FileNotFoundError:
            continue
    return False


def _check_index_files(path: Path) -> None:
    """Refuse an index (or its -wal / -shm file) that is a symlink, not a regular file,
    of another owner, or writable by group or others: ArchiveNotWritable (exit 14)."""
    try:
        for suffix, what in (("", "index"), ("-wal", "index WAL"), ("-shm", "index WAL index")):
            check_private_file(path.with_name(path.name + suffix), what=what)
    except UnsafePath as exc:
        raise ArchiveNotWritable(f"the archive cannot be written: {exc}") from None


def _ours_and_writable(path: Path) -> bool:
    """Whether the index and its directory are the running user's, private, and writable
    (then reading it through a normal connection changes nothing another user sees)."""
    try:
        _check_index_files(path)
        check_private_dir(path.parent, what="archive directory")
    except (ArchiveNotWritable, UnsafePath):
        return False
    return is_writable(path.parent) and is_writable(path)


def _read_only_uri(path: Path) -> str:
    """An SQLite URI that opens ``path`` (not ours, or not writable) read-only.

    ``immutable=1`` (no locks, no -shm, no file created) when there is no ``-wal`` or
    ``-shm`` file: nobody has the database open for writing (a writer keeps both while
    it has it open). Otherwise ``mode=ro``, which uses the writer's -wal and -shm and
    sees its commits (and a WAL left by a crash, which an immutable connection would
    not see).
    """
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro"
    if not any(os.path.lexists(f"{path}{suffix}") for suffix in ("-wal", "-shm")):
        uri += "&immutable=1"
    return uri
