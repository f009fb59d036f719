"""Reading the archive as a tree and a folder a page at a time: what the web pages show.

The tree of a user is their mailboxes (each under its name in the archive tree, its
e-mail address) with the folders of each and how many messages each folder holds. A
folder's messages are listed newest first (by internal date, then by placement id), a
page at a time by *keyset*: a page ends with a :class:`Cursor` (the last row's order
key) and the next page starts after it. The order is the index
``placements_folder_newest`` (schema version 5), so a page of a folder of 100,000
messages reads a page's rows, never the whole folder, and nothing is sorted.

Dates, senders and subjects come from the search index (decoded for display, the date
as search shows it: the Date header, else the internal date) where it holds the
message, else from the header values and the internal date the index keeps. Only reads: the index
and the search index are opened by SQLite read-only connections.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from imapsync_decl.store.connection import BUSY_TIMEOUT_SECONDS
from imapsync_decl.store.rows import parse_datetime, subfolders_pattern, tree_folder

INDEX_NAME = "index.sqlite"
SEARCH_NAME = "search.sqlite"
MAX_PAGE = 500

# The order key of a placement in its folder; the same expression as the index's.
_KEY = "coalesce(p.internal_date, '')"


@dataclass(frozen=True)
class FolderNode:
    """One folder of a mailbox: its path (``Projekte/Übersicht``), its depth in the tree,
    its last name and how many messages (placements) it holds."""

    id: int
    path: str
    count: int

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def depth(self) -> int:
        return self.path.count("/")


@dataclass(frozen=True)
class MailboxNode:
    """One mailbox of a user: its name in the archive tree and its folders, sorted."""

    id: int
    user: str
    name: str
    folders: tuple[FolderNode, ...]

    @property
    def count(self) -> int:
        return sum(f.count for f in self.folders)


@dataclass(frozen=True)
class FolderInfo:
    """Where a folder is: its user, its mailbox's tree name, its path and its size."""

    id: int
    user: str
    mailbox: str
    path: str
    count: int


@dataclass(frozen=True)
class Cursor:
    """Where a page ends (or starts): the order key and placement id of its edge row."""

    key: str
    id: int

    def encode(self) -> str:
        return f"{self.id}.{self.key}"

    @classmethod
    def decode(cls, text: str) -> Cursor | None:
        """The cursor of ``encode``; None for anything else (a hand-made URL)."""
        ident, _, key = text.partition(".")
        if not ident.isdigit() or len(key) > 64:
            return None
        return cls(key, int(ident))


@dataclass(frozen=True)
class Row:
    """One message of a folder listing."""

    id: int
    date: datetime | None
    sender: str
    subject: str
    size: int
    has_attachment: bool | None  # None: not in the search index yet
    key: str


@dataclass(frozen=True)
class Page:
    """A page of a folder, newest first; ``older`` / ``newer`` are where the next and the
    previous page start (None at the end and at the start)."""

    rows: tuple[Row, ...]
    older: Cursor | None
    newer: Cursor | None


class Browse:
    """Read-only views of the archive at ``root`` for the web pages."""

    def __init__(self, connection: sqlite3.Connection, has_search: bool) -> None:
        self._db = connection
        self.has_search = has_search

    @classmethod
    def open(cls, root: Path) -> Browse:
        root = Path(root)
        index = root / INDEX_NAME
        if index.is_symlink() or not index.is_file():
            raise FileNotFoundError(f"no archive index at {index}")
        db = sqlite3.connect(
            _uri(index), uri=True, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False
        )
        search = root / SEARCH_NAME
        has_search = search.is_file() and not search.is_symlink()
        try:
            if has_search:
                db.execute("ATTACH DATABASE ? AS search", (_uri(search),))
        except sqlite3.DatabaseError:
            has_search = False
        return cls(db, has_search)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def users(self) -> list[str]:
        """Every archive user with at least one mailbox, by name."""
        rows = self._db.execute(
            "SELECT DISTINCT u.name FROM users u JOIN mailboxes m ON m.user_id = u.id ORDER BY 1"
        ).fetchall()
        return [str(r[0]) for r in rows]

    def tree(self, user: str) -> list[MailboxNode]:
        """The mailboxes of ``user`` with their folders and counts (empty for an unknown user)."""
        mailboxes = self._db.execute(
            "SELECT m.id, m.archive_folder, m.login, m.server FROM mailboxes m"
            " JOIN users u ON u.id = m.user_id WHERE u.name = ? ORDER BY m.archive_folder, m.id",
            (user,),
        ).fetchall()
        seen: set[str] = set()
        nodes: list[MailboxNode] = []
        for mailbox_id, archive_folder, login, server in mailboxes:
            name = tree_folder(str(archive_folder), str(login), server, archive_folder not in seen)
            seen.add(str(archive_folder))
            folders = self._db.execute(
                "SELECT f.id, f.path, (SELECT count(*) FROM placements p WHERE p.folder_id = f.id)"
                " FROM folders f WHERE f.mailbox_id = ? ORDER BY f.path",
                (mailbox_id,),
            ).fetchall()
            nodes.append(
                MailboxNode(
                    int(mailbox_id),
                    user,
                    name,
                    tuple(FolderNode(int(i), str(p), int(c)) for i, p, c in folders),
                )
            )
        return nodes

    def folder(self, folder_id: int) -> FolderInfo | None:
        """The folder with this id, or None."""
        row = self._db.execute(
            "SELECT f.id, u.name, m.archive_folder, f.path,"
            " (SELECT count(*) FROM placements p WHERE p.folder_id = f.id)"
            " FROM folders f JOIN mailboxes m ON m.id = f.mailbox_id"
            " JOIN users u ON u.id = m.user_id WHERE f.id = ?",
            (folder_id,),
        ).fetchone()
        if row is None:
            return None
        return FolderInfo(int(row[0]), str(row[1]), str(row[2]), str(row[3]), int(row[4]))

    def placement_ids(self, folder_id: int) -> list[int]:
        """The placements of the folder and of its subfolders in the same mailbox (what
        restoring that folder puts back), oldest first."""
        rows = self._db.execute(
            "SELECT p.id FROM folders f JOIN folders s ON s.mailbox_id = f.mailbox_id"
            " AND (s.path = f.path OR s.path LIKE :below ESCAPE '\\')"
            " JOIN placements p ON p.folder_id = s.id WHERE f.id = :folder ORDER BY p.id",
            {"folder": folder_id, "below": subfolders_pattern(self._path(folder_id))},
        ).fetchall()
        return [int(r[0]) for r in rows]

    def _path(self, folder_id: int) -> str:
        row = self._db.execute("SELECT path FROM folders WHERE id = ?", (folder_id,)).fetchone()
        return "" if row is None else str(row[0])

    def owner(self, placement_id: int) -> str | None:
        """The archive user a placement belongs to, or None for an unknown id."""
        row = self._db.execute(
            "SELECT u.name FROM placements p JOIN folders f ON f.id = p.folder_id"
            " JOIN mailboxes m ON m.id = f.mailbox_id JOIN users u ON u.id = m.user_id"
            " WHERE p.id = ?",
            (placement_id,),
        ).fetchone()
        return None if row is None else str(row[0])

    def page(
        self,
        folder_id: int,
        *,
        older_than: Cursor | None = None,
        newer_than: Cursor | None = None,
        limit: int = 50,
    ) -> Page:
        """A page of the folder's messages, newest first: the first page, the page after
        ``older_than``, or the page before ``newer_than``."""
        limit = max(1, min(limit, MAX_PAGE))
        newer = newer_than is not None and older_than is None
        edge = newer_than if newer else older_than
        sql, params = self.page_query(folder_id, edge, newer=newer, limit=limit + 1)
        rows = [self._row(r) for r in self._db.execute(sql, params).fetchall()]
        more = len(rows) > limit
        rows = rows[:limit]
        if newer:
            rows.reverse()
        first = Cursor(rows[0].key, rows[0].id) if rows else None
        last = Cursor(rows[-1].key, rows[-1].id) if rows else None
        if newer:
            return Page(tuple(rows), older=last, newer=first if more else None)
        has_newer = edge is not None and self._exists_newer(folder_id, first)
        return Page(tuple(rows), older=last if more else None, newer=first if has_newer else None)

    def page_query(
        self, folder_id: int, edge: Cursor | None, *, newer: bool, limit: int
    ) -> tuple[str, dict[str, Any]]:
        """The statement of one page (also what the tests ask SQLite's query plan of)."""
        params: dict[str, Any] = {"folder": folder_id, "limit": limit}
        where = "p.folder_id = :folder"
        if edge is not None:
            params["key"], params["id"] = edge.key, edge.id
            # The row-value comparison (key, id) < (:key, :id), written so that SQLite
            # ranges over the index on the key (it does not for a row value of an expression).
            op = ">" if newer else "<"
            where += f" AND {_KEY} {op}= :key AND ({_KEY} {op} :key OR p.id {op} :id)"
        direction = "ASC" if newer else "DESC"
        if self.has_search:
            columns = (
                "d.date, coalesce(d.from_display, g.from_addr),"
                " coalesce(d.subject_display, g.subject), g.size, d.has_attachment"
            )
            joins = " LEFT JOIN search.docs d ON d.sha256 = p.sha256"
        else:
            columns = "NULL, g.from_addr, g.subject, g.size, NULL"
            joins = ""
        sql = (
            f"SELECT p.id, p.internal_date, {columns}, {_KEY}"  # noqa: S608
            " FROM placements p JOIN messages g ON g.sha256 = p.sha256"
            f"{joins} WHERE {where}"
            f" ORDER BY {_KEY} {direction}, p.id {direction} LIMIT :limit"
        )
        return sql, params

    def query_plan(self, sql: str, params: dict[str, Any]) -> list[str]:
        return [str(r[3]) for r in self._db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]

    def _exists_newer(self, folder_id: int, first: Cursor | None) -> bool:
        if first is None:
            return False
        row = self._db.execute(
            f"SELECT 1 FROM placements p WHERE p.folder_id = :folder AND {_KEY} >= :key"  # noqa: S608
            f" AND ({_KEY} > :key OR p.id > :id) LIMIT 1",
            {"folder": folder_id, "key": first.key, "id": first.id},
        ).fetchone()
        return row is not None

    @staticmethod
    def _row(r: Sequence[Any]) -> Row:
        # Shown: the message's date as search gives it (its Date header, else the internal
        # date), in UTC; without a search document, the internal date.
        shown = datetime.fromtimestamp(int(r[2]), UTC) if r[2] is not None else None
        if shown is None:
            shown = parse_datetime(r[1])
        return Row(
            id=int(r[0]),
            date=shown,
            sender=str(r[3] or ""),
            subject=str(r[4] or ""),
            size=int(r[5]),
            has_attachment=None if r[6] is None else bool(r[6]),
            key=str(r[7]),
        )


def _uri(path: Path) -> str:
    """A read-only SQLite URI of ``path`` (``immutable`` when nobody writes it: see
    ``index._read_only_uri``)."""
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro"
    if not any(os.path.lexists(f"{path}{suffix}") for suffix in ("-wal", "-shm")):
        uri += "&immutable=1"
    return uri
