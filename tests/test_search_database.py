"""The search database: private, beside the index, and it finds what the index holds."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from imapsync_decl.errors import ArchiveNotWritable
from imapsync_decl.store import Index
from imapsync_decl.store.search.database import SEARCH_NAME, SearchIndex
from imapsync_decl.store.search.text import searchable


@dataclass(frozen=True)
class Doc:
    subject_display: str
    body: str = ""
    sender: str = ""
    recipients: str = ""
    attachment: str = ""
    other: str = ""
    from_display: str = ""
    to_display: str = ""
    date: datetime | None = None
    size: int = 100
    has_attachment: bool = False
    attachment_names: tuple[str, ...] = field(default=())
    extracted: bool = True

    @property
    def subject(self) -> str:
        return searchable(self.subject_display)


def sha(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def archive_with_messages(directory: Path, count: int) -> Path:
    Index.open(directory / "index.sqlite").close()
    with sqlite3.connect(directory / "index.sqlite") as db:
        for n in range(count):
            db.execute(
                "INSERT INTO messages (sha256, size, stored_size, first_archived_at)"
                " VALUES (?, 10, 10, '2024-01-01T00:00:00+00:00')",
                (sha(n),),
            )
    return directory


def test_unindexed_messages_are_found_and_indexed_once(tmp_path: Path) -> None:
    archive = archive_with_messages(tmp_path, 3)
    with SearchIndex.open(archive) as search:
        assert [u.sha256 for u in search.unindexed()] == [sha(0), sha(1), sha(2)]
        docs = [(sha(0), Doc("Grüße von Müller")), (sha(1), Doc("東京都の会議", extracted=False))]
        assert search.add(docs) == 2
        assert search.add(docs) == 0  # indexed already: nothing doubled
        assert [u.sha256 for u in search.unindexed()] == [sha(2)]
        counts = search.counts()
        assert (counts.indexed, counts.headers_only, counts.unindexed) == (2, 1, 1)
        found = search.connection.execute(
            "SELECT d.sha256 FROM search.docs d WHERE d.id IN"
            " (SELECT rowid FROM search.fts WHERE fts MATCH ?)",
            ('subject : "muller"',),
        ).fetchall()
        assert found == [(sha(0),)]
        cjk = search.connection.execute(
            "SELECT rowid FROM search.fts WHERE fts MATCH ?", ('"京都"',)
        ).fetchall()
        assert len(cjk) == 1
        search.clear()
        assert search.counts().indexed == 0
    mode = stat.S_IMODE((archive / SEARCH_NAME).stat().st_mode)
    assert mode == 0o600


def test_dates_are_kept_as_utc_seconds(tmp_path: Path) -> None:
    archive = archive_with_messages(tmp_path, 1)
    when = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    with SearchIndex.open(archive) as search:
        search.add([(sha(0), Doc("x", date=when))])
        (date,) = search.connection.execute("SELECT date FROM search.docs").fetchone()
    assert date == int(when.timestamp())


def test_a_symlinked_search_database_is_refused(tmp_path: Path) -> None:
    archive = archive_with_messages(tmp_path, 1)
    (tmp_path / "elsewhere").write_bytes(b"")
    (archive / SEARCH_NAME).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ArchiveNotWritable, match="search index"):
        SearchIndex.open(archive)


def test_one_cjk_character_is_found_inside_a_run(tmp_path: Path) -> None:
    archive = archive_with_messages(tmp_path, 2)
    with SearchIndex.open(archive) as search:
        search.add(
            [
                (sha(0), Doc("x", body=searchable("東京都庁の人々", document=True))),
                (sha(1), Doc("y", body=searchable("大阪", document=True))),
            ]
        )

        def found(match: str) -> list[int]:
            rows = search.connection.execute(
                "SELECT rowid FROM search.fts WHERE fts MATCH ? ORDER BY rowid", (match,)
            ).fetchall()
            return [int(r[0]) for r in rows]

        assert found('body : "京"') == [1]
        assert found('body : "人々"') == [1]
        assert found('body : "東京 京都"') == [1]  # the phrase of a three-character word
        assert found('body : "京都 東京"') == []
