"""The application layer: plan and apply profiles, sync and list users, runs, index rebuild.

These are the functions the command line and the daemon call. Planning reads the
directories read-only when a selected profile needs them and makes the plan;
applying checks a saved plan before the archive is touched, takes the archive's
lock, synchronises the directories, checks the saved plan again under the lock,
plans (restricted to the saved plan's UIDs) and hands the plan to the executor.
Nothing here renders or installs signal handlers: callers pass a stop flag, a
progress factory and, for planning, the context to hold while servers are read.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from imapsync_decl.config.documents import Profile
from imapsync_decl.config.loader import Loaded
from imapsync_decl.config.resolve import Config, ListedUser, directory_users, load_config
from imapsync_decl.errors import ImapsyncError, UsageError
from imapsync_decl.plan.model import MailboxPlan, Plan
from imapsync_decl.plan.planner import make_plan, open_index_if_exists
from imapsync_decl.plan.saved import check_saved_plan, restrict_to_saved
from imapsync_decl.run import notify
from imapsync_decl.run.executor import Batching, Executor, StopRequested, has_work, in_worker
from imapsync_decl.run.heap import bound_heap
from imapsync_decl.run.indexing import SearchIndexing
from imapsync_decl.run.metrics import render_metrics, write_metrics
from imapsync_decl.run.progress import ProgressFactory, no_progress
from imapsync_decl.run.results import ApplyResult
from imapsync_decl.run.workers import WorkerPool
from imapsync_decl.sources import users as userlist
from imapsync_decl.sources.users import DirectoryResult
from imapsync_decl.store import ArchiveLock, BlobStore, remove_damaged_orphans
from imapsync_decl.store.archive import open_for_writing, writing
from imapsync_decl.store.index import Index
from imapsync_decl.store.rebuild import RebuildReport, rebuild_index
from imapsync_decl.store.runs import UnknownRun, find_run
from imapsync_decl.store.search.database import (
    SearchCounts,
    SearchIndex,
    damaged,
    remove_search_files,
)
from imapsync_decl.store.search.indexer import catch_up
from imapsync_decl.store.verify import verify

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SearchRebuild:
    """What ``archive rebuild-search`` did, and the search index's counts after it."""

    indexed: int
    skipped: tuple[str, ...]  # messages whose blob is damaged or missing
    counts: SearchCounts


def needs_directory(config: Config, profile_names: Sequence[str]) -> bool:
    """Whether a selected profile (every profile when none is named) uses a directory."""
    return any(
        config.needs_directory(item.doc.name)
        for item in config.profiles
        if not profile_names or item.doc.name in profile_names
    )


def read_directories(
    config_dir: Path, config: Config, profile_names: Sequence[str]
) -> tuple[Config, str | None, list[str]]:
    """For plan: read the directories (read-only) when a profile synchronises with them,
    and resolve the configuration with the user list a sync would give.

    Returns that configuration, the error of a directory that could not be read, and
    the users a sync would add.
    """
    if not needs_directory(config, profile_names):
        return config, None, []
    read = userlist.read_all(config)
    if read.error is not None:
        return config, read.error, []
    fresh_names = {u.user.name for u in read.users}
    gone = [
        ListedUser(u.user, "directory", "gone")
        for u in config.listed
        if u.source == "directory" and u.user.name not in fresh_names
    ]
    fresh = load_config(config_dir, str(config_dir), [*read.users, *gone])
    return fresh, None, userlist.would_add(config, read.users)


def plan_profiles(
    config_dir: Path,
    config: Config,
    profile_names: Sequence[str],
    *,
    should_stop: Callable[[], bool],
    while_reading_servers: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
) -> Plan:
    """The plan of the selected profiles (every profile when none is named).

    Reads the directories (read-only) when needed, then the servers and the archive;
    changes nothing. ``while_reading_servers`` is held while the servers are read
    (``plan`` catches Ctrl-C and SIGTERM there, so that ``should_stop`` ends a read
    that waits for a server).
    """
    config, directory_error, added = read_directories(config_dir, config, profile_names)
    index = open_index_if_exists(config.archive_path)
    try:
        with while_reading_servers():
            return make_plan(
                config,
                profile_names,
                index,
                directory_error=directory_error,
                users_added=added,
                should_stop=should_stop,
            )
    finally:
        if index is not None:
            index.close()


