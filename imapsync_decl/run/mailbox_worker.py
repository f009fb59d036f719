"""A mailbox worker: archives the mailboxes ``apply`` hands it, in a process of its own.

Fetching, hashing, compressing and writing blobs is CPU work in Python and C; in one
process its threads share one GIL, so ``apply`` runs each mailbox's part of it here
(started as ``python -m imapsync_decl.run.worker_main``, one IMAP connection per worker),
and several workers use every core. A worker never touches the index: it reads
its jobs and writes its events as frames (``run/worker_wire.py``) on stdin and
stdout, and ``apply``, the index's one writer, records each batch it reports.

Per folder: EXAMINE, the UIDVALIDITY the plan expects (else the folder is reported
stale and left alone), RFC822.SIZE of the UIDs asked for, then the messages in
batches; each batch is stored on a thread (a ``Pipeline``) while the next is
fetched, and reported only once its blobs are durable, with the search documents
of its large messages when the job asks (extracted from the bytes in hand, which
spares the search indexer reading those blobs back). A dropped connection is
retried like ``apply`` does (the UIDs reported already are not fetched again).

SIGINT and SIGTERM stop the worker after the batch at hand; so does the end of
``apply`` (its stdin ends, its pipe breaks, or it is no longer the parent), so that
a killed ``apply`` leaves no worker writing behind it. Nothing is written to stdout
but frames: log events go to ``apply`` as :class:`Log` frames.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, MutableMapping
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from imapsync_decl.fs import unwritable_reason
from imapsync_decl.imap.errors import ConnectionLost, ImapError
from imapsync_decl.imap.facts import FetchedMessage, FolderInfo
from imapsync_decl.imap.session import ImapSession
from imapsync_decl.imap.settings import Login
from imapsync_decl.run import search_documents
from imapsync_decl.run.storing import Pipeline, StoredMessage, batches, store_batch
from imapsync_decl.run.worker_wire import (
    Batch,
    FolderFailed,
    FolderFetched,
    FolderJob,
    FrameReader,
    Log,
    MailboxDone,
    MailboxFailed,
    MailboxJob,
    Stopped,
    write_frame,
)
from imapsync_decl.secrets import Secret, SecretError
from imapsync_decl.store.blobs import BlobStore

log = structlog.get_logger(__name__)

_Stored = tuple[int, list[StoredMessage] | None, bytes | None]  # folder, batch, documents
_Writer = Pipeline[tuple[int, list[FetchedMessage]], _Stored]


class _Stop:
    """Set by SIGINT or SIGTERM, or when ``apply`` is gone."""

    def __init__(self, parent: int) -> None:
        self.parent = parent
        self.signal: int | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal = signum

    def __bool__(self) -> bool:
        return self.signal is not None or os.getppid() != self.parent


class _Channel:
    """The frames to ``apply``, from any thread of the worker."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()

    def send(self, message: object) -> None:
        with self._lock:
            write_frame(self.fd, message)


class _Forward:
    """A structlog processor that hands every event to ``apply`` and drops it here."""

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        name = str(event.pop("event", ""))
        if event.pop("exc_info", None):
            event["exception"] = traceback.format_exc()
        fields = {
            k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
            for k, v in event.items()
        }
        self.channel.send(Log(method, name, fields))
        raise structlog.DropEvent


