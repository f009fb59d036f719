"""The search indexer of an ``apply``: a process of its own beside the archiving.

Extracting text and feeding FTS5 is CPU-bound; in the archiving process it would hold
the GIL that fetching, hashing and compressing need. So ``apply`` starts this worker
(``python -m imapsync_decl.run.search_worker ARCHIVE``). Commands come on stdin, one
per line, and one JSON report comes back on stdout:

* ``docs N``, then N bytes: the search documents of the large messages of a batch
  whose placements are committed, extracted by the mailbox worker from the bytes it
  fetched (``run.search_documents``); the worker adds them as they are, with no blob
  read back.
* ``more``: new messages were committed; index those below
  ``search_documents.MIN_BYTES`` from their blobs, claimed from the index (the large
  ones come as documents, or are left to ``finish``).
* ``finish``: archiving is over; add the documents still pending, then index every
  message left from the start of the index (large messages archived in ``apply``
  itself, documents ``apply`` dropped because this worker was behind, messages an
  earlier, interrupted run left unindexed), report, exit.
* ``stop``, or the end of stdin without ``finish`` (the archiving process was
  interrupted or killed): exit after the batch at hand, reporting what was done.

The documents it holds are bounded (``MAX_PENDING``): once that much waits, it reads
no more until it has added some, so the pipe fills and ``apply`` drops documents
rather than wait (the final catch-up indexes those from their blobs). A document
that does not unpickle is dropped the same way. Only ``apply`` holds the other end of
the pipe, so pickle is safe here, as in ``run.worker_wire``.

The worker writes only ``search.sqlite``, derived data, in one transaction per
batch: killed at any point, it leaves at worst messages not indexed yet, which the
next ``apply`` or ``archive rebuild-search`` indexes. Ctrl-C reaches the whole
process group; the worker ignores SIGINT and lets the archiving process decide. It
runs at the archiving's priority: at a lower one (nice 10) it ran only in the CPU time
the archiving left and most of it came after the archiving, on one core, which made
the whole run longer (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from imapsync_decl.errors import ImapsyncError
from imapsync_decl.run.heap import bound_heap
from imapsync_decl.run.search_documents import MIN_BYTES, unpack
from imapsync_decl.store.blobs import BlobStore
from imapsync_decl.store.search.database import Document, SearchIndex
from imapsync_decl.store.search.indexer import catch_up

POLL_SECONDS = 0.5
MAX_SKIPPED_REPORTED = 1000
MAX_PENDING = 8 * 1024 * 1024
"""Bytes of documents read and not added yet, at most (see the module)."""
MAX_DOCUMENTS = 64 * 1024 * 1024
"""A ``docs`` command announcing more than this is malformed: the worker stops."""
_COMMAND_LIMIT = 4096
_READ = 1024 * 1024


class _Commands:
    """The commands on stdin, read without waiting longer than asked."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.expect: int | None = None  # bytes of a ``docs`` payload still to come
        self.documents: list[bytes] = []  # payloads read, not taken yet
        self.pending = 0  # their bytes
        self.more = False
        self.finish = False
        self.stop = False

    @property
    def stopped(self) -> bool:
        return self.stop

    def take(self) -> tuple[list[bytes], bool]:
        """The payloads read so far and whether a ``more`` came since the last take."""
        documents, more = self.documents, self.more
        self.documents, self.pending, self.more = [], 0, False
        return documents, more

    def poll(self, timeout: float) -> bool:
        """Read the commands that are there, waiting up to ``timeout`` seconds for the
        first; True when the work is to stop now. Reads nothing while MAX_PENDING bytes
        of documents wait to be taken."""
        if self.stop:
            return True
        if self.pending >= MAX_PENDING:
            return False
        ready, _, _ = select.select([self.fd], [], [], timeout)
        while ready and not self.stop and self.pending < MAX_PENDING:
            data = os.read(self.fd, _READ)
            if not data:  # the archiving process is gone (it keeps stdin open until the end)
                self.stop = True
                break
            self.buffer += data
            self._parse()
            ready, _, _ = select.select([self.fd], [], [], 0)
        return self.stop

    def _parse(self) -> None:
        while not self.stop:
            if self.expect is not None:
                if len(self.buffer) < self.expect:
                    return
                payload, self.buffer = self.buffer[: self.expect], self.buffer[self.expect :]
                self.expect = None
                self.documents.append(payload)
                self.pending += len(payload)
                continue
            line, newline, rest = self.buffer.partition(b"\n")
            if not newline:
                if len(self.buffer) > _COMMAND_LIMIT:
                    self.stop = True  # not a command: the stream is broken
                return
            self.buffer = rest
            word, _, argument = line.strip().partition(b" ")
            if word == b"docs":
                size = int(argument) if argument.isdigit() else -1
                if not 0 <= size <= MAX_DOCUMENTS:
                    self.stop = True
                    return
                self.expect = size
            self.more = self.more or word == b"more"
            self.finish = self.finish or word == b"finish"
            self.stop = self.stop or word == b"stop"


def run(archive: Path, commands: _Commands) -> dict[str, object]:
    """Index as the commands say; the report (indexed, documents, skipped, seconds,
    cpu_seconds, error)."""
    started = time.monotonic()
    indexed = 0
    documents = 0  # of those, added as the mailbox workers made them
    skipped: list[str] = []
    error: str | None = None

    def should_stop() -> bool:  # asked between batches
        return commands.poll(0)

    try:
        with SearchIndex.open(archive) as search:
            blobs = BlobStore(archive)
            after = 0
            while not commands.stopped:
                finishing = commands.finish
                payloads, more = commands.take()
                added = _add(search, payloads)
                indexed += added
                documents += added
                if finishing or more:
                    # On the way, the messages whose documents do not come with their
                    # batch; once finishing, everything from the start: documents
                    # dropped on the way, and what earlier runs left unindexed.
                    done = catch_up(
                        search,
                        blobs,
                        after=0 if finishing else after,
                        should_stop=should_stop,
                        smaller_than=None if finishing else MIN_BYTES,
                    )
                    indexed += done.indexed
                    skipped += done.skipped
                    after = max(after, done.after)
                if finishing:
                    break
                commands.poll(POLL_SECONDS)
    except (sqlite3.Error, OSError, ImapsyncError, MemoryError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return {
        "indexed": indexed,
        "documents": documents,
        "skipped": sorted(set(skipped))[:MAX_SKIPPED_REPORTED],
        "seconds": round(time.monotonic() - started, 3),
        "cpu_seconds": round(time.process_time(), 3),
        "error": error,
    }


def _add(search: SearchIndex, payloads: list[bytes]) -> int:
    """Add the documents of ``payloads``, in one transaction; how many were new."""
    documents: list[tuple[str, Document]] = []
    for payload in payloads:
        unpacked = unpack(payload)
        if unpacked is not None:
            documents.extend(unpacked)
    return search.add(documents) if documents else 0


def main(argv: Sequence[str] | None = None) -> int:
    bound_heap()
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m imapsync_decl.run.search_worker ARCHIVE", file=sys.stderr)
        return 10
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    report = run(Path(args[0]), _Commands(sys.stdin.fileno()))
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
