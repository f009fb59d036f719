"""The access log: append-only JSON lines, safe to write and to read, and its command."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from imapsync_decl.cli.main import main
from imapsync_decl.errors import ExitCode
from imapsync_decl.store import access_log
from imapsync_decl.store.access_log import (
    ACCESS_LOG_NAME,
    ACTIONS,
    MAX_LINE_BYTES,
    AccessEntry,
    AccessLogError,
    append_access,
    read_access_log,
    scan_access_log,
)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_records_are_json_lines_in_a_private_file(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    first = append_access(root, user="alice", action="sign_in", address="192.0.2.1")
    second = append_access(
        root,
        user="alice",
        action="download",
        target="message 123",
        address="192.0.2.1",
        detail={"bytes": 2048},
    )
    path = root / ACCESS_LOG_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    docs = [json.loads(line) for line in lines[:-1]]
    assert docs == [first.to_json(), second.to_json()]
    assert docs[1] == {
        "time": second.time,
        "user": "alice",
        "action": "download",
        "target": "message 123",
        "address": "192.0.2.1",
        "detail": {"bytes": 2048},
    }
    assert second.time.endswith("Z")
    assert second.time >= first.time
    assert read_access_log(root) == [first, second]


def test_appending_keeps_what_is_there(tmp_path: Path) -> None:
    for n in range(3):
        append_access(tmp_path, user=f"u{n}", action="view", target=f"message {n}")
    assert [e.user for e in read_access_log(tmp_path)] == ["u0", "u1", "u2"]


def test_every_action_is_accepted_and_others_are_bugs(tmp_path: Path) -> None:
    for action in ACTIONS:
        append_access(tmp_path, user="alice", action=action)
    assert [e.action for e in read_access_log(tmp_path)] == list(ACTIONS)
    with pytest.raises(ValueError, match="unknown access log action"):
        append_access(tmp_path, user="alice", action="delete_everything")


def test_each_record_is_one_write_and_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[bytes] = []
    syncs: list[int] = []
    real_write, real_fsync = os.write, os.fsync

    def write(fd: int, data: bytes | memoryview) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        syncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    append_access(tmp_path, user="alice", action="view", target="message 1", detail={"a": "b"})
    assert len(writes) == 1
    assert writes[0].endswith(b"\n")
    assert writes[0].count(b"\n") == 1
    assert len(syncs) == 1


def test_the_file_is_opened_for_appending_without_following_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags_seen: list[int] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        if str(path).endswith(ACCESS_LOG_NAME):
            flags_seen.append(flags)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy)
    append_access(tmp_path, user="alice", action="view")
    assert flags_seen
    assert flags_seen[0] & os.O_APPEND
    assert flags_seen[0] & os.O_NOFOLLOW


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("")
    root = tmp_path / "archive"
    root.mkdir(mode=0o700)
    (root / ACCESS_LOG_NAME).symlink_to(elsewhere)
    with pytest.raises(AccessLogError, match="symbolic link") as caught:
        append_access(root, user="alice", action="view")
    assert caught.value.exit_code == ExitCode.NOT_WRITABLE
    assert elsewhere.read_text() == ""
    with pytest.raises(AccessLogError, match="symbolic link"):
        read_access_log(root)


def test_a_file_others_can_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ACCESS_LOG_NAME
    path.write_text("")
    path.chmod(0o622)
    with pytest.raises(AccessLogError, match="writable by group or others"):
        append_access(tmp_path, user="alice", action="view")


def test_a_torn_last_line_is_skipped_and_the_next_record_stands_alone(tmp_path: Path) -> None:
    append_access(tmp_path, user="alice", action="sign_in")
    with (tmp_path / ACCESS_LOG_NAME).open("ab") as log:
        log.write(b'{"time":"2026-01-01T00:00:00Z","user":"bo')  # a crash mid-write
    reading = scan_access_log(tmp_path)
    assert [e.user for e in reading.entries] == ["alice"]
    assert reading.torn_last_line
    assert reading.skipped_lines == []
    append_access(tmp_path, user="carol", action="view")
    reading = scan_access_log(tmp_path)
    assert [e.user for e in reading.entries] == ["alice", "carol"]
    assert reading.skipped_lines == [2]
    assert not reading.torn_last_line


def test_lines_that_are_not_records_are_skipped_and_flagged(tmp_path: Path) -> None:
    append_access(tmp_path, user="alice", action="view")
    junk = [
        b"not json",
        b"[1, 2]",
        b'{"time": 5, "action": "view"}',
        b'{"time": "t", "action": "view", "user": 7}',
        b'{"time": "t", "action": "view", "detail": "x"}',
        b"[" * 50_000,
        b"\xff\xfe binary",
    ]
    with (tmp_path / ACCESS_LOG_NAME).open("ab") as log:
        log.write(b"\n".join(junk) + b"\n\n")
    append_access(tmp_path, user="bob", action="view")
    reading = scan_access_log(tmp_path)
    assert [e.user for e in reading.entries] == ["alice", "bob"]
    assert reading.skipped_lines == [2, 3, 4, 5, 6, 7, 8]
    assert "7 line(s)" in reading.warnings()[0]


def test_an_overlong_line_is_never_held_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(access_log, "MAX_LINE_BYTES", 1000)
    append_access(tmp_path, user="alice", action="view")
    with (tmp_path / ACCESS_LOG_NAME).open("ab") as log:
        log.write(b'{"time":"t","action":"view","user":"' + b"x" * 50_000 + b'"}\n')
    append_access(tmp_path, user="bob", action="view")
    biggest: list[int] = []
    real = access_log._parse

    def parse(raw: bytes) -> AccessEntry | None:
        biggest.append(len(raw))
        return real(raw)

    monkeypatch.setattr(access_log, "_parse", parse)
    reading = scan_access_log(tmp_path)
    assert [e.user for e in reading.entries] == ["alice", "bob"]
    assert reading.skipped_lines == [2]
    assert max(biggest) <= 1001


def test_long_fields_are_cut_and_a_huge_detail_is_replaced(tmp_path: Path) -> None:
    entry = append_access(tmp_path, user="n" * 5000, action="sign_in_failed")
    assert entry.user == "n" * 1024
    entry = append_access(tmp_path, user="alice", action="view", detail={"x": "y" * MAX_LINE_BYTES})
    assert entry.detail == {"truncated": True}
    assert all(len(line) <= MAX_LINE_BYTES for line in (tmp_path / ACCESS_LOG_NAME).open("rb"))
    assert len(read_access_log(tmp_path)) == 2


def test_control_characters_cannot_break_a_line(tmp_path: Path) -> None:
    append_access(tmp_path, user='mallory\n{"action":"sign_in"}', action="sign_in_failed")
    (entry,) = read_access_log(tmp_path)
    assert entry.user == 'mallory\n{"action":"sign_in"}'
    assert (tmp_path / ACCESS_LOG_NAME).read_bytes().count(b"\n") == 1


def test_filter_by_user_and_limit(tmp_path: Path) -> None:
    for n in range(4):
        append_access(tmp_path, user="alice", action="view", target=f"message {n}")
        append_access(tmp_path, user="bob", action="view", target=f"message {n}")
    assert [e.target for e in read_access_log(tmp_path, user="bob")] == [
        f"message {n}" for n in range(4)
    ]
    assert [e.target for e in read_access_log(tmp_path, user="alice", limit=2)] == [
        "message 2",
        "message 3",
    ]


def test_no_log_yet_reads_as_empty(tmp_path: Path) -> None:
    assert read_access_log(tmp_path) == []
    assert not (tmp_path / ACCESS_LOG_NAME).exists()


def test_threads_do_not_interleave(tmp_path: Path) -> None:
    def work(n: int) -> None:
        for i in range(20):
            append_access(tmp_path, user=f"u{n}", action="view", target=f"message {i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reading = scan_access_log(tmp_path)
    assert len(reading.entries) == 80
    assert reading.skipped_lines == []


# --- the command ------------------------------------------------------------------------


def test_command_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    append_access(tmp_path, user="alice", action="sign_in", address="192.0.2.1")
    append_access(tmp_path, user="mallory", action="sign_in_failed", address="198.51.100.2")
    append_access(tmp_path, user="alice", action="view", target="message 12", address="192.0.2.1")
    code, out, err = run(capsys, "access-log", "--archive", str(tmp_path))
    assert code == ExitCode.OK
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["TIME", "USER", "ACTION", "TARGET", "ADDRESS"]
    assert lines[2].split()[1:] == ["mallory", "sign_in_failed", "-", "198.51.100.2"]
    assert lines[3].split()[1:] == ["alice", "view", "message", "12", "192.0.2.1"]
    assert lines[-1] == "3 records"
    code, out, _ = run(
        capsys, "access-log", "--archive", str(tmp_path), "--user", "alice", "--format", "json"
    )
    assert code == ExitCode.OK
    docs = json.loads(out)
    assert [d["action"] for d in docs] == ["sign_in", "view"]
    assert docs[1]["target"] == "message 12"
    assert set(docs[0]) == {"time", "user", "action", "target", "address", "detail"}


def test_command_output_is_terminal_safe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    append_access(tmp_path, user="\x1b]0;owned\x07eve\x1b[31m", action="sign_in_failed")
    code, out, _ = run(capsys, "access-log", "--archive", str(tmp_path))
    assert code == ExitCode.OK
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "eve" in out


def test_command_warns_about_skipped_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    append_access(tmp_path, user="alice", action="sign_in")
    with (tmp_path / ACCESS_LOG_NAME).open("ab") as log:
        log.write(b'garbage\n{"time":')
    code, out, err = run(capsys, "access-log", "--archive", str(tmp_path))
    assert code == ExitCode.OK
    assert "alice" in out
    assert "line 2" in err
    assert "incomplete" in err
    assert "Traceback" not in err


def test_command_with_nothing_logged_and_without_an_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "access-log", "--archive", str(tmp_path))
    assert (code, out) == (ExitCode.OK, "no access recorded\n")
    code, _, err = run(capsys, "access-log", "--archive", str(tmp_path / "missing"))
    assert code == ExitCode.CONFIG
    assert "no archive" in err
