"""The search query language without a database: parsed values, errors at their column, sizes and
dates, and the SQL and FTS5 strings a query compiles to."""

from __future__ import annotations

import datetime

import pytest

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
    parse_date,
    parse_query,
    parse_size,
)

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
