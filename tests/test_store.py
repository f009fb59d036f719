"""The archive store: blobs, index, verify, lock and header extraction.

Everything runs against real files, a real SQLite database and real processes
(killed with SIGKILL for the crash and lock tests).
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from imapsync_decl.errors import ExitCode
from imapsync_decl.store import (
    MIGRATIONS,
    Archive,
    ArchivedMessage,
    ArchiveIndexError,
    ArchiveLock,
    ArchiveLocked,
    ArchiveStorage,
    BlobDamaged,
    BlobInfo,
    BlobMissing,
    BlobStorage,
    BlobStore,
    Checkpoint,
    Index,
    IndexReader,
    IndexTooNew,
    InvalidBlobName,
    MessageIndex,
    PlacementConflict,
    Recorded,
)
from imapsync_decl.store.message import MAX_VALUE_LENGTH, MessageHeaders, parse_headers
from imapsync_decl.store.verify import verify

REPO = Path(__file__).resolve().parent.parent

TEXT = (
    b"Return-Path: <alice@example.com>\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"Subject: quarterly report\r\n"
    b"\r\n" + b"The numbers are in and they look fine.\r\n" * 200
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def temp_files(root: Path) -> list[Path]:
    return [p for p in all_files(root) if p.name.startswith(".tmp-")]


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(params=["flat", "nested"])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> BlobStore:
    """A blob store in the layout of today (``ab/<sha256>``) and in the old one
    (``ab/cd/<sha256>``, which archives made before keep: an ``ab/cd`` directory says so)."""
    if request.param == "nested":
        (tmp_path / "archive" / "blobs" / "00" / "00").mkdir(parents=True)
    store = BlobStore(tmp_path / "archive")
    assert store.nested == (request.param == "nested")
    return store


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    with Archive.open(tmp_path / "archive") as opened:
        yield opened


def entry(
    uid: int, data: bytes, store: BlobStore | None = None, **kwargs: object
) -> ArchivedMessage:
    """An ArchivedMessage for ``data``: stored in ``store`` if given, else only named."""
    if store is not None:
        blob = store.put(data)
    else:
        blob = BlobInfo(hashlib.sha256(data).hexdigest(), len(data), len(data))
    return ArchivedMessage(
        uid=uid,
        blob=blob,
        internal_date=kwargs.get("internal_date"),  # type: ignore[arg-type]
        flags=kwargs.get("flags", ()),  # type: ignore[arg-type]
        headers=parse_headers(data),
    )


def sha_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_folder(index: Index, user: str = "alice", path: str = "INBOX") -> int:
    user_id = index.ensure_user(user, f"{user}@example.com")
    mailbox = index.ensure_mailbox(user_id, f"{user}@example.com", user, "staff")
    return index.ensure_folder(mailbox, path)


# -- blobs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        TEXT,
        b"line one\r\nline two\nbare cr\r\x00NUL\x00\x00 end\r\n",
        bytes(range(256)) * 17,
        "Grüße, ünïcödé 8-bit\r\n".encode("latin-1"),
        random.Random(6).randbytes(6 * 1024 * 1024),
    ],
    ids=["empty", "text", "crlf-nul", "all-bytes", "8bit", "6mb"],
)
def test_put_get_round_trip_is_byte_exact(store: BlobStore, data: bytes) -> None:
    info = store.put(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size == len(data)
    assert info.stored_size == store.path(info.sha256).stat().st_size
    assert store.get(info.sha256) == data
    assert store.check(info.sha256) == len(data)
    assert store.exists(info.sha256)
    assert list(store.iter_hashes()) == [info.sha256]


def test_blob_layout_and_real_compression(store: BlobStore) -> None:
    info = store.put(TEXT)
    path = store.path(info.sha256)
    if store.nested:
        assert path == store.root / "blobs" / info.sha256[:2] / info.sha256[2:4] / info.sha256
    else:
        assert path == store.root / "blobs" / info.sha256[:2] / info.sha256
    assert path.is_file()
    # A store opened later on the same archive finds its layout from what is on disk.
    assert BlobStore(store.root).nested == store.nested
    assert BlobStore(store.root).get(info.sha256) == TEXT
    assert info.stored_size < info.size / 5
    stored = path.read_bytes()
    assert stored != TEXT
    # A plain zstd frame with its checksum and content size: any zstd tool reads it.
    params = zstandard.get_frame_parameters(stored)
    assert params.has_checksum
    assert params.content_size == len(TEXT)
    assert zstandard.ZstdDecompressor().decompress(stored) == TEXT


def test_put_twice_does_not_rewrite(store: BlobStore) -> None:
    first = store.put(TEXT)
    path = store.path(first.sha256)
    before = path.stat()
    time.sleep(0.01)
    second = store.put(TEXT)
    [third] = store.put_many([TEXT])
    after = path.stat()
    assert first == second == third
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert all_files(store.root) == [path]


def test_modes_are_private_even_with_umask_zero(tmp_path: Path, umask_zero: None) -> None:
    with Archive.open(tmp_path / "archive") as archive:
        info = archive.blobs.put(TEXT)
        archive.blobs.put_many([b"one", b"two"])
        blob = archive.blobs.path(info.sha256)
        assert mode(archive.root) == 0o700
        for directory in (archive.root / "blobs", blob.parent.parent, blob.parent):
            assert mode(directory) == 0o700, directory
        for directory in (archive.root / "blobs").rglob("*"):
            if directory.is_dir():
                assert mode(directory) == 0o700, directory
        for path in all_files(archive.root / "blobs"):
            assert mode(path) == 0o600, path
        assert mode(archive.root / "index.sqlite") == 0o600
        wal = archive.root / "index.sqlite-wal"
        if wal.exists():
            assert mode(wal) == 0o600
        with ArchiveLock(archive.root, "test"):
            assert mode(archive.root / "lock") == 0o600
    assert temp_files(tmp_path) == []


def test_put_many_keeps_order_and_duplicates(store: BlobStore) -> None:
    items = [b"a" * 100, b"b" * 100, b"a" * 100, b"", TEXT]
    infos = store.put_many(items)
    assert [i.sha256 for i in infos] == [hashlib.sha256(x).hexdigest() for x in items]
    assert infos[0] == infos[2]
    for info, data in zip(infos, items, strict=True):
        assert store.get(info.sha256) == data
    assert sorted(store.iter_hashes()) == sorted({i.sha256 for i in infos})
    assert list(store.iter_hashes()) == sorted(store.iter_hashes())
    assert temp_files(store.root) == []
    assert store.put_many([]) == []


def test_failed_put_leaves_no_temp_file(store: BlobStore) -> None:
    good = b"written to a temporary file before the batch fails"
    with pytest.raises(TypeError):
        store.put_many([good, object()])  # type: ignore[list-item]
    assert temp_files(store.root) == []
    assert not store.exists(hashlib.sha256(good).hexdigest())
    # A file where the blob's directory should be: the write fails, nothing is left.
    sha256 = hashlib.sha256(TEXT).hexdigest()
    leaf = store.path(sha256).parent
    leaf.parent.mkdir(parents=True, exist_ok=True)
    leaf.write_bytes(b"in the way")
    with pytest.raises(NotADirectoryError):
        store.put(TEXT)
    assert temp_files(store.root) == []
    assert store.put(good).sha256 == hashlib.sha256(good).hexdigest()


def test_temp_files_are_ignored_and_removed(store: BlobStore) -> None:
    info = store.put(TEXT)
    leaf = store.path(info.sha256).parent
    (leaf / ".tmp-deadbeef").write_bytes(b"half a blob")
    if store.nested:
        (leaf.parent / ".tmp-cafe").write_bytes(b"")
    (leaf / "not-a-blob").write_bytes(b"x")
    assert list(store.iter_hashes()) == [info.sha256]
    assert store.remove_temp_files() == (2 if store.nested else 1)
    assert temp_files(store.root) == []
    assert store.remove_temp_files() == 0
    assert BlobStore(store.root / "nowhere").remove_temp_files() == 0
    assert list(BlobStore(store.root / "nowhere").iter_hashes()) == []


def test_the_layout_is_decided_by_what_is_on_disk(tmp_path: Path) -> None:
    """A blob file in an ``ab`` directory is today's layout, an ``ab/cd`` directory the old
    one; temporary files, other names and empty directories decide nothing."""
    blobs = tmp_path / "archive" / "blobs"
    (blobs / "00").mkdir(parents=True)
    (blobs / "00" / ".tmp-x").write_bytes(b"")
    (blobs / "zz" / "00").mkdir(parents=True)  # not a prefix of a blob name
    assert not BlobStore(tmp_path / "archive").nested
    (blobs / "01").mkdir()
    (blobs / "01" / ("01" + "a" * 62)).write_bytes(b"")
    (blobs / "02" / "02").mkdir(parents=True)  # after the decisive 01: not looked at
    assert not BlobStore(tmp_path / "archive").nested
    (blobs / "00" / "aa").mkdir()
    assert BlobStore(tmp_path / "archive").nested


@pytest.mark.parametrize(
    "name",
    ["../../../../etc/passwd", "A" * 64, "a" * 63, "a" * 65, "g" * 64, "", "a" * 62 + "/."],
)
def test_bad_names_never_reach_the_filesystem(store: BlobStore, name: str) -> None:
    with pytest.raises(InvalidBlobName):
        store.path(name)
    with pytest.raises(InvalidBlobName):
        store.get(name)
    with pytest.raises(InvalidBlobName):
        store.exists(name)


def test_missing_blob(store: BlobStore) -> None:
    with pytest.raises(BlobMissing) as raised:
        store.get("0" * 64)
    assert raised.value.exit_code == ExitCode.INTEGRITY
    with pytest.raises(BlobMissing):
        store.check("0" * 64)


def test_flipped_byte_anywhere_is_damage(store: BlobStore) -> None:
    info = store.put(TEXT)
    path = store.path(info.sha256)
    original = path.read_bytes()
    for position in sorted({0, 4, 6, len(original) // 2, len(original) - 5, len(original) - 1}):
        damaged = bytearray(original)
        damaged[position] ^= 0xFF
        path.write_bytes(bytes(damaged))
        with pytest.raises(BlobDamaged):
            store.get(info.sha256)
        with pytest.raises(BlobDamaged):
            store.check(info.sha256)
    path.write_bytes(original)
    assert store.get(info.sha256) == TEXT


def test_valid_blob_under_the_wrong_name_is_damage(store: BlobStore) -> None:
    info = store.put(TEXT)
    other = store.put(b"other content")
    store.path(info.sha256).write_bytes(store.path(other.sha256).read_bytes())
    with pytest.raises(BlobDamaged, match="does not match"):
        store.get(info.sha256)
    with pytest.raises(BlobDamaged):
        store.check(info.sha256)


def _damage(path: Path, how: str, other: Path) -> None:
    original = path.read_bytes()
    if how == "flipped":
        path.write_bytes(original[:40] + bytes([original[40] ^ 0xFF]) + original[41:])
    elif how == "truncated":
        path.write_bytes(original[: len(original) // 2])
    elif how == "emptied":
        path.write_bytes(b"")
    elif how == "checksum":  # only zstd's frame checksum at the end is wrong
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    elif how == "other-content":
        path.write_bytes(other.read_bytes())
    elif how == "symlink":
        path.unlink()
        os.symlink(other, path)


@pytest.mark.parametrize(
    "how", ["flipped", "truncated", "emptied", "checksum", "other-content", "symlink"]
)
@pytest.mark.parametrize("many", [False, True])
def test_put_over_a_damaged_file_rewrites_it(store: BlobStore, how: str, many: bool) -> None:
    info = store.put(TEXT)
    other = store.put(b"some other message")
    path = store.path(info.sha256)
    _damage(path, how, store.path(other.sha256))
    with pytest.raises(BlobDamaged):
        store.check(info.sha256)
    if many:
        infos = store.put_many(
            [b"new one", TEXT, TEXT], [sha_of(b"new one"), info.sha256, info.sha256]
        )
        again = infos[1]
    else:
        again = store.put(TEXT)
    assert again == info
    assert store.get(info.sha256) == TEXT
    assert store.check(info.sha256) == len(TEXT)
    assert not path.is_symlink()
    assert store.get(other.sha256) == b"some other message", "a symlink's target is untouched"
    assert store.replaced == 1
    assert temp_files(store.root) == []
    # Intact now: the next put keeps the file.
    before = path.stat()
    store.put(TEXT)
    assert path.stat().st_ino == before.st_ino
    assert store.replaced == 1


def test_a_wrong_hash_never_replaces_a_file(store: BlobStore) -> None:
    info = store.put(TEXT)
    path = store.path(info.sha256)
    _damage(path, "truncated", path)
    damaged = path.read_bytes()
    with pytest.raises(ValueError, match="does not hash to"):
        store.put_many([b"not the text"], [info.sha256])
    assert path.read_bytes() == damaged
    assert temp_files(store.root) == []


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> BlobStore:
    return BlobStore(tmp_path_factory.mktemp("shared"))


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=20_000))
def test_any_bytes_round_trip(shared_store: BlobStore, data: bytes) -> None:
    first = shared_store.put(data)
    assert shared_store.get(first.sha256) == data
    assert shared_store.put(data) == first
    assert shared_store.put_many([data, data]) == [first, first]


# -- verify ------------------------------------------------------------------------


def test_verify_clean_damaged_missing_orphan(archive: Archive) -> None:
    folder = make_folder(archive.index)
    entries = [entry(uid, TEXT + bytes([uid]), archive.blobs) for uid in range(1, 6)]
    assert archive.index.record(folder, 1, entries, None).placements == 5
    report = verify(archive.blobs, archive.index)
    assert report.ok
    assert (report.checked, report.damaged, report.missing, report.orphans) == (5, (), (), ())

    orphan = archive.blobs.put(b"stored, then the run was killed before the index row")
    report = verify(archive.blobs, archive.index)
    assert report.ok
    assert report.orphans == (orphan.sha256,)
    assert report.checked == 6

    damaged = entries[1].blob.sha256
    path = archive.blobs.path(damaged)
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))
    missing = entries[3].blob.sha256
    archive.blobs.path(missing).unlink()

    report = verify(archive.blobs, archive.index)
    assert not report.ok
    assert report.damaged == (damaged,)
    assert report.missing == (missing,)
    assert report.orphans == (orphan.sha256,)
    assert report.checked == 5
    with pytest.raises(BlobMissing):
        archive.blobs.get(missing)


def test_verify_reads_in_bounded_chunks(archive: Archive) -> None:
    seen: list[int] = []
    for n in range(3):
        archive.blobs.put(random.Random(n).randbytes(300_000))
    report = verify(archive.blobs, archive.index, progress=seen.append)
    assert report.ok
    assert seen == [1, 2, 3]
    assert len(report.orphans) == 3


# -- crash safety ------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import random, sys
    from pathlib import Path
    from imapsync_decl.store.message import parse_headers
    from imapsync_decl.store import ArchivedMessage
    from imapsync_decl.store.archive import open_for_writing

    root, seed = Path(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)

    def body():
        if rng.random() < 0.6:  # shared content: the same message in many folders
            k = rng.randrange(30)
            return f"Subject: shared {k}\\r\\n\\r\\n".encode() + bytes([k]) * (1000 * k)
        noise = rng.randbytes(rng.randrange(200_000))
        return b"Subject: unique\\r\\n\\r\\n" + noise

    with open_for_writing(root, "crash test") as archive:
        archive.blobs.remove_temp_files()
        index = archive.index
        user = index.ensure_user("u", "u@example.com")
        mailbox = index.ensure_mailbox(user, "u@example.com", "u", "staff")
        folders = [index.ensure_folder(mailbox, p) for p in ("INBOX", "Sent", "Old")]
        print("ready", flush=True)
        while True:
            folder = rng.choice(folders)
            done = index.archived_uids(folder, 7)
            first = max(done, default=0) + 1
            bodies = [body() for _ in range(rng.randint(1, 6))]
            if rng.random() < 0.5:
                infos = archive.blobs.put_many(bodies)
            else:
                infos = [archive.blobs.put(b) for b in bodies]
            entries = [
                ArchivedMessage(first + i, info, None, ("\\\\Seen",), parse_headers(b))
                for i, (info, b) in enumerate(zip(infos, bodies))
            ]
            index.record(folder, 7, entries, None)
            index.set_checkpoint(folder, 7, first + len(entries), len(done) + len(entries))
    """
)


