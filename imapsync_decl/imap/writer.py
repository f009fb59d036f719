"""The write handle of one folder: the only commands that change a server.

A :class:`FolderWriter` comes from
:meth:`ImapSession.open_for_deletion <imapsync_decl.imap.session.ImapSession.open_for_deletion>`,
which opens the folder read-write (SELECT). It can set ``\\Deleted`` on given UIDs
(``UID STORE +FLAGS.SILENT``, with UNCHANGEDSINCE where the server has CONDSTORE) and
remove exactly those (``UID EXPUNGE``, which needs UIDPLUS). It stays valid while its
folder stays open: once the session opens another folder (or the same one again), or
is closed, every method refuses. No CREATE, DELETE or APPEND is sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from imapsync_decl.imap.channel import Channel
from imapsync_decl.imap.errors import ProtocolError
from imapsync_decl.imap.facts import FolderInfo, FolderState
from imapsync_decl.imap.wire import answer_text, modified_uids, sequence_set

__all__ = ["FolderWriter"]


class FolderWriter:
    """Deletion in one folder opened read-write; valid until the session opens another."""

    def __init__(self, channel: Channel, folder: FolderInfo, state: FolderState) -> None:
        self._channel = channel
        self._opening = channel.openings
        self.folder = folder
        self.state = state  # as SELECT reported it

    @property
    def can_delete_exactly(self) -> bool:
        """UIDPLUS: UID EXPUNGE removes exactly the given messages."""
        return "UIDPLUS" in self._channel.capabilities

    def mark_deleted(self, uids: Sequence[int], unchanged_since: int | None) -> set[int]:
        """Set \\Deleted on ``uids``; with ``unchanged_since`` (CONDSTORE) only on those
        not modified since that MODSEQ. Returns the UIDs that were marked."""
        self._require_open()
        if not uids:
            return set()
        args = [sequence_set(uids)]
        if unchanged_since is not None:
            args.append(f"(UNCHANGEDSINCE {unchanged_since:d})")
        args += ["+FLAGS.SILENT", "(\\Deleted)"]
        typ, data = self._channel.simple("UID STORE", "UID", "STORE", *args)
        if typ != "OK":
            raise self._channel.failure("UID STORE", data)
        return set(uids) - modified_uids(answer_text(data))

    def expunge_uids(self, uids: Sequence[int]) -> None:
        """UID EXPUNGE (UIDPLUS): remove exactly ``uids``, which must carry \\Deleted."""
        self._require_open()
        if not uids:
            return
        if not self.can_delete_exactly:
            raise ProtocolError(f"{self._channel.where}: the server has no UIDPLUS (UID EXPUNGE)")
        typ, data = self._channel.simple("UID EXPUNGE", "UID", "EXPUNGE", sequence_set(uids))
        if typ != "OK":
            raise self._channel.failure("UID EXPUNGE", data)

    def _require_open(self) -> None:
        channel = self._channel
        selected = channel.require_selected()
        if (
            channel.openings != self._opening
            or not channel.writable
            or selected.wire_name != self.folder.wire_name
        ):
            raise RuntimeError(
                f"folder {self.folder.path!r} is no longer open for deletion; "
                "call open_for_deletion() again"
            )
