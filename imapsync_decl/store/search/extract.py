"""Extraction: a message's bytes to the fields the search index holds about it.

``extract`` reads a raw message with the standard library's ``email`` package and
gives a ``SearchDocument``: the texts of the FTS columns (sender, recipients,
subject, body, attachment, other), already passed through ``text.searchable``, and
the values shown in results (decoded From, To and Subject, the date, the size,
the attachment names). ``readable`` reads a message the same way for a person
(``archive show``): every header field decoded, the body text as it is, not
normalised for search.

Mail in the wild is broken in every way the standards leave open, so ``extract``
never raises: headers are decoded leniently (8-bit bytes as UTF-8, else
Windows-1252; RFC 2047 encoded words, also when folded in the middle), a charset
that is missing, wrong or unknown falls back to UTF-8, then Windows-1252, and a
body that cannot be read still leaves a document with its header fields
(``extracted`` is False). The work is bounded: at most ``MAX_PARTS`` parts are
parsed, ``MAX_DEPTH`` levels of nesting walked, ``MAX_PART_TEXT`` bytes of each
part decoded and ``MAX_BODY_TEXT`` characters of body text kept; what is beyond is
cut, and the rest of the document stands.
"""

from __future__ import annotations

import binascii
import codecs
import email.utils
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.feedparser import BytesFeedParser
from email.message import Message
from email.policy import Compat32, Policy

from imapsync_decl.store.search.markup import html_text
from imapsync_decl.store.search.text import searchable

MAX_PARTS = 1000
"""At most this many MIME parts of a message are parsed and looked at."""

MAX_DEPTH = 20
"""Parts nested deeper than this (multipart in multipart ...) are not looked at."""

MAX_PART_TEXT = 4 * 1024 * 1024
"""At most this many bytes of a part's decoded content are read as text."""

MAX_BODY_TEXT = 8 * 1024 * 1024
"""At most this many characters of body text are kept per message."""

MAX_HEADER_TEXT = 64 * 1024
"""Each decoded header value is cut to this many characters."""

MAX_DISPLAY = 1000
"""``from_display``, ``to_display`` and ``subject_display`` are cut to this many characters."""

_FEED_CHUNK = 1024 * 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SearchDocument:
    """What the search index holds about one message.

    The first six fields are the texts of the FTS columns, normalised by
    ``text.searchable``; the others are plain values for results and filters.
    """

    sender: str
    recipients: str
    subject: str
    body: str
    attachment: str
    other: str
    from_display: str
    to_display: str
    subject_display: str
    date: datetime | None
    size: int
    has_attachment: bool
    attachment_names: tuple[str, ...]
    extracted: bool


def extract(raw: bytes, internal_date: datetime | None = None) -> SearchDocument:
    """The search document of a raw message (the exact bytes of the server's ``BODY[]``).

    ``internal_date`` (the server's INTERNALDATE) stands in for a Date header that
    is missing, unparsable, before 1970 or more than a day in the future. Never
    raises on any input.
    """
    message = _parse(raw)
    headers = _Headers(message)
    body = _Body()
    extracted = True
    try:
        body.walk(message, depth=0, embedded=False, quiet=False)
    except Exception:  # the email package and codecs fail in odd ways on broken mail
        extracted = False
    if not extracted:
        body = _Body()

    sender = [*headers.texts("from"), *headers.texts("reply-to")]
    recipients = [*headers.texts("to"), *headers.texts("cc"), *headers.texts("bcc")]
    subject = headers.first("subject")
    date_texts = headers.texts("date")
    other = [*headers.texts("message-id"), *headers.texts("list-id"), *date_texts]
    names = tuple(body.names)
    return SearchDocument(
        sender=searchable("\n".join(sender), document=True),
        recipients=searchable("\n".join(recipients), document=True),
        subject=searchable(subject, document=True),
        body=searchable(body.text(), document=True),
        attachment=searchable("\n".join(names), document=True),
        other=searchable("\n".join(other), document=True),
        from_display=_display(headers, "from"),
        to_display=_display(headers, "to"),
        subject_display=_one_line(subject)[:MAX_DISPLAY],
        date=_message_date(date_texts[0] if date_texts else None, internal_date),
        size=len(raw),
        has_attachment=body.has_attachment,
        attachment_names=names,
        extracted=extracted,
    )