def check_consistent(root: Path) -> int:
    """Assert the archive promise after a crash; return the number of placements."""
    with Archive.open(root) as archive:
        archive.blobs.remove_temp_files()
        assert temp_files(root) == []
        report = verify(archive.blobs, archive.index)
        assert report.ok, report
        rows = list(archive.index.iter_placements())
        keys = [(r.folder, r.uidvalidity, r.uid) for r in rows]
        assert len(keys) == len(set(keys))
        hashes = {r.sha256 for r in rows}
        assert set(archive.index.iter_message_hashes()) == hashes  # no message without a copy
        for sha256 in hashes:
            data = archive.blobs.get(sha256)
            assert hashlib.sha256(data).hexdigest() == sha256
        for path in ("INBOX", "Sent", "Old"):
            folder = archive.index.find_folder("u", "u@example.com", path)
            if folder is None:
                continue
            uids = archive.index.archived_uids(folder, 7)
            assert uids == set(range(1, len(uids) + 1))  # nothing skipped, nothing doubled
            checkpoint = archive.index.checkpoint(folder)
            if checkpoint is not None:  # everything below the checkpoint is archived
                assert set(range(1, checkpoint.uidnext)) <= uids
                assert checkpoint.message_count == checkpoint.uidnext - 1
        return len(rows)


