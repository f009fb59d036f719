"""Web passwords of archive users: set, reset and disable them, for ``users passwd``.

A name must be a user of the archive's user list (``users list``: Users documents,
directory users, users that CSV and single profiles created), else the command
stops with exit 10 naming it. Each change is written to the archive's access log
(``password_changed``) and logged without the password.
"""

from __future__ import annotations

from typing import Any

import structlog

from imapsync_decl.config.resolve import Config
from imapsync_decl.errors import UsageError
from imapsync_decl.plan.planner import open_index_if_exists
from imapsync_decl.sources import users as userlist
from imapsync_decl.store.access_log import append_access
from imapsync_decl.store.accounts import Accounts, check_password

log = structlog.get_logger(__name__)


def archive_user(config: Config, name: str) -> dict[str, Any]:
    """The ``users list`` row of ``name``; UsageError (exit 10) naming it when the
    archive's user list has no such user."""
    index = open_index_if_exists(config.archive_path)
    try:
        rows = userlist.list_rows(config, index)
    finally:
        if index is not None:
            index.close()
    for row in rows:
        if row["name"] == name:
            return row
    raise UsageError(
        f"no archive user named {name!r} (see `imapsync-decl users list`; a directory user"
        " appears after `imapsync-decl users sync`)"
    )


def set_web_password(config: Config, name: str, password: str) -> None:
    """Set or reset ``name``'s web password (re-enabling a disabled account and ending
    its sessions). An empty password, or one over 1024 characters, is exit 10."""
    archive_user(config, name)
    check_password(password)
    with Accounts.open(config.archive_path) as accounts:
        accounts.set_password(name, password)
    append_access(
        config.archive_path,
        user=None,  # an administrator at the command line, not a web user
        action="password_changed",
        target=f"user {name}",
        detail={"by": "users passwd", "change": "set"},
    )
    log.info("web_password_set", user=name)


def disable_web_password(config: Config, name: str) -> None:
    """No web sign-in for ``name`` any more (password and directory sign-in alike); its
    sessions end. ``users passwd NAME`` enables it again."""
    archive_user(config, name)
    with Accounts.open(config.archive_path) as accounts:
        accounts.disable(name)
    append_access(
        config.archive_path,
        user=None,  # an administrator at the command line, not a web user
        action="password_changed",
        target=f"user {name}",
        detail={"by": "users passwd", "change": "disabled"},
    )
    log.info("web_access_disabled", user=name)


def web_password_states(config: Config, names: list[str]) -> dict[str, str]:
    """``set``, ``disabled`` or ``none`` for each name (read-only)."""
    with Accounts.open(config.archive_path, read_only=True) as accounts:
        states = accounts.password_states()
    return {name: states.get(name, "none") for name in names}