@dataclass(frozen=True)
class Readable:
    """A message as a person reads it (``archive show``): every header field decoded,
    in order, the body text and the attachment names; not normalised for search."""

    headers: tuple[tuple[str, str], ...]
    text: str
    attachment_names: tuple[str, ...]
    extracted: bool


def readable(raw: bytes) -> Readable:
    """The decoded headers, body text and attachment names of a raw message. Never
    raises on any input; ``extracted`` is False when only the headers could be read."""
    message = _parse(raw)
    body = _Body()
    extracted = True
    try:
        body.walk(message, depth=0, embedded=False, quiet=False)
    except Exception:  # the email package and codecs fail in odd ways on broken mail
        extracted = False
        body = _Body()
    fields: list[tuple[str, str]] = []
    try:
        items = message.items()
    except Exception:
        items = []
    for name, value in items:
        fields.append((str(name), _decode_words(_unfold(str(value)))[:MAX_HEADER_TEXT]))
    return Readable(tuple(fields), body.text(), tuple(body.names), extracted)


# Parsing ------------------------------------------------------------------------------


class _PartLimit(Exception):
    """Raised by the message factory when a message has more parts than are parsed."""


class _Part(Message):
    """A part as this module's parser makes it. ``fields`` keeps its header fields once
    they have been read (see ``_fields``); ``content``, for a part parsed the quick way
    whose content has no transfer encoding to undo, holds the bytes of its content in
    place of a payload (which would be those bytes as surrogate escapes, turned back
    into the same bytes to be read)."""

    fields: _Fields | None = None
    content: bytes | None = None


class _Counted:
    """The parser's message factory: counts the parts it makes, stops at ``MAX_PARTS``,
    and keeps the first one (the message itself) for when parsing stops early."""

    def __init__(self) -> None:
        self.made = 0
        self.root: Message | None = None

    def __call__(self, policy: Policy[Message]) -> Message:
        self.made += 1
        if self.made > MAX_PARTS + 1:
            raise _PartLimit
        message = _Part(policy=policy)
        if self.root is None:
            self.root = message
        return message


