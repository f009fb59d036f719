"""Read the users of an LDAP / Active Directory service (read-only, with ldap3).

One bind, one paged subtree search; every entry becomes a :class:`UserRecord`
(source ``directory``), validated with the same model as a user of a Users
document. Entries without a user name, or whose values that model refuses (an
e-mail address that is none, a line break in a name), are skipped with a
warning naming their DN; Active Directory accounts marked disabled are skipped. Problems
reaching or binding to the directory raise :class:`DirectoryError`, whose
message names the directory and never a password.
"""

from __future__ import annotations

import contextlib
import math
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pydantic

from imapsync_decl.config.documents.secret_refs import CredentialSecret, EnvSecret, FileSecret
from imapsync_decl.config.documents.users import Directory, User
from imapsync_decl.config.loader import validation_messages
from imapsync_decl.config.model import read_secret
from imapsync_decl.errors import ExitCode, ImapsyncError
from imapsync_decl.secrets import Secret
from imapsync_decl.store.index import UserRecord

AD_ACCOUNT_DISABLED = 0x2  # userAccountControl: ACCOUNTDISABLE


class DirectoryError(ImapsyncError):
    """The directory cannot be reached, refuses the bind, or refuses the search."""

    exit_code = ExitCode.PARTIAL


@dataclass(frozen=True)
class DirectoryRead:
    users: tuple[UserRecord, ...]
    warnings: tuple[str, ...] = ()
    skipped_disabled: int = 0


@dataclass(frozen=True)
class DirectorySettings:
    """A Directory document section with its relative paths and password resolved."""

    directory: Directory
    base_dir: Path
    password: Secret | None = field(repr=False, default=None)

    @property
    def key(self) -> str:
        """Names the directory in the index and in messages: URL and base DN."""
        return f"{self.directory.url.rstrip('/')}/{self.directory.base_dn}"


def resolve_password(
    ref: str | EnvSecret | FileSecret | CredentialSecret | None, base_dir: Path
) -> Secret | None:
    """The bind password of a directory, read now (None: an anonymous bind); a relative
    ``{file: ...}`` resolves against ``base_dir``, the directory of the Users document."""
    if ref is None:
        return None
    return read_secret(Secret(ref) if isinstance(ref, str) else ref, base_dir)


def read_directory(settings: DirectorySettings) -> DirectoryRead:
    """All users the directory's filter selects, sorted by name."""
    from ldap3.core import exceptions as ldap_errors

    directory = settings.directory
    where = f"directory {settings.key}"
    password = settings.password.reveal() if settings.password is not None else None
    connection = connect(settings, directory.bind_dn, password)
    try:
        if not bind(connection, settings, password):
            who = directory.bind_dn or "anonymous"
            raise DirectoryError(f"{where}: bind as {who} refused: {result_text(connection)}")
        try:
            return _search(connection, settings)
        except ldap_errors.LDAPException as exc:
            raise DirectoryError(
                f"{where}: search failed: {clean_message(exc, password)}"
            ) from None
    finally:
        with contextlib.suppress(Exception):  # closing a connection that may be broken
            connection.unbind()


def connect(settings: DirectorySettings, user: str | None, password: str | None) -> Any:
    """An ldap3 connection (not yet open) to the directory, as ``user`` with ``password``
    (None, None: anonymous): LDAPS or StartTLS as configured, the certificate verified
    (the configured CA file, else the system store), the configured timeouts."""
    import ldap3

    directory = settings.directory
    parts = urlsplit(directory.url)
    use_ssl = parts.scheme == "ldaps"
    tls = None
    if use_ssl or directory.starttls:
        ca_file = None
        if directory.ca_file is not None:
            ca = Path(directory.ca_file).expanduser()
            ca_file = str(ca if ca.is_absolute() else settings.base_dir / ca)
        tls = ldap3.Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=ca_file,
            version=None,
        )
    server = ldap3.Server(
        parts.hostname or "",
        port=parts.port or (636 if use_ssl else 389),
        use_ssl=use_ssl,
        tls=tls,
        get_info=ldap3.NONE,
        connect_timeout=directory.timeout,
    )
    return ldap3.Connection(
        server,
        user=user,
        password=password,
        auto_bind=ldap3.AUTO_BIND_NONE,
        read_only=True,
        # ldap3 packs the receive timeout as whole seconds (struct 'LL'): a float fails there.
        receive_timeout=math.ceil(directory.timeout),
        raise_exceptions=False,
    )


