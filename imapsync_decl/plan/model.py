"""The Plan: per profile, mailbox and folder, what `apply` will archive. A versioned value.

``Plan.to_json()`` is the document that ``plan --format json`` prints (see the
README for its fields); ``Plan.from_json()`` reads it back and refuses other
format versions and any field of the wrong type or range, naming it. No I/O here.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

FORMAT_VERSION = 1
PLAN_ID = re.compile(r"[A-Za-z0-9-]{1,64}")  # plans get a UUID

Action = Literal["archive", "rescan", "skip", "error"]
ACTIONS: tuple[Action, ...] = ("archive", "rescan", "skip", "error")


class PlanFormatError(ValueError):
    """A plan document this version cannot read."""


@dataclass(frozen=True)
class FolderPlan:
    """One folder: what the server has and what is missing from the archive."""

    path: str  # decoded path, '/' between levels
    wire_name: str  # the server's name, for EXAMINE
    action: Action
    uidvalidity: int | None = None
    uidnext: int | None = None
    exists: int | None = None  # messages in the folder when planned
    previous_uidvalidity: int | None = None  # with rescan: the archived UIDVALIDITY
    uids: tuple[int, ...] = ()  # UIDs to archive
    bytes: int = 0  # their total size
    already_archived: int = 0
    note: str | None = None  # why skip, or the error
    filtered_out: int = 0  # messages the profile's filters leave out (for now)
    condition: str | None = None  # recorded with the checkpoint (see filters.condition)
    delete: tuple[int, ...] = ()  # UIDs to delete from the server once verified
    no_deletion: str | None = None  # why deletion is off for this folder (no UIDPLUS)

    @property
    def count(self) -> int:
        return len(self.uids)


@dataclass(frozen=True)
class ExcludedFolder:
    path: str
    reason: str


@dataclass(frozen=True)
class MailboxPlan:
    profile: str
    source: str
    archive_user: str
    archive_folder: str
    login: str
    email: str | None
    folders: tuple[FolderPlan, ...] = ()
    excluded: tuple[ExcludedFolder, ...] = ()
    error: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """Identifies the mailbox within a configuration."""
        return (self.profile, self.login)

    @property
    def pending(self) -> bool:
        return any((f.action in ("archive", "rescan") and f.uids) or f.delete for f in self.folders)


@dataclass(frozen=True)
class ProfilePlan:
    name: str
    server: str  # host:port
    security: str
    warnings: tuple[str, ...] = ()
    mailboxes: tuple[MailboxPlan, ...] = ()
    error: str | None = None  # e.g. the directory it needs cannot be read: nothing planned
    users_added: tuple[str, ...] = ()  # users a directory sync adds to the user list
    not_selected: tuple[tuple[str, str], ...] = ()  # (user, reason) of the user list


@dataclass(frozen=True)
class Totals:
    mailboxes: int = 0
    folders_to_archive: int = 0
    messages: int = 0
    bytes: int = 0
    already_archived: int = 0
    errors: int = 0
    warnings: int = 0
    deletions: int = 0


@dataclass(frozen=True)
class Plan:
    id: str
    created_at: str  # ISO 8601
    archive: str  # the archive directory
    archive_id: str | None  # None while the archive does not exist yet
    profiles: tuple[ProfilePlan, ...] = ()
    format_version: int = FORMAT_VERSION
    config_digest: str | None = None
    archive_state: str | None = None  # the archive's state token when planned

    def mailboxes(self) -> Iterator[MailboxPlan]:
        for profile in self.profiles:
            yield from profile.mailboxes

    def folders(self) -> Iterator[tuple[MailboxPlan, FolderPlan]]:
        for mailbox in self.mailboxes():
            for folder in mailbox.folders:
                yield mailbox, folder

    @property
    def totals(self) -> Totals:
        mailboxes = list(self.mailboxes())
        folders = [f for _, f in self.folders()]
        pending = [f for f in folders if f.action in ("archive", "rescan") and f.uids]
        return Totals(
            mailboxes=len(mailboxes),
            folders_to_archive=len(pending),
            messages=sum(f.count for f in pending),
            bytes=sum(f.bytes for f in pending),
            already_archived=sum(f.already_archived for f in folders),
            errors=sum(1 for m in mailboxes if m.error)
            + sum(1 for f in folders if f.action == "error")
            + sum(1 for p in self.profiles if p.error),
            warnings=sum(len(p.warnings) for p in self.profiles),
            deletions=sum(len(f.delete) for f in folders),
        )

    @property
    def has_changes(self) -> bool:
        return any(m.pending for m in self.mailboxes())

    @property
    def has_errors(self) -> bool:
        return self.totals.errors > 0

    # --- JSON ------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        totals = self.totals
        return {
            "format_version": self.format_version,
            "id": self.id,
            "created_at": self.created_at,
            "archive": self.archive,
            "archive_id": self.archive_id,
            "config_digest": self.config_digest,
            "archive_state": self.archive_state,
            "profiles": [_profile_json(p) for p in self.profiles],
            "totals": {
                "mailboxes": totals.mailboxes,
                "folders_to_archive": totals.folders_to_archive,
                "messages": totals.messages,
                "bytes": totals.bytes,
                "already_archived": totals.already_archived,
                "errors": totals.errors,
                "warnings": totals.warnings,
                "deletions": totals.deletions,
            },
        }

    @classmethod
    def from_json(cls, body: Any) -> Plan:
        """Read a plan document back; strict: every field of the right type and range.

        Raises :class:`PlanFormatError` naming the first field that is wrong (as a path,
        ``profiles[0].mailboxes[1].folders[2].uids[3]``). What the values mean is not
        checked here: a saved plan is held to the configuration and the servers before
        it is applied (``saved_plan``).
        """
        if not isinstance(body, dict) or "format_version" not in body:
            raise PlanFormatError("not a plan document (no format_version)")
        if body["format_version"] != FORMAT_VERSION:
            raise PlanFormatError(
                f"plan format_version {shown_value(body['format_version'])} is not {FORMAT_VERSION}"
            )
        doc = _Fields(body, "")
        plan_id = doc.text("id")
        if not PLAN_ID.fullmatch(plan_id):
            raise PlanFormatError(f"id: {shown_value(plan_id)} is not a plan id")
        created_at = doc.text("created_at")
        try:
            dt.datetime.fromisoformat(created_at)
        except ValueError:
            raise PlanFormatError(f"created_at: {shown_value(created_at)} is not a time") from None
        return cls(
            id=plan_id,
            created_at=created_at,
            archive=doc.text("archive"),
            archive_id=doc.optional_text("archive_id"),
            config_digest=doc.optional_text("config_digest"),
            archive_state=doc.optional_text("archive_state"),
            profiles=tuple(_profile_from(p) for p in doc.objects("profiles")),
        )


def _profile_json(profile: ProfilePlan) -> dict[str, Any]:
    return {
        "name": profile.name,
        "server": profile.server,
        "security": profile.security,
        "warnings": list(profile.warnings),
        "error": profile.error,
        "users_added": list(profile.users_added),
        "not_selected": [{"user": u, "reason": r} for u, r in profile.not_selected],
        "mailboxes": [_mailbox_json(m) for m in profile.mailboxes],
    }


def _mailbox_json(mailbox: MailboxPlan) -> dict[str, Any]:
    return {
        "profile": mailbox.profile,
        "source": mailbox.source,
        "archive_user": mailbox.archive_user,
        "archive_folder": mailbox.archive_folder,
        "login": mailbox.login,
        "email": mailbox.email,
        "error": mailbox.error,
        "folders": [_folder_json(f) for f in mailbox.folders],
        "excluded": [{"path": e.path, "reason": e.reason} for e in mailbox.excluded],
    }


def _folder_json(folder: FolderPlan) -> dict[str, Any]:
    return {
        "path": folder.path,
        "wire_name": folder.wire_name,
        "action": folder.action,
        "uidvalidity": folder.uidvalidity,
        "uidnext": folder.uidnext,
        "exists": folder.exists,
        "previous_uidvalidity": folder.previous_uidvalidity,
        "messages": folder.count,
        "bytes": folder.bytes,
        "already_archived": folder.already_archived,
        "note": folder.note,
        "filtered_out": folder.filtered_out,
        "condition": folder.condition,
        "delete": list(folder.delete),
        "no_deletion": folder.no_deletion,
        "uids": list(folder.uids),
    }


MAX_UID = 2**32 - 1  # UIDs, UIDVALIDITY and UIDNEXT are 32-bit (RFC 3501 nz-number)
MAX_COUNT = 2**63 - 1


class _Fields:
    """One JSON object of a plan document, read field by field with its place for errors."""

    def __init__(self, body: Any, where: str) -> None:
        if not isinstance(body, dict):
            raise PlanFormatError(f"{where or 'the plan'}: not an object")
        self.body: dict[str, Any] = body
        self.where = where

    def _place(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _get(self, key: str, default: Any = ...) -> Any:
        if key in self.body:
            return self.body[key]
        if default is ...:
            raise PlanFormatError(f"{self._place(key)}: missing")
        return default

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise PlanFormatError(f"{self._place(key)}: {shown_value(value)} is not a string")
        return value

    def optional_text(self, key: str) -> str | None:
        value = self._get(key, None)
        return None if value is None else self.text(key)

    def texts(self, key: str) -> tuple[str, ...]:
        values = self._list(key)
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise PlanFormatError(
                    f"{self._place(key)}[{i}]: {shown_value(value)} is not a string"
                )
        return tuple(values)

    def number(self, key: str, low: int, high: int, default: Any = ...) -> int:
        return _number(self._get(key, default), self._place(key), low, high)

    def optional_number(self, key: str, low: int, high: int) -> int | None:
        value = self._get(key, None)
        return None if value is None else _number(value, self._place(key), low, high)

    def uids(self, key: str) -> tuple[int, ...]:
        """A list of distinct UIDs (the field may be absent: no UIDs)."""
        values = self._list(key, [])
        seen: set[int] = set()
        for i, value in enumerate(values):
            uid = _number(value, f"{self._place(key)}[{i}]", 1, MAX_UID)
            if uid in seen:
                raise PlanFormatError(f"{self._place(key)}[{i}]: UID {uid} is listed twice")
            seen.add(uid)
        return tuple(values)

    def objects(self, key: str, default: Any = ...) -> list[_Fields]:
        return [
            _Fields(value, f"{self._place(key)}[{i}]")
            for i, value in enumerate(self._list(key, default))
        ]

    def _list(self, key: str, default: Any = ...) -> list[Any]:
        value = self._get(key, default)
        if not isinstance(value, list):
            raise PlanFormatError(f"{self._place(key)}: {shown_value(value)} is not a list")
        return value


def _number(value: Any, place: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlanFormatError(f"{place}: {shown_value(value)} is not an integer")
    if not low <= value <= high:
        raise PlanFormatError(f"{place}: {shown_value(value)} is not in {low}..{high}")
    return value


def shown_value(value: Any) -> str:
    """A value of a plan file as a message shows it: quoted, control characters escaped,
    long values cut."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _profile_from(body: _Fields) -> ProfilePlan:
    return ProfilePlan(
        name=body.text("name"),
        server=body.text("server"),
        security=body.text("security"),
        warnings=body.texts("warnings"),
        mailboxes=tuple(_mailbox_from(m) for m in body.objects("mailboxes")),
        error=body.optional_text("error"),
        users_added=tuple(body.texts("users_added")) if "users_added" in body.body else (),
        not_selected=tuple(
            (n.text("user"), n.text("reason")) for n in body.objects("not_selected", [])
        ),
    )


