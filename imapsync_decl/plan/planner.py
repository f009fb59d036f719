"""Gather the facts for a Plan: ask each mailbox's server (read-only) and the index.

The server is only read: LIST (with the folders' status where the server offers
LIST-STATUS), STATUS, EXAMINE, UID SEARCH and FETCH of sizes. The
archive is only read too (an archive that does not exist yet is simply empty).
Decisions are left to :mod:`reconcile`; this module does the I/O around them.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path

import structlog

from imapsync_decl.config.checks import insecure_settings
from imapsync_decl.config.documents import Delete, Filters, Profile, Server
from imapsync_decl.config.imap_access import imap_endpoint, imap_login
from imapsync_decl.config.loader import Loaded
from imapsync_decl.config.resolve import Config, Mailbox, SecretError, config_digest
from imapsync_decl.imap.errors import ConnectionLost, ImapError
from imapsync_decl.imap.facts import FolderInfo
from imapsync_decl.imap.session import ImapSession
from imapsync_decl.plan import deletion, filters
from imapsync_decl.plan.folders import select_folders
from imapsync_decl.plan.model import MailboxPlan, Plan, ProfilePlan
from imapsync_decl.plan.parallel import in_parallel
from imapsync_decl.plan.reconcile import (
    ArchivedFolder,
    FolderFacts,
    failed_mailbox,
    missing_uids,
    reconcile_mailbox,
    up_to_date,
)
from imapsync_decl.store import Index, IndexReader
from imapsync_decl.store.index import default_journal_dir
from imapsync_decl.store.journal import Journal

log = structlog.get_logger(__name__)


def profile_warnings(server: Server) -> tuple[str, ...]:
    """Warnings that every plan and run protocol of the profile carries."""
    return tuple(setting.summary for setting in insecure_settings(server))


def source_server(server: Server) -> str:
    """The server part of a mailbox's identity in the index: ``host:port``."""
    return f"{server.host.lower()}:{server.effective_port}"


def archived_folder(
    index: IndexReader | None,
    mailbox: Mailbox,
    server: str,
    path: str,
    uidvalidity: int,
    repair: AbstractSet[str] = frozenset(),
) -> ArchivedFolder:
    """What the index holds of this folder of this mailbox (its source: login and
    server), never what another mailbox of the same archive folder holds. ``repair``:
    damaged or missing blobs; their placements count as not archived, so that the
    messages are fetched again."""
    if index is None:
        return ArchivedFolder()
    folder_id = index.find_folder(
        mailbox.archive_user, mailbox.archive_folder, path, login=mailbox.login, server=server
    )
    if folder_id is None:
        return ArchivedFolder()
    checkpoint = index.checkpoint(folder_id)
    archived_uids = frozenset(index.archived_uids(folder_id, uidvalidity))
    to_repair: frozenset[int] = frozenset()
    if repair:
        placements = index.placements_of(folder_id, uidvalidity)
        to_repair = frozenset(uid for uid, sha256 in placements.items() if sha256 in repair)
        archived_uids -= to_repair
    return ArchivedFolder(
        checkpoint=(
            (checkpoint.uidvalidity, checkpoint.uidnext, checkpoint.message_count)
            if checkpoint is not None
            else None
        ),
        condition=checkpoint.condition if checkpoint is not None else None,
        archived_uids=archived_uids,
        archived_other=index.count_placements(folder_id, exclude_uidvalidity=uidvalidity),
        to_repair=to_repair,
    )


