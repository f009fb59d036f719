"""The search database: ``search.sqlite`` beside the index, derived data rebuilt from the blobs.

Why a file of its own and not tables in ``index.sqlite``: the search index is
derived, larger than the index and rebuilt at will (``archive rebuild-search``);
keeping it apart keeps it out of the index's journal and its backups, and a damaged
or deleted search database never touches what is archived. Queries see both: the
connection's main database is in memory, with ``search.sqlite`` attached as
``search`` and the index attached read-only as ``idx``, so that results are joined
to their placements (user, mailbox, folder) in one statement.

The FTS5 table keeps no copy of the text it indexes (schema 2): the texts are in
``texts``, the body compressed (zstd), and FTS5 reads them through the view
``fts_content`` (its external content table) when it makes a snippet. Body text is
most of a search index; kept once and compressed, the database is less than half
the size it had when FTS5 stored its own copy (schema 1, which is still read and
written as it is; ``archive rebuild-search --force`` makes it schema 2).

Write order: a message is indexed only after its placements are committed in the
index, so a crash leaves at worst messages not indexed yet; :meth:`unindexed`
finds them (the next ``apply`` and ``rebuild-search`` index them). One row of
``docs`` per blob; a message in two folders is one document and two placements.
``open_search`` opens an archive's search index for reading, with a message saying
what to do when there is none or it is damaged.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Protocol

import zstandard

from imapsync_decl.errors import ArchiveNotWritable, ExitCode, ImapsyncError, UsageError
from imapsync_decl.fs import UnsafePath, check_private_file, ensure_private_file
from imapsync_decl.store.search.text import FTS_TOKENIZER

SEARCH_NAME = "search.sqlite"
INDEX_NAME = "index.sqlite"
SCHEMA_VERSION = 2
DB_MODE = 0o600
BUSY_TIMEOUT_MS = 30_000

BODY_COMPRESSION_LEVEL = 1
MAX_BODY_BYTES = 64 * 1024 * 1024
"""A stored body that would decompress to more than this is read as empty (a damaged or
hostile ``search.sqlite`` cannot make a query reserve more memory)."""

_TABLES = """
CREATE TABLE search.meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE search.docs (
    id               INTEGER PRIMARY KEY,
    sha256           TEXT NOT NULL UNIQUE,
    date             INTEGER,
    size             INTEGER NOT NULL,
    has_attachment   INTEGER NOT NULL,
    extracted        INTEGER NOT NULL,
    from_display     TEXT,
    to_display       TEXT,
    subject_display  TEXT,
    attachments_json TEXT NOT NULL
);
CREATE INDEX search.docs_date ON docs (date);
"""

SCHEMA = f"""{_TABLES}
CREATE TABLE search.texts (
    id         INTEGER PRIMARY KEY,  -- docs.id
    sender     TEXT NOT NULL,
    recipients TEXT NOT NULL,
    subject    TEXT NOT NULL,
    body       BLOB NOT NULL,        -- UTF-8, zstd-compressed
    attachment TEXT NOT NULL,
    other      TEXT NOT NULL
);
CREATE VIEW search.fts_content AS
    SELECT id, sender, recipients, subject, search_body(body) AS body, attachment, other
    FROM texts;
