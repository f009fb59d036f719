"""The index's database connection: its transactions, their journal records, its errors.

``IndexConnection`` holds the one SQLite connection of an index (shared between
threads under a lock) and the journal it writes. ``atomic`` is the one place a
transaction begins and ends: the journal records of a transaction are written and
synced just before it commits, so the journal holds every change the index holds.
The operations on the tables (``store/mailboxes.py``, ``store/placements.py``,
``store/runs.py``, ``store/stats.py``, ``store/replay.py``) build on it, and
``store/index.py`` puts them together as ``Index``. A damaged database file becomes
an ``IndexCorrupt`` (exit 12) that says to run ``archive rebuild-index``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from imapsync_decl.errors import ExitCode, ImapsyncError
from imapsync_decl.store.journal import Journal

BUSY_TIMEOUT_SECONDS = 30.0
PAGE_SIZE = 1000


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


class IndexConnection:
    """An index database connection and its journal. Safe to share between threads (one
    connection, locked)."""

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

    def __enter__(self) -> Self:
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

    # -- reading ---------------------------------------------------------------

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._lock, self._guarded():
            return self._db.execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock, self._guarded():
            return self._db.execute(sql, params).fetchall()

    def _paged(self, select: str) -> Iterator[Sequence[Any]]:
        """The rows of ``select`` (whose last column is the rowid) in rowid order, in pages."""
        after = 0
        while True:
            rows = self._all(f"{select} WHERE rowid > ? ORDER BY rowid LIMIT ?", (after, PAGE_SIZE))
            yield from rows
            if len(rows) < PAGE_SIZE:
                return
            after = int(rows[-1][-1])


def configure(connection: sqlite3.Connection) -> None:
    """The settings every connection gets (WAL, full sync, foreign keys)."""
    connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000):d}")
    mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise ArchiveIndexError(f"the archive index cannot use WAL mode (got {mode!r})")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")
