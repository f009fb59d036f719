"""The search query language run against the search tables: what each query finds, sorts, and
arbitrary input that is never an SQLite or FTS5 error."""

from __future__ import annotations

import calendar
import datetime
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from imapsync_decl.store.search.query import (
    QueryError,
    compile_query,
    order_by,
    ordering,
    parse_query,
)
from imapsync_decl.store.search.text import FTS_TOKENIZER, searchable

# The search tables as the index builds them.
SCHEMA = f"""
CREATE TABLE search.docs (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    date INTEGER,
    size INTEGER NOT NULL,
    has_attachment INTEGER NOT NULL,
    extracted INTEGER NOT NULL,
    from_display TEXT, to_display TEXT, subject_display TEXT,
    attachments_json TEXT NOT NULL
);
CREATE VIRTUAL TABLE search.fts USING fts5(
    sender, recipients, subject, body, attachment, other,
    tokenize = '{FTS_TOKENIZER}'
);
"""


@dataclass(frozen=True)
class Doc:
    name: str  # stands in for the blob's SHA-256
    sender: str
    recipients: str
    subject: str
    body: str
    date: str | None  # ISO, UTC
    size: int
    attachments: list[str] = field(default_factory=list)
    other: str = ""


DOCS = [
    Doc(
        "invoice",
        "Bob Builder <bob@example.com>",
        "Alice <alice@example.org>",
        "Invoice March",
        "Please pay the invoice for March.",
        "2024-03-05T10:00:00",
        2000,
    ),
    Doc(
        "contract",
        "Carol <carol@example.net>",
        "Alice <alice@example.org>",
        "Contract draft",
        "The contract is attached, see the contract.",
        "2024-02-10T09:00:00",
        600_000,
        ["contract-v2.pdf"],
    ),
    Doc(
        "reply",
        "Bob Builder <bob@example.com>",
        "Carol <carol@example.net>",
        "Re: Contract draft",
        "Looks fine to me.",
        "2024-02-12T09:00:00",
        3000,
    ),
    Doc(
        "muller",
        "Jürgen Müller <jm@example.de>",
        "alice@example.org",
        "Grüße aus München",
        "Viele Grüße aus Bayern",
        "2023-12-31T23:59:59",
        1500,
    ),
    Doc(
        "tokyo",
        "Taro <taro@example.jp>",
        "alice@example.org",
        "会議の件",
        "会議は東京都庁で行います",
        "2024-01-01T00:00:00",
        1200,
    ),
    Doc(
        "promo",
        "Deals <deals@promo.example>",
        "alice@example.org",
        "Cheap invoicing software",
        "Buy now and save",
        "2024-03-01T12:00:00",
        10 * 1024 + 1,
    ),
    Doc(
        "other-bob",
        "Bob Other <bob@example.org>",
        "bob@example.com",
        "Lunch",
        "Lunch on Friday?",
        "2024-03-02T12:00:00",
        800,
    ),
    Doc(
        "undated",
        "Carol <carol@example.net>",
        "alice@example.org",
        "Notes",
        "Old notes about a contract, among many other things said at length in a long letter.",
        None,
        900,
    ),
    Doc(
        "photos",
        "Carol <carol@example.net>",
        "alice@example.org",
        "Holiday photos",
        "Here they are",
        "2024-04-01T08:00:00",
        5 * 1024 * 1024,
        ["beach.jpg", "hotel.jpg"],
    ),
    Doc(
        "cc",
        "Dave <dave@example.com>",
        "Erin <erin@example.org> carol@example.net",  # To, then Cc
        "Budget",
        "The quarterly budget",
        "2024-03-10T12:00:00",
        10 * 1024,
    ),
    Doc(
        "phrase",
        "Frank <frank@example.com>",
        "alice@example.org",
        "Weekly",
        "The march invoice arrived",
        "2024-03-20T12:00:00",
        1000,
        other="<weekly-42@example.com> list.example.com",
    ),
    Doc(
        "symbols",
        "Grace <grace@example.com>",
        "alice@example.org",
        'say "hi" (or not)',
        "C++ and NEAR(x) OR y*",
        "2024-05-01T12:00:00",
        700,
    ),
]


def unix(iso: str | None) -> int | None:
    if iso is None:
        return None
    return calendar.timegm(datetime.datetime.fromisoformat(iso).timetuple())


