"""The IMAP client of the project: the only module that talks to IMAP servers.

:class:`ImapSession` opens one connection to one mailbox, logs in with the
mailbox's :class:`~imapsync_decl.config.resolve.Credentials` and reads what archiving
needs: the folders of the personal namespace, their state, the UIDs and sizes
of their messages, and the messages themselves. Reading changes nothing on the
server: folders are opened with EXAMINE (read-only) and bodies are fetched with
``BODY.PEEK[]`` (so ``\\Seen`` is never set). The only writes are those of verified
deletion, and only after ``select_for_deletion``: ``mark_deleted`` (STORE
``+FLAGS (\\Deleted)``, with UNCHANGEDSINCE where the server has CONDSTORE) and
``expunge_uids`` (UID EXPUNGE of exactly those UIDs). No CREATE, DELETE or APPEND is
ever sent.

Every failure on the server side, or on the way to it, surfaces as an
:class:`ImapError` subclass whose message says what went wrong and never holds a
password:

* :class:`ConnectFailed`: name resolution, refused connection, timeout, TLS
  handshake or certificate, STARTTLS not offered.
* :class:`LoginFailed`: the server refused the credentials.
* :class:`FolderGone`: EXAMINE or STATUS of a folder that no longer exists.
* :class:`ConnectionLost`: the connection broke or timed out during a command;
  the session is unusable afterwards, and a retry on a new session may succeed.
* :class:`Interrupted`: a stop (SIGINT/SIGTERM) was requested during a command.
* :class:`ProtocolError`: anything else the server refused or answered wrongly
  (:class:`MessageTooLarge`: a message larger than ``server.max_message_size``).
* :class:`UnsafeValue`: a value holds CR, LF or NUL and was not sent at all.

The wire is defended against the server and against what reaches it from the
configuration (:class:`_Connection`, below imaplib's protocol engine):

* Every argument of every command passes one choke point (``_Connection._command``):
  CR, LF and NUL are refused before anything is sent; strings that are not ASCII go
  as literals (non-synchronizing with LITERAL+ / LITERAL-).
* Every size from the server is bounded: a response line (:data:`MAX_LINE`), the
  data of all responses to one command (:data:`MAX_UNTAGGED`, plus the expected
  message bodies of a FETCH), and each literal (the message's RFC822.SIZE plus a
  margin, and ``server.max_message_size``). Nothing is allocated from an announced
  size before the bytes arrive.
* Every wait has a deadline: a read fails when ``server.timeout`` seconds pass without
  progress (a complete line, or :data:`PROGRESS_BYTES` more), and a requested stop
  (``should_stop``) is noticed within :data:`POLL_SECONDS`.
* Nothing received before the TLS handshake of STARTTLS survives it, and every
  command sees only the responses that arrived after it was sent.

The protocol engine is ``imaplib``'s (tags, response parsing into untagged lists);
``imapclient`` provides the response parsers and modified UTF-7.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog
from imapclient import imap_utf7
from imapclient.response_parser import parse_fetch_response, parse_response

from imapsync_decl.config.documents import Server
from imapsync_decl.config.resolve import Credentials
from imapsync_decl.imap.facts import FetchedMessage, FolderInfo, FolderState

__all__ = [
    "ConnectFailed",
    "ConnectionLost",
    "FolderGone",
    "ImapError",
    "ImapSession",
    "Interrupted",
    "ListEntry",
    "LoginFailed",
    "MessageTooLarge",
    "ProtocolError",
    "SessionStats",
    "UnsafeValue",
    "batch_uids",
    "folder_path",
    "parse_list_response",
    "sequence_set",
]

#: Longest response line accepted (imaplib's own limit of 1 MB is too small for a
#: ``UID SEARCH ALL`` answer in a folder with a few hundred thousand messages).
MAX_LINE = 64 * 1024 * 1024

#: Response data accepted for one command (lines and literals, each counted with
#: :data:`ITEM_COST` more for its bookkeeping), apart from the message bodies a FETCH
#: expects: an endless stream of untagged responses fails the command here.
MAX_UNTAGGED = 64 * 1024 * 1024

#: What each response line or literal costs on top of its bytes in :data:`MAX_UNTAGGED`
#: (Python objects and list slots), so that a flood of tiny lines is bounded too.
ITEM_COST = 64

#: A read makes progress with a complete line or with this many more bytes; a read
#: without progress for ``server.timeout`` seconds fails (a trickle of single bytes
#: cannot keep a command alive, a slow but moving FETCH can).
PROGRESS_BYTES = 16 * 1024

#: How often a blocked read looks at ``should_stop``.
POLL_SECONDS = 0.5

#: A message body may exceed its RFC822.SIZE (servers count line ends differently):
#: by at most this much (plus the size itself, i.e. twice the size in all).
SIZE_MARGIN = 64 * 1024

#: UIDs per ``UID FETCH (RFC822.SIZE)`` command: keeps command lines short (RFC 7162
#: asks clients to stay below about 8000 octets).
SIZE_CHUNK = 500

#: LITERAL- (RFC 7888, part of IMAP4rev2): non-synchronizing literals up to this size.
LITERAL_MINUS_MAX = 4096

log = structlog.get_logger(__name__)


# --- errors -------------------------------------------------------------------------------------


class ImapError(Exception):
    """Base of every failure while talking to an IMAP server. ``str()`` is the message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConnectFailed(ImapError):
    """No IMAP session could be opened: DNS, refused, timeout, TLS, STARTTLS missing."""


class LoginFailed(ImapError):
    """The server refused the login (names the mailbox and the server's answer)."""


class FolderGone(ImapError):
    """A folder that was listed no longer exists (deleted or renamed meanwhile)."""


class ConnectionLost(ImapError):
    """The connection broke or timed out during a command; worth a retry on a new session."""


class ProtocolError(ImapError):
    """The server refused a command or answered something that cannot be understood."""


class MessageTooLarge(ProtocolError):
    """A message is larger than ``server.max_message_size``; it is not fetched."""


class Interrupted(ConnectionLost):
    """A stop was requested (SIGINT/SIGTERM) while a command waited for the server; the
    connection was closed without waiting for the answer."""


class UnsafeValue(ImapError, ValueError):
    """A value to be sent holds CR, LF or NUL (it would end the command early or inject
    another one); nothing of the command was sent. The message never holds a secret."""


# --- pure helpers -------------------------------------------------------------------------------


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


# --- LIST responses -----------------------------------------------------------------------------