def apply_profiles(
    config_dir: Path,
    config: Config,
    profile_names: Sequence[str],
    saved: Plan | None,
    *,
    stop: StopRequested,
    batching: Batching,
    progress: ProgressFactory = no_progress,
    run_id: str | None = None,
    repair: bool = False,
    metrics_file: Path | None = None,
) -> ApplyResult | None:
    """Take the archive's lock, plan afresh (or check the saved plan) and apply.

    The body of `apply`, also used by the daemon. None: a stop was requested before
    anything was archived. Raises ArchiveLocked when another command holds the lock.
    A saved plan is checked twice: before the archive is created or touched, and
    again under the lock (another apply may have run in between).
    ``repair``: verify first, remove damaged orphans, and plan the messages of damaged
    or missing blobs as not archived (apply --repair; not with a saved plan).
    The search indexer runs beside the archiving unless the Archive document turns it off.
    ``metrics_file`` (else the Archive document's): written after the run (run.metrics).
    The profiles' ``notify`` URLs are pinged at the start and the end (run.notify).
    The process's threads share one malloc heap (run.heap).
    """
    bound_heap()
    run_id = run_id or str(uuid.uuid4())
    names = [p.name for p in saved.profiles] if saved is not None else list(profile_names)
    pings = notify.targets(config, names or [item.doc.name for item in config.profiles])
    notify.notify(pings, "start", {name: f"imapsync-decl run {run_id}: started" for name in pings})
    try:
        result = _apply(
            config_dir,
            config,
            profile_names,
            saved,
            stop=stop,
            batching=batching,
            progress=progress,
            run_id=run_id,
            repair=repair,
            metrics_file=metrics_file or config.metrics_file,
        )
    except ImapsyncError as exc:
        notify.notify(
            pings, "fail", {name: f"imapsync-decl run {run_id}: {exc.message}" for name in pings}
        )
        raise
    if result is None:
        notify.notify(
            pings,
            "fail",
            {name: f"imapsync-decl run {run_id}: stopped before it began" for name in pings},
        )
        return None
    totals = result.profile_totals()
    for name in pings:
        profile = totals.get(name)
        if profile is None:
            continue
        notify.notify(
            pings,
            "success" if profile["status"] == "ok" else "fail",
            {name: run_summary(result, name, profile)},
        )
    return result


def run_summary(result: ApplyResult, name: str, totals: dict[str, Any]) -> str:
    """The body of a profile's closing ping: counts and statuses, nothing secret."""
    return (
        f"imapsync-decl run {result.run_id}, profile {name}: {totals['status']} "
        f"(exit code {int(result.exit_code)})\n"
        f"archived {totals['archived']} messages ({totals['archived_bytes']} bytes), "
        f"deleted {totals['deleted']} from the server\n"
        f"mailboxes: {totals['mailboxes'] - totals['failed_mailboxes']} ok, "
        f"{totals['failed_mailboxes']} failed\n"
    )


def _apply(
    config_dir: Path,
    config: Config,
    profile_names: Sequence[str],
    saved: Plan | None,
    *,
    stop: StopRequested,
    batching: Batching,
    progress: ProgressFactory,
    run_id: str,
    repair: bool,
    metrics_file: Path | None,
) -> ApplyResult | None:
    existed = (config.archive_path / "index.sqlite").exists()
    if saved is not None:
        # Refused before the archive is created or touched.
        index = open_index_if_exists(config.archive_path)
        try:
            check_saved_plan(saved, config, index)
        finally:
            if index is not None:
                index.close()
    # The workers end before the archive's lock is let go: none writes after it.
    with (
        open_for_writing(config.archive_path, "imapsync-decl apply") as archive,
        contextlib.closing(WorkerPool()) as workers,
    ):
        users_changes: dict[str, Any] = {}
        directory_error: str | None = None
        if needs_directory(config, profile_names) or (
            saved is not None and any(config.needs_directory(p.name) for p in saved.profiles)
        ):
            users_changes, read = userlist.sync(config, archive.index)
            directory_error = read.error
            config = load_config(
                config_dir,
                str(config_dir),
                directory_users(archive.index.list_users(source="directory")),
            )
        damage = None
        if repair:
            damage = verify(archive.blobs, archive.index)
            remove_damaged_orphans(archive.blobs, damage)
            log.info(
                "archive_verified",
                checked=damage.checked,
                to_repair=len(damage.to_repair),
                damaged_orphans=len(damage.damaged_orphans),
            )
        # A mailbox worker starts as soon as a planned mailbox has work for it, so that its
        # start-up overlaps with the planning of the others (a no-op starts none).
        planned = functools.partial(_prestart, workers, config)
        if saved is not None:
            # Again under the lock: another apply may have run meanwhile.
            fresh = not existed and archive.index.state_token() == "runs:0"
            check_saved_plan(saved, config, archive.index, created_now=fresh)
            # Only the saved UIDs are taken from the file: everything else comes from a
            # plan made now, and the file must say the same.
            the_plan = saved  # a plan of no profiles applies nothing
            if saved.profiles:
                current = make_plan(
                    config,
                    [p.name for p in saved.profiles],
                    archive.index,
                    directory_error=directory_error,
                    should_stop=stop.__bool__,
                    planned=planned,
                )
                the_plan = restrict_to_saved(saved, current)
        else:
            the_plan = make_plan(
                config,
                profile_names,
                archive.index,
                directory_error=directory_error,
                repair=damage.to_repair if damage is not None else frozenset(),
                should_stop=stop.__bool__,
                planned=planned,
            )
        if stop:
            return None
        indexing = SearchIndexing(config.archive_path, enabled=config.search_during_apply)
        with (
            structlog.contextvars.bound_contextvars(run_id=run_id),
            progress(the_plan) as bars,
        ):
            executor = Executor(
                config,
                archive,
                run_id,
                stop=stop,
                batching=batching,
                progress=bars,
                repair=damage,
                indexing=indexing,
                workers=workers,
            )
            try:
                result = executor.apply(the_plan)
            finally:
                indexing.close()
            result.users = users_changes
        if metrics_file is not None:
            _write_metrics(metrics_file, archive.index, config)
        return result


