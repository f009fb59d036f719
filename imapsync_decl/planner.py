"""Gather the facts for a Plan: ask each mailbox's server (read-only) and the index.

The server is only read: STATUS, EXAMINE, UID SEARCH and FETCH of sizes. The
archive is only read too (an archive that does not exist yet is simply empty).
Decisions are left to :mod:`reconcile`; this module does the I/O around them.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import structlog

from imapsync_decl import deletion, filters
from imapsync_decl.config import Config, Mailbox, SecretError, config_digest
from imapsync_decl.errors import ExitCode, ImapsyncError
from imapsync_decl.facts import FolderInfo
from imapsync_decl.folders import select_folders
from imapsync_decl.imap import ConnectionLost, ImapError, ImapSession
from imapsync_decl.loader import Loaded
from imapsync_decl.plan import MailboxPlan, Plan, ProfilePlan
from imapsync_decl.profile import Delete, Filters, Profile, Server
from imapsync_decl.reconcile import (
    ArchivedFolder,
    FolderFacts,
    failed_mailbox,
    missing_uids,
    reconcile_mailbox,
    up_to_date,
)
from imapsync_decl.store import Index

log = structlog.get_logger(__name__)

Connect = Callable[..., ImapSession]
T = TypeVar("T")


def profile_warnings(server: Server) -> tuple[str, ...]:
    """Warnings that every plan and run protocol of the profile carries."""
    warnings = []
    if server.accept_all_certificates:
        warnings.append(
            "server.accept_all_certificates is true: the server's certificate is not verified "
            "(insecure)"
        )
    if server.security == "plain":
        warnings.append("server.security is plain: passwords and mail travel unencrypted")
    return tuple(warnings)


def archived_folder(
    index: Index | None, mailbox: Mailbox, path: str, uidvalidity: int
) -> ArchivedFolder:
    if index is None:
        return ArchivedFolder()
    folder_id = index.find_folder(mailbox.archive_user, mailbox.archive_folder, path)
    if folder_id is None:
        return ArchivedFolder()
    checkpoint = index.checkpoint(folder_id)
    return ArchivedFolder(
        checkpoint=(
            (checkpoint.uidvalidity, checkpoint.uidnext, checkpoint.message_count)
            if checkpoint is not None
            else None
        ),
        condition=checkpoint.condition if checkpoint is not None else None,
        archived_uids=frozenset(index.archived_uids(folder_id, uidvalidity)),
        archived_other=index.count_placements(folder_id, exclude_uidvalidity=uidvalidity),
    )


def plan_folder(
    session: ImapSession,
    index: Index | None,
    mailbox: Mailbox,
    folder: FolderInfo,
    rules: Filters,
    delete_rules: Delete,
) -> tuple[FolderFacts, ArchivedFolder]:
    on = filters.today()
    state = session.status(folder)
    archived = archived_folder(index, mailbox, folder.path, state.uidvalidity)
    condition = filters.condition(rules, state, on)
    deleting = deletion.active(delete_rules)
    if not deleting and up_to_date(state, archived, condition):
        return FolderFacts(folder, state, condition=condition), archived
    examined = session.examine(folder)
    if examined.uidvalidity != state.uidvalidity:
        archived = archived_folder(index, mailbox, folder.path, examined.uidvalidity)
    # The condition of what the search sees: HIGHESTMODSEQ as EXAMINE reports it.
    condition = filters.condition(rules, examined, on)
    uids = session.search_uids(filters.search_criteria(rules, on))
    missing = missing_uids(uids, archived)
    sizes = session.fetch_sizes(missing) if missing else {}
    candidates: frozenset[int] = frozenset()
    no_deletion = None
    if deleting:
        if session.can_delete_exactly:
            criteria = deletion.candidate_criteria(delete_rules, on)
            candidates = frozenset(session.search_uids(criteria))
        else:
            no_deletion = (
                "no deletion: the server has no UIDPLUS, and a plain EXPUNGE would also remove "
                "what the owner marked \\Deleted"
            )
    return (
        FolderFacts(
            folder,
            examined,
            tuple(uids),
            sizes,
            condition=condition,
            filtered=filters.active(rules),
            delete_candidates=candidates,
            no_deletion=no_deletion,
        ),
        archived,
    )


def plan_mailbox(
    profile: Loaded[Profile], mailbox: Mailbox, index: Index | None, connect: Connect
) -> MailboxPlan:
    server = profile.doc.server
    with structlog.contextvars.bound_contextvars(mailbox=mailbox.login):
        try:
            session = connect(server, profile.origin.base_dir, mailbox=mailbox.login)
        except ImapError as exc:
            log.warning("mailbox_failed", error=str(exc))
            return failed_mailbox(mailbox, str(exc))
        try:
            session.login(mailbox.credentials)
            folders = session.list_folders()
            choices = select_folders(folders, profile.doc.folders)
            facts: dict[str, FolderFacts] = {}
            archived: dict[str, ArchivedFolder] = {}
            for choice in choices:
                if not choice.included:
                    continue
                path = choice.folder.path
                try:
                    facts[path], archived[path] = plan_folder(
                        session,
                        index,
                        mailbox,
                        choice.folder,
                        profile.doc.filters,
                        profile.doc.delete,
                    )
                except ImapError as exc:
                    if isinstance(exc, ConnectionLost):
                        raise
                    facts[path] = FolderFacts(choice.folder, error=str(exc))
                log.debug("folder_examined", folder=path)
            return reconcile_mailbox(mailbox, choices, facts, archived)
        except (ImapError, SecretError) as exc:
            log.warning("mailbox_failed", error=str(exc))
            return failed_mailbox(mailbox, str(exc))
        finally:
            session.logout()


def in_parallel(jobs: int, calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run the calls on up to ``jobs`` threads; results in the order of the calls.

    Each call runs in a copy of the caller's context, so bound log keys (run_id,
    profile) follow it into its thread.
    """
    if jobs <= 1 or len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=min(jobs, len(calls))) as pool:
        futures = [pool.submit(contextvars.copy_context().run, call) for call in calls]
        return [future.result() for future in futures]