_Token = bytes | None | list["_Token"]
_ATOM_END = b" ()\r\n"


@dataclass(frozen=True)
class ListEntry:
    """One untagged LIST response: attributes, delimiter and the name as sent (still encoded)."""

    attributes: tuple[str, ...]
    delimiter: str | None
    name: bytes


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


def _responses(data: Sequence[Any]) -> list[list[Any]]:
    """Split imaplib's untagged data of one kind into the items of each response.

    imaplib stores a response with a literal as ``(text_up_to_literal, literal)``
    followed by the rest of the line as plain bytes, so a response ends at the
    first plain ``bytes`` item.
    """
    responses: list[list[Any]] = []
    current: list[Any] = []
    for item in data:
        if item is None:
            continue
        current.append(item)
        if not isinstance(item, tuple):
            responses.append(current)
            current = []
    if current:
        responses.append(current)
    return responses


def _group_records(data: Sequence[Any]) -> list[list[tuple[bytes, bytes | None]]]:
    """One list of (text, literal) segments per response (see :func:`_responses`)."""
    return [
        [
            (bytes(item[0]), bytes(item[1])) if isinstance(item, tuple) else (bytes(item), None)
            for item in response
        ]
        for response in _responses(data)
    ]


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


def _decode_name(raw: bytes) -> str:
    """A mailbox name decoded from modified UTF-7 (raw 8-bit names are read as UTF-8)."""
    try:
        return imap_utf7.decode(raw)  # type: ignore[no-any-return]
    except (UnicodeError, ValueError):
        return raw.decode("utf-8", "replace")


def _wire_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _wire_bytes(folder: FolderInfo) -> bytes:
    return folder.wire_name.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class _Namespace:
    prefix: str  # as on the wire (modified UTF-7)
    delimiter: str | None
    personal: bool


# --- the connection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Str:
    """A string argument of a command (a user name, password, folder name, pattern).

    The connection sends it as a quoted string when it is ASCII, else as a literal of
    its UTF-8 bytes (wire names keep undecodable bytes as surrogate escapes). ``what``
    names it in errors; a ``secret`` is never shown.
    """

    value: str
    what: str
    secret: bool = False

    def encoded(self) -> bytes:
        return self.value.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class _Literal:
    data: bytes


_UNSAFE = re.compile(rb"[\r\n\0]")
_ATOM_SAFE = re.compile(rb"[\x20-\x7e]*")


def _check(raw: bytes, what: str, shown: str | None) -> None:
    """The one check of everything that reaches the wire: no CR, LF or NUL."""
    if _UNSAFE.search(raw) is None:
        return
    value = f" {shown!r}" if shown is not None else ""
    raise UnsafeValue(
        f"the {what}{value} contains a line break or NUL character (CR, LF or NUL), which "
        "cannot be sent to an IMAP server; nothing was sent"
    )


def _encode_argument(arg: Any) -> bytes | _Literal:
    if isinstance(arg, _Str):
        raw = arg.encoded()
        _check(raw, arg.what, None if arg.secret else arg.value)
        if raw.isascii():
            return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        return _Literal(raw)
    if isinstance(arg, str):
        raw = arg.encode("utf-8", "surrogateescape")
        _check(raw, "command argument", arg)
        if not _ATOM_SAFE.fullmatch(raw):
            raise UnsafeValue(
                f"the command argument {arg!r} is not printable ASCII; nothing was sent"
            )
        return raw
    raise TypeError(f"not a command argument: {type(arg).__name__}")


class _NoProgress(TimeoutError):
    """A read made no progress within the timeout."""


class _Stopped(Exception):
    """``should_stop`` said yes while a read waited."""


class _Oversized(Exception):
    """The server sent (or announced) more than a limit allows; the stream is abandoned."""


class _Tampered(Exception):
    """Data arrived where none may (after the STARTTLS answer, before the handshake)."""


