"""The archive index: which messages are archived, where they were, and up to where.

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

Tables:

* ``users``, ``mailboxes``, ``folders`` (one per IMAP folder of a mailbox, with
  its *checkpoint*: the UIDVALIDITY, UIDNEXT and message count up to which the
  folder is completely archived, NULL until the first complete pass).
* A mailbox is known by its user, its archive folder **and its source**: the
  server (``host:port``) and the login it is reached with. Two sources that
  resolve to the same user and archive folder (the same person on an old and a
  new server, two CSV rows with one e-mail address) are two mailboxes, which never
  share folders, checkpoints or placements; the tree shows the second one with a
  suffix (``tree_folder``). Schema version 4 brought this in: rows of older
  versions keep their ``login`` and get ``server`` NULL, since the server was never
  recorded. The first apply of a mailbox with that user, archive folder and login
  claims such a row and fills in its server (``ensure_mailbox``); any other source
  gets a mailbox of its own and is archived in full. Placements that two sources
  wrote into one row before the upgrade cannot be told apart any more; verified
  deletion therefore compares the server's copy with the archived blob before it
  deletes anything.
* ``messages``: one row per blob (per distinct content), with a few header
  values for listing.
* ``placements``: one row per copy of a message in a folder, keyed by
  (folder, UIDVALIDITY, UID). The same message in two folders is one
  ``messages`` row and two placements.
* ``runs``: one row per command run, with a JSON summary.
* ``meta``: key/value pairs: the ``archive_id`` (a UUID), and ``journal`` once the
  journal holds everything the index holds (an index made before the journal gets
  a snapshot of itself written to the journal when first opened).

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
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from imapsync_decl.errors import ArchiveNotWritable, ExitCode, ImapsyncError
from imapsync_decl.fs import (
    UnsafePath,
    check_private_dir,
    check_private_file,
    create_exclusive,
    is_writable,
)
from imapsync_decl.store.blobs import BlobError, BlobInfo, BlobStore
from imapsync_decl.store.journal import JOURNAL_NAME, Journal
from imapsync_decl.store.message import MessageHeaders, parse_headers

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
    # 4: a mailbox is known by its source too (server host:port and login), so two
    # mailboxes of one archive folder never share folders, checkpoints or placements.
    # Rows of older versions keep their login and get server NULL: see ensure_mailbox.
    """
    CREATE TABLE mailboxes_v4 (
        id             INTEGER PRIMARY KEY,
        user_id        INTEGER NOT NULL REFERENCES users (id),
        archive_folder TEXT NOT NULL,
        server         TEXT,
        login          TEXT NOT NULL,
        profile        TEXT NOT NULL,
        UNIQUE (user_id, archive_folder, server, login)
    );
    INSERT INTO mailboxes_v4 (id, user_id, archive_folder, server, login, profile)
        SELECT id, user_id, archive_folder, NULL, login, profile FROM mailboxes;
    DROP TABLE mailboxes;
    ALTER TABLE mailboxes_v4 RENAME TO mailboxes;
    CREATE INDEX mailboxes_user ON mailboxes (user_id);
    CREATE UNIQUE INDEX mailboxes_legacy ON mailboxes (user_id, archive_folder, login)
        WHERE server IS NULL;
    """,
]

JOURNAL_META = "journal"  # meta key: set once the journal holds everything the index holds


class ArchiveIndexError(ImapsyncError):
    """The index cannot be used or would become inconsistent."""

    exit_code = ExitCode.INTEGRITY


class IndexTooNew(ArchiveIndexError):
    """The database was written by a newer version with a schema this code does not know."""

    exit_code = ExitCode.CONFIG


class PlacementConflict(ArchiveIndexError):
    """A (folder, UIDVALIDITY, UID) is already archived with different content."""


class IndexCorrupt(ArchiveIndexError):
    """The database is damaged or gone (not a database, malformed, truncated, deleted)."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        super().__init__(
            f"the archive index {path} is damaged or missing ({detail}); rebuild it from the"
            f" archive's journal: imapsync-decl archive rebuild-index --archive {path.parent}"
        )


