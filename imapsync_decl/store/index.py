"""The archive index: which messages are archived, where they were, and up to where.

An SQLite database (``index.sqlite`` beside ``blobs/``) in WAL mode with
``synchronous=FULL``: a committed transaction survives a crash of the process
and of the machine. Rows refer to blobs by SHA-256; a blob is always written
(and synced) before the rows that name it, so the index never names a blob that
is not on disk.

Tables:

* ``users``, ``mailboxes`` (one per archive folder of a user), ``folders``
  (one per IMAP folder of a mailbox, with its *checkpoint*: the UIDVALIDITY,
  UIDNEXT and message count up to which the folder is completely archived,
  NULL until the first complete pass).
* ``messages``: one row per blob (per distinct content), with a few header
  values for listing.
* ``placements``: one row per copy of a message in a folder, keyed by
  (folder, UIDVALIDITY, UID). The same message in two folders is one
  ``messages`` row and two placements.
* ``runs``: one row per command run, with a JSON summary.
* ``meta``: key/value pairs, among them the ``archive_id`` (a UUID).

Stored representations: timestamps are ISO 8601 text with a UTC offset
(``2024-05-01T12:00:00+00:00``); a naive ``datetime`` is taken as local time.
Flags are a JSON list of strings, in the order given. Run summaries are JSON
objects.

The schema is created and upgraded by ``MIGRATIONS``, applied in order and
tracked by ``PRAGMA user_version``; a database newer than this code is refused.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from imapsync_decl.errors import ArchiveNotWritable, ExitCode, ImapsyncError
from imapsync_decl.message import MessageHeaders
from imapsync_decl.store.blobs import BlobInfo
from imapsync_decl.store.fs import (
    UnsafePath,
    check_private_dir,
    check_private_file,
    create_exclusive,
    is_writable,
)

DB_MODE = 0o600
BUSY_TIMEOUT_SECONDS = 30.0
PAGE_SIZE = 1000
_IN_CHUNK = 500  # host parameters per IN (...) query

MIGRATIONS: list[str] = [
    # 1: the initial schema.
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );

    CREATE TABLE users (
        id           INTEGER PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        email        TEXT,
        display_name TEXT,
        created_at   TEXT NOT NULL
    );

    CREATE TABLE mailboxes (
        id             INTEGER PRIMARY KEY,
        user_id        INTEGER NOT NULL REFERENCES users (id),
        archive_folder TEXT NOT NULL,
        login          TEXT NOT NULL,
        profile        TEXT NOT NULL,
        UNIQUE (user_id, archive_folder)
    );

    CREATE TABLE folders (
        id            INTEGER PRIMARY KEY,
        mailbox_id    INTEGER NOT NULL REFERENCES mailboxes (id),
        path          TEXT NOT NULL,
        uidvalidity   INTEGER CHECK (uidvalidity BETWEEN 1 AND 4294967295),
        uidnext       INTEGER CHECK (uidnext BETWEEN 1 AND 4294967296),
        message_count INTEGER CHECK (message_count >= 0),
        checked_at    TEXT,
        UNIQUE (mailbox_id, path),
        CHECK ((uidvalidity IS NULL) = (uidnext IS NULL)
               AND (uidvalidity IS NULL) = (message_count IS NULL))
    );

    CREATE TABLE messages (
        sha256            TEXT PRIMARY KEY
                          CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
        size              INTEGER NOT NULL CHECK (size >= 0),
        stored_size       INTEGER NOT NULL CHECK (stored_size >= 0),
        message_id        TEXT,
        date              TEXT,
        from_addr         TEXT,
        to_addr           TEXT,
        subject           TEXT,
        first_archived_at TEXT NOT NULL
    );

    CREATE TABLE runs (
        id          TEXT PRIMARY KEY,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        status      TEXT NOT NULL,
        command     TEXT NOT NULL,
        summary     TEXT
    );

    CREATE TABLE placements (
        id            INTEGER PRIMARY KEY,
        folder_id     INTEGER NOT NULL REFERENCES folders (id),
        uidvalidity   INTEGER NOT NULL CHECK (uidvalidity BETWEEN 1 AND 4294967295),
        uid           INTEGER NOT NULL CHECK (uid BETWEEN 1 AND 4294967295),
        sha256        TEXT NOT NULL REFERENCES messages (sha256),
        internal_date TEXT,
        flags         TEXT NOT NULL DEFAULT '[]',
        archived_at   TEXT NOT NULL,
        run_id        TEXT,
        UNIQUE (folder_id, uidvalidity, uid)
    );

    CREATE INDEX placements_sha256 ON placements (sha256);
    CREATE INDEX mailboxes_user ON mailboxes (user_id);
    CREATE INDEX runs_started ON runs (started_at);
    """,
    # 2: the user list: where each user comes from, and whether it is still there.
    """
    ALTER TABLE users ADD COLUMN source TEXT NOT NULL DEFAULT 'document'
        CHECK (source IN ('document', 'directory', 'csv', 'single'));
    ALTER TABLE users ADD COLUMN status TEXT NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'gone'));
    ALTER TABLE users ADD COLUMN aliases TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE users ADD COLUMN directory TEXT;
    ALTER TABLE users ADD COLUMN updated_at TEXT;
    """,
    # 3: the condition of a folder's checkpoint under message filters.
    """
    ALTER TABLE folders ADD COLUMN condition TEXT;
    """,
]


