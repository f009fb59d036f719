"""The restore handle: the only commands that add folders and messages to a server.

An :class:`Appender` comes from
:meth:`ImapSession.open_for_restore <imapsync_decl.imap.session.ImapSession.open_for_restore>`.
It turns the project's folder paths into the server's wire names (its personal
namespace prefix and delimiter, modified UTF-7), creates folders (CREATE) and appends
messages (APPEND with their flags and internal date; the UID the server gives them
with UIDPLUS's APPENDUID). Every name passes the connection's one check for CR, LF
and NUL before anything is sent; the message itself goes as a literal, byte for byte.
No STORE, EXPUNGE or DELETE is sent.
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Sequence
from datetime import datetime

from imapsync_decl.imap.channel import Channel
from imapsync_decl.imap.errors import ProtocolError
from imapsync_decl.imap.wire import Literal, Str, answer_text, check, wire_name

__all__ = ["Appender", "appendable_flags"]

_APPENDUID = re.compile(r"\[APPENDUID ([0-9]+) ([0-9]+)\]", re.IGNORECASE)
_ALREADY_EXISTS = re.compile(r"\[ALREADYEXISTS\]|already exists", re.IGNORECASE)
# A flag as APPEND takes it: a system flag or a keyword atom (RFC 3501 flag-keyword).
_FLAG = re.compile(r"\\?[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]+")
# Never restored: \Recent belongs to a session, \Deleted would let the next EXPUNGE
# of the mailbox's owner remove what was just restored.
_LEFT_OUT = frozenset({"\\recent", "\\deleted"})


def appendable_flags(flags: Sequence[str]) -> tuple[str, ...]:
    """The flags of an archived message as they are restored: without ``\\Recent`` and
    ``\\Deleted``, and without anything that is not a flag atom."""
    kept: list[str] = []
    for flag in flags:
        if flag.lower() in _LEFT_OUT or not _FLAG.fullmatch(flag) or flag in kept:
            continue
        kept.append(flag)
    return tuple(kept)


class Appender:
    """CREATE and APPEND on one logged-in connection; valid while its session is open."""

    def __init__(self, channel: Channel, prefix: str, delimiter: str | None) -> None:
        self._channel = channel
        self.prefix = prefix
        self.delimiter = delimiter

    @property
    def has_uidplus(self) -> bool:
        return "UIDPLUS" in self._channel.capabilities

    def wire_name(self, path: str) -> str:
        """The server's name of the folder ``path``; raises UnsafeValue for a path that
        holds CR, LF or NUL, ProtocolError for one the server's hierarchy cannot name."""
        check(path.encode("utf-8", "surrogateescape"), "folder path", path)
        try:
            return wire_name(path, self.prefix, self.delimiter)
        except ValueError as exc:
            raise ProtocolError(f"{self._channel.where}: {exc}") from None

    def create_folder(self, name: str) -> None:
        """CREATE ``name`` (a wire name); a folder that exists already is no error."""
        typ, data = self._channel.simple("CREATE", "CREATE", Str(name, "folder name"))
        if typ != "OK" and not _ALREADY_EXISTS.search(answer_text(data)):
            raise self._channel.failure(f"CREATE {name!r}", data)

    def append(
        self, name: str, body: bytes, flags: Sequence[str], internal_date: datetime | None
    ) -> int | None:
        """APPEND ``body`` exactly to the folder ``name`` with ``flags`` (see
        :func:`appendable_flags`) and ``internal_date``; returns the new UID when the
        server says it (APPENDUID), else None."""
        if self._channel.closed:
            raise ProtocolError(f"{self._channel.where}: the session is closed (APPEND)")
        args: list[object] = [Str(name, "folder name")]
        args.append("(" + " ".join(appendable_flags(flags)) + ")")
        if internal_date is not None:
            args.append(imaplib.Time2Internaldate(internal_date))
        args.append(Literal(body))
        typ, data = self._channel.simple("APPEND", "APPEND", *args)
        if typ != "OK":
            raise self._channel.failure(f"APPEND to {name!r}", data)
        found = _APPENDUID.search(answer_text(data))
        return int(found.group(2)) if found else None
