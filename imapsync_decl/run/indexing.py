"""Search indexing during a run, in a worker process beside the archiving.

The search index is derived data: nothing that goes wrong with it (a full disk, a
damaged ``search.sqlite``, a worker that dies) may fail or undo archiving.
:class:`SearchIndexing` starts the worker of ``run.search_worker`` when the first
batch of a run is committed and, after each batch, hands it the search documents of
the batch's large messages (extracted by the mailbox worker from the bytes it
fetched) and wakes it to index the others from their blobs.
At the end of the run it asks the worker to finish and waits for its report.
Documents go to the worker only once their batch is committed, and the worker reads
only what is committed (its own connection to the index), so a search document
never comes before its placement. ``apply`` never waits for the worker on the way:
documents it is too far behind for are dropped, and its final catch-up indexes those
messages from their blobs. A run that archived nothing catches up in this process
(usually nothing to do). A failure is logged (``search_index_failed``) and recorded
in the run's protocol; the messages stay unindexed until the next ``apply`` or
``archive rebuild-search`` indexes them.
"""

from __future__ import annotations

import collections
import contextlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from imapsync_decl.errors import ImapsyncError
from imapsync_decl.store.interfaces import BlobStorage
from imapsync_decl.store.search.database import SearchIndex
from imapsync_decl.store.search.indexer import catch_up

log = structlog.get_logger(__name__)

_FAILURES = (sqlite3.Error, OSError, ImapsyncError, MemoryError)
STOP_WAIT_SECONDS = 10.0
"""How long a stopped run waits for the worker's batch at hand before killing it."""

_REPORT_LIMIT = 1024 * 1024
MAX_QUEUED = 8 * 1024 * 1024
"""Bytes of documents waiting for the worker, at most (see ``_Sender``)."""


def worker_command(root: Path) -> list[str]:
    """The command line of the worker for the archive at ``root``."""
    return [sys.executable, "-m", "imapsync_decl.run.search_worker", str(root)]


