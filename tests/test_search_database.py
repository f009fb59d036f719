"""The search database: private, beside the index, and it finds what the index holds."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zstandard

from imapsync_decl.errors import ArchiveNotWritable
from imapsync_decl.store import Index
from imapsync_decl.store.search.database import (
    MAX_BODY_BYTES,
    SCHEMA_1,
    SEARCH_NAME,
    SearchIndex,
    body_text,
    create_schema,
)
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


# -------------------------------------------------------------- where the texts are kept


def _snippet(search: SearchIndex, match: str) -> list[str]:
    rows = search.connection.execute(
        "SELECT snippet(fts, 3, '[', ']', '…', 6) FROM search.fts WHERE fts MATCH ? ORDER BY rowid",
        (match,),
    ).fetchall()
    return [str(r[0]) for r in rows]


_LONG_BODY = " ".join(f"word{n % 977} Absatz{n % 131}" for n in range(40_000))


def _schema_1(archive: Path) -> None:
    """A search database as the first schema made it (FTS5 keeping its own copy)."""
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.execute("ATTACH DATABASE ? AS search", (str(archive / SEARCH_NAME),))
    assert create_schema(connection, SCHEMA_1) == 1
    connection.close()
    (archive / SEARCH_NAME).chmod(0o600)


@pytest.mark.parametrize("schema", [1, 2])
def test_each_schema_finds_forgets_and_clears(tmp_path: Path, schema: int) -> None:
    archive = archive_with_messages(tmp_path, 3)
    if schema == 1:
        _schema_1(archive)
    with SearchIndex.open(archive) as search:
        assert search.schema == schema
        search.add(
            [
                (sha(0), Doc("a", body="Der Vertrag von Müller liegt bei", sender="bob")),
                (sha(1), Doc("b", body="Nichts davon", sender="alice")),
                (sha(2), Doc("c", body=_LONG_BODY + " Vertrag am Ende")),
            ]
        )
        assert _snippet(search, "body : muller") == ["Der Vertrag von [Müller] liegt bei"]
        assert _snippet(search, "body : vertrag")[-1].endswith("[Vertrag] am Ende")
        assert search.forget([sha(0), sha(0)]) == 1
        assert [u.sha256 for u in search.unindexed()] == [sha(0)]
        assert _snippet(search, "body : vertrag") == [
            "…Absatz43 word919 Absatz44 [Vertrag] am Ende"
        ]
        assert _snippet(search, "sender : bob") == []
        # FTS5's own check: the index holds exactly the tokens of the texts it reads
        search.connection.execute(
            "INSERT INTO search.fts (fts, rank) VALUES ('integrity-check', 1)"
        )
        search.clear()
        assert search.counts().indexed == 0
        assert _snippet(search, "sender : alice") == []
        search.connection.execute(
            "INSERT INTO search.fts (fts, rank) VALUES ('integrity-check', 1)"
        )


def test_the_body_is_kept_once_and_compressed(tmp_path: Path) -> None:
    sizes = {}
    for schema in (1, 2):
        (tmp_path / str(schema)).mkdir()
        archive = archive_with_messages(tmp_path / str(schema), 20)
        if schema == 1:
            _schema_1(archive)
        with SearchIndex.open(archive) as search:
            search.add([(sha(n), Doc(str(n), body=f"{n} {_LONG_BODY}")) for n in range(20)])
            search.connection.execute("PRAGMA search.wal_checkpoint(TRUNCATE)")
        sizes[schema] = (archive / SEARCH_NAME).stat().st_size
    assert sizes[2] < sizes[1] / 2, sizes


@pytest.mark.parametrize(
    "stored",
    [
        None,
        b"",
        b"not zstd",
        zstandard.ZstdCompressor().compress(b"\xff\xfe broken utf-8"),
        zstandard.ZstdCompressor().compress(b"x" * (MAX_BODY_BYTES + 1)),
    ],
    ids=["null", "empty", "garbage", "bad-utf-8", "too-large"],
)
def test_a_stored_body_is_read_within_bounds_or_not_at_all(stored: bytes | None) -> None:
    text = body_text(stored)
    assert len(text) <= 20
    assert "x" not in text