@pytest.fixture(scope="module")
def db() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    conn.execute("ATTACH ':memory:' AS search")
    conn.executescript(SCHEMA)
    for doc in DOCS:
        row = conn.execute(
            "INSERT INTO search.docs (sha256, date, size, has_attachment, extracted,"
            " from_display, to_display, subject_display, attachments_json)"
            " VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)",
            (
                doc.name,
                unix(doc.date),
                doc.size,
                int(bool(doc.attachments)),
                doc.sender,
                doc.recipients,
                doc.subject,
                json.dumps(doc.attachments),
            ),
        )
        fields = [doc.sender, doc.recipients, doc.subject, doc.body, " ".join(doc.attachments)]
        conn.execute(
            "INSERT INTO search.fts (rowid, sender, recipients, subject, body, attachment, other)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row.lastrowid, *(searchable(f) for f in [*fields, doc.other])),
        )
    yield conn
    conn.close()


def search(conn: sqlite3.Connection, text: str, sort: str = "date") -> list[str]:
    compiled = compile_query(parse_query(text))
    order = ordering(compiled, sort)
    sql = (
        f"{order.before}SELECT d.sha256 FROM search.docs AS d{order.join}"  # noqa: S608
        f" WHERE {compiled.where} ORDER BY {order.order_by}"
    )
    return [name for (name,) in conn.execute(sql, compiled.params)]


def found(conn: sqlite3.Connection, text: str) -> set[str]:
    return set(search(conn, text))


# Executing: one query feature at a time.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("invoice", {"invoice", "phrase"}),
        ("INVOICE", {"invoice", "phrase"}),
        ("invoic*", {"invoice", "phrase", "promo"}),
        ("march invoice", {"invoice", "phrase"}),
        ('"march invoice"', {"phrase"}),
        ('"invoice march"', {"invoice"}),
        ('"invoice for mar"*', {"invoice"}),
        ("contract attached", {"contract"}),
        ("weekly-42", {"phrase"}),
        ("from:bob", {"invoice", "reply", "other-bob"}),
        ("from:bob@example.com", {"invoice", "reply"}),
        ('from:"bob builder"', {"invoice", "reply"}),
        ("from:bui*", {"invoice", "reply"}),
        ("to:bob@example.com", {"other-bob"}),
        ("to:carol", {"reply", "cc"}),
        ("subject:contract", {"contract", "reply"}),
        ("attachment:beach", {"photos"}),
        ("attachment:contract-v2.pdf", {"contract"}),
        ("attachment:jpg", {"photos"}),
        ("has:attachment", {"contract", "photos"}),
        ("Muller", {"muller"}),
        ("munchen", {"muller"}),
        ("Müller", {"muller"}),
        ("from:jurgen", {"muller"}),
        ("東京", {"tokyo"}),
        ("都庁", {"tokyo"}),
        ("京都庁", {"tokyo"}),
        ("subject:会議", {"tokyo"}),
        ("大阪", set()),
        ("contract -from:bob", {"contract", "undated"}),
        ("contract NOT has:attachment", {"reply", "undated"}),
        ("contract -attachment:pdf", {"reply", "undated"}),
        ("from:bob OR from:dave", {"invoice", "reply", "other-bob", "cc"}),
        ("lunch friday OR march", {"other-bob"}),
        ("(lunch friday) OR march", {"other-bob", "invoice", "phrase"}),
        ("(from:bob OR from:carol) contract", {"reply", "contract", "undated"}),
        ("from:carol (has:attachment OR notes)", {"contract", "photos", "undated"}),
        ("from:carol -(has:attachment OR notes)", set()),
        ('say "hi" (or not)', {"symbols"}),
        ("NEAR(x) C++", {"symbols"}),
    ],
)
def test_search_finds(db: sqlite3.Connection, text: str, expected: set[str]) -> None:
    assert found(db, text) == expected


def test_dates_are_days_from_midnight_utc(db: sqlite3.Connection) -> None:
    after = found(db, "after:2024-01-01")
    assert "tokyo" in after  # 2024-01-01T00:00:00: inclusive
    assert "muller" not in after  # 2023-12-31T23:59:59
    assert "undated" not in after
    assert found(db, "before:2024-01-01") == {"muller"}
    assert found(db, "after:2024-03-02 before:2024-03-10") == {"other-bob", "invoice"}


def test_not_excludes_exactly_what_the_term_finds(db: sqlite3.Connection) -> None:
    # An undated message is not before any day, so "not before" keeps it.
    assert found(db, "notes -before:2024-01-01") == {"undated"}
    assert found(db, "notes -after:2024-01-01") == {"undated"}
    everything = {d.name for d in DOCS}
    assert found(db, "example") == everything
    for term in ["has:attachment", "from:bob", "larger:10K", "after:2024-03-01", "invoice"]:
        assert found(db, term)
        assert found(db, term) | found(db, f"example -{term}") == everything
        assert found(db, term) & found(db, f"example -{term}") == set()
    assert found(db, "-invoice OR invoice") == everything