class SearchIndexing:
    """Indexes what a run archives into ``<root>/search.sqlite``."""

    def __init__(self, root: Path, *, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self.indexed = 0
        self.seconds = 0.0
        self.waited = 0.0
        self.error: str | None = None
        self._worker: subprocess.Popen[bytes] | None = None
        self._sender: _Sender | None = None
        self.documents = 0  # of those indexed, how many as the mailbox workers made them
        self.dropped = 0  # batches of documents dropped because the worker was behind
        self._lock = threading.Lock()

    @property
    def accepting(self) -> bool:
        """Whether documents are wanted: mailbox workers extract them only then."""
        return self.enabled and self.error is None

    def committed(self, documents: bytes | None = None) -> None:
        """A batch of placements is committed: start the worker, or wake it to index the
        new messages; the batch's ``documents`` (``run.search_documents.pack``: those
        of its large messages) go to it first."""
        with self._lock:
            if not self.accepting:
                return
            if self._sender is None:
                try:
                    self._worker = subprocess.Popen(
                        worker_command(self.root),
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                    )
                except OSError as exc:
                    self._failed(f"the search indexer did not start: {exc}")
                    return
                self._sender = _Sender(self._worker)
            if documents is not None:
                self._sender.documents(documents)
            self._sender.command(b"more")

    def finish(self, blobs: BlobStorage, should_stop: Callable[[], bool]) -> None:
        """The run's archiving is over: let the worker index what is left (or, without a
        worker, catch up here) and take its report."""
        with self._lock:
            if not self.accepting:
                return
            if self._sender is None:
                self._catch_up_here(blobs, should_stop)
                return
            started = time.monotonic()
            if should_stop():
                self._sender.stop()
            else:
                self._sender.command(b"finish")
            self._report(should_stop)
            self.waited += time.monotonic() - started

    def close(self) -> None:
        """Stop a worker still running (the run ended early), after its batch at hand."""
        with self._lock:
            if self._sender is not None:
                self._sender.stop()
                self._report(lambda: True)

    def to_json(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "indexed": self.indexed,
            "seconds": round(self.seconds, 3),
            "waited_seconds": round(self.waited, 3),
            "documents": self.documents,
            "dropped_batches": self.dropped,
            "error": self.error,
        }

    # --- the worker ------------------------------------------------------------------------

    def _report(self, should_stop: Callable[[], bool]) -> None:
        """Wait for the worker's report; a stop asked for meanwhile is passed on, and
        a worker that does not end within STOP_WAIT_SECONDS of it is killed."""
        worker, sender = self._worker, self._sender
        assert worker is not None
        assert sender is not None
        assert worker.stdout is not None
        self._worker = self._sender = None
        stopped_at: float | None = None
        while True:
            try:
                worker.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if stopped_at is None and should_stop():
                stopped_at = time.monotonic()
                sender.stop()
            if stopped_at is not None and time.monotonic() - stopped_at > STOP_WAIT_SECONDS:
                worker.kill()
                worker.wait()
                break
        sender.close()
        self.dropped += sender.dropped
        text = worker.stdout.read(_REPORT_LIMIT)
        for pipe in (worker.stdin, worker.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        try:
            report = json.loads(text)
            indexed, seconds, error = report["indexed"], report["seconds"], report["error"]
            skipped = [str(sha) for sha in report["skipped"]]
        except (ValueError, KeyError, TypeError):
            self._failed(f"the search indexer ended without a report (exit {worker.returncode})")
            return
        self.seconds += float(seconds)
        with contextlib.suppress(ValueError, TypeError):
            self.documents += int(report.get("documents", 0))
        self._indexed(int(indexed), skipped, None if error is None else str(error))

    def _catch_up_here(self, blobs: BlobStorage, should_stop: Callable[[], bool]) -> None:
        started = time.monotonic()
        try:
            with SearchIndex.open(self.root) as search:
                done = catch_up(search, blobs, should_stop=should_stop)
            self._indexed(done.indexed, done.skipped)
        except _FAILURES as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
        finally:
            self.seconds += time.monotonic() - started

    def _indexed(self, count: int, skipped: list[str], error: str | None = None) -> None:
        """What an indexing pass did: ``count`` messages indexed, the blobs it could not
        read, and the error that ended it, if any."""
        self.indexed += count
        for sha in skipped:
            log.warning("search_index_skipped", blob=sha, error="damaged or missing blob")
        if error is not None:
            self._failed(error)
        else:
            log.info("search_indexed", count=count, skipped=len(skipped))

    def _failed(self, error: str) -> None:
        self.error = error
        log.error("search_index_failed", error=error)


class _Sender:
    """Writes to the worker's stdin, in order, on a thread of its own, so that ``apply``
    never waits for the indexer: documents that would make more than ``MAX_QUEUED``
    bytes wait are dropped (counted in ``dropped``), and the worker's final catch-up
    indexes those messages from their blobs. Commands are never dropped. A worker that
    is gone is not an error here (its exit status and the missing report tell it)."""

    def __init__(self, worker: subprocess.Popen[bytes]) -> None:
        assert worker.stdin is not None
        self._pipe = worker.stdin
        self._items: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._queued = 0  # bytes of documents in _items
        self._closed = False
        self._changed = threading.Condition()
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="search-sender", daemon=True)
        self._thread.start()

    def command(self, word: bytes) -> None:
        self._put(word + b"\n", b"")

    def documents(self, payload: bytes) -> None:
        with self._changed:
            if self._queued + len(payload) > MAX_QUEUED:
                self.dropped += 1
                return
        self._put(b"docs %d\n" % len(payload), payload)

    def stop(self) -> None:
        """``stop``, before anything still waiting (which is dropped)."""
        with self._changed:
            self.dropped += sum(1 for _, payload in self._items if payload)
            self._items.clear()
            self._queued = 0
        self.command(b"stop")

    def close(self) -> None:
        """Write nothing more; wait briefly for the thread (a worker that is gone broke
        its pipe, one that was killed too)."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join(timeout=1.0)

    def _put(self, head: bytes, payload: bytes) -> None:
        with self._changed:
            if self._closed:
                return
            self._items.append((head, payload))
            self._queued += len(payload)
            self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._items and not self._closed:
                    self._changed.wait()
                if not self._items:
                    return
                head, payload = self._items.popleft()
                self._queued -= len(payload)
            try:
                self._pipe.write(head)
                if payload:
                    self._pipe.write(payload)
                self._pipe.flush()
            except (OSError, ValueError):  # the worker is gone (or its pipe closed)
                return
