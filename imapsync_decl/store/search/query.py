"""The search query language: parse what the user typed, compile it to SQL over the search tables.

The language, as in Gmail:

* ``invoice march`` finds messages with every word (in any text column);
  ``inv*`` is a prefix; ``"exact phrase"`` a phrase.
* ``from:`` (From, Reply-To), ``to:`` (To, Cc, Bcc), ``subject:`` and
  ``attachment:`` (attachment file names) take a word, a prefix ``x*`` or a
  ``"quoted phrase"``; ``from:bob@example.com`` is the phrase of the address's words.
* ``has:attachment``; ``after:2024-01-01`` (from 00:00 UTC that day on) and
  ``before:2024-02-01`` (up to 00:00 UTC that day, excluded); ``larger:10K`` and
  ``smaller:5M`` compare the message size in bytes, with ``K``, ``M`` and ``G`` as
  multiples of 1024.
* ``NOT term`` or ``-term`` excludes; ``a OR b`` is either; ``OR`` binds tighter
  than the implicit AND (``a b OR c`` is ``a AND (b OR c)``); parentheses group;
  ``AND`` may be written but changes nothing.

Every term goes through :func:`text.searchable` and reaches FTS5 as a string
literal, so nothing the user types is ever FTS5 syntax: the only FTS5 operators in
a MATCH string are those written here. A term without letters or digits is
dropped. Mistakes are :class:`QueryError` with the column where they are.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from imapsync_decl.errors import UsageError
from imapsync_decl.store.search.text import searchable

MAX_QUERY_CHARS = 1000
MAX_TERMS = 50
MAX_DEPTH = 20
MAX_SIZE = 2**53  # bytes; far beyond any message, and exact in SQLite and JSON
SORTS = ("date", "-date", "relevance")

TextField = Literal["sender", "recipients", "subject", "attachment"]
# The name typed before the colon -> the FTS5 column it searches.
TEXT_FIELDS: dict[str, TextField] = {
    "from": "sender",
    "to": "recipients",
    "subject": "subject",
    "attachment": "attachment",
}
FIELDS = ("from", "to", "subject", "attachment", "has", "after", "before", "larger", "smaller")

# SQLite orders NULL before every value, so DESC puts undated messages last, and the
# index on docs (date) serves the order.
_NEWEST = "d.date DESC, d.id DESC"
# bm25() weights per FTS5 column, in table order: sender, recipients, subject, body,
# attachment, other. A word in the subject or the sender says more about a message
# than one in a long body or in a Message-ID.
_RANKED = (
    "WITH ranked AS MATERIALIZED (SELECT rowid AS doc_id,"
    " bm25(fts, 2.0, 1.0, 3.0, 1.0, 1.0, 0.5) AS score"
    " FROM search.fts WHERE fts MATCH :search_rank) "
)
_BY_RELEVANCE = "coalesce(r.score, 0), d.date DESC, d.id DESC"


class QueryError(UsageError):
    """The query cannot be searched: ``column 14: "before:" needs a date as ...``.

    ``column`` is the 1-based place in the query text, or None when the mistake is
    the query as a whole (empty, only exclusions, too long)."""

    def __init__(self, reason: str, column: int | None = None) -> None:
        super().__init__(reason if column is None else f"column {column}: {reason}")
        self.reason = reason
        self.column = column


# The query, as frozen values.


@dataclass(frozen=True)
class Text:
    """Words to find, as typed: in one column (``field``) or in every text column.

    More than one word (``"a phrase"``, ``bob@example.com``) is a phrase; ``prefix``
    makes the last word a prefix."""

    text: str
    field: TextField | None = None
    prefix: bool = False


@dataclass(frozen=True)
class HasAttachment:
    """``has:attachment``."""


@dataclass(frozen=True)
class After:
    """Messages dated on ``day`` (00:00 UTC) or later."""

    day: datetime.date


@dataclass(frozen=True)
class Before:
    """Messages dated before ``day`` (00:00 UTC)."""

    day: datetime.date


@dataclass(frozen=True)
class Larger:
    """Messages of more than ``size`` bytes."""

    size: int


@dataclass(frozen=True)
class Smaller:
    """Messages of fewer than ``size`` bytes."""

    size: int


@dataclass(frozen=True)
class Not:
    term: Query


@dataclass(frozen=True)
class And:
    terms: tuple[Query, ...]


@dataclass(frozen=True)
class Or:
    terms: tuple[Query, ...]


Query = Text | HasAttachment | After | Before | Larger | Smaller | Not | And | Or
Leaf = Text | HasAttachment | After | Before | Larger | Smaller


@dataclass(frozen=True)
class CompiledQuery:
    """A query as SQL: ``where`` is a condition over ``search.docs AS d`` with named
    parameters (``:search_1`` ...), all in ``params``.

    ``params`` also holds ``search_rank``, the FTS5 MATCH string of the free-text
    terms that the ``relevance`` order ranks by (None when there are none), so one
    mapping serves the WHERE clause and the :class:`Ordering` of any sort. Use it
    as ``o = ordering(q, sort)``, ``conn.execute(f"{o.before}SELECT ... FROM
    search.docs AS d{o.join} WHERE {q.where} ORDER BY {o.order_by}", q.params)``,
    adding further named parameters of your own."""

    where: str
    params: dict[str, str | int | None]

    @property
    def rank_match(self) -> str | None:
        value = self.params.get("search_rank")
        return value if isinstance(value, str) else None


# Values.

_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_SIZE = re.compile(r"([0-9]{1,15})([KMG]?)B?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_date(text: str) -> datetime.date:
    """``YYYY-MM-DD`` as a date; ValueError for anything else (``2024-13-01``, ``2024-1-1``)."""
    match = _DATE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a date as YYYY-MM-DD: {text!r}")
    year, month, day = (int(g) for g in match.groups())
    try:
        return datetime.date(year, month, day)
    except ValueError:
        raise ValueError(f"not a date of the calendar: {text!r}") from None


def parse_size(text: str) -> int:
    """A size in bytes: ``500``, ``10K``, ``5M``, ``1G`` (multiples of 1024; the letter
    in either case, an optional trailing ``B``: ``10KB``); ValueError for anything else."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size like 500, 10K, 5M or 1G: {text!r}")
    size = int(match.group(1)) * _UNITS[match.group(2).upper()]
    if size > MAX_SIZE:
        raise ValueError(f"more than {MAX_SIZE} bytes: {text!r}")
    return size


