"""Apply a Plan: fetch what is missing, store it, record it. Idempotent and crash-safe.

Per batch of messages, the write order is: blobs durable on disk (``put_many``),
then the placements in one index transaction, and only when a whole folder is
done its checkpoint. A crash at any point leaves at worst orphan blobs; running
``apply`` again skips every placement already recorded, so each message ends up
archived exactly once. One mailbox's failure is recorded and the others go on.

With ``repair`` (``apply --repair``: what ``verify`` found), placements whose blob is
damaged or missing do not count as archived: their messages are fetched again, written
over the bad files, and the run's result says which blobs are intact again and which not.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import signal
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import structlog

from imapsync_decl.config.documents import Profile
from imapsync_decl.config.imap_access import imap_endpoint, imap_login
from imapsync_decl.config.loader import Loaded
from imapsync_decl.config.resolve import Config, Mailbox, SecretError
from imapsync_decl.errors import ExitCode
from imapsync_decl.fs import unwritable_reason
from imapsync_decl.imap.errors import ConnectionLost, ImapError
from imapsync_decl.imap.facts import FolderInfo
from imapsync_decl.imap.session import ImapSession
from imapsync_decl.imap.wire import sequence_set
from imapsync_decl.plan import deletion, filters
from imapsync_decl.plan.model import FolderPlan, MailboxPlan, Plan, ProfilePlan
from imapsync_decl.plan.planner import source_server
from imapsync_decl.run.dispatch import run_claimed
from imapsync_decl.run.indexing import SearchIndexing
from imapsync_decl.run.progress import NoProgress, Progress
from imapsync_decl.run.results import ApplyResult, FolderResult, MailboxResult
from imapsync_decl.run.storing import Pipeline, StoredMessage, batches, store_batch
from imapsync_decl.run.worker_wire import (
    Batch,
    FolderFailed,
    FolderFetched,
    FolderJob,
    Log,
    MailboxDone,
    MailboxFailed,
    MailboxJob,
)
from imapsync_decl.run.workers import WorkerLost, WorkerPool
from imapsync_decl.store import (
    ArchivedMessage,
    ArchiveStorage,
    BlobError,
    BlobInfo,
    VerifyReport,
    repair_outcome,
)

log = structlog.get_logger(__name__)


RETRIES = 3  # reconnects per mailbox after a dropped connection
BACKOFF_SECONDS = 1.0  # doubled after each retry


class MailboxError(Exception):
    """A mailbox's worker reported that the server or a secret failed it (its message)."""


class StopRequested:
    """Set by SIGINT/SIGTERM; checked between batches so a batch always commits whole."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        # Nothing else here: a handler that logged could wait forever for the log's lock,
        # held by the very code it interrupted. The stop is logged where it is noticed.
        self.signal = signum

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.INTERRUPTED if self.signal == signal.SIGINT else ExitCode.TERMINATED


@dataclass(frozen=True)
class Batching:
    max_count: int = 100
    max_bytes: int = 16 * 1024 * 1024


def in_worker(profile: Profile, plan: MailboxPlan) -> bool:
    """Whether a mailbox with work to do is archived by a mailbox worker: with the profile's
    worker_processes, unless deletion is planned (verified deletion reads the index between
    its steps, so it stays in apply)."""
    return profile.worker_processes and not any(folder.delete for folder in plan.folders)


def has_work(plan: MailboxPlan) -> bool:
    """Whether applying the mailbox's plan fetches anything."""
    return plan.error is None and any(folder.uids for folder in plan.folders)


