"""Extraction for the search index: fixture messages as real mail has them, limits,
robustness on arbitrary bytes, and the documents found through an FTS5 table."""

from __future__ import annotations

import base64
import email.utils
import quopri
import sqlite3
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from email.message import Message
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imapsync_decl.store.search import extract as extract_module
from imapsync_decl.store.search.extract import (
    MAX_BODY_TEXT,
    MAX_DEPTH,
    MAX_PART_TEXT,
    MAX_PARTS,
    SearchDocument,
    extract,
    readable,
)
from imapsync_decl.store.search.markup import MAX_NESTING, html_text
from imapsync_decl.store.search.text import FTS_TOKENIZER, searchable

MAIL = Path(__file__).parent / "fixtures" / "mail"
FIXTURES = sorted(MAIL.glob("*.eml"))
INTERNAL = datetime(2024, 11, 1, 8, 30, tzinfo=UTC)


def mail(name: str) -> bytes:
    return (MAIL / name).read_bytes()


def doc(name: str, internal_date: datetime | None = None) -> SearchDocument:
    return extract(mail(name), internal_date)


# Header fields --------------------------------------------------------------------------

# (fixture, field, expected value) for the decoded display fields.
DISPLAYS = [
    ("latin1-q.eml", "subject_display", "Grüße aus Köln"),
    ("latin1-q.eml", "from_display", "Jürgen Müller <juergen.mueller@example.de>"),
    ("latin2-b.eml", "subject_display", "Zażółć gęślą jaźń"),
    ("latin2-b.eml", "from_display", "Łukasz Wójcik <lukasz@example.pl>"),
    ("windows-1252.eml", "subject_display", "\u201cSpecial\u201d offer \u2013 only 100 \u20ac"),
    ("windows-1252.eml", "from_display", "O'Brien, Sean <sean@example.ie>"),
    ("koi8-r.eml", "subject_display", "Привет из Москвы"),
    ("koi8-r.eml", "from_display", "Иван Петров <ivan@example.ru>"),
    ("iso-2022-jp.eml", "subject_display", "東京都庁の会議について"),
    ("iso-2022-jp.eml", "from_display", "山田太郎 <yamada@example.jp>"),
    ("shift-jis.eml", "subject_display", "見積書の送付"),
    ("gb2312.eml", "subject_display", "关于北京会议"),
    ("gb2312.eml", "from_display", "王小明 <wang@example.cn>"),
    ("big5.eml", "subject_display", "臺北開會通知"),
    ("utf8-folded.eml", "subject_display", "Grüße und Dank für die Förderung"),
    ("utf8-folded.eml", "from_display", "Françoise Lefèvre <francoise@example.fr>"),
    ("missing-charset-cp1252.eml", "subject_display", "Café crème"),
    ("missing-charset-cp1252.eml", "from_display", "René <rene@example.fr>"),
    ("missing-charset-utf8.eml", "subject_display", "Bestätigung"),
    ("unknown-charset.eml", "subject_display", "Qapla' and café"),
    ("no-separator.eml", "subject_display", "cron output"),
]


@pytest.mark.parametrize(("name", "attribute", "expected"), DISPLAYS)
def test_header_fields_are_decoded(name: str, attribute: str, expected: str) -> None:
    document = doc(name)
    assert getattr(document, attribute) == expected
    if attribute == "subject_display":
        assert document.subject == searchable(expected, document=True)


def test_address_fields_take_every_address_and_display_name() -> None:
    document = doc("latin1-q.eml")
    assert document.to_display == "Anna Schmidt <anna@example.com>"
    assert "Björn" in document.recipients
    assert "bjoern@example.com" in document.recipients
    assert "anna@example.com" in document.recipients
    assert "juergen.mueller@example.de" in document.sender
    folded = doc("utf8-folded.eml")
    assert "Françoise au bureau" in folded.sender  # Reply-To, its encoded word folded inside
    assert "bureau@example.fr" in folded.sender


def test_other_holds_message_id_list_id_and_date_text() -> None:
    other = doc("latin1-q.eml").other
    assert "20241014091240.4F2A1@mx.example.de" in other
    assert "stammtisch.lists.example.de" in other
    assert "Mon, 14 Oct 2024 09:12:40 +0200" in other


# Body text ------------------------------------------------------------------------------

BODIES = [
    ("latin1-q.eml", "schöne Grüße vom Rhein"),
    ("latin1-q.eml", "Café Müller."),  # a soft line break in the middle of a word
    ("latin2-b.eml", "Dzień dobry, spotkanie w Łodzi."),
    ("windows-1252.eml", "The \u201cdeluxe\u201d package costs 250 \u20ac \u2013 naïve"),
    ("koi8-r.eml", "Встреча в пятницу, Ольга."),
    ("iso-2022-jp.eml", searchable("来週の会議は新宿で行います。")),
    ("shift-jis.eml", searchable("お見積もりを添付します。")),
    ("gb2312.eml", searchable("朱镕基在北京开会。")),  # a GBK character in text labelled GB2312
    ("big5.eml", searchable("會議在臺北舉行。")),
    ("utf8-folded.eml", "Merci beaucoup pour la Förderung — à bientôt."),
    ("missing-charset-utf8.eml", "Ihre Bestellung über 3 Stück wurde bestätigt."),
    ("missing-charset-cp1252.eml", "Le café crème coûte 3 € à Genève."),
    ("unknown-charset.eml", "Naïve utf8 text in an unknown charset."),
    ("unknown-charset.eml", "Windows text déjà vu."),
    ("unknown-charset.eml", "notcompressed plain words"),  # charset=zlib is not applied
    ("truncated-multipart.eml", "The first part arrived: survivorword."),
    ("no-separator.eml", "backup finished without separatorword errors"),
    ("broken-date.eml", "The date header above is garbage."),
]


@pytest.mark.parametrize(("name", "expected"), BODIES)
def test_body_text_is_decoded(name: str, expected: str) -> None:
    document = doc(name)
    assert expected in document.body
    assert document.extracted


def test_html_is_text_without_markup_scripts_or_styles() -> None:
    document = doc("html-only.eml")
    body = document.body
    for text in ("Café & Crème", "Prices from 10 € <today> only", "Unsubscribe here"):
        assert text in body
    assert "alpha" in body.split()
    assert "beta" in body.split()  # two table cells stay two words
    for hidden in ("hiddenscript", "hiddenstyle", "hiddencomment", "hiddennoscript", "font-family"):
        assert hidden not in body
    for markup in ("<p>", "<h1>", "&amp;", "&euro;", "&nbsp;", "<td>"):
        assert markup not in body
    assert not document.has_attachment


def _html_mail(markup: str) -> bytes:
    return b"Subject: html\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + markup.encode()


def test_deeply_nested_html_is_read_in_linear_time() -> None:
    depth = 160 * MAX_NESTING
    markup = (
        "<div>" * depth + "deepword <!-- hiddencomment --><b>bold</b>er &eacute;t&eacute;"
        "<style>hiddenstyle</style><p>next<script>hiddenscript"
    )
    started = time.monotonic()
    body = extract(_html_mail(markup)).body
    assert time.monotonic() - started < 5  # the HTML5 parser takes more than 15 s
    assert body.split() == ["deepword", "bolder", "été", "next"]


def test_the_linear_reading_gives_the_words_of_the_parser() -> None:
    raw = mail("html-only.eml")
    markup = quopri.decodestring(raw.split(b"\n\n", 1)[1]).decode()
    deep = "<div>" * (MAX_NESTING + 1) + markup
    assert extract(_html_mail(deep)).body.split() == extract(raw).body.split()
    assert html_text(markup).split() == html_text(deep).split()


def test_nested_alternative_takes_the_plain_text_and_names_the_attachment() -> None:
    document = doc("nested.eml")
    assert "plainword" in document.body
    assert "htmlonlyword" not in document.body
    assert "multi-part message in MIME format" not in document.body
    assert document.attachment_names == ("report-q3.pdf",)
    assert document.has_attachment
    assert document.attachment == "report-q3.pdf"


def test_an_inline_image_of_a_related_body_is_not_an_attachment() -> None:
    raw = mail("nested.eml")
    without_pdf = raw[: raw.rindex(b"--==outer==\r\nContent-Type: application/pdf")]
    document = extract(without_pdf + b"--==outer==--\r\n")
    assert not document.has_attachment
    assert document.attachment_names == ()
    assert "plainword" in document.body


def test_html_alternative_is_taken_when_there_is_no_plain_one() -> None:
    raw = mail("nested.eml").replace(
        b"Content-Type: text/plain; charset=us-ascii", b"Content-Type: text/enriched"
    )
    body = extract(raw).body
    assert "htmlonlyword" in body
    assert "plainword" not in body


def test_html_alternative_is_taken_when_the_plain_one_is_empty() -> None:
    raw = mail("nested.eml").replace(b"Plain version: revenue grew by plainword percent.", b" ")
    document = extract(raw)
    assert document.body == "HTML version: htmlonlyword"
    assert document.attachment_names == ("report-q3.pdf",)


