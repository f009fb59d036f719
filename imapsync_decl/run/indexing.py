"""Search indexing during a run: each committed batch indexed, the rest caught up at the end.

The search index is derived data: nothing that goes wrong with it (a full disk, a
damaged ``search.sqlite``) may fail or undo archiving. :class:`SearchIndexing`
opens the archive's search index once, on first use; a failure is logged
(``search_index_failed``), indexing stops for the run, and the messages stay
unindexed until the next ``apply`` or ``archive rebuild-search`` catches them up.
It is shared by the executor's threads and serialises them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import structlog

from imapsync_decl.errors import ImapsyncError
from imapsync_decl.store.interfaces import BlobStorage
from imapsync_decl.store.search.database import SearchIndex
from imapsync_decl.store.search.indexer import catch_up, index_messages

log = structlog.get_logger(__name__)

_FAILURES = (sqlite3.Error, OSError, ImapsyncError, MemoryError)


class SearchIndexing:
    """Indexes what a run archives into ``<root>/search.sqlite``."""

    def __init__(self, root: Path, *, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self.indexed = 0
        self.seconds = 0.0
        self.error: str | None = None
        self._search: SearchIndex | None = None
        self._lock = threading.Lock()

    def add(self, messages: Sequence[tuple[str, bytes, datetime | None]]) -> None:
        """Index (sha256, bytes, internal date) of messages whose placements are committed."""
        if messages:
            self._guarded(lambda search: index_messages(search, messages))

    def catch_up(self, blobs: BlobStorage, should_stop: Callable[[], bool]) -> None:
        """Index every archived message without a document yet, from its blob."""

        def work(search: SearchIndex) -> int:
            done = catch_up(search, blobs, should_stop=should_stop)
            for sha in done.skipped:
                log.warning("search_index_skipped", blob=sha, error="damaged or missing blob")
            log.info("search_indexed", count=done.indexed, skipped=len(done.skipped))
            return done.indexed

        self._guarded(work)

    def _guarded(self, work: Callable[[SearchIndex], int]) -> None:
        with self._lock:
            if not self.enabled or self.error is not None:
                return
            started = time.monotonic()
            try:
                if self._search is None:
                    self._search = SearchIndex.open(self.root)
                self.indexed += work(self._search)
            except _FAILURES as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                log.error("search_index_failed", error=self.error)
                self._close()
            finally:
                self.seconds += time.monotonic() - started

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._search is not None:
            with contextlib.suppress(sqlite3.Error):
                self._search.close()
            self._search = None

    def to_json(self) -> dict[str, object]:
        return {
            "indexed": self.indexed,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }
