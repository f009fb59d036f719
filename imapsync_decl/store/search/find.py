"""Run a search: a parsed query, scoped by user, mailbox and folder, to one hit per placement.

A message is one document in the search database and may have several placements
(the same message in two folders, or in two users' mailboxes); each placement that
falls in the scope is a hit of its own, so a message in two folders is found in
both. A hit's ``id`` is the placement's row in the index: ``archive show`` and
``archive restore`` take it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from imapsync_decl.store.rows import subfolders_pattern
from imapsync_decl.store.search.database import SearchIndex
from imapsync_decl.store.search.query import CompiledQuery, Query, compile_query, ordering

MAX_LIMIT = 10_000
SNIPPET_TOKENS = 16
SNIPPET_CHARS = 240  # long tokens (URLs, encoded data) still give a short line


@dataclass(frozen=True)
class Scope:
    """Which placements a search sees: all, or one user's, mailbox's or folder's
    (a folder with its subfolders)."""

    user: str | None = None
    mailbox: str | None = None  # the mailbox's archive folder (its e-mail address)
    folder: str | None = None


@dataclass(frozen=True)
class Hit:
    id: int
    user: str
    mailbox: str
    folder: str
    date: datetime | None
    sender: str
    recipients: str
    subject: str
    size: int
    attachments: tuple[str, ...]
    sha256: str
    snippet: str

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "user": self.user,
            "mailbox": self.mailbox,
            "folder": self.folder,
            "date": self.date.isoformat() if self.date is not None else None,
            "from": self.sender,
            "to": self.recipients,
            "subject": self.subject,
            "size": self.size,
            "attachments": list(self.attachments),
            "sha256": self.sha256,
            "snippet": self.snippet,
        }


def _scope_sql(scope: Scope, params: dict[str, str | int | None]) -> str:
    clauses = []
    if scope.user is not None:
        params["scope_user"] = scope.user
        clauses.append("u.name = :scope_user")
    if scope.mailbox is not None:
        params["scope_mailbox"] = scope.mailbox
        clauses.append("mb.archive_folder = :scope_mailbox")
    if scope.folder is not None:
        folder = scope.folder.strip("/")
        params["scope_folder"] = folder
        params["scope_below"] = subfolders_pattern(folder)
        clauses.append("(f.path = :scope_folder OR f.path LIKE :scope_below ESCAPE '\\')")
    return "".join(f" AND {c}" for c in clauses)


def find(
    search: SearchIndex,
    query: Query,
    scope: Scope | None = None,
    *,
    sort: str = "relevance",
    limit: int = 50,
    offset: int = 0,
) -> list[Hit]:
    """The hits of ``query`` in ``scope``, in ``sort`` order (``relevance``, ``date``,
    ``-date``), ``limit`` of them from ``offset``."""
    compiled = compile_query(query)
    order = ordering(compiled, sort)
    params = dict(compiled.params)
    params["limit"] = max(0, min(limit, MAX_LIMIT))
    params["offset"] = max(0, offset)
    # Only fragments of this package go into the text; every value is a parameter.
    sql = (
        f"{order.before}SELECT p.id, u.name, mb.archive_folder, f.path, d.date,"  # noqa: S608
        " d.from_display, d.to_display, d.subject_display, d.size, d.attachments_json,"
        f" d.sha256, d.id FROM search.docs AS d{order.join}"
        " JOIN idx.placements p ON p.sha256 = d.sha256"
        " JOIN idx.folders f ON f.id = p.folder_id"
        " JOIN idx.mailboxes mb ON mb.id = f.mailbox_id"
        " JOIN idx.users u ON u.id = mb.user_id"
        f" WHERE ({compiled.where}){_scope_sql(scope or Scope(), params)}"
        f" ORDER BY {order.order_by}, p.id LIMIT :limit OFFSET :offset"
    )
    rows = search.connection.execute(sql, params).fetchall()
    return [
        Hit(
            id=int(row[0]),
            user=str(row[1]),
            mailbox=str(row[2]),
            folder=str(row[3]),
            date=None if row[4] is None else datetime.fromtimestamp(int(row[4]), UTC),
            sender=str(row[5] or ""),
            recipients=str(row[6] or ""),
            subject=str(row[7] or ""),
            size=int(row[8]),
            attachments=tuple(str(a) for a in json.loads(row[9])),
            sha256=str(row[10]),
            snippet=_snippet(search, compiled, int(row[11])),
        )
        for row in rows
    ]


def _snippet(search: SearchIndex, compiled: CompiledQuery, doc_id: int) -> str:
    text = _snippet_text(search, compiled, doc_id)
    if len(text) <= SNIPPET_CHARS:
        return text
    start = max(0, text.find("[") - SNIPPET_CHARS // 3)  # keep the first match in view
    window = text[start : start + SNIPPET_CHARS - 2].strip()
    return ("…" if start > 0 else "") + window + "…"


def _snippet_text(search: SearchIndex, compiled: CompiledQuery, doc_id: int) -> str:
    """A few words of the body around the first match of the free-text terms, the match
    in [brackets]; without free-text terms, the body's first words."""
    match = compiled.rank_match
    if match is not None:
        row = search.connection.execute(
            "SELECT snippet(fts, 3, '[', ']', '…', ?) FROM search.fts"
            " WHERE fts MATCH ? AND rowid = ?",
            (SNIPPET_TOKENS, match, doc_id),
        ).fetchone()
        if row is not None and row[0]:
            return " ".join(str(row[0]).split())
    row = search.connection.execute(
        "SELECT substr(body, 1, 400) FROM search.fts WHERE rowid = ?", (doc_id,)
    ).fetchone()
    words = str(row[0] or "").split() if row is not None else []
    return " ".join(words[:SNIPPET_TOKENS]) + (" …" if len(words) > SNIPPET_TOKENS else "")