def day_start(day: datetime.date) -> int:
    """Unix seconds of 00:00 UTC on ``day``."""
    return int(datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp())


# Lexing.


@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", "-", "NOT", "OR", "AND", "word" or "field"
    column: int
    text: str = ""  # a word or a field's value, without quotes and without a trailing *
    raw: str = ""  # a field's value as typed, for messages
    prefix: bool = False
    quoted: bool = False
    field: str = ""


_FIELD = re.compile(r"([A-Za-z]+):(.*)", re.DOTALL)
_OPERATORS = ("NOT", "OR", "AND")
_FIELD_LIST = ", ".join(f"{name}:" for name in FIELDS)


def _is_space(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch) == "Cc"


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def tokens(self) -> Iterator[_Token]:
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            column = self.pos + 1
            if _is_space(ch):
                self.pos += 1
            elif ch in "()":
                self.pos += 1
                yield _Token("(" if ch == "(" else ")", column)
            elif ch == '"':
                phrase, prefix = self._quoted()
                yield _Token("word", column, phrase, f'"{phrase}"', prefix, quoted=True)
            elif ch == "-" and self._attached(self.pos + 1):
                self.pos += 1
                yield _Token("-", column)
            else:
                yield self._word(column)

    def _attached(self, pos: int) -> bool:
        return pos < len(self.text) and not _is_space(self.text[pos]) and self.text[pos] != ")"

    def _quoted(self) -> tuple[str, bool]:
        start = self.pos
        end = self.text.find('"', start + 1)
        if end < 0:
            raise QueryError('this quote is not closed; add a " after the phrase', start + 1)
        self.pos = end + 1
        prefix = False
        while self.pos < len(self.text) and self.text[self.pos] == "*":
            prefix = True
            self.pos += 1
        return self.text[start + 1 : end], prefix

    def _word(self, column: int) -> _Token:
        start = self.pos
        text = self.text
        while (
            self.pos < len(text) and not _is_space(text[self.pos]) and text[self.pos] not in '()"'
        ):
            self.pos += 1
        word = text[start : self.pos]
        if word in _OPERATORS:
            return _Token(word, column)
        match = _FIELD.fullmatch(word)
        if match is None:
            bare = word.rstrip("*")
            return _Token("word", column, bare, word, prefix=bare != word)
        name, value = match.group(1).lower(), match.group(2)
        if name not in FIELDS:
            raise QueryError(
                f'unknown field "{match.group(1)}:"; the fields are {_FIELD_LIST} '
                f'(to search for the text itself, put it in quotes: "{word}")',
                column,
            )
        if value:
            bare = value.rstrip("*")
            return _Token("field", column, bare, value, bare != value, field=name)
        if self.pos < len(text) and text[self.pos] == '"':
            phrase, prefix = self._quoted()
            return _Token("field", column, phrase, f'"{phrase}"', prefix, True, name)
        raise QueryError(f'"{name}:" needs a value right after the colon, as in {name}:bob', column)