def test_kill_9_at_random_moments_loses_and_corrupts_nothing(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    root = tmp_path / "archive"
    rng = random.Random(20240501)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    placements = 0
    for round_number in range(12):
        child = subprocess.Popen(
            [sys.executable, str(script), str(root), str(round_number)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line == b"ready\n", child.communicate()[1].decode()
            time.sleep(rng.uniform(0.01, 0.25))
        finally:
            child.send_signal(signal.SIGKILL)
            _, stderr = child.communicate()
        assert child.returncode == -signal.SIGKILL, stderr.decode()
        count = check_consistent(root)
        assert count >= placements  # committed rows never disappear
        placements = count
    assert placements > 0


# -- index -------------------------------------------------------------------------


def test_index_settings_on_every_connection(tmp_path: Path, umask_zero: None) -> None:
    path = tmp_path / "index.sqlite"
    with Index.open(path) as first, Index.open(path) as second:
        for index in (first, second):
            settings_ = index.settings()
            assert settings_["journal_mode"] == "wal"
            assert settings_["synchronous"] == 2  # FULL
            assert settings_["foreign_keys"] == 1
        assert first.archive_id == second.archive_id
    assert mode(path) == 0o600


def test_migrations_reopen_and_refuse_newer(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    with Index.open(path) as index:
        archive_id = index.archive_id
        assert index.schema_version == len(MIGRATIONS)
        folder = make_folder(index)
    with Index.open(path) as index:
        assert index.archive_id == archive_id
        assert index.find_folder("alice", "alice@example.com", "INBOX") == folder
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    raw.close()
    with pytest.raises(IndexTooNew, match="newer"):
        Index.open(path)


def test_archive_ids_differ(tmp_path: Path) -> None:
    with Index.open(tmp_path / "a.sqlite") as a, Index.open(tmp_path / "b.sqlite") as b:
        assert a.archive_id != b.archive_id
        assert len(a.archive_id) == 36


def test_ensure_is_idempotent(archive: Archive) -> None:
    index = archive.index
    user = index.ensure_user("alice")
    assert index.ensure_user("alice", "alice@example.com", "Alice") == user
    assert index.ensure_user("alice") == user
    mailbox = index.ensure_mailbox(user, "alice@example.com", "alice", "staff")
    assert index.ensure_mailbox(user, "alice@example.com", "alice", "other") == mailbox
    # Another login (or server) is another mailbox, even in the same archive folder.
    assert index.ensure_mailbox(user, "alice@example.com", "alice2", "other") != mailbox
    folder = index.ensure_folder(mailbox, "INBOX")
    assert index.ensure_folder(mailbox, "INBOX") == folder
    assert index.ensure_folder(mailbox, "INBOX/Sub") != folder
    assert index.find_folder("alice", "alice@example.com", "INBOX") == folder
    assert index.find_folder("alice", "alice@example.com", "Nope") is None
    assert index.find_folder("bob", "alice@example.com", "INBOX") is None
    assert index.counts() == {
        "users": 1,
        "mailboxes": 2,
        "folders": 2,
        "messages": 0,
        "placements": 0,
    }


def test_record_is_atomic(archive: Archive) -> None:
    index = archive.index
    folder = make_folder(index)

    def fail_after_recording() -> None:
        with index.atomic():
            assert (
                index.record(folder, 1, [entry(1, b"one"), entry(2, b"two")], None).placements == 2
            )
            with index.atomic():  # a nested block joins the outer transaction
                index.set_checkpoint(folder, 1, 3, 2)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_after_recording()
    assert index.counts()["messages"] == 0
    assert index.counts()["placements"] == 0
    assert index.checkpoint(folder) is None

    # A conflict in the middle of a batch keeps nothing of the batch.
    index.record(folder, 1, [entry(5, b"five")], None)
    with pytest.raises(PlacementConflict):
        index.record(folder, 1, [entry(6, b"six"), entry(5, b"not five")], None)
    assert index.placements_of(folder, 1) == {5: hashlib.sha256(b"five").hexdigest()}
    assert index.counts()["messages"] == 1


def test_nested_atomic_failure_undoes_only_itself(archive: Archive) -> None:
    index = archive.index
    folder = make_folder(index)

    def fail_inside() -> None:
        with index.atomic():
            index.record(folder, 1, [entry(2, b"two")], None)
            raise ValueError("inner")

    with index.atomic():
        index.record(folder, 1, [entry(1, b"one")], None)
        with pytest.raises(ValueError, match="inner"):
            fail_inside()
    assert index.archived_uids(folder, 1) == {1}


def test_record_is_idempotent_and_deduplicates(archive: Archive) -> None:
    index = archive.index
    inbox = make_folder(index, path="INBOX")
    sent = make_folder(index, path="Sent")
    entries = [entry(1, TEXT, archive.blobs), entry(2, b"second", archive.blobs)]
    assert index.record(inbox, 9, entries, "run-1").placements == 2
    assert index.record(inbox, 9, entries, "run-1").placements == 0
    assert index.record(sent, 4, [entry(17, TEXT, archive.blobs)], "run-1").placements == 1
    assert index.counts()["messages"] == 2
    assert index.counts()["placements"] == 3
    assert index.archived_uids(inbox, 9) == {1, 2}
    assert index.archived_uids(inbox, 8) == set()
    assert index.known_blobs([entries[0].blob.sha256, "f" * 64]) == {entries[0].blob.sha256}


def test_repoint_moves_and_keeps(archive: Archive) -> None:
    index = archive.index
    folder = make_folder(index)
    contents = {uid: f"message {uid}".encode() for uid in (1, 2, 3)}
    index.record(folder, 10, [entry(uid, c) for uid, c in contents.items()], None)
    before = index.counts()
    assert index.repoint(folder, 20, [(10, 1, 101), (10, 2, 102), (10, 99, 199)], "run-2") == 2
    sha = {uid: hashlib.sha256(c).hexdigest() for uid, c in contents.items()}
    assert index.placements_of(folder, 20) == {101: sha[1], 102: sha[2]}
    assert index.placements_of(folder, 10) == {3: sha[3]}
    after = index.counts()
    assert after == before
    assert index.count_placements(folder) == 3
    assert index.count_placements(folder, uidvalidity=20) == 2
    assert index.count_placements(folder, exclude_uidvalidity=20) == 1
    assert index.repoint(folder, 20, [(10, 1, 101), (10, 2, 102)], "run-2") == 0
    # A move onto a different message is refused, and the whole call is undone.
    with pytest.raises(PlacementConflict):
        index.repoint(folder, 20, [(10, 3, 101)], None)
    assert index.placements_of(folder, 10) == {3: sha[3]}
    with pytest.raises(ValueError, match="different"):
        index.repoint(folder, 10, [(10, 1, 2)], None)


def test_checkpoint(archive: Archive) -> None:
    index = archive.index
    folder = make_folder(index)
    assert index.checkpoint(folder) is None
    index.set_checkpoint(folder, 1234, 57, 50)
    assert index.checkpoint(folder) == Checkpoint(1234, 57, 50)
    index.set_checkpoint(folder, 1234, 60, 52)
    assert index.checkpoint(folder) == Checkpoint(uidvalidity=1234, uidnext=60, message_count=52)


def test_iter_placements_order_filters_and_values(archive: Archive) -> None:
    index = archive.index
    bob_inbox = make_folder(index, "bob", "INBOX")
    alice_sent = make_folder(index, "alice", "Sent")
    alice_inbox = make_folder(index, "alice", "INBOX")
    berlin = timezone(timedelta(hours=2))
    when = datetime(2024, 5, 1, 12, 30, 5, tzinfo=berlin)
    index.record(bob_inbox, 1, [entry(3, b"b3"), entry(1, b"b1")], None)
    index.record(alice_sent, 5, [entry(2, b"s2")], None)
    index.record(alice_inbox, 7, [entry(9, b"i9")], None)
    index.record(
        alice_inbox, 6, [entry(4, b"i4", internal_date=when, flags=("\\Seen", "$Label 1"))], None
    )
    rows = list(index.iter_placements())
    assert [(r.user, r.folder, r.uidvalidity, r.uid) for r in rows] == [
        ("alice", "INBOX", 6, 4),
        ("alice", "INBOX", 7, 9),
        ("alice", "Sent", 5, 2),
        ("bob", "INBOX", 1, 1),
        ("bob", "INBOX", 1, 3),
    ]
    first = rows[0]
    assert first.internal_date == when
    assert first.internal_date is not None
    assert first.internal_date.utcoffset() == timedelta(hours=2)
    assert first.flags == ("\\Seen", "$Label 1")
    assert first.size == 2
    assert first.archive_folder == "alice@example.com"
    assert rows[1].internal_date is None
    assert [r.uid for r in index.iter_placements(user="bob")] == [1, 3]
    assert [r.uid for r in index.iter_placements(folder="Sent")] == [2]
    assert [r.uid for r in index.iter_placements("alice", "alice@example.com", "INBOX")] == [4, 9]
    assert list(index.iter_placements(archive_folder="nobody@example.com")) == []


def test_paging_over_many_rows(archive: Archive) -> None:
    index = archive.index
    folder = make_folder(index)
    entries = [entry(uid, f"m{uid}".encode()) for uid in range(1, 2602)]
    assert index.record(folder, 3, entries, None).placements == 2601
    assert [r.uid for r in index.iter_placements()] == list(range(1, 2602))
    hashes = list(index.iter_message_hashes())
    assert hashes == sorted(e.blob.sha256 for e in entries)
    wanted = [e.blob.sha256 for e in entries[::2]] + ["0" * 64]
    assert index.known_blobs(wanted) == set(wanted[:-1])


def test_naive_datetime_is_local_time(archive: Archive) -> None:
    index = archive.index
    folder = make_folder(index)
    naive = datetime(2024, 1, 2, 3, 4, 5)
    index.record(folder, 1, [entry(1, b"x", internal_date=naive)], None)
    [row] = index.iter_placements()
    assert row.internal_date == naive.astimezone()
    assert row.internal_date is not None
    assert row.internal_date.tzinfo is not None


def test_runs(archive: Archive) -> None:
    index = archive.index
    index.begin_run("r1", "apply")
    index.begin_run("r2", "verify")
    run = index.get_run("r1")
    assert run is not None
    assert (run["status"], run["command"], run["finished_at"], run["summary"]) == (
        "running",
        "apply",
        None,
        None,
    )
    index.finish_run("r1", "ok", {"archived": 3, "folders": ["INBOX"]})
    run = index.get_run("r1")
    assert run is not None
    assert run["status"] == "ok"
    assert run["summary"] == {"archived": 3, "folders": ["INBOX"]}
    assert datetime.fromisoformat(run["finished_at"]).tzinfo is not None
    assert [r["id"] for r in index.last_runs(5)] == ["r2", "r1"]
    assert [r["id"] for r in index.last_runs(1)] == ["r2"]
    assert index.get_run("nope") is None
    with pytest.raises(sqlite3.IntegrityError):
        index.begin_run("r1", "again")


def test_index_never_names_unknown_folder(archive: Archive) -> None:
    with pytest.raises(ArchiveIndexError, match="no folder"):
        archive.index.record(999, 1, [entry(1, b"x")], None)
    assert archive.index.counts()["messages"] == 0


# -- lock --------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from imapsync_decl.store import ArchiveLock

    with ArchiveLock(Path(sys.argv[1]), "apply --profile staff"):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_lock_names_the_holder_and_dies_with_it(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    holder = subprocess.Popen(
        [sys.executable, str(script), str(root)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"locked\n"
        with pytest.raises(ArchiveLocked) as raised, ArchiveLock(root, "verify"):
            pass
        error = raised.value
        assert error.exit_code == ExitCode.LOCKED
        assert int(error.exit_code) == 13
        assert f"pid {holder.pid}" in error.message
        assert "`apply --profile staff`" in error.message
        assert str(root) in error.message
        assert "wait for it to finish" in error.message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    # The kernel released the lock with the process; the stale details do not block.
    assert (root / "lock").read_text() != ""
    with ArchiveLock(root, "verify") as lock:
        assert lock.held
        assert str(os.getpid()) in (root / "lock").read_text()
    assert (root / "lock").read_text() == ""


# -- headers -----------------------------------------------------------------------


def b64(text: str, charset: str = "utf-8") -> str:
    return base64.b64encode(text.encode(charset)).decode()


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (f"=?UTF-8?B?{b64('Grüße aus Köln')}?=", "Grüße aus Köln"),
        ("=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=", "Grüße aus Köln"),
        (
            "=?ISO-8859-1?Q?Gr=FC=DFe?= und =?iso-8859-1?b?" + b64("Bär", "latin-1") + "?=",
            "Grüße und Bär",
        ),
        ("=?utf-8?q?one?= =?utf-8?q?_two?=", "one two"),  # whitespace between words dropped
        ("=?utf-8?B?4oI=?= =?utf-8?B?rA==?=", "€"),  # one character split over two words
        ("=?utf-8*en?q?lang?=", "lang"),
        ("plain =?bogus-charset?q?caf=C3=A9?= text", "plain café text"),
        ("=?utf-8?B?####?=", "=?utf-8?B?####?="),
        ("=?utf-8?q?bad=ZZbyte?=", "bad=ZZbyte"),
        ("=?utf-8?B?8J+Yg?=", "\ufffd"),
        ("no encoding here", "no encoding here"),
    ],
)
def test_encoded_words(subject: str, expected: str) -> None:
    raw = f"Subject: {subject}\r\n\r\nbody".encode()
    assert parse_headers(raw).subject == expected


def test_all_fields_folding_and_end_of_headers() -> None:
    raw = (
        b"Received: from somewhere\r\n"
        b"\tby elsewhere\r\n"
        b"Message-ID:\r\n <abc@example.com>\r\n"
        b"Date: Wed, 1 May 2024 12:00:00 +0200\r\n"
        b"FROM: =?utf-8?q?J=C3=B6rg?= <joerg@example.com>\r\n"
        b"To: a@example.com,\r\n"
        b"\tb@example.com\r\n"
        b"Subject: a long subject\r\n"
        b"   that was folded\r\n"
        b"Subject: a second subject is ignored\r\n"
        b"\r\n"
        b"To: in-the-body@example.com\r\n"
    )
    assert parse_headers(raw) == MessageHeaders(
        message_id="<abc@example.com>",
        date="Wed, 1 May 2024 12:00:00 +0200",
        from_addr="Jörg <joerg@example.com>",
        to_addr="a@example.com, b@example.com",
        subject="a long subject that was folded",
    )


def test_bare_lf_missing_headers_and_raw_8bit() -> None:
    raw = "Subject: Grüße\n folded\nX-Other: y\n\nFrom: body@example.com\n".encode()
    headers = parse_headers(raw)
    assert headers.subject == "Grüße folded"
    assert (headers.message_id, headers.date, headers.from_addr, headers.to_addr) == (
        None,
        None,
        None,
        None,
    )
    assert parse_headers(b"Subject: Gr\xfc\xdfe\r\n\r\n").subject == "Grüße"  # 8-bit, not UTF-8
    assert parse_headers(b"") == MessageHeaders()
    assert parse_headers(b"\r\nSubject: after the end\r\n") == MessageHeaders()
    assert parse_headers(b"Subject:\r\n\r\n").subject is None
    assert (
        parse_headers(b"Subject: x" * 500 + b"\r\n").subject
        == ("Subject: x" * 500)[9:][:MAX_VALUE_LENGTH]
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe\x00\x00Subject: \x00\x01\x02\r\n\r\n",
        b"Subject: =?\r\n\r\n",
        b"Subject: =?utf-8?\x00?x?=\r\n",
        b":::\r\n: no name\r\nSubject",
        b"Subject: =?utf-16?b?2D3e?=\r\n",
        b" continuation first\r\nFrom: x\r\n",
        b"From: " + b"=?utf-8?q?" + b"=FF" * 5000 + b"?=\r\n",
    ],
)
def test_garbage_never_raises(raw: bytes) -> None:
    headers = parse_headers(raw)
    for value in (headers.subject, headers.from_addr, headers.to_addr):
        assert value is None or (len(value) <= MAX_VALUE_LENGTH and "\x00" not in value)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.one_of(
        st.binary(max_size=3000),
        st.lists(
            st.sampled_from(
                [
                    b"Subject: ",
                    b"From:",
                    b"=?",
                    b"?=",
                    b"?b?",
                    b"?Q?",
                    b"utf-8",
                    b"=C3",
                    b"\r\n",
                    b"\n",
                    b" ",
                    b"\t",
                    b"\xff",
                    b"\x00",
                    b"abc",
                    b"_",
                ]
            ),
            max_size=80,
        ).map(b"".join),
    )
)
def test_parse_headers_never_raises(raw: bytes) -> None:
    headers = parse_headers(raw)
    for value in (
        headers.message_id,
        headers.date,
        headers.from_addr,
        headers.to_addr,
        headers.subject,
    ):
        assert value is None or (isinstance(value, str) and 0 < len(value) <= MAX_VALUE_LENGTH)


def test_archive_open_creates_everything(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "archive"
    with Archive.open(root) as archive:
        assert archive.index.path == root / "index.sqlite"
        assert archive.blobs.root == root
        assert archive.index.counts()["users"] == 0
        assert datetime.now(UTC).year >= 2024


# -- storage interfaces ------------------------------------------------------------


def test_the_sqlite_index_and_the_blob_directory_fill_the_storage_interfaces(
    tmp_path: Path,
) -> None:
    """mypy checks the assignments (the SQLite Index and the local BlobStore satisfy the
    protocols planning, apply, verify and export are written against); the calls check
    that the archive answers through them."""
    with Archive.open(tmp_path / "archive") as archive:
        storage: ArchiveStorage = archive
        blobs: BlobStorage = archive.blobs
        index: MessageIndex = archive.index
        reader: IndexReader = archive.index
        info = blobs.put(TEXT)
        with index.atomic():
            user = index.ensure_user("alice", "alice@example.com")
            mailbox = index.ensure_mailbox(user, "alice@example.com", "alice", "staff")
            folder = index.ensure_folder(mailbox, "INBOX")
            entry = ArchivedMessage(1, info, None, (), parse_headers(TEXT))
            assert index.record(folder, 7, [entry], None) == Recorded(1, 1)
        assert reader.find_folder("alice", "alice@example.com", "INBOX") == folder
        assert reader.archived_uids(folder, 7) == {1}
        assert list(reader.iter_message_hashes()) == [info.sha256]
        assert list(storage.blobs.iter_hashes()) == [info.sha256]
        assert verify(storage.blobs, storage.index).ok