# SQLite's primary result codes for a damaged database file.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """A damaged database (as opposed to a busy one, or a constraint that failed)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return type(exc) is sqlite3.DatabaseError


@dataclass(frozen=True)
class Recorded:
    """What one ``record`` call added: placements, and messages (contents) new to the archive."""

    placements: int
    messages: int


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
    """One copy of a message in a folder, with where it belongs.

    ``tree_folder`` is the mailbox's name in the archive tree (exports, views): its
    archive folder, and for the second and later mailbox of the same archive folder of a
    user (another server or login) the archive folder with ``~<login>@<server>``, so two
    mailboxes never share a directory.
    """

    user: str
    archive_folder: str
    folder: str
    uidvalidity: int
    uid: int
    sha256: str
    size: int
    internal_date: datetime | None
    flags: tuple[str, ...]
    server: str | None = None
    login: str = ""
    tree_folder: str = ""


def tree_folder(archive_folder: str, login: str, server: str | None, first: bool) -> str:
    """A mailbox's name in the archive tree (see ``PlacementRow``)."""
    if first:
        return archive_folder
    return f"{archive_folder}~{login}@{server}" if server else f"{archive_folder}~{login}"


class Index:
    """The archive's SQLite index. Safe to share between threads (one connection, locked)."""

    def __init__(
        self, connection: sqlite3.Connection, path: Path, journal: Journal | None = None
    ) -> None:
        """Use ``Index.open``."""
        self.path = path
        self._db = connection
        self._lock = threading.RLock()
        self._depth = 0
        self._archive_id = ""
        self._journal = journal
        self._pending: list[dict[str, Any]] = []  # journal records of the open transaction
        self._replayed_folders: dict[str, int] = {}  # during replay: folder ids by identity

    # -- opening -----------------------------------------------------------

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
        _create_private(path)
        connection = sqlite3.connect(
            str(path),
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,  # transactions are explicit: see atomic()
            check_same_thread=False,
        )
        index = cls(connection, path, journal)
        try:
            with index._guarded():
                _configure(connection)
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

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._journal is not None:
                self._journal.close()

    def check_health(self) -> str:
        """SQLite's ``quick_check`` verdict: ``ok`` for a sound database."""
        rows = self._all("PRAGMA quick_check")
        return "; ".join(str(r[0]) for r in rows)

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        """A damaged database file becomes an ``IndexCorrupt`` (exit 12, what to do)."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc):
                raise IndexCorrupt(self.path, str(exc)) from None
            raise

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
                pending = len(self._pending)
                try:
                    yield self._db
                except BaseException:
                    del self._pending[pending:]
                    if self._db.in_transaction:  # SQLite may have rolled back everything
                        self._db.execute(f"ROLLBACK TO {name}")
                        self._db.execute(f"RELEASE {name}")
                    raise
                else:
                    self._db.execute(f"RELEASE {name}")
                finally:
                    self._depth -= 1
                return
            with self._guarded():
                self._db.execute("BEGIN IMMEDIATE")
                self._depth = 1
                try:
                    yield self._db
                    if self._pending and self._journal is not None:
                        # The journal first: it holds every placement the index holds.
                        self._journal.append(self._pending)
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                finally:
                    self._pending.clear()
                    self._depth = 0

    def _log(self, record: dict[str, Any]) -> None:
        """Journal a change of the open transaction (written just before its commit)."""
        if self._journal is not None:
            self._pending.append(record)

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
            before = _user_record(db, name)
            db.execute(
                "INSERT INTO users (name, email, display_name, created_at, source)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET"
                " email = coalesce(excluded.email, email),"
                " display_name = coalesce(excluded.display_name, display_name)",
                (name, email, display_name, _now(), source),
            )
            self._log_user(db, name, before)
            return int(db.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()[0])

    def _log_user(self, db: sqlite3.Connection, name: str, before: dict[str, Any] | None) -> None:
        after = _user_record(db, name)
        if after is not None and after != before:
            self._log(after)

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
                    self._log_user(db, user.name, None)
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
                self._log_user(db, user.name, None)
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
                    self._log_user(db, name, None)
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

    def ensure_mailbox(
        self,
        user_id: int,
        archive_folder: str,
        login: str,
        profile: str,
        server: str | None = None,
    ) -> int:
        """The id of the mailbox of a user's archive folder reached as ``login`` on
        ``server`` (host:port), created if new; the profile is kept current.

        A mailbox row of an index older than schema version 4 has no server: the first
        mailbox with its login (and archive folder) that comes along claims it, and the
        server is filled in. Any other source gets a mailbox of its own.
        """
        with self.atomic() as db:
            row = db.execute(
                "SELECT id, profile FROM mailboxes WHERE user_id = ?1 AND archive_folder = ?2"
                " AND login = ?3 AND (server = ?4 OR (server IS NULL AND ?4 IS NULL))",
                (user_id, archive_folder, login, server),
            ).fetchone()
            changed = False
            if row is None and server is not None:
                row = db.execute(
                    "SELECT id, profile FROM mailboxes WHERE user_id = ? AND archive_folder = ?"
                    " AND login = ? AND server IS NULL",
                    (user_id, archive_folder, login),
                ).fetchone()
                if row is not None:
                    db.execute("UPDATE mailboxes SET server = ? WHERE id = ?", (server, row[0]))
                    changed = True
            if row is None:
                mailbox_id = int(
                    db.execute(
                        "INSERT INTO mailboxes (user_id, archive_folder, server, login, profile)"
                        " VALUES (?, ?, ?, ?, ?) RETURNING id",
                        (user_id, archive_folder, server, login, profile),
                    ).fetchone()[0]
                )
                changed = True
            else:
                mailbox_id = int(row[0])
                if row[1] != profile:
                    db.execute(
                        "UPDATE mailboxes SET profile = ? WHERE id = ?", (profile, mailbox_id)
                    )
                    changed = True
            if changed:
                self._log({"t": "mailbox", **_mailbox_key(db, mailbox_id), "profile": profile})
            return mailbox_id

    def ensure_folder(self, mailbox_id: int, path: str) -> int:
        """The id of a folder of a mailbox, created if new."""
        with self.atomic() as db:
            cursor = db.execute(
                "INSERT INTO folders (mailbox_id, path) VALUES (?, ?)"
                " ON CONFLICT (mailbox_id, path) DO NOTHING",
                (mailbox_id, path),
            )
            if cursor.rowcount == 1:
                self._log({"t": "folder", "mailbox": _mailbox_key(db, mailbox_id), "path": path})
            row = db.execute(
                "SELECT id FROM folders WHERE mailbox_id = ? AND path = ?", (mailbox_id, path)
            ).fetchone()
            return int(row[0])

    def find_folder(
        self,
        user: str,
        archive_folder: str,
        path: str,
        *,
        login: str | None = None,
        server: str | None = None,
    ) -> int | None:
        """The folder of a user's archive folder; with ``login``, of that mailbox only: the
        one reached as ``login`` on ``server``, else an unclaimed one of that login from
        before schema version 4 (see ``ensure_mailbox``)."""
        row = self._one(
            "SELECT f.id FROM folders f"
            " JOIN mailboxes m ON m.id = f.mailbox_id JOIN users u ON u.id = m.user_id"
            " WHERE u.name = ?1 AND m.archive_folder = ?2 AND f.path = ?3"
            " AND (?4 IS NULL OR (m.login = ?4 AND (m.server = ?5 OR m.server IS NULL)))"
            " ORDER BY m.server IS NULL, m.id LIMIT 1",
            (user, archive_folder, path, login, server),
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
    ) -> Recorded:
        """Record stored messages in a folder, in one transaction; return what was new:
        placements, and messages (contents) that were not in the archive before.

        A placement already recorded with the same content is left as it is; with
        other content it is a PlacementConflict (and nothing of this call is kept).
        Every entry's blob must already be durably stored. Counting new contents here,
        in the transaction, counts each content once even when two mailboxes archive it
        at the same time.
        """
        now = _now()
        new = new_messages = 0
        with self.atomic() as db:
            where: dict[str, Any] | None = None
            for entry in entries:
                if where is None:
                    where = _folder_key(db, folder_id)
                h = entry.headers
                cursor = db.execute(
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
                if cursor.rowcount == 1:
                    new_messages += 1
                    self._log(
                        {
                            "t": "message",
                            "sha256": entry.blob.sha256,
                            "size": entry.blob.size,
                            "stored_size": entry.blob.stored_size,
                            "message_id": h.message_id,
                            "date": h.date,
                            "from_addr": h.from_addr,
                            "to_addr": h.to_addr,
                            "subject": h.subject,
                            "first_archived_at": now,
                        }
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
                    self._log(
                        {
                            "t": "place",
                            **where,
                            "uidvalidity": uidvalidity,
                            "uid": entry.uid,
                            "sha256": entry.blob.sha256,
                            "internal_date": _datetime_text(entry.internal_date),
                            "flags": list(entry.flags),
                            "archived_at": now,
                            "run_id": run_id,
                        }
                    )
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
        return Recorded(new, new_messages)

    def repoint(
        self,
        folder_id: int,
        new_uidvalidity: int,
        moves: Sequence[tuple[int, int, int]],
        run_id: str | None,
    ) -> int:
        """Move placements to a new UIDVALIDITY after the server changed it; return the count.

        Each move is (old UIDVALIDITY, old UID, new UID). In one transaction; blobs are
        not touched. Placements of an old UIDVALIDITY that are not moved stay. A move
        whose source is gone is skipped; a move onto a placement of the same content
        merges the two; onto other content it is a PlacementConflict.
        """
        if any(old_uidvalidity == new_uidvalidity for old_uidvalidity, _, _ in moves):
            raise ValueError("repoint needs two different UIDVALIDITY values")
        moved = 0
        with self.atomic() as db:
            where = _folder_key(db, folder_id) if moves else {}
            for old_uidvalidity, old_uid, new_uid in moves:
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
                self._log(
                    {
                        "t": "move",
                        **where,
                        "from": [old_uidvalidity, old_uid],
                        "to": [new_uidvalidity, new_uid],
                        "run_id": run_id,
                    }
                )
                moved += 1
        return moved

    def placements_elsewhere(self, folder_id: int, uidvalidity: int) -> list[tuple[int, int, str]]:
        """(UIDVALIDITY, UID, SHA-256) of the folder's placements under every other
        UIDVALIDITY, in that order: what a rescan may re-point by content."""
        rows = self._all(
            "SELECT uidvalidity, uid, sha256 FROM placements WHERE folder_id = ?"
            " AND uidvalidity != ? ORDER BY uidvalidity, uid",
            (folder_id, uidvalidity),
        )
        return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]

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
        user, tree folder (see ``PlacementRow``), path, UIDVALIDITY, UID. Read in pages,
        never all at once."""
        rows = self._all(
            "SELECT f.id, u.name, m.archive_folder, f.path, m.server, m.login, m.id = ("
            "  SELECT min(o.id) FROM mailboxes o"
            "  WHERE o.user_id = m.user_id AND o.archive_folder = m.archive_folder)"
            " FROM folders f"
            " JOIN mailboxes m ON m.id = f.mailbox_id JOIN users u ON u.id = m.user_id"
            " WHERE (?1 IS NULL OR u.name = ?1) AND (?2 IS NULL OR m.archive_folder = ?2)"
            " AND (?3 IS NULL OR f.path = ?3)",
            (user, archive_folder, folder),
        )
        folders = sorted(
            (
                (r[1], tree_folder(r[2], r[5], r[4], bool(r[6])), r[3], r[0], r[2], r[4], r[5])
                for r in rows
            ),
        )
        for user_name, tree_name, path, folder_id, archive_name, server, login in folders:
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
                        server=server,
                        login=login,
                        tree_folder=tree_name,
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
            self._log_run(db, run_id)

    def _log_run(self, db: sqlite3.Connection, run_id: str) -> None:
        row = db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()  # noqa: S608
        if row is not None:
            self._log({"t": "run", **dict(zip(_RUN_KEYS, row, strict=True))})

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
            self._log_run(db, run_id)

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
        with self._lock, self._guarded():
            return self._db.execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock, self._guarded():
            return self._db.execute(sql, params).fetchall()

    def _migrate(self, migrations: Sequence[str] = MIGRATIONS) -> None:
        """Apply the pending migrations, each in its own transaction.

        Foreign keys are off meanwhile (a migration may rebuild a table others refer
        to, the way SQLite documents it) and checked before each commit.
        """
        target = len(migrations)
        self._db.execute("PRAGMA foreign_keys = OFF")
        try:
            while True:
                with self.atomic() as db:
                    version = int(db.execute("PRAGMA user_version").fetchone()[0])
                    if version > len(MIGRATIONS):
                        raise IndexTooNew(
                            f"the archive index {self.path} has schema version {version}, newer"
                            f" than this version of imapsync-decl knows ({target}); upgrade it"
                        )
                    if version >= target:
                        return
                    for statement in _statements(migrations[version]):
                        db.execute(statement)
                    if db.execute("PRAGMA foreign_key_check").fetchone() is not None:
                        raise ArchiveIndexError(
                            f"migration {version + 1} of {self.path} would break a reference"
                        )
                    db.execute(f"PRAGMA user_version = {version + 1:d}")
        finally:
            self._db.execute("PRAGMA foreign_keys = ON")

    # -- the journal -------------------------------------------------------

    def _ensure_journal(self) -> None:
        """An index without a complete journal (new, or from before the journal) gets one:
        a snapshot of everything it holds, written before the index says so."""
        if self._one("SELECT 1 FROM meta WHERE key = ?", (JOURNAL_META,)) is not None:
            return
        assert self._journal is not None
        with self.atomic() as db:
            self._journal.write_snapshot(self.snapshot())
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, '1')", (JOURNAL_META,))

    def snapshot(self) -> Iterator[dict[str, Any]]:
        """Journal records of everything the index holds (checkpoints aside), in an order
        that ``replay`` restores: archive id, users, mailboxes (in the order they were
        made), folders, messages, placements, runs. Read in pages."""
        yield {"t": "archive", "archive_id": self._archive_id}
        for (name,) in self._all("SELECT name FROM users ORDER BY id"):
            record = _user_record(self._db, name)
            if record is not None:
                yield record
        for mailbox_id, profile in self._all("SELECT id, profile FROM mailboxes ORDER BY id"):
            yield {"t": "mailbox", **_mailbox_key(self._db, mailbox_id), "profile": profile}
        for mailbox_id, path in self._all("SELECT mailbox_id, path FROM folders ORDER BY id"):
            yield {"t": "folder", "mailbox": _mailbox_key(self._db, mailbox_id), "path": path}
        for row in self._paged(f"SELECT {_MESSAGE_COLUMNS}, rowid FROM messages"):  # noqa: S608
            yield {"t": "message", **dict(zip(_MESSAGE_KEYS, row, strict=False))}
        keys: dict[int, dict[str, Any]] = {}
        for row in self._paged(
            "SELECT folder_id, uidvalidity, uid, sha256, internal_date, flags, archived_at,"
            " run_id, rowid FROM placements"
        ):
            folder_id = int(row[0])
            if folder_id not in keys:
                keys[folder_id] = _folder_key(self._db, folder_id)
            yield {
                "t": "place",
                **keys[folder_id],
                "uidvalidity": row[1],
                "uid": row[2],
                "sha256": row[3],
                "internal_date": row[4],
                "flags": json.loads(row[5]),
                "archived_at": row[6],
                "run_id": row[7],
            }
        for row in self._all(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY rowid"):  # noqa: S608
            yield {"t": "run", **dict(zip(_RUN_KEYS, row, strict=True))}

    def _paged(self, select: str) -> Iterator[Sequence[Any]]:
        """The rows of ``select`` (whose last column is the rowid) in rowid order, in pages."""
        after = 0
        while True:
            rows = self._all(f"{select} WHERE rowid > ? ORDER BY rowid LIMIT ?", (after, PAGE_SIZE))
            yield from rows
            if len(rows) < PAGE_SIZE:
                return
            after = int(rows[-1][-1])

    def replay(self, records: Iterable[Mapping[str, Any]], blobs: BlobStore) -> dict[str, int]:
        """Restore what journal records say, in one transaction (for ``rebuild-index``).

        Idempotent: a record that is in the index already changes nothing, so a
        journal that holds a change twice (a snapshot after its records) is fine.
        Messages whose blob is not on disk, and their placements, are left out, so
        the index never names a blob that is not on disk. Returns counts per kind,
        and of what was left out: ``missing_blobs`` (messages),
        ``placements_without_blob`` and ``conflicts`` (placements). A placement whose
        message record was lost gets its messages row from the blob itself
        (``messages_from_blobs``).
        """
        counts: dict[str, int] = defaultdict(int)
        present: dict[str, bool] = {}
        self._replayed_folders = {}
        journal, self._journal = self._journal, None  # nothing of this goes to the journal
        try:
            with self.atomic() as db:
                for record in records:
                    kind = str(record.get("t"))
                    if kind == "message":
                        present[record["sha256"]] = blobs.exists(record["sha256"])
                        if not present[record["sha256"]]:
                            counts["missing_blobs"] += 1
                            continue
                    elif kind == "place" and record["sha256"] not in present:
                        # Its message record was lost (a damaged line): read the blob.
                        present[record["sha256"]] = self._message_from_blob(
                            db, record["sha256"], blobs, str(record["archived_at"])
                        )
                        counts["messages_from_blobs"] += present[record["sha256"]]
                    if kind == "place" and not present[record["sha256"]]:
                        counts["placements_without_blob"] += 1
                        continue
                    if self._replay_one(db, kind, record):
                        counts[kind] += 1
                    elif kind == "place":
                        counts["conflicts"] += 1
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, '1')", (JOURNAL_META,)
                )
        finally:
            self._journal = journal
        self._archive_id = self._one("SELECT value FROM meta WHERE key = 'archive_id'")[0]
        return dict(counts)

    def _message_from_blob(
        self, db: sqlite3.Connection, sha256: str, blobs: BlobStore, archived_at: str
    ) -> bool:
        """A messages row made from the blob itself; False if the blob is missing or damaged."""
        try:
            data = blobs.get(sha256)
            stored_size = blobs.path(sha256).stat().st_size
        except (BlobError, OSError):
            return False
        h = parse_headers(data)
        db.execute(
            f"INSERT OR IGNORE INTO messages ({_MESSAGE_COLUMNS})"  # noqa: S608
            f" VALUES ({', '.join('?' * len(_MESSAGE_KEYS))})",
            (
                sha256,
                len(data),
                stored_size,
                h.message_id,
                h.date,
                h.from_addr,
                h.to_addr,
                h.subject,
                archived_at,
            ),
        )
        return True

    def _replay_one(self, db: sqlite3.Connection, kind: str, r: Mapping[str, Any]) -> bool:
        """Apply one journal record; False when it could not be (a placement conflict)."""
        if kind == "archive":
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('archive_id', ?)",
                (r["archive_id"],),
            )
        elif kind == "user":
            db.execute(
                "INSERT OR REPLACE INTO users (id, name, email, display_name, aliases, source,"
                " status, directory, created_at, updated_at) VALUES ((SELECT id FROM users"
                " WHERE name = ?1), ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                (
                    r["name"],
                    r["email"],
                    r["display_name"],
                    json.dumps(list(r["aliases"])),
                    r["source"],
                    r["status"],
                    r["directory"],
                    r["created_at"],
                    r["updated_at"],
                ),
            )
        elif kind == "mailbox":
            self._replay_mailbox(r, r["profile"])
        elif kind == "folder":
            self._replay_folder(r)
        elif kind == "message":
            db.execute(
                f"INSERT OR IGNORE INTO messages ({_MESSAGE_COLUMNS})"  # noqa: S608
                f" VALUES ({', '.join('?' * len(_MESSAGE_KEYS))})",
                tuple(r[k] for k in _MESSAGE_KEYS),
            )
        elif kind == "place":
            folder_id = self._replay_folder(r)
            db.execute(
                "INSERT OR IGNORE INTO placements (folder_id, uidvalidity, uid, sha256,"
                " internal_date, flags, archived_at, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    folder_id,
                    r["uidvalidity"],
                    r["uid"],
                    r["sha256"],
                    r["internal_date"],
                    _flags_text(r["flags"]),
                    r["archived_at"],
                    r["run_id"],
                ),
            )
            held = db.execute(
                "SELECT sha256 FROM placements WHERE folder_id = ? AND uidvalidity = ? AND uid = ?",
                (folder_id, r["uidvalidity"], r["uid"]),
            ).fetchone()
            return bool(held[0] == r["sha256"])
        elif kind == "move":
            folder_id = self._replay_folder(r)
            (old_uidvalidity, old_uid), (new_uidvalidity, new_uid) = r["from"], r["to"]
            if old_uidvalidity == new_uidvalidity:
                return False
            try:
                with self.atomic():
                    self.repoint(
                        folder_id,
                        new_uidvalidity,
                        [(old_uidvalidity, old_uid, new_uid)],
                        r["run_id"],
                    )
            except PlacementConflict:
                return False
        elif kind == "run":
            db.execute(
                f"INSERT OR REPLACE INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",  # noqa: S608
                tuple(r[k] for k in _RUN_KEYS),
            )
        return True

    def _replay_folder(self, r: Mapping[str, Any]) -> int:
        key = json.dumps([r["mailbox"], r["path"]], sort_keys=True)
        if key not in self._replayed_folders:
            self._replayed_folders[key] = self.ensure_folder(
                self._replay_mailbox(r["mailbox"]), r["path"]
            )
        return self._replayed_folders[key]

    def _replay_mailbox(self, key: Mapping[str, Any], profile: str | None = None) -> int:
        user_id = self.ensure_user(str(key["user"]))
        if profile is None:
            found = self._one(
                "SELECT m.id FROM mailboxes m WHERE m.user_id = ?1 AND m.archive_folder = ?2"
                " AND m.login = ?3 AND (m.server = ?4 OR (m.server IS NULL AND ?4 IS NULL))",
                (user_id, key["archive_folder"], key["login"], key["server"]),
            )
            if found is not None:
                return int(found[0])
            profile = ""
        return self.ensure_mailbox(
            user_id, key["archive_folder"], key["login"], profile, server=key["server"]
        )

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
_RUN_KEYS = ("id", "started_at", "finished_at", "status", "command", "summary")
_MESSAGE_KEYS = (
    "sha256",
    "size",
    "stored_size",
    "message_id",
    "date",
    "from_addr",
    "to_addr",
    "subject",
    "first_archived_at",
)
_MESSAGE_COLUMNS = ", ".join(_MESSAGE_KEYS)
_USER_KEYS = (
    "name",
    "email",
    "display_name",
    "aliases",
    "source",
    "status",
    "directory",
    "created_at",
    "updated_at",
)


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


