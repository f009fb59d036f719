"""The connection under a session: imaplib's protocol engine on a socket read under limits.

:func:`open_connection` opens it (TLS, or STARTTLS that never falls back to plain).

imaplib parses responses and keeps tags; :class:`Connection` owns the bytes. It reads
the socket itself, so that every read has an idle deadline and looks at
``should_stop``, no line or literal exceeds its limit, and nothing is allocated from an
announced size. Its ``_command`` is the one choke point through which every argument
reaches the wire (checked by :func:`~imapsync_decl.imap.wire.encode_argument`):

* Every size from the server is bounded: a response line (:data:`MAX_LINE`), the
  data of all responses to one command (:data:`MAX_UNTAGGED`, plus the expected
  message bodies of a FETCH), and each literal (as :meth:`Connection.expect_bodies`
  sets it). Nothing is allocated from an announced size before the bytes arrive.
* Every wait has a deadline: a read fails when ``timeout`` seconds pass without
  progress (a complete line, or :data:`PROGRESS_BYTES` more), and a requested stop
  (``should_stop``) is noticed within :data:`POLL_SECONDS`.
* Nothing received before the TLS handshake of STARTTLS survives it, and every
  command sees only the responses that arrived after it was sent.
"""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from imapsync_decl.imap.errors import (
    ConnectFailed,
    Interrupted,
    NoProgress,
    Oversized,
    Stopped,
    Tampered,
)
from imapsync_decl.imap.settings import Endpoint
from imapsync_decl.imap.tls import connect_detail, ssl_context
from imapsync_decl.imap.wire import Str, answer_text, check, encode_argument, sasl_plain

__all__ = [
    "ITEM_COST",
    "LITERAL_MINUS_MAX",
    "MAX_LINE",
    "MAX_UNTAGGED",
    "POLL_SECONDS",
    "PROGRESS_BYTES",
    "Authenticator",
    "Connection",
    "no_delay",
    "open_connection",
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
#: without progress for ``timeout`` seconds fails (a trickle of single bytes
#: cannot keep a command alive, a slow but moving FETCH can).
PROGRESS_BYTES = 16 * 1024

#: How often a blocked read looks at ``should_stop``.
POLL_SECONDS = 0.5

#: LITERAL- (RFC 7888, part of IMAP4rev2): non-synchronizing literals up to this size.
LITERAL_MINUS_MAX = 4096


class Connection(imaplib.IMAP4):
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
        no_delay(sock)
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
            raise Stopped("a stop was requested")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NoProgress(f"no progress within {self.timeout:g} s")
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
            raise Oversized(
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
                raise Oversized(f"the server sent a response line longer than {MAX_LINE} bytes")
            buffer += self._receive(deadline)
            if len(buffer) - progress >= PROGRESS_BYTES:
                progress = len(buffer)
                deadline = time.monotonic() + self.timeout

    def read(self, size: int) -> bytes:
        if size > self._literal_limit:
            reason = f" ({self._limit_reason})" if self._limit_reason else ""
            raise Oversized(
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
        pieces = [encode_argument(arg) for arg in args if arg is not None]
        if isinstance(literator, Authenticator):
            literator.check()
        elif literator is not None:
            raise TypeError("literals are passed as Str arguments")
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
        if isinstance(literator, Authenticator):
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

    def _get_capabilities(self) -> None:
        """The capabilities: from the greeting's ``[CAPABILITY ...]`` code when it has one
        (RFC 3501 7.1; one round trip less), else asked with CAPABILITY. After STARTTLS
        nothing from before the handshake is left, so they are always asked."""
        greeting = self.untagged_responses.pop("CAPABILITY", None)
        if greeting and isinstance(greeting[-1], bytes) and greeting[-1].strip():
            self.capabilities = tuple(greeting[-1].decode("ascii", "replace").upper().split())
            return
        super()._get_capabilities()  # type: ignore[misc]

    def start_tls(self, context: ssl.SSLContext) -> tuple[str, list[Any]]:
        """STARTTLS; everything received before the handshake is discarded, and data
        that arrived after the answer but before the handshake is refused."""
        typ, data = self._simple_command("STARTTLS")
        if typ != "OK":
            return typ, data
        if self._buffer:
            raise Tampered(
                "the server sent data after its STARTTLS answer, before the TLS handshake "
                "(a man in the middle?)"
            )
        self._handshake(context)
        self._tls_established = True
        self.untagged_responses = {}
        self._get_capabilities()  # the capabilities before TLS are not trusted
        return typ, data


class Authenticator:
    """The AUTHENTICATE continuation handler for one SASL PLAIN exchange (RFC 4616).

    Its parts are checked at the connection's choke point like every argument: a NUL
    in any of them would shift the payload's fields, CR or LF have no place in them.
    """

    def __init__(self, authzid: str, authcid: str, secret: str) -> None:
        self._parts = (
            Str(authzid, "authorization identity"),
            Str(authcid, "user name"),
            Str(secret, "password", secret=True),
        )
        self._done = False

    def check(self) -> None:
        for part in self._parts:
            check(part.encoded(), part.what, None if part.secret else part.value)

    def initial(self) -> str:
        """The initial response of SASL-IR (RFC 4959): the payload with the command."""
        self._done = True
        authzid, authcid, secret = (part.value for part in self._parts)
        return sasl_plain(authzid, authcid, secret).decode("ascii")

    def process(self) -> bytes:
        """The answer to a "+" continuation (sent with CRLF); PLAIN ignores the challenge."""
        if self._done:
            return b"*"  # a second challenge: cancel the exchange
        self._done = True
        authzid, authcid, secret = (part.value for part in self._parts)
        return sasl_plain(authzid, authcid, secret)


def no_delay(sock: Any) -> None:
    """Send small writes at once. Commands often go out in two writes (a line, then its
    CRLF or literal); with Nagle's algorithm the second waits for the server's delayed
    ACK, about 40 ms a command."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def open_connection(
    endpoint: Endpoint, *, mailbox: str, should_stop: Callable[[], bool] | None = None
) -> Connection:
    """A connection to ``endpoint``, with TLS as it says; raises ConnectFailed (naming
    ``mailbox``), or Interrupted when ``should_stop`` says yes while it waits."""
    where = endpoint.where
    context = None if endpoint.security == "plain" else ssl_context(endpoint)

    def failed(detail: str) -> ConnectFailed:
        return ConnectFailed(f"cannot connect to {where} (mailbox {mailbox}): {detail}")

    connection: Connection | None = None
    try:
        connection = Connection(
            endpoint.host,
            endpoint.port,
            timeout=endpoint.timeout,
            tls=context if endpoint.security == "tls" else None,
            should_stop=should_stop or _never,
        )
        if endpoint.security == "starttls":
            offered = {c.upper() for c in connection.capabilities}
            if "STARTTLS" not in offered:
                raise failed(
                    "the server does not offer STARTTLS (security: starttls never "
                    "falls back to an unencrypted connection)"
                )
            assert context is not None
            typ, data = connection.start_tls(context)
            if typ != "OK":
                raise failed(f"STARTTLS refused: {answer_text(data)}")
    except ConnectFailed:
        _close_quietly(connection)
        raise
    except Stopped:
        _close_quietly(connection)
        raise Interrupted(f"{where}: a stop was requested while connecting") from None
    except Exception as exc:
        _close_quietly(connection)
        detail = connect_detail(exc, endpoint)
        if detail is None:
            raise
        raise failed(detail) from exc
    return connection


def _close_quietly(connection: Connection | None) -> None:
    if connection is None:
        return
    with contextlib.suppress(Exception):
        connection.shutdown()


def _never() -> bool:
    return False
