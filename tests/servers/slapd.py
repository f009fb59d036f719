"""A private, throw-away OpenLDAP server (slapd) for directory tests and scripts.

The server listens on 127.0.0.1 only, on ephemeral ports:

* ``port`` (``url``): plain LDAP that offers StartTLS,
* ``ldaps_port`` (``ldaps_url``): LDAP over implicit TLS, or None with ``ldaps=False``.

Everything it needs (``slapd.conf``, self-signed certificate, MDB database, pid file, log)
lives in one temporary directory that is removed on ``stop()``. Nothing is read from the
system configuration except the schema files (``core``, ``cosine``, ``inetorgperson``,
``nis`` from ``/etc/ldap/schema``) and the backend modules.

Directory tree (suffix ``dc=example,dc=test``)::

    dc=example,dc=test
      ou=people    users (inetOrgPerson), see add_user()
      ou=services  cn=reader: the read-only service account
      ou=<name>    further units on demand (add_ou(), or add_user(..., ou=name))

Accounts::

    cn=admin,dc=example,dc=test             admin-secret   rootdn: writes, no ACLs, no limits
    cn=reader,ou=services,dc=example,dc=test reader-secret  reads every entry, no passwords

Access: anonymous may bind and read the root DSE and the schema, nothing else. The reader
reads the whole tree except ``userPassword``; a user reads their own entry and may change
their password; nobody but the rootdn reads passwords.

Limits: a search returns at most ``size_limit`` entries (500 by default; soft and hard limit
alike, so a client cannot ask for more), then ends with ``sizeLimitExceeded`` (4). A paged
search (RFC 2696) is limited neither in total nor per page. The rootdn is exempt from all
limits, so search as the reader (or a user) to see them. No time limit is set beyond slapd's
default of 3600 s.

Disabled users: ``add_user(..., disabled=True)`` or ``set_disabled()`` add the value
``disabled`` to the user's ``employeeType`` attribute; ``ACTIVE_USER_FILTER`` excludes them::

    (&(objectClass=inetOrgPerson)(!(employeeType=disabled)))

When running as root, slapd drops its privileges to the ``openldap`` account (the temporary
directory is handed over to it); without that account, or as another user, it runs as the
current user.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import grp
import hashlib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import ldap3
from ldap3.core.exceptions import (
    LDAPAttributeOrValueExistsResult,
    LDAPException,
    LDAPNoSuchAttributeResult,
    LDAPNoSuchObjectResult,
)

from servers.certificates import CertificateError, make_self_signed

HOST = "127.0.0.1"
BASE_DN = "dc=example,dc=test"
MAIL_DOMAIN = "example.test"
ADMIN_PASSWORD = "admin-secret"
READER_PASSWORD = "reader-secret"
DEFAULT_SIZE_LIMIT = 500
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")

#: How disabled users are marked: this value in this attribute.
DISABLED_ATTRIBUTE = "employeeType"
DISABLED_VALUE = "disabled"
USER_OBJECT_CLASSES = ["top", "person", "organizationalPerson", "inetOrgPerson"]
#: Every user the helpers create.
USER_FILTER = "(objectClass=inetOrgPerson)"
#: Users that are not disabled.
ACTIVE_USER_FILTER = f"(&{USER_FILTER}(!({DISABLED_ATTRIBUTE}={DISABLED_VALUE})))"

#: Where the binary is looked for besides PATH (normal users often lack sbin in PATH).
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_MODULE_DIRS = (
    "/usr/lib/ldap",
    "/usr/lib64/openldap",
    "/usr/lib/openldap",
    "/usr/libexec/openldap",
)
_SCHEMA_DIRS = ("/etc/ldap/schema", "/etc/openldap/schema")
_SERVICE_ACCOUNT = "openldap"
_PORT_ATTEMPTS = 5
#: LDAPv3 anonymous simple bind, message 1, and the start of its successful response.
_ANONYMOUS_BIND = bytes.fromhex("300c020101600702010304008000")
_BIND_SUCCESS = bytes.fromhex("02010161070a0100")

#: Keyword spellings accepted by modify_user() for the attributes tests use most.
_ATTRIBUTE_ALIASES = {
    "display_name": "displayName",
    "given_name": "givenName",
    "employee_type": "employeeType",
    "employee_number": "employeeNumber",
    "telephone_number": "telephoneNumber",
    "user_password": "userPassword",
}

#: A value for modify_user(): one value, several values, or None to remove the attribute.
AttributeValue = str | Sequence[str] | None


class SlapdError(RuntimeError):
    """The test server could not be set up, started or used."""


def find_slapd() -> str | None:
    """Return the path of the ``slapd`` binary, or None if it is not installed.

    ``SLAPD_BINARY`` in the environment overrides the search.
    """
    override = os.environ.get("SLAPD_BINARY")
    if override:
        return override if os.access(override, os.X_OK) else None
    found = shutil.which("slapd")
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = os.path.join(directory, "slapd")
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def ssha(password: str) -> str:
    """The ``{SSHA}`` form of ``password`` (UTF-8), as slapd stores it in ``userPassword``."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt, usedforsecurity=False).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def escape_dn_value(value: str) -> str:
    """Escape an attribute value for use in a DN (RFC 4514)."""
    out = []
    for index, char in enumerate(value):
        if (
            char in ',+"\\<>;='
            or (char in "# " and index == 0)
            or (char == " " and index == len(value) - 1)
        ):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def ldif_entry(dn: str, object_classes: Sequence[str], attributes: Mapping[str, Any]) -> str:
    """One LDIF record (RFC 2849) ending in a newline; values that are not safe ASCII
    strings are written base64-encoded (UTF-8)."""
    lines = [_ldif_line("dn", dn)]
    lines += [_ldif_line("objectClass", name) for name in object_classes]
    for name, value in attributes.items():
        values = [value] if isinstance(value, str) else list(value)
        lines += [_ldif_line(name, str(v)) for v in values]
    return "\n".join(lines) + "\n"