def test_rfc2231_names_with_charsets_and_continuations() -> None:
    document = doc("rfc2231.eml")
    assert document.attachment_names == (
        "Übersicht Q3.xlsx",
        "Jahresbericht für 2024.pdf",
        "Straßen.txt",
    )
    assert "textattachmentcontent" not in document.body  # a named text part is an attachment
    assert "Anbei die Unterlagen." in document.body


def test_rfc2047_encoded_file_names_and_unnamed_binary_parts() -> None:
    document = doc("rfc2047-filename.eml")
    assert document.attachment_names == ("Angebot König.pdf",)
    assert document.has_attachment
    assert document.body == "Siehe Anhang."


def test_a_forwarded_message_is_an_attachment_whose_text_is_body() -> None:
    document = doc("forwarded.eml")
    assert "See the forwarded message." in document.body
    assert "Vertragsentwurf für Zebra GmbH" in document.body
    assert "innerbodyword" in document.body
    assert document.attachment_names == ("Vertragsentwurf für Zebra GmbH", "contract.doc")
    assert document.has_attachment
    assert document.subject_display == "Fwd: Contract draft"


def test_only_one_level_of_forwarded_messages_is_read() -> None:
    inner = mail("forwarded.eml")
    outer = b"From: a@example.com\r\nSubject: twice\r\nContent-Type: message/rfc822\r\n\r\n" + inner
    document = extract(outer)
    assert "Fwd: Contract draft" in document.body
    assert "See the forwarded message." in document.body
    assert "innerbodyword" not in document.body
    assert "Fwd: Contract draft" in document.attachment_names


# Broken mail ----------------------------------------------------------------------------


def test_garbage_gives_a_document() -> None:
    raw = mail("garbage.eml")
    document = extract(raw, INTERNAL)
    assert document.size == len(raw)
    assert document.date == INTERNAL
    assert document.body  # read as Windows-1252 text, not dropped
    assert "\x00" not in document.body


def test_a_truncated_multipart_keeps_what_arrived() -> None:
    document = doc("truncated-multipart.eml")
    assert document.attachment_names == ("photos.zip",)
    assert document.subject_display == "Cut off in transit"


def test_headers_stay_when_the_body_cannot_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(html: str) -> str:
        raise RuntimeError("parser failure")

    monkeypatch.setattr(extract_module, "html_text", broken)
    document = doc("html-only.eml")
    assert not document.extracted
    assert document.body == ""
    assert document.subject_display == "Autumn sale"
    assert document.from_display == "Newsletter <news@shop.example>"
    assert doc("latin1-q.eml").extracted  # plain text does not need the HTML parser


# Dates ----------------------------------------------------------------------------------


def test_the_date_header_is_utc() -> None:
    assert doc("latin1-q.eml", INTERNAL).date == datetime(2024, 10, 14, 7, 12, 40, tzinfo=UTC)
    assert doc("shift-jis.eml").date == datetime(2024, 10, 6, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "date",
    [
        "Tue, 35 Foo 20x1 99:99:99 +9999",
        "Wed, 31 Dec 1969 23:59:59 +0000",
        "Fri, 01 Jan 2100 00:00:00 +0000",
        "",
    ],
)
def test_a_broken_or_absurd_date_falls_back_to_the_internal_date(date: str) -> None:
    raw = mail("broken-date.eml").replace(b"Tue, 35 Foo 20x1 99:99:99 +9999", date.encode("ascii"))
    assert extract(raw, INTERNAL).date == INTERNAL
    assert extract(raw).date is None


def test_a_date_up_to_a_day_ahead_is_kept() -> None:
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=20)
    header = soon.strftime("%a, %d %b %Y %H:%M:%S +0000").encode("ascii")
    raw = mail("broken-date.eml").replace(b"Tue, 35 Foo 20x1 99:99:99 +9999", header)
    assert extract(raw, INTERNAL).date == soon


def test_the_internal_date_is_given_in_utc() -> None:
    local = datetime(2024, 11, 1, 10, 30, tzinfo=timezone(timedelta(hours=2)))
    naive = datetime(2024, 11, 1, 8, 30)
    raw = mail("broken-date.eml")
    assert extract(raw, local).date == INTERNAL
    assert extract(raw, naive).date == INTERNAL
    without = raw.replace(b"Date: Tue, 35 Foo 20x1 99:99:99 +9999\r\n", b"")
    assert extract(without, local).date == INTERNAL


# Limits ---------------------------------------------------------------------------------


