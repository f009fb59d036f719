"""The planner and the executor against a scripted mailbox (tests/servers/fake_mailbox.py).

No Dovecot: these run everywhere, and they see every command the engine sends. The
same guarantees are tested against the real Dovecot in test_apply.py and test_delete.py.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imapsync_decl.cli.main import main

from helpers import write_config
from servers.fake_mailbox import READ_ONLY_COMMANDS, FakeFolder, FakeMailbox


def message(n: int) -> bytes:
    return (
        f"From: sender{n}@example.test\r\nTo: alice@example.test\r\n"
        f"Subject: message {n}\r\nMessage-ID: <{n}@example.test>\r\n\r\nbody {n}\r\n"
    ).encode()


class Engine:
    """A configuration whose one CSV profile points at the fake mailbox."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str], delete: bool) -> None:
        self.mailbox = FakeMailbox(
            {
                "INBOX": FakeFolder(messages={1: message(1), 2: message(2), 5: message(5)}),
                "Sent": FakeFolder(uidvalidity=9, messages={3: message(3)}),
            },
            capabilities="IMAP4rev1 AUTH=PLAIN UIDPLUS",
        )
        self.root = root
        self.capsys = capsys
        port = self.mailbox.server.port
        write_config(
            self.config_dir,
            {
                "fake.yaml": "kind: Profile\nname: fake\n"
                f"server: {{host: 127.0.0.1, port: {port}, security: plain, timeout: 5}}\n"
                "source: {csv: {file: fake.csv}}\n"
                + ("delete: {mode: after_archive}\n" if delete else ""),
                "fake.csv": 'login;password\nalice@example.test;"secret-pw"\n',
            },
        )

    @property
    def config_dir(self) -> Path:
        return self.root / "profiles.d"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    def run(self, *args: str) -> tuple[int, Any]:
        """Run a command with --format json; the commands the server saw start afresh."""
        self.mailbox.server.commands.clear()
        self.mailbox.server.lines.clear()
        code = main([*args, "--format", "json", "--config-dir", str(self.config_dir)])
        out, _ = self.capsys.readouterr()
        return code, json.loads(out)

    def fetched_bodies(self) -> list[str]:
        """The UID sets of every FETCH of message bodies since the last command."""
        return [
            line.split()[3]
            for line in self.mailbox.server.lines
            if " UID FETCH " in line.upper() and "BODY.PEEK[]" in line.upper()
        ]

    def placements(self) -> list[tuple[str, int, int, str]]:
        with sqlite3.connect(self.archive / "index.sqlite") as db:
            return db.execute(
                "SELECT f.path, p.uidvalidity, p.uid, p.sha256 FROM placements p "
                "JOIN folders f ON f.id = p.folder_id ORDER BY 1, 2, 3"
            ).fetchall()


@pytest.fixture
def engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Engine]:
    bed = Engine(tmp_path, capsys, delete=False)
    yield bed
    bed.mailbox.close()


@pytest.fixture
def deleting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Engine]:
    bed = Engine(tmp_path, capsys, delete=True)
    yield bed
    bed.mailbox.close()


def test_a_plan_sends_only_read_only_commands_and_creates_no_archive(engine: Engine) -> None:
    code, plan = engine.run("plan", "--detailed-exitcode")
    assert code == 2
    assert plan["totals"]["messages"] == 4
    assert set(engine.mailbox.server.commands) <= READ_ONLY_COMMANDS
    assert "EXAMINE" in engine.mailbox.server.commands
    assert engine.fetched_bodies() == []
    assert not engine.archive.exists()


def test_apply_archives_each_message_once_and_a_rerun_fetches_nothing(engine: Engine) -> None:
    code, result = engine.run("apply")
    assert code == 0, result
    assert result["totals"]["archived"] == 4
    placements = engine.placements()
    assert [(p[0], p[2]) for p in placements] == [
        ("INBOX", 1),
        ("INBOX", 2),
        ("INBOX", 5),
        ("Sent", 3),
    ]
    assert len({p[3] for p in placements}) == 4

    code, result = engine.run("apply")
    assert code == 0
    assert result["totals"]["archived"] == 0
    assert engine.fetched_bodies() == []
    assert set(engine.mailbox.server.commands) <= READ_ONLY_COMMANDS
    assert engine.placements() == placements


def test_only_the_new_message_is_fetched(engine: Engine) -> None:
    engine.run("apply")
    uid = engine.mailbox.folders["INBOX"].add(message(6))
    code, plan = engine.run("plan", "--detailed-exitcode")
    assert code == 2
    assert plan["totals"]["messages"] == 1
    code, result = engine.run("apply")
    assert code == 0
    assert result["totals"]["archived"] == 1
    assert engine.fetched_bodies() == [str(uid)]
    assert len(engine.placements()) == 5


def test_a_new_uidvalidity_is_rescanned_without_doubling(engine: Engine) -> None:
    engine.run("apply")
    inbox = engine.mailbox.folders["INBOX"]
    renumbered = {10 + i: body for i, body in enumerate(inbox.messages.values())}
    engine.mailbox.folders["INBOX"] = FakeFolder(uidvalidity=8, messages=renumbered)

    code, plan = engine.run("plan")
    actions = {f["path"]: f["action"] for f in plan["profiles"][0]["mailboxes"][0]["folders"]}
    assert actions == {"INBOX": "rescan", "Sent": "skip"}
    code, result = engine.run("apply")
    assert code == 0, result
    assert result["totals"]["archived"] == 0
    inbox_rows = [p for p in engine.placements() if p[0] == "INBOX"]
    assert sorted((p[1], p[2]) for p in inbox_rows) == [(8, 10), (8, 11), (8, 12)]


def test_verified_deletion_removes_exactly_the_archived_messages(deleting: Engine) -> None:
    deleting.run("plan")
    assert set(deleting.mailbox.server.commands) <= READ_ONLY_COMMANDS
    code, result = deleting.run("apply")
    assert code == 0, result
    assert result["totals"]["deleted"] == 4
    commands = deleting.mailbox.server.commands
    assert commands.count("UID EXPUNGE") == 2
    assert "SELECT" in commands
    assert all(not f.messages for f in deleting.mailbox.folders.values())
    assert len(deleting.placements()) == 4


def test_a_message_that_arrives_after_the_plan_is_not_deleted(deleting: Engine) -> None:
    deleting.run("apply")
    late = deleting.mailbox.folders["INBOX"].add(message(7))
    deleting.mailbox.folders["INBOX"].deleted.clear()
    # The next run archives it before it may delete it: never the other way round.
    code, result = deleting.run("apply")
    assert code == 0, result
    assert result["totals"]["archived"] == 1
    assert [p[2] for p in deleting.placements() if p[0] == "INBOX"][-1] == late
    assert deleting.mailbox.folders["INBOX"].messages == {}
