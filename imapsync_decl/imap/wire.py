"""The IMAP wire format, without I/O: what goes out and what comes back.

Outgoing: :class:`Str` (quoted or literal) and atoms pass :func:`encode_argument`, the
one check that no CR, LF or NUL reaches the wire; :func:`sequence_set` and
:func:`batch_uids` shape UID arguments; :func:`sasl_plain` builds the PLAIN payload.
Incoming: a tokenizer for responses with literals, and parsers for LIST, NAMESPACE,
STATUS, SEARCH, FETCH items and ``[MODIFIED]`` codes, taking the untagged data
imaplib collects; folder names are decoded from modified UTF-7 and mapped to the
project's folder paths (:func:`folder_path`). Everything here is a pure function of
its arguments and is tested with tables of server lines.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from imapclient import imap_utf7
from imapclient.response_parser import parse_response

from imapsync_decl.imap.errors import ProtocolError, UnsafeValue
from imapsync_decl.imap.facts import FetchedMessage, FolderInfo

__all__ = [
    "EXPUNGED_RE",
    "NONEXISTENT_RE",
    "UNSAFE",
    "ListEntry",
    "Literal",
    "Namespace",
    "Str",
    "answer_text",
    "batch_uids",
    "check",
    "decode_name",
    "encode_argument",
    "encode_name",
    "fetched_message",
    "folder_path",
    "modified_uids",
    "namespace_of",
    "parse_list_response",
    "parse_namespace_response",
    "parse_search_response",
    "parse_status_responses",
    "plain_forms",
    "redact",
    "responses",
    "same_mailbox",
    "sasl_plain",
    "search_atom",
    "sequence_set",
    "wire_bytes",
    "wire_name",
    "wire_text",
]


# --- folder names and UID sets ------------------------------------------------------------------


def folder_path(name: str, prefix: str, delimiter: str | None) -> str:
    """The project's path of a folder: levels joined by ``/``, namespace prefix removed.

    ``name`` and ``prefix`` are already decoded from modified UTF-7. INBOX (in any
    case) is always ``INBOX``; its sub-folders keep ``INBOX`` as first level when
    the server puts them there (Dovecot: ``INBOX/Sub`` -> ``INBOX/Sub``), while a
    Cyrus-style prefix ``INBOX.`` is removed (``INBOX.Sent`` -> ``Sent``).
    """
    if name.upper() == "INBOX":
        return "INBOX"
    rest = _strip_prefix(name, prefix)
    if rest is None:
        rest = name
    if delimiter:
        levels = rest.split(delimiter)
        if levels and levels[0].upper() == "INBOX":
            levels[0] = "INBOX"
        return "/".join(levels)
    return rest


def _strip_prefix(name: str, prefix: str) -> str | None:
    """``name`` without ``prefix``, or None if it does not start with it (INBOX is caseless)."""
    if not prefix:
        return name
    if name.startswith(prefix):
        return name[len(prefix) :]
    if prefix[:5].upper() == "INBOX" and name[:5].upper() == "INBOX":
        tail = prefix[5:]
        if name[5:].startswith(tail):
            return name[5 + len(tail) :]
    return None


def sequence_set(uids: Iterable[int]) -> str:
    """A compact IMAP sequence set of exactly these UIDs: ``[1, 2, 3, 7]`` -> ``"1:3,7"``."""
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("empty sequence set")
    parts: list[str] = []
    start = previous = ordered[0]
    for uid in ordered[1:]:
        if uid == previous + 1:
            previous = uid
            continue
        parts.append(f"{start}:{previous}" if previous > start else str(start))
        start = previous = uid
    parts.append(f"{start}:{previous}" if previous > start else str(start))
    return ",".join(parts)


def batch_uids(
    uids: Iterable[int],
    *,
    max_count: int,
    max_bytes: int,
    sizes: Mapping[int, int] | None = None,
) -> Iterator[list[int]]:
    """Split ``uids`` (sorted, without duplicates) into FETCH batches.

    A batch has at most ``max_count`` UIDs and, when ``sizes`` is given, at most
    ``max_bytes`` bytes, except that a message larger than ``max_bytes`` forms a
    batch of its own. A UID missing from ``sizes`` counts as 0 bytes; without
    ``sizes`` only ``max_count`` limits a batch.
    """
    if max_count < 1 or max_bytes < 1:
        raise ValueError("max_count and max_bytes must be positive")
    batch: list[int] = []
    batch_bytes = 0
    for uid in sorted(set(uids)):
        size = sizes.get(uid, 0) if sizes is not None else 0
        if batch and (len(batch) >= max_count or batch_bytes + size > max_bytes):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(uid)
        batch_bytes += size
    if batch:
        yield batch


def decode_name(raw: bytes) -> str:
    """A mailbox name decoded from modified UTF-7 (raw 8-bit names are read as UTF-8)."""
    try:
        return imap_utf7.decode(raw)  # type: ignore[no-any-return]
    except (UnicodeError, ValueError):
        return raw.decode("utf-8", "replace")


def encode_name(name: str) -> bytes:
    """A mailbox name encoded in modified UTF-7 (RFC 3501 5.1.3), the inverse of
    :func:`decode_name`: printable ASCII stays, ``&`` becomes ``&-``, the rest is
    base64 of UTF-16 between ``&`` and ``-``."""
    return imap_utf7.encode(name)  # type: ignore[no-any-return]


def wire_name(path: str, prefix: str, delimiter: str | None) -> str:
    """The server's name of the project's folder ``path`` (the inverse of
    :func:`folder_path`): levels joined by ``delimiter``, each encoded in modified
    UTF-7, behind the personal namespace's ``prefix`` (as on the wire). INBOX and its
    sub-folders are never put behind a prefix that does not start with INBOX.

    Raises ValueError for a path that has no such name: an empty level, a level that
    holds the delimiter, or levels on a server without a hierarchy delimiter.
    """
    levels = path.strip("/").split("/")
    if any(not level for level in levels):
        raise ValueError(f"the folder path {path!r} has an empty level")
    if levels[0].upper() == "INBOX":
        levels[0] = "INBOX"
    if len(levels) > 1 and not delimiter:
        raise ValueError(f"the server has no hierarchy delimiter for the folder path {path!r}")
    if delimiter and any(delimiter in level for level in levels):
        raise ValueError(
            f"a level of the folder path {path!r} holds the server's delimiter {delimiter!r}"
        )
    encoded = (delimiter or "").join(encode_name(level).decode("ascii") for level in levels)
    if levels == ["INBOX"]:
        return "INBOX"
    if levels[0] == "INBOX" and not prefix.upper().startswith("INBOX"):
        return encoded
    return prefix + encoded


def wire_text(raw: bytes) -> str:
    """A name as received, kept as text (undecodable bytes as surrogate escapes)."""
    return raw.decode("utf-8", "surrogateescape")


def wire_bytes(folder: FolderInfo) -> bytes:
    """The bytes of a folder's name as the server knows it."""
    return folder.wire_name.encode("utf-8", "surrogateescape")


