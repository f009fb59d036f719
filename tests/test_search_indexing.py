"""Search indexing in the executor, against the scripted mailbox; and terminal-safe text.

The write order: a message's search document is written only after its placement is
committed in the index. A failing search index (a full disk) never fails or undoes
archiving: the run records the failure, and the next apply indexes what is missing.
"""

from __future__ import annotations

import base64
import os
import pickle
import sqlite3
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from test_engine import Engine

from imapsync_decl.cli.search import terminal_text
from imapsync_decl.run import indexing, search_documents, search_worker
from imapsync_decl.store.blobs import BlobStore
from imapsync_decl.store.search import indexer
from imapsync_decl.store.search.database import Document, SearchIndex
from imapsync_decl.store.search.extract import extract


@pytest.fixture
def engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Engine]:
    bed = Engine(tmp_path, capsys, delete=False)
    yield bed
    bed.mailbox.close()


def _worker_run(archive: Path, text: bytes, *, then_close: bool = False) -> dict[str, object]:
    """The worker's work on the commands ``text``, as if from its stdin: a pipe that the
    archiving process keeps open (or closes, as when it is killed)."""
    read, write = os.pipe()
    try:
        os.write(write, text)
        if then_close:
            os.close(write)
        return search_worker.run(archive, search_worker._Commands(read))
    finally:
        os.close(read)
        if not then_close:
            os.close(write)


def test_the_indexer_takes_only_committed_placements(engine: Engine) -> None:
    code, result = engine.run("apply")
    assert code == 0, result
    assert result["search"]["indexed"] == 4
    with SearchIndex.open(engine.archive) as search:
        search.clear()
    # The rows of the four messages, taken out of the index, then put back in a
    # transaction that is still open while the worker looks.
    writer = sqlite3.connect(engine.archive / "index.sqlite", isolation_level=None)
    writer.execute("PRAGMA foreign_keys = OFF")
    messages = writer.execute("SELECT * FROM messages").fetchall()
    placements = writer.execute("SELECT * FROM placements").fetchall()
    writer.execute("DELETE FROM placements")
    writer.execute("DELETE FROM messages")
    writer.execute("BEGIN")
    writer.executemany(
        f"INSERT INTO messages VALUES ({', '.join('?' * len(messages[0]))})",  # noqa: S608
        messages,
    )
    writer.executemany(
        f"INSERT INTO placements VALUES ({', '.join('?' * len(placements[0]))})",  # noqa: S608
        placements,
    )
    report = _worker_run(engine.archive, b"finish\n")
    assert (report["indexed"], report["error"]) == (0, None), "indexed before the commit"
    writer.execute("COMMIT")
    writer.close()
    report = _worker_run(engine.archive, b"more\nfinish\n")
    assert (report["indexed"], report["error"]) == (4, None)


def test_the_indexer_stops_when_the_run_is_gone(engine: Engine) -> None:
    assert engine.run("apply")[0] == 0
    with SearchIndex.open(engine.archive) as search:
        search.clear()
    # stdin ends without `finish` (the run was killed): nothing more is done
    report = _worker_run(engine.archive, b"", then_close=True)
    assert report["indexed"] == 0
    report = _worker_run(engine.archive, b"stop\nfinish\n")
    assert report["indexed"] == 0
    report = _worker_run(engine.archive, b"finish\n")
    assert report["indexed"] == 4


