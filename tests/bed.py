"""A configuration directory whose profiles point at the test Dovecot: the apply tests' bed."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from imapsync_decl.cli.main import main

from helpers import write_config
from servers.dovecot import DovecotServer, make_message


@dataclass
class Bed:
    """A configuration directory whose profiles point at the test Dovecot, with fresh users."""

    server: DovecotServer
    root: Path
    capsys: pytest.CaptureFixture[str]
    users: dict[str, str] = field(default_factory=dict)  # name -> password
    outputs: list[str] = field(default_factory=list)  # everything printed, checked for secrets

    @property
    def config_dir(self) -> Path:
        return self.root / "profiles.d"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    def new_user(self, prefix: str = "u") -> str:
        name = f"{prefix}{uuid.uuid4().hex[:8]}"
        self.users[name] = self.server.add_user(name)
        return name

    def server_yaml(self, security: str = "starttls", **extra: Any) -> str:
        port = self.server.tls_port if security == "tls" else self.server.port
        lines = [
            "server:",
            f"  host: {self.server.host}",
            f"  port: {port}",
            f"  security: {security}",
        ]
        if not extra.get("accept_all_certificates") and security != "plain":
            lines.append(f"  ca_file: {self.server.ca_file}")
        lines += [f"  {k}: {json.dumps(v)}" for k, v in extra.items()]
        return "\n".join(lines) + "\n"

    def master_profile(self, name: str, users: list[str], folders: str = "", **server: Any) -> None:
        user_docs = "".join(f"  - {{name: {u}, email: {u}@example.test}}\n" for u in users)
        write_config(
            self.config_dir,
            {
                f"users-{name}.yaml": "kind: Users\nusers:\n" + user_docs,
                f"{name}.yaml": f"kind: Profile\nname: {name}\n"
                + self.server_yaml(**server)
                + "source:\n  master:\n"
                + f"    username: {self.server.master_user}\n"
                + "    password: {env: BED_MASTER_PASSWORD}\n"
                + "    identity: email_local_part\n"
                + "    users: {select: only, names: ["
                + ", ".join(users)
                + "]}\n"
                + folders,
            },
        )

    def csv_profile(self, name: str, rows: list[tuple[str, str]], **server: Any) -> None:
        csv = "login;password\n" + "".join(f'{login};"{pw}"\n' for login, pw in rows)
        write_config(
            self.config_dir,
            {
                f"{name}.yaml": f"kind: Profile\nname: {name}\n"
                + self.server_yaml(**server)
                + f"source: {{csv: {{file: {name}.csv}}}}\n",
                f"{name}.csv": csv,
            },
        )

    def run(self, *args: str) -> tuple[int, str, str]:
        code = main([*args, "--config-dir", str(self.config_dir)])
        out, err = self.capsys.readouterr()
        self.outputs.append(out + err)
        return code, out, err

    def apply_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        code, out, _ = self.run("apply", "--format", "json", *args)
        return code, json.loads(out)

    def plan_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        code, out, _ = self.run("plan", "--format", "json", *args)
        return code, json.loads(out)

    def placements(self) -> list[tuple[str, str, int, int, str]]:
        with sqlite3.connect(self.archive / "index.sqlite") as db:
            return db.execute(
                "SELECT u.name, f.path, p.uidvalidity, p.uid, p.sha256 FROM placements p "
                "JOIN folders f ON f.id = p.folder_id JOIN mailboxes m ON m.id = f.mailbox_id "
                "JOIN users u ON u.id = m.user_id ORDER BY 1, 2, 3, 4"
            ).fetchall()

    def blob_count(self) -> int:
        return sum(1 for p in (self.archive / "blobs").rglob("*") if p.is_file())

    def server_messages(self, user: str, folder: str) -> dict[int, bytes]:
        with self.server.client(user) as client:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            if not uids:
                return {}
            return {
                uid: data[b"BODY[]"] for uid, data in client.fetch(uids, ["BODY.PEEK[]"]).items()
            }


def seed(
    bed: Bed, user: str, folder: str, count: int, tag: str = "m", size: int | None = None
) -> None:
    if folder != "INBOX":
        bed.server.create_folder(user, folder, exist_ok=True)
    bed.server.append_many(
        user,
        folder,
        (
            make_message(subject=f"{tag} {i} {user}", body=f"{tag}{i}\n", size=size)
            for i in range(count)
        ),
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def placement_count(archive: Path) -> int:
    """Placements in the archive's index, read while an apply may be writing it."""
    try:
        with sqlite3.connect(f"file:{archive / 'index.sqlite'}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM placements").fetchone()[0])
    except sqlite3.Error:
        return 0


def start_apply(bed: Bed, *args: str) -> subprocess.Popen[str]:
    """``imapsync-decl apply`` on the bed in a process of its own (to signal or kill)."""
    env = {**os.environ, "BED_MASTER_PASSWORD": bed.server.master_password}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imapsync_decl",
            "apply",
            "--config-dir",
            str(bed.config_dir),
            *args,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