def _multipart(parts: list[bytes], boundary: bytes = b"b") -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    return (
        b"Subject: many\r\nContent-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\n"
        b"" + body + b"--" + boundary + b"--\r\n"
    )


def _text_part(text: str) -> bytes:
    return b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text.encode()


def test_at_most_max_parts_are_read() -> None:
    raw = _multipart([_text_part(f"word{i}x") for i in range(MAX_PARTS + 500)])
    words = extract(raw).body.split()
    assert "word0x" in words
    assert f"word{MAX_PARTS - 2}x" in words
    assert f"word{MAX_PARTS + 100}x" not in words
    assert extract(raw).subject_display == "many"


def test_parts_nested_too_deep_are_not_read() -> None:
    part = _text_part("deepest")
    for level in range(MAX_DEPTH + 10, 0, -1):
        boundary = f"level{level}".encode()
        part = (
            b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\n"
            b"--" + boundary + b"\r\n" + _text_part(f"at{level}") + b"\r\n"
            b"--" + boundary + b"\r\n" + part + b"\r\n--" + boundary + b"--"
        )
    words = extract(b"Subject: deep\r\n" + part).body.split()
    assert "at1" in words
    assert f"at{MAX_DEPTH}" in words
    assert f"at{MAX_DEPTH + 2}" not in words
    assert "deepest" not in words


def test_thousands_of_nested_multiparts_do_not_raise() -> None:
    depth = 3000
    opening = b"".join(
        f"Content-Type: multipart/mixed; boundary=n{i}\r\n\r\n--n{i}\r\n".encode()
        for i in range(depth)
    )
    document = extract(b"Subject: nest\r\n" + opening + _text_part("bottom"))
    assert document.subject_display == "nest"
    assert "bottom" not in document.body


