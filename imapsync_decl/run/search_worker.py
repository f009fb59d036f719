"""The search indexer of an ``apply``: a process of its own beside the archiving.

Extracting text and feeding FTS5 is CPU-bound Python; in the archiving process it
would hold the GIL that fetching, hashing and compressing need. So ``apply``
starts this worker (``python -m imapsync_decl.run.search_worker ARCHIVE``) and the
worker claims its work from the index, not from memory: it indexes every message
that has no search document yet, reading its blob, as soon as the placements are
committed (the archiving process wakes it after each batch). Nothing is passed
but one-word commands on stdin, and one JSON report comes back on stdout:

* ``more``: new messages were committed; index them (the worker also looks by itself
  every ``POLL_SECONDS``).
* ``finish``: archiving is over; index what is left, from the start of the index
  (also messages an earlier, interrupted run left unindexed), report, exit.
* ``stop``, or the end of stdin without ``finish`` (the archiving process was
  interrupted or killed): exit after the batch at hand, reporting what was done.

The worker writes only ``search.sqlite``, derived data, in one transaction per
batch: killed at any point, it leaves at worst messages not indexed yet, which the
next ``apply`` or ``archive rebuild-search`` indexes. Ctrl-C reaches the whole
process group; the worker ignores SIGINT and lets the archiving process decide. It
runs at a lower priority (``NICENESS``): archiving comes first.
"""

from __future__ import annotations

import contextlib
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
from imapsync_decl.store.blobs import BlobStore
from imapsync_decl.store.search.database import SearchIndex
from imapsync_decl.store.search.indexer import catch_up

POLL_SECONDS = 0.5
NICENESS = 10
MAX_SKIPPED_REPORTED = 1000
_COMMAND_LIMIT = 4096


class _Commands:
    """The commands on stdin, read without waiting longer than asked."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = b""
        self.finish = False
        self.stop = False

    @property
    def stopped(self) -> bool:
        return self.stop

    def poll(self, timeout: float) -> bool:
        """Read the commands that are there, waiting up to ``timeout`` seconds for the
        first; True when the work is to stop now."""
        if self.stop:
            return True
        ready, _, _ = select.select([self.fd], [], [], timeout)
        while ready and not self.stop:
            data = os.read(self.fd, _COMMAND_LIMIT)
            if not data:  # the archiving process is gone (it keeps stdin open until the end)
                self.stop = True
                break
            *lines, self.pending = (self.pending + data).split(b"\n")
            self.pending = self.pending[-_COMMAND_LIMIT:]
            for line in lines:
                word = line.strip()
                self.finish = self.finish or word == b"finish"
                self.stop = self.stop or word == b"stop"
            ready, _, _ = select.select([self.fd], [], [], 0)
        return self.stop


def run(archive: Path, commands: _Commands) -> dict[str, object]:
    """Index as the commands say; the report (indexed, skipped, seconds, error)."""
    started = time.monotonic()
    indexed = 0
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
                # Once finishing, from the start: what earlier runs left unindexed too.
                done = catch_up(
                    search, blobs, after=0 if finishing else after, should_stop=should_stop
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
        "skipped": sorted(set(skipped))[:MAX_SKIPPED_REPORTED],
        "seconds": round(time.monotonic() - started, 3),
        "cpu_seconds": round(time.process_time(), 3),
        "error": error,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m imapsync_decl.run.search_worker ARCHIVE", file=sys.stderr)
        return 10
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Archiving comes first: the indexer takes the CPU time the archiving leaves, and
    # catches up at the end of the run.
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    report = run(Path(args[0]), _Commands(sys.stdin.fileno()))
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
