"""Search indexing in the executor, against the scripted mailbox; and terminal-safe text.

The write order: a message's search document is written only after its placement is
committed in the index. A failing search index (a full disk) never fails or undoes
archiving: the run records the failure, and the next apply indexes what is missing.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import pytest
from test_engine import Engine, message

from imapsync_decl.cli.search import terminal_text
from imapsync_decl.run import indexing
from imapsync_decl.store.search.database import SearchIndex
from imapsync_decl.store.search.indexer import index_messages


@pytest.fixture
def engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Engine]:
    bed = Engine(tmp_path, capsys, delete=False)
    yield bed
    bed.mailbox.close()


def test_each_document_is_written_after_its_placement_is_committed(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def checked(search: SearchIndex, messages: Sequence[tuple[str, bytes, datetime | None]]) -> int:
        shas = [sha for sha, _, _ in messages]
        # another connection sees only what is committed
        with sqlite3.connect(engine.archive / "index.sqlite") as db:
            placed = {r[0] for r in db.execute("SELECT sha256 FROM placements")}
        assert set(shas) <= placed, "a search document before its placement"
        seen.extend(shas)
        return index_messages(search, messages)

    monkeypatch.setattr(indexing, "index_messages", checked)
    code, result = engine.run("apply", "--batch-messages", "1")
    assert code == 0, result
    assert result["search"] == {"indexed": 4, "seconds": result["search"]["seconds"], "error": None}
    assert sorted(seen) == sorted(hashlib.sha256(message(n)).hexdigest() for n in (1, 2, 3, 5))


def test_a_full_disk_under_the_search_index_does_not_fail_archiving(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(search: SearchIndex, messages: object) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(indexing, "index_messages", full)
    code, result = engine.run("apply")
    assert code == 0, result
    assert result["totals"]["archived"] == 4
    assert len(engine.placements()) == 4
    assert result["search"]["indexed"] == 0
    assert result["search"]["error"] == "OperationalError: database or disk is full"
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
