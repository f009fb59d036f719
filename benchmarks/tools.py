"""How each measured tool is set up and invoked, and how its output is checked."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
IMAPSYNC_DECL = VENV_BIN / "imapsync-decl"
PYTHON = VENV_BIN / "python"
RAW_FETCH = Path(__file__).resolve().parent / "raw_fetch.py"

PASSWORD_ENV = "BENCH_MASTER_PASSWORD"


@dataclass(frozen=True)
class Target:
    """The server and the mailboxes every tool archives."""

    host: str
    port: int
    master_user: str
    master_password: str
    users: tuple[str, ...]

    def env(self) -> dict[str, str]:
        return {**os.environ, PASSWORD_ENV: self.master_password}


def split_round_robin(items: tuple[str, ...], groups: int) -> list[list[str]]:
    """``groups`` non-empty lists taking the items in turn."""
    buckets: list[list[str]] = [[] for _ in range(min(groups, len(items)))]
    for n, item in enumerate(items):
        buckets[n % len(buckets)].append(item)
    return buckets


# ------------------------------------------------------------------ imapsync-decl


def write_imapsync_config(
    target: Target, directory: Path, connections: int, *, search: bool = True
) -> Path:
    """A configuration directory with one master-password profile over plain IMAP;
    ``search``: apply indexes for `archive search` (the Archive document's setting)."""
    config = directory / "config"
    config.mkdir(parents=True)
    profile = {
        "kind": "Profile",
        "name": "bench",
        "description": "Benchmark mailboxes",
        "server": {"host": target.host, "port": target.port, "security": "plain", "timeout": 120},
        "source": {
            "master": {
                "username": target.master_user,
                "password": {"env": PASSWORD_ENV},
                "identity": "username",
                "mechanism": "sasl_plain",
                "users": {"select": "all"},
            }
        },
        "folders": {"include": ["*"], "default_exclusions": True},
        "max_concurrent_jobs": connections,
    }
    users = {
        "kind": "Users",
        "users": [{"name": user, "email": f"{user}@bench.example.test"} for user in target.users],
    }
    archive = {
        "kind": "Archive",
        "path": str(directory / "archive"),
        "search_during_apply": search,
    }
    for name, document in (("profile", profile), ("users", users), ("archive", archive)):
        (config / f"{name}.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    return config


def imapsync_apply_command(config: Path) -> list[str]:
    return [str(IMAPSYNC_DECL), "apply", "--config-dir", str(config), "--format", "json"]


def imapsync_plan_command(config: Path) -> list[str]:
    """``plan`` that exits 0 only when nothing is pending (2 when something is)."""
    return [
        str(IMAPSYNC_DECL),
        "plan",
        "--config-dir",
        str(config),
        "--format",
        "json",
        "--detailed-exitcode",
    ]


def imapsync_validate_command(config: Path) -> list[str]:
    return [str(IMAPSYNC_DECL), "validate", "--config-dir", str(config)]


def count_placements(archive: Path) -> tuple[int, int]:
    """(placements, distinct messages) in the archive's index."""
    connection = sqlite3.connect(f"file:{archive / 'index.sqlite'}?mode=ro", uri=True)
    try:
        placements = connection.execute("SELECT count(*) FROM placements").fetchone()[0]
        messages = connection.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        connection.close()
    return int(placements), int(messages)


# ------------------------------------------------------------------------- mbsync


def write_mbsyncrc(target: Target, directory: Path) -> Path:
    """One channel per mailbox: pull everything into ``directory/maildir/<user>``."""
    maildirs = directory / "maildir"
    maildirs.mkdir(parents=True)
    blocks = []
    for user in target.users:
        near = maildirs / user
        near.mkdir()
        blocks.append(
            f"""\
IMAPAccount acc-{user}
Host {target.host}
Port {target.port}
User {user}*{target.master_user}
Pass "{target.master_password}"
AuthMechs LOGIN
SSLType None

IMAPStore far-{user}
Account acc-{user}

MaildirStore near-{user}
Path {near}/
Inbox {near}/INBOX
SubFolders Verbatim

Channel {user}
Far :far-{user}:
Near :near-{user}:
Patterns *
Create Near
Sync Pull
SyncState *
"""
        )
    rc = directory / "mbsyncrc"
    rc.write_text("\n".join(blocks), encoding="utf-8")
    rc.chmod(0o600)
    return rc


def mbsync_commands(rc: Path, users: tuple[str, ...], connections: int) -> list[list[str]]:
    """One ``mbsync -a`` at one connection; else one process per group of channels."""
    if connections == 1:
        return [["mbsync", "-q", "-c", str(rc), "-a"]]
    return [
        ["mbsync", "-q", "-c", str(rc), *group] for group in split_round_robin(users, connections)
    ]


def count_maildir_messages(root: Path) -> int:
    """Message files in every ``cur``/``new`` directory below ``root``."""
    total = 0
    for directory, _subdirs, files in os.walk(root):
        if os.path.basename(directory) in ("cur", "new"):
            total += len(files)
    return total


# ----------------------------------------------------------------------- baseline


def raw_fetch_command(target: Target, out: Path, connections: int) -> list[str]:
    return [
        str(PYTHON if PYTHON.exists() else sys.executable),
        str(RAW_FETCH),
        "--host",
        target.host,
        "--port",
        str(target.port),
        "--master",
        target.master_user,
        "--password-env",
        PASSWORD_ENV,
        "--workers",
        str(connections),
        "--out",
        str(out),
        *target.users,
    ]


def count_files(root: Path) -> tuple[int, int]:
    """(files, bytes) below ``root``."""
    files = size = 0
    for directory, _subdirs, names in os.walk(root):
        for name in names:
            files += 1
            size += os.stat(os.path.join(directory, name)).st_size
    return files, size


def disk_usage(root: Path) -> int:
    """Bytes allocated below ``root`` (what ``du`` reports)."""
    total = 0
    for directory, _subdirs, names in os.walk(root):
        for name in names:
            total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total
