"""The read-only IMAP session: the only place that reads mailboxes from IMAP servers.

:class:`ImapSession` opens one connection to one mailbox (an
:class:`~imapsync_decl.imap.settings.Endpoint`), logs in as a
:class:`~imapsync_decl.imap.settings.Login` says and reads what archiving needs: the
folders of the personal namespace, their state, the UIDs and sizes of their messages,
and the messages themselves. Reading changes nothing on the server: folders are opened
with EXAMINE (read-only) and bodies are fetched with ``BODY.PEEK[]`` (so ``\\Seen`` is
never set). A session has no command that changes the server; verified deletion asks
for a :class:`~imapsync_decl.imap.writer.FolderWriter` with :meth:`open_for_deletion`,
restore for an :class:`~imapsync_decl.imap.appender.Appender` with :meth:`open_for_restore`.

Failures surface as the errors of :mod:`imapsync_decl.imap.errors`; the bytes on the
wire are bounded and checked by :mod:`imapsync_decl.imap.connection`.
"""

from __future__ import annotations

import contextlib
import imaplib
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import structlog
from imapclient.response_parser import parse_fetch_response

from imapsync_decl.imap.appender import Appender
from imapsync_decl.imap.channel import Channel
from imapsync_decl.imap.connection import Authenticator, open_connection
from imapsync_decl.imap.errors import (
    ConnectionLost,
    FolderGone,
    ImapError,
    LoginFailed,
    MessageTooLarge,
    ProtocolError,
)
from imapsync_decl.imap.facts import FetchedMessage, FolderInfo, FolderState
from imapsync_decl.imap.settings import Endpoint, Login
from imapsync_decl.imap.wire import (
    EXPUNGED_RE,
    NONEXISTENT_RE,
    UNSAFE,
    ListEntry,
    Namespace,
    Str,
    answer_text,
    batch_uids,
    decode_name,
    fetched_message,
    folder_path,
    namespace_of,
    parse_list_response,
    parse_namespace_response,
    parse_search_response,
    parse_status_responses,
    plain_forms,
    redact,
    same_mailbox,
    search_atom,
    sequence_set,
    wire_bytes,
    wire_text,
)
from imapsync_decl.imap.writer import FolderWriter

__all__ = ["SIZE_CHUNK", "SIZE_MARGIN", "STATUS_PIPELINE", "ImapSession", "SessionStats"]

#: A message body may exceed its RFC822.SIZE (servers count line ends differently):
#: by at most this much (plus the size itself, i.e. twice the size in all).
SIZE_MARGIN = 64 * 1024

#: UIDs per ``UID FETCH (RFC822.SIZE)`` command: keeps command lines short (RFC 7162
#: asks clients to stay below about 8000 octets).
SIZE_CHUNK = 500

#: STATUS commands sent before their answers are read (:meth:`ImapSession.prefetch_states`):
#: their answers stay far below what socket buffers hold, so that neither side waits
#: for the other to read.
STATUS_PIPELINE = 32

log = structlog.get_logger(__name__)


@dataclass
class SessionStats:
    """Counters of one session, for logs and tests."""

    fetch_commands: int = 0  # UID FETCH commands for bodies
    messages_fetched: int = 0
    bytes_fetched: int = 0
    largest_fetch_bytes: int = 0  # body bytes of the largest single FETCH command
    largest_fetch_count: int = 0  # messages of the largest single FETCH command


