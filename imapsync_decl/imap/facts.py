"""What the server says about a mailbox: plain frozen values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class FolderInfo:
    """One folder of a mailbox's personal namespace, as LIST reports it."""

    path: str  # decoded from modified UTF-7, levels joined by '/', namespace prefix removed
    wire_name: str  # the name as the server knows it (for EXAMINE/STATUS), still encoded
    delimiter: str | None  # the server's hierarchy delimiter
    attributes: frozenset[str]  # LIST attributes, e.g. {"\\HasNoChildren", "\\Trash"}, as given

    @property
    def selectable(self) -> bool:
        lowered = {a.lower() for a in self.attributes}
        return "\\noselect" not in lowered and "\\nonexistent" not in lowered

    @property
    def special_use(self) -> str | None:
        """The RFC 6154 SPECIAL-USE attribute, if the server reports one."""
        for attribute in self.attributes:
            if attribute.lower() in SPECIAL_USE:
                return SPECIAL_USE[attribute.lower()]
        return None


SPECIAL_USE = {
    a.lower(): a
    for a in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
}


@dataclass(frozen=True)
class FolderState:
    """The state of a folder at one moment (STATUS or EXAMINE)."""

    uidvalidity: int
    uidnext: int
    exists: int  # number of messages
    highestmodseq: int | None = None


@dataclass(frozen=True)
class FetchedMessage:
    """One message as fetched for archiving: the exact bytes of BODY[]."""

    uid: int
    body: bytes
    internal_date: datetime | None
    flags: tuple[str, ...]