def make_plan(
    config: Config,
    profile_names: Sequence[str] | None = None,
    index: Index | None = None,
    *,
    connect: Connect = ImapSession.connect,
    directory_error: str | None = None,
    users_added: Sequence[str] = (),
) -> Plan:
    """Plan every mailbox of the selected profiles (all profiles by default), up to the
    profile's ``max_concurrent_jobs`` mailboxes at once.

    ``directory_error``: the directories could not be read, so the profiles that
    synchronise with them are errors, with nothing planned. ``users_added``: users a
    directory sync adds, shown on those profiles.
    """
    profiles = []
    for item in config.profiles:
        if profile_names and item.doc.name not in profile_names:
            continue
        server = item.doc.server
        needs_directory = config.needs_directory(item.doc.name)
        not_selected = tuple(
            (c.listed.user.name, c.reason or "not selected")
            for c in config.choices.get(item.doc.name, ())
            if not c.selected
        )
        if needs_directory and directory_error is not None:
            profiles.append(
                ProfilePlan(
                    name=item.doc.name,
                    server=f"{server.host}:{server.effective_port}",
                    security=server.security,
                    warnings=profile_warnings(server),
                    error=f"{directory_error}; nothing is archived for this profile",
                )
            )
            continue
        with structlog.contextvars.bound_contextvars(profile=item.doc.name):
            mailboxes = tuple(
                in_parallel(
                    item.doc.max_concurrent_jobs,
                    [
                        functools.partial(plan_mailbox, item, mailbox, index, connect)
                        for mailbox in config.mailboxes.get(item.doc.name, ())
                    ],
                )
            )
        profiles.append(
            ProfilePlan(
                name=item.doc.name,
                server=f"{server.host}:{server.effective_port}",
                security=server.security,
                warnings=profile_warnings(server),
                mailboxes=mailboxes,
                users_added=tuple(users_added) if needs_directory else (),
                not_selected=not_selected,
            )
        )
    return Plan(
        id=str(uuid.uuid4()),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        archive=str(config.archive_path),
        archive_id=index.archive_id if index is not None else None,
        archive_state=index.state_token() if index is not None else None,
        config_digest=config_digest(config),
        profiles=tuple(profiles),
    )


class StalePlan(ImapsyncError):
    """A saved plan that no longer fits the configuration or the archive."""

    exit_code = ExitCode.STALE_PLAN


def check_saved_plan(
    plan: Plan, config: Config, index: Index | None, *, created_now: bool = False
) -> None:
    """Refuse a saved plan made for another configuration or archive state.

    ``created_now``: the archive did not exist before this apply opened it, which
    is the state a plan made without an archive expects.
    """
    if created_now and plan.archive_id is None and plan.archive_state is None:
        index = None
    again = "; run `plan` again"
    if plan.archive != str(config.archive_path):
        raise StalePlan(
            f"the plan is for the archive {plan.archive}, not {config.archive_path}{again}"
        )
    if plan.config_digest != config_digest(config):
        raise StalePlan(f"the configuration changed since the plan was made{again}")
    archive_id = index.archive_id if index is not None else None
    if plan.archive_id != archive_id:
        raise StalePlan(f"the plan was made for another archive (or before it existed){again}")
    state = index.state_token() if index is not None else None
    if plan.archive_state != state:
        raise StalePlan(
            "the archive changed since the plan was made (the plan was applied already, or "
            f"an apply ran or was interrupted since){again}; after a crash, `apply` without a "
            "plan file resumes"
        )


def open_index_if_exists(archive: Path) -> Index | None:
    """The archive's index for reading, or None when the archive does not exist yet."""
    path = archive / "index.sqlite"
    return Index.open(path, read_only=True) if path.exists() else None