class ArchiveIndexError(ImapsyncError):
    """The index cannot be used or would become inconsistent."""

    exit_code = ExitCode.INTEGRITY


class IndexTooNew(ArchiveIndexError):
    """The database was written by a newer version with a schema this code does not know."""

    exit_code = ExitCode.CONFIG


class PlacementConflict(ArchiveIndexError):
    """A (folder, UIDVALIDITY, UID) is already archived with different content."""


@dataclass(frozen=True)
class UserRecord:
    """One user of the archive's user list, as the index keeps it."""

    name: str
    email: str | None
    display_name: str | None
    aliases: tuple[str, ...] = ()
    source: str = "directory"  # document | directory | csv | single
    status: str = "active"  # active | gone (no longer in the directory)
    directory: str | None = None  # which directory, for source directory


@dataclass(frozen=True)
class Checkpoint:
    """The server state up to which a folder is completely archived."""

    uidvalidity: int
    uidnext: int
    message_count: int
    condition: str | None = None  # what else must hold (filters, day, HIGHESTMODSEQ)


@dataclass(frozen=True)
class ArchivedMessage:
    """One message whose blob is stored, ready to be recorded in a folder."""

    uid: int
    blob: BlobInfo
    internal_date: datetime | None
    flags: tuple[str, ...]
    headers: MessageHeaders


@dataclass(frozen=True)
class PlacementRow:
    """One copy of a message in a folder, with where it belongs."""

    user: str
    archive_folder: str
    folder: str
    uidvalidity: int
    uid: int
    sha256: str
    size: int
    internal_date: datetime | None
    flags: tuple[str, ...]


