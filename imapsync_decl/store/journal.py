"""The journal: an append-only record of everything the index holds, to rebuild it from.

Blobs hold only message bytes; which user, mailbox and folder each message belongs to
lives in the index. So that losing or damaging ``index.sqlite`` loses nothing, every
change of users, mailboxes, folders, messages, placements and runs is also appended
here, written and synced *before* the index transaction that makes it commits. The
write order of a batch is: blobs durable, then the journal records durable, then the
index transaction, then (for a complete folder) the checkpoint. Hence the journal
always holds every placement the index holds (at worst a few more: those of a
transaction that was cut off between the two writes, whose blobs are on disk all the
same), and ``archive rebuild-index`` restores the index from it.

Layout: ``<archive>/journal/NNNNNNNN.jsonl``, segments read in the order of their
numbers, written only ever at their end (by the one writer that holds the archive's
lock). A writer appends to the last segment when it ends in a whole, good record and
is smaller than ``SEGMENT_BYTES``; otherwise (a crash cut off its last append, or it
is full) it starts a new one, so a torn record is always the last line of its
segment. One record per line::

    <crc32 of the JSON text, 8 hex digits> <JSON object>\\n

A line whose checksum or JSON does not hold is ignored when read: as *torn* when it is
the last line of its segment (a crash in the middle of an append, whose transaction
then never committed), else counted as *damaged*. Checkpoints are not journaled: a
rebuilt index has none, so the next ``apply`` searches every folder once and
re-points by content, which neither loses nor doubles anything.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imapsync_decl.fs import (
    DIR_MODE,
    AtomicFile,
    check_private_dir,
    create_exclusive,
    fsync_dir,
    open_nofollow,
    write_all,
)

JOURNAL_NAME = "journal"
SEGMENT_BYTES = 64 * 1024 * 1024  # a segment this large is not appended to any more
_TAIL_BYTES = 1024 * 1024  # a last record longer than this: a new segment
_SEGMENT = re.compile(r"^(\d{8})\.jsonl$")

Record = Mapping[str, Any]


@dataclass
class ReadStats:
    """What reading the journal met besides good records."""

    segments: int = 0
    records: int = 0
    torn: int = 0  # bad last lines of a segment: an append cut off by a crash
    damaged: int = 0  # bad lines in the middle of a segment


def encode(record: Record) -> bytes:
    """One journal line: checksum, space, compact JSON, newline."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    data = text.encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(data), data)


def decode(line: bytes) -> dict[str, Any] | None:
    """The record of one line (without its newline), or None if it does not check out."""
    head, _, data = line.partition(b" ")
    if len(head) != 8:
        return None
    try:
        if int(head, 16) != zlib.crc32(data):
            return None
        record = json.loads(data)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class Journal:
    """The journal directory of one archive. ``append`` is the only way records are added."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._fd: int | None = None

    # -- writing -----------------------------------------------------------

    def append(self, records: Iterable[Record]) -> None:
        """Append records durably (one write, one fsync) to this writer's segment."""
        data = b"".join(encode(r) for r in records)
        if not data:
            return
        if self._fd is None:
            self._fd = self._open_segment()
        write_all(self._fd, data)
        os.fsync(self._fd)

    def write_snapshot(self, records: Iterable[Record]) -> None:
        """A whole segment at once (written under a temporary name, synced, renamed): the
        state of an index that had no journal yet."""
        self._ensure_directory()
        target = self.directory / f"{self._next_number():08d}.jsonl"
        with AtomicFile(target, sync_dir=True) as out:
            for record in records:
                out.write(encode(record))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _ensure_directory(self) -> None:
        if not self.directory.is_dir():
            self.directory.mkdir(mode=DIR_MODE, exist_ok=True)
            os.chmod(self.directory, DIR_MODE)
            fsync_dir(self.directory.parent)
        check_private_dir(self.directory, what="journal directory")

    def _next_number(self) -> int:
        numbers = [n for n, _ in self._numbered()]
        return (max(numbers) if numbers else 0) + 1

    def _open_segment(self) -> int:
        """The last segment, opened for appending, if it ends in a whole good record and
        has room; else a new segment."""
        self._ensure_directory()
        numbered = self._numbered()
        if numbered:
            last = numbered[-1][1]
            fd = open_nofollow(last, os.O_WRONLY | os.O_APPEND)
            try:
                if _ends_cleanly(last):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        while True:
            path = self.directory / f"{self._next_number():08d}.jsonl"
            try:
                fd = create_exclusive(path)
            except FileExistsError:
                continue  # another writer took this number
            fsync_dir(self.directory)
            return fd

    # -- reading -----------------------------------------------------------

    def _numbered(self) -> list[tuple[int, Path]]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        found = [(int(m.group(1)), self.directory / n) for n in names if (m := _SEGMENT.match(n))]
        return sorted(found)

    def segments(self) -> list[Path]:
        """The segment files, in the order they were written."""
        return [path for _, path in self._numbered()]

    def exists(self) -> bool:
        """Whether any segment is there (an archive written by this version has one)."""
        return bool(self._numbered())

    def read(self, stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
        """Every good record, in order; torn and damaged lines are counted in ``stats``."""
        stats = stats if stats is not None else ReadStats()
        for path in self.segments():
            stats.segments += 1
            with open(path, "rb") as segment:
                lines = segment.read().split(b"\n")
            # After the last newline: empty, or an append cut off before its newline.
            tail = lines.pop()
            if tail:
                stats.torn += 1
            for position, line in enumerate(lines):
                record = decode(line)
                if record is None:
                    if position == len(lines) - 1 and not tail:
                        stats.torn += 1
                    else:
                        stats.damaged += 1
                    continue
                stats.records += 1
                yield record


def _ends_cleanly(path: Path) -> bool:
    """The segment is below ``SEGMENT_BYTES`` and its last line is a whole, good record."""
    with open(path, "rb") as segment:
        size = segment.seek(0, os.SEEK_END)
        if size >= SEGMENT_BYTES:
            return False
        if size == 0:
            return True
        start = max(0, size - _TAIL_BYTES)
        segment.seek(start)
        tail = segment.read()
    if not tail.endswith(b"\n"):
        return False
    body = tail[:-1]
    newline = body.rfind(b"\n")
    if newline < 0 and start > 0:
        return False  # the last record is longer than we look
    return decode(body[newline + 1 :]) is not None
