"""An archive for the web tests, made by a real apply against the test Dovecot.

Three archive users on Dovecot: ``alice`` (60 plain messages in INBOX, an HTML message
with a script, an event handler, a remote image and a remote link, and a message with
an attachment of a hostile name in ``Projekte/Übersicht``), ``bob`` (two messages only
he may see), and an administrator who has no archive. The remote image and link point
at a local HTTP server that counts the requests it gets (:class:`Pixel`), so a test can
prove that nothing was loaded. Passwords are set with cheap Argon2 parameters.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.server
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from starlette.testclient import TestClient

from imapsync_decl.cli.main import main
from imapsync_decl.config.model import Config
from imapsync_decl.sources.users import load_with_index_users
from imapsync_decl.store.accounts import Accounts
from imapsync_decl.web.app import create_app
from imapsync_decl.web.settings import Served, served

from helpers import write_config
from servers.dovecot import DovecotServer, make_message

BASE_URL = "http://127.0.0.1:8462"
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22", "admin": "admin-password-333"}
ATTACHMENT = b"%PDF-1.4 not really a pdf\x00\x01\x02"
ATTACHMENT_NAME = '../../etc/quo"te\r\n.pdf'
SCRIPT_MARKER = "SCRIPT-RAN"


class Pixel:
    """A local HTTP server that counts the requests it gets (the "remote" content)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        pixel = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                pixel.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/gif")
                self.end_headers()
                self.wfile.write(b"GIF89a")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def html_message(pixel_port: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Mallory <mallory@example.test>"
    msg["To"] = "alice@example.test"
    msg["Subject"] = "Quarterly newsletter"
    msg["Date"] = "Mon, 07 Oct 2024 10:00:00 +0000"
    msg["Message-ID"] = "<newsletter@example.test>"
    msg.set_content("Plain part of the newsletter.\n")
    msg.add_alternative(
        "<html><head><script>document.title='" + SCRIPT_MARKER + "';"
        "parent.document.title='" + SCRIPT_MARKER + "'</script></head><body>"
        "<h1>Newsletter</h1><p>Hello <b>Alice</b>.</p>"
        f'<img id="remote" src="http://127.0.0.1:{pixel_port}/pixel.gif?n=1" alt="tracker">'
        "<img src=x onerror=\"document.title='" + SCRIPT_MARKER + "'\">"
        f'<p><a id="link" href="http://127.0.0.1:{pixel_port}/link">Read online</a></p>'
        "<iframe src='javascript:alert(1)'></iframe><form action='/x'><input></form>"
        "</body></html>\n",
        subtype="html",
    )
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def attachment_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Bob Builder <bob@example.test>"
    msg["To"] = "alice@example.test"
    msg["Subject"] = "Die Übersicht mit Anhang"
    msg["Date"] = "Tue, 08 Oct 2024 09:00:00 +0000"
    msg["Message-ID"] = "<overview@example.test>"
    msg.set_content("Anbei die Übersicht.\n")
    msg.add_attachment(ATTACHMENT, maintype="application", subtype="pdf", filename="overview.pdf")
    raw = msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    # A hostile file name, as a sender can write it (quotes, a path, a line break).
    return raw.replace(b'filename="overview.pdf"', b'filename="../../etc/quo\\"te.pdf"')


@dataclass
class WebArchive:
    """The configuration and archive of the web tests, with the Dovecot users."""

    server: DovecotServer
    root: Path
    names: dict[str, str]  # role (alice, bob, admin) -> archive user name
    pixel: Pixel
    sent: dict[str, bytes] = field(default_factory=dict)  # what was appended, by key
    clients: int = 0  # each client comes from an address of its own (throttling counts them)

    @property
    def config_dir(self) -> Path:
        return self.root / "profiles.d"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    def config(self) -> Config:
        return load_with_index_users(self.config_dir, str(self.config_dir))

    def settings(self, **changes: Any) -> Served:
        """The settings ``serve`` takes from this configuration's Web document, changed."""
        return dataclasses.replace(served(self.config().web), **changes)

    def accounts(self, clock: Callable[[], float] | None = None) -> Accounts:
        if clock is None:
            return Accounts.open(self.archive, hasher=CHEAP)
        return Accounts.open(self.archive, hasher=CHEAP, clock=clock)

    def client(
        self,
        *,
        settings: Served | None = None,
        clock: Callable[[], float] | None = None,
        base_url: str = BASE_URL,
    ) -> TestClient:
        app = create_app(self.config(), settings or self.settings(), self.accounts(clock))
        self.clients += 1
        address = f"198.51.{self.clients // 250}.{self.clients % 250 + 1}"
        return TestClient(app, base_url=base_url, follow_redirects=False, client=(address, 50000))

    def run(self, *args: str) -> int:
        return main([*args, "--config-dir", str(self.config_dir)])


def build(server: DovecotServer, root: Path) -> WebArchive:
    tag = uuid.uuid4().hex[:6]
    names = {role: f"w{role}{tag}" for role in ("alice", "bob")}
    names["admin"] = f"wadmin{tag}"
    pixel = Pixel()
    web = WebArchive(server, root, names, pixel)
    for role in ("alice", "bob"):
        server.add_user(names[role])
    alice, bob = names["alice"], names["bob"]
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    server.append_many(
        alice,
        "INBOX",
        (
            make_message(
                subject=f"Report {i:02d}",
                body=f"Weekly report number {i}.\n",
                date=start + dt.timedelta(days=i),
            )
            for i in range(60)
        ),
    )
    web.sent["html"] = html_message(pixel.port)
    server.append(alice, "INBOX", web.sent["html"])
    server.create_folder(alice, "Projekte/Übersicht")
    web.sent["attachment"] = attachment_message()
    server.append(alice, "Projekte/Übersicht", web.sent["attachment"])
    server.append_many(
        bob, "INBOX", (make_message(subject=f"Bob private {i}", body="secret\n") for i in range(2))
    )
    users = "".join(f"  - {{name: {n}, email: {n}@example.test}}\n" for n in (alice, bob))
    write_config(
        web.config_dir,
        {
            "users.yaml": "kind: Users\nusers:\n" + users,
            "staff.yaml": "kind: Profile\nname: staff\n"
            f"server:\n  host: {server.host}\n  port: {server.port}\n  security: starttls\n"
            f"  ca_file: {server.ca_file}\n"
            f"source:\n  master:\n    username: {server.master_user}\n"
            "    password: {env: BED_MASTER_PASSWORD}\n"
            "    identity: email_local_part\n"
            f"    users: {{select: only, names: [{alice}, {bob}]}}\n",
            "archive.yaml": f"kind: Archive\npath: {web.archive}\n",
            "web.yaml": f"kind: Web\nadministrators: [{names['admin']}]\n",
        },
    )
    code = web.run("apply")
    assert code == 0
    with web.accounts() as accounts:
        for role, name in names.items():
            accounts.set_password(name, PASSWORDS[role])
    return web


@pytest.fixture(scope="session")
def web_archive(
    dovecot: DovecotServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebArchive]:
    previous = os.environ.get("BED_MASTER_PASSWORD")
    os.environ["BED_MASTER_PASSWORD"] = dovecot.master_password
    web = build(dovecot, tmp_path_factory.mktemp("web"))
    try:
        yield web
    finally:
        web.pixel.close()
        if previous is None:
            os.environ.pop("BED_MASTER_PASSWORD", None)
        else:
            os.environ["BED_MASTER_PASSWORD"] = previous


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(
    web: WebArchive, config_dir: Path | None = None, port: int | None = None
) -> Iterator[str]:
    """``imapsync-decl serve`` as its own process on 127.0.0.1; its URL once it listens.
    Stopped with SIGTERM afterwards: exit 143, and its log holds no secret."""
    port = port or free_port()
    env = {**os.environ, "BED_MASTER_PASSWORD": web.server.master_password}
    process = subprocess.Popen(
        [
            sys.executable, "-m", "imapsync_decl", "--log-format", "json", "serve",
            "--config-dir", str(config_dir or web.config_dir), "--listen", f"127.0.0.1:{port}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    stderr = process.stderr
    assert stderr is not None
    lines: list[str] = []
    listening = threading.Event()
    url: list[str] = []

    def drain() -> None:  # read every line, so that the server never blocks on its logs
        for line in stderr:
            lines.append(line)
            if line.startswith("serving the archive"):
                url.append(line.rsplit(" ", 1)[-1].strip())
                listening.set()
        listening.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        listening.wait()
        if not url:
            pytest.fail(f"serve ended with {process.wait()}: {''.join(lines)}")
        yield url[0]
    finally:
        process.terminate()
        code = process.wait(timeout=60)
        reader.join()
        log = "".join(lines)
        assert code == 143, log
        for secret in [web.server.master_password, *PASSWORDS.values()]:
            assert secret not in log
        assert "imapsync_session" not in log


def sign_in(client: TestClient, name: str, password: str) -> None:
    """Sign in through the page's form, as a browser does."""
    page = client.get("/sign-in")
    csrf = form_value(page.text, "csrf")
    answer = client.post("/sign-in", data={"username": name, "password": password, "csrf": csrf})
    assert answer.status_code == 303, answer.text


def form_value(html: str, name: str) -> str:
    marker = f'name="{name}" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]
