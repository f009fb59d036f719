"""The index's placements: which message is archived under which UID of which folder.

Recording stored messages (``record``), moving placements to a new UIDVALIDITY
(``repoint``) and the queries that planning, apply, verify and export make of them.
A placement names a blob by SHA-256; every blob named is on disk before its
placement is recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from imapsync_decl.store.connection import PAGE_SIZE, IndexConnection, PlacementConflict
from imapsync_decl.store.rows import (
    ArchivedMessage,
    PlacementRow,
    Recorded,
    datetime_text,
    flags_text,
    folder_key,
    now_text,
    parse_datetime,
    parse_flags,
    tree_folder,
)

_IN_CHUNK = 500  # host parameters per IN (...) query


class PlacementRows(IndexConnection):
    """Placements and messages of the index."""

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
        now = now_text()
        new = new_messages = 0
        with self.atomic() as db:
            where: dict[str, Any] | None = None
            for entry in entries:
                if where is None:
                    where = folder_key(db, folder_id)
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
                        datetime_text(entry.internal_date),
                        flags_text(entry.flags),
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
                            "internal_date": datetime_text(entry.internal_date),
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
            where = folder_key(db, folder_id) if moves else {}
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
                        internal_date=parse_datetime(internal_date),
                        flags=parse_flags(flags),
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
