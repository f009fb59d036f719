"""The index and its journal: the snapshot that seeds a journal, and the replay from it.

An index without a complete journal (new, or made before the journal) writes a
snapshot of everything it holds to the journal when first opened for writing, then
notes in ``meta`` that the journal is complete. ``replay`` restores what journal
records say into an empty index: ``archive rebuild-index`` (``store/rebuild.py``)
builds a new index that way. Checkpoints are not journaled.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from imapsync_decl.store.blobs import BlobError, BlobStore
from imapsync_decl.store.connection import PlacementConflict
from imapsync_decl.store.mailboxes import MailboxRows
from imapsync_decl.store.message import parse_headers
from imapsync_decl.store.placements import PlacementRows
from imapsync_decl.store.rows import (
    MESSAGE_COLUMNS,
    MESSAGE_KEYS,
    RUN_COLUMNS,
    RUN_KEYS,
    flags_text,
    folder_key,
    mailbox_key,
    user_record,
)

JOURNAL_META = "journal"  # meta key: set once the journal holds everything the index holds


class JournalReplay(MailboxRows, PlacementRows):
    """Writing the index into its journal as a snapshot, and restoring it from one."""

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
            record = user_record(self._db, name)
            if record is not None:
                yield record
        for mailbox_id, profile in self._all("SELECT id, profile FROM mailboxes ORDER BY id"):
            yield {"t": "mailbox", **mailbox_key(self._db, mailbox_id), "profile": profile}
        for mailbox_id, path in self._all("SELECT mailbox_id, path FROM folders ORDER BY id"):
            yield {"t": "folder", "mailbox": mailbox_key(self._db, mailbox_id), "path": path}
        for row in self._paged(f"SELECT {MESSAGE_COLUMNS}, rowid FROM messages"):  # noqa: S608
            yield {"t": "message", **dict(zip(MESSAGE_KEYS, row, strict=False))}
        keys: dict[int, dict[str, Any]] = {}
        for row in self._paged(
            "SELECT folder_id, uidvalidity, uid, sha256, internal_date, flags, archived_at,"
            " run_id, rowid FROM placements"
        ):
            folder_id = int(row[0])
            if folder_id not in keys:
                keys[folder_id] = folder_key(self._db, folder_id)
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
        for row in self._all(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY rowid"):  # noqa: S608
            yield {"t": "run", **dict(zip(RUN_KEYS, row, strict=True))}

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
        folders: dict[str, int] = {}  # folder ids by identity
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
                    if self._replay_one(db, kind, record, folders):
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
            f"INSERT OR IGNORE INTO messages ({MESSAGE_COLUMNS})"  # noqa: S608
            f" VALUES ({', '.join('?' * len(MESSAGE_KEYS))})",
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

    def _replay_one(
        self, db: sqlite3.Connection, kind: str, r: Mapping[str, Any], folders: dict[str, int]
    ) -> bool:
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
            self._replay_folder(r, folders)
        elif kind == "message":
            db.execute(
                f"INSERT OR IGNORE INTO messages ({MESSAGE_COLUMNS})"  # noqa: S608
                f" VALUES ({', '.join('?' * len(MESSAGE_KEYS))})",
                tuple(r[k] for k in MESSAGE_KEYS),
            )
        elif kind == "place":
            folder_id = self._replay_folder(r, folders)
            db.execute(
                "INSERT OR IGNORE INTO placements (folder_id, uidvalidity, uid, sha256,"
                " internal_date, flags, archived_at, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    folder_id,
                    r["uidvalidity"],
                    r["uid"],
                    r["sha256"],
                    r["internal_date"],
                    flags_text(r["flags"]),
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
            folder_id = self._replay_folder(r, folders)
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
                f"INSERT OR REPLACE INTO runs ({RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",  # noqa: S608
                tuple(r[k] for k in RUN_KEYS),
            )
        return True

    def _replay_folder(self, r: Mapping[str, Any], folders: dict[str, int]) -> int:
        key = json.dumps([r["mailbox"], r["path"]], sort_keys=True)
        if key not in folders:
            folders[key] = self.ensure_folder(self._replay_mailbox(r["mailbox"]), r["path"])
        return folders[key]

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