def plan_folder(
    session: ImapSession,
    index: IndexReader | None,
    mailbox: Mailbox,
    folder: FolderInfo,
    rules: Filters,
    delete_rules: Delete,
    server: str,
    repair: AbstractSet[str] = frozenset(),
) -> tuple[FolderFacts, ArchivedFolder]:
    on = filters.today()
    # As the listing gave it (LIST-STATUS) or from STATUS: a round trip per folder saved.
    state = session.folder_state(folder)
    archived = archived_folder(index, mailbox, server, folder.path, state.uidvalidity, repair)
    condition = filters.condition(rules, state, on)
    deleting = deletion.active(delete_rules)
    if not deleting and up_to_date(state, archived, condition):
        return FolderFacts(folder, state, condition=condition), archived
    examined = session.examine(folder)
    if examined.uidvalidity != state.uidvalidity:
        archived = archived_folder(
            index, mailbox, server, folder.path, examined.uidvalidity, repair
        )
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
    profile: Loaded[Profile],
    mailbox: Mailbox,
    index: IndexReader | None,
    repair: AbstractSet[str] = frozenset(),
    should_stop: Callable[[], bool] | None = None,
) -> MailboxPlan:
    server = profile.doc.server
    with structlog.contextvars.bound_contextvars(mailbox=mailbox.login):
        try:
            session = ImapSession.connect(
                imap_endpoint(server, profile.origin.base_dir),
                mailbox=mailbox.login,
                should_stop=should_stop,
            )
        except ImapError as exc:
            log.warning("mailbox_failed", error=str(exc))
            return failed_mailbox(mailbox, str(exc))
        try:
            session.login(imap_login(mailbox.credentials))
            folders = session.list_folders()
            choices = select_folders(folders, profile.doc.folders)
            # Without LIST-STATUS: the STATUS commands pipelined, one round trip for all.
            session.prefetch_states([c.folder for c in choices if c.included])
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
                        source_server(server),
                        repair,
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


def _plan_and_tell(
    planned: Callable[[Loaded[Profile], MailboxPlan], None] | None,
    profile: Loaded[Profile],
    mailbox: Mailbox,
    index: IndexReader | None,
    repair: AbstractSet[str],
    should_stop: Callable[[], bool] | None,
) -> MailboxPlan:
    plan = plan_mailbox(profile, mailbox, index, repair, should_stop)
    if planned is not None:
        planned(profile, plan)
    return plan


def make_plan(
    config: Config,
    profile_names: Sequence[str] | None = None,
    index: IndexReader | None = None,
    *,
    directory_error: str | None = None,
    users_added: Sequence[str] = (),
    repair: AbstractSet[str] = frozenset(),
    should_stop: Callable[[], bool] | None = None,
    planned: Callable[[Loaded[Profile], MailboxPlan], None] | None = None,
) -> Plan:
    """Plan every mailbox of the selected profiles (all profiles by default), up to the
    profile's ``max_concurrent_jobs`` mailboxes at once.

    ``should_stop``: asked while a read waits for a server (``apply`` passes its stop
    flag), so that Ctrl-C or SIGTERM during planning ends a waiting command at once; the
    mailboxes not planned yet then fail to connect straight away.

    ``repair``: blobs that are damaged or missing (``apply --repair``); the messages
    they hold are planned as not archived, so that they are fetched again.

    ``planned``: told of each mailbox's plan as soon as it is made (``apply`` starts its
    mailbox workers then, while the other mailboxes are still being planned).

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
            error: str | None = f"{directory_error}; nothing is archived for this profile"
            mailboxes: tuple[MailboxPlan, ...] = ()
        else:
            error = None
            with structlog.contextvars.bound_contextvars(profile=item.doc.name):
                mailboxes = tuple(
                    in_parallel(
                        item.doc.max_concurrent_jobs,
                        [
                            functools.partial(
                                _plan_and_tell,
                                planned,
                                item,
                                mailbox,
                                index,
                                repair,
                                should_stop,
                            )
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
                users_added=tuple(users_added) if needs_directory and error is None else (),
                not_selected=not_selected if error is None else (),
                error=error,
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


def open_index_if_exists(archive: Path) -> Index | None:
    """The archive's index for reading, or None when the archive does not exist yet.

    An archive whose index is gone but whose journal is there is not new: opening it
    is an ``IndexCorrupt`` that says to rebuild the index.
    """
    path = archive / "index.sqlite"
    if not path.exists() and not Journal(default_journal_dir(path)).exists():
        return None
    return Index.open(path, read_only=True)
