"""Restore against the scripted mailbox (tests/servers/fake_mailbox.py), and its pure parts.

The wire names of folder paths (modified UTF-7, delimiter, namespace prefix) and the
flags that are restored, as tables; then what restore sends: only read-only commands
in a dry run, exactly the archived bytes in APPEND, nothing twice, nothing at all for
a hostile --to-folder. The same guarantees against Dovecot are in test_restore.py.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imapsync_decl.cli.main import main
from imapsync_decl.cli.restore import shown
from imapsync_decl.imap.appender import appendable_flags
from imapsync_decl.imap.wire import decode_name, encode_name, folder_path, wire_name
from imapsync_decl.run.restore import sizes_on_a_server
from imapsync_decl.store import ArchiveLock, BlobStore

from helpers import write_config
from servers.fake_mailbox import READ_ONLY_COMMANDS, FakeFolder, FakeMailbox


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("INBOX", b"INBOX"),
        ("Projekte", b"Projekte"),
        ("Übersicht", b"&ANw-bersicht"),
        ("Tom & Jerry", b"Tom &- Jerry"),
        ("日本語", b"&ZeVnLIqe-"),
        ("a~b", b"a~b"),
        ("Entwürfe 😀", b"Entw&APw-rfe &2D3eAA-"),
    ],
)
def test_modified_utf7_encoding_and_back(name: str, encoded: bytes) -> None:
    assert encode_name(name) == encoded
    assert decode_name(encoded) == name


@pytest.mark.parametrize(
    ("path", "prefix", "delimiter", "wire"),
    [
        ("INBOX", "", "/", "INBOX"),
        ("INBOX", "INBOX.", ".", "INBOX"),
        ("Projekte/Übersicht", "", "/", "Projekte/&ANw-bersicht"),
        ("Projekte/Übersicht", "", ".", "Projekte.&ANw-bersicht"),
        ("Sent", "INBOX.", ".", "INBOX.Sent"),  # Cyrus: the personal prefix comes back
        ("Archiv/2024", "Mail/", "/", "Mail/Archiv/2024"),
        ("INBOX/Sub", "", "/", "INBOX/Sub"),  # Dovecot: INBOX stays the first level
        ("INBOX/Sub", "Mail/", "/", "INBOX/Sub"),
        ("/Restored/", "", "/", "Restored"),
    ],
)
def test_wire_name_of_a_folder_path(path: str, prefix: str, delimiter: str, wire: str) -> None:
    assert wire_name(path, prefix, delimiter) == wire
    # And back: the folder path the planner gives the server's name.
    back = folder_path(decode_name(wire.encode()), decode_name(prefix.encode()), delimiter)
    assert back == path.strip("/")


@pytest.mark.parametrize(
    ("path", "delimiter"),
    [("a//b", "/"), ("a.b/c", "."), ("a/b", None)],
)
def test_paths_the_server_cannot_name_are_refused(path: str, delimiter: str | None) -> None:
    with pytest.raises(ValueError, match="folder path"):
        wire_name(path, "", delimiter)


@pytest.mark.parametrize(
    ("flags", "kept"),
    [
        (("\\Seen", "\\Recent", "\\Flagged"), ("\\Seen", "\\Flagged")),
        (("\\Deleted", "\\Answered"), ("\\Answered",)),
        (("$Forwarded", "Junk", "$label1"), ("$Forwarded", "Junk", "$label1")),
        (("bad flag", "x)y", "(", 'q"', "\\Seen"), ("\\Seen",)),
        ((), ()),
    ],
)
def test_restored_flags(flags: tuple[str, ...], kept: tuple[str, ...]) -> None:
    assert appendable_flags(flags) == kept


# --- restore against the scripted mailbox ------------------------------------------------------


def message(n: int) -> bytes:
    return (
        f"From: sender{n}@example.test\r\nTo: alice@example.test\r\n"
        f"Subject: message {n}\r\nMessage-ID: <{n}@example.test>\r\n\r\nbody {n}\r\n"
    ).encode()


class Bench:
    """A CSV profile on the scripted mailbox, archived once."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.mailbox = FakeMailbox(
            {
                "INBOX": FakeFolder(messages={1: message(1), 2: message(2)}),
                "Sent": FakeFolder(uidvalidity=9, messages={3: message(3), 4: message(4)}),
            },
            capabilities="IMAP4rev1 AUTH=PLAIN UIDPLUS",
        )
        self.root = root
        self.capsys = capsys
        self.stdout = ""
        write_config(
            self.config_dir,
            {
                "fake.yaml": "kind: Profile\nname: fake\n"
                f"server: {{host: 127.0.0.1, port: {self.mailbox.server.port}, security: plain,"
                " timeout: 5}\nsource: {csv: {file: fake.csv}}\n",
                "fake.csv": 'login;password\nalice@example.test;"secret-pw"\n',
            },
        )
        code, _ = self.run("apply", "--format", "json")
        assert code == 0

    @property
    def config_dir(self) -> Path:
        return self.root / "profiles.d"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    def run(self, *args: str) -> tuple[int, str]:
        self.mailbox.server.commands.clear()
        self.mailbox.server.lines.clear()
        code = main([*args, "--config-dir", str(self.config_dir)])
        out, err = self.capsys.readouterr()
        assert "secret-pw" not in out + err
        self.stdout = out
        return code, out + err

    def restore(self, *args: str) -> tuple[int, dict[str, Any]]:
        code, _ = self.run("archive", "restore", "--profile", "fake", "--format", "json", *args)
        return code, json.loads(self.stdout)

    def placement_ids(self, folder: str) -> list[int]:
        with sqlite3.connect(self.archive / "index.sqlite") as db:
            rows = db.execute(
                "SELECT p.id FROM placements p JOIN folders f ON f.id = p.folder_id"
                " WHERE f.path = ? ORDER BY p.uid",
                (folder,),
            ).fetchall()
        return [int(r[0]) for r in rows]


