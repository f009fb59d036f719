"""`users passwd`: web passwords set from a terminal or standard input, never shown anywhere."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from imapsync_decl.cli.main import main
from imapsync_decl.errors import ExitCode
from imapsync_decl.store.access_log import read_access_log
from imapsync_decl.store.accounts import ACCOUNTS_NAME, Accounts

from helpers import USERS, write_config

ROOT = Path(__file__).resolve().parent.parent
SECRET = "Tr0ub4dor&3-web-secret"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "profiles.d",
        {"users.yaml": USERS, "archive.yaml": f"kind: Archive\npath: {tmp_path / 'archive'}\n"},
    )


def archive(config: Path) -> Path:
    return config.parent / "archive"


def run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    stdin: bytes = b"",
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def web_states(capsys: pytest.CaptureFixture[str], config: Path) -> dict[str, str]:
    assert main(["users", "list", "--format", "json", "--config-dir", str(config)]) == 0
    return {row["name"]: row["web_password"] for row in json.loads(capsys.readouterr().out)}


def test_set_disable_and_set_again(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path
) -> None:
    assert web_states(capsys, config) == {
        "alice": "none",
        "bob": "none",
        "carol": "none",
        "scanner": "none",
    }
    code, out, err = run(
        capsys,
        monkeypatch,
        "users",
        "passwd",
        "--password-stdin",
        "alice",
        "--config-dir",
        str(config),
        stdin=SECRET.encode() + b"\n",
    )
    assert code == ExitCode.OK, err
    assert out == "web password of alice set\n"
    with Accounts.open(archive(config), read_only=True) as accounts:
        assert accounts.verify_password("alice", SECRET)
        assert not accounts.verify_password("alice", SECRET + "\n")
    assert web_states(capsys, config)["alice"] == "set"
    code, out, _ = run(capsys, monkeypatch, "users", "list", "--config-dir", str(config))
    assert out.splitlines()[0].split()[-1] == "WEB"
    assert [line.split()[-1] for line in out.splitlines()[1:5]] == ["set", "none", "none", "none"]

    code, out, _ = run(
        capsys, monkeypatch, "users", "passwd", "--disable", "alice", "--config-dir", str(config)
    )
    assert (code, out) == (ExitCode.OK, "web access of alice disabled\n")
    assert web_states(capsys, config)["alice"] == "disabled"
    with Accounts.open(archive(config), read_only=True) as accounts:
        assert not accounts.verify_password("alice", SECRET)

    code, _, _ = run(
        capsys,
        monkeypatch,
        "users",
        "passwd",
        "--password-stdin",
        "alice",
        "--config-dir",
        str(config),
        stdin=b"another secret\r\n",
    )
    assert code == ExitCode.OK
    assert web_states(capsys, config)["alice"] == "set"
    with Accounts.open(archive(config), read_only=True) as accounts:
        assert accounts.verify_password("alice", "another secret")
    changes = [
        (e.action, e.user, e.target, e.detail["change"]) for e in read_access_log(archive(config))
    ]
    assert changes == [
        ("password_changed", None, "user alice", "set"),
        ("password_changed", None, "user alice", "disabled"),
        ("password_changed", None, "user alice", "set"),
    ]


def test_a_name_not_in_the_user_list_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path
) -> None:
    for extra in (["--password-stdin"], ["--disable"]):
        code, _, err = run(
            capsys,
            monkeypatch,
            "users",
            "passwd",
            *extra,
            "mallory",
            "--config-dir",
            str(config),
            stdin=b"whatever\n",
        )
        assert code == ExitCode.CONFIG
        assert "no archive user named 'mallory'" in err
    assert not (archive(config) / ACCOUNTS_NAME).exists()


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        (b"\n", "the password is empty"),
        (b"", "the password is empty"),
        (b"x" * 1025 + b"\n", "longer than 1024 characters"),
        (b"x" * 5000, "longer than 1024 characters"),
        (b"\xff\xfe\n", "not UTF-8"),
    ],
)
def test_bad_passwords_on_stdin(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    config: Path,
    stdin: bytes,
    message: str,
) -> None:
    code, _, err = run(
        capsys,
        monkeypatch,
        "users",
        "passwd",
        "--password-stdin",
        "bob",
        "--config-dir",
        str(config),
        stdin=stdin,
    )
    assert code == ExitCode.CONFIG
    assert message in err
    assert "Traceback" not in err
    assert web_states(capsys, config)["bob"] == "none"


def test_without_a_terminal_the_password_must_come_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path
) -> None:
    code, _, err = run(
        capsys, monkeypatch, "users", "passwd", "bob", "--config-dir", str(config), stdin=b"pw\n"
    )
    assert code == ExitCode.CONFIG
    assert "--password-stdin" in err
    code, _, err = run(
        capsys,
        monkeypatch,
        "users",
        "passwd",
        "--disable",
        "--password-stdin",
        "bob",
        "--config-dir",
        str(config),
    )
    assert code == ExitCode.CONFIG


def test_no_option_takes_the_password_on_the_command_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path
) -> None:
    code, out, err = run(
        capsys,
        monkeypatch,
        "users",
        "passwd",
        "--password",
        SECRET,
        "alice",
        "--config-dir",
        str(config),
    )
    assert code == ExitCode.CONFIG
    assert SECRET not in out + err
    code, out, _ = run(capsys, monkeypatch, "users", "passwd", "--help")
    assert "--password-stdin" in out
    assert "--password " not in out


def child_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "IMAPSYNC_DECL_LOG_FORMAT": "json",
        "HOME": str(tmp_path),
    }


def test_the_password_appears_in_no_output_log_or_file(tmp_path: Path, config: Path) -> None:
    log_file = tmp_path / "imapsync.log"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "imapsync_decl",
            "--log-level",
            "debug",
            "--log-file",
            str(log_file),
            "users",
            "passwd",
            "--password-stdin",
            "carol",
            "--config-dir",
            str(config),
        ],
        input=SECRET + "\n",
        capture_output=True,
        text=True,
        env=child_env(tmp_path),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "web_password_set" in log_file.read_text()
    places = {
        "stdout": done.stdout,
        "stderr": done.stderr,
        "log": log_file.read_text(),
        **{p.name: p.read_bytes().decode("latin-1") for p in archive(config).iterdir()},
    }
    assert set(places) >= {"accounts.sqlite", "access.log"}
    for place, text in places.items():
        assert SECRET not in text, place


def read_until(fd: int, wanted: bytes, seen: bytearray) -> None:
    """Read the terminal's output until ``wanted`` shows (or the child closes it)."""
    while wanted not in seen:
        ready, _, _ = select.select([fd], [], [], 60)
        assert ready, f"no {wanted!r} on the terminal; seen {bytes(seen)!r}"
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            return
        if not chunk:
            return
        seen.extend(chunk)


