"""The index's journal and its migrations, without a server: format, torn records, order."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from imapsync_decl.store import MIGRATIONS, ArchivedMessage, BlobStore, Index, Journal
from imapsync_decl.store.journal import ReadStats, encode
from imapsync_decl.store.message import MessageHeaders
from imapsync_decl.store.rebuild import rebuild_index
from imapsync_decl.store.schema import statements


def stored(blobs: BlobStore, uid: int, data: bytes) -> ArchivedMessage:
    return ArchivedMessage(uid, blobs.put(data), None, ("\\Seen",), MessageHeaders(subject="s"))


def old_index(root: Path, blobs: BlobStore) -> Path:
    """An index as schema version 3 made it: one mailbox keyed by (user, archive folder)."""
    path = root / "index.sqlite"
    connection = sqlite3.connect(path, isolation_level=None)
    index = Index(connection, path)
    index._migrate(MIGRATIONS[:3])
    assert index.schema_version == 3
    info = blobs.put(b"Subject: old\r\n\r\nold\r\n")
    for statement in statements(
        """
        INSERT INTO users (id, name, created_at) VALUES (1, 'alice', 'now');
        INSERT INTO mailboxes (id, user_id, archive_folder, login, profile)
            VALUES (1, 1, 'alice@example.com', 'alice', 'staff');
        INSERT INTO folders (id, mailbox_id, path) VALUES (1, 1, 'INBOX');
        """
    ):
        connection.execute(statement)
    connection.execute(
        "INSERT INTO messages (sha256, size, stored_size, first_archived_at)"
        " VALUES (?, ?, ?, 'now')",
        (info.sha256, info.size, info.stored_size),
    )
    connection.execute(
        "INSERT INTO placements (folder_id, uidvalidity, uid, sha256, archived_at)"
        " VALUES (1, 7, 1, ?, 'now')",
        (info.sha256,),
    )
    connection.close()
    return path


def test_an_index_of_schema_3_is_migrated_in_place_and_journaled(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    path = old_index(tmp_path, blobs)
    with Index.open(path) as index:
        assert index.schema_version == len(MIGRATIONS)
        # The old mailbox keeps its login, with no server yet; planning finds it.
        folder = index.find_folder(
            "alice", "alice@example.com", "INBOX", login="alice", server="imap:993"
        )
        assert folder == 1
        assert index.archived_uids(1, 7) == {1}
        # Another login of the same archive folder does not see it.
        assert index.find_folder("alice", "alice@example.com", "INBOX", login="bob") is None
        # The first apply of that login claims it; another source gets its own mailbox.
        assert index.ensure_mailbox(1, "alice@example.com", "alice", "staff", "imap:993") == 1
        assert index.ensure_mailbox(1, "alice@example.com", "alice", "staff", "new:993") != 1
        assert index._one("SELECT server FROM mailboxes WHERE id = 1")[0] == "imap:993"
    # The journal was seeded with what the index held before.
    kinds = [r["t"] for r in Journal(tmp_path / "journal").read()]
    assert kinds.count("place") == 1
    assert kinds.count("mailbox") == 3  # the snapshot, the claim, the new mailbox
    path.unlink()
    report = rebuild_index(path, blobs)
    assert report.restored["place"] == 1
    with Index.open(path) as index:
        rows = list(index.iter_placements())
        assert [(r.uid, r.server, r.tree_folder) for r in rows] == [
            (1, "imap:993", "alice@example.com")
        ]
        assert index.counts()["mailboxes"] == 2


def test_torn_and_damaged_records_are_ignored_and_counted(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    journal.append([{"t": "run", "n": i} for i in range(3)])
    journal.close()
    (segment,) = journal.segments()
    lines = segment.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"n":1', b'"n":9')  # checksum no longer holds
    segment.write_bytes(b"\n".join(lines) + encode({"t": "run", "n": 3})[:-7])  # torn tail
    stats = ReadStats()
    assert [r["n"] for r in journal.read(stats)] == [0, 2]
    assert (stats.records, stats.damaged, stats.torn) == (2, 1, 1)
    # The next writer starts a segment of its own: a torn tail is never followed by more.
    Journal(tmp_path / "journal").append([{"t": "run", "n": 4}])
    assert [r["n"] for r in journal.read()] == [0, 2, 4]
    assert len(journal.segments()) == 2
    # After a clean end, the next writer appends to the last segment.
    Journal(tmp_path / "journal").append([{"t": "run", "n": 5}])
    assert [r["n"] for r in journal.read()] == [0, 2, 4, 5]
    assert len(journal.segments()) == 2


def test_the_journal_is_durable_before_the_index_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = BlobStore(tmp_path)
    with Index.open(tmp_path / "index.sqlite") as index:
        user = index.ensure_user("alice")
        folder = index.ensure_folder(index.ensure_mailbox(user, "a", "alice", "p", "h:1"), "INBOX")

        def failing(self: Journal, records: Any) -> None:
            raise OSError("no space left on device")

        monkeypatch.setattr(Journal, "append", failing)
        with pytest.raises(OSError, match="no space"):
            index.record(folder, 1, [stored(blobs, 1, b"one")], None)
        assert index.counts()["placements"] == 0  # the transaction was not committed
        monkeypatch.undo()
        assert index.record(folder, 1, [stored(blobs, 1, b"one")], None).placements == 1
    places = [r for r in Journal(tmp_path / "journal").read() if r["t"] == "place"]
    assert [(p["uid"], p["mailbox"]["server"], p["path"]) for p in places] == [(1, "h:1", "INBOX")]


def test_a_placement_whose_message_record_is_damaged_is_restored_from_its_blob(
    tmp_path: Path,
) -> None:
    blobs = BlobStore(tmp_path)
    path = tmp_path / "index.sqlite"
    with Index.open(path) as index:
        user = index.ensure_user("alice")
        folder = index.ensure_folder(index.ensure_mailbox(user, "a", "alice", "p", "h:1"), "IN")
        index.record(
            folder, 1, [stored(blobs, 1, b"Subject: one\r\n\r\n1"), stored(blobs, 2, b"2")], None
        )
        before = list(index.iter_placements())
    (segment, *_) = Journal(tmp_path / "journal").segments()[-1:]
    lines = segment.read_bytes().split(b"\n")
    first = hashlib.sha256(b"Subject: one\r\n\r\n1").hexdigest().encode()
    (at,) = [i for i, line in enumerate(lines) if b'"t":"message"' in line and first in line]
    lines[at] = lines[at].replace(b'"subject":"s"', b'"subject":"S"')
    segment.write_bytes(b"\n".join(lines))
    path.unlink()
    report = rebuild_index(path, blobs)
    assert report.read.damaged == 1
    assert report.restored["messages_from_blobs"] == 1
    with Index.open(path) as index:
        assert list(index.iter_placements()) == before