def _mailbox_from(body: _Fields) -> MailboxPlan:
    return MailboxPlan(
        profile=body.text("profile"),
        source=body.text("source"),
        archive_user=body.text("archive_user"),
        archive_folder=body.text("archive_folder"),
        login=body.text("login"),
        email=body.optional_text("email"),
        error=body.optional_text("error"),
        folders=tuple(_folder_from(f) for f in body.objects("folders")),
        excluded=tuple(
            ExcludedFolder(e.text("path"), e.text("reason")) for e in body.objects("excluded")
        ),
    )


def _folder_from(body: _Fields) -> FolderPlan:
    action = body.text("action")
    if action not in ACTIONS:
        raise PlanFormatError(f"{body.where}.action: {shown_value(action)} is not an action")
    uids = body.uids("uids")
    if body.number("messages", 0, MAX_COUNT) != len(uids):
        raise PlanFormatError(f"{body.where}.messages: does not match the number of uids")
    if uids and action not in ("archive", "rescan"):
        raise PlanFormatError(f"{body.where}.uids: a folder to {action} has no UIDs to archive")
    delete = body.uids("delete")
    if delete and action == "error":
        raise PlanFormatError(f"{body.where}.delete: a folder in error has no UIDs to delete")
    uidvalidity = body.optional_number("uidvalidity", 1, MAX_UID)
    if uidvalidity is None and action != "error":
        raise PlanFormatError(f"{body.where}.uidvalidity: missing")
    return FolderPlan(
        path=body.text("path"),
        wire_name=body.text("wire_name"),
        action=action,
        uidvalidity=uidvalidity,
        uidnext=body.optional_number("uidnext", 1, MAX_UID),
        exists=body.optional_number("exists", 0, MAX_UID),
        previous_uidvalidity=body.optional_number("previous_uidvalidity", 1, MAX_UID),
        uids=uids,
        bytes=body.number("bytes", 0, MAX_COUNT),
        already_archived=body.number("already_archived", 0, MAX_COUNT),
        note=body.optional_text("note"),
        filtered_out=body.number("filtered_out", 0, MAX_COUNT, 0),
        condition=body.optional_text("condition"),
        delete=delete,
        no_deletion=body.optional_text("no_deletion"),
    )
