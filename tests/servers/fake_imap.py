"""A scripted IMAP server on 127.0.0.1 for corner cases and hostile servers (canned lines).

Each command verb (``"LIST"``, ``"UID FETCH"``) maps to a function of (tag, arguments)
that returns what to send: bytes, None to drop the connection, or an iterable of byte
chunks sent one after the other (a generator may sleep between them: a trickle, an
endless stream). With ``tls`` (a server-side SSL context) the server offers STARTTLS
and performs a real handshake; ``implicit_tls`` speaks TLS from the first byte.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any

from imapsync_decl.config.documents import Server

Reply = Callable[[str, str], bytes | Iterable[bytes] | None]


class FakeImap:
    """An IMAP server on 127.0.0.1 that answers from a script.

    ``greeting=None`` accepts connections and never says anything. Commands received
    are kept in ``commands`` (verbs), ``lines`` (the decoded lines, literals replaced by
    ``<literal>``), ``literals`` and ``auth_payloads``; ``received`` holds every byte the
    clients sent.
    """

    def __init__(
        self,
        replies: dict[str, Reply] | None = None,
        *,
        capabilities: str = "IMAP4rev1 AUTH=PLAIN",
        greeting: bytes | None = b"* OK fake server ready\r\n",
        drop_after: set[str] | None = None,
        tls: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
    ) -> None:
        self.replies = replies or {}
        self.drop_after = drop_after or set()
        self.capabilities = capabilities
        self.greeting = greeting
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.commands: list[str] = []
        self.lines: list[str] = []
        self.literals: list[bytes] = []
        self.auth_payloads: list[bytes] = []
        self.received = bytearray()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def server(self, **extra: object) -> Server:
        fields: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "security": "plain",
            "timeout": 5,
        }
        fields.update(extra)
        return Server.model_validate(fields)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for conn in self._connections:
            with contextlib.suppress(OSError):
                conn.close()

    def __enter__(self) -> FakeImap:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._converse(conn)
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _converse(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError, ValueError, ssl.SSLError):
            if self.implicit_tls:
                assert self.tls is not None
                conn = self.tls.wrap_socket(conn, server_side=True)
                self._connections.append(conn)
            if self.greeting is None:
                self._stop.wait()
                return
            reader = _Recorder(conn.makefile("rb"), self.received)
            conn.sendall(self.greeting)
            while True:
                line = reader.readline()
                if not line:
                    return
                while line.rstrip(b"\r\n").endswith(b"}") and b"{" in line:
                    marker = line.rstrip(b"\r\n").rsplit(b"{", 1)[1]
                    if not marker.endswith(b"+}"):
                        conn.sendall(b"+ go ahead\r\n")
                    self.literals.append(reader.read(int(marker.rstrip(b"+}"))))
                    line = line.rsplit(b"{", 1)[0] + b"<literal>" + reader.readline()
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                tag, _, rest = text.partition(" ")
                verb, _, args = rest.partition(" ")
                verb = verb.upper()
                if verb == "UID":
                    sub, _, args = args.partition(" ")
                    verb = f"UID {sub.upper()}"
                self.commands.append(verb)
                self.lines.append(text)
                if verb == "AUTHENTICATE":
                    _mechanism, _, initial = args.partition(" ")
                    if not initial:  # without SASL-IR's initial response: ask for it
                        conn.sendall(b"+ \r\n")
                        initial = reader.readline().decode("ascii", "replace")
                    self.auth_payloads.append(base64.b64decode(initial.strip()))
                reply = self._reply(tag, verb, args)
                if reply is None:
                    conn.shutdown(socket.SHUT_RDWR)
                    conn.close()
                    return
                for chunk in [reply] if isinstance(reply, bytes) else reply:
                    conn.sendall(chunk)
                if verb == "STARTTLS" and self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                    self._connections.append(conn)
                    reader = _Recorder(conn.makefile("rb"), self.received)
                if verb in self.drop_after:
                    conn.shutdown(socket.SHUT_RDWR)
                    conn.close()
                    return
                if verb == "LOGOUT":
                    return

    def _reply(self, tag: str, verb: str, args: str) -> bytes | Iterable[bytes] | None:
        if verb in self.replies:
            return self.replies[verb](tag, args)
        if verb == "CAPABILITY":
            caps = self.capabilities + (" STARTTLS" if self.tls and not self.implicit_tls else "")
            return f"* CAPABILITY {caps}\r\n{tag} OK done\r\n".encode()
        if verb == "STARTTLS":
            return f"{tag} OK begin TLS now\r\n".encode()
        if verb in ("LOGIN", "AUTHENTICATE"):
            return f"{tag} OK logged in\r\n".encode()
        if verb == "LOGOUT":
            return f"* BYE bye\r\n{tag} OK done\r\n".encode()
        if verb == "NOOP":
            return f"{tag} OK done\r\n".encode()
        if verb == "EXAMINE":
            return (
                f"* 2 EXISTS\r\n* OK [UIDVALIDITY 42] ok\r\n* OK [UIDNEXT 9] ok\r\n"
                f"{tag} OK [READ-ONLY] done\r\n"
            ).encode()
        return f"{tag} BAD unknown command {verb}\r\n".encode()


class _Recorder:
    """A reader that keeps a copy of every byte it returns."""

    def __init__(self, file: Any, sink: bytearray) -> None:
        self._file = file
        self._sink = sink

    def readline(self) -> bytes:
        data: bytes = self._file.readline()
        self._sink += data
        return data

    def read(self, size: int) -> bytes:
        data: bytes = self._file.read(size)
        self._sink += data
        return data


def lines(*items: str | bytes) -> bytes:
    """Lines of a reply: text gets CRLF, bytes are sent as they are."""
    return b"".join(i if isinstance(i, bytes) else (i + "\r\n").encode() for i in items)