CREATE VIRTUAL TABLE search.fts USING fts5(
    sender, recipients, subject, body, attachment, other,
    content = 'fts_content', content_rowid = 'id',
    tokenize = '{FTS_TOKENIZER}'
);
INSERT INTO search.meta (key, value) VALUES ('schema', '{SCHEMA_VERSION}')
"""  # noqa: S608 (constants only)
"""A new search database (``search_body`` is a function of each connection, see ``open``)."""

SCHEMA_1 = f"""{_TABLES}
CREATE VIRTUAL TABLE search.fts USING fts5(
    sender, recipients, subject, body, attachment, other,
    tokenize = '{FTS_TOKENIZER}'
);
INSERT INTO search.meta (key, value) VALUES ('schema', '1')
"""  # noqa: S608 (constants only)
"""The search database as schema 1 made it: FTS5 keeps its own copy of every text."""


class Document(Protocol):
    """What the search database keeps of a message (see ``extract.SearchDocument``)."""

    @property
    def sender(self) -> str: ...
    @property
    def recipients(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def body(self) -> str: ...
    @property
    def attachment(self) -> str: ...
    @property
    def other(self) -> str: ...
    @property
    def from_display(self) -> str: ...
    @property
    def to_display(self) -> str: ...
    @property
    def subject_display(self) -> str: ...
    @property
    def date(self) -> datetime | None: ...
    @property
    def size(self) -> int: ...
    @property
    def has_attachment(self) -> bool: ...
    @property
    def attachment_names(self) -> tuple[str, ...]: ...
    @property
    def extracted(self) -> bool: ...


@dataclass(frozen=True)
class SearchCounts:
    indexed: int  # messages with a document
    headers_only: int  # of those, messages whose text could not be extracted
    unindexed: int  # messages of the index without a document yet


@dataclass(frozen=True)
class Unindexed:
    """A message of the index that has no document yet, with what extraction needs."""

    sha256: str
    internal_date: str | None  # the earliest internal date of its placements (ISO 8601)


class SearchIndex:
    """The search database of one archive directory, with the index attached read-only."""

    def __init__(self, connection: sqlite3.Connection, directory: Path, schema: int) -> None:
        self._db = connection
        self.directory = directory
        self.schema = schema  # 1: FTS5 keeps its own copy of the texts; 2: see the module

    @classmethod
    def open(cls, directory: Path, *, create: bool = True) -> SearchIndex:
        """Open ``<directory>/search.sqlite`` (created 0600 when ``create`` and missing,
        never through a symlink) with ``<directory>/index.sqlite`` attached read-only."""
        directory = Path(directory)
        path = directory / SEARCH_NAME
        try:
            for suffix in ("", "-wal", "-shm"):
                check_private_file(path.with_name(path.name + suffix), what="search index")
        except UnsafePath as exc:
            raise ArchiveNotWritable(f"the search index cannot be used: {exc}") from None
        if create:
            ensure_private_file(path, DB_MODE)
        connection = sqlite3.connect(
            "file::memory:", uri=True, isolation_level=None, check_same_thread=False
        )
        try:
            connection.create_function("search_body", 1, body_text, deterministic=True)
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
            mode = "rw" if path.exists() else "ro"
            connection.execute("ATTACH DATABASE ? AS search", (_uri(path, mode),))
            connection.execute("ATTACH DATABASE ? AS idx", (_uri(directory / INDEX_NAME, "ro"),))
            if mode == "rw":
                connection.execute("PRAGMA search.journal_mode = WAL")
                connection.execute("PRAGMA search.synchronous = NORMAL")
            schema = _schema(connection)
            if schema is None and mode == "rw":
                schema = create_schema(connection, SCHEMA)
        except BaseException:
            connection.close()
            raise
        return cls(connection, directory, schema or SCHEMA_VERSION)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SearchIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """For queries: ``search.docs``, ``search.fts`` and the index's tables as ``idx.*``."""
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def add(self, documents: Sequence[tuple[str, Document]]) -> int:
        """Index each (sha256, document) not indexed yet, in one transaction; returns how
        many were new."""
        added = 0
        compressor = zstandard.ZstdCompressor(level=BODY_COMPRESSION_LEVEL)
        with self._transaction() as db:
            for sha256, doc in documents:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO search.docs (sha256, date, size, has_attachment,"
                    " extracted, from_display, to_display, subject_display, attachments_json)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        sha256,
                        int(doc.date.timestamp()) if doc.date is not None else None,
                        doc.size,
                        int(doc.has_attachment),
                        int(doc.extracted),
                        doc.from_display,
                        doc.to_display,
                        doc.subject_display,
                        json.dumps(list(doc.attachment_names), ensure_ascii=False),
                    ),
                )
                if cursor.rowcount != 1:
                    continue
                texts = (
                    cursor.lastrowid,
                    doc.sender,
                    doc.recipients,
                    doc.subject,
                    doc.body,
                    doc.attachment,
                    doc.other,
                )
                if self.schema >= 2:
                    body = compressor.compress(doc.body.encode("utf-8", "replace"))
                    db.execute(
                        "INSERT INTO search.texts (id, sender, recipients, subject, body,"
                        " attachment, other) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (*texts[:4], body, *texts[5:]),
                    )
                db.execute(
                    "INSERT INTO search.fts (rowid, sender, recipients, subject, body,"
                    " attachment, other) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    texts,
                )
                added += 1
        return added

    def forget(self, sha256s: Sequence[str]) -> int:
        """Drop the documents of these messages, which become unindexed again; returns
        how many there were."""
        forgotten = 0
        with self._transaction() as db:
            for sha256 in sha256s:
                row = db.execute("SELECT id FROM search.docs WHERE sha256 = ?", (sha256,))
                found = row.fetchone()
                if found is None:
                    continue
                # First the FTS5 row: it reads the texts it indexed to take them out.
                db.execute("DELETE FROM search.fts WHERE rowid = ?", found)
                if self.schema >= 2:
                    db.execute("DELETE FROM search.texts WHERE id = ?", found)
                db.execute("DELETE FROM search.docs WHERE id = ?", found)
                forgotten += 1
        return forgotten

    def unindexed(self, limit: int = 1000) -> list[Unindexed]:
        """Up to ``limit`` messages of the index without a document, in index order."""
        rows = self._db.execute(
            "SELECT m.sha256, (SELECT min(p.internal_date) FROM idx.placements p"
            " WHERE p.sha256 = m.sha256) FROM idx.messages m"
            " WHERE NOT EXISTS (SELECT 1 FROM search.docs d WHERE d.sha256 = m.sha256)"
            " ORDER BY m.rowid LIMIT ?",
            (limit,),
        ).fetchall()
        return [Unindexed(str(sha), None if date is None else str(date)) for sha, date in rows]

    def counts(self) -> SearchCounts:
        indexed, headers_only = self._db.execute(
            "SELECT count(*), coalesce(sum(extracted = 0), 0) FROM search.docs"
        ).fetchone()
        (unindexed,) = self._db.execute(
            "SELECT count(*) FROM idx.messages m"
            " WHERE NOT EXISTS (SELECT 1 FROM search.docs d WHERE d.sha256 = m.sha256)"
        ).fetchone()
        return SearchCounts(int(indexed), int(headers_only), int(unindexed))

    def clear(self) -> None:
        """Forget every document (``rebuild-search --force``)."""
        with self._transaction() as db:
            if self.schema >= 2:
                db.execute("INSERT INTO search.fts (fts) VALUES ('delete-all')")
                db.execute("DELETE FROM search.texts")
            else:
                db.execute("DELETE FROM search.fts")
            db.execute("DELETE FROM search.docs")


