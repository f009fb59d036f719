"""The values the index reads and writes, and how they are stored and journaled.

The value classes callers hand to the index and get back from it (``UserRecord``,
``Checkpoint``, ``ArchivedMessage``, ``PlacementRow``, ``Recorded``); the stored
representations (timestamps as ISO 8601 text with a UTC offset, a naive ``datetime``
taken as local time; flags as a JSON list of strings, in the order given); and how
journal records name rows: by their identity (user name, archive folder, server,
login, folder path), never by their ids.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from imapsync_decl.store.blobs import BlobInfo
from imapsync_decl.store.connection import ArchiveIndexError
from imapsync_decl.store.message import MessageHeaders

RUN_COLUMNS = "id, started_at, finished_at, status, command, summary"
RUN_KEYS = ("id", "started_at", "finished_at", "status", "command", "summary")
MESSAGE_KEYS = (
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
MESSAGE_COLUMNS = ", ".join(MESSAGE_KEYS)
USER_KEYS = (
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


def user_record(db: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    """The journal record of user ``name`` as its row is now, or None without one."""
    row = db.execute(
        f"SELECT {', '.join(USER_KEYS)} FROM users WHERE name = ?",  # noqa: S608
        (name,),
    ).fetchone()
    if row is None:
        return None
    record = dict(zip(USER_KEYS, row, strict=True))
    record["aliases"] = json.loads(record["aliases"])
    return {"t": "user", **record}


def mailbox_key(db: sqlite3.Connection, mailbox_id: int) -> dict[str, Any]:
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


def folder_key(db: sqlite3.Connection, folder_id: int) -> dict[str, Any]:
    """A folder by its identity: its mailbox's (see ``mailbox_key``) and its path."""
    row = db.execute("SELECT mailbox_id, path FROM folders WHERE id = ?", (folder_id,)).fetchone()
    if row is None:
        raise ArchiveIndexError(f"no folder with id {folder_id} in the index")
    return {"mailbox": mailbox_key(db, int(row[0])), "path": row[1]}


def run_dict(row: Sequence[Any]) -> dict[str, Any]:
    """A ``runs`` row (``RUN_COLUMNS``) as a dict, its summary parsed."""
    run_id, started_at, finished_at, status, command, summary = row
    return {
        "id": run_id,
        "started_at": started_at,
        "finished_at": finished_at,
        "status": status,
        "command": command,
        "summary": None if summary is None else json.loads(summary),
    }


def subfolders_pattern(folder: str) -> str:
    """A LIKE pattern (with ESCAPE '\\') for the subfolders of ``folder``: its text
    taken literally, then ``/%``."""
    return folder.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"


@dataclass(frozen=True)
class Job:
    """A mailbox of a run, as claimed: its place in the profile's plan."""

    id: int
    profile: str
    position: int  # the mailbox's place in the profile's plan
    mailbox: str  # its login


def now_text() -> str:
    """The current time as stored: UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def datetime_text(value: datetime | None) -> str | None:
    """A timestamp as stored (ISO 8601 with its offset; a naive one is local time)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.astimezone()  # naive: local time, made explicit
    return value.isoformat()


def parse_datetime(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def flags_text(flags: Sequence[str]) -> str:
    """Flags as stored: a JSON list, in the order given."""
    return json.dumps(list(flags), ensure_ascii=False)


def parse_flags(text: str) -> tuple[str, ...]:
    return tuple(str(f) for f in json.loads(text))
