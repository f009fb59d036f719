"""The archive's user list: Users documents, plus what the directories say.

The index keeps the users read from directories (source ``directory``) and the
users that CSV and single profiles created; ``sync`` brings the directory users
up to date (adding, updating, marking the vanished as gone: archived data is
never removed). ``read`` only reads, for ``plan``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from imapsync_decl.config.resolve import Config, ListedUser, directory_users, load_config
from imapsync_decl.errors import ImapsyncError, Problem, Severity
from imapsync_decl.sources.directory import (
    DirectoryError,
    DirectorySettings,
    read_directory,
    resolve_password,
)
from imapsync_decl.store import Index, UserRecord

log = structlog.get_logger(__name__)


@dataclass
class DirectoryResult:
    """What reading all directories of a configuration gave."""

    users: list[ListedUser] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None  # the first directory that failed, named
    records: dict[str, list[Any]] = field(default_factory=dict)  # directory key -> UserRecords


def settings_of(config: Config) -> list[DirectorySettings]:
    found = []
    for item in config.directories:
        directory = item.doc.directory
        assert directory is not None
        password = resolve_password(directory.password, item.origin.base_dir)
        found.append(DirectorySettings(directory, item.origin.base_dir, password))
    return found


def read_all(config: Config) -> DirectoryResult:
    """Read every directory of the configuration (read-only). Stops at the first failure."""
    result = DirectoryResult()
    try:
        settings = settings_of(config)
    except ImapsyncError as exc:
        result.error = str(exc)
        return result
    for item in settings:
        try:
            read = read_directory(item)
        except DirectoryError as exc:
            log.warning("directory_failed", directory=item.key, error=str(exc))
            result.error = str(exc)
            return result
        log.info(
            "directory_read",
            directory=item.key,
            users=len(read.users),
            skipped_disabled=read.skipped_disabled,
        )
        result.records[item.key] = list(read.users)
        result.users += directory_users(read.users)
        result.warnings += [f"directory {item.key}: {w}" for w in read.warnings]
    return result


def index_users(archive: Path, skipped: list[str] | None = None) -> list[ListedUser]:
    """The directory users the index keeps (none when there is no archive yet); see
    :func:`directory_users` for ``skipped``."""
    path = archive / "index.sqlite"
    if not path.exists():
        return []
    with Index.open(path, read_only=True) as index:
        return directory_users(index.list_users(source="directory"), skipped)


def load_with_index_users(config_dir: Path, display: str) -> Config:
    """The configuration with the user list completed by the index's directory users.

    Index records that are no valid users are warnings of the configuration, at the index.
    """
    config = load_config(config_dir, display)
    if not config.ok or not config.directories:
        return config
    skipped: list[str] = []
    config = load_config(config_dir, display, index_users(config.archive_path, skipped))
    index = str(config.archive_path / "index.sqlite")
    warnings = [Problem(index, None, None, None, text, Severity.WARNING) for text in skipped]
    return dataclasses.replace(config, problems=(*config.problems, *warnings))


def sync_directory_users(
    index: Index, directory: str, users: Sequence[UserRecord]
) -> dict[str, list[str]]:
    """Make the users of ``directory`` in the index what the directory says, in one
    transaction: add the new ones, update the changed ones, mark the ones that are no
    longer there as gone (never removing anything archived). A user of a Users document
    or a CSV profile is theirs to describe and is left as it is. Returns the user names
    per change: ``added``, ``updated``, ``gone``, ``returned``."""
    changes: dict[str, list[str]] = {"added": [], "updated": [], "gone": [], "returned": []}
    seen: set[str] = set()
    with index.atomic():
        for user in users:
            seen.add(user.name)
            listed = dataclasses.replace(
                user, source="directory", status="active", directory=directory
            )
            known = index.find_user(user.name)
            if known is None:
                index.add_user(listed)
                changes["added"].append(user.name)
                continue
            if known.source != "directory":
                continue
            if known.status == "gone":
                changes["returned"].append(user.name)
            elif (known.email, known.display_name, known.aliases) != (
                user.email,
                user.display_name,
                tuple(user.aliases),
            ):
                changes["updated"].append(user.name)
            else:
                continue
            index.update_user(listed)
        for known in index.list_users(source="directory"):
            listed_here = known.directory == directory and known.status == "active"
            if listed_here and known.name not in seen:
                index.set_user_status(known.name, "gone")
                changes["gone"].append(known.name)
    return changes


def sync(config: Config, index: Index) -> tuple[dict[str, dict[str, list[str]]], DirectoryResult]:
    """Read every directory and bring its users in the index up to date."""
    read = read_all(config)
    changes: dict[str, dict[str, list[str]]] = {}
    if read.error is None:
        for key, records in read.records.items():
            changes[key] = sync_directory_users(index, key, records)
            log.info(
                "directory_synced", directory=key, **{k: len(v) for k, v in changes[key].items()}
            )
    return changes, read


def would_add(config: Config, fresh: list[ListedUser]) -> list[str]:
    """Names of the directory users a sync would add (not in the list yet)."""
    known = {u.user.name for u in config.listed}
    return sorted(u.user.name for u in fresh if u.user.name not in known)


def list_rows(config: Config, index: Index | None) -> list[dict[str, Any]]:
    """The archive's user list as ``users list`` shows it, sorted by name: the users of
    the configuration (documents and directories), then those that CSV and single
    profiles created in the index."""
    rows = [u.to_json() for u in config.listed]
    known = {row["name"] for row in rows}
    if index is not None:
        for record in index.list_users():
            if record.source in ("csv", "single") and record.name not in known:
                rows.append(
                    {
                        "name": record.name,
                        "email": record.email,
                        "aliases": list(record.aliases),
                        "display_name": record.display_name,
                        "source": record.source,
                        "status": record.status,
                    }
                )
    rows.sort(key=lambda row: str(row["name"]).casefold())
    return rows
