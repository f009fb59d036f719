"""Sign-in with a directory password: a bind as the user's own entry.

When the Web document allows it (``directory_sign_in: true``), for an archive user
whose record came from a directory (source ``directory`` in the index, status
``active``), :func:`directory_sign_in` binds with the Users
document's service account (the same connection settings as ``users sync``: URL,
LDAPS or StartTLS, CA file, timeouts), searches that directory's base DN for the
one entry the directory's filter selects whose user-name attribute is the name (the
name escaped as RFC 4515 says, so ``*``, ``(``, ``)``, ``\\`` and NUL cannot widen the
search), then binds as that entry's DN with the given password.

An empty password is refused before anything is sent: LDAP takes a simple bind with
a DN and no password as an unauthenticated bind that "succeeds" (RFC 4513, 5.1.2).
Any failure (wrong password, unknown or ambiguous entry, a directory that cannot be
reached or whose TLS fails, an Active Directory account marked disabled, a user
whose web access was disabled with ``users passwd --disable``) is False,
never an exception; the reason is logged without the password.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import structlog

from imapsync_decl.errors import ImapsyncError
from imapsync_decl.sources.directory import (
    DirectorySettings,
    bind,
    connect,
    first_value,
    is_disabled,
    result_text,
)
from imapsync_decl.store import Index
from imapsync_decl.store.accounts import Accounts

if TYPE_CHECKING:
    from imapsync_decl.config.resolve import Config

log = structlog.get_logger(__name__)

MAX_PASSWORD_LENGTH = 1024  # as for web passwords
MAX_NAME_LENGTH = 256


def escape_filter_value(value: str) -> str:
    """``value`` as an assertion value of an LDAP filter (RFC 4515): ``*``, ``(``, ``)``,
    ``\\`` and NUL (and any other control character) written as ``\\XX`` of their UTF-8
    bytes."""
    out = []
    for char in value:
        if char in "*()\\" or ord(char) < 0x20 or ord(char) == 0x7F:
            out.append("".join(f"\\{b:02x}" for b in char.encode("utf-8")))
        else:
            out.append(char)
    return "".join(out)


def directory_sign_in(config: Config, name: str, password: str) -> bool:
    """Whether ``password`` is the directory password of the archive user ``name``.

    False when the Web document does not allow directory sign-in, for a user whose
    record did not come from a directory (or who is gone from it), an empty or overlong
    password, and every failure of the directory."""
    if not config.web.directory_sign_in:
        return False
    if not password or len(password) > MAX_PASSWORD_LENGTH:
        return False
    if not name or len(name) > MAX_NAME_LENGTH:
        return False
    settings = _directory_of(config, name)
    if settings is None:
        return False
    try:
        dn = _find_entry(settings, name)
        if dn is None:
            return False
        return _bind_as(settings, dn, password)
    except ImapsyncError as exc:
        log.warning("directory_sign_in_failed", user=name, error=str(exc).replace(password, "***"))
        return False
    except Exception as exc:  # ldap3 raises many kinds; none may end a sign-in attempt
        log.warning(
            "directory_sign_in_failed", user=name, error=type(exc).__name__, directory=settings.key
        )
        return False


def _directory_of(config: Config, name: str) -> DirectorySettings | None:
    """The settings of the directory that ``name``'s index record came from."""
    from imapsync_decl.sources.users import settings_of

    path = config.archive_path / "index.sqlite"
    if not path.exists():
        return None
    try:
        with Index.open(path, read_only=True) as index:
            record = index.find_user(name)
    except ImapsyncError:
        return None
    if record is None or record.source != "directory" or record.status != "active":
        return None
    try:
        with Accounts.open(config.archive_path, read_only=True) as accounts:
            if accounts.is_disabled(name):  # users passwd --disable ends every sign-in
                return None
    except ImapsyncError as exc:
        log.warning("directory_sign_in_failed", user=name, error=str(exc))
        return None
    try:
        candidates = settings_of(config)
    except ImapsyncError as exc:  # the service password cannot be read
        log.warning("directory_sign_in_failed", user=name, error=str(exc))
        return None
    for settings in candidates:
        if settings.key == record.directory:
            return settings
    return None


def _find_entry(settings: DirectorySettings, name: str) -> str | None:
    """The DN of the one entry of ``name`` (service bind, then a search), or None."""
    import ldap3

    directory = settings.directory
    attribute = str(directory.attribute("username"))
    wanted = [attribute]
    if directory.type == "active_directory":
        wanted.append("userAccountControl")
    search_filter = f"(&{directory.effective_filter}({attribute}={escape_filter_value(name)}))"
    service_password = settings.password.reveal() if settings.password is not None else None
    connection = connect(settings, directory.bind_dn, service_password)
    try:
        if not bind(connection, settings, service_password):
            log.warning(
                "directory_sign_in_failed",
                user=name,
                directory=settings.key,
                error=f"service bind refused: {result_text(connection)}",
            )
            return None
        connection.search(
            search_base=directory.base_dn,
            search_filter=search_filter,
            search_scope=ldap3.SUBTREE,
            attributes=wanted,
            size_limit=2,
        )
        entries = [e for e in connection.response or [] if e.get("type") == "searchResEntry"]
    finally:
        with contextlib.suppress(Exception):
            connection.unbind()
    if len(entries) != 1:
        if entries:
            log.warning(
                "directory_sign_in_failed",
                user=name,
                directory=settings.key,
                error=f"{len(entries)} entries match",
            )
        return None
    entry: dict[str, Any] = entries[0]
    attributes = entry.get("attributes", {})
    if first_value(attributes.get(attribute)) != name:
        return None  # the directory matched another spelling of the name
    if directory.type == "active_directory" and is_disabled(attributes.get("userAccountControl")):
        return None
    dn = entry.get("dn")
    return dn if isinstance(dn, str) and dn else None


def _bind_as(settings: DirectorySettings, dn: str, password: str) -> bool:
    connection = connect(settings, dn, password)
    try:
        accepted = bind(connection, settings, password)
    finally:
        with contextlib.suppress(Exception):
            connection.unbind()
    if not accepted:
        log.info("directory_sign_in_refused", dn=dn, directory=settings.key)
    return accepted