# --- what goes out: the one check ---------------------------------------------------------------


@dataclass(frozen=True)
class Str:
    """A string argument of a command (a user name, password, folder name, pattern).

    It is sent as a quoted string when it is ASCII, else as a literal of its UTF-8
    bytes (wire names keep undecodable bytes as surrogate escapes). ``what`` names it
    in errors; a ``secret`` is never shown.
    """

    value: str
    what: str
    secret: bool = False

    def encoded(self) -> bytes:
        return self.value.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Literal:
    """An argument that goes as a literal: ``{n}`` and then its bytes."""

    data: bytes


UNSAFE = re.compile(rb"[\r\n\0]")
_ATOM_SAFE = re.compile(rb"[\x20-\x7e]*")
_SEARCH_ATOM = re.compile(r"[A-Za-z0-9:,-]+")


def check(raw: bytes, what: str, shown: str | None) -> None:
    """The one check of everything that reaches the wire: no CR, LF or NUL."""
    if UNSAFE.search(raw) is None:
        return
    value = f" {shown!r}" if shown is not None else ""
    raise UnsafeValue(
        f"the {what}{value} contains a line break or NUL character (CR, LF or NUL), which "
        "cannot be sent to an IMAP server; nothing was sent"
    )


def encode_argument(arg: Any) -> bytes | Literal:
    """One command argument as it goes on the wire: a :class:`Str` quoted or as a literal,
    a plain ``str`` as an atom of printable ASCII; anything unsafe raises UnsafeValue."""
    if isinstance(arg, Str):
        raw = arg.encoded()
        check(raw, arg.what, None if arg.secret else arg.value)
        if raw.isascii():
            return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        return Literal(raw)
    if isinstance(arg, str):
        raw = arg.encode("utf-8", "surrogateescape")
        check(raw, "command argument", arg)
        if not _ATOM_SAFE.fullmatch(raw):
            raise UnsafeValue(
                f"the command argument {arg!r} is not printable ASCII; nothing was sent"
            )
        return raw
    if isinstance(arg, Literal):
        return arg  # message contents (APPEND): sent as they are, counted, never parsed
    raise TypeError(f"not a command argument: {type(arg).__name__}")