def test_catch_up_adds_in_batches_bounded_by_their_text(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch is added once its documents hold BATCH_TEXT characters: with a bound of one
    character, each message is a transaction of its own, and every one is indexed."""
    assert engine.run("apply")[0] == 0
    with SearchIndex.open(engine.archive) as search:
        search.clear()
    monkeypatch.setattr(indexer, "BATCH_TEXT", 1)
    added: list[int] = []
    real_add = SearchIndex.add

    def add(self: SearchIndex, documents: Sequence[tuple[str, Document]]) -> int:
        added.append(len(documents))
        return real_add(self, documents)

    monkeypatch.setattr(SearchIndex, "add", add)
    with SearchIndex.open(engine.archive) as search:
        done = indexer.catch_up(search, BlobStore(engine.archive))
        assert (done.indexed, done.skipped) == (4, [])
        assert search.counts().unindexed == 0
    assert added == [1, 1, 1, 1]


_REPORT_OF_A_FULL_DISK = (
    '{"indexed": 0, "skipped": [], "seconds": 0.1,'
    ' "error": "OperationalError: database or disk is full"}'
)


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (f"print({_REPORT_OF_A_FULL_DISK!r})", "OperationalError: database or disk is full"),
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
            "the search indexer ended without a report (exit -9)",
        ),
    ],
    ids=["full-disk", "killed"],
)
def test_a_failing_indexer_does_not_fail_archiving(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, script: str, error: str
) -> None:
    monkeypatch.setattr(indexing, "worker_command", lambda root: [sys.executable, "-c", script])
    code, result = engine.run("apply")
    assert code == 0, result
    assert result["totals"]["archived"] == 4
    assert len(engine.placements()) == 4
    assert result["search"]["indexed"] == 0
    assert result["search"]["error"] == error
    monkeypatch.undo()
    code, again = engine.run("apply")
    assert code == 0
    assert (again["totals"]["archived"], again["search"]["indexed"]) == (0, 4)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Invoice \x1b]0;evil\x07 due", "Invoice  due"),
        ("a\x1b[2Jb", "ab"),
        ("a\x1b[31;1mred\x1b[0m", "ared"),
        ("title \x1b]2;x\x1b\\ end", "title  end"),
        ("bell\x07 nul\x00 del\x7f c1\x9b31m", "bell nul del c1"),
        ("lone escape \x1b", "lone escape "),
        ("line\nbreak\ttab\r\n", "line break tab "),
        ("Grüße 東京 ✓", "Grüße 東京 ✓"),
    ],
)
def test_terminal_text_drops_escape_sequences_and_control_characters(text: str, shown: str) -> None:
    assert terminal_text(text) == shown
    kept = terminal_text(text, multiline=True)
    assert "\x1b" not in kept
    assert "\x07" not in kept


def test_terminal_text_keeps_lines_and_tabs_when_multiline() -> None:
    assert terminal_text("a\r\nb\tc\rd\x1b[2J", multiline=True) == "a\nb\tc\nd"


def test_a_large_attachment_is_named_and_the_text_around_it_read() -> None:
    from imapsync_decl.store.search.extract import extract, readable

    blob = base64.encodebytes(bytes(range(256)) * 2000).replace(b"\n", b"\r\n")
    raw = (
        b"From: a@example.test\r\nSubject: scan\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfirstword\r\n"
        b'--b1\r\nContent-Type: image/png; name="big.png"\r\nContent-Transfer-Encoding: base64\r\n'
        b'Content-Disposition: attachment; filename="big.png"\r\n\r\n' + blob + b"--b1\r\n"
        b"Content-Type: text/html\r\n\r\n<p>lastword</p>\r\n--b1--\r\n"
    )
    assert len(raw) > 500_000
    document = extract(raw)
    assert document.extracted
    assert document.attachment_names == ("big.png",)
    assert document.has_attachment
    assert "firstword" in document.body
    assert "lastword" in document.body
    assert document.size == len(raw)
    shown = readable(raw)
    assert shown.attachment_names == ("big.png",)
    assert "lastword" in shown.text


def _documents_of(archive: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """One message of the archive, packed as a mailbox worker packs a large one."""
    monkeypatch.setattr(search_documents, "MIN_BYTES", 0)
    with sqlite3.connect(archive / "index.sqlite") as db:
        (sha256,) = db.execute("SELECT sha256 FROM messages ORDER BY rowid LIMIT 1").fetchone()
    payload = search_documents.pack([(sha256, BlobStore(archive).get(sha256), None)])
    assert payload is not None
    return payload


def test_the_indexer_adds_the_documents_it_is_given_and_reads_the_rest(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert engine.run("apply")[0] == 0
    with SearchIndex.open(engine.archive) as search:
        search.clear()
    payload = _documents_of(engine.archive, monkeypatch)
    command = b"docs %d\n" % len(payload) + payload + b"finish\n"
    report = _worker_run(engine.archive, command)
    assert (report["indexed"], report["documents"], report["error"]) == (4, 1, None)


@pytest.mark.parametrize(
    "command",
    [
        b"docs 5\nxxxxxfinish\n",  # not what pack makes: dropped, read from the blob
        b"docs 2\n\x80\x04finish\n",  # a torn pickle
    ],
    ids=["garbage", "torn"],
)
def test_documents_that_do_not_unpack_are_dropped_and_their_messages_read(
    engine: Engine, command: bytes
) -> None:
    assert engine.run("apply")[0] == 0
    with SearchIndex.open(engine.archive) as search:
        search.clear()
    report = _worker_run(engine.archive, command)
    assert (report["indexed"], report["documents"], report["error"]) == (4, 0, None)


@pytest.mark.parametrize(
    "command",
    [b"docs 999999999999\nfinish\n", b"docs -1\nfinish\n", b"x" * 5000],
    ids=["oversized", "negative", "endless-line"],
)
def test_a_broken_command_stream_stops_the_indexer(engine: Engine, command: bytes) -> None:
    assert engine.run("apply")[0] == 0
    with SearchIndex.open(engine.archive) as search:
        search.clear()
    report = _worker_run(engine.archive, command)
    assert report["indexed"] == 0


def test_unpack_takes_only_what_pack_makes() -> None:
    good = "a" * 64
    document = extract(b"Subject: hi\r\n\r\nbody\r\n")
    assert search_documents.unpack(pickle.dumps([(good, document)])) == [(good, document)]
    for wrong in (
        {"a": 1},
        [(good,)],
        [("A" * 64, document)],
        [(good, "not a document")],
        [("../x", document)],
    ):
        assert search_documents.unpack(pickle.dumps(wrong)) is None
    assert search_documents.unpack(b"not a pickle") is None


def test_only_large_messages_are_packed() -> None:
    small = b"Subject: small\r\n\r\nbody\r\n"
    large = b"Subject: large\r\n\r\n" + b"x" * search_documents.MIN_BYTES
    assert search_documents.pack([("a" * 64, small, None)]) is None
    packed = search_documents.pack([("a" * 64, small, None), ("b" * 64, large, None)])
    assert packed is not None
    unpacked = search_documents.unpack(packed)
    assert unpacked is not None
    assert [(sha, doc.subject) for sha, doc in unpacked] == [("b" * 64, "large")]


def test_apply_never_waits_for_an_indexer_that_reads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An indexer that takes no input (hung on a lock, say): the pipe fills, and then the
    documents are dropped instead of blocking the archiving; stopping it still ends."""
    monkeypatch.setattr(
        indexing,
        "worker_command",
        lambda root: [sys.executable, "-c", "import time; time.sleep(60)"],
    )
    monkeypatch.setattr(indexing, "STOP_WAIT_SECONDS", 0.5)
    run = indexing.SearchIndexing(tmp_path)
    payload = b"x" * (1024 * 1024)
    done = threading.Event()

    def archive() -> None:
        for _ in range(40):  # 40 MB: far more than a pipe and the queue hold
            run.committed(payload)
        done.set()

    thread = threading.Thread(target=archive, daemon=True)
    thread.start()
    thread.join(60)
    assert done.is_set(), "committed() blocked on the indexer"
    sender = run._sender
    assert sender is not None
    assert sender.dropped >= 40 - indexing.MAX_QUEUED // len(payload) - 1  # the queue is bounded
    run.close()
    assert run.dropped >= sender.dropped
    assert run.error == "the search indexer ended without a report (exit -9)"
