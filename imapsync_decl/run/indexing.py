"""Search indexing during a run, in a worker process beside the archiving.

The search index is derived data: nothing that goes wrong with it (a full disk, a
damaged ``search.sqlite``, a worker that dies) may fail or undo archiving.
:class:`SearchIndexing` starts the worker of ``run.search_worker`` when the first
batch of a run is committed, wakes it after each further batch, and at the end of
the run asks it to finish and waits for its report. The worker reads only what is
committed (its own connection to the index), so a search document never comes
before its placement. A run that archived nothing catches up in this process
(usually nothing to do). A failure is logged (``search_index_failed``) and recorded
in the run's protocol; the messages stay unindexed until the next ``apply`` or
``archive rebuild-search`` indexes them.
"""

from __future__ import annotations

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
        self._lock = threading.Lock()

    def committed(self) -> None:
        """A batch of placements is committed: start the worker, or wake it."""
        with self._lock:
            if not self.enabled or self.error is not None:
                return
            try:
                if self._worker is None:
                    self._worker = subprocess.Popen(
                        worker_command(self.root),
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                    )
                else:
                    _send(self._worker, b"more\n")
            except OSError as exc:
                self._failed(f"the search indexer did not start: {exc}")

    def finish(self, blobs: BlobStorage, should_stop: Callable[[], bool]) -> None:
        """The run's archiving is over: let the worker index what is left (or, without a
        worker, catch up here) and take its report."""
        with self._lock:
            if not self.enabled or self.error is not None:
                return
            if self._worker is None:
                self._catch_up_here(blobs, should_stop)
                return
            started = time.monotonic()
            _send(self._worker, b"stop\n" if should_stop() else b"finish\n")
            self._report(should_stop)
            self.waited += time.monotonic() - started

    def close(self) -> None:
        """Stop a worker still running (the run ended early), after its batch at hand."""
        with self._lock:
            if self._worker is not None:
                _send(self._worker, b"stop\n")
                self._report(lambda: True)

    def to_json(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "indexed": self.indexed,
            "seconds": round(self.seconds, 3),
            "waited_seconds": round(self.waited, 3),
            "error": self.error,
        }

    # --- the worker ------------------------------------------------------------------------

    def _report(self, should_stop: Callable[[], bool]) -> None:
        """Wait for the worker's report; a stop asked for meanwhile is passed on, and
        a worker that does not end within STOP_WAIT_SECONDS of it is killed."""
        worker = self._worker
        assert worker is not None
        assert worker.stdout is not None
        self._worker = None
        stopped_at: float | None = None
        while True:
            try:
                worker.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if stopped_at is None and should_stop():
                stopped_at = time.monotonic()
                _send(worker, b"stop\n")
            if stopped_at is not None and time.monotonic() - stopped_at > STOP_WAIT_SECONDS:
                worker.kill()
                worker.wait()
                break
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


def _send(worker: subprocess.Popen[bytes], command: bytes) -> None:
    """A command to the worker; one that is gone is not an error here (its exit status
    and the missing report tell what happened)."""
    if worker.stdin is not None and not worker.stdin.closed:
        with contextlib.suppress(OSError):
            worker.stdin.write(command)
            worker.stdin.flush()
