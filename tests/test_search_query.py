"""Tests of the search query language: parse to values, errors at their column, SQL that finds."""

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

from imapsync_decl.errors import ExitCode, UsageError
from imapsync_decl.store.search.query import (
    MAX_SIZE,
    After,
    And,
    Before,
    HasAttachment,
    Larger,
    Not,
    Or,
    Query,
    QueryError,
    Smaller,
    Text,
    compile_query,
    day_start,
    order_by,
    parse_date,
    parse_query,
    parse_size,
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
    sql = (
        f"SELECT d.sha256 FROM search.docs AS d WHERE {compiled.where}"  # noqa: S608
        f" ORDER BY {order_by(sort)}"
    )
    return [name for (name,) in conn.execute(sql, compiled.params)]


def found(conn: sqlite3.Connection, text: str) -> set[str]:
    return set(search(conn, text))


# Parsing: the query as values.

a, b, c = Text("a"), Text("b"), Text("c")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a", a),
        ("  a  ", a),
        ("a b", And((a, b))),
        ("a AND b", And((a, b))),
        ("a OR b", Or((a, b))),
        ("a b OR c", And((a, Or((b, c))))),
        ("a OR b c", And((Or((a, b)), c))),
        ("(a b) OR c", Or((And((a, b)), c))),
        ("a (b c)", And((a, b, c))),
        ("a OR (b OR c)", Or((a, b, c))),
        ("((a))", a),
        ("a -b", And((a, Not(b)))),
        ("a NOT b", And((a, Not(b)))),
        ("a NOT NOT b", And((a, b))),
        ("a -(b OR c)", And((a, Not(Or((b, c)))))),
        ("a or b", And((a, Text("or"), b))),
        ("a not b", And((a, Text("not"), b))),
        ("inv*", Text("inv", prefix=True)),
        ('"exact phrase"', Text("exact phrase")),
        ('"exact phr"*', Text("exact phr", prefix=True)),
        ('"NOT a OR b"', Text("NOT a OR b")),
        ("e-mail", Text("e-mail")),
        ("from:bob", Text("bob", "sender")),
        ("FROM:bob", Text("bob", "sender")),
        ("from:bob@example.com", Text("bob@example.com", "sender")),
        ("from:bo*", Text("bo", "sender", prefix=True)),
        ('from:"Bob Builder"', Text("Bob Builder", "sender")),
        ("to:carol", Text("carol", "recipients")),
        ('subject:"Re: hi"', Text("Re: hi", "subject")),
        ("attachment:report.pdf", Text("report.pdf", "attachment")),
        ("has:attachment", HasAttachment()),
        ("has:Attachment", HasAttachment()),
        ("after:2024-01-31", After(datetime.date(2024, 1, 31))),
        ('before:"2024-02-01"', Before(datetime.date(2024, 2, 1))),
        ("larger:10K", Larger(10 * 1024)),
        ("smaller:2M", Smaller(2 * 1024 * 1024)),
        ("-from:bob invoice", And((Not(Text("bob", "sender")), Text("invoice")))),
        (
            "(from:bob OR from:carol) contract",
            And((Or((Text("bob", "sender"), Text("carol", "sender"))), Text("contract"))),
        ),
        ("10:30", Text("10:30")),
        ("a !!! b", And((a, b))),
        ("a OR ?", a),
        ("a -- b", And((a, b))),
        ("a - b", And((a, b))),
        ("a (!!!)", a),
        ("a NOT ...", a),
        ("a\x00b", And((a, b))),
    ],
)
def test_parse(text: str, expected: Query) -> None:
    assert parse_query(text) == expected


def test_double_dash_is_a_double_negation() -> None:
    assert parse_query("a --b") == And((a, b))


# Parsing: mistakes, with their column.


