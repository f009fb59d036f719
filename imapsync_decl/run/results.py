"""What a run did, as plain values: per folder, per mailbox, and for the whole run.

The executor fills them in; the command line renders them, ``apply --format json``
prints :meth:`ApplyResult.to_json`, which is also the protocol the index keeps.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any

from imapsync_decl.errors import ExitCode
from imapsync_decl.store import RepairOutcome


@dataclass
class FolderResult:
    path: str
    action: str
    archived: int = 0  # new placements of messages not in the archive before
    already_present: int = 0  # placements of content already in the archive, or re-pointed
    vanished: int = 0  # planned but expunged from the server before it could be fetched
    skipped: bool = False
    deleted: int = 0  # removed from the server after verification
    deleted_bytes: int = 0  # their raw size
    kept: int = 0  # planned for deletion but kept (not verifiable, flagged meanwhile, ...)
    differing: int = 0  # kept because the server's copy is not the archived message
    profile: str = ""
    completed: bool = False  # checkpointed in this run: a reconnect does not redo it
    stale: bool = False  # UIDVALIDITY differs from the plan's
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "action": self.action,
            "archived": self.archived,
            "already_present": self.already_present,
            "vanished": self.vanished,
            "deleted": self.deleted,
            "kept": self.kept,
            "differing": self.differing,
            "error": self.error,
        }


@dataclass
class MailboxResult:
    profile: str
    login: str
    archive_user: str
    archive_folder: str
    folders: list[FolderResult] = field(default_factory=list)
    excluded: int = 0
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None or any(f.error for f in self.folders)

    @property
    def archived(self) -> int:
        return sum(f.archived for f in self.folders)

    @property
    def already_present(self) -> int:
        return sum(f.already_present for f in self.folders)

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "login": self.login,
            "archive_user": self.archive_user,
            "archive_folder": self.archive_folder,
            "archived": self.archived,
            "already_present": self.already_present,
            "excluded_folders": self.excluded,
            "error": self.error,
            "folders": [f.to_json() for f in self.folders],
        }


@dataclass
class ApplyResult:
    run_id: str
    plan_id: str
    started_at: str
    finished_at: str | None = None
    mailboxes: list[MailboxResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # of whole profiles
    users: dict[str, Any] = field(default_factory=dict)  # directory sync: changes per directory
    interrupted_by: int | None = None
    repair: RepairOutcome | None = None  # apply --repair: the blobs repaired and not
    search: dict[str, Any] | None = None  # search indexing: indexed, seconds, error
    profile_names: list[str] = field(default_factory=list)  # the profiles of the plan
    failed_profiles: set[str] = field(default_factory=set)  # with an error of the whole profile
    archived_bytes: dict[str, int] = field(default_factory=dict)  # per profile: raw size of new

    @property
    def stale(self) -> bool:
        return any(f.stale for m in self.mailboxes for f in m.folders)

    @property
    def exit_code(self) -> ExitCode:
        if self.interrupted_by is not None:
            return (
                ExitCode.INTERRUPTED
                if self.interrupted_by == signal.SIGINT
                else ExitCode.TERMINATED
            )
        if self.stale:
            return ExitCode.STALE_PLAN
        if self.repair is not None and self.repair.unrepaired:
            return ExitCode.INTEGRITY
        if self.errors or any(m.failed for m in self.mailboxes):
            return ExitCode.PARTIAL
        return ExitCode.OK

    @property
    def status(self) -> str:
        return {
            ExitCode.OK: "ok",
            ExitCode.PARTIAL: "partial",
            ExitCode.STALE_PLAN: "stale",
            ExitCode.INTEGRITY: "unrepaired",
            ExitCode.INTERRUPTED: "interrupted",
            ExitCode.TERMINATED: "interrupted",
        }.get(self.exit_code, "failed")

    def profile_status(self, name: str) -> str:
        """``ok``, or how the run went wrong for profile ``name``."""
        if self.interrupted_by is not None:
            return "interrupted"
        mailboxes = [m for m in self.mailboxes if m.profile == name]
        if name in self.failed_profiles or any(m.failed for m in mailboxes):
            return "partial"
        if any(f.stale for m in mailboxes for f in m.folders):
            return "stale"
        if self.repair is not None and self.repair.unrepaired:
            return "unrepaired"
        return "ok"

    def profile_totals(self) -> dict[str, dict[str, Any]]:
        """Per profile of the plan: its status and what the run did in it (the metrics)."""
        totals = {}
        for name in self.profile_names:
            mailboxes = [m for m in self.mailboxes if m.profile == name]
            folders = [f for m in mailboxes for f in m.folders]
            totals[name] = {
                "status": self.profile_status(name),
                "mailboxes": len(mailboxes),
                "failed_mailboxes": sum(1 for m in mailboxes if m.failed),
                "archived": sum(f.archived for f in folders),
                "archived_bytes": self.archived_bytes.get(name, 0),
                "deleted": sum(f.deleted for f in folders),
                "deleted_bytes": sum(f.deleted_bytes for f in folders),
            }
        return totals

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "plan_id": self.plan_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": self.status,
            "exit_code": int(self.exit_code),
            "warnings": self.warnings,
            "errors": self.errors,
            "users": self.users,
            **({"repair": self.repair.to_json()} if self.repair is not None else {}),
            **({"search": self.search} if self.search is not None else {}),
            "totals": {
                "mailboxes": len(self.mailboxes),
                "failed_mailboxes": sum(1 for m in self.mailboxes if m.failed),
                "archived": sum(m.archived for m in self.mailboxes),
                "already_present": sum(m.already_present for m in self.mailboxes),
                "vanished": sum(f.vanished for m in self.mailboxes for f in m.folders),
                "deleted": sum(f.deleted for m in self.mailboxes for f in m.folders),
            },
            "profiles": self.profile_totals(),
            "mailboxes": [m.to_json() for m in self.mailboxes],
        }