# Parsing.


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.terms = 0

    def _peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _needs_term_after(self, operator: _Token, name: str) -> None:
        after = self._peek()
        if after is None or after.kind in (")", "OR", "AND"):
            raise QueryError(f'"{name}" needs a term after it', operator.column)

    def query(self) -> Query | None:
        node = self._all(0)
        extra = self._peek()
        if extra is not None:
            raise QueryError('")" has no "(" to close', extra.column)
        return node

    def _all(self, depth: int) -> Query | None:
        """Terms up to the end or a ")", all required (the implicit AND)."""
        terms: list[Query | None] = []
        while (token := self._peek()) is not None and token.kind != ")":
            if token.kind == "OR" or (token.kind == "AND" and not terms):
                raise QueryError(f'"{token.kind}" needs a term before it', token.column)
            if token.kind == "AND":
                self._take()
                self._needs_term_after(token, "AND")
                continue
            terms.append(self._either(depth))
        return _join(And, terms)

    def _either(self, depth: int) -> Query | None:
        """Terms joined by OR."""
        terms = [self._negated(depth)]
        while (token := self._peek()) is not None and token.kind == "OR":
            self._take()
            self._needs_term_after(token, "OR")
            terms.append(self._negated(depth))
        return _join(Or, terms)

    def _negated(self, depth: int) -> Query | None:
        negations = 0
        while (token := self._peek()) is not None and token.kind in ("NOT", "-"):
            self._take()
            self._needs_term_after(token, token.kind)
            negations += 1
        term = self._primary(depth)
        if term is None or negations % 2 == 0:
            return term
        return Not(term)

    def _primary(self, depth: int) -> Query | None:
        token = self._take()
        if token.kind == "(":
            if depth >= MAX_DEPTH:
                raise QueryError(f"parentheses are nested more than {MAX_DEPTH} deep", token.column)
            start = self.pos
            group = self._all(depth + 1)
            close = self._peek()
            if close is None:
                raise QueryError('this "(" is not closed; add a ")"', token.column)
            self._take()
            if self.pos - 1 == start:
                raise QueryError('"()" holds nothing; put terms inside or remove it', token.column)
            return group
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise QueryError(f"the query has more than {MAX_TERMS} terms", token.column)
        return _leaf(token)


def _leaf(token: _Token) -> Leaf | None:
    if token.kind == "word":
        return Text(token.text, None, token.prefix) if _findable(token.text) else None
    name = token.field
    value = token.text if token.quoted else token.raw
    if name in TEXT_FIELDS:
        text = Text(token.text, TEXT_FIELDS[name], token.prefix)
        return text if _findable(text.text) else None
    if name == "has":
        if value.lower() != "attachment":
            raise QueryError(f'"has:" knows only "attachment", got "{value}"', token.column)
        return HasAttachment()
    if name in ("after", "before"):
        try:
            day = parse_date(value)
        except ValueError:
            raise QueryError(
                f'"{name}:" needs a date as YYYY-MM-DD, got "{value}"', token.column
            ) from None
        return After(day) if name == "after" else Before(day)
    try:
        size = parse_size(value)
    except ValueError:
        raise QueryError(
            f'"{name}:" needs a size like 500, 10K, 5M or 1G, got "{value}"', token.column
        ) from None
    return Larger(size) if name == "larger" else Smaller(size)