class _Connection(imaplib.IMAP4):
    """imaplib's protocol engine on a socket read under limits and deadlines.

    imaplib parses responses and keeps tags; this class owns the bytes: it reads the
    socket itself (its own buffer, no ``makefile``), so that every read has an idle
    deadline and looks at ``should_stop``, no line or literal exceeds its limit, and
    nothing is allocated from an announced size. ``_command`` is the one choke point
    through which every argument reaches the wire.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        tls: ssl.SSLContext | None,
        should_stop: Callable[[], bool],
    ) -> None:
        self.timeout = timeout
        self._tls_context = tls
        self._should_stop = should_stop
        self._buffer = bytearray()
        self._sock_timeout: float | None = None
        self._used = 0
        self._budget = MAX_UNTAGGED
        self._literal_limit = MAX_UNTAGGED
        self._limit_reason = ""
        self._pending_limits: tuple[int, int, str] | None = None
        super().__init__(host, port, timeout)

    def _mesg(self, s: str, secs: float | None = None) -> None:
        """imaplib's protocol debugging stays off: nothing of the conversation is kept."""

    def _log(self, line: str) -> None:
        """See :meth:`_mesg`."""

    # --- the socket -------------------------------------------------------------------

    def open(self, host: str = "", port: int = 143, timeout: float | None = None) -> None:
        self.host, self.port = host, port
        self._reset_budget()
        sock = socket.create_connection((host, port), timeout=self.timeout)
        _no_delay(sock)
        self.sock = sock
        if self._tls_context is not None:
            try:
                self._handshake(self._tls_context)
            except BaseException:
                self.sock.close()
                raise

    def _handshake(self, context: ssl.SSLContext) -> ssl.SSLSocket:
        """The TLS handshake on the current socket, within the timeout, stoppable."""
        tls = context.wrap_socket(
            self.sock, server_hostname=self.host or None, do_handshake_on_connect=False
        )
        self.sock = tls
        self._sock_timeout = None
        deadline = time.monotonic() + self.timeout
        while True:
            self._settimeout(self._wait_slice(deadline))
            try:
                tls.do_handshake()
            except TimeoutError:
                continue
            return tls

    def _settimeout(self, seconds: float) -> None:
        if seconds != self._sock_timeout:
            self.sock.settimeout(seconds)
            self._sock_timeout = seconds

    def _wait_slice(self, deadline: float) -> float:
        """How long the next blocking call may wait; raises when stopped or past the deadline."""
        if self._should_stop():
            raise _Stopped("a stop was requested")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _NoProgress(f"no progress within {self.timeout:g} s")
        return min(POLL_SECONDS, remaining)

    def _receive(self, deadline: float) -> bytes:
        while True:
            self._settimeout(self._wait_slice(deadline))
            try:
                data = self.sock.recv(256 * 1024)
            except TimeoutError:
                continue
            if not data:
                raise imaplib.IMAP4.abort("the server closed the connection")
            return data

    def send(self, data: Any) -> None:
        self._settimeout(self.timeout)
        self.sock.sendall(data)

    def shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    # --- reading under limits -------------------------------------------------------

    def _reset_budget(self) -> None:
        self._used = 0
        self._budget = MAX_UNTAGGED
        self._literal_limit = MAX_UNTAGGED
        self._limit_reason = ""

    def expect_bodies(self, literal_limit: int, extra: int, reason: str) -> None:
        """For the next command only: literals up to ``literal_limit`` bytes, and ``extra``
        bytes of responses on top of :data:`MAX_UNTAGGED` (``reason`` explains the limit)."""
        self._pending_limits = (literal_limit, extra, reason)

    def _spend(self, size: int) -> None:
        self._used += size + ITEM_COST
        if self._used > self._budget:
            raise _Oversized(
                f"the server sent more than {self._budget} bytes of responses to one command"
            )

    def readline(self) -> bytes:
        buffer = self._buffer
        scanned = 0
        progress = 0
        deadline = time.monotonic() + self.timeout
        while True:
            end = buffer.find(b"\n", scanned)
            if end >= 0:
                line = bytes(buffer[: end + 1])
                del buffer[: end + 1]
                self._spend(len(line))
                return line
            scanned = len(buffer)
            if scanned > MAX_LINE:
                raise _Oversized(f"the server sent a response line longer than {MAX_LINE} bytes")
            buffer += self._receive(deadline)
            if len(buffer) - progress >= PROGRESS_BYTES:
                progress = len(buffer)
                deadline = time.monotonic() + self.timeout

    def read(self, size: int) -> bytes:
        if size > self._literal_limit:
            reason = f" ({self._limit_reason})" if self._limit_reason else ""
            raise _Oversized(
                f"the server announced a literal of {size} bytes, more than the "
                f"{self._literal_limit} allowed{reason}"
            )
        self._spend(size)
        buffer = self._buffer
        if len(buffer) >= size:
            data = bytes(buffer[:size])
            del buffer[:size]
            return data
        parts = [bytes(buffer)]
        have = progress = len(buffer)
        buffer.clear()
        deadline = time.monotonic() + self.timeout
        while have < size:
            chunk = self._receive(deadline)
            need = size - have
            if len(chunk) > need:
                buffer += chunk[need:]
                chunk = chunk[:need]
            parts.append(chunk)
            have += len(chunk)
            if have - progress >= PROGRESS_BYTES:
                progress = have
                deadline = time.monotonic() + self.timeout
        return b"".join(parts)

    # --- the choke point --------------------------------------------------------------

    def _command(self, name: str, *args: Any) -> bytes:
        """Send one command: every argument is checked first (CR, LF, NUL), nothing is
        sent when one fails; non-ASCII strings go as literals."""
        literator = self.literal
        self.literal = None
        if self.state not in imaplib.Commands[name]:
            raise self.error(f"command {name} illegal in state {self.state}")
        pieces = [_encode_argument(arg) for arg in args if arg is not None]
        if isinstance(literator, _Authenticator):
            literator.check()
        elif literator is not None:
            raise TypeError("literals are passed as _Str arguments")
        if "READ-ONLY" in self.untagged_responses and not self.is_readonly:
            raise self.readonly("mailbox status changed to READ-ONLY")
        # Only responses to this command count from here on.
        self.untagged_responses = {}
        self._reset_budget()
        pending = self._pending_limits
        if pending is not None:
            self._pending_limits = None
            self._literal_limit, extra, self._limit_reason = pending
            self._budget = MAX_UNTAGGED + extra
        tag: bytes = self._new_tag()
        line = tag + b" " + name.encode("ascii")
        for piece in pieces:
            if isinstance(piece, bytes):
                line += b" " + piece
                continue
            size = len(piece.data)
            plus = self._literal_plus(size)
            line += b" {%d%s}" % (size, b"+" if plus else b"")
            self.send(line + b"\r\n")
            if not plus and self._await_continuation(tag):
                return tag  # refused (NO/BAD): the command ends here
            self.send(piece.data)
            line = b""
        self.send(line + b"\r\n")
        if isinstance(literator, _Authenticator):
            while not self._await_continuation(tag):
                self.send(literator.process())
                self.send(b"\r\n")
        return tag

    def _await_continuation(self, tag: bytes) -> bool:
        """Read until a continuation (False) or the command's tagged answer (True)."""
        while self._get_response():
            if self.tagged_commands[tag]:
                return True
        return False

    def _literal_plus(self, size: int) -> bool:
        caps = {c.upper() for c in self.capabilities}
        if "LITERAL+" in caps:
            return True
        return size <= LITERAL_MINUS_MAX and bool(caps & {"LITERAL-", "IMAP4REV2"})

    def start_tls(self, context: ssl.SSLContext) -> tuple[str, list[Any]]:
        """STARTTLS; everything received before the handshake is discarded, and data
        that arrived after the answer but before the handshake is refused."""
        typ, data = self._simple_command("STARTTLS")
        if typ != "OK":
            return typ, data
        if self._buffer:
            raise _Tampered(
                "the server sent data after its STARTTLS answer, before the TLS handshake "
                "(a man in the middle?)"
            )
        self._handshake(context)
        self._tls_established = True
        self.untagged_responses = {}
        self._get_capabilities()  # the capabilities before TLS are not trusted
        return typ, data


# --- the session --------------------------------------------------------------------------------


@dataclass
class SessionStats:
    """Counters of one session, for logs and tests."""

    fetch_commands: int = 0  # UID FETCH commands for bodies
    messages_fetched: int = 0
    bytes_fetched: int = 0
    largest_fetch_bytes: int = 0  # body bytes of the largest single FETCH command
    largest_fetch_count: int = 0  # messages of the largest single FETCH command


_NONEXISTENT_RE = re.compile(
    r"\[NONEXISTENT\]|does ?n[o']t exist|does not exist|no such (mailbox|folder)|"
    r"unknown (mailbox|folder)|mailbox not found|folder not found",
    re.IGNORECASE,
)
_EXPUNGED_RE = re.compile(r"\[EXPUNGEISSUED\]|expunged|no longer exist", re.IGNORECASE)


