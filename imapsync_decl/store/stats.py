"""What the archive holds and what deduplication and compression save.

Definitions (the same in text and JSON):

* ``messages``: distinct contents (blobs); ``placements``: copies of messages in folders.
* ``bytes_placed``: the raw size of every placement (what the archived folders hold).
* ``bytes_original``: the raw size of every distinct message (the sum of message sizes).
* ``bytes_stored``: the compressed size of every blob on disk.
* ``dedup_ratio`` = bytes_placed / bytes_original (1.0: nothing deduplicated);
  ``compression_ratio`` = bytes_original / bytes_stored; ``total_ratio`` =
  bytes_placed / bytes_stored. A ratio is None (null) while its divisor is 0.

Per user, ``messages`` and the byte sums count the distinct messages in that user's
folders, so a message two users hold counts for each of them: the per-user sums can
exceed the totals.

``search`` (when the archive has a search index): ``indexed`` messages with a search
document, of them ``headers_only`` whose text could not be extracted (found by their
headers), and ``unindexed`` messages without a document yet (``archive
rebuild-search`` indexes them); ``error`` when ``search.sqlite`` cannot be read.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imapsync_decl.store import Index
from imapsync_decl.store.search.database import SEARCH_NAME, SearchIndex


@dataclass(frozen=True)
class UserStats:
    user: str
    mailboxes: int
    folders: int
    messages: int
    placements: int
    bytes_original: int
    bytes_stored: int
    bytes_placed: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ArchiveStats:
    users: int
    mailboxes: int
    folders: int
    messages: int
    placements: int
    bytes_original: int
    bytes_stored: int
    bytes_placed: int
    per_user: tuple[UserStats, ...]
    search: dict[str, Any] | None = None  # the search index's counts, None without one

    @property
    def dedup_ratio(self) -> float | None:
        return _ratio(self.bytes_placed, self.bytes_original)

    @property
    def compression_ratio(self) -> float | None:
        return _ratio(self.bytes_original, self.bytes_stored)

    @property
    def total_ratio(self) -> float | None:
        return _ratio(self.bytes_placed, self.bytes_stored)

    def to_json(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "mailboxes": self.mailboxes,
            "folders": self.folders,
            "messages": self.messages,
            "placements": self.placements,
            "bytes_placed": self.bytes_placed,
            "bytes_original": self.bytes_original,
            "bytes_stored": self.bytes_stored,
            "dedup_ratio": _rounded(self.dedup_ratio),
            "compression_ratio": _rounded(self.compression_ratio),
            "total_ratio": _rounded(self.total_ratio),
            "per_user": [u.to_json() for u in self.per_user],
            "search": self.search,
        }


def gather_stats(index: Index, root: Path | None = None) -> ArchiveStats:
    """Count and sum the archive's index (blobs are not read), and the search index's
    documents when ``root`` is given and has one."""
    counts = index.counts()
    sizes = index.storage_totals()
    per_user = tuple(UserStats(**row) for row in index.user_totals())
    return ArchiveStats(
        users=counts["users"],
        mailboxes=counts["mailboxes"],
        folders=counts["folders"],
        messages=sizes["messages"],
        placements=sizes["placements"],
        bytes_original=sizes["bytes_original"],
        bytes_stored=sizes["bytes_stored"],
        bytes_placed=sizes["bytes_placed"],
        per_user=per_user,
        search=search_counts(root) if root is not None else None,
    )


def search_counts(root: Path) -> dict[str, Any] | None:
    """The counts of the search index of the archive at ``root``; None without one."""
    if not os.path.lexists(Path(root) / SEARCH_NAME):
        return None
    try:
        with SearchIndex.open(Path(root), create=False) as search:
            counts = search.counts()
    except sqlite3.DatabaseError as exc:
        return {"indexed": None, "headers_only": None, "unindexed": None, "error": str(exc)}
    return {
        "indexed": counts.indexed,
        "headers_only": counts.headers_only,
        "unindexed": counts.unindexed,
        "error": None,
    }


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
