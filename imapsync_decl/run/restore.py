"""Restore: put archived messages back into the mailboxes a profile reaches, never twice.

What is restored are placements: given by id (the ``id`` of ``archive search`` hits),
or every placement of a user (of one folder and its sub-folders, optionally only the
hits of a search query). Each goes to the mailbox that the profile reaches for its
user, into its own folder path or into ``to_folder``; a missing folder is created.
Before a folder gets anything, what it holds is learnt: the SHA-256 of its messages
where the archive knows them (placements under its current UIDVALIDITY of UIDs that
are still there) and, from the server, each message's Message-ID and size. A message
that is there already by either is skipped, so a repeated restore adds nothing.

The bytes appended are the blob's, checked against its SHA-256 (a damaged blob is not
restored: exit 12 for it, the others go on), with the placement's flags (without
``\\Recent`` and ``\\Deleted``) and internal date. A run is recorded under the
archive's lock like an apply run; ``dry_run`` only reads (the archive read-only, the
server with read-only commands) and records nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from imapsync_decl.config.imap_access import imap_endpoint, imap_login
from imapsync_decl.config.model import Config, Mailbox
from imapsync_decl.errors import ExitCode, UsageError
from imapsync_decl.imap.appender import Appender
from imapsync_decl.imap.errors import ImapError, ProtocolError, UnsafeValue
from imapsync_decl.imap.session import ImapSession
from imapsync_decl.imap.wire import UNSAFE
from imapsync_decl.plan.planner import open_index_if_exists, source_server
from imapsync_decl.secrets import SecretError
from imapsync_decl.store import Archive, BlobDamaged, BlobError, Index
from imapsync_decl.store.archive import open_for_writing
from imapsync_decl.store.message import parse_headers
from imapsync_decl.store.restoring import RestoreItem
from imapsync_decl.store.search.database import SEARCH_NAME, SearchIndex
from imapsync_decl.store.search.find import MAX_LIMIT, Scope, find
from imapsync_decl.store.search.query import parse_query

__all__ = ["RestoreRequest", "RestoreResult", "restore"]

log = structlog.get_logger(__name__)

RESTORED = "restored"
ALREADY_THERE = "already_there"
FAILED = "failed"


@dataclass(frozen=True)
class RestoreRequest:
    """What to restore (``ids``, or ``user`` with ``folder`` and ``query``) and where to."""

    profile: str
    ids: tuple[int, ...] = ()
    user: str | None = None
    folder: str | None = None
    query: str | None = None
    to_folder: str | None = None
    dry_run: bool = False
    to_user: str | None = None  # into this user's mailbox instead of each message's own


@dataclass
class FolderCount:
    """What happened in one target folder of one user."""

    user: str
    mailbox: str | None
    folder: str
    restored: int = 0
    already_there: int = 0
    failed: int = 0
    created: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "mailbox": self.mailbox,
            "folder": self.folder,
            "created": self.created,
            "restored": self.restored,
            "already_there": self.already_there,
            "failed": self.failed,
        }


@dataclass
class RestoreResult:
    """The protocol of one restore: per user and folder, per message, and every error."""

    run_id: str
    profile: str
    dry_run: bool
    started_at: str
    finished_at: str | None = None
    folders: dict[tuple[str, str], FolderCount] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    damaged: int = 0

    def count(self, item: RestoreItem, target: str, mailbox: Mailbox | None) -> FolderCount:
        user = mailbox.archive_user if mailbox is not None else item.user
        key = (user, target)
        if key not in self.folders:
            login = mailbox.archive_folder if mailbox is not None else None
            self.folders[key] = FolderCount(user, login, target)
        return self.folders[key]

    def total(self, what: str) -> int:
        return sum(int(getattr(f, what)) for f in self.folders.values())

    @property
    def exit_code(self) -> ExitCode:
        if self.damaged:
            return ExitCode.INTEGRITY
        if self.total(FAILED) or self.errors:
            return ExitCode.PARTIAL
        return ExitCode.OK

    @property
    def status(self) -> str:
        return {ExitCode.OK: "ok", ExitCode.PARTIAL: "partial"}.get(self.exit_code, "unrepaired")

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "command": "restore",
            "profile": self.profile,
            "dry_run": self.dry_run,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": self.status,
            "exit_code": int(self.exit_code),
            "errors": self.errors,
            "folders": [f.to_json() for f in self.folders.values()],
            "messages": self.messages,
            "totals": {
                "restored": self.total(RESTORED),
                "already_there": self.total(ALREADY_THERE),
                "failed": self.total(FAILED),
                "damaged": self.damaged,
            },
        }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def check_request(config: Config, request: RestoreRequest) -> None:
    """Refuse a request that cannot be right, before the archive or a server is touched."""
    if request.ids and request.user is not None:
        raise UsageError("give either placement IDs or --user, not both")
    if not request.ids and request.user is None:
        raise UsageError("give the placement IDs to restore (from `archive search`), or --user")
    if request.ids and (request.folder is not None or request.query is not None):
        raise UsageError("--folder and --query select placements of a --user; not with IDs")
    if request.to_folder is not None:
        if UNSAFE.search(request.to_folder.encode("utf-8", "surrogateescape")):
            raise UsageError(
                f"--to-folder {request.to_folder!r} contains a line break or NUL character"
                " (CR, LF or NUL), which cannot be sent to an IMAP server; nothing was sent"
            )
        if not request.to_folder.strip("/"):
            raise UsageError("--to-folder is empty")
    if config.profile(request.profile) is None:
        known = ", ".join(p.doc.name for p in config.profiles) or "none"
        raise UsageError(f"no profile named {request.profile!r} (profiles: {known})")
    if request.query is not None:
        parse_query(request.query)  # an invalid query is exit 10 before anything else


def restore(
    config: Config,
    request: RestoreRequest,
    *,
    should_stop: Callable[[], bool] | None = None,
    run_id: str | None = None,
) -> RestoreResult:
    """Restore what ``request`` selects (see the module's description)."""
    check_request(config, request)
    root = config.archive_path
    existing = open_index_if_exists(root)
    if existing is None:
        raise UsageError(f"no archive at {root} (run `apply` first)")
    existing.close()
    result = RestoreResult(run_id or str(uuid.uuid4()), request.profile, request.dry_run, _now())
    if request.dry_run:
        with Archive.open(root, read_only=True) as archive:
            _Restorer(config, archive, request, result, should_stop).run(select(archive, request))
        return result
    with (
        open_for_writing(root, "imapsync-decl archive restore") as archive,
        structlog.contextvars.bound_contextvars(run_id=result.run_id),
    ):
        items = select(archive, request)  # an unknown id or user ends it before the run
        archive.index.begin_run(result.run_id, "restore")
        try:
            _Restorer(config, archive, request, result, should_stop).run(items)
        finally:
            result.finished_at = _now()
            archive.index.finish_run(result.run_id, result.status, result.to_json())
    return result


def select(archive: Archive, request: RestoreRequest) -> list[RestoreItem]:
    """The placements ``request`` names; an unknown id is exit 10, naming it."""
    index = archive.index
    if request.ids:
        items = index.placements_by_id(request.ids)
        unknown = sorted(set(request.ids) - {i.id for i in items})
        if unknown:
            raise UsageError(
                f"no placement with id {', '.join(str(i) for i in unknown)} in the archive"
                " (restore takes the `id` of `archive search` hits)"
            )
        return items
    assert request.user is not None
    if index.find_user(request.user) is None:
        raise UsageError(f"no archive user {request.user!r} in the archive")
    if request.query is None:
        return index.placements_of_user(request.user, request.folder)
    return index.placements_by_id(_search_ids(archive, request))


def sizes_on_a_server(body: bytes) -> set[int]:
    """The RFC822.SIZE a server may give these bytes: their length, or (servers that
    store lines with bare LF, such as Dovecot) their length with every line ending CRLF."""
    return {len(body), len(body) + body.count(b"\n") - body.count(b"\r\n")}


def _search_ids(archive: Archive, request: RestoreRequest) -> list[int]:
    if not (archive.root / SEARCH_NAME).exists():
        raise UsageError(
            f"the archive {archive.root} has no search index, which --query needs;"
            " run `imapsync-decl archive rebuild-search`"
        )
    assert request.query is not None
    query = parse_query(request.query)
    scope = Scope(user=request.user, folder=request.folder)
    ids: list[int] = []
    with SearchIndex.open(archive.root, create=False) as search:
        while True:
            hits = find(search, query, scope, sort="date", limit=MAX_LIMIT, offset=len(ids))
            ids.extend(h.id for h in hits)
            if len(hits) < MAX_LIMIT:
                return ids


class _Restorer:
    """One restore run over an open archive."""

    def __init__(
        self,
        config: Config,
        archive: Archive,
        request: RestoreRequest,
        result: RestoreResult,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.config = config
        self.archive = archive
        self.request = request
        self.result = result
        self.should_stop = should_stop or (lambda: False)
        loaded = config.profile(request.profile)
        assert loaded is not None
        self.profile = loaded
        self.server = source_server(loaded.doc.server)

    def run(self, items: Sequence[RestoreItem]) -> None:
        groups: dict[tuple[str, str], tuple[Mailbox, list[RestoreItem]]] = {}
        for item in items:
            mailbox = self._mailbox_for(item)
            if mailbox is None:
                self._unreached(item)
                continue
            groups.setdefault((mailbox.archive_user, mailbox.login), (mailbox, []))[1].append(item)
        for mailbox, items in groups.values():
            if self.should_stop():
                break
            self._mailbox(mailbox, items)
        log.info(
            "restore_finished", dry_run=self.request.dry_run, **self.result.to_json()["totals"]
        )

    def _mailbox_for(self, item: RestoreItem) -> Mailbox | None:
        user = self.request.to_user or item.user
        found = [
            m for m in self.config.mailboxes.get(self.request.profile, ()) if m.archive_user == user
        ]
        if self.request.to_user is not None:
            return found[0] if found else None
        exact = [m for m in found if m.archive_folder == item.archive_folder]
        chosen = exact or found
        return chosen[0] if chosen else None

    def _target(self, item: RestoreItem) -> str:
        return (self.request.to_folder or item.folder).strip("/")

    def _unreached(self, item: RestoreItem) -> None:
        user = self.request.to_user or item.user
        error = f"user {user!r} is not reached by profile {self.request.profile!r}"
        if error not in self.result.errors:
            self.result.errors.append(error)
            log.warning("restore_failed", user=item.user, error=error)
        self._outcome(item, None, FAILED, error=error)

    def _outcome(
        self,
        item: RestoreItem,
        mailbox: Mailbox | None,
        outcome: str,
        *,
        uid: int | None = None,
        error: str | None = None,
    ) -> None:
        target = self._target(item)
        count = self.result.count(item, target, mailbox)
        setattr(count, outcome, getattr(count, outcome) + 1)
        self.result.messages.append(
            {
                "id": item.id,
                "user": item.user,
                "folder": item.folder,
                "target": target,
                "sha256": item.sha256,
                "outcome": outcome,
                "uid": uid,
                "error": error,
            }
        )

    def _mailbox(self, mailbox: Mailbox, items: list[RestoreItem]) -> None:
        done: set[int] = set()
        with structlog.contextvars.bound_contextvars(
            profile=mailbox.profile, mailbox=mailbox.login
        ):
            try:
                endpoint = imap_endpoint(self.profile.doc.server, self.profile.origin.base_dir)
                with ImapSession.connect(
                    endpoint, mailbox=mailbox.login, should_stop=self.should_stop
                ) as session:
                    session.login(imap_login(mailbox.credentials))
                    folders = {f.path: f for f in session.list_folders()}
                    appender = None if self.request.dry_run else session.open_for_restore()
                    by_target: dict[str, list[RestoreItem]] = {}
                    for item in items:
                        by_target.setdefault(self._target(item), []).append(item)
                    for target, wanted in by_target.items():
                        if self.should_stop():
                            break
                        try:
                            self._folder(session, appender, mailbox, folders, target, wanted, done)
                        except (UnsafeValue, ProtocolError) as exc:
                            self._folder_failed(mailbox, target, wanted, done, str(exc))
            except (ImapError, SecretError) as exc:
                error = str(exc)
                self.result.errors.append(f"{mailbox.login}: {error}")
                log.warning("restore_failed", error=error)
                for item in items:
                    if item.id not in done:
                        self._outcome(item, mailbox, FAILED, error=error)

    def _folder_failed(
        self,
        mailbox: Mailbox,
        target: str,
        items: Sequence[RestoreItem],
        done: set[int],
        error: str,
    ) -> None:
        self.result.errors.append(f"{mailbox.login}: {target}: {error}")
        log.warning("restore_failed", folder=target, error=error)
        for item in items:
            if item.id not in done:
                self._outcome(item, mailbox, FAILED, error=error)
                done.add(item.id)

    def _folder(
        self,
        session: ImapSession,
        appender: Appender | None,
        mailbox: Mailbox,
        folders: dict[str, Any],
        target: str,
        items: Sequence[RestoreItem],
        done: set[int],
    ) -> None:
        known_sha, known_ids = self._held(session, mailbox, folders.get(target), target)
        wire = folders[target].wire_name if target in folders else None
        for item in items:
            if self.should_stop():
                return
            try:
                body = self.archive.blobs.get(item.sha256)
                if hashlib.sha256(body).hexdigest() != item.sha256:
                    raise BlobDamaged(item.sha256, f"blob {item.sha256} does not match its SHA-256")
            except BlobError as exc:
                self.result.damaged += 1
                self._outcome(item, mailbox, FAILED, error=f"not restored: {exc}")
                done.add(item.id)
                continue
            same_id = item.message_id is not None and any(
                (item.message_id, size) in known_ids for size in sizes_on_a_server(body)
            )
            if item.sha256 in known_sha or same_id:
                self._outcome(item, mailbox, ALREADY_THERE)
            elif appender is None:
                self._outcome(item, mailbox, RESTORED)  # dry run: would be restored
            else:
                if wire is None:  # a failure here fails the folder
                    wire = appender.wire_name(target)
                    appender.create_folder(wire)
                    self.result.count(item, target, mailbox).created = True
                    log.info("folder_created", folder=target, wire_name=wire)
                try:
                    uid = appender.append(wire, body, item.flags, item.internal_date)
                except ProtocolError as exc:
                    self._outcome(item, mailbox, FAILED, error=str(exc))
                    done.add(item.id)
                    continue
                self._outcome(item, mailbox, RESTORED, uid=uid)
                log.info(
                    "message_restored", folder=target, blob=item.sha256, uid=uid, placement=item.id
                )
            known_sha.add(item.sha256)
            if item.message_id is not None:
                known_ids.update((item.message_id, size) for size in sizes_on_a_server(body))
            done.add(item.id)

    def _held(
        self, session: ImapSession, mailbox: Mailbox, info: Any, target: str
    ) -> tuple[set[str], set[tuple[str, int]]]:
        """The SHA-256 and the (Message-ID, size) of what the target folder holds."""
        if info is None:
            return set(), set()
        state = session.examine(info)
        uids = session.search_uids()
        index: Index = self.archive.index
        folder_id = index.find_folder(
            mailbox.archive_user,
            mailbox.archive_folder,
            target,
            login=mailbox.login,
            server=self.server,
        )
        archived = index.placements_of(folder_id, state.uidvalidity) if folder_id else {}
        known_sha = {archived[u] for u in uids if u in archived}
        known_ids: set[tuple[str, int]] = set()
        for header, size in session.fetch_message_ids(uids).values():
            message_id = parse_headers(header).message_id
            if message_id:
                known_ids.add((message_id, size))
        return known_sha, known_ids