def _user_record(db: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    row = db.execute(
        f"SELECT {', '.join(_USER_KEYS)} FROM users WHERE name = ?",  # noqa: S608
        (name,),
    ).fetchone()
    if row is None:
        return None
    record = dict(zip(_USER_KEYS, row, strict=True))
    record["aliases"] = json.loads(record["aliases"])
    return {"t": "user", **record}


def _mailbox_key(db: sqlite3.Connection, mailbox_id: int) -> dict[str, Any]:
    """A mailbox by its identity (user name, archive folder, server, login): journal
    records name rows this way, never by their ids."""
    row = db.execute(
        "SELECT u.name, m.archive_folder, m.server, m.login FROM mailboxes m"
        " JOIN users u ON u.id = m.user_id WHERE m.id = ?",
        (mailbox_id,),
    ).fetchone()
    if row is None:
        raise ArchiveIndexError(f"no mailbox with id {mailbox_id} in the index")
    return {"user": row[0], "archive_folder": row[1], "server": row[2], "login": row[3]}


def _folder_key(db: sqlite3.Connection, folder_id: int) -> dict[str, Any]:
    row = db.execute("SELECT mailbox_id, path FROM folders WHERE id = ?", (folder_id,)).fetchone()
    if row is None:
        raise ArchiveIndexError(f"no folder with id {folder_id} in the index")
    return {"mailbox": _mailbox_key(db, int(row[0])), "path": row[1]}


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