def test_text_is_cut_per_part_and_per_message() -> None:
    big = "ab " * (MAX_PART_TEXT // 2)
    one = extract(b"Subject: big\r\n\r\n" + big.encode()).body
    assert len(one) <= MAX_PART_TEXT
    assert len(one) > MAX_PART_TEXT - 10
    three = extract(_multipart([_text_part(big), _text_part(big), _text_part(big)])).body
    assert len(three) <= MAX_BODY_TEXT
    assert len(three) > MAX_BODY_TEXT - 10


def _peak(raw: bytes) -> tuple[SearchDocument, int]:
    tracemalloc.start()
    try:
        document = extract(raw)
        return document, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_20_mb_message_takes_a_few_times_its_size() -> None:
    payload = bytes(range(256)) * (15 * 1024 * 1024 // 256)
    raw = _multipart(
        [
            _text_part("see the attached archive"),
            b"Content-Type: application/octet-stream; name=big.bin\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(payload),
            _text_part("a word after the archive"),
        ]
    )
    assert len(raw) > 20 * 1024 * 1024
    document, peak = _peak(raw)
    assert document.attachment_names == ("big.bin",)
    assert "see the attached archive" in document.body
    assert "a word after the archive" in document.body
    assert peak < 3 * len(raw)


@pytest.mark.parametrize("line_end", ["\r\n", " "])
def test_a_20_mb_text_takes_a_few_times_its_size(line_end: str) -> None:
    line = "Grüße aus der Ferne." + line_end
    text = (line * (20 * 1024 * 1024 // len(line))).encode()
    raw = _multipart([_text_part("first"), _text_part(text.decode()), _text_part("last")])
    document, peak = _peak(raw)
    assert document.body.startswith("first\nGrüße aus der Ferne.")
    assert document.body.endswith("\nlast")
    assert MAX_PART_TEXT / 2 < len(document.body) < MAX_PART_TEXT
    assert peak < 5 * len(raw)


def test_a_flood_of_short_lines_takes_a_few_times_its_size() -> None:
    raw = b"Subject: dashes\r\n\r\n" + b"--\r\n" * (5 * 1024 * 1024)
    document, peak = _peak(raw)
    assert document.subject_display == "dashes"
    assert peak < 3 * len(raw)
    many = _multipart([_text_part("first"), b"\r\n" + b"a\r\n" * 6_000_000, _text_part("lastpart")])
    document, peak = _peak(many)
    assert document.body.startswith("first\na\r\n")
    assert document.body.endswith("\nlastpart")  # the part after the cut one is there
    assert peak < 3 * len(many)


# Never raises ---------------------------------------------------------------------------


def _well_formed(document: SearchDocument) -> None:
    for item in fields(document):
        value = getattr(document, item.name)
        if isinstance(value, str):
            value.encode("utf-8")  # no lone surrogates: the database takes every text
    for name in document.attachment_names:
        name.encode("utf-8")
    assert document.date is None or document.date.tzinfo is UTC


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    document = extract(raw)
    assert document.size == len(raw)
    _well_formed(document)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(mail(draw(st.sampled_from([path.name for path in FIXTURES]))))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if action == "flip" and position < len(raw):
            raw[position] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del raw[position:]
        elif action == "insert":
            raw[position:position] = draw(
                st.sampled_from([b"\r\n", b"\n\n", b"=?", b"?=", b"--", b";", b'"', b"\x00"])
                | st.binary(max_size=20)
            )
        elif action == "delete":
            del raw[position : position + draw(st.integers(1, 40))]
    return bytes(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_fixtures_never_raise(raw: bytes) -> None:
    document = extract(raw, INTERNAL)
    assert document.size == len(raw)
    _well_formed(document)


def _whole_parser_only(raw: bytes) -> object:
    return extract_module._parse_tree(raw)


@pytest.mark.parametrize("path", sorted(MAIL.glob("*.eml")), ids=lambda p: p.name)
def test_the_quick_single_part_parse_gives_what_the_whole_parser_gives(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = path.read_bytes()
    variants = [raw, raw.replace(b"\r\n", b"\n"), raw.replace(b"\r\n", b"\r")]
    quick = [(extract(r, INTERNAL), readable(r)) for r in variants]
    monkeypatch.setattr(extract_module, "_parse", _whole_parser_only)
    assert quick == [(extract(r, INTERNAL), readable(r)) for r in variants]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_the_quick_parse_agrees_on_mutated_mail(raw: bytes) -> None:
    quick = extract(raw, INTERNAL)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(extract_module, "_parse", _whole_parser_only)
        assert quick == extract(raw, INTERNAL)


# Found through FTS5 ---------------------------------------------------------------------


@pytest.fixture
def fts() -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:")
    connection.execute(
        "CREATE VIRTUAL TABLE fts USING fts5("
        "sender, recipients, subject, body, attachment, other, "
        f"tokenize = '{FTS_TOKENIZER}')"
    )
    for rowid, path in enumerate(FIXTURES, start=1):
        document = extract(path.read_bytes())
        connection.execute(
            "INSERT INTO fts (rowid, sender, recipients, subject, body, attachment, other) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                rowid,
                document.sender,
                document.recipients,
                document.subject,
                document.body,
                document.attachment,
                document.other,
            ),
        )
    yield connection
    connection.close()


def _found(connection: sqlite3.Connection, query: str) -> set[str]:
    rows = connection.execute("SELECT rowid FROM fts WHERE fts MATCH ?", (query,))
    return {FIXTURES[rowid - 1].name for (rowid,) in rows}


def _phrase(term: str) -> str:
    return '"' + " ".join(searchable(term).split()) + '"'


def test_fts_finds_mueller_without_the_umlaut(fts: sqlite3.Connection) -> None:
    assert "latin1-q.eml" in _found(fts, "Muller")
    assert "latin1-q.eml" in _found(fts, "sender : Muller")
    assert "latin1-q.eml" in _found(fts, "body : Muller")  # "Café Mü=\r\nller" in the body
    assert _found(fts, "gesla") == {"latin2-b.eml"}


def test_fts_finds_a_cjk_word_inside_a_longer_run(fts: sqlite3.Connection) -> None:
    assert _found(fts, "subject : " + _phrase("都庁")) == {"iso-2022-jp.eml"}
    assert _found(fts, _phrase("会議")) >= {"iso-2022-jp.eml"}
    assert _found(fts, "body : " + _phrase("新宿")) == {"iso-2022-jp.eml"}
    assert _found(fts, "body : " + _phrase("北京开会")) == {"gb2312.eml"}
    assert _found(fts, _phrase("大阪")) == set()


def test_fts_finds_attachment_names_in_the_attachment_column(fts: sqlite3.Connection) -> None:
    assert _found(fts, "attachment : Jahresbericht") == {"rfc2231.eml"}
    assert _found(fts, "attachment : Ubersicht") == {"rfc2231.eml"}
    assert _found(fts, "attachment : Konig") == {"rfc2047-filename.eml"}
    assert _found(fts, "body : Jahresbericht") == set()
    assert _found(fts, "attachment : zebra") == {"forwarded.eml"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Grüße, Müller", "Grüße, Müller"),  # Latin-1: normalised only
        ("\ufb01le \u00bd", "file 1\u20442"),  # NFKC: ligature and fraction
        (  # beyond Latin-1: the euro sign, a dash and quotes, then CJK
            "Preis 5 \u20ac \u2013 \u201c東京都\u201d ok",
            "Preis 5 \u20ac \u2013 \u201c 東京 京都 \u201d ok 東 京 都",
        ),
        ("\uff34\uff4f\uff4b\uff59\uff4f 東京", "Tokyo  東京  東 京"),  # full-width letters
        ("\U0001f642 emoji only", "\U0001f642 emoji only"),  # in the quick range, not CJK
    ],
)
def test_searchable_finds_cjk_only_where_there_is_some(text: str, expected: str) -> None:
    assert searchable(text, document=True) == expected


def test_a_header_ended_by_a_stray_line_with_a_broken_charset_takes_the_whole_parser() -> None:
    # Found by the mutation test: the quick parse asked the email package for the payload
    # of such a header, which raised.
    raw = (
        b"Grom: sato@example.jp\r\nContent-Type: text/plain; charset=\xd3hift_JIS\r\x8a"
        b"Content-Transfer-Encoding: base64\r\n\r\ngqiMqZDPguCC6ILwk1mVdIK1gtyCt4FCh0CHQQ==\r\n"
    )
    quick = extract(raw, INTERNAL)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(extract_module, "_parse", _whole_parser_only)
        assert quick == extract(raw, INTERNAL)


# Quick paths: each gives what the general way gives -----------------------------------


def _whole_parser_document(raw: bytes) -> SearchDocument:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(extract_module, "_parse", _whole_parser_only)
        return extract(raw, INTERNAL)


@pytest.mark.parametrize(
    ("encoding", "quick"),
    [("8bit", True), ("7bit", True), ("binary", True), ("", True), ("quoted-printable", False)],
)
def test_a_single_part_without_transfer_encoding_is_read_from_its_bytes(
    encoding: str, quick: bool
) -> None:
    text = "Grüße aus Köln =C3=A4 \udcff".encode("utf-8", "surrogateescape") + b"\xe9\r\n"
    header = b"Subject: bytes\r\nContent-Type: text/plain; charset=utf-8\r\n"
    if encoding:
        header += b"Content-Transfer-Encoding: " + encoding.encode() + b"\r\n"
    raw = header + b"\r\n" + text
    part = extract_module._parse(raw)
    assert isinstance(part, extract_module._Part)
    assert (part.content is not None) is quick
    assert extract(raw, INTERNAL) == _whole_parser_document(raw)
    if quick:
        assert part.content == text
        assert extract_module._parse_tree(raw).get_payload(decode=True) == text


@pytest.mark.parametrize("charset", sorted(extract_module._NO_SURROGATES))
def test_the_codecs_read_without_a_surrogate_check_are_single_byte_or_utf8(charset: str) -> None:
    if charset == "utf-8":
        assert b"\xed\xa0\x80\xed\xb0\x80".decode(charset, "replace") == "\ufffd" * 6
        return
    every = bytes(range(256)).decode(charset, "replace")
    assert every == "".join(bytes([byte]).decode(charset, "replace") for byte in range(256))
    assert len(every) == 256
    assert not any("\ud800" <= character <= "\udfff" for character in every)


def test_a_codec_that_can_give_surrogates_is_checked() -> None:
    raw = b"Content-Type: text/plain; charset=utf-7\r\n\r\nlone +2AA- surrogate"
    assert b"+2AA-".decode("utf-7", "replace") == "\ud800"
    document = extract(raw, INTERNAL)
    assert document.body == "lone ? surrogate"
    assert document == _whole_parser_document(raw)


def _parts(message: Message) -> Iterator[Message]:
    yield message
    payload = message.get_payload()
    if isinstance(payload, list):
        for child in payload:
            if isinstance(child, Message):
                yield from _parts(child)


def _outcome(call: Callable[[], object]) -> object:
    try:
        return call()
    except Exception as error:
        return type(error)


FIELD_CASES = [
    b"Content-Type: text/plain; charset*=utf-8''%C3%BC",
    b"Content-Type: text/plain; charset*=bogus''abc",
    b"Content-Type: text/plain; charset*0*=utf-8''%ZZ; charset*1=x",
    b'Content-Type: TEXT/Plain ; Charset = "ISO-8859-1"; NAME="a b.txt"',
    b"Content-Type: text/plain/x; name*=iso-8859-1'de'Stra%DFen.txt",
    b'Content-Type: application/pdf; name=""\r\nContent-Disposition: attachment; filename=',
    b'Content-Type: application/pdf; name="  "\r\nContent-Disposition: inline; filename=" "',
    b"Content-Type: image/png\r\nContent-Disposition: attachment;\r\n filename*0*=UTF-8''J%C3;"
    b"\r\n filename*1*=%BCrg.doc",
    b"Content-Type:\r\nContent-Disposition:",
    b"Content-Type: text/plain; CHARSET; NAME\r\nContent-Disposition: attachment; FileName",
    b"content-type: text/html; charset=\xe4\r\nContent-Type: text/plain; charset=koi8-r",
]


def _same_fields(part: Message) -> None:
    fields = extract_module._fields(part)
    assert extract_module._content_type(part) == part.get_content_type()
    for name, header in [("charset", "content-type"), ("filename", "content-disposition")]:
        ours = _outcome(lambda: fields.param(name, header))  # noqa: B023
        theirs = _outcome(lambda: part.get_param(name, extract_module._MISSING, header))  # noqa: B023
        assert ours == theirs
    file_name = _outcome(lambda: extract_module._file_name_param(fields))
    assert file_name == _outcome(part.get_filename)
    charset = _outcome(lambda: extract_module._charset_param(fields))
    assert charset == _outcome(part.get_content_charset)


@pytest.mark.parametrize("header", FIELD_CASES)
def test_fields_read_once_give_what_the_message_methods_give(header: bytes) -> None:
    raw = b"Subject: fields\r\n" + header + b"\r\n\r\nbody\r\n"
    for variant in [raw, *(path.read_bytes() for path in FIXTURES)]:
        for part in _parts(extract_module._parse_tree(variant)):
            _same_fields(part)
    assert extract(raw, INTERNAL) == _whole_parser_document(raw)


def _boundary_lines_by_lowering(raw: bytes) -> list[int]:
    """The boundary lines found the plain way: every byte lowered and searched."""
    lowered = raw.lower()
    found: set[bytes] = set()
    position = lowered.find(b"boundary")
    for _ in range(MAX_PARTS):
        if position == -1:
            break
        match = extract_module._BOUNDARY_PARAM.match(raw, position)
        if match is not None:
            found.add((match.group(1) or match.group(2) or b"").rstrip())
        position = lowered.find(b"boundary", position + 8)
    found.discard(b"")
    starts: set[int] = set()
    for boundary in found:
        needle = b"--" + boundary
        position = raw.find(needle, 1)
        while position != -1:
            if raw[position - 1] in b"\r\n":
                starts.add(position)
            position = raw.find(needle, position + len(needle))
    return sorted(starts)


def _large(middle: bytes) -> bytes:
    attachment = base64.encodebytes(bytes(range(256)) * 400)
    return _multipart(
        [
            _text_part("before"),
            b"Content-Type: application/pdf; name=a.pdf\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + attachment + middle + attachment,
            _text_part("after"),
        ],
        boundary=b"=_outer",
    )


BOUNDARY_CASES = {
    "plain": b"",
    "declared in the attachment": b"boundary=inner\r\n--inner\r\nx--inner\r\n",
    "space before the equals sign": b'BoUnDaRy \t\r\n = "in ner"\r\n--in ner\r\n',
    "many equals signs after it": b"boundary=late\r\n" + b"=3D" * 5000 + b"\r\n--late\r\n",
    "many equals signs before it": b"=3D" * 5000 + b"\r\nboundary=late\r\n--late\r\n",
    "a long run of spaces": b"boundary" + b" " * 5000 + b"=late\r\n--late\r\n",
    "more words than are counted": b"boundary " * (MAX_PARTS + 5) + b"boundary=late\r\n--late\r\n",
    "fewer words than are counted": b"boundary " * (MAX_PARTS - 5) + b"boundary=late\r\n--late\r\n",
    "runs of dashes": b"-" * 20000 + b"\r\n--=_outer\r\n" + b"---=_outer" * 3 + b"\r\n",
    "overlapping boundaries": b"boundary=-\r\n------\r\n--\r\n---\r\n",
    **{
        f"a dash {gap} bytes before a boundary line": b"-" + b"x" * gap + b"\r\n--=_outer\r\n"
        for gap in range(extract_module._LINE_WINDOW - 4, extract_module._LINE_WINDOW + 12)
    },
    "a parameter without a value": b'boundary=\r\nboundary=;\r\nboundary="\r\n',
}


@pytest.mark.parametrize("middle", BOUNDARY_CASES.values(), ids=BOUNDARY_CASES.keys())
def test_boundary_lines_are_those_of_a_search_of_every_byte(middle: bytes) -> None:
    raw = _large(b"\r\n" + middle)
    assert list(extract_module._boundary_lines(raw)) == _boundary_lines_by_lowering(raw)
    assert list(extract_module._boundary_lines(middle)) == _boundary_lines_by_lowering(middle)


PLAIN_ADDRESSES = [
    ["Contact 12 <contact12@partner12.example.test>"],
    ["<u001@bench.example.test>"],
    ["a.b+tag@example.com, Jürgen  Müller\t<jm@example.de>,<x@y>"],
    ["=?utf-8?q?J=C3=BCrgen?= =?utf-8?q?_M?= <j@example.de>", "Dr. J. Q. Public<j@q.example>"],
]
OTHER_ADDRESSES = [
    ['"Doe, John" <john@example.com>'],  # quotes
    ["john@example.com (John Doe)"],  # a comment
    ["team: a@example.com, b@example.com;"],  # a group
    ["\xa0@example.com", "x\xa0y <a@b>"],  # white space beyond ASCII (the email package
    # drops a word of it alone)
    ["a@example.com,,b@example.com"],  # an empty element
    ["<a@[192.0.2.1]>", "a @ example.com", "a\\b@example.com", "a..b@example.com"],
    ["Name <a@example.com> trailing", "< a@example.com >", ""],
]


@pytest.mark.parametrize("values", PLAIN_ADDRESSES + OTHER_ADDRESSES)
def test_plain_addresses_are_read_as_the_email_package_reads_them(values: list[str]) -> None:
    plain = all(
        extract_module._PLAIN_ADDRESS.fullmatch(piece) for piece in ", ".join(values).split(",")
    )
    assert plain is (values in PLAIN_ADDRESSES)
    assert extract_module._addresses(values) == email.utils.getaddresses(values)
    raw = "".join(f"To: {value}\r\n" for value in values).encode() + b"\r\nbody\r\n"
    assert extract(raw, INTERNAL) == _whole_parser_document(raw)


_HEADER_PIECES = [
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b"From ",
    b"Subject",
    b"X-A",
    b": v",
    b"\xe4",
    b"=?utf-8?q?x?=",
    b"a b",
]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_HEADER_PIECES), max_size=30), st.binary(max_size=20))
def test_the_header_end_is_where_the_pattern_finds_it(pieces: list[bytes], tail: bytes) -> None:
    raw = b"".join(pieces) + tail
    match = extract_module._HEADER_END.search(raw, 0, extract_module._HEADER_SCAN)
    assert extract_module._header_end(raw) == (match.end() if match is not None else None)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(_HEADER_PIECES), max_size=30))
