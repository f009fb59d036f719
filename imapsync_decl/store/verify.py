"""Check the archive: every blob re-hashed, every blob the index names present.

The blob names on disk and the SHA-256 names in the index are both read in
sorted order and merged, so memory stays small however large the archive is;
each blob is re-hashed by streaming decompression (memory bounded by a chunk).

For ``apply --repair``: what ``verify`` finds is what needs repairing (the
blobs the index names that are damaged or missing, fetched again from the
server), damaged orphans are removed (nothing names them, so nothing can fetch
them again), and afterwards each one is checked again (:func:`repair_outcome`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from imapsync_decl.store.blobs import BlobError
from imapsync_decl.store.interfaces import BlobStorage, IndexReader


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify`` found.

    ``damaged``: blobs on disk that do not decompress or whose content does not
    match their name. ``missing``: blobs the index names that are not on disk.
    ``orphans``: blobs on disk that no index row names (left by an interrupted
    run; information, not a failure: the next put of the same content reuses
    them). ``checked``: how many blob files were re-hashed.
    """

    checked: int
    damaged: tuple[str, ...]
    missing: tuple[str, ...]
    orphans: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.missing

    @property
    def to_repair(self) -> frozenset[str]:
        """The blobs the index names that are damaged or missing."""
        return frozenset(self.damaged).difference(self.orphans) | frozenset(self.missing)

    @property
    def damaged_orphans(self) -> tuple[str, ...]:
        orphans = set(self.orphans)
        return tuple(sha256 for sha256 in self.damaged if sha256 in orphans)


@dataclass(frozen=True)
class RepairOutcome:
    """After ``apply --repair``: which of the blobs to repair are intact now, which are
    not (their messages could not be fetched again), and which damaged orphans were
    removed."""

    repaired: tuple[str, ...]
    unrepaired: tuple[str, ...]
    removed_orphans: tuple[str, ...]

    def to_json(self) -> dict[str, list[str]]:
        return {
            "repaired": list(self.repaired),
            "unrepaired": list(self.unrepaired),
            "removed_orphans": list(self.removed_orphans),
        }


def remove_damaged_orphans(blobs: BlobStorage, report: VerifyReport) -> tuple[str, ...]:
    """Delete the damaged blobs no index row names; return their names."""
    for sha256 in report.damaged_orphans:
        blobs.remove(sha256)
    return report.damaged_orphans


def repair_outcome(
    blobs: BlobStorage, to_repair: Iterable[str], removed_orphans: Sequence[str] = ()
) -> RepairOutcome:
    """Check each blob of ``to_repair`` again (re-hashed from disk)."""
    repaired: list[str] = []
    unrepaired: list[str] = []
    for sha256 in sorted(to_repair):
        try:
            blobs.check(sha256)
        except BlobError:
            unrepaired.append(sha256)
        else:
            repaired.append(sha256)
    return RepairOutcome(tuple(repaired), tuple(unrepaired), tuple(removed_orphans))


def verify(
    blobs: BlobStorage,
    index: IndexReader,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Re-hash every blob on disk and compare the blobs with the index.

    ``progress``, if given, is called with the number of blobs checked so far
    after each blob.
    """
    checked = 0
    damaged: list[str] = []
    missing: list[str] = []
    orphans: list[str] = []
    on_disk = blobs.iter_hashes()
    named = index.iter_message_hashes()
    disk_next = _next(on_disk)
    index_next = _next(named)
    while disk_next is not None or index_next is not None:
        if disk_next is not None and (index_next is None or disk_next <= index_next):
            sha256 = disk_next
            checked += 1
            try:
                blobs.check(sha256)
            except BlobError:
                damaged.append(sha256)  # a vanished file counts as damaged too
            if progress is not None:
                progress(checked)
            if sha256 == index_next:
                index_next = _next(named)
            else:
                orphans.append(sha256)
            disk_next = _next(on_disk)
        else:
            assert index_next is not None
            missing.append(index_next)
            index_next = _next(named)
    return VerifyReport(
        checked=checked,
        damaged=tuple(damaged),
        missing=tuple(missing),
        orphans=tuple(orphans),
    )


def _next(iterator: Iterator[str]) -> str | None:
    return next(iterator, None)