class _RawHeaders(Compat32):
    """The forgiving ``compat32`` policy, handing out header values as they stand
    (folded, 8-bit bytes as surrogate escapes), for this module to decode."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value


def _parse(raw: bytes) -> Message:
    """The message tree of ``raw``, as far as it could be parsed."""
    single = _single_part(raw)
    return single if single is not None else _parse_tree(raw)


_HEADER_END = re.compile(rb"\r?\n\r?\n|\r\r")
_CONTAINERS = ("multipart", "message")


def _single_part(raw: bytes) -> Message | None:
    """``raw`` parsed the quick way when it is one part (most mail): only its header goes
    through the parser, which would otherwise step through the body line by line to
    find no boundary in it; the body becomes the payload as the parser would have made
    it (everything after the header, 8-bit bytes as surrogate escapes), cut to
    ``_STRETCH`` bytes like any part. None for a multipart or message/*, and for a
    header that is not ended by its first blank line (a line that is no header field
    ends it earlier): those take the whole parser.

    When the content has no transfer encoding to undo, its bytes are kept as the
    part's ``content`` instead, which is what ``get_payload(decode=True)`` would give."""
    end = _header_end(raw)
    if end is None:
        return None
    head = _plain_header(raw[:end])
    if head is None:
        head = _parse_tree(raw[:end])
    try:
        if (
            _content_type(head).split("/")[0] in _CONTAINERS
            or head.is_multipart()
            or head.get_payload()
        ):
            return None  # a container, or a header that ended before the blank line
    except Exception:  # the email package decoding a broken header's payload
        return None
    content = raw[end : end + _STRETCH]
    if isinstance(head, _Part) and _transfer_encoding(head) not in _DECODED:
        head.content = content
    else:
        head.set_payload(content.decode("ascii", "surrogateescape"))
    return head


def _header_end(raw: bytes) -> int | None:
    """Where the first blank line that ends a header ends (``_HEADER_END`` searched in
    the first ``_HEADER_SCAN`` bytes), or None.

    Each match holds one of the three line-end pairs below, at its start or one byte
    in: the pattern only needs to be tried from just before the first of them, which
    ``bytes.find`` finds faster than the pattern steps through the header."""
    first = -1
    for pair in (b"\n\r\n", b"\n\n", b"\r\r"):
        stop = _HEADER_SCAN if first == -1 else min(_HEADER_SCAN, first - 1 + len(pair))
        found = raw.find(pair, 0, stop)
        if found != -1:
            first = found
    if first == -1:
        return None
    match = _HEADER_END.search(raw, max(first - 1, 0), _HEADER_SCAN)
    return match.end() if match is not None else None


_FIELD_LINE = re.compile(rb"[\041-\071\073-\176]+:")  # a field name, as the parser takes it
_PLAIN_POLICY = _RawHeaders()


def _plain_header(head: bytes) -> Message | None:
    """The header ``head`` (ended by its blank line) parsed as the parser parses it,
    when each of its lines is a field or the continuation of one: each field's lines
    joined, the space after its colon and the line end after its last line dropped.
    None for any other line (a "From " line, one without a field name, a continuation
    first), whose handling is left to the parser."""
    lines = head.splitlines(keepends=True)  # at CR, LF and CRLF, as the parser splits
    if not lines or lines[-1] not in (b"\r\n", b"\n", b"\r"):
        return None
    part = _Part(policy=_PLAIN_POLICY)
    field: list[bytes] = []
    for line in [*lines[:-1], None]:
        if line is not None and line[:1] in (b" ", b"\t"):
            if not field:
                return None
            field.append(line)
            continue
        if field:
            name, value = b"".join(field).decode("ascii", "surrogateescape").split(":", 1)
            part.set_raw(name, value.lstrip(" \t").rstrip("\r\n"))
            field = []
        if line is not None:
            if _FIELD_LINE.match(line) is None:
                return None
            field = [line]
    return part


# The transfer encodings that ``Message.get_payload(decode=True)`` undoes; any other
# leaves the content as it is.
_DECODED = frozenset(["quoted-printable", "base64", "x-uuencode", "uuencode", "uue", "x-uue"])


def _transfer_encoding(part: Message) -> str:
    """The Content-Transfer-Encoding, as ``get_payload`` reads it."""
    return str(_fields(part).first("content-transfer-encoding") or "").lower()


def _parse_tree(raw: bytes) -> Message:
    factory = _Counted()
    parser = BytesFeedParser(policy=_RawHeaders(message_factory=factory))
    try:
        for piece in _bounded(raw):
            for start in range(0, len(piece), _FEED_CHUNK):
                parser.feed(bytes(piece[start : start + _FEED_CHUNK]))
        return parser.close()
    except Exception:  # the part limit, or the parser tripping over deep nesting
        return factory.root if factory.root is not None else _Part()
    finally:
        factory.root = None  # each part's policy holds the factory: no cycle back to the tree


_STRETCH = 3 * MAX_PART_TEXT  # MAX_PART_TEXT bytes even in quoted-printable, at 3 bytes each
_STRETCH_LINES = 256 * 1024  # the parser holds each line of a part as an object of its own
_BOUNDARY_PARAM = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]*)"|([^\s;"]+))', re.IGNORECASE)


def _bounded(raw: bytes) -> list[memoryview | bytes]:
    """``raw``, as pieces to parse, with each stretch between two boundary lines (of
    the boundaries that ``raw`` declares) cut to ``_STRETCH`` bytes and
    ``_STRETCH_LINES`` lines.

    A cut never loses a part: it drops the end of one part's content, beyond what is
    read of it (attachments are only named, text is read up to ``MAX_PART_TEXT``
    bytes). The parser then never holds more than that of any part, however large
    the message. The content of a large part whose Content-Type is not text,
    multipart or message (an attachment: only its name is read, from its header) is
    left out altogether, so that the parser does not read it line by line.
    """
    if len(raw) <= _SKIP_AT and _lines(raw, 0, len(raw)) <= _STRETCH_LINES:
        return [raw]
    view = memoryview(raw)
    pieces: list[memoryview | bytes] = []
    piece = stretch = 0
    for end in itertools.chain(_boundary_lines(raw), [len(raw)]):
        body = _binary_body(raw, stretch, end) if stretch and end - stretch > _SKIP_AT else None
        if body is not None:
            pieces.append(view[piece:body])
            piece = end
            stretch = end
            continue
        stop = _cut(raw, stretch, end)
        if stop < end:
            pieces.append(view[piece:stop])
            if raw[stop - 1 : stop] not in (b"\r", b"\n"):
                pieces.append(b"\r\n")  # cut inside a line: the next boundary starts one
            piece = end
        stretch = end
    pieces.append(view[piece:])
    return pieces


def _boundary_lines(raw: bytes) -> Iterator[int]:
    """Where the lines of ``raw`` begin that begin with one of its declared boundaries.

    Found with ``bytes.find`` rather than a regular expression over the whole message:
    most of a large message is an attachment, which a pattern would step through
    line by line. The searches jump from one "=" or "-" to the next, which a base64
    attachment has only at its end and in the boundary line after it."""
    starts: set[int] = set()
    for boundary in _declared_boundaries(raw):
        starts.update(_line_starts(raw, b"--" + boundary))
    return iter(sorted(starts))


def _declared_boundaries(raw: bytes) -> set[bytes]:
    """The non-empty ``boundary`` parameters found at the first ``MAX_PARTS`` places
    where the word "boundary" (in any case) stands in ``raw``.

    Only ``raw`` up to the last such parameter needs to be searched word by word:
    what follows it holds no parameter, and its words come after every one counted."""
    end = _last_boundary_param(raw)
    lowered = raw[:end].lower()
    found: set[bytes] = set()
    position = lowered.find(b"boundary")
    for _ in range(MAX_PARTS):
        if position == -1:
            break
        match = _BOUNDARY_PARAM.match(raw, position)
        if match is not None:
            found.add((match.group(1) or match.group(2) or b"").rstrip())
        position = lowered.find(b"boundary", position + 8)
    found.discard(b"")
    return found


_SPACE_BYTES = b" \t\n\r\f\v"  # what \s matches in a bytes pattern
_BACKWARD_STEPS = 1024  # looked-at bytes before the search takes all of raw instead


def _last_boundary_param(raw: bytes) -> int:
    """An end of ``raw`` beyond which no ``boundary`` parameter begins: just after the
    last one's word "boundary", found from the "=" it needs; ``len(raw)`` when the
    "=" signs are too many to look at one by one (quoted-printable text)."""
    steps = 0
    equals = raw.rfind(b"=")
    while equals != -1:
        word_end = equals
        while word_end > 0 and raw[word_end - 1] in _SPACE_BYTES:
            word_end -= 1
            steps += 1
            if steps > _BACKWARD_STEPS:
                return len(raw)
        start = word_end - 8
        if (
            start >= 0
            and raw[start:word_end].lower() == b"boundary"
            and _BOUNDARY_PARAM.match(raw, start) is not None
        ):
            return word_end
        steps += 1
        if steps > _BACKWARD_STEPS:
            return len(raw)
        equals = raw.rfind(b"=", 0, equals)
    return 0


_LINE_WINDOW = 4096


def _line_starts(raw: bytes, needle: bytes) -> Iterator[int]:
    """Where ``needle`` (a "--" and a boundary) begins a line of ``raw`` (not its first),
    of the places ``raw.find`` gives when it goes from each one to after it.

    Each search starts at the next "-", which ``bytes.find`` reaches at the speed of
    a memory scan, and looks a window beyond it, so that a run of dashes (a text
    underlined by them) costs one search per window rather than one per dash."""
    window = len(needle) + _LINE_WINDOW
    position = 1
    while True:
        dash = raw.find(b"-", position)
        if dash == -1:
            return
        found = raw.find(needle, dash, dash + window)
        if found == -1:
            position = dash + window - len(needle) + 1
            continue
        if raw[found - 1] in b"\r\n":
            yield found
        position = found + len(needle)


def _lines(raw: bytes, start: int, end: int) -> int:
    """About how many lines the parser sees in ``raw[start:end]`` (CR, LF or CRLF ends)."""
    return max(raw.count(b"\n", start, end), raw.count(b"\r", start, end))


def _cut(raw: bytes, start: int, end: int) -> int:
    """Where the stretch ``raw[start:end]`` ends once cut to its allowance."""
    limit = min(end, start + _STRETCH)
    if _lines(raw, start, limit) > _STRETCH_LINES:
        for line_end in (b"\n", b"\r"):
            position = start
            for _ in range(_STRETCH_LINES):
                position = raw.find(line_end, position, limit) + 1
                if position == 0:
                    break
            else:
                limit = min(limit, position)
    return limit


def _binary_body(raw: bytes, start: int, end: int) -> int | None:
    """Where the content of the part at ``raw[start:end]`` (from its boundary line) begins,
    when its header names a type other than text, multipart or message; else None."""
    blank = _BLANK_LINE.search(raw, start, min(end, start + _HEADER_SCAN))
    if blank is None:
        return None
    header = raw[start : blank.start()]
    if _BINARY_TYPE.search(header) is None:
        return None
    return blank.end()


_SKIP_AT = 64 * 1024  # parts shorter than this are parsed as they are
_HEADER_SCAN = 16 * 1024
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_BINARY_TYPE = re.compile(rb"(?im)^content-type:[ \t]*(?!text/|multipart/|message/)[a-z]")


# Headers ------------------------------------------------------------------------------


_FOLD_IN_WORD = re.compile(r"(=\?[^?\s]+\?[bBqQ]\?[^?\s]*)(?:\r\n|\r|\n)[ \t]+(?=[^?\s]*\?=)")
_FOLD = re.compile(r"(?:\r\n|\r|\n)(?=[ \t])|[\r\n]+$")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
_SPACES = re.compile(r"\s+")


# A parameter value as ``Message.get_param`` gives it: RFC 2231 ones as a triple.
_Param = str | tuple[str | None, str | None, str]


class _Missing:
    """The value of a parameter, or the parameters of a field, that a part does not have."""


_MISSING = _Missing()


class _Fields:
    """The header fields of one part, by lower-case name, as the ``Message`` methods
    that this module uses give them (``get``, ``get_all``, ``get_param``), but gone
    through once rather than at each call, and each field's parameters parsed once."""

    def __init__(self, part: Message) -> None:
        self._part = part
        self.values: dict[str, list[str]] = {}
        for name, value in part.items():
            self.values.setdefault(name.lower(), []).append(value)
        self._params: dict[str, Sequence[tuple[str, _Param]] | _Missing | Exception] = {}

    def first(self, name: str) -> str | None:
        """``part.get(name)``."""
        values = self.values.get(name)
        return values[0] if values else None

    def param(self, name: str, header: str) -> _Param | _Missing:
        """``part.get_param(name, header=header)``, ``_MISSING`` where that gives its
        ``failobj``; raises where that raises (a broken RFC 2231 parameter)."""
        params = self._params.get(header)
        if params is None:
            try:
                params = self._part.get_params(_MISSING, header=header)
            except Exception as error:  # kept, to be raised at each call like get_param
                params = error
            self._params[header] = params
        if isinstance(params, Exception):
            raise params
        if isinstance(params, _Missing):
            return _MISSING
        for key, value in params:
            if key.lower() == name:
                return value
        return _MISSING


def _fields(part: Message) -> _Fields:
    """The header fields of ``part``, read once for a part of this module's parser."""
    if not isinstance(part, _Part):
        return _Fields(part)
    if part.fields is None:
        part.fields = _Fields(part)
    return part.fields


def _content_type(part: Message) -> str:
    """``part.get_content_type()``."""
    value = _fields(part).first("content-type")
    if value is None:
        return part.get_default_type()
    content_type = str(value).partition(";")[0].strip().lower()
    return content_type if content_type.count("/") == 1 else "text/plain"


def _file_name_param(fields: _Fields) -> str | None:
    """``part.get_filename()``: the disposition's ``filename``, else the type's ``name``."""
    name = fields.param("filename", "content-disposition")
    if isinstance(name, _Missing):
        name = fields.param("name", "content-type")
    if isinstance(name, _Missing):
        return None
    return email.utils.collapse_rfc2231_value(name).strip()


def _charset_param(fields: _Fields) -> str | None:
    """``part.get_content_charset()``, step by step as the email package does it."""
    charset = fields.param("charset", "content-type")
    if isinstance(charset, _Missing):
        return None
    if isinstance(charset, tuple):
        try:
            charset = str(charset[2].encode("raw-unicode-escape"), charset[0] or "us-ascii")
        except (LookupError, UnicodeError):
            charset = charset[2]
    if not charset.isascii():
        return None
    return charset.lower()


class _Headers:
    """The header fields of a message, unfolded and decoded on demand."""

    def __init__(self, message: Message) -> None:
        self._values = _fields(message).values
        self._raw: dict[str, list[str]] = {}

    def raw(self, name: str) -> list[str]:
        """The unfolded values of every field called ``name``, 8-bit bytes decoded, but
        encoded words left as they are (for address parsing)."""
        raw = self._raw.get(name)
        if raw is None:
            values = self._values.get(name, [])
            raw = self._raw[name] = [_unfold(str(value))[:MAX_HEADER_TEXT] for value in values]
        return raw

    def texts(self, name: str) -> list[str]:
        """The decoded values of every field called ``name``."""
        return [_decode_words(value)[:MAX_HEADER_TEXT] for value in self.raw(name)]

    def first(self, name: str) -> str:
        texts = self.texts(name)
        return texts[0] if texts else ""


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _unfold(value: str) -> str:
    """A header value on one line; 8-bit bytes (surrogate escapes) read as UTF-8, else
    Windows-1252."""
    if not value.isascii() and _ESCAPED_BYTE.search(value) is not None:
        try:
            value = _bytes_text(value.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError:  # other surrogates too, from a decoded parameter
            value = _valid(value)
    if "\n" not in value and "\r" not in value:
        return value  # on one line already (both patterns need a line end)
    value = _FOLD_IN_WORD.sub(r"\1", value)
    return _FOLD.sub("", value)


def _decode_words(value: str) -> str:
    """``value`` with its RFC 2047 encoded words decoded. Whitespace between two
    encoded words goes; adjacent words in one charset are decoded together, so that a
    character split across them comes out whole. A word that does not decode stays."""
    if "=?" not in value:
        return value
    pieces: list[str] = []
    charset: str | None = None
    pending = bytearray()
    end = 0
    for match in _ENCODED_WORD.finditer(value):
        data = _word_bytes(match.group(2), match.group(3))
        if data is None:
            continue
        gap = value[end : match.start()]
        word_charset = match.group(1).split("*", 1)[0].lower()
        if charset is None or gap.strip() or word_charset != charset:
            if charset is not None:
                pieces.append(_charset_text(bytes(pending), charset))
                pending.clear()
            if charset is None or gap.strip():
                pieces.append(gap)
        charset = word_charset
        pending += data
        end = match.end()
    if charset is not None:
        pieces.append(_charset_text(bytes(pending), charset))
    pieces.append(value[end:])
    return "".join(pieces)


def _word_bytes(encoding: str, payload: str) -> bytes | None:
    """The bytes an encoded word carries, or None when it carries none."""
    try:
        data = payload.encode("ascii")
    except UnicodeEncodeError:
        return None
    if encoding in "qQ":
        return binascii.a2b_qp(data, header=True)
    data = data.rstrip(b"=")
    if len(data) % 4 == 1:  # a lone last character carries no whole byte
        data = data[:-1]
    try:
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return None


def _display(headers: _Headers, name: str) -> str:
    """The addresses of a field as ``Name <address>``, joined by ", "."""
    raw = headers.raw(name)
    try:
        pairs = _addresses(raw)
    except Exception:
        pairs = []
    shown: list[str] = []
    for display_name, address in pairs:
        display_name = _one_line(_decode_words(display_name))
        address = _one_line(address)
        if display_name and address:
            shown.append(f"{display_name} <{address}>")
        elif display_name or address:
            shown.append(display_name or address)
    if not shown:
        shown = [_one_line(text) for text in headers.texts(name)]
    return ", ".join(text for text in shown if text)[:MAX_DISPLAY]


# An address list of the plain forms: ``name <address>``, ``<address>`` and ``address``,
# the name words and the address dot-atoms without quotes, comments or groups.
# (Every character but controls, white space, backslash and the specials of RFC 5322;
# the email package drops a word of white space alone, such as a no-break space.)
_ATOM = r'[^\x00-\x20\x7f()<>@,;:\\".\[\]\s]+'
_NAME_WORD = r'[^\x00-\x20\x7f()<>@,;:\\"\[\]\s]+'
_ADDRESS = f"{_ATOM}(?:\\.{_ATOM})*@{_ATOM}(?:\\.{_ATOM})*"
_PLAIN_ADDRESS = re.compile(
    f"[ \t]*(?:({_NAME_WORD}(?:[ \t]+{_NAME_WORD})*)[ \t]*<({_ADDRESS})>"
    f"|<({_ADDRESS})>|({_ADDRESS}))[ \t]*"
)
_NAME_SPACE = re.compile("[ \t]+")


def _addresses(values: list[str]) -> list[tuple[str, str]]:
    """``email.utils.getaddresses(values)``: (display name, address) pairs. Read here
    when every address has one of the plain forms, for which the email package gives
    the name words joined by single spaces and the address as it stands (the forms of
    nearly all mail, which it takes many steps for); else by the email package."""
    pairs: list[tuple[str, str]] = []
    for piece in ", ".join(values).split(","):
        match = _PLAIN_ADDRESS.fullmatch(piece)
        if match is None:
            return email.utils.getaddresses(values)
        name, address, routed, bare = match.groups()
        if name is not None:
            pairs.append((_NAME_SPACE.sub(" ", name), address))
        else:
            pairs.append(("", routed or bare))
    return pairs


def _one_line(text: str) -> str:
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()


def _message_date(header: str | None, internal_date: datetime | None) -> datetime | None:
    """The Date header as an aware UTC datetime, if it is sensible; else the internal
    date; else None."""
    fallback = _utc(internal_date) if internal_date is not None else None
    if not header:
        return fallback
    try:
        date = email.utils.parsedate_to_datetime(header)
    except (ValueError, TypeError, OverflowError, IndexError):
        return fallback
    date = _utc(date)
    if date < _EPOCH or date > datetime.now(UTC) + timedelta(days=1):
        return fallback
    return date


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# Charsets -----------------------------------------------------------------------------

# Labels that real mail uses for text in a larger charset: decode with the superset.
_SUPERSETS = {
    "iso8859-1": "cp1252",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "big5": "big5hkscs",
    "euc_kr": "cp949",
    "shift_jis": "cp932",
    "iso2022_jp": "iso2022_jp_ext",
}


def _charset_text(data: bytes, charset: str | None) -> str:
    """``data`` in ``charset``. No charset, US-ASCII (often a wrong label) or a name that
    is not a known text encoding: UTF-8 if it is valid, else Windows-1252."""
    if not charset:
        return _bytes_text(data)
    try:
        codec = codecs.lookup(charset.strip().strip("\"'")).name
    except (LookupError, ValueError, TypeError):
        return _bytes_text(data)
    if codec == "ascii":
        return _bytes_text(data)
    codec = _SUPERSETS.get(codec, codec)
    try:
        text = data.decode(codec, "replace")
    except Exception:  # not a text encoding (base64, zlib ...), or a codec that fails
        return _bytes_text(data)
    return text if codec in _NO_SURROGATES else _valid(text)


# Codecs whose "replace" decoding gives no lone surrogates, whatever the bytes: UTF-8
# (which takes encoded surrogates for errors) and the single-byte ones, each byte one
# character of a table without surrogates. UTF-7, UTF-16 and UTF-32 can give them.
_NO_SURROGATES = frozenset(
    ["utf-8"]
    + ["cp037", "cp1006", "cp1026", "cp1125", "cp1140", "cp273", "cp424", "cp437", "cp500"]
    + [f"cp125{digit}" for digit in range(9)]
    + ["cp720", "cp737", "cp775", "cp850", "cp852", "cp855", "cp856", "cp857", "cp858"]
    + ["cp860", "cp861", "cp862", "cp863", "cp864", "cp865", "cp866", "cp869", "cp874", "cp875"]
    + [f"iso8859-{number}" for number in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16)]
    + ["hp-roman8", "koi8-r", "koi8-t", "koi8-u", "kz1048", "palmos", "ptcp154", "tis-620"]
    + ["mac-arabic", "mac-croatian", "mac-cyrillic", "mac-farsi", "mac-greek", "mac-iceland"]
    + ["mac-latin2", "mac-roman", "mac-romanian", "mac-turkish"]
)


def _bytes_text(data: bytes) -> str:
    """Unlabelled 8-bit text: UTF-8 if it is valid, else Windows-1252."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _valid(text: str) -> str:
    """``text`` without lone surrogates, which no database or parser takes (they are
    what UTF-8 cannot encode)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


# Body and attachments ----------------------------------------------------------------


@dataclass
class _Body:
    """Body text and attachments, gathered by walking a message's parts."""

    pieces: list[str] = field(default_factory=list)
    room: int = MAX_BODY_TEXT
    names: list[str] = field(default_factory=list)
    has_attachment: bool = False
    parts: int = 0

    def text(self) -> str:
        return "\n".join(self.pieces)

    def add(self, text: str) -> None:
        text = text.strip()
        if text and self.room > 0:
            text = text[: self.room]
            self.pieces.append(text)
            self.room -= len(text) + 1

    def walk(self, part: Message, depth: int, embedded: bool, quiet: bool) -> None:
        """Gather ``part``: its text as body unless ``quiet`` (an alternative not taken),
        its attachments always. ``embedded``: inside a message/rfc822 part already."""
        self.parts += 1
        if self.parts > MAX_PARTS or depth > MAX_DEPTH:
            return
        content_type = _content_type(part)
        if part.is_multipart():
            children = [child for child in part.get_payload() if isinstance(child, Message)]
            if content_type in ("message/rfc822", "message/global"):
                self._message(part, children, depth, embedded, quiet)
            elif content_type.startswith("message/"):  # delivery reports: header blocks
                if _is_attachment(part, content_type):
                    self._attachment(part)
            elif content_type == "multipart/alternative":
                self._alternative(children, depth, embedded, quiet)
            else:
                for child in children:
                    self.walk(child, depth + 1, embedded, quiet)
        elif _is_attachment(part, content_type):
            self._attachment(part)
        elif content_type.startswith("text/") and not quiet:
            self.add(_part_text(part, html=content_type == "text/html"))

    def _alternative(
        self, children: list[Message], depth: int, embedded: bool, quiet: bool
    ) -> None:
        """A multipart/alternative: the text of one alternative (the plain one, else, or
        when that is empty, the last), the attachments of all."""
        taken = _taken(children)
        before = len(self.pieces)
        if taken is not None:
            self.walk(taken, depth + 1, embedded, quiet)
        others = [child for child in children if child is not taken]
        fallback = others[-1] if others and len(self.pieces) == before else None
        for child in others:
            self.walk(child, depth + 1, embedded, quiet or child is not fallback)

    def _message(
        self, part: Message, children: list[Message], depth: int, embedded: bool, quiet: bool
    ) -> None:
        """A message/rfc822 part: an attachment, whose subject and text are body text of
        the outer message (one level down; deeper ones are attachments only)."""
        inner = children[0] if children else None
        subject = _Headers(inner).first("subject") if inner is not None else ""
        self._attachment(part, fallback=_one_line(subject))
        if inner is not None and not embedded and not quiet:
            self.add(subject)
            self.walk(inner, depth + 1, embedded=True, quiet=False)

    def _attachment(self, part: Message, fallback: str = "") -> None:
        self.has_attachment = True
        name = _file_name(part) or fallback
        if name:
            self.names.append(name[:MAX_DISPLAY])


def _taken(children: list[Message]) -> Message | None:
    """The alternative whose text is the body: the plain one, else the last (the
    richest, by RFC 2046's order)."""
    for child in children:
        if _content_type(child) == "text/plain" and not _is_attachment(child, "text/plain"):
            return child
    return children[-1] if children else None


def _is_attachment(part: Message, content_type: str) -> bool:
    """An attachment: so declared, or named, or a leaf that is not text and not shown
    inline (an image of a multipart/related body, without name, is inline)."""
    disposition = _disposition(part)
    if disposition == "attachment" or _file_name(part):
        return True
    if content_type.startswith(("text/", "multipart/", "message/")):
        return False
    return disposition != "inline" and not _fields(part).first("content-id")


def _disposition(part: Message) -> str:
    value = _fields(part).first("content-disposition")
    return str(value).split(";", 1)[0].strip().lower() if value else ""


def _file_name(part: Message) -> str:
    """The decoded file name of a part: the disposition's ``filename`` or the content
    type's ``name`` (RFC 2231 continuations and charsets, RFC 2047 words in quotes)."""
    fields = _fields(part)
    try:
        name: object = _file_name_param(fields) or fields.param("name", "content-type")
        if isinstance(name, tuple):
            name = email.utils.collapse_rfc2231_value(name)
    except Exception:  # a broken RFC 2231 parameter: no name rather than no body
        return ""
    if not isinstance(name, str):
        return ""
    return _one_line(_decode_words(_unfold(name)))


def _part_text(part: Message, html: bool) -> str:
    """The text of a leaf part: transfer encoding undone, at most ``MAX_PART_TEXT``
    bytes, in its charset; markup stripped for HTML."""
    data: object = part.content if isinstance(part, _Part) else None
    if data is None:
        data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    data = data[:MAX_PART_TEXT]
    charset = _charset_param(_fields(part))
    text = _charset_text(data, charset)
    if html:
        text = html_text(text)
    return text.replace("\x00", " ")
