"""The Plan: per profile, mailbox and folder, what `apply` will archive. A versioned value.

``Plan.to_json()`` is the document that ``plan --format json`` prints (see the
README for its fields); ``Plan.from_json()`` reads it back and refuses other
format versions. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

FORMAT_VERSION = 1

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
        if not isinstance(body, dict) or "format_version" not in body:
            raise PlanFormatError("not a plan document (no format_version)")
        if body["format_version"] != FORMAT_VERSION:
            raise PlanFormatError(
                f"plan format_version {body['format_version']} is not {FORMAT_VERSION}"
            )
        try:
            return cls(
                id=str(body["id"]),
                created_at=str(body["created_at"]),
                archive=str(body["archive"]),
                archive_id=body.get("archive_id"),
                config_digest=body.get("config_digest"),
                archive_state=body.get("archive_state"),
                profiles=tuple(_profile_from(p) for p in body["profiles"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanFormatError(f"malformed plan document: {exc!r}") from None


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


def _profile_from(body: dict[str, Any]) -> ProfilePlan:
    return ProfilePlan(
        name=str(body["name"]),
        server=str(body["server"]),
        security=str(body["security"]),
        warnings=tuple(str(w) for w in body["warnings"]),
        mailboxes=tuple(_mailbox_from(m) for m in body["mailboxes"]),
        error=body.get("error"),
        users_added=tuple(str(u) for u in body.get("users_added", ())),
        not_selected=tuple(
            (str(n["user"]), str(n["reason"])) for n in body.get("not_selected", ())
        ),
    )


def _mailbox_from(body: dict[str, Any]) -> MailboxPlan:
    return MailboxPlan(
        profile=str(body["profile"]),
        source=str(body["source"]),
        archive_user=str(body["archive_user"]),
        archive_folder=str(body["archive_folder"]),
        login=str(body["login"]),
        email=body["email"],
        error=body["error"],
        folders=tuple(_folder_from(f) for f in body["folders"]),
        excluded=tuple(ExcludedFolder(str(e["path"]), str(e["reason"])) for e in body["excluded"]),
    )


def _folder_from(body: dict[str, Any]) -> FolderPlan:
    action = body["action"]
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    uids = tuple(int(u) for u in body["uids"])
    if len(uids) != body["messages"]:
        raise ValueError("messages does not match the number of uids")
    return FolderPlan(
        path=str(body["path"]),
        wire_name=str(body["wire_name"]),
        action=action,
        uidvalidity=_opt_int(body["uidvalidity"]),
        uidnext=_opt_int(body["uidnext"]),
        exists=_opt_int(body["exists"]),
        previous_uidvalidity=_opt_int(body["previous_uidvalidity"]),
        uids=uids,
        bytes=int(body["bytes"]),
        already_archived=int(body["already_archived"]),
        note=body["note"],
        filtered_out=int(body.get("filtered_out", 0)),
        condition=body.get("condition"),
        delete=tuple(int(u) for u in body.get("delete", ())),
        no_deletion=body.get("no_deletion"),
    )


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)