def bind(connection: Any, settings: DirectorySettings, password: str | None) -> bool:
    """Open ``connection`` (StartTLS first where configured) and bind: whether the
    directory accepted the credentials. DirectoryError when it cannot be reached or TLS
    fails; messages never contain ``password``."""
    from ldap3.core import exceptions as ldap_errors

    where = f"directory {settings.key}"
    try:
        connection.open()
        if settings.directory.starttls and not connection.start_tls():
            raise DirectoryError(f"{where}: StartTLS refused: {result_text(connection)}")
    except ldap_errors.LDAPStartTLSError as exc:
        raise DirectoryError(f"{where}: StartTLS failed: {clean_message(exc, password)}") from None
    except ldap_errors.LDAPSocketOpenError as exc:
        raise DirectoryError(f"{where}: cannot connect: {clean_message(exc, password)}") from None
    except ldap_errors.LDAPException as exc:
        raise DirectoryError(f"{where}: {clean_message(exc, password)}") from None
    try:
        return bool(connection.bind())
    except ldap_errors.LDAPException as exc:
        raise DirectoryError(f"{where}: bind failed: {clean_message(exc, password)}") from None


def _search(connection: Any, settings: DirectorySettings) -> DirectoryRead:
    import ldap3

    directory = settings.directory
    names = {key: directory.attribute(key) for key in ("username", "email", "display_name")}
    aliases_attribute = directory.attribute("aliases")
    wanted = [a for a in names.values() if a]
    if aliases_attribute:
        wanted.append(aliases_attribute)
    if directory.type == "active_directory":
        wanted.append("userAccountControl")
    entries: Iterator[dict[str, Any]] = connection.extend.standard.paged_search(
        search_base=directory.base_dn,
        search_filter=directory.effective_filter,
        search_scope=ldap3.SUBTREE,
        attributes=wanted,
        paged_size=directory.page_size,
        generator=True,
    )
    users: dict[str, UserRecord] = {}
    warnings: list[str] = []
    disabled = 0
    for entry in entries:
        if entry.get("type") != "searchResEntry":
            continue
        attributes = entry.get("attributes", {})
        dn = entry.get("dn", "?")
        if directory.type == "active_directory" and is_disabled(
            attributes.get("userAccountControl")
        ):
            disabled += 1
            continue
        name = first_value(attributes.get(str(names["username"])))
        if not name:
            warnings.append(f"{dn}: no {names['username']}; skipped")
            continue
        if name in users:
            warnings.append(f"{dn}: user name {name!r} appears twice; the first entry counts")
            continue
        email = first_value(attributes.get(str(names["email"])))
        display = first_value(attributes.get(str(names["display_name"])))
        aliases = _aliases(attributes.get(aliases_attribute), email) if aliases_attribute else ()
        try:
            user = User.model_validate(
                {"name": name, "email": email, "display_name": display, "aliases": list(aliases)}
            )
        except pydantic.ValidationError as exc:
            warnings.append(f"{dn}: skipped: {'; '.join(validation_messages(User, exc))}")
            continue
        users[name] = UserRecord(
            name=user.name,
            email=user.email,
            display_name=user.display_name,
            aliases=tuple(user.aliases),
            source="directory",
            status="active",
            directory=settings.key,
        )
    if connection.result and connection.result.get("result") not in (0, None):
        raise DirectoryError(f"directory {settings.key}: search failed: {result_text(connection)}")
    return DirectoryRead(tuple(users[n] for n in sorted(users)), tuple(warnings), disabled)


def first_value(value: Any) -> str | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).strip()
    return text or None


def _aliases(value: Any, email: str | None) -> tuple[str, ...]:
    values = value if isinstance(value, list | tuple) else [value] if value else []
    found: list[str] = []
    for item in values:
        text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
        prefix, colon, rest = text.partition(":")
        if colon:
            if prefix.lower() != "smtp":
                continue  # x500:, sip: and other address types are no e-mail addresses
            text = rest
        text = text.strip()
        known = {a.casefold() for a in found} | {(email or "").casefold()}
        if text and "@" in text and text.casefold() not in known:
            found.append(text)
    return tuple(found)


def is_disabled(value: Any) -> bool:
    raw = first_value(value)
    try:
        return raw is not None and bool(int(raw) & AD_ACCOUNT_DISABLED)
    except ValueError:
        return False


def result_text(connection: Any) -> str:
    result = connection.result or {}
    description = result.get("description") or "no answer"
    message = result.get("message")
    return f"{description} ({message})" if message else str(description)


def clean_message(exc: Exception, password: str | None) -> str:
    text = str(exc) or type(exc).__name__
    if password:
        text = text.replace(password, "[redacted]")
    return text
