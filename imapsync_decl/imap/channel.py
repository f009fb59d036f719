"""One connection together with what its session knows, and how its failures read.

A :class:`Channel` is shared by a session and the write handle it hands out: it holds
the connection, whether it is closed, which folder is open and how (EXAMINE or
SELECT), and it turns every socket, TLS and imaplib exception of a command into an
:class:`~imapsync_decl.imap.errors.ImapError` (:meth:`Channel.guard`). A connection
that broke or timed out is closed at once; the session is unusable afterwards.
"""

from __future__ import annotations

import contextlib
import imaplib
import socket
from collections.abc import Iterator
from typing import Any

from imapsync_decl.imap.connection import Connection
from imapsync_decl.imap.errors import (
    ConnectionLost,
    ImapError,
    Interrupted,
    NoProgress,
    Oversized,
    ProtocolError,
    Stopped,
)
from imapsync_decl.imap.facts import FolderInfo
from imapsync_decl.imap.settings import Endpoint
from imapsync_decl.imap.wire import answer_text

__all__ = ["Channel"]


class Channel:
    """The connection of one session and its state."""

    def __init__(self, connection: Connection, endpoint: Endpoint) -> None:
        self.imap: Any = connection
        self.endpoint = endpoint
        self.where = endpoint.where
        self.capabilities = frozenset(str(c).upper() for c in connection.capabilities)
        self.closed = False
        self.selected: FolderInfo | None = None
        self.writable = False  # the selected folder was opened with SELECT
        self.openings = 0  # counts folder openings: a write handle belongs to one

    def simple(self, what: str, name: str, *args: Any) -> tuple[str, Any]:
        """Send one command and wait for its answer, under :meth:`guard`."""
        with self.guard(what):
            typ, data = self.imap._simple_command(name, *args)
        return str(typ), data

    def require_selected(self) -> FolderInfo:
        """The open folder; raises when the session is closed or no folder is open."""
        if self.closed:
            raise ConnectionLost(f"{self.where}: the session is closed")
        if self.selected is None:
            raise RuntimeError("no folder is examined; call examine() first")
        return self.selected

    def failure(self, what: str, data: Any) -> ProtocolError:
        """The error for a command the server answered with NO or BAD."""
        return ProtocolError(f"{self.where}: {what} failed: {answer_text(data)}")

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Turn socket, TLS and imaplib exceptions of one command into ImapError."""
        if self.closed:
            raise ConnectionLost(f"{self.where}: the session is closed ({what})")
        try:
            yield
        except ImapError:
            raise
        except Exception as exc:
            error = self.translate(exc, what)
            if error is None:
                raise
            raise error from exc

    def translate(self, exc: BaseException, what: str) -> ImapError | None:
        """The ImapError of ``exc`` raised during ``what``, None for a bug."""
        timeout = self.endpoint.timeout
        if isinstance(exc, Stopped):
            self.lost()
            return Interrupted(f"{self.where}: a stop was requested during {what}")
        if isinstance(exc, NoProgress):
            self.lost()
            return ConnectionLost(
                f"{self.where}: no answer within {timeout:g} s during {what} "
                "(the server sent nothing, or only a trickle)"
            )
        if isinstance(exc, Oversized):
            self.lost()
            return ProtocolError(f"{self.where}: {what}: {exc}; the connection was closed")
        if isinstance(exc, TimeoutError | socket.timeout):
            self.lost()
            return ConnectionLost(f"{self.where}: no answer within {timeout:g} s during {what}")
        if isinstance(exc, imaplib.IMAP4.abort):
            self.lost()
            return ConnectionLost(f"{self.where}: connection lost during {what}: {exc}")
        if isinstance(exc, OSError):
            self.lost()
            reason = exc.strerror or str(exc) or type(exc).__name__
            return ConnectionLost(f"{self.where}: connection lost during {what}: {reason}")
        if isinstance(exc, imaplib.IMAP4.error):
            return ProtocolError(f"{self.where}: {what} failed: {exc}")
        if isinstance(exc, UnicodeError):
            return ProtocolError(f"{self.where}: {what}: cannot encode or decode a value")
        return None

    def lost(self) -> None:
        """The connection is beyond use: close it, forget the open folder."""
        self.selected = None
        self.writable = False
        self.closed = True
        with contextlib.suppress(Exception):
            self.imap.shutdown()

    def close(self) -> None:
        """Log out and close the connection. Never raises; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.selected = None
        self.writable = False
        self.imap.timeout = min(self.endpoint.timeout, 10.0)
        with contextlib.suppress(Exception):
            self.imap.logout()
        with contextlib.suppress(Exception):
            self.imap.shutdown()
