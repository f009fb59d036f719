"""A private, throw-away Dovecot IMAP server for tests and demos.

The server listens on 127.0.0.1 only, on two ephemeral ports:

* ``port``: plain IMAP that offers STARTTLS,
* ``tls_port``: IMAP over implicit TLS.

Everything it needs (configuration, self-signed certificate, user database, Maildir
storage, sockets, log) lives in one temporary directory that is removed on ``stop()``.

Users (see ``DEFAULT_USERS``)::

    alice               alice-secret
    bob                 bob-secret
    carol               carol-secret
    dave@example.test   dave-secret      (e-mail-like login name)
    umlaut              pässwörd         (non-ASCII password, UTF-8 over SASL PLAIN)

Master user ``archiver`` / ``archiver-secret`` may log in as any user, either with
SASL PLAIN and an authorization identity (authzid=user, authcid=archiver) or with
LOGIN ``user*archiver``.

Every fresh mailbox has the SPECIAL-USE folders Sent, Trash, Junk, Drafts and Archive
(auto-created and subscribed). The hierarchy separator is ``/``.

When running as root, mail is stored with the uid of an unprivileged system account
(Dovecot refuses mail access as uid 0); otherwise everything runs as the current user.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import email.policy
import email.utils
import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Self

from imapclient import IMAPClient

from servers.certificates import CertificateError, make_self_signed

HOST = "127.0.0.1"

DEFAULT_USERS: dict[str, str] = {
    "alice": "alice-secret",
    "bob": "bob-secret",
    "carol": "carol-secret",
    "dave@example.test": "dave-secret",
    "umlaut": "pässwörd",
}

MASTER_USER = "archiver"
MASTER_PASSWORD = "archiver-secret"

#: Folder name -> SPECIAL-USE attribute of the auto-created folders.
SPECIAL_FOLDERS: dict[str, str] = {
    "Sent": "\\Sent",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Drafts": "\\Drafts",
    "Archive": "\\Archive",
}

#: Where the binary is looked for besides PATH (normal users often lack sbin in PATH).
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/opt/homebrew/sbin")

#: Accounts that may own the mail files when the tests run as root, in order of preference.
_ROOT_MAIL_ACCOUNTS = ("mail", "dovecot", "nobody")
_ROOT_INTERNAL_ACCOUNTS = ("dovecot", "nobody")
_ROOT_LOGIN_ACCOUNTS = ("dovenull", "nobody")

_USER_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._@+-]*$")
_APPENDUID_RE = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")


class DovecotError(RuntimeError):
    """The test server could not be set up, started or used."""


def find_dovecot() -> str | None:
    """Return the path of the ``dovecot`` binary, or None if it is not installed.

    ``DOVECOT_BINARY`` in the environment overrides the search.
    """
    override = os.environ.get("DOVECOT_BINARY")
    if override:
        return override if os.access(override, os.X_OK) else None
    found = shutil.which("dovecot")
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = os.path.join(directory, "dovecot")
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def make_message(
    subject: str = "Test message",
    body: str = "Hello.\n",
    size: int | None = None,
    sender: str = "Sender <sender@example.test>",
    to: str = "Recipient <recipient@example.test>",
    message_id: str | None = None,
    date: dt.datetime | None = None,
) -> bytes:
    """Build a valid RFC 5322 message with CRLF line endings.

    Non-ASCII subjects are encoded as RFC 2047 words, a non-ASCII body is sent as
    8bit UTF-8; body lines are kept as they are. With ``size``, ASCII filler lines
    are appended to the body until the message is about ``size`` bytes long (never
    shorter than without padding).
    """
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(date or dt.datetime.now(dt.UTC))
    msg["Message-ID"] = message_id or email.utils.make_msgid(domain="example.test")

    text = body.replace("\r\n", "\n")
    text = text if text.endswith("\n") else text + "\n"
    if size is not None:
        probe = _render(msg, text)
        missing = size - len(probe)
        line = "0123456789" * 7 + "abcdef"  # 76 characters + CRLF = 78 bytes
        full_lines, rest = divmod(max(missing, 0), len(line) + 2)
        filler = [line] * full_lines
        if rest >= 3:
            filler.append(line[: rest - 2])
        if filler:
            text += "\n".join(filler) + "\n"
    return _render(msg, text)


def _render(headers: EmailMessage, text: str) -> bytes:
    msg = EmailMessage(policy=email.policy.SMTP)
    for name, value in headers.items():
        msg[name] = value
    if text.isascii():
        msg.set_content(text, cte="7bit")
    else:
        msg.set_content(text, charset="utf-8", cte="8bit")
    return msg.as_bytes()


@dataclass(frozen=True)
class _Accounts:
    """Unix accounts the Dovecot processes run as."""

    internal_user: str
    internal_group: str
    login_user: str
    mail_uid: int
    mail_gid: int


def _pick_account(names: Iterable[str]) -> pwd.struct_passwd:
    for name in names:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise DovecotError(f"none of the system accounts {list(names)} exists")


def _accounts() -> _Accounts:
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        group = grp.getgrgid(me.pw_gid).gr_name
        return _Accounts(me.pw_name, group, me.pw_name, me.pw_uid, me.pw_gid)
    mail = _pick_account(_ROOT_MAIL_ACCOUNTS)
    internal = _pick_account(_ROOT_INTERNAL_ACCOUNTS)
    return _Accounts(
        internal_user=internal.pw_name,
        internal_group=grp.getgrgid(internal.pw_gid).gr_name,
        login_user=_pick_account(_ROOT_LOGIN_ACCOUNTS).pw_name,
        mail_uid=mail.pw_uid,
        mail_gid=mail.pw_gid,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def process_group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies do not count)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
        state, _ppid, pgrp = stat.rpartition(")")[2].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            return True
    return False


def _sasl_safe(value: str, what: str) -> None:
    if not _USER_NAME_RE.match(value):
        raise DovecotError(f"{what} {value!r} must be letters, digits and ._@+- (not first)")


class DovecotServer:
    """A private Dovecot instance on 127.0.0.1; use ``start()``/``stop()`` or ``with``."""

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        master_user: str = MASTER_USER,
        master_password: str = MASTER_PASSWORD,
        binary: str | None = None,
        keep_files: bool = False,
        start_timeout: float = 10.0,
        directory: Path | None = None,
        ports: tuple[int, int] | None = None,
        extra_config: str = "",
    ) -> None:
        """``directory`` and ``ports`` make a lasting server (the demo): its mail and
        certificate survive ``stop()`` and the next start reuses them."""
        self.host: str = HOST
        self.port: int = 0
        self.tls_port: int = 0
        self.master_user: str = master_user
        self.master_password: str = master_password
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        for name in [*self.users, master_user]:
            _sasl_safe(name, "user name")
        self._binary = binary or find_dovecot()
        self._keep_files = keep_files
        self._start_timeout = start_timeout
        self._accounts = _accounts()
        self._process: subprocess.Popen[bytes] | None = None
        self._fixed_dir = directory.absolute() if directory is not None else None
        self._extra_config = extra_config  # appended to the generated configuration
        self._fixed_ports = ports
        if directory is not None:
            self._keep_files = True
        self._dir: Path | None = None

    # ------------------------------------------------------------------ paths

    @property
    def directory(self) -> Path:
        """The temporary directory holding configuration, mail and log."""
        if self._dir is None:
            raise DovecotError("the server has not been started")
        return self._dir

    @property
    def ca_file(self) -> Path:
        """PEM certificate of the server; use it as the CA file of TLS clients."""
        return self.directory / "tls" / "cert.pem"

    @property
    def log_file(self) -> Path:
        """Dovecot's log (errors, warnings and info, including authentication)."""
        return self.directory / "dovecot.log"

    @property
    def config_file(self) -> Path:
        return self.directory / "dovecot.conf"

    @property
    def mail_root(self) -> Path:
        """Parent of the users' home directories (``<mail_root>/<user>/Maildir``)."""
        return self.directory / "mail"

    @property
    def pid(self) -> int | None:
        """Process id of the Dovecot master (also its process group), None if stopped."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def read_log(self) -> str:
        """Return the log so far (empty if there is none yet)."""
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, DovecotError):
            return ""

    # ------------------------------------------------------------ life cycle

    def start(self, attempts: int = 5) -> Self:
        """Prepare the directory, start Dovecot and wait until both ports greet."""
        if self._process is not None:
            raise DovecotError("the server is already running")
        if self._binary is None:
            raise DovecotError("dovecot binary not found")
        self._prepare_directory()
        try:
            last_error = ""
            for _ in range(1 if self._fixed_ports else attempts):
                self.port, self.tls_port = self._fixed_ports or (_free_port(), _free_port())
                if self.port == self.tls_port:
                    continue
                self._write_config()
                error = self._launch()
                if error is None:
                    atexit.register(self.stop)
                    return self
                last_error = error
                if "in use" not in error:
                    break
            raise DovecotError(f"Dovecot did not start:\n{last_error}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Dovecot (SIGTERM, then SIGKILL) and remove the directory."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is not None:
            self._terminate(process)
        if self._dir is not None and not self._keep_files:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _launch(self) -> str | None:
        """Start the master process; return None when ready, else what went wrong."""
        assert self._binary is not None
        stderr_path = self.directory / "dovecot.stderr"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [self._binary, "-F", "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        self._process = process
        deadline = time.monotonic() + self._start_timeout
        pending = {self.port: False, self.tls_port: True}
        while pending:
            if process.poll() is not None:
                break
            for port, tls in list(pending.items()):
                if self._greets(port, tls):
                    del pending[port]
            if pending:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        if not pending and process.poll() is None:
            return None
        self._process = None
        self._terminate(process)
        output = stderr_path.read_text(encoding="utf-8", errors="replace")
        return f"{output}\n--- {self.log_file} ---\n{self.read_log()}"

    def _greets(self, port: int, tls: bool) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=1.0) as raw:
                if tls:
                    with self.ssl_context().wrap_socket(raw, server_hostname=self.host) as sock:
                        return sock.recv(256).startswith(b"* OK")
                return raw.recv(256).startswith(b"* OK")
        except OSError:
            return False

    def _terminate(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM the master; SIGKILL its process group if anything lingers."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        # Children exit shortly after the master; all share its process group.
        deadline = time.monotonic() + 2
        while process_group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if process_group_alive(process.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    # ----------------------------------------------------------------- setup

    def _prepare_directory(self) -> None:
        # Short path: the sockets in base_dir must fit into sun_path (108 bytes).
        parent = "/tmp" if os.path.isdir("/tmp") else None
        if self._fixed_dir is not None:
            self._dir = self._fixed_dir
            self._dir.mkdir(parents=True, exist_ok=True)
        else:
            self._dir = Path(tempfile.mkdtemp(prefix="dovecot-test-", dir=parent))
        # The login, auth and mail processes run as other users when we are root.
        self._dir.chmod(0o755)
        for sub in ("tls", "run", "state"):
            (self._dir / sub).mkdir(mode=0o755, exist_ok=True)
        self.mail_root.mkdir(mode=0o755, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.mail_root, self._accounts.mail_uid, self._accounts.mail_gid)
        if not (self._dir / "tls" / "cert.pem").exists():
            self._make_certificate()
        (self._dir / "users").mkdir(mode=0o755, exist_ok=True)
        for user in self.users:
            self._write_user(user)
        self._write_master_users()

    def _make_certificate(self) -> None:
        try:
            make_self_signed(self.directory / "tls")
        except CertificateError as exc:
            raise DovecotError(str(exc)) from None

    def _write_user(self, user: str) -> None:
        """Write the passwd-file of one user (``users/<name>``).

        One file per user: Dovecot notices a new file at once, whereas a changed file
        is only re-read after its once-per-second freshness check.
        """
        uid, gid = self._accounts.mail_uid, self._accounts.mail_gid
        home = self.mail_root / user
        line = f"{user}:{{PLAIN}}{self.users[user]}:{uid}:{gid}::{home}::\n"
        target = self.directory / "users" / user
        temporary = target.with_name(f".{user}.new")
        temporary.write_text(line, encoding="utf-8")
        temporary.chmod(0o644)
        temporary.replace(target)

    def _write_master_users(self) -> None:
        path = self.directory / "master-users"
        path.write_text(f"{self.master_user}:{{PLAIN}}{self.master_password}\n", encoding="utf-8")
        path.chmod(0o644)

    def _write_config(self) -> None:
        d = self.directory
        accounts = self._accounts
        mailboxes = "".join(
            f"  mailbox {name} {{\n    special_use = {use}\n    auto = subscribe\n  }}\n"
            for name, use in SPECIAL_FOLDERS.items()
        )
        config = f"""\