class ImapSession:
    """One logged-in (or about to log in) connection to one mailbox. Read-only.

    Open it with :meth:`connect`, then :meth:`login`; use it as a context manager
    so :meth:`logout` always runs. A session is not thread-safe.
    """

    def __init__(self, connection: _Connection, server: Server, mailbox: str) -> None:
        self._imap: Any = connection
        self._server = server
        self._mailbox = mailbox
        self._where = f"{server.host}:{server.effective_port}"
        self._caps: frozenset[str] = frozenset(str(c).upper() for c in self._imap.capabilities)
        self._selected: FolderInfo | None = None
        self._closed = False
        self.stats = SessionStats()

    # ------------------------------------------------------------------ opening

    @classmethod
    def connect(
        cls,
        server: Server,
        base_dir: Path,
        *,
        mailbox: str,
        should_stop: Callable[[], bool] | None = None,
    ) -> ImapSession:
        """Connect (and with ``starttls`` upgrade) to ``server``; raises :class:`ConnectFailed`.

        ``should_stop`` is asked at least every :data:`POLL_SECONDS` while the session
        waits for the server; when it says yes, the waiting command fails with
        :class:`Interrupted` (and the connection is closed).
        """
        where = f"{server.host}:{server.effective_port}"
        context = None if server.security == "plain" else _ssl_context(server, base_dir, where)

        def failed(detail: str) -> ConnectFailed:
            return ConnectFailed(f"cannot connect to {where} (mailbox {mailbox}): {detail}")

        connection: _Connection | None = None
        try:
            connection = _Connection(
                server.host,
                server.effective_port,
                timeout=server.timeout,
                tls=context if server.security == "tls" else None,
                should_stop=should_stop or _never,
            )
            if server.security == "starttls":
                offered = {c.upper() for c in connection.capabilities}
                if "STARTTLS" not in offered:
                    raise failed(
                        "the server does not offer STARTTLS (security: starttls never "
                        "falls back to an unencrypted connection)"
                    )
                assert context is not None
                typ, data = connection.start_tls(context)
                if typ != "OK":
                    raise failed(f"STARTTLS refused: {_text(data)}")
        except ConnectFailed:
            _close_quietly(connection)
            raise
        except _Stopped:
            _close_quietly(connection)
            raise Interrupted(f"{where}: a stop was requested while connecting") from None
        except Exception as exc:
            _close_quietly(connection)
            detail = _connect_detail(exc, server)
            if detail is None:
                raise
            raise failed(detail) from exc
        return cls(connection, server, mailbox)

    def login(self, credentials: Credentials) -> None:
        """Log in as ``credentials`` say; raises :class:`LoginFailed` if the server refuses.

        ``sasl_plain``: AUTHENTICATE PLAIN with the master user as authentication
        identity and the mailbox as authorization identity. ``login_separator``:
        LOGIN with the combined user name. ``user_password``: AUTHENTICATE PLAIN
        when the server offers AUTH=PLAIN (it carries any UTF-8 password), else
        LOGIN. LOGIN sends a non-ASCII user name or password as a UTF-8 literal. A
        value with CR, LF or NUL raises :class:`UnsafeValue` before anything is sent.
        """
        password = credentials.resolve_password()
        mechanism = credentials.mechanism
        use_plain = mechanism == "sasl_plain" or (
            mechanism == "user_password" and "AUTH=PLAIN" in self._caps
        )
        secret = password.reveal()
        redact = [secret, *_plain_forms(credentials, secret)]
        try:
            if use_plain:
                typ, data = self._authenticate_plain(
                    credentials.username, secret, credentials.authzid or ""
                )
            else:
                typ, data = self._login_command(credentials.username, secret)
        except LoginFailed:
            raise
        except Exception as exc:
            error = self._translate(exc, "login")
            if error is None:
                raise
            message = _redact(error.message, redact)
            if isinstance(error, ProtocolError):
                raise LoginFailed(
                    f"login to mailbox {self._mailbox} on {self._where} failed ({mechanism}): "
                    f"{message}"
                ) from None
            raise type(error)(message) from None
        if typ != "OK":
            how = "AUTHENTICATE PLAIN" if use_plain else "LOGIN"
            answer = _redact(_text(data), redact)
            raise LoginFailed(
                f"login to mailbox {self._mailbox} on {self._where} failed "
                f"({mechanism}, {how} as {credentials.username!r}): {answer}"
            )
        self._imap.state = "AUTH"
        self._refresh_capabilities()

    def _authenticate_plain(self, authcid: str, secret: str, authzid: str) -> tuple[str, Any]:
        if "AUTH=PLAIN" not in self._caps:
            raise LoginFailed(
                f"login to mailbox {self._mailbox} on {self._where} failed: the server does "
                "not offer AUTH=PLAIN (needed by mechanism sasl_plain)"
            )
        imap = self._imap
        imap.literal = _Authenticator(authzid, authcid, secret)
        typ, data = imap._simple_command("AUTHENTICATE", "PLAIN")
        return str(typ), data

    def _login_command(self, username: str, secret: str) -> tuple[str, Any]:
        # Non-ASCII user names and passwords go as UTF-8 literals.
        typ, data = self._imap._simple_command(
            "LOGIN", _Str(username, "user name"), _Str(secret, "password", secret=True)
        )
        return str(typ), data

    def _refresh_capabilities(self) -> None:
        with self._guard("CAPABILITY"):
            untagged = self._imap.untagged_responses.pop("CAPABILITY", None)
            if untagged:
                text = untagged[-1]
            else:
                typ, data = self._imap.capability()
                if typ != "OK" or not data or data[-1] is None:
                    raise ProtocolError(f"{self._where}: CAPABILITY failed: {_text(data)}")
                text = data[-1]
            raw = text.decode("ascii", "replace") if isinstance(text, bytes) else str(text)
            self._caps = frozenset(raw.upper().split())
            self._imap.capabilities = tuple(sorted(self._caps))

    @property
    def capabilities(self) -> frozenset[str]:
        """The server's capabilities, upper-cased (after login: the authenticated ones)."""
        return self._caps

    @property
    def tls_version(self) -> str | None:
        """The TLS version of the connection (e.g. ``"TLSv1.3"``), None if unencrypted."""
        sock = getattr(self._imap, "sock", None)
        if isinstance(sock, ssl.SSLSocket):
            return sock.version()
        return None

    # ------------------------------------------------------------------ closing

    def logout(self) -> None:
        """Log out and close the connection. Never raises; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._imap.timeout = min(self._server.timeout, 10.0)
        with contextlib.suppress(Exception):
            self._imap.logout()
        with contextlib.suppress(Exception):
            self._imap.shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.logout()

    # ------------------------------------------------------------------ folders

    def list_folders(self) -> list[FolderInfo]:
        """The folders of the personal namespace, INBOX first, then sorted by path.

        Uses NAMESPACE when offered (else the prefix ``""`` and LIST's delimiter)
        and ``LIST ... RETURN (SPECIAL-USE)`` when LIST-EXTENDED and SPECIAL-USE are
        offered. Folders of other users' and shared namespaces are left out, even
        where LIST shows them; ``\\Noselect`` folders are kept (see
        :attr:`FolderInfo.selectable`). A namespace's own root (``Mail`` for the
        prefix ``Mail/``) is not a folder and is left out.
        """
        namespaces = self._namespaces()
        personal = [ns for ns in namespaces if ns.personal]
        patterns = sorted({ns.prefix + "*" for ns in personal})
        entries: list[ListEntry] = []
        for pattern in patterns:
            entries.extend(self._list("", pattern))
        if not any(e.name.upper() == b"INBOX" for e in entries):
            entries.extend(self._list("", "INBOX"))

        folders: dict[str, FolderInfo] = {}
        seen_wire: set[bytes] = set()
        for entry in entries:
            if entry.name in seen_wire:
                continue
            seen_wire.add(entry.name)
            if _UNSAFE.search(entry.name):
                # Such a name could never be sent back safely: leave the folder out.
                log.warning(
                    "folder_skipped", wire_name=repr(entry.name), reason="CR, LF or NUL in the name"
                )
                continue
            wire = _wire_text(entry.name)
            owner = _namespace_of(wire, namespaces)
            if owner is None or not owner.personal:
                continue
            root = owner.prefix.removesuffix(owner.delimiter or "")
            if owner.prefix and wire == root and wire.upper() != "INBOX":
                continue
            decoded = _decode_name(entry.name)
            prefix = _decode_name(owner.prefix.encode("utf-8", "surrogateescape"))
            delimiter = entry.delimiter or owner.delimiter
            path = folder_path(decoded, prefix, delimiter)
            if not path:
                continue
            info = FolderInfo(
                path=path,
                wire_name=wire,
                delimiter=entry.delimiter,
                attributes=frozenset(entry.attributes),
            )
            folders.setdefault(path, info)
        return sorted(folders.values(), key=lambda f: (f.path != "INBOX", f.path))

    def _namespaces(self) -> list[_Namespace]:
        if "NAMESPACE" in self._caps:
            with self._guard("NAMESPACE"):
                # Only the answer to this command counts (nothing injected before TLS, say).
                self._imap.untagged_responses.pop("NAMESPACE", None)
                typ, data = self._imap._simple_command("NAMESPACE")
                if typ != "OK":
                    raise ProtocolError(f"{self._where}: NAMESPACE failed: {_text(data)}")
                typ, data = self._imap._untagged_response(typ, data, "NAMESPACE")
                answers = _responses(data)
                parsed = parse_response(answers[-1]) if answers else []
            found: list[_Namespace] = []
            for kind, group in enumerate(parsed[:3]):
                if not group:
                    continue
                for pair in group:
                    if not isinstance(pair, tuple) or len(pair) < 2:
                        continue
                    prefix = pair[0]
                    prefix_text = (
                        _wire_text(prefix) if isinstance(prefix, bytes) else str(prefix or "")
                    )
                    if _UNSAFE.search(prefix_text.encode("utf-8", "surrogateescape")):
                        log.warning(
                            "namespace_skipped",
                            prefix=repr(prefix_text),
                            reason="CR, LF or NUL in the prefix",
                        )
                        continue
                    sep = pair[1]
                    sep_text = sep.decode("utf-8", "replace") if isinstance(sep, bytes) else None
                    found.append(_Namespace(prefix_text, sep_text or None, kind == 0))
            if any(ns.personal for ns in found):
                return found
            # A server without a personal namespace still has an INBOX.
            return [*found, _Namespace("", self._list_delimiter(), True)]
        return [_Namespace("", self._list_delimiter(), True)]

    def _list_delimiter(self) -> str | None:
        entries = self._list("", "")
        return entries[0].delimiter if entries else None

    def _list(self, reference: str, pattern: str) -> list[ListEntry]:
        args: list[Any] = [_Str(reference, "LIST reference"), _Str(pattern, "LIST pattern")]
        if pattern and "LIST-EXTENDED" in self._caps and "SPECIAL-USE" in self._caps:
            args += ["RETURN", "(SPECIAL-USE)"]
        with self._guard("LIST"):
            self._imap.untagged_responses.pop("LIST", None)
            typ, data = self._imap._simple_command("LIST", *args)
            if typ != "OK":
                raise ProtocolError(f"{self._where}: LIST {pattern!r} failed: {_text(data)}")
            typ, data = self._imap._untagged_response(typ, data, "LIST")
            return parse_list_response(data)

    # ------------------------------------------------------------------ folder state

    def status(self, folder: FolderInfo) -> FolderState:
        """STATUS of ``folder`` (UIDVALIDITY, UIDNEXT, MESSAGES; HIGHESTMODSEQ with CONDSTORE).

        For the folder currently examined, a NOOP comes first, so the answer is
        current and not the session's older view of it.
        """
        if not folder.selectable:
            raise ProtocolError(
                f"{self._where}: folder {folder.path!r} has no status (it is \\Noselect)"
            )
        items = ["UIDVALIDITY", "UIDNEXT", "MESSAGES"]
        if "CONDSTORE" in self._caps:
            items.append("HIGHESTMODSEQ")
        values = self._status(folder, items)
        try:
            return FolderState(
                uidvalidity=values["UIDVALIDITY"],
                uidnext=values["UIDNEXT"],
                exists=values["MESSAGES"],
                highestmodseq=values.get("HIGHESTMODSEQ"),
            )
        except KeyError as exc:
            raise ProtocolError(
                f"{self._where}: STATUS of {folder.path!r} lacks {exc.args[0]}"
            ) from None

    def _status(
        self, folder: FolderInfo, items: Sequence[str], *, sync: bool = True
    ) -> dict[str, int]:
        selected = self._selected is not None and self._selected.wire_name == folder.wire_name
        if sync and selected:
            # STATUS of the examined folder gives the session's view, which servers
            # (Dovecot) only bring up to date at a command like NOOP.
            with self._guard("NOOP"):
                typ, data = self._imap._simple_command("NOOP")
                if typ != "OK":
                    raise ProtocolError(f"{self._where}: NOOP failed: {_text(data)}")
        with self._guard(f"STATUS {folder.path!r}"):
            self._imap.untagged_responses.pop("STATUS", None)
            typ, data = self._imap._simple_command(
                "STATUS", _Str(folder.wire_name, "folder name"), "(" + " ".join(items) + ")"
            )
            if typ != "OK":
                self._refused(folder, "STATUS", data)
            typ, data = self._imap._untagged_response(typ, data, "STATUS")
            parsed = parse_response([d for d in data if d is not None])
        # Each response is: mailbox-name (item value ...); take the last list.
        lists = [p for p in parsed if isinstance(p, tuple)]
        if not lists:
            raise ProtocolError(f"{self._where}: STATUS of {folder.path!r}: no STATUS response")
        pairs = lists[-1]
        out: dict[str, int] = {}
        for key, value in zip(pairs[0::2], pairs[1::2], strict=False):
            if isinstance(key, bytes) and isinstance(value, int):
                out[key.decode("ascii", "replace").upper()] = value
        return out

    def examine(self, folder: FolderInfo) -> FolderState:
        """Open ``folder`` read-only (EXAMINE) for :meth:`search_uids` and the fetches.

        When the EXAMINE answer lacks UIDNEXT (allowed for old servers), STATUS is
        asked; if that lacks it too, UIDNEXT is taken as the highest UID + 1 (1 for
        an empty folder), which is the lowest value the server can have.
        """
        return self._open(folder, "EXAMINE")

    def select_for_deletion(self, folder: FolderInfo) -> FolderState:
        """Open ``folder`` read-write (SELECT). Only verified deletion does this; every
        other reading of a folder uses EXAMINE."""
        return self._open(folder, "SELECT")

    @property
    def can_delete_exactly(self) -> bool:
        """UIDPLUS: UID EXPUNGE removes exactly the given messages. Without it, an
        EXPUNGE would also remove what the mailbox's owner marked \\Deleted."""
        return "UIDPLUS" in self._caps

    def mark_deleted(self, uids: Sequence[int], unchanged_since: int | None) -> set[int]:
        """Set \\Deleted on ``uids``; with ``unchanged_since`` (CONDSTORE) only on those
        not modified since that MODSEQ. Returns the UIDs that were marked."""
        self._require_selected()
        if not uids:
            return set()
        args = [sequence_set(uids)]
        if unchanged_since is not None:
            args.append(f"(UNCHANGEDSINCE {unchanged_since:d})")
        args += ["+FLAGS.SILENT", "(\\Deleted)"]
        with self._guard("UID STORE"):
            typ, data = self._imap._simple_command("UID", "STORE", *args)
        if typ != "OK":
            raise ProtocolError(f"{self._where}: UID STORE failed: {_text(data)}")
        modified = _modified_uids(_text(data))
        return set(uids) - modified

    def expunge_uids(self, uids: Sequence[int]) -> None:
        """UID EXPUNGE (UIDPLUS): remove exactly ``uids``, which must carry \\Deleted."""
        self._require_selected()
        if not uids:
            return
        if not self.can_delete_exactly:
            raise ProtocolError(f"{self._where}: the server has no UIDPLUS (UID EXPUNGE)")
        with self._guard("UID EXPUNGE"):
            typ, data = self._imap._simple_command("UID", "EXPUNGE", sequence_set(uids))
        if typ != "OK":
            raise ProtocolError(f"{self._where}: UID EXPUNGE failed: {_text(data)}")

    def _open(self, folder: FolderInfo, command: str) -> FolderState:
        self._selected = None
        if not folder.selectable:
            raise ProtocolError(
                f"{self._where}: folder {folder.path!r} cannot be examined (it is \\Noselect)"
            )
        # With CONDSTORE, the parameter makes every server report HIGHESTMODSEQ.
        extra = ["(CONDSTORE)"] if "CONDSTORE" in self._caps else []
        with self._guard(f"{command} {folder.path!r}"):
            self._imap.untagged_responses = {}
            typ, data = self._imap._simple_command(
                command, _Str(folder.wire_name, "folder name"), *extra
            )
            if typ != "OK":
                self._imap.state = "AUTH"
                self._refused(folder, command, data)
            self._imap.state = "SELECTED"
            self._imap.is_readonly = command == "EXAMINE"
            untagged = self._imap.untagged_responses
            values: dict[str, int] = {}
            for key in ("EXISTS", "UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ"):
                raw = untagged.get(key)
                if raw:
                    with contextlib.suppress(TypeError, ValueError):
                        # The last one counts (EXISTS may be repeated while the folder grows).
                        values[key] = int(raw[-1])
        self._selected = folder
        if "UIDVALIDITY" not in values or "UIDNEXT" not in values:
            items = [k for k in ("UIDVALIDITY", "UIDNEXT") if k not in values]
            with contextlib.suppress(ProtocolError):
                values.update(
                    {k: v for k, v in self._status(folder, items, sync=False).items() if k in items}
                )
        if "UIDVALIDITY" not in values:
            raise ProtocolError(f"{self._where}: EXAMINE of {folder.path!r} gave no UIDVALIDITY")
        if "UIDNEXT" not in values:
            uids = self.search_uids()
            values["UIDNEXT"] = (uids[-1] + 1) if uids else 1
        if "EXISTS" not in values:
            raise ProtocolError(f"{self._where}: EXAMINE of {folder.path!r} gave no EXISTS")
        return FolderState(
            uidvalidity=values["UIDVALIDITY"],
            uidnext=values["UIDNEXT"],
            exists=values["EXISTS"],
            highestmodseq=values.get("HIGHESTMODSEQ"),
        )

    def _refused(self, folder: FolderInfo, command: str, data: Any) -> None:
        """Raise FolderGone if the folder no longer exists, else ProtocolError.

        LIST decides (some servers say "doesn't exist" for a folder that merely
        cannot be selected); only when LIST fails does the server's text decide.
        """
        answer = _text(data)
        try:
            listed = [e for e in self._list("", folder.wire_name) if e.name == _wire_bytes(folder)]
        except ConnectionLost:
            raise
        except ImapError:
            gone = bool(_NONEXISTENT_RE.search(answer))
        else:
            gone = not listed or any(a.lower() == "\\nonexistent" for a in listed[0].attributes)
        if gone:
            raise FolderGone(f"folder {folder.path!r} no longer exists ({command}: {answer})")
        raise ProtocolError(f"{self._where}: {command} of {folder.path!r} refused: {answer}")

    # ------------------------------------------------------------------ messages

    def search_uids(self, criteria: Sequence[str] = ()) -> list[int]:
        """UIDs of the examined folder, ascending: all of them (UID SEARCH ALL), or those
        matching ``criteria`` (search keys as atoms, e.g. ``("SEEN", "BEFORE", "1-Jan-2026")``,
        all of which must hold)."""
        self._require_selected()
        keys = tuple(criteria) or ("ALL",)
        for key in keys:
            if not _SEARCH_ATOM.fullmatch(key):
                raise ValueError(f"not a search atom: {key!r}")
        with self._guard("UID SEARCH"):
            self._imap.untagged_responses.pop("SEARCH", None)
            typ, data = self._imap._simple_command("UID", "SEARCH", *keys)
            if typ != "OK":
                raise ProtocolError(f"{self._where}: UID SEARCH failed: {_text(data)}")
            typ, data = self._imap._untagged_response(typ, data, "SEARCH")
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

    def fetch_sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """RFC822.SIZE of each UID that still exists in the examined folder."""
        self._require_selected()
        ordered = sorted(set(uids))
        sizes: dict[int, int] = {}
        for start in range(0, len(ordered), SIZE_CHUNK):
            chunk = ordered[start : start + SIZE_CHUNK]
            wanted = set(chunk)
            for uid, item in self._uid_fetch(chunk, "(RFC822.SIZE)", "FETCH sizes").items():
                size = item.get(b"RFC822.SIZE")
                if uid in wanted and isinstance(size, int):
                    sizes[uid] = size
        return sizes

    def fetch_messages(
        self,
        uids: Sequence[int],
        *,
        max_count: int = 100,
        max_bytes: int = 16 * 1024 * 1024,
        sizes: Mapping[int, int] | None = None,
    ) -> Iterator[FetchedMessage]:
        """The messages of the examined folder, in UID order, fetched in batches.

        One ``UID FETCH (BODY.PEEK[] INTERNALDATE FLAGS)`` per batch of at most
        ``max_count`` messages and (with ``sizes``, e.g. from :meth:`fetch_sizes`)
        about ``max_bytes``; a larger message is fetched alone. A UID the server
        does not return (expunged meanwhile) is skipped. ``body`` holds exactly the
        bytes of ``BODY[]``; ``flags`` leave out ``\\Recent``, which belongs to the
        session and not to the message.

        Each body may be at most twice its RFC822.SIZE in ``sizes`` plus
        :data:`SIZE_MARGIN`, and never more than ``server.max_message_size``; a
        message whose RFC822.SIZE is larger than that raises :class:`MessageTooLarge`
        before its batch is fetched.
        """
        self._require_selected()
        for batch in batch_uids(uids, max_count=max_count, max_bytes=max_bytes, sizes=sizes):
            self._expect_bodies(batch, sizes)
            fetched = self._uid_fetch(batch, "(BODY.PEEK[] INTERNALDATE FLAGS)", "FETCH")
            messages: list[FetchedMessage] = []
            for uid in batch:
                item = fetched.get(uid)
                if item is None or b"BODY[]" not in item:
                    continue
                body = item[b"BODY[]"]
                if body is None:
                    body = b""
                if isinstance(body, str):
                    body = body.encode("utf-8", "surrogateescape")
                if not isinstance(body, bytes):
                    raise ProtocolError(f"{self._where}: UID {uid}: BODY[] is not a string")
                date = item.get(b"INTERNALDATE")
                flags = [f for f in item.get(b"FLAGS") or () if f.lower() != b"\\recent"]
                messages.append(
                    FetchedMessage(
                        uid=uid,
                        body=body,
                        internal_date=date if isinstance(date, datetime) else None,
                        flags=tuple(
                            f.decode("utf-8", "replace") if isinstance(f, bytes) else str(f)
                            for f in flags
                        ),
                    )
                )
            total = sum(len(m.body) for m in messages)
            self.stats.fetch_commands += 1
            self.stats.messages_fetched += len(messages)
            self.stats.bytes_fetched += total
            self.stats.largest_fetch_bytes = max(self.stats.largest_fetch_bytes, total)
            self.stats.largest_fetch_count = max(self.stats.largest_fetch_count, len(messages))
            yield from messages

    def _expect_bodies(self, batch: Sequence[int], sizes: Mapping[int, int] | None) -> None:
        """Tell the connection how large the bodies of the next FETCH may be."""
        limit = self._server.max_message_size
        if sizes is None:
            allowances = [limit] * len(batch)
            reason = "server.max_message_size"
        else:
            for uid in batch:
                if sizes.get(uid, 0) > limit:
                    path = self._selected.path if self._selected is not None else "?"
                    raise MessageTooLarge(
                        f"{self._where}: message UID {uid} in {path!r} has {sizes[uid]} bytes, "
                        f"more than server.max_message_size ({limit}); raise the setting to "
                        "archive it"
                    )
            allowances = [min(limit, 2 * sizes.get(uid, 0) + SIZE_MARGIN) for uid in batch]
            reason = "twice the RFC822.SIZE of the largest message asked for, plus a margin"
        self._imap.expect_bodies(max(allowances), sum(allowances), reason)

    def _uid_fetch(self, uids: Sequence[int], items: str, what: str) -> dict[int, dict[bytes, Any]]:
        """One UID FETCH; a NO for messages expunged meanwhile still returns the rest."""
        imap = self._imap
        with self._guard(what):
            imap.untagged_responses.pop("FETCH", None)
            tag = imap._command("UID", "FETCH", sequence_set(uids), items)
            typ, data = imap._command_complete("FETCH", tag)
            responses = imap.untagged_responses.pop("FETCH", [])
            if typ != "OK" and not _EXPUNGED_RE.search(_text(data)):
                raise ProtocolError(f"{self._where}: UID {what} refused: {_text(data)}")
            if not responses:
                return {}
            parsed = parse_fetch_response(responses, normalise_times=False, uid_is_key=False)
        # Keyed by sequence number here, so unsolicited FETCH responses without UID
        # (flag changes by other sessions) never pass for a requested UID.
        return {item[b"UID"]: item for item in parsed.values() if isinstance(item.get(b"UID"), int)}

    def _require_selected(self) -> None:
        if self._closed:
            raise ConnectionLost(f"{self._where}: the session is closed")
        if self._selected is None:
            raise RuntimeError("no folder is examined; call examine() first")

    # ------------------------------------------------------------------ errors

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn socket, TLS and imaplib exceptions of one command into ImapError."""
        if self._closed:
            raise ConnectionLost(f"{self._where}: the session is closed ({what})")
        try:
            yield
        except ImapError:
            raise
        except Exception as exc:
            error = self._translate(exc, what)
            if error is None:
                raise
            raise error from exc

    def _translate(self, exc: BaseException, what: str) -> ImapError | None:
        if isinstance(exc, _Stopped):
            self._lost()
            return Interrupted(f"{self._where}: a stop was requested during {what}")
        if isinstance(exc, _NoProgress):
            self._lost()
            return ConnectionLost(
                f"{self._where}: no answer within {self._server.timeout:g} s during {what} "
                "(the server sent nothing, or only a trickle)"
            )
        if isinstance(exc, _Oversized):
            self._lost()
            return ProtocolError(f"{self._where}: {what}: {exc}; the connection was closed")
        if isinstance(exc, TimeoutError | socket.timeout):
            self._lost()
            return ConnectionLost(
                f"{self._where}: no answer within {self._server.timeout:g} s during {what}"
            )
        if isinstance(exc, imaplib.IMAP4.abort):
            self._lost()
            return ConnectionLost(f"{self._where}: connection lost during {what}: {exc}")
        if isinstance(exc, OSError):
            self._lost()
            reason = exc.strerror or str(exc) or type(exc).__name__
            return ConnectionLost(f"{self._where}: connection lost during {what}: {reason}")
        if isinstance(exc, imaplib.IMAP4.error):
            return ProtocolError(f"{self._where}: {what} failed: {exc}")
        if isinstance(exc, UnicodeError):
            return ProtocolError(f"{self._where}: {what}: cannot encode or decode a value")
        return None

    def _lost(self) -> None:
        self._selected = None
        self._closed = True
        with contextlib.suppress(Exception):
            self._imap.shutdown()


# --- helpers of the session ---------------------------------------------------------------------


_SEARCH_ATOM = re.compile(r"[A-Za-z0-9:,-]+")
_MODIFIED = re.compile(r"\[MODIFIED ([0-9:,]+)\]", re.IGNORECASE)


def _modified_uids(text: str) -> set[int]:
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


def _no_delay(sock: Any) -> None:
    """Send small writes at once. Commands often go out in two writes (a line, then its
    CRLF or literal); with Nagle's algorithm the second waits for the server's delayed
    ACK, about 40 ms a command."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Authenticator:
    """The AUTHENTICATE continuation handler for one SASL PLAIN exchange (RFC 4616).

    Its parts are checked at the connection's choke point like every argument: a NUL
    in any of them would shift the payload's fields, CR or LF have no place in them.
    """

    def __init__(self, authzid: str, authcid: str, secret: str) -> None:
        self._parts = (
            _Str(authzid, "authorization identity"),
            _Str(authcid, "user name"),
            _Str(secret, "password", secret=True),
        )
        self._done = False

    def check(self) -> None:
        for part in self._parts:
            _check(part.encoded(), part.what, None if part.secret else part.value)

    def process(self) -> bytes:
        """The answer to a "+" continuation (sent with CRLF); PLAIN ignores the challenge."""
        if self._done:
            return b"*"  # a second challenge: cancel the exchange
        self._done = True
        return base64.b64encode(b"\0".join(part.encoded() for part in self._parts))