def _join(kind: type[And] | type[Or], terms: list[Query | None]) -> Query | None:
    """``kind`` of the terms that are left, flattened; a single term stands alone."""
    flat: list[Query] = []
    for term in terms:
        if isinstance(term, kind):
            flat.extend(term.terms)
        elif term is not None:
            flat.append(term)
    if not flat:
        return None
    return flat[0] if len(flat) == 1 else kind(tuple(flat))


def _findable(text: str) -> bool:
    """Whether FTS5 finds a word in ``text``: letters, digits or private-use characters
    (the characters its unicode61 tokenizer keeps; punctuation and symbols separate)."""
    return any(
        (cat := unicodedata.category(ch))[0] in "LN" or cat == "Co" for ch in searchable(text)
    )


def _prune(query: Query) -> Query | None:
    """``query`` without the text terms that have nothing to find."""
    if isinstance(query, Text):
        return query if _findable(query.text) else None
    if isinstance(query, Not):
        term = _prune(query.term)
        return None if term is None else Not(term)
    if isinstance(query, And | Or):
        return _join(type(query), [_prune(t) for t in query.terms])
    return query


def _finds_something(query: Query) -> bool:
    """Whether some term of ``query`` is not excluded by a NOT."""
    if isinstance(query, Not):
        return False
    if isinstance(query, And | Or):
        return any(_finds_something(t) for t in query.terms)
    return True


def _checked(query: Query | None, had_terms: bool) -> Query:
    if query is None:
        if had_terms:
            raise QueryError("the query has nothing to search for: no letters or digits")
        raise QueryError("the query is empty; say what to find, e.g. from:bob invoice")
    if not _finds_something(query):
        raise QueryError(
            "the query only excludes (NOT, -); say what to find as well, e.g. invoice -spam"
        )
    return query


def parse_query(text: str) -> Query:
    """The query ``text`` as a value, with terms that have nothing to find left out;
    :class:`QueryError` if it is not a query."""
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"the query has {len(text):,} characters; at most {MAX_QUERY_CHARS:,}")
    for pos, ch in enumerate(text):
        if unicodedata.category(ch) == "Cs":
            raise QueryError("the query holds bytes that are not UTF-8 text", pos + 1)
    tokens = list(_Lexer(text).tokens())
    return _checked(_Parser(tokens).query(), bool(tokens))


# Compiling.


def _fts_string(text: str) -> str:
    """``text`` as an FTS5 string literal: normalised, controls as spaces, quotes doubled."""
    normal = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in searchable(text))
    return '"' + " ".join(normal.split()).replace('"', '""') + '"'