class Index:
    """The archive's SQLite index. Safe to share between threads (one connection, locked)."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        """Use ``Index.open``."""
        self.path = path
        self._db = connection
        self._lock = threading.RLock()
        self._depth = 0
        self._archive_id = ""

    # -- opening -----------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> Index:
        """Open (creating and upgrading as needed) the index database at ``path``.

        For writing (the default) the database and its ``-wal`` / ``-shm`` files must be
        regular files of the running user that group and others cannot write
        (ArchiveNotWritable otherwise); a new database is created 0600, never through a
        symlink. ``read_only``: the database is only read, and may be another user's or
        on a read-only file system; then it is opened by an SQLite read-only connection,
        which creates no file (see ``_read_only_uri``). Our own writable index is opened
        as for writing (a read-only connection would leave -wal / -shm files behind).
        """
        path = Path(path)
        if read_only and not _ours_and_writable(path):
            return cls._open_read_only(path)
        _check_index_files(path)
        _create_private(path)
        connection = sqlite3.connect(
            str(path),
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,  # transactions are explicit: see atomic()
            check_same_thread=False,
        )
        try:
            _configure(connection)
            index = cls(connection, path)
            index._migrate()
            known = index._one("SELECT value FROM meta WHERE key = 'archive_id'")
            if read_only and known is not None:  # nothing written: a full disk still reads
                index._archive_id = str(known[0])
            else:
                index._archive_id = index._ensure_archive_id()
        except BaseException:
            connection.close()
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
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000):d}")
            index = cls(connection, path)
            version = index.schema_version
            target = len(MIGRATIONS)
            if version > target:
                raise IndexTooNew(
                    f"the archive index {path} has schema version {version}, newer"
                    f" than this version of imapsync-decl knows ({target}); upgrade it"
                )
            if version < target:
                raise ArchiveNotWritable(
                    f"the archive index {path} has schema version {version}, older than this"
                    f" version of imapsync-decl ({target}), and cannot be upgraded here: it is"
                    " read-only or not the running user's; run `apply` as its owner first"
                )
            row = index._one("SELECT value FROM meta WHERE key = 'archive_id'")
            index._archive_id = str(row[0]) if row is not None else ""
        except BaseException:
            connection.close()
            raise
        return index

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def archive_id(self) -> str:
        """The UUID of this archive, made when the index was created."""
        return self._archive_id

    @property
    def schema_version(self) -> int:
        return int(self._one("PRAGMA user_version")[0])

    def settings(self) -> dict[str, Any]:
        """The connection's journal_mode, synchronous and foreign_keys settings."""
        return {
            "journal_mode": self._one("PRAGMA journal_mode")[0],
            "synchronous": self._one("PRAGMA synchronous")[0],
            "foreign_keys": self._one("PRAGMA foreign_keys")[0],
        }

    # -- transactions ------------------------------------------------------

    @contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """One transaction: committed at the end, rolled back on any exception.

        A nested ``atomic()`` joins the outer transaction (as a savepoint: an
        exception inside it undoes only its own work, then propagates; the
        outer transaction commits or rolls back everything).
        """
        with self._lock:
            if self._depth:
                name = f"nested_{self._depth}"
                self._db.execute(f"SAVEPOINT {name}")
                self._depth += 1
                try:
                    yield self._db
                except BaseException:
                    if self._db.in_transaction:  # SQLite may have rolled back everything
                        self._db.execute(f"ROLLBACK TO {name}")
                        self._db.execute(f"RELEASE {name}")
                    raise
                else:
                    self._db.execute(f"RELEASE {name}")
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0

    # -- users, mailboxes, folders -----------------------------------------

    def ensure_user(
        self,
        name: str,
        email: str | None = None,
        display_name: str | None = None,
        *,
        source: str = "document",
    ) -> int:
        """The id of user ``name``, created if new (with ``source``); a given email or
        display name is updated. A user's source never changes once recorded."""
        with self.atomic() as db:
            db.execute(
                "INSERT INTO users (name, email, display_name, created_at, source)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET"
                " email = coalesce(excluded.email, email),"
                " display_name = coalesce(excluded.display_name, display_name)",
                (name, email, display_name, _now(), source),
            )
            return int(db.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()[0])

    def sync_directory_users(
        self, directory: str, users: Sequence[UserRecord]
    ) -> dict[str, list[str]]:
        """Make the users of ``directory`` in the index what the directory says, in one
        transaction: add the new ones, update the changed ones, mark the ones that are no
        longer there as gone (never removing anything archived). Returns the user names
        per change: ``added``, ``updated``, ``gone``, ``returned``."""
        changes: dict[str, list[str]] = {"added": [], "updated": [], "gone": [], "returned": []}
        seen: set[str] = set()
        now = _now()
        with self.atomic() as db:
            for user in users:
                seen.add(user.name)
                aliases = json.dumps(list(user.aliases))
                row = db.execute(
                    "SELECT email, display_name, aliases, status, source FROM users WHERE name = ?",
                    (user.name,),
                ).fetchone()
                if row is None:
                    db.execute(
                        "INSERT INTO users (name, email, display_name, aliases, source, status,"
                        " directory, created_at, updated_at)"
                        " VALUES (?, ?, ?, ?, 'directory', 'active', ?, ?, ?)",
                        (user.name, user.email, user.display_name, aliases, directory, now, now),
                    )
                    changes["added"].append(user.name)
                    continue
                if row[4] != "directory":
                    continue  # a user of a Users document or a CSV profile: theirs to describe
                if row[3] == "gone":
                    changes["returned"].append(user.name)
                elif (row[0], row[1], row[2]) != (user.email, user.display_name, aliases):
                    changes["updated"].append(user.name)
                else:
                    continue
                db.execute(
                    "UPDATE users SET email = ?, display_name = ?, aliases = ?, status = 'active',"
                    " directory = ?, updated_at = ? WHERE name = ?",
                    (user.email, user.display_name, aliases, directory, now, user.name),
                )
            for (name,) in db.execute(
                "SELECT name FROM users WHERE source = 'directory' AND directory = ?"
                " AND status = 'active' ORDER BY name",
                (directory,),
            ).fetchall():
                if name not in seen:
                    db.execute(
                        "UPDATE users SET status = 'gone', updated_at = ? WHERE name = ?",
                        (now, name),
                    )
                    changes["gone"].append(name)
        return changes

    def list_users(self, source: str | None = None) -> list[UserRecord]:
        """The archive's user list as the index keeps it, by name."""
        rows = self._all(
            "SELECT name, email, display_name, aliases, source, status, directory FROM users"
            " WHERE ? IS NULL OR source = ? ORDER BY name",
            (source, source),
        )
        return [
            UserRecord(
                name=r[0],
                email=r[1],
                display_name=r[2],
                aliases=tuple(json.loads(r[3])),
                source=r[4],
                status=r[5],
                directory=r[6],
            )
            for r in rows
        ]

    def ensure_mailbox(self, user_id: int, archive_folder: str, login: str, profile: str) -> int:
        """The id of a user's mailbox (by archive folder); login and profile are kept current."""
        with self.atomic() as db:
            db.execute(
                "INSERT INTO mailboxes (user_id, archive_folder, login, profile) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (user_id, archive_folder) DO UPDATE SET"
                " login = excluded.login, profile = excluded.profile",
                (user_id, archive_folder, login, profile),
            )
            row = db.execute(
                "SELECT id FROM mailboxes WHERE user_id = ? AND archive_folder = ?",
                (user_id, archive_folder),
            ).fetchone()
            return int(row[0])

    def ensure_folder(self, mailbox_id: int, path: str) -> int:
        """The id of a folder of a mailbox, created if new."""
        with self.atomic() as db:
            db.execute(
                "INSERT INTO folders (mailbox_id, path) VALUES (?, ?)"
                " ON CONFLICT (mailbox_id, path) DO NOTHING",
                (mailbox_id, path),
            )
            row = db.execute(
                "SELECT id FROM folders WHERE mailbox_id = ? AND path = ?", (mailbox_id, path)
            ).fetchone()
            return int(row[0])

    def find_folder(self, user: str, archive_folder: str, path: str) -> int | None:
        row = self._one(
            "SELECT f.id FROM folders f"
            " JOIN mailboxes m ON m.id = f.mailbox_id JOIN users u ON u.id = m.user_id"
            " WHERE u.name = ? AND m.archive_folder = ? AND f.path = ?",
            (user, archive_folder, path),
        )
        return None if row is None else int(row[0])

    # -- checkpoints -------------------------------------------------------

    def checkpoint(self, folder_id: int) -> Checkpoint | None:
        """The folder's checkpoint, or None if it was never completely archived."""
        row = self._one(
            "SELECT uidvalidity, uidnext, message_count, condition FROM folders WHERE id = ?",
            (folder_id,),
        )
        if row is None:
            raise ArchiveIndexError(f"no folder with id {folder_id} in the index")
        if row[0] is None:
            return None
        return Checkpoint(int(row[0]), int(row[1]), int(row[2]), row[3])

    def set_checkpoint(
        self,
        folder_id: int,
        uidvalidity: int,
        uidnext: int,
        message_count: int,
        condition: str | None = None,
    ) -> None:
        with self.atomic() as db:
            cursor = db.execute(
                "UPDATE folders SET uidvalidity = ?, uidnext = ?, message_count = ?,"
                " condition = ?, checked_at = ? WHERE id = ?",
                (uidvalidity, uidnext, message_count, condition, _now(), folder_id),
            )
            if cursor.rowcount != 1:
                raise ArchiveIndexError(f"no folder with id {folder_id} in the index")

    # -- placements --------------------------------------------------------

    def archived_uids(self, folder_id: int, uidvalidity: int) -> set[int]:
        rows = self._all(
            "SELECT uid FROM placements WHERE folder_id = ? AND uidvalidity = ?",
            (folder_id, uidvalidity),
        )
        return {int(r[0]) for r in rows}

    def count_placements(
        self,
        folder_id: int,
        uidvalidity: int | None = None,
        exclude_uidvalidity: int | None = None,
    ) -> int:
        """How many placements a folder has (under one UIDVALIDITY, or all but one)."""
        row = self._one(
            "SELECT count(*) FROM placements WHERE folder_id = ?1"
            " AND (?2 IS NULL OR uidvalidity = ?2) AND (?3 IS NULL OR uidvalidity != ?3)",
            (folder_id, uidvalidity, exclude_uidvalidity),
        )
        return int(row[0])

    def placements_of(self, folder_id: int, uidvalidity: int) -> dict[int, str]:
        """UID -> SHA-256 of every placement of a folder under one UIDVALIDITY."""
        rows = self._all(
            "SELECT uid, sha256 FROM placements WHERE folder_id = ? AND uidvalidity = ?"
            " ORDER BY uid",
            (folder_id, uidvalidity),
        )
        return {int(r[0]): str(r[1]) for r in rows}

    def record(
        self,
        folder_id: int,
        uidvalidity: int,
        entries: Sequence[ArchivedMessage],
        run_id: str | None,
    ) -> int:
        """Record stored messages in a folder, in one transaction; return the new placements.

        A placement already recorded with the same content is left as it is; with
        other content it is a PlacementConflict (and nothing of this call is kept).
        Every entry's blob must already be durably stored.
        """
        now = _now()
        new = 0
        with self.atomic() as db:
            for entry in entries:
                h = entry.headers
                db.execute(
                    "INSERT INTO messages (sha256, size, stored_size, message_id, date,"
                    " from_addr, to_addr, subject, first_archived_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                    (
                        entry.blob.sha256,
                        entry.blob.size,
                        entry.blob.stored_size,
                        h.message_id,
                        h.date,
                        h.from_addr,
                        h.to_addr,
                        h.subject,
                        now,
                    ),
                )
                cursor = db.execute(
                    "INSERT INTO placements (folder_id, uidvalidity, uid, sha256, internal_date,"
                    " flags, archived_at, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (folder_id, uidvalidity, uid) DO NOTHING",
                    (
                        folder_id,
                        uidvalidity,
                        entry.uid,
                        entry.blob.sha256,
                        _datetime_text(entry.internal_date),
                        _flags_text(entry.flags),
                        now,
                        run_id,
                    ),
                )
                if cursor.rowcount == 1:
                    new += 1
                    continue
                existing = db.execute(
                    "SELECT sha256 FROM placements"
                    " WHERE folder_id = ? AND uidvalidity = ? AND uid = ?",
                    (folder_id, uidvalidity, entry.uid),
                ).fetchone()[0]
                if existing != entry.blob.sha256:
                    raise PlacementConflict(
                        f"folder {folder_id} UIDVALIDITY {uidvalidity} UID {entry.uid} is"
                        f" archived as {existing}, not {entry.blob.sha256}"
                    )
        return new

    def repoint(
        self,
        folder_id: int,
        old_uidvalidity: int,
        new_uidvalidity: int,
        moves: Sequence[tuple[int, int]],
        run_id: str | None,
    ) -> int:
        """Move placements to a new UIDVALIDITY after the server changed it; return the count.

        Each move is (old UID, new UID). In one transaction; blobs are not touched.
        Placements of the old UIDVALIDITY that are not moved stay. A move whose
        source is gone is skipped; a move onto a placement of the same content
        merges the two; onto other content it is a PlacementConflict.
        """
        if old_uidvalidity == new_uidvalidity:
            raise ValueError("repoint needs two different UIDVALIDITY values")
        moved = 0
        with self.atomic() as db:
            for old_uid, new_uid in moves:
                source = db.execute(
                    "SELECT id, sha256 FROM placements"
                    " WHERE folder_id = ? AND uidvalidity = ? AND uid = ?",
                    (folder_id, old_uidvalidity, old_uid),
                ).fetchone()
                if source is None:
                    continue
                target = db.execute(
                    "SELECT sha256 FROM placements"
                    " WHERE folder_id = ? AND uidvalidity = ? AND uid = ?",
                    (folder_id, new_uidvalidity, new_uid),
                ).fetchone()
                if target is None:
                    db.execute(
                        "UPDATE placements SET uidvalidity = ?, uid = ?,"
                        " run_id = coalesce(?, run_id) WHERE id = ?",
                        (new_uidvalidity, new_uid, run_id, source[0]),
                    )
                elif target[0] == source[1]:
                    db.execute("DELETE FROM placements WHERE id = ?", (source[0],))
                else:
                    raise PlacementConflict(
                        f"folder {folder_id}: cannot move UID {old_uid} ({source[1]}) to"
                        f" UIDVALIDITY {new_uidvalidity} UID {new_uid}, archived as {target[0]}"
                    )
                moved += 1
        return moved

    def known_blobs(self, sha256s: Iterable[str]) -> set[str]:
        """Which of these SHA-256 names have a messages row."""
        wanted = list(dict.fromkeys(sha256s))
        known: set[str] = set()
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = self._all(f"SELECT sha256 FROM messages WHERE sha256 IN ({marks})", chunk)  # noqa: S608
            known.update(str(r[0]) for r in rows)
        return known

    def iter_placements(
        self,
        user: str | None = None,
        archive_folder: str | None = None,
        folder: str | None = None,
    ) -> Iterator[PlacementRow]:
        """Every placement (optionally of one user, archive folder, folder path), in order of
        user, archive folder, path, UIDVALIDITY, UID. Read in pages, never all at once."""
        folders = self._all(
            "SELECT f.id, u.name, m.archive_folder, f.path FROM folders f"
            " JOIN mailboxes m ON m.id = f.mailbox_id JOIN users u ON u.id = m.user_id"
            " WHERE (?1 IS NULL OR u.name = ?1) AND (?2 IS NULL OR m.archive_folder = ?2)"
            " AND (?3 IS NULL OR f.path = ?3)"
            " ORDER BY u.name, m.archive_folder, f.path",
            (user, archive_folder, folder),
        )
        for folder_id, user_name, archive_name, path in folders:
            after = (0, 0)
            while True:
                rows = self._all(
                    "SELECT p.uidvalidity, p.uid, p.sha256, m.size, p.internal_date, p.flags"
                    " FROM placements p JOIN messages m ON m.sha256 = p.sha256"
                    " WHERE p.folder_id = ? AND (p.uidvalidity, p.uid) > (?, ?)"
                    " ORDER BY p.uidvalidity, p.uid LIMIT ?",
                    (folder_id, after[0], after[1], PAGE_SIZE),
                )
                for uidvalidity, uid, sha256, size, internal_date, flags in rows:
                    yield PlacementRow(
                        user=user_name,
                        archive_folder=archive_name,
                        folder=path,
                        uidvalidity=int(uidvalidity),
                        uid=int(uid),
                        sha256=sha256,
                        size=int(size),
                        internal_date=_parse_datetime(internal_date),
                        flags=_parse_flags(flags),
                    )
                if len(rows) < PAGE_SIZE:
                    break
                after = (int(rows[-1][0]), int(rows[-1][1]))

    def iter_message_hashes(self) -> Iterator[str]:
        """Every SHA-256 of the messages table, in sorted order, read in pages."""
        after = ""
        while True:
            rows = self._all(
                "SELECT sha256 FROM messages WHERE sha256 > ? ORDER BY sha256 LIMIT ?",
                (after, PAGE_SIZE),
            )
            for row in rows:
                yield str(row[0])
            if len(rows) < PAGE_SIZE:
                return
            after = str(rows[-1][0])

    def counts(self) -> dict[str, int]:
        """Row counts of users, mailboxes, folders, messages and placements."""
        tables = ("users", "mailboxes", "folders", "messages", "placements")
        return {t: int(self._one(f"SELECT count(*) FROM {t}")[0]) for t in tables}  # noqa: S608

    def storage_totals(self) -> dict[str, int]:
        """The archive's sizes: ``messages`` (distinct blobs), ``bytes_original`` (their raw
        sizes), ``bytes_stored`` (their compressed sizes on disk), ``placements`` and
        ``bytes_placed`` (the raw size of every placement: what the folders hold)."""
        messages, original, stored = self._one(
            "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(stored_size), 0) FROM messages"
        )
        placements, placed = self._one(
            "SELECT count(*), coalesce(sum(m.size), 0)"
            " FROM placements p JOIN messages m ON m.sha256 = p.sha256"
        )
        return {
            "messages": int(messages),
            "bytes_original": int(original),
            "bytes_stored": int(stored),
            "placements": int(placements),
            "bytes_placed": int(placed),
        }

    def user_totals(self) -> list[dict[str, Any]]:
        """Per user, by name: ``mailboxes``, ``folders``, ``messages`` (distinct blobs in the
        user's folders), ``placements``, ``bytes_original`` and ``bytes_stored`` (of those
        distinct messages) and ``bytes_placed`` (of every placement). A message two users
        hold counts for each of them."""
        rows = self._all(
            "WITH up AS ("
            "  SELECT m.user_id AS user_id, p.sha256 AS sha256 FROM placements p"
            "  JOIN folders f ON f.id = p.folder_id JOIN mailboxes m ON m.id = f.mailbox_id),"
            " placed AS ("
            "  SELECT up.user_id AS user_id, count(*) AS n, sum(msg.size) AS bytes"
            "  FROM up JOIN messages msg ON msg.sha256 = up.sha256 GROUP BY up.user_id),"
            " uniq AS ("
            "  SELECT d.user_id AS user_id, count(*) AS n, sum(msg.size) AS bytes,"
            "  sum(msg.stored_size) AS stored"
            "  FROM (SELECT DISTINCT user_id, sha256 FROM up) d"
            "  JOIN messages msg ON msg.sha256 = d.sha256 GROUP BY d.user_id)"
            " SELECT u.name,"
            " (SELECT count(*) FROM mailboxes m WHERE m.user_id = u.id),"
            " (SELECT count(*) FROM folders f JOIN mailboxes m ON m.id = f.mailbox_id"
            "  WHERE m.user_id = u.id),"
            " coalesce(uniq.n, 0), coalesce(placed.n, 0), coalesce(uniq.bytes, 0),"
            " coalesce(uniq.stored, 0), coalesce(placed.bytes, 0)"
            " FROM users u LEFT JOIN placed ON placed.user_id = u.id"
            " LEFT JOIN uniq ON uniq.user_id = u.id ORDER BY u.name"
        )
        keys = (
            "user",
            "mailboxes",
            "folders",
            "messages",
            "placements",
            "bytes_original",
            "bytes_stored",
            "bytes_placed",
        )
        return [
            {k: (v if k == "user" else int(v)) for k, v in zip(keys, row, strict=True)}
            for row in rows
        ]

    # -- runs --------------------------------------------------------------

    def begin_run(self, run_id: str, command: str) -> None:
        with self.atomic() as db:
            db.execute(
                "INSERT INTO runs (id, started_at, status, command) VALUES (?, ?, 'running', ?)",
                (run_id, _now(), command),
            )

    def state_token(self) -> str:
        """Changes whenever an apply begins on this archive: a saved plan records it, and
        a plan whose token is no longer the archive's is stale."""
        row = self._one("SELECT count(*) FROM runs", ())
        return f"runs:{row[0] if row is not None else 0}"

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        text = json.dumps(summary, sort_keys=True, default=str, ensure_ascii=False)
        with self.atomic() as db:
            cursor = db.execute(
                "UPDATE runs SET finished_at = ?, status = ?, summary = ? WHERE id = ?",
                (_now(), status, text, run_id),
            )
            if cursor.rowcount != 1:
                raise ArchiveIndexError(f"no run {run_id!r} in the index")

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """A run as a dict (id, started_at, finished_at, status, command, summary)."""
        row = self._one(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))  # noqa: S608
        return None if row is None else _run_dict(row)

    def last_runs(self, n: int) -> list[dict[str, Any]]:
        """The ``n`` most recently started runs, newest first."""
        rows = self._all(
            f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?",  # noqa: S608
            (n,),
        )
        return [_run_dict(r) for r in rows]

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run, newest first: id, command, started_at, finished_at, status and the
        ``totals`` object of its protocol (None without one). Protocols are not read whole."""
        rows = self._all(
            "SELECT id, command, started_at, finished_at, status,"
            " CASE WHEN json_valid(summary) THEN json_extract(summary, '$.totals') END"
            " FROM runs ORDER BY started_at DESC, rowid DESC"
        )
        listed = []
        for run_id, command, started_at, finished_at, status, totals in rows:
            parsed = json.loads(totals) if isinstance(totals, str) else None
            listed.append(
                {
                    "id": run_id,
                    "command": command,
                    "started_at": started_at,
                    "finished_at": finished_at,
                    "status": status,
                    "totals": parsed if isinstance(parsed, dict) else None,
                }
            )
        return listed

    def run_ids_starting_with(self, prefix: str) -> list[str]:
        """The ids of the runs whose id starts with ``prefix``, newest first."""
        rows = self._all(
            "SELECT id FROM runs WHERE substr(id, 1, length(?1)) = ?1"
            " ORDER BY started_at DESC, rowid DESC",
            (prefix,),
        )
        return [str(r[0]) for r in rows]

    # -- internals ---------------------------------------------------------

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._lock:
            return self._db.execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _migrate(self) -> None:
        """Apply the pending migrations, each in its own transaction."""
        target = len(MIGRATIONS)
        while True:
            with self.atomic() as db:
                version = int(db.execute("PRAGMA user_version").fetchone()[0])
                if version > target:
                    raise IndexTooNew(
                        f"the archive index {self.path} has schema version {version}, newer"
                        f" than this version of imapsync-decl knows ({target}); upgrade it"
                    )
                if version == target:
                    return
                for statement in _statements(MIGRATIONS[version]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {version + 1:d}")

    def _ensure_archive_id(self) -> str:
        with self.atomic() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('archive_id', ?)"
                " ON CONFLICT (key) DO NOTHING",
                (str(uuid.uuid4()),),
            )
            row = db.execute("SELECT value FROM meta WHERE key = 'archive_id'").fetchone()
            return str(row[0])


_RUN_COLUMNS = "id, started_at, finished_at, status, command, summary"


def _run_dict(row: Sequence[Any]) -> dict[str, Any]:
    run_id, started_at, finished_at, status, command, summary = row
    return {
        "id": run_id,
        "started_at": started_at,
        "finished_at": finished_at,
        "status": status,
        "command": command,
        "summary": None if summary is None else json.loads(summary),
    }


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


def _create_private(path: Path) -> None:
    """Create the database file with mode 0600 (whatever the umask) if it does not exist;
    never through a symlink."""
    try:
        fd = create_exclusive(path, DB_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, DB_MODE)
    finally:
        os.close(fd)


def _configure(connection: sqlite3.Connection) -> None:
    """The settings every connection gets (WAL, full sync, foreign keys)."""
    connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000):d}")
    mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise ArchiveIndexError(f"the archive index cannot use WAL mode (got {mode!r})")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")


def _statements(script: str) -> Iterator[str]:
    """Split an SQL script into complete statements."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending.strip()
            pending = ""
    if pending.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement in migration: {pending.strip()!r}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _datetime_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.astimezone()  # naive: local time, made explicit
    return value.isoformat()


def _parse_datetime(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _flags_text(flags: Sequence[str]) -> str:
    return json.dumps(list(flags), ensure_ascii=False)


def _parse_flags(text: str) -> tuple[str, ...]:
    return tuple(str(f) for f in json.loads(text))