def _namespace_of(wire: str, namespaces: Sequence[_Namespace]) -> _Namespace | None:
    """The namespace a name belongs to: INBOX is personal, else the longest matching prefix."""
    personal = [ns for ns in namespaces if ns.personal]
    if wire.upper() == "INBOX":
        return personal[0] if personal else None
    best: _Namespace | None = None
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


def _ssl_context(server: Server, base_dir: Path, where: str) -> ssl.SSLContext:
    try:
        if server.accept_all_certificates:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif server.ca_file is not None:
            ca = Path(server.ca_file).expanduser()
            ca = ca if ca.is_absolute() else base_dir / ca
            context = ssl.create_default_context(cafile=str(ca))
        else:
            context = ssl.create_default_context()
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ConnectFailed(
            f"cannot connect to {where}: cannot load server.ca_file {server.ca_file}: {reason}"
        ) from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _connect_detail(exc: BaseException, server: Server) -> str | None:
    """What went wrong while connecting, or None for an exception that is a bug."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or str(exc)
        return f"certificate verify failed: {reason}; set server.ca_file or accept_all_certificates"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        return f"TLS handshake failed: {reason}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {server.host!r}: {exc.strerror or exc}"
    if isinstance(exc, _NoProgress):
        return f"timed out: no progress within {server.timeout:g} s"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"timed out after {server.timeout:g} s"
    if isinstance(exc, _Oversized | _Tampered):
        return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, imaplib.IMAP4.abort):
        return f"connection closed by the server: {exc}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, imaplib.IMAP4.error):
        return f"the server refused the session: {exc}"
    return None


def _close_quietly(connection: _Connection | None) -> None:
    if connection is None:
        return
    with contextlib.suppress(Exception):
        connection.shutdown()


def _never() -> bool:
    return False


def _text(data: Any) -> str:
    """The server's text of a tagged answer (imaplib gives a list of bytes)."""
    if isinstance(data, list | tuple):
        parts = [d for d in data if d is not None]
        data = parts[-1] if parts else ""
    if isinstance(data, tuple):
        data = data[0]
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)


def _plain_forms(credentials: Credentials, secret: str) -> list[str]:
    """Encoded forms of the password that could show up in an answer (SASL PLAIN payload)."""
    payload = f"{credentials.authzid or ''}\0{credentials.username}\0{secret}".encode()
    # imaplib's error texts show server data as bytes reprs (b'p\xc3\xa4ss').
    return [base64.b64encode(payload).decode("ascii"), repr(secret.encode())[2:-1]]


def _redact(text: str, secrets: Sequence[str]) -> str:
    for value in secrets:
        if value:
            text = text.replace(value, "********")
    return text