def search_atom(key: str) -> bool:
    """Whether ``key`` may be sent as a search key (an atom: letters, digits, ``:,-``)."""
    return _SEARCH_ATOM.fullmatch(key) is not None


def sasl_plain(authzid: str, authcid: str, secret: str) -> bytes:
    """The base64 SASL PLAIN message (RFC 4616) of these parts."""
    parts = (authzid, authcid, secret)
    return base64.b64encode(b"\0".join(p.encode("utf-8", "surrogateescape") for p in parts))


def plain_forms(username: str, authzid: str | None, secret: str) -> list[str]:
    """Encoded forms of the password that could show up in an answer (SASL PLAIN payload)."""
    payload = f"{authzid or ''}\0{username}\0{secret}".encode()
    # imaplib's error texts show server data as bytes reprs (b'p\xc3\xa4ss').
    return [base64.b64encode(payload).decode("ascii"), repr(secret.encode())[2:-1]]


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every one of ``secrets`` masked."""
    for value in secrets:
        if value:
            text = text.replace(value, "********")
    return text


# --- what comes back ----------------------------------------------------------------------------

_Token = bytes | None | list["_Token"]

NONEXISTENT_RE = re.compile(
    r"\[NONEXISTENT\]|does ?n[o']t exist|does not exist|no such (mailbox|folder)|"
    r"unknown (mailbox|folder)|mailbox not found|folder not found",
    re.IGNORECASE,
)
EXPUNGED_RE = re.compile(r"\[EXPUNGEISSUED\]|expunged|no longer exist", re.IGNORECASE)
_MODIFIED = re.compile(r"\[MODIFIED ([0-9:,]+)\]", re.IGNORECASE)


def answer_text(data: Any) -> str:
    """The server's text of a tagged answer (imaplib gives a list of bytes)."""
    if isinstance(data, list | tuple):
        parts = [d for d in data if d is not None]
        data = parts[-1] if parts else ""
    if isinstance(data, tuple):
        data = data[0]
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)


def _tokenize(segments: Sequence[tuple[bytes, bytes | None]]) -> list[_Token]:
    """Tokens of one response made of text segments, each followed by an optional literal.

    Parenthesised lists become nested lists; quoted strings are unescaped; ``NIL``
    becomes None; a literal ``{n}`` at the end of a segment is replaced by its data.
    """
    root: list[_Token] = []
    stack: list[list[_Token]] = [root]
    for text, literal in segments:
        i, n = 0, len(text)
        while i < n:
            c = text[i : i + 1]
            if c == b" ":
                i += 1
            elif c == b"(":
                inner: list[_Token] = []
                stack[-1].append(inner)
                stack.append(inner)
                i += 1
            elif c == b")":
                if len(stack) == 1:
                    raise ValueError("unbalanced ')'")
                stack.pop()
                i += 1
            elif c == b'"':
                out = bytearray()
                i += 1
                while i < n and text[i : i + 1] != b'"':
                    if text[i : i + 1] == b"\\" and i + 1 < n:
                        i += 1
                    out += text[i : i + 1]
                    i += 1
                if i >= n:
                    raise ValueError("unterminated quoted string")
                stack[-1].append(bytes(out))
                i += 1
            elif c == b"{" and literal is not None and re.fullmatch(rb"\{\d+\+?\}", text[i:]):
                stack[-1].append(literal)
                literal = None
                i = n
            else:
                j = i
                while j < n and text[j : j + 1] not in (b" ", b"(", b")"):
                    # Square brackets may hold spaces (BODY[HEADER.FIELDS (A B)]): not in LIST.
                    j += 1
                atom = text[i:j]
                stack[-1].append(None if atom.upper() == b"NIL" else atom)
                i = j
        if literal is not None:
            raise ValueError("literal without {n} marker")
    if len(stack) != 1:
        raise ValueError("unbalanced '('")
    return root