def test_a_plain_header_is_parsed_as_the_parser_parses_it(pieces: list[bytes]) -> None:
    end = extract_module._header_end(b"".join(pieces) + b"\r\n\r\nbody")
    assert end is not None
    head = (b"".join(pieces) + b"\r\n\r\nbody")[:end]
    plain = extract_module._plain_header(head)
    parsed = extract_module._parse_tree(head)
    if plain is not None:
        assert plain.items() == parsed.items()
        assert plain.get_unixfrom() is None
        assert not parsed.defects
        assert parsed.get_payload() == ""


@pytest.mark.parametrize(
    ("head", "plain"),
    [
        (b"Subject: a\r\n b\r\nTo:\t<a@b>\r\n\r\n", True),
        (b"Subject: a\n\tb\nX-8bit: \xe4\n\n", True),
        (b"Subject:\r\r", True),
        (b"From someone Mon Jan  1 00:00:00 2024\r\nSubject: a\r\n\r\n", False),
        (b" continued\r\nSubject: a\r\n\r\n", False),
        (b"Subject: a\r\n: no name\r\n\r\n", False),
        (b"Subject: a\r\nno colon\r\n\r\n", False),
    ],
)
def test_plain_headers_and_others(head: bytes, plain: bool) -> None:
    quick = extract_module._plain_header(head)
    assert (quick is not None) is plain
    if quick is not None:
        assert quick.items() == extract_module._parse_tree(head).items()
    raw = head + b"body word\r\n"
    assert extract(raw, INTERNAL) == _whole_parser_document(raw)


@pytest.mark.parametrize(
    "value",
    ["one line =?utf-8?q?x?=", "=?utf-8?q?a\r\n b?= folded", "a\r\n\tb", "end\r\n", "lone\rcr"],
)
def test_unfolding_a_value_on_one_line_leaves_it(value: str) -> None:
    unfolded = extract_module._FOLD.sub("", extract_module._FOLD_IN_WORD.sub(r"\1", value))
    assert extract_module._unfold(value) == unfolded