class ImapSession:
    """One logged-in (or about to log in) connection to one mailbox. Read-only.

    Open it with :meth:`connect`, then :meth:`login`; use it as a context manager
    so :meth:`logout` always runs. A session is not thread-safe.
    """

    def __init__(self, channel: Channel, mailbox: str) -> None:
        self._channel = channel
        self._imap: Any = channel.imap
        self._endpoint = channel.endpoint
        self._mailbox = mailbox
        self._where = channel.where
        self._known: dict[str, FolderState] = {}  # listed or prefetched, by wire name
        self.stats = SessionStats()

    # ------------------------------------------------------------------ opening

    @classmethod
    def connect(
        cls,
        endpoint: Endpoint,
        *,
        mailbox: str,
        should_stop: Callable[[], bool] | None = None,
    ) -> ImapSession:
        """Connect (and with ``starttls`` upgrade) to ``endpoint``; raises :class:`ConnectFailed`.

        ``should_stop`` is asked at least every
        :data:`~imapsync_decl.imap.connection.POLL_SECONDS` while the session waits for
        the server; when it says yes, the waiting command fails with
        :class:`Interrupted` (and the connection is closed).
        """
        connection = open_connection(endpoint, mailbox=mailbox, should_stop=should_stop)
        return cls(Channel(connection, endpoint), mailbox)

    def login(self, login: Login) -> None:
        """Log in as ``login`` says; raises :class:`LoginFailed` if the server refuses.

        ``sasl_plain``: AUTHENTICATE PLAIN with the master user as authentication
        identity and the mailbox as authorization identity. ``login_separator``:
        LOGIN with the combined user name. ``user_password``: AUTHENTICATE PLAIN
        when the server offers AUTH=PLAIN (it carries any UTF-8 password), else
        LOGIN. LOGIN sends a non-ASCII user name or password as a UTF-8 literal. A
        value with CR, LF or NUL raises :class:`UnsafeValue` before anything is sent.
        The password is read here (:meth:`Login.resolve_password`), not earlier.
        """
        password = login.resolve_password()
        mechanism = login.mechanism
        use_plain = mechanism == "sasl_plain" or (
            mechanism == "user_password" and "AUTH=PLAIN" in self._caps
        )
        secret = password.reveal()
        hidden = [secret, *plain_forms(login.username, login.authzid, secret)]
        try:
            if use_plain:
                typ, data = self._authenticate_plain(login.username, secret, login.authzid or "")
            else:
                typ, data = self._login_command(login.username, secret)
        except LoginFailed:
            raise
        except Exception as exc:
            error = self._channel.translate(exc, "login")
            if error is None:
                raise
            message = redact(error.message, hidden)
            if isinstance(error, ProtocolError):
                raise LoginFailed(
                    f"login to mailbox {self._mailbox} on {self._where} failed ({mechanism}): "
                    f"{message}"
                ) from None
            raise type(error)(message) from None
        if typ != "OK":
            how = "AUTHENTICATE PLAIN" if use_plain else "LOGIN"
            answer = redact(answer_text(data), hidden)
            raise LoginFailed(
                f"login to mailbox {self._mailbox} on {self._where} failed "
                f"({mechanism}, {how} as {login.username!r}): {answer}"
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
        authenticator = Authenticator(authzid, authcid, secret)
        if "SASL-IR" in self._caps:
            # RFC 4959: the response goes with the command, one round trip less.
            authenticator.check()
            typ, data = imap._simple_command("AUTHENTICATE", "PLAIN", authenticator.initial())
        else:
            imap.literal = authenticator
            typ, data = imap._simple_command("AUTHENTICATE", "PLAIN")
        return str(typ), data

    def _login_command(self, username: str, secret: str) -> tuple[str, Any]:
        # Non-ASCII user names and passwords go as UTF-8 literals.
        typ, data = self._imap._simple_command(
            "LOGIN", Str(username, "user name"), Str(secret, "password", secret=True)
        )
        return str(typ), data

    def _refresh_capabilities(self) -> None:
        with self._channel.guard("CAPABILITY"):
            untagged = self._imap.untagged_responses.pop("CAPABILITY", None)
            if untagged:
                text = untagged[-1]
            else:
                typ, data = self._imap.capability()
                if typ != "OK" or not data or data[-1] is None:
                    raise ProtocolError(f"{self._where}: CAPABILITY failed: {answer_text(data)}")
                text = data[-1]
            raw = text.decode("ascii", "replace") if isinstance(text, bytes) else str(text)
            self._channel.capabilities = frozenset(raw.upper().split())
            self._imap.capabilities = tuple(sorted(self._caps))

    @property
    def _caps(self) -> frozenset[str]:
        return self._channel.capabilities

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
        self._channel.close()

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
        self._known = {}
        namespaces = self._namespaces()
        personal = [ns for ns in namespaces if ns.personal]
        patterns = sorted({ns.prefix + "*" for ns in personal})
        entries: list[ListEntry] = []
        statuses: list[tuple[bytes, dict[str, int]]] = []
        for pattern in patterns:
            entries.extend(self._list("", pattern, statuses))
        if not any(e.name.upper() == b"INBOX" for e in entries):
            entries.extend(self._list("", "INBOX", statuses))

        folders: dict[str, FolderInfo] = {}
        seen_wire: set[bytes] = set()
        for entry in entries:
            if entry.name in seen_wire:
                continue
            seen_wire.add(entry.name)
            if UNSAFE.search(entry.name):
                # Such a name could never be sent back safely: leave the folder out.
                log.warning(
                    "folder_skipped", wire_name=repr(entry.name), reason="CR, LF or NUL in the name"
                )
                continue
            wire = wire_text(entry.name)
            owner = namespace_of(wire, namespaces)
            if owner is None or not owner.personal:
                continue
            root = owner.prefix.removesuffix(owner.delimiter or "")
            if owner.prefix and wire == root and wire.upper() != "INBOX":
                continue
            decoded = decode_name(entry.name)
            prefix = decode_name(owner.prefix.encode("utf-8", "surrogateescape"))
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
        listed = sorted(folders.values(), key=lambda f: (f.path != "INBOX", f.path))
        self._known = self._listed_states(listed, statuses)
        return listed

    def _listed_states(
        self, folders: Sequence[FolderInfo], statuses: Sequence[tuple[bytes, dict[str, int]]]
    ) -> dict[str, FolderState]:
        """The LIST-STATUS answers that name exactly one listed folder, each complete.

        A STATUS for a name not listed is ignored; a folder with no answer, an
        incomplete one or more than one (which of them would be true?) has none, and
        :meth:`folder_state` asks STATUS for it. The examined folder has none either:
        the server may answer with the session's older view of it.
        """
        selected = self._selected
        found: dict[str, FolderState] = {}
        for folder in folders:
            if not folder.selectable or (
                selected is not None and selected.wire_name == folder.wire_name
            ):
                continue
            name = wire_bytes(folder)
            answers = [values for sent, values in statuses if same_mailbox(sent, name)]
            if len(answers) != 1:
                continue
            state = self._state_of(answers[0])
            if state is not None:
                found[folder.wire_name] = state
        return found

    def _state_of(self, values: Mapping[str, int]) -> FolderState | None:
        """The folder state of STATUS items; None when one that was asked for is missing."""
        if any(item not in values for item in self._status_items()):
            return None
        return FolderState(
            uidvalidity=values["UIDVALIDITY"],
            uidnext=values["UIDNEXT"],
            exists=values["MESSAGES"],
            highestmodseq=values.get("HIGHESTMODSEQ"),
        )

    def _status_items(self) -> list[str]:
        items = ["UIDVALIDITY", "UIDNEXT", "MESSAGES"]
        if "CONDSTORE" in self._caps:
            items.append("HIGHESTMODSEQ")
        return items

    def _namespaces(self) -> list[Namespace]:
        if "NAMESPACE" in self._caps:
            with self._channel.guard("NAMESPACE"):
                # Only the answer to this command counts (nothing injected before TLS, say).
                self._imap.untagged_responses.pop("NAMESPACE", None)
                typ, data = self._imap._simple_command("NAMESPACE")
                if typ != "OK":
                    raise ProtocolError(f"{self._where}: NAMESPACE failed: {answer_text(data)}")
                typ, data = self._imap._untagged_response(typ, data, "NAMESPACE")
                parsed = parse_namespace_response(data)
            found: list[Namespace] = []
            for ns in parsed:
                if UNSAFE.search(ns.prefix.encode("utf-8", "surrogateescape")):
                    log.warning(
                        "namespace_skipped",
                        prefix=repr(ns.prefix),
                        reason="CR, LF or NUL in the prefix",
                    )
                    continue
                found.append(ns)
            if any(ns.personal for ns in found):
                return found
            # A server without a personal namespace still has an INBOX.
            return [*found, Namespace("", self._list_delimiter(), True)]
        return [Namespace("", self._list_delimiter(), True)]

    def _list_delimiter(self) -> str | None:
        entries = self._list("", "")
        return entries[0].delimiter if entries else None

    def _list(
        self,
        reference: str,
        pattern: str,
        statuses: list[tuple[bytes, dict[str, int]]] | None = None,
    ) -> list[ListEntry]:
        """LIST; with ``statuses`` and LIST-STATUS (RFC 5819) offered, the status of each
        folder comes with it and its STATUS answers are added to ``statuses``."""
        caps = self._caps
        returns: list[str] = []
        if pattern and "LIST-EXTENDED" in caps and "SPECIAL-USE" in caps:
            returns.append("SPECIAL-USE")
        with_status = statuses is not None and "LIST-STATUS" in caps
        if with_status:
            returns.append("STATUS (" + " ".join(self._status_items()) + ")")
        args: list[Any] = [Str(reference, "LIST reference"), Str(pattern, "LIST pattern")]
        if returns:
            args += ["RETURN", "(" + " ".join(returns) + ")"]
        with self._channel.guard("LIST"):
            self._imap.untagged_responses.pop("LIST", None)
            typ, data = self._imap._simple_command("LIST", *args)
            if typ != "OK":
                raise ProtocolError(f"{self._where}: LIST {pattern!r} failed: {answer_text(data)}")
            if with_status and statuses is not None:
                try:
                    statuses.extend(
                        parse_status_responses(self._imap.untagged_responses.pop("STATUS", []))
                    )
                except ProtocolError:
                    # Unreadable: the listing stands, each folder is asked with STATUS.
                    log.warning("list_status_ignored", reason="an unreadable STATUS answer")
            typ, data = self._imap._untagged_response(typ, data, "LIST")
            return parse_list_response(data)

    # ------------------------------------------------------------------ folder state

    def folder_state(self, folder: FolderInfo) -> FolderState:
        """The state of ``folder`` as the last :meth:`list_folders` saw it when the server
        gave it with the listing (LIST-STATUS) or as :meth:`prefetch_states` asked it,
        else :meth:`status`. Each such state is used once: asking again sends STATUS."""
        known = self._known.pop(folder.wire_name, None)
        if known is not None:
            return known
        return self.status(folder)

    def prefetch_states(self, folders: Sequence[FolderInfo]) -> None:
        """Ask STATUS of each of ``folders`` that has no state from the listing, the
        commands of :data:`STATUS_PIPELINE` folders sent before their answers are read:
        one round trip for them instead of one each. :meth:`folder_state` returns them.

        Only an answer that names the folder, alone and complete, after an OK, counts; a
        folder without one is left for :meth:`folder_state` to ask alone (so that its
        error, a folder gone say, is its own). So are the examined folder (its STATUS
        needs a NOOP first) and names that would go as literals (a synchronizing literal
        waits for the server, which would read answers in between).
        """
        selected = self._selected
        wanted: dict[str, FolderInfo] = {}
        for folder in folders:
            name = wire_bytes(folder)
            if (
                not folder.selectable
                or folder.wire_name in self._known
                or (selected is not None and selected.wire_name == folder.wire_name)
                or not name.isascii()
                or UNSAFE.search(name)
            ):
                continue
            wanted.setdefault(folder.wire_name, folder)
        batch = list(wanted.values())
        for start in range(0, len(batch), STATUS_PIPELINE):
            self._known.update(self._pipelined_status(batch[start : start + STATUS_PIPELINE]))

    def _pipelined_status(self, folders: Sequence[FolderInfo]) -> dict[str, FolderState]:
        if len(folders) < 2:
            return {}  # one folder: STATUS alone is just as fast
        imap = self._imap
        items = "(" + " ".join(self._status_items()) + ")"
        answered: set[str] = set()
        with self._channel.guard("STATUS"):
            imap.untagged_responses.pop("STATUS", None)
            tags = [
                imap._command("STATUS", Str(folder.wire_name, "folder name"), items)
                for folder in folders
            ]
            # Every answer is read, even after a refusal: none is left for the next command.
            for folder, tag in zip(folders, tags, strict=True):
                try:
                    typ, _data = imap._command_complete("STATUS", tag)
                except imaplib.IMAP4.abort:
                    raise
                except imaplib.IMAP4.error:
                    continue  # BAD: this folder is asked alone
                if typ == "OK":
                    answered.add(folder.wire_name)
            data = imap.untagged_responses.pop("STATUS", [])
        try:
            answers = parse_status_responses(data)
        except ProtocolError:
            return {}  # each folder is asked alone, and fails alone
        found: dict[str, FolderState] = {}
        for folder in folders:
            if folder.wire_name not in answered:
                continue
            name = wire_bytes(folder)
            mine = [values for sent, values in answers if same_mailbox(sent, name)]
            state = self._state_of(mine[0]) if len(mine) == 1 else None
            if state is not None:
                found[folder.wire_name] = state
        return found

    def status(self, folder: FolderInfo) -> FolderState:
        """STATUS of ``folder`` (UIDVALIDITY, UIDNEXT, MESSAGES; HIGHESTMODSEQ with CONDSTORE).

        For the folder currently examined, a NOOP comes first, so the answer is
        current and not the session's older view of it.
        """
        if not folder.selectable:
            raise ProtocolError(
                f"{self._where}: folder {folder.path!r} has no status (it is \\Noselect)"
            )
        values = self._status(folder, self._status_items())
        state = self._state_of(values)
        if state is None:
            lacking = next(item for item in self._status_items() if item not in values)
            raise ProtocolError(f"{self._where}: STATUS of {folder.path!r} lacks {lacking}")
        return state

    def _status(
        self, folder: FolderInfo, items: Sequence[str], *, sync: bool = True
    ) -> dict[str, int]:
        selected = self._selected is not None and self._selected.wire_name == folder.wire_name
        if sync and selected:
            # STATUS of the examined folder gives the session's view, which servers
            # (Dovecot) only bring up to date at a command like NOOP.
            with self._channel.guard("NOOP"):
                typ, data = self._imap._simple_command("NOOP")
                if typ != "OK":
                    raise ProtocolError(f"{self._where}: NOOP failed: {answer_text(data)}")
        with self._channel.guard(f"STATUS {folder.path!r}"):
            self._imap.untagged_responses.pop("STATUS", None)
            typ, data = self._imap._simple_command(
                "STATUS", Str(folder.wire_name, "folder name"), "(" + " ".join(items) + ")"
            )
            if typ != "OK":
                self._refused(folder, "STATUS", data)
            typ, data = self._imap._untagged_response(typ, data, "STATUS")
            name = wire_bytes(folder)
            # Only an answer naming this folder counts, never one about another folder.
            answers = [v for sent, v in parse_status_responses(data) if same_mailbox(sent, name)]
        if not answers:
            raise ProtocolError(f"{self._where}: STATUS of {folder.path!r}: no STATUS response")
        return answers[-1]

    @property
    def _selected(self) -> FolderInfo | None:
        return self._channel.selected

    def examine(self, folder: FolderInfo) -> FolderState:
        """Open ``folder`` read-only (EXAMINE) for :meth:`search_uids` and the fetches.

        When the EXAMINE answer lacks UIDNEXT (allowed for old servers), STATUS is
        asked; if that lacks it too, UIDNEXT is taken as the highest UID + 1 (1 for
        an empty folder), which is the lowest value the server can have.
        """
        return self._open(folder, "EXAMINE")

    def open_for_deletion(self, folder: FolderInfo) -> FolderWriter:
        """Open ``folder`` read-write (SELECT) and return the handle that deletes in it.

        Only verified deletion does this; every other reading of a folder uses
        EXAMINE. The folder's state as SELECT reports it is the handle's ``state``;
        :meth:`search_uids` and the fetches work on the folder as after
        :meth:`examine`. The handle is valid until another folder is opened.
        """
        state = self._open(folder, "SELECT")
        return FolderWriter(self._channel, folder, state)

    def open_for_restore(self) -> Appender:
        """The handle that creates folders and appends messages (restore only); the
        personal namespace gives the wire names of folder paths."""
        personal = next(ns for ns in self._namespaces() if ns.personal)
        return Appender(
            self._channel, personal.prefix, personal.delimiter or self._list_delimiter()
        )

    @property
    def can_delete_exactly(self) -> bool:
        """UIDPLUS: UID EXPUNGE removes exactly the given messages. Without it, an
        EXPUNGE would also remove what the mailbox's owner marked \\Deleted."""
        return "UIDPLUS" in self._caps

    def _open(self, folder: FolderInfo, command: str) -> FolderState:
        channel = self._channel
        channel.selected = None
        channel.writable = False
        channel.openings += 1
        if not folder.selectable:
            raise ProtocolError(
                f"{self._where}: folder {folder.path!r} cannot be examined (it is \\Noselect)"
            )
        # With CONDSTORE, the parameter makes every server report HIGHESTMODSEQ.
        extra = ["(CONDSTORE)"] if "CONDSTORE" in self._caps else []
        with self._channel.guard(f"{command} {folder.path!r}"):
            self._imap.untagged_responses = {}
            typ, data = self._imap._simple_command(
                command, Str(folder.wire_name, "folder name"), *extra
            )
            if typ != "OK":
                self._imap.state = "AUTH"
                self._refused(folder, command, data)
            self._imap.state = "SELECTED"
            self._imap.is_readonly = command == "EXAMINE"
            channel.writable = command == "SELECT"
            untagged = self._imap.untagged_responses
            values: dict[str, int] = {}
            for key in ("EXISTS", "UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ"):
                raw = untagged.get(key)
                if raw:
                    with contextlib.suppress(TypeError, ValueError):
                        # The last one counts (EXISTS may be repeated while the folder grows).
                        values[key] = int(raw[-1])
        channel.selected = folder
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
        answer = answer_text(data)
        try:
            listed = [e for e in self._list("", folder.wire_name) if e.name == wire_bytes(folder)]
        except ConnectionLost:
            raise
        except ImapError:
            gone = bool(NONEXISTENT_RE.search(answer))
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
        self._channel.require_selected()
        keys = tuple(criteria) or ("ALL",)
        for key in keys:
            if not search_atom(key):
                raise ValueError(f"not a search atom: {key!r}")
        with self._channel.guard("UID SEARCH"):
            self._imap.untagged_responses.pop("SEARCH", None)
            typ, data = self._imap._simple_command("UID", "SEARCH", *keys)
            if typ != "OK":
                raise ProtocolError(f"{self._where}: UID SEARCH failed: {answer_text(data)}")
            typ, data = self._imap._untagged_response(typ, data, "SEARCH")
        return parse_search_response(data)

    def fetch_sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """RFC822.SIZE of each UID that still exists in the examined folder."""
        self._channel.require_selected()
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

    def fetch_message_ids(self, uids: Sequence[int]) -> dict[int, tuple[bytes, int]]:
        """The Message-ID header (raw, b"" without one) and RFC822.SIZE of each UID of the
        examined folder, :data:`SIZE_CHUNK` at a time, each header at most 64 KiB."""
        self._channel.require_selected()
        ordered = sorted(set(uids))
        items = "(RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
        found: dict[int, tuple[bytes, int]] = {}
        for start in range(0, len(ordered), SIZE_CHUNK):
            chunk = ordered[start : start + SIZE_CHUNK]
            self._imap.expect_bodies(SIZE_MARGIN, SIZE_MARGIN * len(chunk), "Message-ID headers")
            for uid, item in self._uid_fetch(chunk, items, "FETCH Message-IDs").items():
                size = item.get(b"RFC822.SIZE")
                header = next((v for k, v in item.items() if k.startswith(b"BODY[HEADER")), b"")
                if isinstance(size, int):
                    found[uid] = (header if isinstance(header, bytes) else b"", size)
        return found

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
        :data:`SIZE_MARGIN`, and never more than the endpoint's ``max_message_size``; a
        message whose RFC822.SIZE is larger than that raises :class:`MessageTooLarge`
        before its batch is fetched.
        """
        self._channel.require_selected()
        for batch in batch_uids(uids, max_count=max_count, max_bytes=max_bytes, sizes=sizes):
            self._expect_bodies(batch, sizes)
            fetched = self._uid_fetch(batch, "(BODY.PEEK[] INTERNALDATE FLAGS)", "FETCH")
            messages: list[FetchedMessage] = []
            for uid in batch:
                item = fetched.get(uid)
                if item is None:
                    continue
                try:
                    message = fetched_message(uid, item)
                except ValueError as exc:
                    raise ProtocolError(f"{self._where}: UID {uid}: {exc}") from None
                if message is not None:
                    messages.append(message)
            total = sum(len(m.body) for m in messages)
            self.stats.fetch_commands += 1
            self.stats.messages_fetched += len(messages)
            self.stats.bytes_fetched += total
            self.stats.largest_fetch_bytes = max(self.stats.largest_fetch_bytes, total)
            self.stats.largest_fetch_count = max(self.stats.largest_fetch_count, len(messages))
            yield from messages

    def _expect_bodies(self, batch: Sequence[int], sizes: Mapping[int, int] | None) -> None:
        """Tell the connection how large the bodies of the next FETCH may be."""
        limit = self._endpoint.max_message_size
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
        with self._channel.guard(what):
            imap.untagged_responses.pop("FETCH", None)
            tag = imap._command("UID", "FETCH", sequence_set(uids), items)
            typ, data = imap._command_complete("FETCH", tag)
            responses = imap.untagged_responses.pop("FETCH", [])
            if typ != "OK" and not EXPUNGED_RE.search(answer_text(data)):
                raise ProtocolError(f"{self._where}: UID {what} refused: {answer_text(data)}")
            if not responses:
                return {}
            parsed = parse_fetch_response(responses, normalise_times=False, uid_is_key=False)
        # Keyed by sequence number here, so unsolicited FETCH responses without UID
        # (flag changes by other sessions) never pass for a requested UID.
        return {item[b"UID"]: item for item in parsed.values() if isinstance(item.get(b"UID"), int)}
