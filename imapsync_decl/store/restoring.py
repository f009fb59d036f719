"""Placements by id or by user and folder, with their message: what show and restore read.

A placement's row id is the ``id`` of a search hit and what ``archive show`` and
``archive restore`` take;
each :class:`RestoreItem` carries what putting the message back needs: its mailbox
(user, archive folder, login, server), folder path, SHA-256, size, Message-ID, flags
and internal date.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from imapsync_decl.store.connection import IndexConnection
from imapsync_decl.store.rows import parse_datetime, parse_flags, subfolders_pattern

if TYPE_CHECKING:
    from imapsync_decl.store.search.extract import Readable

_IN_CHUNK = 500  # host parameters per IN (...) query

_SELECT = (
    "SELECT p.id, u.name, m.archive_folder, m.login, m.server, f.path, p.uidvalidity, p.uid,"
    " p.sha256, g.size, g.message_id, p.flags, p.internal_date"
    " FROM placements p JOIN messages g ON g.sha256 = p.sha256"
    " JOIN folders f ON f.id = p.folder_id JOIN mailboxes m ON m.id = f.mailbox_id"
    " JOIN users u ON u.id = m.user_id"
)


@dataclass(frozen=True)
class RestoreItem:
    """One placement to restore, with its message's facts."""

    id: int
    user: str
    archive_folder: str
    login: str
    server: str | None
    folder: str
    uidvalidity: int
    uid: int
    sha256: str
    size: int
    message_id: str | None
    flags: tuple[str, ...]
    internal_date: datetime | None


def _item(row: Sequence[Any]) -> RestoreItem:
    return RestoreItem(
        id=int(row[0]),
        user=str(row[1]),
        archive_folder=str(row[2]),
        login=str(row[3]),
        server=None if row[4] is None else str(row[4]),
        folder=str(row[5]),
        uidvalidity=int(row[6]),
        uid=int(row[7]),
        sha256=str(row[8]),
        size=int(row[9]),
        message_id=None if row[10] is None else str(row[10]),
        flags=parse_flags(row[11]),
        internal_date=parse_datetime(row[12]),
    )


class RestoreLookup(IndexConnection):
    """The placements restore puts back."""

    def placements_by_id(self, ids: Iterable[int]) -> list[RestoreItem]:
        """The placements with these row ids, in the order of the ids (unknown ids are
        left out; the caller names them)."""
        wanted = list(dict.fromkeys(int(i) for i in ids))
        found: dict[int, RestoreItem] = {}
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            for row in self._all(f"{_SELECT} WHERE p.id IN ({marks})", chunk):
                found[int(row[0])] = _item(row)
        return [found[i] for i in wanted if i in found]

    def placements_of_user(self, user: str, folder: str | None = None) -> list[RestoreItem]:
        """Every placement of ``user`` (of ``folder`` and its sub-folders when given), by
        mailbox, folder, UIDVALIDITY and UID."""
        below = None
        if folder is not None:
            folder = folder.strip("/")
            below = subfolders_pattern(folder)
        rows = self._all(
            f"{_SELECT} WHERE u.name = ?1"
            " AND (?2 IS NULL OR f.path = ?2 OR f.path LIKE ?3 ESCAPE '\\')"
            " ORDER BY m.id, f.path, p.uidvalidity, p.uid",
            (user, folder, below),
        )
        return [_item(r) for r in rows]


def show_document(message_id: int, placement: RestoreItem, message: Readable) -> dict[str, object]:
    """The document of ``archive show --format json`` (and of the web API's
    ``GET /api/messages/ID``): where the placement is, and the message decoded."""
    return {
        "id": message_id,
        "user": placement.user,
        "mailbox": placement.archive_folder,
        "folder": placement.folder,
        "uidvalidity": placement.uidvalidity,
        "uid": placement.uid,
        "internal_date": (
            placement.internal_date.isoformat() if placement.internal_date is not None else None
        ),
        "flags": list(placement.flags),
        "sha256": placement.sha256,
        "size": placement.size,
        "headers": [{"name": name, "value": value} for name, value in message.headers],
        "text": message.text,
        "attachments": list(message.attachment_names),
        "extracted": message.extracted,
    }