def _ldif_line(name: str, value: str) -> str:
    safe = (
        value.isascii()
        and value.isprintable()
        and not value.startswith((" ", ":", "<"))
        and not value.endswith(" ")
    )
    if safe:
        return f"{name}: {value}"
    return f"{name}:: {base64.b64encode(value.encode('utf-8')).decode('ascii')}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _first_existing(candidates: Iterable[str]) -> Path | None:
    for candidate in candidates:
        if os.path.isdir(candidate):
            return Path(candidate)
    return None


class SlapdServer:
    """A private slapd on 127.0.0.1; use ``start()``/``stop()`` or ``with``."""

    def __init__(
        self,
        *,
        base_dn: str = BASE_DN,
        admin_password: str = ADMIN_PASSWORD,
        reader_password: str = READER_PASSWORD,
        size_limit: int | None = DEFAULT_SIZE_LIMIT,
        ldaps: bool = True,
        binary: str | None = None,
        schema_dir: Path | None = None,
        module_dir: Path | None = None,
        debug_level: str = "stats",
        start_timeout: float = 10.0,
        keep_files: bool = False,
    ) -> None:
        """``size_limit=None`` removes the limit; ``debug_level`` is slapd's ``-d`` (its
        output goes to ``log_file``)."""
        self.host: str = HOST
        self.port: int = 0
        self.ldaps_port: int | None = None
        self.base_dn: str = base_dn
        self.admin_dn: str = f"cn=admin,{base_dn}"
        self.admin_password: str = admin_password
        self.reader_dn: str = f"cn=reader,ou=services,{base_dn}"
        self.reader_password: str = reader_password
        self.size_limit: int | None = size_limit
        self._ldaps = ldaps
        self._binary = binary or find_slapd()
        self._schema_dir = schema_dir or _first_existing(_SCHEMA_DIRS)
        self._module_dir = module_dir or _first_existing(_MODULE_DIRS)
        self._debug_level = debug_level
        self._start_timeout = start_timeout
        self._keep_files = keep_files
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._owner = self._service_owner()

    # ------------------------------------------------------------------ paths

    @property
    def directory(self) -> Path:
        """The temporary directory holding configuration, database and log."""
        if self._dir is None:
            raise SlapdError("the server has not been started")
        return self._dir

    @property
    def config_file(self) -> Path:
        return self.directory / "slapd.conf"

    @property
    def ca_file(self) -> Path:
        """PEM certificate of the server; use it as the CA file of TLS clients."""
        return self.directory / "tls" / "cert.pem"

    @property
    def log_file(self) -> Path:
        """slapd's debug output (``-d``), by default one ``stats`` line per operation."""
        return self.directory / "slapd.log"

    @property
    def url(self) -> str:
        """``ldap://127.0.0.1:<port>``: plain LDAP, StartTLS offered."""
        return f"ldap://{self.host}:{self.port}"

    @property
    def ldaps_url(self) -> str | None:
        """``ldaps://127.0.0.1:<ldaps_port>``, or None without an LDAPS listener."""
        return None if self.ldaps_port is None else f"ldaps://{self.host}:{self.ldaps_port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running slapd, or None."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def read_log(self) -> str:
        """The server's log so far, or an empty string."""
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except (OSError, SlapdError):
            return ""

    # -------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Write the configuration, start slapd, wait for a bind, create the base entries."""
        if self._process is not None:
            raise SlapdError("the server is already running")
        if self._binary is None:
            raise SlapdError("slapd binary not found (install slapd or set SLAPD_BINARY)")
        if self._schema_dir is None:
            raise SlapdError("OpenLDAP schema directory not found (/etc/ldap/schema)")
        self._prepare_directory()
        atexit.register(self.stop)
        try:
            failure = ""
            for _attempt in range(_PORT_ATTEMPTS):
                self.port = _free_port()
                self.ldaps_port = _free_port() if self._ldaps else None
                if self.port == self.ldaps_port:
                    continue
                self._write_config()
                failure = self._launch() or ""
                if not failure:
                    break
                if "Address already in use" not in failure:
                    raise SlapdError(f"slapd did not start:\n{failure}")
            else:
                raise SlapdError(f"slapd found no free port:\n{failure}")
            self._create_base_entries()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop slapd (SIGTERM, then SIGKILL) and remove the directory."""
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
        """Start slapd in the foreground; return None when it answers a bind, else its log."""
        assert self._binary is not None
        urls = self.url + "/"
        if self.ldaps_port is not None:
            urls += f" ldaps://{self.host}:{self.ldaps_port}/"
        command = [self._binary, "-f", str(self.config_file), "-h", urls, "-d", self._debug_level]
        if self._owner is not None:
            command += ["-u", self._owner[0], "-g", self._owner[1]]
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._process = process
        deadline = time.monotonic() + self._start_timeout
        while process.poll() is None and time.monotonic() < deadline:
            if self._answers_bind():
                return None
            time.sleep(0.02)
        self._process = None
        self._terminate(process)
        return self.read_log() or f"slapd exited with status {process.returncode}"

    def _answers_bind(self) -> bool:
        """Whether the plain port answers an anonymous bind with success.

        Raw bytes with a short timeout: a foreign listener on a colliding port must not
        hold the start up (slapd's own exit is noticed by the caller).
        """
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(_ANONYMOUS_BIND)
                answer = sock.recv(64)
        except OSError:
            return False
        return _BIND_SUCCESS in answer

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes]) -> None:
        """SIGTERM slapd (a clean shutdown); SIGKILL its process group if it lingers.

        With ``-d`` slapd neither forks nor detaches: once it has exited, nothing is left.
        """
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)

    # ----------------------------------------------------------------- setup

    @staticmethod
    def _service_owner() -> tuple[str, str] | None:
        """``(user, group)`` for slapd's ``-u``/``-g`` when running as root, else None."""
        if os.geteuid() != 0:
            return None
        try:
            account = pwd.getpwnam(_SERVICE_ACCOUNT)
            group = grp.getgrgid(account.pw_gid).gr_name
        except KeyError:
            return None
        return account.pw_name, group

    def _prepare_directory(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="slapd-test-"))
        self._dir.chmod(0o700)
        for sub in ("tls", "db", "run"):
            (self._dir / sub).mkdir(mode=0o700)
        self._make_certificate()
        if self._owner is not None:
            account = pwd.getpwnam(self._owner[0])
            for path in [self._dir, *self._dir.rglob("*")]:
                os.chown(path, account.pw_uid, account.pw_gid)

    def _make_certificate(self) -> None:
        try:
            make_self_signed(self.directory / "tls")
        except CertificateError as exc:
            raise SlapdError(str(exc)) from None

    def _write_config(self) -> None:
        d = self.directory
        assert self._schema_dir is not None
        schemas = "".join(f"include {self._schema_dir}/{name}.schema\n" for name in SCHEMAS)
        modules = ""
        if self._module_dir is not None and (self._module_dir / "back_mdb.la").exists():
            modules = f"modulepath {self._module_dir}\nmoduleload back_mdb\n"
        if self.size_limit is None:
            limit = "sizelimit unlimited"
        else:
            n = self.size_limit
            limit = f"sizelimit size.soft={n} size.hard={n} size.prtotal=unlimited"
        config = f"""\
# Generated for one test run; nothing is included from the system configuration.
{schemas}
{modules}
pidfile {d}/run/slapd.pid
argsfile {d}/run/slapd.args

TLSCertificateFile {d}/tls/cert.pem
TLSCertificateKeyFile {d}/tls/key.pem
TLSProtocolMin 3.3

access to dn.base=""
    by * read
access to dn.base="cn=Subschema"
    by * read

database mdb
suffix "{self.base_dn}"
rootdn "{self.admin_dn}"
rootpw {ssha(self.admin_password)}
directory {d}/db
maxsize 268435456
dbnosync
{limit}
index objectClass eq
index uid,mail,cn,employeeType eq
index entryUUID eq

access to attrs=userPassword
    by self write
    by anonymous auth
    by * none
access to dn.subtree="{self.base_dn}"
    by dn.exact="{self.reader_dn}" read
    by self read
    by * none
"""
        self.config_file.write_text(config, encoding="utf-8")
        self.config_file.chmod(0o600)
        if self._owner is not None:
            account = pwd.getpwnam(self._owner[0])
            os.chown(self.config_file, account.pw_uid, account.pw_gid)

    def _create_base_entries(self) -> None:
        top = self.base_dn.split(",")[0].split("=", 1)[1]
        with self.admin() as conn:
            conn.add(
                self.base_dn,
                ["top", "dcObject", "organization"],
                {"dc": top, "o": "Example"},
            )
            conn.add(self.ou_dn("people"), ["top", "organizationalUnit"], {"ou": "people"})
            conn.add(self.ou_dn("services"), ["top", "organizationalUnit"], {"ou": "services"})
            conn.add(
                self.reader_dn,
                ["top", "organizationalRole", "simpleSecurityObject"],
                {
                    "cn": "reader",
                    "description": "read-only service account",
                    "userPassword": ssha(self.reader_password),
                },
            )

    # ----------------------------------------------------------- connections

    def tls(self, *, ca_file: Path | str | None = None) -> ldap3.Tls:
        """TLS settings that verify the server against ``ca_file`` (this server's
        certificate by default)."""
        return ldap3.Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=str(ca_file or self.ca_file),
            version=ssl.PROTOCOL_TLS_CLIENT,
        )

    def server(self, *, ldaps: bool = False, tls: ldap3.Tls | None = None) -> ldap3.Server:
        """An ``ldap3.Server`` for the plain port (StartTLS with ``tls``) or the LDAPS port."""
        if ldaps:
            if self.ldaps_port is None:
                raise SlapdError("the server has no LDAPS listener")
            return ldap3.Server(
                self.host,
                port=self.ldaps_port,
                use_ssl=True,
                tls=tls or self.tls(),
                get_info=ldap3.NONE,
                connect_timeout=5,
            )
        return ldap3.Server(
            self.host, port=self.port, tls=tls, get_info=ldap3.NONE, connect_timeout=5
        )

    def connect(
        self,
        user: str | None = None,
        password: str | None = None,
        *,
        mode: Literal["plain", "starttls", "ldaps"] = "plain",
        raise_exceptions: bool = True,
    ) -> ldap3.Connection:
        """A connection bound as ``user`` (a DN; anonymous without), over plain LDAP,
        StartTLS or LDAPS, TLS verified with ``ca_file``. Unbind it when done, or use it
        in ``with`` (which unbinds on exit). A failed bind raises an ldap3 exception, or
        with ``raise_exceptions=False`` leaves the connection open and unbound (``bound``
        is False, ``result`` tells why)."""
        tls = self.tls() if mode != "plain" else None
        server = self.server(ldaps=mode == "ldaps", tls=tls)
        connection = ldap3.Connection(
            server,
            user=user,
            password=password,
            raise_exceptions=raise_exceptions,
            receive_timeout=30,
        )
        try:
            connection.open()
            if mode == "starttls":
                connection.start_tls()
            connection.bind()
        except BaseException:
            with contextlib.suppress(LDAPException):
                connection.unbind()
            raise
        return connection

    def admin(self) -> ldap3.Connection:
        """A connection bound as the rootdn (raising ldap3 exceptions on errors)."""
        return self.connect(self.admin_dn, self.admin_password)

    def reader(self) -> ldap3.Connection:
        """A connection bound as the read-only service account."""
        return self.connect(self.reader_dn, self.reader_password)

    # -------------------------------------------------------------- entries

    def ou_dn(self, ou: str) -> str:
        return f"ou={escape_dn_value(ou)},{self.base_dn}"

    def user_dn(self, uid: str, ou: str = "people") -> str:
        return f"uid={escape_dn_value(uid)},{self.ou_dn(ou)}"

    def add_ou(self, ou: str, *, exist_ok: bool = True) -> str:
        """Create ``ou=<ou>`` under the base (if missing); return its DN."""
        dn = self.ou_dn(ou)
        with self.admin() as conn:
            self._ensure_ou(conn, ou, exist_ok=exist_ok)
        return dn

    def _ensure_ou(self, conn: ldap3.Connection, ou: str, *, exist_ok: bool = True) -> None:
        dn = self.ou_dn(ou)
        if exist_ok:
            with contextlib.suppress(LDAPNoSuchObjectResult):
                if conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["1.1"]):
                    return
        conn.add(dn, ["top", "organizationalUnit"], {"ou": ou})

    @staticmethod
    def user_attributes(
        uid: str,
        *,
        mail: str | Sequence[str] | None = None,  # one address, or several
        cn: str | None = None,
        display_name: str | None = None,
        sn: str | None = None,
        given_name: str | None = None,
        password: str | None = None,
        disabled: bool = False,
        extra: Mapping[str, str | Sequence[str]] | None = None,
    ) -> dict[str, Any]:
        """The attributes of an ``inetOrgPerson`` as add_user() writes them."""
        attributes: dict[str, Any] = {"uid": uid, "cn": cn or uid, "sn": sn or uid}
        optional = {
            "mail": mail if mail is None or isinstance(mail, str) else list(mail),
            "displayName": display_name,
            "givenName": given_name,
            "userPassword": None if password is None else ssha(password),
            DISABLED_ATTRIBUTE: DISABLED_VALUE if disabled else None,
        }
        attributes.update({name: value for name, value in optional.items() if value is not None})
        for name, value in (extra or {}).items():
            attributes[name] = value if isinstance(value, str) else list(value)
        return attributes

    def add_user(
        self,
        uid: str,
        *,
        mail: str | Sequence[str] | None = None,  # one address, or several
        cn: str | None = None,
        display_name: str | None = None,
        sn: str | None = None,
        given_name: str | None = None,
        password: str | None = None,
        disabled: bool = False,
        ou: str = "people",
        extra: Mapping[str, str | Sequence[str]] | None = None,
    ) -> str:
        """Add an ``inetOrgPerson`` ``uid=<uid>,ou=<ou>,<base>`` and return its DN.

        ``cn`` and ``sn`` default to ``uid``; without ``mail``, ``display_name``,
        ``given_name`` or ``password`` the entry lacks that attribute. ``disabled`` sets
        ``employeeType: disabled``. ``ou`` is created if missing. ``extra`` adds further
        attributes (name -> value or values).
        """
        dn = self.user_dn(uid, ou)
        attributes = self.user_attributes(
            uid,
            mail=mail,
            cn=cn,
            display_name=display_name,
            sn=sn,
            given_name=given_name,
            password=password,
            disabled=disabled,
            extra=extra,
        )
        with self.admin() as conn:
            if ou != "people":
                self._ensure_ou(conn, ou)
            conn.add(dn, USER_OBJECT_CLASSES, attributes)
        return dn

    def delete_user(self, uid: str, *, ou: str = "people") -> None:
        """Delete the user's entry (an error if it does not exist)."""
        with self.admin() as conn:
            conn.delete(self.user_dn(uid, ou))

    def modify_user(self, uid: str, *, ou: str = "people", **attrs: AttributeValue) -> None:
        """Replace attributes of a user: ``modify_user("ann", mail="a@x", displayName="Ä")``.

        A value of None removes the attribute, a sequence sets several values.
        ``display_name``, ``given_name``, ``employee_type`` and a few other snake_case
        names stand for their LDAP names; ``userPassword`` (``user_password``) values are
        stored hashed.
        """
        changes: dict[str, list[tuple[str, list[str]]]] = {}
        for key, value in attrs.items():
            name = _ATTRIBUTE_ALIASES.get(key, key)
            if value is None:
                changes[name] = [(ldap3.MODIFY_REPLACE, [])]
                continue
            values = [value] if isinstance(value, str) else list(value)
            if name.lower() == "userpassword":
                values = [ssha(v) for v in values]
            changes[name] = [(ldap3.MODIFY_REPLACE, values)]
        if not changes:
            return
        with self.admin() as conn:
            conn.modify(self.user_dn(uid, ou), changes)

    def set_disabled(self, uid: str, disabled: bool = True, *, ou: str = "people") -> None:
        """Mark the user disabled (``employeeType: disabled``) or enable them again."""
        action = ldap3.MODIFY_ADD if disabled else ldap3.MODIFY_DELETE
        change = {DISABLED_ATTRIBUTE: [(action, [DISABLED_VALUE])]}
        # Already disabled (or enabled) is fine.
        already = (LDAPAttributeOrValueExistsResult, LDAPNoSuchAttributeResult)
        with self.admin() as conn, contextlib.suppress(*already):
            conn.modify(self.user_dn(uid, ou), change)

    def rename_user(self, uid: str, new_uid: str, *, ou: str = "people") -> str:
        """Change the user's ``uid`` (and so their DN); return the new DN."""
        with self.admin() as conn:
            conn.modify_dn(self.user_dn(uid, ou), f"uid={escape_dn_value(new_uid)}")
        return self.user_dn(new_uid, ou)

    def add_many(
        self,
        n: int,
        prefix: str = "user",
        *,
        ou: str = "people",
        mail_domain: str = MAIL_DOMAIN,
        disabled_every: int = 0,
    ) -> list[str]:
        """Add ``n`` users ``<prefix>00000`` ... ``<prefix><n-1>``; return their uids.

        Each has ``mail`` ``<uid>@<mail_domain>`` and ``displayName`` ``Bulk <uid>``; with
        ``disabled_every=k``, every k-th user (index 0, k, 2k, ...) is disabled. ``ou`` is
        created if missing. The entries go over one connection with ``ldapadd`` (from
        ldap-utils: about 0.3 s per thousand), or with ldap3 without it (several times
        slower).
        """
        uids = [f"{prefix}{index:05d}" for index in range(n)]
        entries = [
            (
                self.user_dn(uid, ou),
                self.user_attributes(
                    uid,
                    mail=f"{uid}@{mail_domain}",
                    display_name=f"Bulk {uid}",
                    disabled=disabled_every > 0 and index % disabled_every == 0,
                ),
            )
            for index, uid in enumerate(uids)
        ]
        if ou != "people":
            self.add_ou(ou)
        ldapadd = shutil.which("ldapadd")
        if ldapadd is not None:
            self._ldapadd(ldapadd, entries)
        else:
            self._add_pipelined(entries)
        return uids

    def _ldapadd(self, ldapadd: str, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        work = Path(tempfile.mkdtemp(prefix="slapd-add-"))
        try:
            ldif = work / "entries.ldif"
            ldif.write_text(
                "\n".join(ldif_entry(dn, USER_OBJECT_CLASSES, attrs) for dn, attrs in entries),
                encoding="utf-8",
            )
            secret = work / "secret"
            secret.write_text(self.admin_password, encoding="utf-8")
            secret.chmod(0o600)
            command = [ldapadd, "-x", "-H", self.url, "-D", self.admin_dn, "-y", str(secret)]
            result = subprocess.run(
                [*command, "-f", str(ldif)],
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "LDAPNOINIT": "1"},
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if result.returncode != 0:
            raise SlapdError(f"ldapadd failed ({result.returncode}): {result.stderr.strip()}")

    def _add_pipelined(self, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        conn = ldap3.Connection(
            self.server(),
            user=self.admin_dn,
            password=self.admin_password,
            client_strategy=ldap3.ASYNC,
            raise_exceptions=False,
        )
        try:
            conn.open()
            conn.bind()
            pending: list[tuple[int, str]] = []
            for number, (dn, attributes) in enumerate(entries, start=1):
                pending.append((conn.add(dn, USER_OBJECT_CLASSES, dict(attributes)), dn))
                if len(pending) >= 200 or number == len(entries):
                    for message_id, sent_dn in pending:
                        _response, result = conn.get_response(message_id)
                        if result["result"] != 0:
                            raise SlapdError(f"adding {sent_dn} failed: {result['description']}")
                    pending.clear()
        finally:
            conn.unbind()

    def add_group(self, cn: str, members: Iterable[str], *, ou: str = "groups") -> str:
        """Add a ``groupOfNames`` ``cn=<cn>,ou=<ou>,<base>`` with ``members`` (uids of
        ``ou=people`` or full DNs); return its DN. A group needs at least one member."""
        member_dns = [m if "=" in m else self.user_dn(m) for m in members]
        if not member_dns:
            raise SlapdError("a groupOfNames needs at least one member")
        dn = f"cn={escape_dn_value(cn)},{self.ou_dn(ou)}"
        with self.admin() as conn:
            self._ensure_ou(conn, ou)
            conn.add(dn, ["top", "groupOfNames"], {"cn": cn, "member": member_dns})
        return dn
