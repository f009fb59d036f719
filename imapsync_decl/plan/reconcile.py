"""Compare what the server has with what the archive holds: pure functions, no I/O.

The planner gathers the facts (``FolderFacts``) from the server and what the
index knows (``ArchivedFolder``); these functions turn them into a Plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from imapsync_decl.config.resolve import Mailbox
from imapsync_decl.imap.facts import FolderInfo, FolderState
from imapsync_decl.plan import deletion
from imapsync_decl.plan.filters import SEARCH_ALWAYS
from imapsync_decl.plan.folders import FolderChoice
from imapsync_decl.plan.model import ExcludedFolder, FolderPlan, MailboxPlan


@dataclass(frozen=True)
class FolderFacts:
    """What the server said about one included folder."""

    folder: FolderInfo
    state: FolderState | None = None
    uids: tuple[int, ...] | None = None  # None: not searched, the checkpoint matched
    sizes: Mapping[int, int] = field(default_factory=dict)  # of the missing UIDs
    error: str | None = None
    condition: str | None = None  # see filters.condition: recorded with the checkpoint
    filtered: bool = False  # uids are those the filters select, not every message
    delete_candidates: frozenset[int] = frozenset()  # unflagged, undeleted, old enough
    no_deletion: str | None = None  # why nothing is deleted in this folder


@dataclass(frozen=True)
class ArchivedFolder:
    """What the index knows about one folder."""

    checkpoint: tuple[int, int, int] | None = None  # (uidvalidity, uidnext, message_count)
    archived_uids: frozenset[int] = frozenset()  # placements under the server's UIDVALIDITY
    archived_other: int = 0  # placements under other UIDVALIDITY values
    condition: str | None = None  # the checkpoint's condition
    to_repair: frozenset[int] = frozenset()  # UIDs whose blob is damaged or missing


def up_to_date(state: FolderState, archived: ArchivedFolder, condition: str | None = None) -> bool:
    """The folder is as it was when last completely archived: no UID search needed.

    Same UIDVALIDITY and UIDNEXT means no message was added since; the count
    only guards against a server that reuses UIDNEXT. Under message filters the
    condition (filters, day, HIGHESTMODSEQ) must be the same too.
    """
    return (
        archived.checkpoint == (state.uidvalidity, state.uidnext, state.exists)
        and archived.condition == condition
        and condition != SEARCH_ALWAYS
        and not archived.to_repair
    )


def missing_uids(uids: Sequence[int], archived: ArchivedFolder) -> tuple[int, ...]:
    return tuple(sorted(set(uids) - archived.archived_uids))


def needs_rescan(state: FolderState, archived: ArchivedFolder) -> bool:
    """UIDVALIDITY changed since the folder was archived: its UIDs now name other messages."""
    if archived.checkpoint is not None:
        return archived.checkpoint[0] != state.uidvalidity
    return archived.archived_other > 0


def reconcile_folder(facts: FolderFacts, archived: ArchivedFolder) -> FolderPlan:
    folder = facts.folder
    if facts.error is not None or facts.state is None:
        return FolderPlan(folder.path, folder.wire_name, "error", note=facts.error or "no state")
    state = facts.state
    common = {
        "path": folder.path,
        "wire_name": folder.wire_name,
        "uidvalidity": state.uidvalidity,
        "uidnext": state.uidnext,
        "exists": state.exists,
        "condition": facts.condition,
        "filtered_out": max(state.exists - len(facts.uids), 0)
        if facts.filtered and facts.uids is not None
        else 0,
    }
    if facts.uids is None:
        if not up_to_date(state, archived, facts.condition):
            raise ValueError(f"folder {folder.path!r} was not searched but is not up to date")
        return FolderPlan(
            **common,  # type: ignore[arg-type]
            action="skip",
            already_archived=len(archived.archived_uids),
            note="up to date",
        )
    missing = missing_uids(facts.uids, archived)
    present = len(facts.uids) - len(missing)
    # Without UIDPLUS nothing is deleted, whatever the candidates.
    common["delete"] = (
        deletion.deletable(facts.delete_candidates, archived.archived_uids, set(missing))
        if facts.no_deletion is None
        else ()
    )
    common["no_deletion"] = facts.no_deletion
    rescan = needs_rescan(state, archived)
    previous = archived.checkpoint[0] if rescan and archived.checkpoint else None
    if not missing:
        note = "nothing new" if not rescan else "UIDVALIDITY changed; every message re-pointed"
        return FolderPlan(
            **common,  # type: ignore[arg-type]
            action="skip",
            previous_uidvalidity=previous,
            already_archived=present,
            note=note,
        )
    return FolderPlan(
        **common,  # type: ignore[arg-type]
        action="rescan" if rescan else "archive",
        previous_uidvalidity=previous,
        uids=missing,
        bytes=sum(facts.sizes.get(uid, 0) for uid in missing),
        already_archived=present,
        note=_rescan_note(previous, state.uidvalidity)
        if rescan
        else f"{repairs} message(s) fetched again: their blob is damaged or missing"
        if (repairs := len(archived.to_repair.intersection(missing)))
        else None,
    )


def _rescan_note(previous: int | None, uidvalidity: int) -> str:
    """Why a folder is rescanned: with a checkpoint, its UIDVALIDITY changed; without
    one, a first archive was cut off and the folder has since been recreated."""
    changed = (
        f"UIDVALIDITY changed from {previous} to {uidvalidity}"
        if previous is not None
        else f"partly archived under another UIDVALIDITY, now {uidvalidity}"
    )
    return f"{changed}: messages are hashed and re-pointed, not stored again"


def reconcile_mailbox(
    mailbox: Mailbox,
    choices: Sequence[FolderChoice],
    facts: Mapping[str, FolderFacts],
    archived: Mapping[str, ArchivedFolder],
) -> MailboxPlan:
    folders: list[FolderPlan] = []
    excluded: list[ExcludedFolder] = []
    for choice in choices:
        path = choice.folder.path
        if not choice.included:
            excluded.append(ExcludedFolder(path, choice.reason or "excluded"))
            continue
        folders.append(reconcile_folder(facts[path], archived.get(path, ArchivedFolder())))
    return _mailbox_plan(mailbox, folders=tuple(folders), excluded=tuple(excluded))


def failed_mailbox(mailbox: Mailbox, error: str) -> MailboxPlan:
    return _mailbox_plan(mailbox, error=error)


def _mailbox_plan(
    mailbox: Mailbox,
    *,
    folders: tuple[FolderPlan, ...] = (),
    excluded: tuple[ExcludedFolder, ...] = (),
    error: str | None = None,
) -> MailboxPlan:
    return MailboxPlan(
        profile=mailbox.profile,
        source=mailbox.source,
        archive_user=mailbox.archive_user,
        archive_folder=mailbox.archive_folder,
        login=mailbox.login,
        email=mailbox.email,
        folders=folders,
        excluded=excluded,
        error=error,
    )
