"""Feeding the search index: messages' bytes extracted and added in batches, and catching up.

``index_messages`` indexes messages whose bytes are at hand (``apply``, right after
their placements are committed); ``catch_up`` indexes every message of the index
that has no document yet, reading its blob (the end of ``apply``, and ``archive
rebuild-search``). A message whose blob is damaged or missing is skipped and
reported, never indexed from wrong bytes. ``open_search`` opens an archive's search
index for reading, with a message saying what to do when there is none or it is
damaged.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from imapsync_decl.errors import ExitCode, ImapsyncError, UsageError
from imapsync_decl.store.blobs import BlobError
from imapsync_decl.store.interfaces import BlobStorage
from imapsync_decl.store.rows import parse_datetime
from imapsync_decl.store.search.database import SEARCH_NAME, SearchIndex
from imapsync_decl.store.search.extract import extract

CATCH_UP_BATCH = 200
REBUILD = "imapsync-decl archive rebuild-search"
REBUILD_HINT = f"run `{REBUILD}`"


class SearchIndexMissing(UsageError):
    """The archive has no search index yet (exit 10)."""


class SearchIndexDamaged(ImapsyncError):
    """``search.sqlite`` cannot be read (exit 12)."""

    exit_code = ExitCode.INTEGRITY


@dataclass
class CatchUp:
    """What ``catch_up`` did: messages indexed, and those whose blob could not be read."""

    indexed: int = 0
    skipped: list[str] = field(default_factory=list)
    after: int = 0  # the last row of the index looked at: where a later call may go on


def index_messages(
    search: SearchIndex, messages: Sequence[tuple[str, bytes, datetime | None]]
) -> int:
    """Index each (sha256, raw bytes, internal date) that has no document yet, in one
    transaction; returns how many were new."""
    known = _indexed(search, [sha for sha, _, _ in messages])
    fresh: dict[str, tuple[bytes, datetime | None]] = {}
    for sha, raw, internal_date in messages:
        if sha not in known:
            fresh.setdefault(sha, (raw, internal_date))
    if not fresh:
        return 0
    return search.add([(sha, extract(raw, date)) for sha, (raw, date) in fresh.items()])


def catch_up(
    search: SearchIndex,
    blobs: BlobStorage,
    *,
    after: int = 0,
    batch: int = CATCH_UP_BATCH,
    advanced: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> CatchUp:
    """Index every message of the index without a document, ``batch`` at a time, from
    its blob, beginning after the index's row ``after``. ``advanced`` is told how many
    messages each batch dealt with."""
    done = CatchUp(after=after)
    while not should_stop():
        rows = search.connection.execute(
            "SELECT m.rowid, m.sha256, (SELECT min(p.internal_date) FROM idx.placements p"
            " WHERE p.sha256 = m.sha256) FROM idx.messages m"
            " WHERE m.rowid > ? AND NOT EXISTS"
            " (SELECT 1 FROM search.docs d WHERE d.sha256 = m.sha256)"
            " ORDER BY m.rowid LIMIT ?",
            (after, batch),
        ).fetchall()
        if not rows:
            break
        after = done.after = int(rows[-1][0])
        found: list[tuple[str, bytes, datetime | None]] = []
        for _, sha, internal_date in rows:
            try:
                raw = blobs.get(str(sha))
            except BlobError:
                done.skipped.append(str(sha))
                continue
            found.append((str(sha), raw, parse_datetime(internal_date)))
        done.indexed += index_messages(search, found)
        if advanced is not None:
            advanced(len(rows))
    return done


def open_search(root: Path) -> SearchIndex:
    """The search index of the archive at ``root``, for reading.

    SearchIndexMissing (exit 10) when there is none yet, SearchIndexDamaged (exit 12)
    when it cannot be read; each says to run ``archive rebuild-search``.
    """
    if not os.path.lexists(Path(root) / SEARCH_NAME):
        raise SearchIndexMissing(f"the archive {root} has no search index yet; {REBUILD_HINT}")
    try:
        search = SearchIndex.open(Path(root), create=False)
    except sqlite3.DatabaseError as exc:
        raise damaged(root, exc) from None
    try:
        search.connection.execute("SELECT count(*) FROM search.docs").fetchone()
    except sqlite3.DatabaseError as exc:
        search.close()
        raise damaged(root, exc) from None
    return search


def damaged(root: Path, exc: Exception) -> SearchIndexDamaged:
    return SearchIndexDamaged(
        f"the search index {Path(root) / SEARCH_NAME} cannot be read ({exc});"
        f" run `{REBUILD} --force`"
    )


def remove_search_files(root: Path) -> None:
    """Delete ``search.sqlite`` and its WAL files (``rebuild-search --force``): derived
    data, rebuilt from the blobs."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(Path(root) / (SEARCH_NAME + suffix))


def _indexed(search: SearchIndex, shas: Sequence[str]) -> set[str]:
    known: set[str] = set()
    unique = sorted(set(shas))
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        rows = search.connection.execute(
            f"SELECT sha256 FROM search.docs WHERE sha256 IN ({marks})",  # noqa: S608
            chunk,
        ).fetchall()
        known.update(str(r[0]) for r in rows)
    return known