def test_sizes_compare_bytes_strictly(db: sqlite3.Connection) -> None:
    assert found(db, "larger:10K") == {"contract", "promo", "photos"}  # cc is exactly 10K
    assert found(db, "larger:5M") == set()
    assert found(db, "larger:4M") == {"photos"}
    assert found(db, "smaller:1K") == {"other-bob", "undated", "phrase", "symbols"}
    assert found(db, "smaller:1000") == {"other-bob", "undated", "symbols"}


def test_sort_by_date(db: sqlite3.Connection) -> None:
    assert search(db, "from:carol", "date") == ["contract", "photos", "undated"]
    assert search(db, "from:carol", "-date") == ["photos", "contract", "undated"]


def test_sort_by_relevance(db: sqlite3.Connection) -> None:
    # contract: subject, body twice, attachment; reply: a short subject; undated: a long body.
    assert search(db, "contract", "relevance") == ["contract", "reply", "undated"]
    # photos is found by has:attachment, not by a word: after every match.
    assert search(db, "contract OR has:attachment", "relevance") == [
        "contract",
        "reply",
        "undated",
        "photos",
    ]


def test_relevance_without_free_text_is_newest_first(db: sqlite3.Connection) -> None:
    assert search(db, "from:carol", "relevance") == search(db, "from:carol", "-date")
    assert search(db, "has:attachment", "relevance") == ["photos", "contract"]


def test_an_unknown_sort_is_a_query_error() -> None:
    with pytest.raises(
        QueryError, match=r'^unknown sort "size"; the sorts are date, -date, relevance$'
    ):
        order_by("size")


# Arbitrary input: a QueryError or a query that runs, never FTS5 syntax.

PIECES = [
    '"',
    "*",
    ":",
    "^",
    "NEAR(",
    "NEAR",
    "-",
    "(",
    ")",
    " ",
    "  ",
    "\x00",
    "\t",
    "🎉",
    "👍🏽",
    "OR",
    "AND",
    "NOT",
    " OR ",
    " AND ",
    " NOT ",
    "from:",
    "to:",
    "subject:",
    "has:",
    "after:",
    "before:",
    "larger:",
    "smaller:",
    "attachment:",
    "foo:",
    "{sender}",
    "sender",
    "rank",
    "2024-01-01",
    "10K",
    "bob@example.com",
    "東京都",
    "Müller",
    "ß",
    "'",
    ";",
    "+",
    "\\",
    "\udcff",
    "a",
    "b",
    "x*",
    "\u0301",
    "\ufeff",
    "\uff02",
    "ᦰ",
    "\u200b",
]
QUERY_TEXT = st.lists(st.sampled_from(PIECES) | st.text(max_size=4), max_size=24).map("".join)
_LITERAL = re.compile(r'"(?:[^"]|"")*"')
_OPERATORS = re.compile(r"(?:\s|[()*]|AND|OR|\{(?:sender|recipients|subject|attachment)\} :)*")


@settings(max_examples=400, deadline=None)
@given(text=QUERY_TEXT, sort=st.sampled_from(["date", "-date", "relevance"]))
@example(text='a "b\x00c" d', sort="date")
@example(text='from:"\x00" x\uff02y*', sort="relevance")
@example(text='"NEAR(a b)" OR {sender}:x* ^a', sort="relevance")
def test_any_text_is_a_query_or_a_query_error(db: sqlite3.Connection, text: str, sort: str) -> None:
    try:
        compiled = compile_query(parse_query(text))
    except QueryError:
        return
    order = ordering(compiled, sort)
    sql = (
        f"{order.before}SELECT d.id FROM search.docs AS d{order.join}"  # noqa: S608
        f" WHERE {compiled.where} ORDER BY {order.order_by}"
    )
    db.execute(sql, compiled.params).fetchall()
    for value in compiled.params.values():
        if isinstance(value, str):
            assert _OPERATORS.fullmatch(_LITERAL.sub("", value)), value
            assert "\x00" not in value


def test_relevance_scores_are_computed_once_per_query(db: sqlite3.Connection) -> None:
    """bm25 weighs a term by how many documents hold it: scored in a correlated subquery,
    FTS5 would work that out again for every document (seconds on a common word in an
    archive of thousands), so the scores come from one materialised pass."""
    compiled = compile_query(parse_query("contract OR photos"))
    order = ordering(compiled, "relevance")
    sql = (
        f"EXPLAIN QUERY PLAN {order.before}SELECT d.id FROM search.docs AS d{order.join}"  # noqa: S608
        f" WHERE {compiled.where} ORDER BY {order.order_by}"
    )
    plan = " | ".join(str(row[-1]) for row in db.execute(sql, compiled.params))
    assert "MATERIALIZE ranked" in plan, plan
    assert "CORRELATED" not in plan, plan
