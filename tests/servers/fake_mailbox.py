"""A small mailbox behind the scripted IMAP server: canned answers computed from its folders.

It answers what the planner, the executor and restore ask (LIST, STATUS, EXAMINE,
SELECT, UID SEARCH, UID FETCH, UID STORE, UID EXPUNGE, CREATE, APPEND) from plain Python data, so their unit
tests need no Dovecot. Every command is recorded by :class:`FakeImap` (``commands``,
``lines``). A test changes the mailbox between runs by editing ``folders``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from servers.fake_imap import FakeImap, Reply

# What a plan may send: nothing that changes a mailbox.
READ_ONLY_COMMANDS = frozenset(
    {
        "CAPABILITY",
        "LOGIN",
        "AUTHENTICATE",
        "NAMESPACE",
        "LIST",
        "STATUS",
        "EXAMINE",
        "UID SEARCH",
        "UID FETCH",
        "NOOP",
        "LOGOUT",
    }
)


@dataclass
class FakeFolder:
    uidvalidity: int = 7
    messages: dict[int, bytes] = field(default_factory=dict)  # UID -> body
    appended: dict[int, str] = field(default_factory=dict)  # UID -> APPEND's flags and date
    deleted: set[int] = field(default_factory=set)
    expunged_up_to: int = 0  # UIDs are never given twice, as on a real server

    @property
    def uidnext(self) -> int:
        return max([*self.messages, self.expunged_up_to], default=0) + 1

    def add(self, body: bytes) -> int:
        uid = self.uidnext
        self.messages[uid] = body
        return uid

    def expunge(self, uid: int) -> None:
        self.expunged_up_to = max(self.expunged_up_to, uid)
        self.messages.pop(uid, None)
        self.deleted.discard(uid)


class FakeMailbox:
    """Folders by name (a flat hierarchy, '/' as delimiter), served by a FakeImap."""

    def __init__(self, folders: dict[str, FakeFolder], capabilities: str) -> None:
        self.folders = folders
        self._selected = threading.local()  # each connection has its own thread
        replies: dict[str, Reply] = {
            "LIST": self._list,
            "STATUS": self._status,
            "EXAMINE": self._examine,
            "SELECT": self._select,
            "UID SEARCH": self._search,
            "UID FETCH": self._fetch,
            "UID STORE": self._store,
            "UID EXPUNGE": self._expunge,
            "CREATE": self._create,
            "APPEND": self._append,
        }
        self.server = FakeImap(replies, capabilities=capabilities)

    def close(self) -> None:
        self.server.close()

    # --- the answers ---------------------------------------------------------------

    def _list(self, tag: str, args: str) -> bytes:
        lines = [f'* LIST (\\HasNoChildren) "/" "{name}"' for name in self.folders]
        return _lines(*lines, f"{tag} OK LIST done")

    def _status(self, tag: str, args: str) -> bytes:
        name, _ = _folder_argument(args)
        folder = self.folders.get(name)
        if folder is None:
            return _lines(f"{tag} NO no such folder")
        return _lines(
            f'* STATUS "{name}" (MESSAGES {len(folder.messages)} UIDNEXT {folder.uidnext} '
            f"UIDVALIDITY {folder.uidvalidity})",
            f"{tag} OK STATUS done",
        )

    def _open(self, tag: str, args: str, mode: str) -> bytes:
        name, _ = _folder_argument(args)
        folder = self.folders.get(name)
        if folder is None:
            self._selected.name = None
            return _lines(f"{tag} NO no such folder")
        self._selected.name = name
        return _lines(
            f"* {len(folder.messages)} EXISTS",
            f"* OK [UIDVALIDITY {folder.uidvalidity}] ok",
            f"* OK [UIDNEXT {folder.uidnext}] ok",
            f"{tag} OK [{mode}] done",
        )

    def _examine(self, tag: str, args: str) -> bytes:
        return self._open(tag, args, "READ-ONLY")

    def _select(self, tag: str, args: str) -> bytes:
        return self._open(tag, args, "READ-WRITE")

    def _folder(self) -> FakeFolder:
        return self.folders[self._selected.name]

    def _search(self, tag: str, args: str) -> bytes:
        uids = " ".join(str(uid) for uid in sorted(self._folder().messages))
        return _lines(f"* SEARCH {uids}".rstrip(), f"{tag} OK SEARCH done")

    def _fetch(self, tag: str, args: str) -> bytes:
        folder = self._folder()
        wanted, items = args.split(" ", 1)
        out = bytearray()
        uids = sorted(folder.messages)
        for uid in _uid_set(wanted, max(uids, default=0)):
            if uid not in folder.messages:
                continue
            seq = uids.index(uid) + 1
            body = folder.messages[uid]
            flags = "\\Seen \\Deleted" if uid in folder.deleted else "\\Seen"
            parts = [f"UID {uid}"]
            if "RFC822.SIZE" in items:
                parts.append(f"RFC822.SIZE {len(body)}")
            if "FLAGS" in items:
                parts.append(f"FLAGS ({flags})")
            if "INTERNALDATE" in items:
                parts.append('INTERNALDATE "01-Mar-2024 10:00:00 +0000"')
            out += f"* {seq} FETCH ({' '.join(parts)}".encode()
            if "BODY.PEEK[]" in items:
                out += f" BODY[] {{{len(body)}}}\r\n".encode() + body
            if "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]" in items:
                found = re.search(rb"^Message-ID:[^\r\n]*\r\n", body, re.IGNORECASE | re.MULTILINE)
                header = (found.group(0) if found else b"") + b"\r\n"
                out += f" BODY[HEADER.FIELDS (MESSAGE-ID)] {{{len(header)}}}\r\n".encode() + header
            out += b")\r\n"
        return bytes(out) + f"{tag} OK FETCH done\r\n".encode()

    def _store(self, tag: str, args: str) -> bytes:
        folder = self._folder()
        wanted = args.split(" ", 1)[0]
        marked = [u for u in _uid_set(wanted, folder.uidnext) if u in folder.messages]
        folder.deleted.update(marked)
        return _lines(f"{tag} OK STORE done")

    def _expunge(self, tag: str, args: str) -> bytes:
        folder = self._folder()
        for uid in _uid_set(args.strip(), folder.uidnext):
            if uid in folder.deleted:
                folder.expunge(uid)
        return _lines(f"{tag} OK EXPUNGE done")

    def _create(self, tag: str, args: str) -> bytes:
        name, _ = _folder_argument(args)
        if name in self.folders:
            return _lines(f"{tag} NO [ALREADYEXISTS] exists")
        self.folders[name] = FakeFolder(uidvalidity=100 + len(self.folders))
        return _lines(f"{tag} OK CREATE done")

    def _append(self, tag: str, args: str) -> bytes:
        name, rest = _folder_argument(args)
        folder = self.folders.get(name)
        if folder is None:
            return _lines(f"{tag} NO [TRYCREATE] no such folder")
        uid = folder.add(self.server.literals[-1])
        folder.appended[uid] = rest.removesuffix("<literal>").strip()
        return _lines(f"{tag} OK [APPENDUID {folder.uidvalidity} {uid}] APPEND done")


def _lines(*items: str) -> bytes:
    return "".join(item + "\r\n" for item in items).encode()


def _folder_argument(args: str) -> tuple[str, str]:
    """The folder name (quoted or an atom) at the start of ``args``, and the rest."""
    match = re.match(r'"((?:[^"\\]|\\.)*)"\s*(.*)|(\S+)\s*(.*)', args)
    assert match is not None, args
    if match.group(1) is not None:
        return match.group(1), match.group(2)
    return match.group(3), match.group(4)


def _uid_set(text: str, largest: int) -> Iterable[int]:
    for part in text.split(","):
        low, _, high = part.partition(":")
        start = largest if low == "*" else int(low)
        end = start if not high else (largest if high == "*" else int(high))
        yield from range(min(start, end), max(start, end) + 1)
