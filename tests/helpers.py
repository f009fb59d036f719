"""Small helpers shared by the tests: write a configuration directory from text."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_config(directory: Path, files: dict[str, str | bytes]) -> Path:
    """Write each file (text is dedented) into ``directory`` and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = directory / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")
        if name.endswith((".csv", ".txt")):
            path.chmod(0o600)
    return directory


USERS = """
    kind: Users
    users:
      - {name: alice, email: alice@example.com, display_name: Alice Example}
      - {name: bob, email: bob@example.com}
      - {name: carol, email: '"carol@home"@example.com', display_name: Carol Ünal}
      - {name: scanner}
"""


def master_profile(master: str = "", name: str = "staff", server: str = "") -> str:
    """A master-password profile; ``master`` adds indented lines under source.master."""
    extra = textwrap.indent(textwrap.dedent(master).strip("\n"), " " * 4)
    server_extra = textwrap.indent(textwrap.dedent(server).strip("\n"), " " * 2)
    lines = ["kind: Profile", f"name: {name}", "server:", "  host: imap.example.com"]
    lines += [server_extra] if server_extra else []
    lines += [
        "source:",
        "  master:",
        "    username: archiver",
        "    password: {env: TEST_MASTER_PW}",
    ]
    lines += [extra] if extra else []
    return "\n".join(lines) + "\n"