def responses(data: Sequence[Any]) -> list[list[Any]]:
    """Split imaplib's untagged data of one kind into the items of each response.

    imaplib stores a response with a literal as ``(text_up_to_literal, literal)``
    followed by the rest of the line as plain bytes, so a response ends at the
    first plain ``bytes`` item.
    """
    found: list[list[Any]] = []
    current: list[Any] = []
    for item in data:
        if item is None:
            continue
        current.append(item)
        if not isinstance(item, tuple):
            found.append(current)
            current = []
    if current:
        found.append(current)
    return found


def _group_records(data: Sequence[Any]) -> list[list[tuple[bytes, bytes | None]]]:
    """One list of (text, literal) segments per response (see :func:`responses`)."""
    return [
        [
            (bytes(item[0]), bytes(item[1])) if isinstance(item, tuple) else (bytes(item), None)
            for item in response
        ]
        for response in responses(data)
    ]


@dataclass(frozen=True)
class ListEntry:
    """One untagged LIST response: attributes, delimiter and the name as sent (still encoded)."""

    attributes: tuple[str, ...]
    delimiter: str | None
    name: bytes


def parse_list_response(data: Sequence[Any]) -> list[ListEntry]:
    """Parse the untagged LIST data imaplib collected (bytes lines and literal tuples).

    Names are kept as bytes exactly as the server sent them (a name such as
    ``007`` stays ``b"007"``); LIST-EXTENDED data after the name is ignored.
    """
    entries: list[ListEntry] = []
    for record in _group_records(data):
        if all(not text.strip() and literal is None for text, literal in record):
            continue
        try:
            tokens = _tokenize(record)
        except ValueError as exc:
            raise ProtocolError(f"cannot parse LIST response {record!r}: {exc}") from None
        if len(tokens) < 3 or not isinstance(tokens[0], list) or isinstance(tokens[1], list):
            raise ProtocolError(f"cannot parse LIST response {record!r}")
        name = tokens[2]
        if not isinstance(name, bytes):
            raise ProtocolError(f"LIST response without a mailbox name: {record!r}")
        attributes = tuple(a.decode("ascii", "replace") for a in tokens[0] if isinstance(a, bytes))
        delimiter = tokens[1].decode("utf-8", "replace") if tokens[1] is not None else None
        entries.append(ListEntry(attributes, delimiter or None, name))
    return entries


@dataclass(frozen=True)
class Namespace:
    """One namespace of a NAMESPACE answer."""

    prefix: str  # as on the wire (modified UTF-7)
    delimiter: str | None
    personal: bool


def parse_namespace_response(data: Sequence[Any]) -> list[Namespace]:
    """The namespaces of the last NAMESPACE response (personal, other users', shared),
    in the server's order; a prefix may still hold CR, LF or NUL (see :data:`UNSAFE`)."""
    answers = responses(data)
    parsed = parse_response(answers[-1]) if answers else []
    found: list[Namespace] = []
    for kind, group in enumerate(parsed[:3]):
        if not group:
            continue
        for pair in group:
            if not isinstance(pair, tuple) or len(pair) < 2:
                continue
            prefix = pair[0]
            prefix_text = wire_text(prefix) if isinstance(prefix, bytes) else str(prefix or "")
            sep = pair[1]
            sep_text = sep.decode("utf-8", "replace") if isinstance(sep, bytes) else None
            found.append(Namespace(prefix_text, sep_text or None, kind == 0))
    return found


