"""Feeding the search index: messages' bytes extracted and added in batches, and catching up.

``index_messages`` indexes messages whose bytes are at hand; ``catch_up`` indexes
every message of the index that has no document yet, reading its blob (the search
indexer of ``apply``, and ``archive rebuild-search``). A message whose blob is
damaged or missing is skipped and reported, never indexed from wrong bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from imapsync_decl.store.blobs import BlobError
from imapsync_decl.store.interfaces import BlobStorage
from imapsync_decl.store.rows import parse_datetime
from imapsync_decl.store.search.database import SearchIndex

CATCH_UP_BATCH = 200


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
    # Here, not at the top: a run with nothing to index never loads the parsers.
    from imapsync_decl.store.search.extract import extract

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