@pytest.mark.parametrize(
    ("text", "column", "reason"),
    [
        ("", None, "the query is empty; say what to find, e.g. from:bob invoice"),
        ("   ", None, "the query is empty; say what to find, e.g. from:bob invoice"),
        ("!!! ...", None, "the query has nothing to search for: no letters or digits"),
        (
            "-a",
            None,
            "the query only excludes (NOT, -); say what to find as well, e.g. invoice -spam",
        ),
        (
            "NOT a -b",
            None,
            "the query only excludes (NOT, -); say what to find as well, e.g. invoice -spam",
        ),
        (
            "-a OR -b",
            None,
            "the query only excludes (NOT, -); say what to find as well, e.g. invoice -spam",
        ),
        ("a OR", 3, '"OR" needs a term after it'),
        ("a OR )", 3, '"OR" needs a term after it'),
        ("OR a", 1, '"OR" needs a term before it'),
        ("a OR OR b", 3, '"OR" needs a term after it'),
        ("(OR a)", 2, '"OR" needs a term before it'),
        ("AND a", 1, '"AND" needs a term before it'),
        ("a AND", 3, '"AND" needs a term after it'),
        ("a NOT", 3, '"NOT" needs a term after it'),
        ("a NOT OR b", 3, '"NOT" needs a term after it'),
        ("(a b", 1, 'this "(" is not closed; add a ")"'),
        ("a (b (c)", 3, 'this "(" is not closed; add a ")"'),
        ("a b)", 4, '")" has no "(" to close'),
        ("a ()", 3, '"()" holds nothing; put terms inside or remove it'),
        ('a "b c', 3, 'this quote is not closed; add a " after the phrase'),
        ('from:"b c', 6, 'this quote is not closed; add a " after the phrase'),
        ("from:", 1, '"from:" needs a value right after the colon, as in from:bob'),
        ("a to: b", 3, '"to:" needs a value right after the colon, as in to:bob'),
        ("has:pdf", 1, '"has:" knows only "attachment", got "pdf"'),
        (
            "after:2024-01-01 before:2024-13-01",
            18,
            '"before:" needs a date as YYYY-MM-DD, got "2024-13-01"',
        ),
        ("after:2024-1-1", 1, '"after:" needs a date as YYYY-MM-DD, got "2024-1-1"'),
        ("after:yesterday", 1, '"after:" needs a date as YYYY-MM-DD, got "yesterday"'),
        ("after:2024*", 1, '"after:" needs a date as YYYY-MM-DD, got "2024*"'),
        ("larger:5X", 1, '"larger:" needs a size like 500, 10K, 5M or 1G, got "5X"'),
        ("smaller:-1", 1, '"smaller:" needs a size like 500, 10K, 5M or 1G, got "-1"'),
        ("\udcff a", 1, "the query holds bytes that are not UTF-8 text"),
    ],
)
def test_parse_errors(text: str, column: int | None, reason: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(text)
    assert caught.value.column == column
    assert caught.value.reason == reason
    expected = reason if column is None else f"column {column}: {reason}"
    assert str(caught.value) == expected


def test_an_unknown_field_names_the_known_ones() -> None:
    with pytest.raises(QueryError) as caught:
        parse_query("invoice foo:bar")
    assert str(caught.value) == (
        'column 9: unknown field "foo:"; the fields are from:, to:, subject:, attachment:, '
        "has:, after:, before:, larger:, smaller: "
        '(to search for the text itself, put it in quotes: "foo:bar")'
    )


def test_the_query_is_bounded() -> None:
    parse_query("a" * 1000)
    with pytest.raises(QueryError, match=r"^the query has 1,001 characters; at most 1,000$"):
        parse_query("a" * 1001)
    parse_query(" ".join(["x"] * 50))
    with pytest.raises(QueryError, match=r"^column 101: the query has more than 50 terms$"):
        parse_query(" ".join(["x"] * 51))
    parse_query("(" * 20 + "a" + ")" * 20)
    with pytest.raises(QueryError, match=r"^column 21: parentheses are nested more than 20 deep$"):
        parse_query("(" * 21 + "a" + ")" * 21)
    assert parse_query("-" * 996 + "a b") == And((a, b))


def test_a_query_error_ends_the_command_as_a_usage_error() -> None:
    error = QueryError("x", 3)
    assert isinstance(error, UsageError)
    assert error.exit_code is ExitCode.CONFIG
    assert int(error.exit_code) == 10


# Values.


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("500", 500),
        ("10K", 10 * 1024),
        ("10k", 10 * 1024),
        ("10KB", 10 * 1024),
        ("5M", 5 * 1024**2),
        ("1G", 1024**3),
        ("7b", 7),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text", ["", "K", "1.5M", "10 K", "-1", "1T", "1e3", "\u0661\u0660", "99999999G"]
)
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"size|bytes"):
        parse_size(text)