def on_a_terminal(tmp_path: Path, config: Path, answers: list[str]) -> tuple[int, bytes]:
    """Run `users passwd carol` on a pseudo-terminal, typing ``answers`` at the prompts."""
    argv = [
        sys.executable,
        "-m",
        "imapsync_decl",
        "users",
        "passwd",
        "carol",
        "--config-dir",
        str(config),
    ]
    env = child_env(tmp_path)
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session of its own with the terminal as its controlling one
        os.execve(sys.executable, argv, env)  # noqa: S606 (no shell wanted)
    seen = bytearray()
    try:
        for prompt, answer in zip([b"password for carol: ", b"again: "], answers, strict=False):
            read_until(fd, prompt, seen)
            if prompt == b"again: ":  # the first answer is in the process, and only there
                for place in ("cmdline", "environ"):
                    visible = Path(f"/proc/{pid}/{place}").read_bytes()
                    assert answers[0].encode() not in visible, place
            os.write(fd, answer.encode() + b"\r")
        read_until(fd, b"\x00never\x00", seen)  # everything up to the end
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), bytes(seen)


def test_asked_twice_on_a_terminal_without_echo(tmp_path: Path, config: Path) -> None:
    code, screen = on_a_terminal(tmp_path, config, [SECRET, SECRET])
    assert code == 0, screen
    assert b"New web password for carol: " in screen
    assert b"web password of carol set" in screen
    assert SECRET.encode() not in screen
    with Accounts.open(archive(config), read_only=True) as accounts:
        assert accounts.verify_password("carol", SECRET)


def test_two_different_answers_change_nothing(tmp_path: Path, config: Path) -> None:
    code, screen = on_a_terminal(tmp_path, config, [SECRET, SECRET + "typo"])
    assert code == ExitCode.CONFIG, screen
    assert b"the two passwords differ" in screen
    assert SECRET.encode() not in screen
    assert not (archive(config) / ACCOUNTS_NAME).exists()


def test_passwords_stay_out_of_the_index_and_survive_its_rebuild(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path
) -> None:
    from imapsync_decl.store import Archive

    Archive.open(archive(config)).close()
    code, _, err = run(
        capsys,
        monkeypatch,
        "users",
        "passwd",
        "--password-stdin",
        "alice",
        "--config-dir",
        str(config),
        stdin=SECRET.encode() + b"\n",
    )
    assert code == ExitCode.OK, err
    with Accounts.open(archive(config), read_only=True) as accounts:
        assert accounts.verify_password("alice", SECRET)
    hashed = sqlite_hash(archive(config))
    for path in archive(config).rglob("*"):
        if path.is_file() and path.name != ACCOUNTS_NAME:
            assert hashed.encode() not in path.read_bytes(), path
    code, _, err = run(
        capsys,
        monkeypatch,
        "archive",
        "rebuild-index",
        "--force",
        "--archive",
        str(archive(config)),
    )
    assert code == ExitCode.OK, err
    with Accounts.open(archive(config), read_only=True) as accounts:
        assert accounts.verify_password("alice", SECRET)


def sqlite_hash(root: Path) -> str:
    import sqlite3

    db = sqlite3.connect(root / ACCOUNTS_NAME)
    try:
        (value,) = db.execute("SELECT password_hash FROM accounts WHERE name = 'alice'").fetchone()
    finally:
        db.close()
    return str(value)
