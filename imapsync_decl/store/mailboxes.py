"""The index's users, mailboxes and folders, and the folders' checkpoints.

Plain row operations: a user, mailbox or folder is found or created, a user row is
added, updated or given a status, a checkpoint is read or set. Each one journals
what it changed. Which users a directory adds, updates or marks as gone is decided
above the store (``sources/users.py``), with these operations, in one ``atomic()``.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from imapsync_decl.store.connection import ArchiveIndexError, IndexConnection
from imapsync_decl.store.rows import Checkpoint, UserRecord, mailbox_key, now_text, user_record


class MailboxRows(IndexConnection):
    """Users, mailboxes, folders and checkpoints of the index."""

    # -- users ---------------------------------------------------------------

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
            before = user_record(db, name)
            db.execute(
                "INSERT INTO users (name, email, display_name, created_at, source)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET"
                " email = coalesce(excluded.email, email),"
                " display_name = coalesce(excluded.display_name, display_name)",
                (name, email, display_name, now_text(), source),
            )
            self._log_user(db, name, before)
            return int(db.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()[0])

    def _log_user(self, db: sqlite3.Connection, name: str, before: dict[str, Any] | None) -> None:
        after = user_record(db, name)
        if after is not None and after != before:
            self._log(after)

    def find_user(self, name: str) -> UserRecord | None:
        """User ``name`` as the index keeps it, or None."""
        row = self._one(
            "SELECT name, email, display_name, aliases, source, status, directory FROM users"
            " WHERE name = ?",
            (name,),
        )
        return None if row is None else _user(row)

    def add_user(self, user: UserRecord) -> None:
        """Add a new user row, as ``user`` describes it."""
        at = now_text()
        with self.atomic() as db:
            db.execute(
                "INSERT INTO users (name, email, display_name, aliases, source, status,"
                " directory, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    user.name,
                    user.email,
                    user.display_name,
                    json.dumps(list(user.aliases)),
                    user.source,
                    user.status,
                    user.directory,
                    at,
                    at,
                ),
            )
            self._log_user(db, user.name, None)

    def update_user(self, user: UserRecord) -> None:
        """Make the row of user ``user.name`` say what ``user`` says (its source stays)."""
        with self.atomic() as db:
            db.execute(
                "UPDATE users SET email = ?, display_name = ?, aliases = ?, status = ?,"
                " directory = ?, updated_at = ? WHERE name = ?",
                (
                    user.email,
                    user.display_name,
                    json.dumps(list(user.aliases)),
                    user.status,
                    user.directory,
                    now_text(),
                    user.name,
                ),
            )
            self._log_user(db, user.name, None)

    def set_user_status(self, name: str, status: str) -> None:
        """Set the status (``active``, ``gone``) of user ``name``."""
        with self.atomic() as db:
            db.execute(
                "UPDATE users SET status = ?, updated_at = ? WHERE name = ?",
                (status, now_text(), name),
            )
            self._log_user(db, name, None)

    def list_users(self, source: str | None = None) -> list[UserRecord]:
        """The archive's user list as the index keeps it, by name."""
        rows = self._all(
            "SELECT name, email, display_name, aliases, source, status, directory FROM users"
            " WHERE ? IS NULL OR source = ? ORDER BY name",
            (source, source),
        )
        return [_user(r) for r in rows]

    # -- mailboxes and folders -----------------------------------------------

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
                self._log({"t": "mailbox", **mailbox_key(db, mailbox_id), "profile": profile})
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
                self._log({"t": "folder", "mailbox": mailbox_key(db, mailbox_id), "path": path})
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
                (uidvalidity, uidnext, message_count, condition, now_text(), folder_id),
            )
            if cursor.rowcount != 1:
                raise ArchiveIndexError(f"no folder with id {folder_id} in the index")


def _user(row: Any) -> UserRecord:
    return UserRecord(
        name=row[0],
        email=row[1],
        display_name=row[2],
        aliases=tuple(json.loads(row[3])),
        source=row[4],
        status=row[5],
        directory=row[6],
    )