def test_parse_size_is_bounded() -> None:
    assert parse_size("8388608G") == MAX_SIZE
    with pytest.raises(ValueError, match="bytes"):
        parse_size("8388609G")


@pytest.mark.parametrize(
    ("text", "day"),
    [("2024-02-29", datetime.date(2024, 2, 29)), ("0001-01-01", datetime.date(1, 1, 1))],
)
def test_parse_date(text: str, day: datetime.date) -> None:
    assert parse_date(text) == day


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-29",
        "2024-13-01",
        "2024-00-10",
        "0000-01-01",
        "2024-1-1",
        "24-01-01",
        "\uff12\uff10\uff12\uff14-01-01",
        " 2024-01-01",
    ],
)
def test_parse_date_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="date"):
        parse_date(text)


def test_day_start_is_midnight_utc() -> None:
    assert day_start(datetime.date(2024, 1, 1)) == 1704067200
    assert day_start(datetime.date(1970, 1, 1)) == 0


# Compiling: what reaches FTS5.


def test_terms_reach_fts5_as_string_literals_only() -> None:
    compiled = compile_query(parse_query('NEAR(x y) "a ""b" \uff02c from:bob@example.com^ inv*'))
    assert compiled.params["search_1"] == (
        '("NEAR") AND ("x") AND ("y") AND ("a") AND ("b") AND ("""c")'
        ' AND ({sender} : "bob@example.com^") AND ("inv" *)'
    )
    assert compiled.where == "d.id IN (SELECT rowid FROM search.fts WHERE fts MATCH :search_1)"


def test_cjk_terms_are_phrases_of_bigrams() -> None:
    compiled = compile_query(parse_query("東京都庁"))
    assert compiled.params["search_1"] == '"東京 京都 都庁"'


def test_the_conditions_on_docs_are_parameters() -> None:
    compiled = compile_query(
        parse_query("a after:2024-01-01 before:2024-02-01 larger:1K smaller:1M")
    )
    values = sorted(str(v) for k, v in compiled.params.items() if k != "search_rank")
    assert values == ['("a")', "1024", "1048576", "1704067200", "1706745600"]
    assert "2024" not in compiled.where
    assert "1024" not in compiled.where


def test_rank_is_the_free_text_that_is_not_excluded() -> None:
    compiled = compile_query(parse_query("a -b from:c (d OR has:attachment)"))
    assert compiled.rank_match == '("a") OR ("d")'
    assert compile_query(parse_query("from:c has:attachment")).rank_match is None


def test_compile_leaves_out_what_has_nothing_to_find() -> None:
    assert compile_query(And((Text("!"), a))).params["search_1"] == '"a"'
    with pytest.raises(QueryError, match="nothing to search for"):
        compile_query(Or((Text("!"), Text("?"))))
    with pytest.raises(QueryError, match="only excludes"):
        compile_query(And((Not(a), Text("!"))))


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
    sql = f"SELECT d.id FROM search.docs AS d WHERE {compiled.where} ORDER BY {order_by(sort)}"  # noqa: S608
    db.execute(sql, compiled.params).fetchall()
    for value in compiled.params.values():
        if isinstance(value, str):
            assert _OPERATORS.fullmatch(_LITERAL.sub("", value)), value
            assert "\x00" not in value
