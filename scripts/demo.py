"""The main job on a local demo: a Dovecot seeded with sample mailboxes, then plan and apply.

Run through ``scripts/demo``. The server lives in demo/server (kept between runs,
on ports 10143 and 10993 of 127.0.0.1) and the archive in archive/, as the example
profiles in profiles.d/ say. Running the demo again shows that nothing new is
archived.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers.dovecot import DovecotServer, make_message  # noqa: E402

SERVER_DIR = ROOT / "demo" / "server"
PORTS = (10143, 10993)
USERS = {
    "alice": "alice-secret",
    "bob": "bob-secret",
    "carol": "carol-secret",
    "dave@example.test": "dave-secret",
    "umlaut": "pässwörd",
}


def seed(server: DovecotServer) -> None:
    """Sample mailboxes: nested and non-ASCII folders, excluded ones, duplicates, a large one."""
    for n, user in enumerate(USERS):
        for i in range(1, 9):
            server.append(
                user,
                "INBOX",
                make_message(
                    subject=f"Hello {user} #{i}",
                    body=f"Message {i} for {user}.\n" * (20 * i),
                    message_id=f"<inbox-{n}-{i}@demo.example.test>",
                ),
            )
        server.create_folder(user, "Projekte/Übersicht", exist_ok=True)
        shared = make_message(
            subject="Quarterly report",
            body="Numbers.\n" * 200,
            message_id=f"<report-{n}@demo.example.test>",
        )
        server.append(user, "Projekte/Übersicht", shared)
        server.append(user, "Sent", shared)  # the same message twice: one blob, two placements
        server.append(user, "Trash", make_message(subject="Deleted", body="gone\n"))
    server.append(
        "alice",
        "INBOX",
        make_message(
            subject="Large attachment", size=2_500_000, message_id="<large@demo.example.test>"
        ),
    )


def run(*args: str) -> int:
    print(f"\n$ imapsync-decl {' '.join(args)}", flush=True)
    env = {**os.environ, "IMAP_MASTER_PASSWORD": "archiver-secret", "BOB_PASSWORD": "bob-secret"}
    command = [str(ROOT / ".venv" / "bin" / "imapsync-decl"), *args]
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


def main() -> int:
    os.chmod(ROOT / "profiles.d" / "contractors.csv", 0o600)  # it holds passwords
    fresh = not (SERVER_DIR / "mail").exists()
    server = DovecotServer(USERS, directory=SERVER_DIR, ports=PORTS)
    with server:
        if fresh:
            seed(server)
            print(
                f"Demo server on 127.0.0.1:{PORTS[0]} (STARTTLS) and :{PORTS[1]} (TLS), "
                f"seeded with {len(USERS)} mailboxes",
                flush=True,
            )
        else:
            print("Demo server restarted with its mailboxes as they were", flush=True)
        codes = [run("validate"), run("plan", "--detailed-exitcode"), run("apply")]
        print(
            f"\nExit codes: validate {codes[0]}, plan {codes[1]} (2 = changes pending, "
            f"0 = nothing to do), apply {codes[2]}"
        )
        print("Run scripts/demo again: the plan is empty and apply archives nothing new.")
    return 0 if codes[0] == 0 and codes[1] in (0, 2) and codes[2] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