# Generated for one test run; nothing is included from the system configuration.
instance_name = dovecot-test-{d.name}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
protocols = imap
listen = {HOST}

default_internal_user = {accounts.internal_user}
default_internal_group = {accounts.internal_group}
default_login_user = {accounts.login_user}
first_valid_uid = {accounts.mail_uid}
last_valid_uid = {accounts.mail_uid}
first_valid_gid = {accounts.mail_gid}
last_valid_gid = {accounts.mail_gid}

ssl = yes
ssl_cert = <{d}/tls/cert.pem
ssl_key = <{d}/tls/key.pem
ssl_min_protocol = TLSv1.2
ssl_cipher_list = ECDHE+AESGCM:ECDHE+CHACHA20
ssl_prefer_server_ciphers = yes

disable_plaintext_auth = no
auth_mechanisms = plain login
auth_master_user_separator = *
auth_verbose = yes
auth_failure_delay = 0

passdb {{
  driver = passwd-file
  args = {d}/master-users
  master = yes
  result_success = continue
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/users/%u
}}

mail_location = maildir:~/Maildir:LAYOUT=fs
namespace inbox {{
  inbox = yes
  separator = /
  prefix =
{mailboxes}}}

service imap-login {{
  chroot =
  inet_listener imap {{
    address = {HOST}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {self.tls_port}
    ssl = yes
  }}
}}
# Tests fail logins on purpose: no growing per-IP delay (auth penalty) for 127.0.0.1.
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service aggregator {{
  chroot =
}}
service director {{
  chroot =
}}
service imap-urlauth-login {{
  chroot =
}}
"""
        self.config_file.write_text(config + self._extra_config, encoding="utf-8")
        self.config_file.chmod(0o644)

    # ----------------------------------------------------------- test helpers

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only this server's certificate."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def add_user(self, user: str, password: str | None = None) -> str:
        """Add a user (or change a password) at run time; return the password.

        Without ``password`` a random one is chosen. A new user can log in at once;
        a changed password takes up to a second (this method waits for that).
        """
        _sasl_safe(user, "user name")
        password = password if password is not None else secrets.token_urlsafe(12)
        replacing = user in self.users
        self.users[user] = password
        if self._dir is not None:
            self._write_user(user)
            if replacing:
                time.sleep(1.1)
        return password

    def connect(self, tls: bool = False) -> IMAPClient:
        """An unauthenticated client on the plain port, or the TLS port if ``tls``."""
        if tls:
            return IMAPClient(
                self.host, port=self.tls_port, ssl=True, ssl_context=self.ssl_context(), timeout=10
            )
        return IMAPClient(self.host, port=self.port, ssl=False, timeout=10)

    @contextlib.contextmanager
    def client(self, user: str) -> Iterator[IMAPClient]:
        """A client logged in as ``user`` (through the master user), logged out afterwards."""
        imap = self.connect()
        try:
            imap.plain_login(self.master_user, self.master_password, authorization_identity=user)
            yield imap
        finally:
            with contextlib.suppress(Exception):
                imap.logout()
            with contextlib.suppress(Exception):
                imap.shutdown()

    def create_folder(self, user: str, name: str, exist_ok: bool = False) -> None:
        """Create ``name`` (Unicode, ``/``-separated) and any missing parent folders."""
        with self.client(user) as imap:
            parts = name.split("/")
            for depth in range(1, len(parts) + 1):
                path = "/".join(parts[:depth])
                exists = imap.folder_exists(path)
                if depth == len(parts) and exists and not exist_ok:
                    raise DovecotError(f"folder {name!r} of {user!r} already exists")
                if not exists:
                    imap.create_folder(path)

    def delete_folder(self, user: str, name: str) -> None:
        """Delete the folder ``name`` (its sub-folders stay)."""
        with self.client(user) as imap:
            imap.delete_folder(name)

    def append(
        self,
        user: str,
        folder: str,
        message: bytes,
        flags: Iterable[str | bytes] = (),
        internal_date: dt.datetime | None = None,
    ) -> int:
        """Append ``message`` to ``folder`` of ``user`` and return its UID."""
        (uid,) = self.append_many(user, folder, [message], flags, internal_date)
        return uid

    def append_many(
        self,
        user: str,
        folder: str,
        messages: Iterable[bytes],
        flags: Iterable[str | bytes] = (),
        internal_date: dt.datetime | None = None,
    ) -> list[int]:
        """Append every message over one connection and return their UIDs."""
        uids = []
        with self.client(user) as imap:
            for message in messages:
                response = imap.append(folder, message, flags=tuple(flags), msg_time=internal_date)
                raw = response if isinstance(response, bytes) else str(response).encode()
                match = _APPENDUID_RE.search(raw)
                if match is None:
                    raise DovecotError(f"no APPENDUID in the APPEND response {response!r}")
                uids.append(int(match.group(2)))
        return uids
