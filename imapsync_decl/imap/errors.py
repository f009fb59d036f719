"""The failures of talking to an IMAP server, named by what went wrong.

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
  (:class:`MessageTooLarge`: a message larger than the endpoint's ``max_message_size``).
* :class:`UnsafeValue`: a value holds CR, LF or NUL and was not sent at all.

The signals at the end (:class:`NoProgress`, :class:`Stopped`, :class:`Oversized`,
:class:`Tampered`) are raised by the connection's reads and never leave this package:
the session turns them into one of the errors above.
"""

from __future__ import annotations

__all__ = [
    "ConnectFailed",
    "ConnectionLost",
    "FolderGone",
    "ImapError",
    "Interrupted",
    "LoginFailed",
    "MessageTooLarge",
    "NoProgress",
    "Oversized",
    "ProtocolError",
    "Stopped",
    "Tampered",
    "UnsafeValue",
]


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


# --- signals of the connection's reads ----------------------------------------------------------


class NoProgress(TimeoutError):
    """A read made no progress within the timeout."""


class Stopped(Exception):
    """``should_stop`` said yes while a read waited."""


class Oversized(Exception):
    """The server sent (or announced) more than a limit allows; the stream is abandoned."""


class Tampered(Exception):
    """Data arrived where none may (after the STARTTLS answer, before the handshake)."""
