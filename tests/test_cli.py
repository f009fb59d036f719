"""The command line, run in-process: exit codes, stdout, stderr."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from imapsync_decl import __version__
from imapsync_decl.cli.main import cli, main
from imapsync_decl.config.schema import schema_files

from helpers import USERS, master_profile, write_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "profiles.d"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """A copy of profiles.d/ (the CSV made private, as an administrator would)."""
    target = tmp_path / "profiles.d"
    shutil.copytree(EXAMPLES, target)
    for csv in target.glob("*.csv"):
        csv.chmod(0o600)
    return target


def test_validate_accepts_the_examples(
    capsys: pytest.CaptureFixture[str], examples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAP_MASTER_PASSWORD", "x")
    monkeypatch.setenv("BOB_PASSWORD", "y")
    code, out, err = run(capsys, "validate", "--config-dir", str(examples))
    assert code == 0, err
    # The examples trust the demo server's certificate, which only scripts/demo creates.
    ca_warning = [
        "warning",
        f"server.ca_file: file not found: {examples}/../demo/server/tls/cert.pem",
    ]
    lines = [line.split(": ", 2)[1:] for line in err.splitlines()]
    assert lines == [ca_warning] * 3
    assert f"{examples}: valid (5 documents, 3 profiles, 5 mailboxes, 3 warnings)" in out


def test_validate_reports_every_error_and_exits_10(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write_config(
        tmp_path,
        {
            "a.yaml": "kind: Profile\nname: x\nserver: {host: h, port: 0}\nsource: {csv: {file: m.csv}}\n",
            "m.csv": "login;password\nalice;pw\nalice;pw2\n",
            "b.yaml": "kind: Users\nusers: [{name: a, mail: a@b.c}]\n",
        },
    )
    code, out, err = run(capsys, "validate", "--config-dir", str(tmp_path))
    assert code == 10
    lines = err.splitlines()
    assert (
        f"{tmp_path}/a.yaml:3:25: server.port: Input should be greater than or equal to 1" in lines
    )
    assert any(
        line.startswith(f"{tmp_path}/m.csv:3: ") and "duplicate" in line for line in lines
    ), lines
    assert f"{tmp_path}/b.yaml:2:19: users[0].mail: unknown field; did you mean 'email'?" in lines
    assert "Traceback" not in err
    assert "pw2" not in out + err
    assert "invalid (4 errors, 0 warnings)" in out  # port, CSV duplicate + its pointer, mail


def test_validate_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_MASTER_PW", raising=False)
    write_config(tmp_path, {"u.yaml": USERS, "s.yaml": master_profile()})
    code, out, _ = run(capsys, "validate", "--config-dir", str(tmp_path), "--format", "json")
    assert code == 0
    body = json.loads(out)
    assert body["valid"] is True
    assert body["errors"] == []
    assert [w["field"] for w in body["warnings"]] == ["source.master.password"]
    assert body["profiles"] == [
        {
            "name": "staff",
            "source": "master",
            "server": "imap.example.com:993",
            "security": "tls",
            "mailboxes": 3,
        }
    ]


def test_mailboxes_json_for_master_and_csv(
    capsys: pytest.CaptureFixture[str], examples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAP_MASTER_PASSWORD", "very-secret-master")
    code, out, err = run(capsys, "mailboxes", "--config-dir", str(examples), "--format", "json")
    assert code == 0, err
    body = json.loads(out)
    assert [(r["archive_user"], r["selected"], r["reason"]) for r in body if not r["selected"]] == [
        ("bob", False, "excluded"),
        ("scanner", False, "no e-mail address"),
    ]
    rows = [
        {k: r[k] for k in ("profile", "archive_user", "login", "email", "archive_folder")}
        for r in body
        if r["selected"]
    ]
    assert [
        (r["profile"], r["archive_user"], r["login"], r["email"], r["archive_folder"]) for r in rows
    ] == [
        ("contractors", "dave", "dave@example.test", "dave@example.test", "dave@example.test"),
        ("contractors", "umlaut", "umlaut", None, "umlaut"),
        ("retention", "bob", "bob", "bob@example.test", "bob@example.test"),
        ("staff", "alice", "alice", "alice@example.test", "alice@example.test"),
        ("staff", "carol", "carol", "carol@example.test", "carol@example.test"),
    ]
    csv_passwords = ["dave-secret", "pässwörd"]
    for secret in [*csv_passwords, "very-secret-master"]:
        assert secret not in out + err


def test_mailboxes_text_and_profile_filter(
    capsys: pytest.CaptureFixture[str], examples: Path
) -> None:
    code, out, _ = run(capsys, "mailboxes", "--config-dir", str(examples), "--profile", "staff")
    assert code == 0
    assert out.splitlines()[0].split() == [
        "PROFILE",
        "SOURCE",
        "ARCHIVE",
        "USER",
        "LOGIN",
        "E-MAIL",
        "ARCHIVE",
        "FOLDER",
    ]
    assert "alice@example.test" in out
    assert "dave" not in out
    assert out.splitlines()[-3] == "2 mailboxes"
    assert out.splitlines()[-2:] == [
        "not archived by staff: bob (excluded)",
        "not archived by staff: scanner (no e-mail address)",
    ]


def test_mailboxes_unknown_profile_and_invalid_config(
    capsys: pytest.CaptureFixture[str], examples: Path, tmp_path: Path
) -> None:
    code, _, err = run(capsys, "mailboxes", "--config-dir", str(examples), "--profile", "nope")
    assert code == 10
    assert "no profile named 'nope' (profiles: contractors, retention, staff)" in err
    write_config(tmp_path / "bad", {"a.yaml": "kind: Archive\n"})
    code, out, err = run(capsys, "mailboxes", "--config-dir", str(tmp_path / "bad"))
    assert code == 10
    assert out == ""
    assert "a.yaml:1:1: path: required field is missing" in err


def test_schema_prints_and_writes_the_published_schemas(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == 0
    assert out == schema_files()["document.schema.json"]
    code, out, _ = run(capsys, "schema", "--kind", "profile")
    assert out == (ROOT / "schemas" / "profile.schema.json").read_text(encoding="utf-8")
    code, _, _ = run(capsys, "schema", "--out", str(tmp_path / "s"))
    assert code == 0
    for name in schema_files():
        assert (tmp_path / "s" / name).read_text(encoding="utf-8") == (
            ROOT / "schemas" / name
        ).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "args", [["validate", "--bogus"], ["nonsense"], ["mailboxes", "--format", "xml"], []]
)
def test_usage_errors_exit_10_not_2(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, _, err = run(capsys, *args)
    assert code == 10
    assert "Traceback" not in err


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "Exit codes:" in out
    commands = cli.list_commands(click.Context(cli))
    assert commands == [
        "access-log",
        "apply",
        "archive",
        "daemon",
        "mailboxes",
        "plan",
        "runs",
        "schedule",
        "schema",
        "serve",
        "users",
        "validate",
    ]
    for name in commands:
        code, out, _ = run(capsys, name, "--help")
        assert code == 0
        assert "Exit codes:" in out
        assert len(out.splitlines()) > 5


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert __version__ in out


def test_console_script_and_module_entry_points(examples: Path) -> None:
    for cmd in (
        [sys.executable, "-m", "imapsync_decl"],
        [str(Path(sys.executable).parent / "imapsync-decl")],
    ):
        proc = subprocess.run(
            [*cmd, "validate", "--config-dir", str(examples)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert "valid (5 documents" in proc.stdout


def test_sigterm_exits_143(tmp_path: Path) -> None:
    code = (
        "import os, signal, imapsync_decl.config.resolve as c\n"
        "from imapsync_decl.cli.main import main\n"
        "def slow(*a, **k):\n    os.kill(os.getpid(), signal.SIGTERM)\n    raise AssertionError('not reached')\n"
        "c.load_config_dir = slow\n"
        "import imapsync_decl.cli.main as cli\n"
        "cli.load_config = lambda *a, **k: slow()\n"
        "raise SystemExit(main(['validate']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert proc.returncode == 143, proc.stderr
    assert "terminated" in proc.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--version"], 0),
        (["archive", "search", "--archive", "{tmp}/none", "budget"], 10),
        (["archive", "search", "--archive", "{tmp}/none", "NOT"], 10),
    ],
)
def test_quick_commands_import_only_what_they_use(
    tmp_path: Path, args: list[str], code: int
) -> None:
    # Commands are imported lazily: these start without the configuration models
    # (pydantic), the logging set-up (structlog) and the IMAP client.
    script = (
        "import sys\n"
        "from imapsync_decl.cli.main import main\n"
        f"code = main({[a.replace('{tmp}', str(tmp_path)) for a in args]!r})\n"
        "heavy = sorted(m for m in ('pydantic', 'structlog', 'imapclient', 'rich') if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert proc.stdout.splitlines()[-1] == f"{code} []", proc.stdout + proc.stderr