def create_schema(connection: sqlite3.Connection, script: str) -> int:
    """Make the tables of ``script`` in an empty search database, in one transaction,
    unless another process made them meanwhile; the schema there now."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        schema = _schema(connection)
        if schema is None:
            for statement in script.split(";"):
                if statement.strip():
                    connection.execute(statement)
            schema = _schema(connection)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    assert schema is not None
    return schema


def _schema(connection: sqlite3.Connection) -> int | None:
    """The schema of the attached search database; None for an empty one."""
    tables = connection.execute(
        "SELECT count(*) FROM search.sqlite_master WHERE name IN ('meta', 'fts')"
    ).fetchone()[0]
    if not tables:
        return None
    row = connection.execute("SELECT value FROM search.meta WHERE key = 'schema'").fetchone()
    try:
        return int(row[0]) if row is not None else 1
    except ValueError:
        raise sqlite3.DatabaseError(f"unknown search index schema {row[0]!r}") from None


def body_text(stored: bytes | None) -> str:
    """The body text kept in ``texts.body``: decompressed, at most ``MAX_BODY_BYTES``;
    empty for anything that does not decompress to UTF-8 within that."""
    if not isinstance(stored, bytes) or not stored:
        return ""
    try:
        size = zstandard.frame_content_size(stored)
        if size > MAX_BODY_BYTES:
            return ""
        data = zstandard.ZstdDecompressor().decompress(stored, max_output_size=MAX_BODY_BYTES)
    except zstandard.ZstdError:
        return ""
    return data.decode("utf-8", "replace")


def _uri(path: Path, mode: str) -> str:
    return f"file:{urllib.parse.quote(str(path.absolute()))}?mode={mode}"


REBUILD = "imapsync-decl archive rebuild-search"
REBUILD_HINT = f"run `{REBUILD}`"


class SearchIndexMissing(UsageError):
    """The archive has no search index yet (exit 10)."""


class SearchIndexDamaged(ImapsyncError):
    """``search.sqlite`` cannot be read (exit 12)."""

    exit_code = ExitCode.INTEGRITY


def open_search(root: Path) -> SearchIndex:
    """The search index of the archive at ``root``, for reading.

    SearchIndexMissing (exit 10) when there is none yet, SearchIndexDamaged (exit 12)
    when it cannot be read; each says to run ``archive rebuild-search``.
    """
    if not os.path.lexists(Path(root) / SEARCH_NAME):
        raise SearchIndexMissing(f"the archive {root} has no search index yet; {REBUILD_HINT}")
    try:
        search = SearchIndex.open(Path(root), create=False)
    except sqlite3.DatabaseError as exc:
        raise damaged(root, exc) from None
    try:
        search.connection.execute("SELECT count(*) FROM search.docs").fetchone()
    except sqlite3.DatabaseError as exc:
        search.close()
        raise damaged(root, exc) from None
    return search


def damaged(root: Path, exc: Exception) -> SearchIndexDamaged:
    return SearchIndexDamaged(
        f"the search index {Path(root) / SEARCH_NAME} cannot be read ({exc});"
        f" run `{REBUILD} --force`"
    )


def remove_search_files(root: Path) -> None:
    """Delete ``search.sqlite`` and its WAL files (``rebuild-search --force``): derived
    data, rebuilt from the blobs."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(Path(root) / (SEARCH_NAME + suffix))