def namespace_of(wire: str, namespaces: Sequence[Namespace]) -> Namespace | None:
    """The namespace a name belongs to: INBOX is personal, else the longest matching prefix."""
    personal = [ns for ns in namespaces if ns.personal]
    if wire.upper() == "INBOX":
        return personal[0] if personal else None
    best: Namespace | None = None
    for ns in namespaces:
        root = ns.prefix
        if ns.delimiter and root.endswith(ns.delimiter):
            root = root[: -len(ns.delimiter)]
        # A name in the namespace, or the namespace's own root ("Public" for "Public/").
        inside = _strip_prefix(wire, ns.prefix) is not None or (root and wire == root)
        better = (
            best is None
            or len(ns.prefix) > len(best.prefix)
            or (len(ns.prefix) == len(best.prefix) and ns.personal and not best.personal)
        )
        if inside and better:
            best = ns
    return best


def parse_status_responses(data: Sequence[Any]) -> list[tuple[bytes, dict[str, int]]]:
    """Every STATUS response imaplib collected: the mailbox name exactly as sent (still
    encoded; quoted strings unescaped, literals taken whole) and its numeric items
    (names upper-cased). A response that cannot be parsed raises ProtocolError."""
    found: list[tuple[bytes, dict[str, int]]] = []
    for record in _group_records(data):
        if all(not text.strip() and literal is None for text, literal in record):
            continue
        try:
            tokens = _tokenize(record)
        except ValueError as exc:
            raise ProtocolError(f"cannot parse STATUS response {record!r}: {exc}") from None
        if len(tokens) != 2 or not isinstance(tokens[0], bytes) or not isinstance(tokens[1], list):
            raise ProtocolError(f"cannot parse STATUS response {record!r}")
        items = tokens[1]
        values: dict[str, int] = {}
        for key, value in zip(items[0::2], items[1::2], strict=False):
            if (
                isinstance(key, bytes)
                and isinstance(value, bytes)
                and value.isdigit()
                and len(value) <= 20
            ):
                values[key.decode("ascii", "replace").upper()] = int(value)
        found.append((tokens[0], values))
    return found


def same_mailbox(a: bytes, b: bytes) -> bool:
    """Whether two mailbox names as sent name the same mailbox: byte for byte, except
    that INBOX is case-insensitive (RFC 3501 5.1)."""
    return a == b or (a.upper() == b"INBOX" and b.upper() == b"INBOX")


def parse_search_response(data: Sequence[Any]) -> list[int]:
    """The UIDs of SEARCH responses, ascending and without duplicates."""
    uids: set[int] = set()
    for line in data:
        if not isinstance(line, bytes):
            continue
        for word in line.split():
            if word.isdigit():
                uids.add(int(word))
            elif word.startswith(b"("):
                break  # (MODSEQ n) at the end of a CONDSTORE answer
    return sorted(uids)


def fetched_message(uid: int, item: Mapping[bytes, Any]) -> FetchedMessage | None:
    """The message of one parsed FETCH response, None when it carries no ``BODY[]``.

    ``flags`` leave out ``\\Recent``, which belongs to the session and not to the
    message. Raises ValueError when ``BODY[]`` is not a string.
    """
    if b"BODY[]" not in item:
        return None
    body = item[b"BODY[]"]
    if body is None:
        body = b""
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogateescape")
    if not isinstance(body, bytes):
        raise ValueError("BODY[] is not a string")
    date = item.get(b"INTERNALDATE")
    flags = [f for f in item.get(b"FLAGS") or () if f.lower() != b"\\recent"]
    return FetchedMessage(
        uid=uid,
        body=body,
        internal_date=date if isinstance(date, datetime) else None,
        flags=tuple(
            f.decode("utf-8", "replace") if isinstance(f, bytes) else str(f) for f in flags
        ),
    )


def modified_uids(text: str) -> set[int]:
    """The UIDs of a ``[MODIFIED set]`` response code (RFC 7162): not stored."""
    found: set[int] = set()
    match = _MODIFIED.search(text)
    if match is None:
        return found
    for part in match.group(1).split(","):
        low, _, high = part.partition(":")
        if high:
            a, b = sorted((int(low), int(high)))
            found.update(range(a, b + 1))
        else:
            found.add(int(low))
    return found