@pytest.fixture
def bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Bench]:
    b = Bench(tmp_path, capsys)
    yield b
    b.mailbox.close()


def test_dry_run_sends_only_read_only_commands_and_changes_nothing(bench: Bench) -> None:
    del bench.mailbox.folders["Sent"]
    bench.mailbox.folders["INBOX"].messages.pop(2)
    code, doc = bench.restore("--user", "alice@example.test", "--dry-run")
    assert code == 0, doc
    assert set(bench.mailbox.server.commands) <= READ_ONLY_COMMANDS
    assert "APPEND" not in bench.mailbox.server.commands
    assert "Sent" not in bench.mailbox.folders
    assert sorted(bench.mailbox.folders["INBOX"].messages) == [1]
    assert doc["dry_run"] is True
    assert doc["totals"] == {"restored": 3, "already_there": 1, "failed": 0, "damaged": 0}
    bench.run("runs", "--format", "json")
    assert [r["command"] for r in json.loads(bench.stdout)] == ["apply"]  # a dry run records no run


def test_restore_appends_the_archived_bytes_once(bench: Bench) -> None:
    del bench.mailbox.folders["Sent"]
    code, doc = bench.restore("--user", "alice@example.test", "--folder", "Sent")
    assert code == 0, doc
    assert bench.mailbox.server.commands.count("CREATE") == 1
    sent = bench.mailbox.folders["Sent"]
    assert sorted(sent.messages.values()) == [message(3), message(4)]
    assert all(v.startswith("(\\Seen)") for v in sent.appended.values())
    assert doc["folders"] == [
        {
            "user": "alice@example.test",
            "mailbox": "alice@example.test",
            "folder": "Sent",
            "created": True,
            "restored": 2,
            "already_there": 0,
            "failed": 0,
        }
    ]
    # Again: the folder holds them now (by Message-ID and size): nothing is appended.
    code, doc = bench.restore("--user", "alice@example.test", "--folder", "Sent")
    assert code == 0
    assert "APPEND" not in bench.mailbox.server.commands
    assert doc["totals"]["already_there"] == 2
    bench.run("runs", "--format", "json")
    assert [r["command"] for r in json.loads(bench.stdout)] == ["restore", "restore", "apply"]
    bench.run("runs", "--last")
    assert "(restore): ok" in bench.stdout
    assert "alice@example.test Sent: restored 0, already there 2, failed 0" in bench.stdout


