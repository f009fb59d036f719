"""The few header fields the archive index keeps about each message.

The archive stores the exact bytes the server returned; the index only keeps a
handful of header values for listing and searching. Those values come from
``parse_headers``, which reads the header section of a raw message and never
raises: mail in the wild carries broken encodings, bare LF line ends, 8-bit
bytes in headers and malformed encoded words, and none of that may stop an
archive run. What cannot be decoded is replaced (U+FFFD), never dropped
silently and never fatal.
"""

from __future__ import annotations

import binascii
import codecs
import re
from dataclasses import dataclass

MAX_VALUE_LENGTH = 1000
"""Each header value is cut to this many characters."""

MAX_HEADER_BYTES = 1024 * 1024
"""At most this much of a message is read as its header section."""


@dataclass(frozen=True)
class MessageHeaders:
    """Decoded header values of one message (None when the header is absent)."""

    message_id: str | None = None
    date: str | None = None
    from_addr: str | None = None
    to_addr: str | None = None
    subject: str | None = None


_FIELDS = {
    "message-id": "message_id",
    "date": "date",
    "from": "from_addr",
    "to": "to_addr",
    "subject": "subject",
}

_LINE_END = re.compile(rb"\r?\n")
_FIELD_NAME = re.compile(rb"[!-9;-~]+")  # printable US-ASCII except ':' (RFC 5322 ftext)
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_WHITESPACE = re.compile(r"[ \t]+")


def parse_headers(raw: bytes) -> MessageHeaders:
    """The Message-ID, Date, From, To and Subject of a raw message.

    Only the header section is read (up to the first empty line, with CRLF or
    bare LF line ends). Folded lines are unfolded, RFC 2047 encoded words are
    decoded, control characters become spaces, each value is stripped and cut
    to ``MAX_VALUE_LENGTH`` characters. The first occurrence of a field wins.
    Never raises on any input.
    """
    found: dict[str, str] = {}
    for name, value in _header_fields(_header_section(raw)):
        attribute = _FIELDS.get(name)
        if attribute is None or attribute in found:
            continue
        found[attribute] = _clean(_decode_words(_decode_bytes(value)))
    return MessageHeaders(**{k: (v or None) for k, v in found.items()})


_HEADER_END = re.compile(rb"\n\r?\n")


def _header_section(raw: bytes) -> bytes:
    """The bytes up to the empty line that ends the header section (at most
    ``MAX_HEADER_BYTES``), found without looking at the body: a large message costs
    no more than a small one."""
    if raw.startswith((b"\r\n", b"\n")):
        return b""
    end = _HEADER_END.search(raw, 0, MAX_HEADER_BYTES)
    return raw[: end.start() + 1] if end is not None else raw[:MAX_HEADER_BYTES]


def _header_fields(raw: bytes) -> list[tuple[str, bytes]]:
    """(lower-case name, unfolded raw value) of each field of the header section."""
    fields: list[tuple[str, bytes]] = []
    current: tuple[str, list[bytes]] | None = None
    for line in _LINE_END.split(raw):
        if line == b"":
            break  # the empty line that ends the header section
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current[1].append(line)
            continue
        if current is not None:
            fields.append((current[0], b"".join(current[1])))
            current = None
        name, colon, value = line.partition(b":")
        name = name.rstrip(b" \t")  # obsolete syntax allows space before the colon
        if colon and _FIELD_NAME.fullmatch(name):
            current = (name.decode("ascii").lower(), [value])
    if current is not None:
        fields.append((current[0], b"".join(current[1])))
    return fields


def _decode_bytes(value: bytes) -> str:
    """Header bytes as text: UTF-8 (RFC 6532), else Windows-1252 (the usual 8-bit guess).

    Bytes that Windows-1252 does not define become U+FFFD.
    """
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("cp1252", errors="replace")


def _decode_words(text: str) -> str:
    """Decode RFC 2047 encoded words; whitespace between adjacent words is dropped.

    Adjacent words of the same charset are joined before decoding, so a
    multi-byte character split across two words comes out whole.
    """
    if "=?" not in text:
        return text
    parts: list[str] = []
    pending_charset: str | None = None
    pending: bytearray = bytearray()
    position = 0

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            parts.append(_decode_charset(bytes(pending), pending_charset))
            pending.clear()
            pending_charset = None

    for match in _ENCODED_WORD.finditer(text):
        between = text[position : match.start()]
        decoded = _decode_payload(match.group(2), match.group(3))
        if decoded is None:  # not a valid encoded word: keep it as it stands
            continue
        charset = match.group(1).split("*", 1)[0].lower()  # RFC 2231 language suffix
        if pending_charset is not None and between.strip(" \t") == "":
            if charset != pending_charset:
                flush()
        else:
            flush()
            parts.append(between)
        pending_charset = charset
        pending += decoded
        position = match.end()
    flush()
    parts.append(text[position:])
    return "".join(parts)


def _decode_payload(encoding: str, payload: str) -> bytes | None:
    """The bytes of an encoded word's payload, or None when it cannot be decoded."""
    try:
        data = payload.encode("ascii")
    except UnicodeEncodeError:
        return None
    if encoding in "bB":
        data = data.rstrip(b"=")
        if len(data) % 4 == 1:  # a lone trailing character cannot carry a byte
            data = data[:-1]
        data += b"=" * (-len(data) % 4)
        try:
            return binascii.a2b_base64(data, strict_mode=True)
        except (binascii.Error, ValueError):
            pass
        try:  # lenient: characters outside the alphabet are skipped
            decoded = binascii.a2b_base64(data)
        except (binascii.Error, ValueError):
            return None
        return decoded if decoded or not data else None
    return _decode_q(data)


def _decode_q(data: bytes) -> bytes:
    """RFC 2047 "Q" decoding, lenient: a stray '=' is kept as it is."""
    out = bytearray()
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == 0x5F:  # '_'
            out.append(0x20)
        elif byte == 0x3D and _is_hex(data[i + 1 : i + 3]):
            out.append(int(data[i + 1 : i + 3], 16))
            i += 2
        else:
            out.append(byte)
        i += 1
    return bytes(out)


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


def _decode_charset(data: bytes, charset: str) -> str:
    """Bytes in a named charset; an unknown charset is read as UTF-8."""
    try:
        codec = codecs.lookup(charset).name
    except (LookupError, ValueError):
        codec = "utf-8"
    if codec in ("ascii", "us-ascii"):
        codec = "utf-8"  # mislabelled 8-bit text is common; UTF-8 is a superset
    try:
        return data.decode(codec, errors="replace")
    except Exception:  # a codec may fail in ways other than UnicodeDecodeError
        return data.decode("utf-8", errors="replace")


def _clean(text: str) -> str:
    text = _CONTROL.sub(" ", text)
    text = _WHITESPACE.sub(" ", text.replace("\t", " ")).strip()
    return text[:MAX_VALUE_LENGTH]