def needs_runner(plan: MailboxPlan) -> bool:
    """Whether applying the mailbox's plan connects to its server: it fetches or deletes."""
    return plan.error is None and any(folder.uids or folder.delete for folder in plan.folders)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Executor:
    """Applies one Plan to one open Archive."""

    def __init__(
        self,
        config: Config,
        archive: ArchiveStorage,
        run_id: str,
        *,
        batching: Batching = Batching(),
        stop: StopRequested | None = None,
        progress: Progress | None = None,
        repair: VerifyReport | None = None,
        indexing: SearchIndexing | None = None,
        workers: WorkerPool | None = None,
    ) -> None:
        self.config = config
        # Where profiles with worker_processes archive each mailbox (None: in threads here).
        self._workers = workers
        self._jobs_at_once = 1  # mailboxes of the profile at hand archived at once
        # The search index, fed after each batch's placements are committed (never before).
        self.indexing = indexing if indexing is not None else SearchIndexing(Path(), enabled=False)
        self.archive = archive
        self.run_id = run_id
        self.batching = batching
        self.stop = stop if stop is not None else StopRequested()
        self.progress: Progress = progress if progress is not None else NoProgress()
        # apply --repair: what verify found, and the damaged or missing blobs not yet
        # written again.
        self.damage = repair
        self.repair: set[str] = set(repair.to_repair) if repair is not None else set()
        self._unwritable = False  # the archive's disk took no more writes: start no mailbox

    # --- the run ---------------------------------------------------------------------------

    def apply(self, plan: Plan) -> ApplyResult:
        result = ApplyResult(self.run_id, plan.id, _now())
        result.profile_names = [p.name for p in plan.profiles]
        for profile_plan in plan.profiles:
            result.warnings.extend(f"{profile_plan.name}: {w}" for w in profile_plan.warnings)
            if profile_plan.error is not None:
                result.errors.append(f"{profile_plan.name}: {profile_plan.error}")
                result.failed_profiles.add(profile_plan.name)
        index = self.archive.index
        index.begin_run(self.run_id, "apply")
        try:
            for profile_plan in plan.profiles:
                result.mailboxes.extend(self._profile(profile_plan))
            if not self.stop and not self._unwritable:
                self.indexing.finish(self.archive.blobs, self.stop.__bool__)
        finally:
            result.search = self.indexing.to_json()
            if self.damage is not None:
                result.repair = repair_outcome(
                    self.archive.blobs, self.damage.to_repair, self.damage.damaged_orphans
                )
            result.interrupted_by = self.stop.signal
            if self.stop.signal is not None:
                log.warning("stop_requested", signal=signal.Signals(self.stop.signal).name)
            result.finished_at = _now()
            # Once per run, for the protocol and the metrics (not counted batch by batch).
            if any(m.archived for m in result.mailboxes):
                result.archived_bytes = index.run_archived_bytes(self.run_id)
            index.finish_run(self.run_id, result.status, result.to_json())
        return result

    def _profile(self, plan: ProfilePlan) -> list[MailboxResult]:
        """A profile's mailboxes, in the order of its plan: those with work to do are jobs
        in the index, claimed by up to ``max_concurrent_jobs`` runners (``run/dispatch.py``);
        the others only need their bookkeeping (or failed in the plan), done here."""
        profile = self.config.profile(plan.name)
        runners = profile.doc.max_concurrent_jobs if profile is not None else 1
        queued: list[tuple[int, MailboxPlan]] = []
        results: dict[int, MailboxResult | None] = {}
        if profile is not None and not (self.stop or self._unwritable):
            self._ensure_mailboxes(profile, plan.mailboxes)
        for n, mailbox in enumerate(plan.mailboxes):
            if needs_runner(mailbox):
                queued.append((n, mailbox))
            else:
                results[n] = self._mailbox(mailbox)
        self._jobs_at_once = max(1, min(runners, len(queued)))
        results.update(
            run_claimed(
                self.archive.index,
                self.run_id,
                plan.name,
                queued,
                self._jobs_at_once,
                self._mailbox,
                lambda: not (self.stop or self._unwritable),
            )
        )
        return [r for n in range(len(plan.mailboxes)) if (r := results.get(n)) is not None]

    def _ensure_mailboxes(self, profile: Loaded[Profile], plans: Sequence[MailboxPlan]) -> None:
        """The rows of the profile's mailboxes (and their users), in the order of its plan,
        in one transaction, before any of them is archived: of two mailboxes of one archive
        folder, the one first in the plan has the archive tree's plain name, whichever of
        them concurrent jobs archive first."""
        with self.archive.index.atomic():
            for plan in plans:
                if plan.error is None and self._configured(plan):
                    self._ensure_rows(plan, profile)

    def _ensure_rows(self, plan: MailboxPlan, profile: Loaded[Profile]) -> int:
        """The id of the mailbox row of ``plan`` (its user's row too), made if new."""
        index = self.archive.index
        display_name = next(
            (u.display_name for u in self.config.users if u.name == plan.archive_user), None
        )
        source = "document" if plan.source == "master" else plan.source
        user_id = index.ensure_user(plan.archive_user, plan.email, display_name, source=source)
        return index.ensure_mailbox(
            user_id,
            plan.archive_folder,
            plan.login,
            plan.profile,
            server=source_server(profile.doc.server),
        )

    def _mailbox(self, plan: MailboxPlan) -> MailboxResult | None:
        if self.stop or self._unwritable:
            return None  # not started: the next apply does it
        result = MailboxResult(plan.profile, plan.login, plan.archive_user, plan.archive_folder)
        result.excluded = len(plan.excluded)
        with structlog.contextvars.bound_contextvars(profile=plan.profile, mailbox=plan.login):
            if plan.error is not None:
                result.error = plan.error
                log.warning("mailbox_failed", error=plan.error, during="plan")
                return result
            try:
                self._archive_mailbox(plan, result)
            except (ImapError, SecretError, MailboxError, WorkerLost) as exc:
                result.error = str(exc)
                if not isinstance(exc, MailboxError):  # a worker's error is logged by it
                    log.warning("mailbox_failed", error=str(exc))
            except Exception as exc:  # the per-mailbox job boundary: the others go on
                if unwritable_reason(exc) is not None:
                    self._unwritable = True
                    raise  # a full or read-only disk is not this mailbox's fault: stop the run
                result.error = f"unexpected error: {exc!r}"
                log.error("mailbox_failed", error=result.error, exc_info=True)
            else:
                log.info(
                    "mailbox_archived",
                    archived=result.archived,
                    already_present=result.already_present,
                )
        return result

    def _configured(self, plan: MailboxPlan) -> bool:
        return any(m.login == plan.login for m in self.config.mailboxes.get(plan.profile, ()))

    def _find(self, plan: MailboxPlan) -> tuple[Loaded[Profile], Mailbox]:
        profile = self.config.profile(plan.profile)
        if profile is not None:
            for mailbox in self.config.mailboxes.get(plan.profile, ()):
                if mailbox.login == plan.login:
                    return profile, mailbox
        raise SecretError(
            f"mailbox {plan.login!r} of profile {plan.profile!r} is no longer in the configuration"
        )

    def _archive_mailbox(self, plan: MailboxPlan, result: MailboxResult) -> None:
        profile, mailbox = self._find(plan)
        index = self.archive.index
        work: list[tuple[FolderPlan, FolderResult, int]] = []
        # The bookkeeping of a mailbox is one transaction (one commit, not one per folder).
        with index.atomic():
            mailbox_id = self._ensure_rows(plan, profile)
            for folder_plan in plan.folders:
                folder_result = FolderResult(
                    folder_plan.path, folder_plan.action, profile=plan.profile
                )
                result.folders.append(folder_result)
                if folder_plan.action == "error":
                    folder_result.error = folder_plan.note
                    continue
                folder_id = index.ensure_folder(mailbox_id, folder_plan.path)
                if folder_plan.uids or folder_plan.delete:
                    work.append((folder_plan, folder_result, folder_id))
                else:
                    self._complete(folder_id, folder_plan)
                    folder_result.skipped = True
        if not work:
            return
        key = f"{plan.profile}/{plan.archive_folder}"
        self.progress.mailbox_started(
            key, sum(f.count for f, _, _ in work), sum(f.bytes for f, _, _ in work)
        )
        try:
            self._connect_and_archive(plan, profile, mailbox, work, key)
        finally:
            self.progress.mailbox_finished(key)

    def _connect_and_archive(
        self,
        plan: MailboxPlan,
        profile: Loaded[Profile],
        mailbox: Mailbox,
        work: list[tuple[FolderPlan, FolderResult, int]],
        key: str,
    ) -> None:
        if self._workers is not None and in_worker(profile.doc, plan):
            self._archive_in_worker(plan, profile, mailbox, work, key)
            return
        attempt = 0
        while True:
            try:
                session = ImapSession.connect(
                    imap_endpoint(profile.doc.server, profile.origin.base_dir),
                    mailbox=plan.login,
                    should_stop=self.stop.__bool__,  # a stop wakes a waiting read
                )
                try:
                    session.login(imap_login(mailbox.credentials))
                    for folder_plan, folder_result, folder_id in work:
                        if self.stop:
                            return
                        if folder_result.error is None and not folder_result.completed:
                            self._folder(session, folder_plan, folder_result, folder_id, key)
                finally:
                    stats = session.stats
                    log.info(
                        "mailbox_fetched",
                        fetch_commands=stats.fetch_commands,
                        messages=stats.messages_fetched,
                        bytes=stats.bytes_fetched,
                        largest_fetch_bytes=stats.largest_fetch_bytes,
                    )
                    session.logout()
                return
            except ConnectionLost as exc:
                if self.stop:
                    return  # stopped (Interrupted), or lost while stopping: the next apply resumes
                attempt += 1
                if attempt > RETRIES:
                    raise
                delay = BACKOFF_SECONDS * 2 ** (attempt - 1)
                log.warning("connection_lost", error=str(exc), retry_in=delay, attempt=attempt)
                time.sleep(delay)

    def _archive_in_worker(
        self,
        plan: MailboxPlan,
        profile: Loaded[Profile],
        mailbox: Mailbox,
        work: list[tuple[FolderPlan, FolderResult, int]],
        key: str,
    ) -> None:
        """Archive the mailbox in a worker process, which stores the blobs; record what it
        reports here, in the order it reports it (so a folder's batches are all committed
        before its checkpoint)."""
        assert self._workers is not None
        folders: list[FolderJob] = []
        todo: list[tuple[FolderPlan, FolderResult, int, dict[str, list[tuple[int, int]]], int]]
        todo = []
        for folder_plan, folder_result, folder_id in work:
            assert folder_plan.uidvalidity is not None
            uids, old_by_hash = self._to_fetch(folder_id, folder_plan)
            folders.append(
                FolderJob(
                    folder_plan.path, folder_plan.wire_name, folder_plan.uidvalidity, tuple(uids)
                )
            )
            todo.append((folder_plan, folder_result, folder_id, old_by_hash, len(uids)))
        login = imap_login(mailbox.credentials)
        job = MailboxJob(
            endpoint=imap_endpoint(profile.doc.server, profile.origin.base_dir),
            mailbox=plan.login,
            mechanism=login.mechanism,
            username=login.username,
            authzid=login.authzid,
            password=login.resolve_password().reveal(),
            archive=self.config.archive_path,
            stale_before=self.archive.blobs.stale_before,
            # Fewer workers than cores: the spare ones compress and write beside the fetching.
            parallel_writes=self._jobs_at_once < (os.cpu_count() or 1),
            folders=tuple(folders),
            max_count=self.batching.max_count,
            max_bytes=self.batching.max_bytes,
            retries=RETRIES,
            backoff_seconds=BACKOFF_SECONDS,
            extract_text=self.indexing.accepting,
        )
        recorded = [0] * len(folders)
        with self._workers.worker() as worker:
            for event in worker.run(job, self.stop.__bool__):
                if isinstance(event, Log):
                    getattr(log, event.level, log.info)(event.event, **event.fields)
                elif isinstance(event, Batch):
                    folder_plan, folder_result, folder_id, old_by_hash, _ = todo[event.folder]
                    self._record(
                        event.messages,
                        folder_plan,
                        folder_result,
                        folder_id,
                        old_by_hash,
                        key,
                        event.documents,
                    )
                    recorded[event.folder] += len(event.messages)
                elif isinstance(event, FolderFailed):
                    folder_plan, folder_result, _, _, _ = todo[event.folder]
                    folder_result.error = event.error
                    folder_result.stale = event.stale
                    with structlog.contextvars.bound_contextvars(
                        folder=folder_plan.path, uidvalidity=folder_plan.uidvalidity
                    ):
                        log.warning(
                            "folder_stale" if event.stale else "folder_failed", error=event.error
                        )
                elif isinstance(event, FolderFetched):
                    folder_plan, folder_result, folder_id, _, asked = todo[event.folder]
                    folder_result.vanished = asked - recorded[event.folder]
                    self._complete(folder_id, folder_plan)
                    folder_result.completed = True
                    with structlog.contextvars.bound_contextvars(
                        folder=folder_plan.path, uidvalidity=folder_plan.uidvalidity
                    ):
                        log.info(
                            "folder_archived",
                            archived=folder_result.archived,
                            already_present=folder_result.already_present,
                            vanished=folder_result.vanished,
                        )
                elif isinstance(event, MailboxDone):
                    log.info("mailbox_fetched", **event.stats)
                elif isinstance(event, MailboxFailed):
                    if event.kind == "unwritable":
                        raise OSError(event.errno or 0, event.error, event.filename)
                    if event.kind == "imap":
                        raise MailboxError(event.error)
                    raise WorkerLost(event.error)

    def _complete(self, folder_id: int, plan: FolderPlan) -> None:
        """The folder holds everything up to the planned state: checkpoint it."""
        if plan.uidvalidity is not None and plan.uidnext is not None and plan.exists is not None:
            self.archive.index.set_checkpoint(
                folder_id, plan.uidvalidity, plan.uidnext, plan.exists, plan.condition
            )

    # --- one folder ------------------------------------------------------------------------

    def _folder(
        self,
        session: ImapSession,
        plan: FolderPlan,
        result: FolderResult,
        folder_id: int,
        key: str,
    ) -> None:
        assert plan.uidvalidity is not None
        with structlog.contextvars.bound_contextvars(
            folder=plan.path, uidvalidity=plan.uidvalidity
        ):
            try:
                state = session.examine(FolderInfo(plan.path, plan.wire_name, None, frozenset()))
            except ImapError as exc:
                if isinstance(exc, ConnectionLost):
                    raise
                result.error = str(exc)
                log.warning("folder_failed", error=str(exc))
                return
            if state.uidvalidity != plan.uidvalidity:
                result.error = (
                    f"UIDVALIDITY of {plan.path} is {state.uidvalidity}, the plan expected "
                    f"{plan.uidvalidity}; run `plan` again"
                )
                result.stale = True
                log.warning("folder_stale", error=result.error)
                return
            todo, old_by_hash = self._to_fetch(folder_id, plan)
            fetched = 0
            # Sizes first, so that no FETCH asks for more than a batch's worth of bytes:
            # memory stays bounded by the batch (or the largest message), not the folder.
            sizes = session.fetch_sizes(todo) if todo else {}
            messages = session.fetch_messages(
                todo,
                max_count=self.batching.max_count,
                max_bytes=self.batching.max_bytes,
                sizes=sizes,
            )
            record = functools.partial(
                self._record,
                plan=plan,
                result=result,
                folder_id=folder_id,
                old_by_hash=old_by_hash,
                key=key,
            )
            # One batch is hashed, compressed, stored and recorded while the next is fetched.
            with Pipeline(functools.partial(store_batch, self.archive.blobs), record) as writer:
                for batch in batches(messages, self.batching.max_count, self.batching.max_bytes):
                    fetched += len(batch)
                    writer.submit(batch)
                    if self.stop:
                        break
            if self.stop:
                return
            result.vanished = len(todo) - fetched
            self._complete(folder_id, plan)
            log.info(
                "folder_archived",
                archived=result.archived,
                already_present=result.already_present,
                vanished=result.vanished,
            )
            if plan.delete and not result.deleted:
                # Only now: every placement of this folder is committed.
                self._delete(session, plan, result, folder_id)
            result.completed = True

    def _to_fetch(
        self, folder_id: int, plan: FolderPlan
    ) -> tuple[list[int], dict[str, list[tuple[int, int]]]]:
        """The planned UIDs not archived yet, and (for a rescan) the contents archived under
        any other UIDVALIDITY of the folder, by SHA-256: the previous checkpoint's, or (a
        first archive cut off before its checkpoint) whatever is there. Those are re-pointed
        by content, so nothing is stored twice."""
        assert plan.uidvalidity is not None
        done = self._archived_intact(folder_id, plan.uidvalidity)
        old_by_hash: dict[str, list[tuple[int, int]]] = defaultdict(list)
        if plan.action == "rescan":
            for uidvalidity, uid, sha in self.archive.index.placements_elsewhere(
                folder_id, plan.uidvalidity
            ):
                old_by_hash[sha].append((uidvalidity, uid))
        return [uid for uid in plan.uids if uid not in done], old_by_hash

    def _archived_intact(self, folder_id: int, uidvalidity: int) -> set[int]:
        """The UIDs archived already, less those whose blob is still to be repaired."""
        if not self.repair:
            return self.archive.index.archived_uids(folder_id, uidvalidity)
        placements = self.archive.index.placements_of(folder_id, uidvalidity)
        return {uid for uid, sha256 in placements.items() if sha256 not in self.repair}

    def _delete(
        self, session: ImapSession, plan: FolderPlan, result: FolderResult, folder_id: int
    ) -> None:
        """Delete the planned messages that are verifiably in the archive (deletion.py)."""
        assert plan.uidvalidity is not None
        profile = self.config.profile(result.profile)
        if profile is None or not deletion.active(profile.doc.delete):
            return
        placements = self.archive.index.placements_of(folder_id, plan.uidvalidity)
        placed = deletion.deletable(plan.delete, placements.keys())
        result.kept += len(plan.delete) - len(placed)  # not archived (vanished): stays
        verified: list[int] = []
        damaged = 0
        for uid in placed:
            sha = placements[uid]
            try:
                self.archive.blobs.check(sha)  # re-hashed from disk against its name
            except BlobError as exc:
                result.kept += 1
                damaged += 1
                log.error("deletion_refused", uid=uid, blob=sha, error=str(exc))
                continue
            verified.append(uid)
        if damaged:
            result.error = (
                f"{damaged} archived message(s) of {plan.path} failed verification and stay on "
                "the server; run `archive verify`"
            )
        if not verified:
            return
        writer = session.open_for_deletion(FolderInfo(plan.path, plan.wire_name, None, frozenset()))
        state = writer.state
        if state.uidvalidity != plan.uidvalidity:
            result.error = (
                f"UIDVALIDITY of {plan.path} is {state.uidvalidity}, archived under "
                f"{plan.uidvalidity}: nothing deleted; run `plan` again"
            )
            result.stale = True
            return
        # Ask again now: flagged or already \Deleted messages, and young ones, stay.
        criteria = deletion.candidate_criteria(profile.doc.delete, filters.today())
        still = session.search_uids(["UID", sequence_set(verified), *criteria])
        same = self._same_on_server(
            session, list(deletion.deletable(still, set(verified))), placements, result
        )
        marked = writer.mark_deleted(same, state.highestmodseq)
        writer.expunge_uids(sorted(marked))
        result.deleted = len(marked)
        result.deleted_bytes = self.archive.index.size_of({placements[uid] for uid in marked})
        result.kept = len(plan.delete) - len(marked)
        log.info("messages_deleted", deleted=len(marked), kept=result.kept)

    def _same_on_server(
        self,
        session: ImapSession,
        uids: list[int],
        placements: dict[int, str],
        result: FolderResult,
    ) -> list[int]:
        """The UIDs whose server copy, fetched again now, is byte for byte the archived
        message (its SHA-256 is the placement's). Any other is kept and reported."""
        same: list[int] = []
        sizes = session.fetch_sizes(uids) if uids else {}
        for message in session.fetch_messages(
            uids, max_count=self.batching.max_count, max_bytes=self.batching.max_bytes, sizes=sizes
        ):
            if hashlib.sha256(message.body).hexdigest() == placements[message.uid]:
                same.append(message.uid)
            else:
                result.differing += 1
                log.error(
                    "deletion_refused",
                    uid=message.uid,
                    blob=placements[message.uid],
                    error="the server's copy differs from the archived message",
                )
        if result.differing:
            result.error = (
                f"{result.differing} message(s) of {result.path} differ on the server from the"
                " archived message under their UID and stay on the server"
            )
        return same

    def _record(
        self,
        stored: list[StoredMessage],
        plan: FolderPlan,
        result: FolderResult,
        folder_id: int,
        old_by_hash: dict[str, list[tuple[int, int]]],
        key: str,
        documents: bytes | None = None,
    ) -> None:
        """Record a batch whose blobs are durable (``store_batch``): steps 2 and 3 of the
        write order. Content archived under an older UIDVALIDITY of the folder is
        re-pointed to its new UID; everything else becomes a placement. ``documents``:
        the batch's search documents, packed by the worker that stored it."""
        assert plan.uidvalidity is not None
        index = self.archive.index
        moves: list[tuple[int, int, int]] = []
        entries: list[ArchivedMessage] = []
        for message in stored:
            if old_by_hash.get(message.sha256):
                moves.append((*old_by_hash[message.sha256].pop(0), message.uid))
            else:
                entries.append(
                    ArchivedMessage(
                        uid=message.uid,
                        blob=BlobInfo(message.sha256, message.size, message.stored_size),
                        internal_date=message.internal_date,
                        flags=message.flags,
                        headers=message.headers,
                    )
                )
        # A blob to repair that was fetched is intact again: put_many replaced it.
        self.repair.difference_update(m.sha256 for m in stored)
        # 2. placements in one transaction
        with index.atomic():
            if moves:
                index.repoint(folder_id, plan.uidvalidity, moves, self.run_id)
            recorded = index.record(folder_id, plan.uidvalidity, entries, self.run_id)
        # 3. the search indexer may take the new messages now (it reads what is committed;
        # a failure is logged and left to the next run: it never undoes what is archived)
        self.indexing.committed(documents)
        # Archived: contents new to the archive, counted in the index transaction, so
        # two mailboxes storing the same message at once count it once.
        result.archived += recorded.messages
        result.already_present += len(stored) - recorded.messages
        log.debug("batch_committed", messages=len(stored), moved=len(moves))
        self.progress.advanced(key, len(stored), sum(m.size for m in stored))