class _Compiler:
    def __init__(self) -> None:
        self.params: dict[str, str | int | None] = {}

    def param(self, value: str | int) -> str:
        name = f"search_{len(self.params) + 1}"
        self.params[name] = value
        return f":{name}"

    def fts(self, query: Query) -> str | None:
        """``query`` as one FTS5 expression, if it is text terms only (no NOT)."""
        if isinstance(query, Text):
            phrase = _fts_string(query.text) + (" *" if query.prefix else "")
            return phrase if query.field is None else f"{{{query.field}}} : {phrase}"
        if isinstance(query, And | Or):
            parts = [self.fts(t) for t in query.terms]
            if any(p is None for p in parts):
                return None
            operator = " AND " if isinstance(query, And) else " OR "
            return operator.join(f"({p})" for p in parts)
        return None

    def match(self, expression: str) -> str:
        # Only a parameter's name is interpolated; the expression is bound.
        name = self.param(expression)
        return f"d.id IN (SELECT rowid FROM search.fts WHERE fts MATCH {name})"  # noqa: S608

    def sql(self, query: Query) -> str:
        expression = self.fts(query)
        if expression is not None:
            return self.match(expression)
        if isinstance(query, HasAttachment):
            return "d.has_attachment = 1"
        if isinstance(query, After):
            return f"(d.date IS NOT NULL AND d.date >= {self.param(day_start(query.day))})"
        if isinstance(query, Before):
            return f"(d.date IS NOT NULL AND d.date < {self.param(day_start(query.day))})"
        if isinstance(query, Larger):
            return f"d.size > {self.param(query.size)}"
        if isinstance(query, Smaller):
            return f"d.size < {self.param(query.size)}"
        if isinstance(query, Not):
            return f"NOT ({self.sql(query.term)})"
        assert isinstance(query, And | Or)
        # The text terms of a conjunction (or disjunction) become one MATCH, the rest
        # conditions on d.
        operator = " AND " if isinstance(query, And) else " OR "
        texts = [e for t in query.terms if (e := self.fts(t)) is not None]
        parts = [self.match(operator.join(f"({e})" for e in texts))] if texts else []
        parts += [self.sql(t) for t in query.terms if self.fts(t) is None]
        return operator.join(f"({p})" for p in parts)


def _ranked_terms(query: Query) -> Iterator[Text]:
    """The free-text terms (no field) that are not excluded."""
    if isinstance(query, Text) and query.field is None:
        yield query
    elif isinstance(query, And | Or):
        for term in query.terms:
            yield from _ranked_terms(term)


def compile_query(query: Query) -> CompiledQuery:
    """``query`` as a WHERE condition over ``search.docs AS d`` and its parameters.

    Text terms are FTS5 conditions ``d.id IN (SELECT rowid FROM search.fts WHERE
    fts MATCH :search_N)``, the text terms of one conjunction in one MATCH; the
    rest are conditions on ``d``. A term with nothing to find is left out;
    :class:`QueryError` if nothing is left to find."""
    pruned = _checked(_prune(query), had_terms=True)
    compiler = _Compiler()
    where = compiler.sql(pruned)
    ranked = [compiler.fts(t) for t in _ranked_terms(pruned)]
    params = dict(compiler.params)
    params["search_rank"] = " OR ".join(f"({e})" for e in ranked if e) or None
    return CompiledQuery(where, params)


@dataclass(frozen=True)
class Ordering:
    """How a statement over ``search.docs AS d`` is put in one of the sorts:
    ``before`` its SELECT, ``join`` after its FROM, and its ORDER BY list."""

    before: str
    join: str
    order_by: str


def ordering(compiled: CompiledQuery, sort: str) -> Ordering:
    """The :class:`Ordering` of ``date`` (oldest first), ``-date`` (newest first) or
    ``relevance``; undated messages come last.

    ``relevance`` ranks by bm25 over the FTS rows of the free-text terms
    (``search_rank``, joined with OR), lower being better. The scores are computed
    in one pass, as a materialised table joined to the documents: bm25 weighs each
    term by how many documents hold it, which FTS5 works out once per query, so
    a score looked up per document (a correlated subquery) would read the term's
    whole list of documents for every one of them. A document that matches none
    of the terms (found through a field or a date) ranks 0, after every match.
    Without free-text terms the order is that of ``-date``."""
    if sort == "relevance" and compiled.rank_match is not None:
        return Ordering(_RANKED, " LEFT JOIN ranked r ON r.doc_id = d.id", _BY_RELEVANCE)
    return Ordering("", "", order_by("-date" if sort == "relevance" else sort))


def order_by(sort: str) -> str:
    """An ORDER BY list for ``date`` or ``-date`` over ``search.docs AS d``; for
    ``relevance``, see :func:`ordering`."""
    if sort == "date":
        return "d.date IS NULL, d.date, d.id"
    if sort == "-date":
        return _NEWEST
    if sort == "relevance":
        raise ValueError("the relevance order needs its query: use ordering()")
    raise QueryError(f'unknown sort "{sort}"; the sorts are {", ".join(SORTS)}')