def _prestart(
    workers: WorkerPool, config: Config, profile: Loaded[Profile], plan: MailboxPlan
) -> None:
    """Start a mailbox worker for a planned mailbox that will need one, up to as many as the
    profile archives at once."""
    if has_work(plan) and in_worker(profile.doc, plan):
        workers.prestart(
            min(profile.doc.max_concurrent_jobs, len(config.mailboxes.get(profile.doc.name, ())))
        )


def _write_metrics(path: Path, index: Index, config: Config) -> None:
    """Write the metrics file; a failure is logged, and the run's outcome stays."""
    try:
        write_metrics(path, render_metrics(index, [item.doc.name for item in config.profiles]))
    except OSError as exc:
        log.warning("metrics_not_written", path=str(path), error=exc.strerror or str(exc))
    else:
        log.info("metrics_written", path=str(path))


def sync_users(config: Config) -> tuple[dict[str, dict[str, list[str]]], DirectoryResult]:
    """Read every directory and bring the user list in the archive up to date, under
    the archive's lock. Returns the changes per directory and what reading gave."""
    with open_for_writing(config.archive_path, "imapsync-decl users sync") as archive:
        return userlist.sync(config, archive.index)


def list_users(config: Config) -> list[dict[str, Any]]:
    """The rows of ``users list``: the configuration's users and those of the archive, each
    with the state of its web password (``web_password``: set, disabled, none)."""
    # Imported here: the web accounts load Argon2 (50 ms at start-up), which apply never needs.
    from imapsync_decl.run.accounts import web_password_states

    index = open_index_if_exists(config.archive_path)
    try:
        rows = userlist.list_rows(config, index)
    finally:
        if index is not None:
            index.close()
    states = web_password_states(config, [str(row["name"]) for row in rows])
    for row in rows:
        row["web_password"] = states[str(row["name"])]
    return rows


def list_runs(archive: Path) -> list[dict[str, Any]] | None:
    """The runs of the archive, newest first; None when there is no archive."""
    index = open_index_if_exists(archive)
    if index is None:
        return None
    with index:
        return index.list_runs()


def show_run(archive: Path, run_id: str | None) -> dict[str, Any]:
    """The run ``run_id`` (or a prefix naming one run), or the newest when None.

    Raises UnknownRun (exit 10) when there is none, or no archive.
    """
    index = open_index_if_exists(archive)
    if index is None:
        raise UnknownRun(f"no archive at {archive}, so no runs (run `apply` first)")
    with index:
        return find_run(index, run_id)


def rebuild_archive_index(archive: Path, *, force: bool) -> RebuildReport:
    """Rebuild the index of ``archive`` from its journal, under the archive's lock."""
    if not archive.is_dir():
        raise UsageError(f"no archive at {archive}")
    with ArchiveLock(archive, "imapsync-decl archive rebuild-index"):
        return rebuild_index(archive / "index.sqlite", BlobStore(archive), force=force)


def rebuild_search_index(
    archive: Path,
    *,
    force: bool,
    progress: Callable[[int, int], AbstractContextManager[Callable[[int], None]]] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> SearchRebuild:
    """Index every archived message without a search document, from its blob, under the
    archive's lock (``archive rebuild-search``). What is indexed stays; ``force`` deletes
    the search index first (also a damaged one). ``progress(done, total)`` gives the
    callback told how many messages each batch dealt with."""
    if not (archive / "index.sqlite").is_file():
        raise UsageError(f"no archive at {archive} (run `apply` first)")
    with ArchiveLock(archive, "imapsync-decl archive rebuild-search"), writing(archive):
        if force:
            remove_search_files(archive)
        try:
            search = SearchIndex.open(archive)
            counts = search.counts()
        except sqlite3.DatabaseError as exc:
            raise damaged(archive, exc) from None
        with search:
            total = counts.unindexed
            bars = progress(counts.indexed, total) if progress else contextlib.nullcontext(None)
            with bars as advanced:
                done = catch_up(
                    search, BlobStore(archive), advanced=advanced, should_stop=should_stop
                )
            log.info("search_indexed", count=done.indexed, skipped=len(done.skipped))
            return SearchRebuild(done.indexed, tuple(done.skipped), search.counts())