class MailboxWorker:
    """Runs the jobs of one worker process."""

    def __init__(self, channel: _Channel, stop: Callable[[], bool]) -> None:
        self.channel = channel
        self.stop = stop
        self._stores: dict[Path, BlobStore] = {}

    def run(self, job: MailboxJob) -> None:
        """One mailbox; its last event is MailboxDone, MailboxFailed or Stopped."""
        try:
            if self._archive(job):
                self.channel.send(Stopped())
        except (ImapError, SecretError) as exc:
            log.warning("mailbox_failed", error=str(exc))
            self.channel.send(MailboxFailed("imap", str(exc)))
        except Exception as exc:  # the per-mailbox boundary, as in apply itself
            if isinstance(exc, OSError) and unwritable_reason(exc) is not None:
                self.channel.send(MailboxFailed("unwritable", str(exc), exc.errno, _filename(exc)))
                return
            log.error("mailbox_failed", error=f"unexpected error: {exc!r}", exc_info=True)
            self.channel.send(MailboxFailed("unexpected", f"unexpected error: {exc!r}"))

    def _archive(self, job: MailboxJob) -> bool:
        """True when stopped before the end."""
        blobs = self._stores.get(job.archive)
        if blobs is None:
            blobs = BlobStore(
                job.archive, parallel=job.parallel_writes, stale_before=job.stale_before
            )
            self._stores[job.archive] = blobs
        reported: list[set[int]] = [set() for _ in job.folders]
        finished: set[int] = set()
        attempt = 0
        while True:
            try:
                session = ImapSession.connect(
                    job.endpoint, mailbox=job.mailbox, should_stop=self.stop
                )
                try:
                    session.login(
                        Login(job.mechanism, job.username, job.authzid, Secret(job.password))
                    )
                    # One pipeline for the whole connection: the next batch (of this folder
                    # or the next) is fetched while the ones before are stored, on two lanes
                    # when there are cores to spare; they are reported in order.
                    with Pipeline(
                        functools.partial(self._store, blobs, job.extract_text),
                        functools.partial(self._report, reported),
                        lanes=2 if job.parallel_writes else 1,
                    ) as writer:
                        for n, folder in enumerate(job.folders):
                            if self.stop():
                                return True
                            if n not in finished:
                                self._folder(session, job, n, folder, reported[n], writer)
                                if self.stop():
                                    return True
                                finished.add(n)
                finally:
                    stats = session.stats
                    figures = {
                        "fetch_commands": stats.fetch_commands,
                        "messages": stats.messages_fetched,
                        "bytes": stats.bytes_fetched,
                        "largest_fetch_bytes": stats.largest_fetch_bytes,
                        "worker_pid": os.getpid(),
                    }
                    session.logout()
                self.channel.send(MailboxDone(figures))
                return False
            except ConnectionLost as exc:
                if self.stop():
                    return True
                attempt += 1
                if attempt > job.retries:
                    raise
                delay = job.backoff_seconds * 2 ** (attempt - 1)
                log.warning("connection_lost", error=str(exc), retry_in=delay, attempt=attempt)
                time.sleep(delay)

    def _store(
        self, blobs: BlobStore, extract_text: bool, item: tuple[int, list[FetchedMessage]]
    ) -> _Stored:
        """A batch stored (on a lane of the pipeline), with the search documents of its
        large messages when asked (``run.search_documents``), made from the bytes in hand
        once the blobs are durable; an empty batch marks its folder's end."""
        n, batch = item
        if not batch:
            return n, None, None
        stored = store_batch(blobs, batch)
        documents = None
        if extract_text:
            documents = search_documents.pack(
                [(s.sha256, m.body, s.internal_date) for s, m in zip(stored, batch, strict=True)]
            )
        return n, stored, documents

    def _report(
        self,
        reported: list[set[int]],
        item: _Stored,
    ) -> None:
        """In the order submitted: a stored batch, or its folder's end (after all of its
        batches)."""
        n, stored, documents = item
        if stored is None:
            self.channel.send(FolderFetched(n))
            return
        self.channel.send(Batch(n, stored, documents))
        reported[n].update(m.uid for m in stored)

    def _folder(
        self,
        session: ImapSession,
        job: MailboxJob,
        n: int,
        folder: FolderJob,
        reported: set[int],
        writer: _Writer,
    ) -> None:
        with structlog.contextvars.bound_contextvars(
            folder=folder.path, uidvalidity=folder.uidvalidity
        ):
            try:
                state = session.examine(
                    FolderInfo(folder.path, folder.wire_name, None, frozenset())
                )
            except ImapError as exc:
                if isinstance(exc, ConnectionLost):
                    raise
                self._fail(writer, FolderFailed(n, str(exc), stale=False))
                return
            if state.uidvalidity != folder.uidvalidity:
                error = (
                    f"UIDVALIDITY of {folder.path} is {state.uidvalidity}, the plan expected "
                    f"{folder.uidvalidity}; run `plan` again"
                )
                self._fail(writer, FolderFailed(n, error, stale=True))
                return
            todo = [uid for uid in folder.uids if uid not in reported]
            sizes = session.fetch_sizes(todo) if todo else {}
            messages = session.fetch_messages(
                todo, max_count=job.max_count, max_bytes=job.max_bytes, sizes=sizes
            )
            for batch in batches(messages, job.max_count, job.max_bytes):
                writer.submit((n, batch))
                if self.stop():
                    return
            writer.submit((n, []))  # done, once its batches are stored and reported

    def _fail(self, writer: _Writer, failure: FolderFailed) -> None:
        """Report a folder's failure after what the writer holds (frames keep their order)."""
        writer.wait()
        self.channel.send(failure)


def _filename(exc: OSError) -> str | None:
    return str(exc.filename) if exc.filename is not None else None


def main() -> int:
    # Frames only on the real stdout; anything printed by mistake goes to stderr.
    out = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    stop = _Stop(os.getppid())
    signal.signal(signal.SIGINT, stop.handler)
    signal.signal(signal.SIGTERM, stop.handler)
    channel = _Channel(out)
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, _Forward(channel)],
        cache_logger_on_first_use=True,
    )
    worker = MailboxWorker(channel, stop.__bool__)
    reader = FrameReader(0)
    try:
        while not stop:
            job = reader.read(timeout=0.5)
            if job is None:
                continue
            if not isinstance(job, MailboxJob):
                sys.stderr.write("mailbox worker: not a job\n")
                return 2
            worker.run(job)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass
    # Nothing is left to clean up (blobs are durable, the session logged out): skip the
    # interpreter's teardown, which apply would wait for.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
