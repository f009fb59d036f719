"""Rebuild a lost or damaged index from the archive's journal (``archive rebuild-index``).

The new index is built beside the old one (``index.sqlite.rebuilding``) by replaying
every good journal record (torn last records of a crash are ignored), then the old
database is kept as ``index.sqlite.damaged-<time>`` (with its ``-wal`` / ``-shm``
files, so SQLite can never apply them to the new one) and the new one is renamed
into place. A healthy index is only replaced when asked (``force``). Checkpoints
are not restored: the next ``apply`` searches every folder once and re-points by
content, so nothing is lost or doubled.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from imapsync_decl.errors import ExitCode, ImapsyncError, UsageError
from imapsync_decl.fs import fsync_dir
from imapsync_decl.store.blobs import BlobStore
from imapsync_decl.store.index import Index, default_journal_dir
from imapsync_decl.store.journal import Journal, ReadStats

_SIDE_FILES = ("-wal", "-shm", "-journal")


class NoJournal(ImapsyncError):
    """There is nothing to rebuild the index from."""

    exit_code = ExitCode.INTEGRITY


@dataclass
class RebuildReport:
    index: Path
    kept_as: Path | None
    read: ReadStats
    restored: dict[str, int] = field(default_factory=dict)


def index_health(path: Path) -> str | None:
    """None when ``path`` is a sound index database (quick_check ok), else why not."""
    if not path.exists():
        return "missing"
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = connection.execute("PRAGMA quick_check").fetchall()
            version = connection.execute("PRAGMA user_version").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    verdict = "; ".join(str(r[0]) for r in rows)
    if verdict != "ok":
        return verdict
    return None if version else "empty"


def rebuild_index(index_path: Path, blobs: BlobStore, *, force: bool = False) -> RebuildReport:
    """Replace the index at ``index_path`` with one rebuilt from its journal.

    The caller holds the archive's lock. Refuses a healthy index unless ``force``.
    """
    journal = Journal(default_journal_dir(index_path))
    if not journal.exists():
        raise NoJournal(
            f"the archive has no journal ({journal.directory}) to rebuild its index from"
        )
    problem = index_health(index_path)
    if problem is None and not force:
        raise UsageError(
            f"the archive index {index_path} is healthy; give --force to rebuild it from the"
            " journal anyway"
        )
    building = index_path.with_name(index_path.name + ".rebuilding")
    _remove_with_side_files(building)
    stats = ReadStats()
    index = Index.open(building, journal_dir=journal.directory, journaling=False)
    try:
        restored = index.replay(journal.read(stats), blobs)
    finally:
        index.close()
    kept_as = None
    if index_path.exists() or any(_side(index_path, s).exists() for s in _SIDE_FILES):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        kept_as = index_path.with_name(f"{index_path.name}.damaged-{stamp}")
        for suffix in ("", *_SIDE_FILES):
            with contextlib.suppress(FileNotFoundError):
                os.replace(_side(index_path, suffix), _side(kept_as, suffix))
    os.replace(building, index_path)
    fsync_dir(index_path.parent)
    return RebuildReport(index_path, kept_as, stats, restored)


def _side(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _remove_with_side_files(path: Path) -> None:
    for suffix in ("", *_SIDE_FILES):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_side(path, suffix))