def test_a_hostile_to_folder_is_refused_before_anything_is_sent(bench: Bench) -> None:
    ids = [str(i) for i in bench.placement_ids("INBOX")]
    for hostile in ("Restored\r\nA1 DELETE INBOX", "x\nA1 LOGOUT", "nul\0name"):
        code, out = bench.run(
            "archive", "restore", *ids, "--profile", "fake", "--to-folder", hostile
        )
        assert code == 10
        assert "line break or NUL" in out
        assert bench.mailbox.server.commands == []
        assert bench.mailbox.server.received.count(b"DELETE") == 0


def test_ids_and_user_together_are_a_usage_error(bench: Bench) -> None:
    code, out = bench.run(
        "archive", "restore", "1", "--user", "alice@example.test", "--profile", "fake"
    )
    assert code == 10
    assert "not both" in out
    code, out = bench.run("archive", "restore", "99999", "--profile", "fake")
    assert code == 10
    assert "no placement with id 99999" in out
    bench.run("runs", "--format", "json")
    assert [r["command"] for r in json.loads(bench.stdout)] == ["apply"]  # no run begun
    code, out = bench.run("archive", "restore", "1", "--profile", "nope")
    assert code == 10
    assert bench.mailbox.server.commands == []


def test_a_query_without_a_search_index_says_to_build_it(bench: Bench) -> None:
    for name in ("search.sqlite", "search.sqlite-wal", "search.sqlite-shm"):
        (bench.archive / name).unlink(missing_ok=True)  # apply wrote one
    code, out = bench.run(
        "archive", "restore", "--user", "alice@example.test", "--query", "x", "--profile", "fake"
    )
    assert code == 10
    assert "run `imapsync-decl archive rebuild-search`" in out
    code, out = bench.run(
        "archive", "restore", "--user", "alice@example.test", "--query", "a OR", "--profile", "fake"
    )
    assert code == 10


def test_a_damaged_blob_is_not_restored_and_the_others_are(bench: Bench) -> None:
    del bench.mailbox.folders["Sent"]
    damaged = BlobStore(bench.archive).path(hashlib.sha256(message(3)).hexdigest())
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.chmod(0o600)
    damaged.write_bytes(bytes(data))
    code, doc = bench.restore("--user", "alice@example.test", "--folder", "Sent")
    assert code == 12
    assert list(bench.mailbox.folders["Sent"].messages.values()) == [message(4)]
    assert doc["totals"] == {"restored": 1, "already_there": 0, "failed": 1, "damaged": 1}


def test_text_output_escapes_control_characters() -> None:
    assert shown("Inbox\x1b]0;owned\x07") == "Inbox\\x1b]0;owned\\x07"
    assert shown("Übersicht 日本") == "Übersicht 日本"


def test_a_locked_archive_is_exit_13(bench: Bench) -> None:
    with ArchiveLock(bench.archive, "imapsync-decl apply"):
        code, out = bench.run("archive", "restore", "1", "--profile", "fake")
    assert code == 13
    assert "imapsync-decl apply" in out  # the holder is named
    assert bench.mailbox.server.commands == []


def test_a_message_without_message_id_is_known_by_its_sha256(bench: Bench) -> None:
    # Neither has a Message-ID: only the archive's SHA-256 of UID 1 (still there under
    # the archived UIDVALIDITY) tells that it is there; UID 2 is gone from the server.
    bench.mailbox.folders["Notes"] = FakeFolder(uidvalidity=5, messages={1: b"a\r\n", 2: b"b\r\n"})
    assert bench.run("apply")[0] == 0
    bench.mailbox.folders["Notes"].messages.pop(2)
    code, doc = bench.restore("--user", "alice@example.test", "--folder", "Notes")
    assert code == 0, doc
    assert doc["totals"]["restored"] == 1
    assert doc["totals"]["already_there"] == 1
    assert sorted(bench.mailbox.folders["Notes"].messages.values()) == [b"a\r\n", b"b\r\n"]


def test_an_unknown_user_is_a_usage_error(bench: Bench) -> None:
    code, out = bench.run("archive", "restore", "--user", "mallory", "--profile", "fake")
    assert code == 10
    assert "no archive user 'mallory'" in out
    assert bench.mailbox.server.commands == []


@pytest.mark.parametrize(
    ("body", "sizes"),
    [(b"a\r\nb\r\n", {6}), (b"a\nb\n", {4, 6}), (b"a\r\nb\n", {5, 6}), (b"", {0})],
)
def test_sizes_a_server_may_report(body: bytes, sizes: set[int]) -> None:
    assert sizes_on_a_server(body) == sizes
