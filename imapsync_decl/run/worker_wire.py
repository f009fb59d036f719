"""What ``apply`` and its mailbox workers say to each other, and how it travels.

A worker process (``run/mailbox_worker.py``) archives one mailbox at a time for the
process that runs ``apply``: it fetches, hashes, compresses and stores the blobs,
and tells what it stored; ``apply`` alone writes the index and the journal. The
two talk over the worker's stdin and stdout, one frame per message: a 4-byte
length, then the pickled message. Both ends are this program, started by it, over
pipes no one else holds, so pickle is safe here; a frame larger than
``MAX_FRAME`` is refused all the same.

apply -> worker: a :class:`MailboxJob`, then (after the job's last event) the next
one; the end of stdin means no more work. worker -> apply, per job: :class:`Log`
lines, then per folder :class:`Batch` es (with the search documents of their
messages, when the job asks for them) and one :class:`FolderFetched` or
:class:`FolderFailed`, then one :class:`MailboxDone`, :class:`MailboxFailed` or
:class:`Stopped`. A batch's blobs are durable before its frame is written.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imapsync_decl.fs import write_all
from imapsync_decl.imap.settings import Endpoint, Mechanism
from imapsync_decl.run.storing import StoredMessage

MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct("!I")
_READ = 1024 * 1024


# --------------------------------------------------------------------- apply -> worker


@dataclass(frozen=True)
class FolderJob:
    path: str
    wire_name: str
    uidvalidity: int
    uids: tuple[int, ...]  # to fetch: planned and not archived yet


@dataclass(frozen=True)
class MailboxJob:
    endpoint: Endpoint
    mailbox: str  # the login, as messages name the mailbox
    mechanism: Mechanism
    username: str
    authzid: str | None
    password: str = field(repr=False)
    archive: Path
    stale_before: float  # temporary blob files older than this are a killed run's
    parallel_writes: bool  # compress and write two blobs at once (cores to spare)
    folders: tuple[FolderJob, ...]
    max_count: int
    max_bytes: int
    retries: int  # reconnects after a dropped connection
    backoff_seconds: float  # before the first reconnect, doubled after each
    extract_text: bool = False  # send each batch's search documents (run.search_documents)


# --------------------------------------------------------------------- worker -> apply


@dataclass(frozen=True)
class Log:
    level: str
    event: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Batch:
    folder: int  # position in MailboxJob.folders
    messages: list[StoredMessage]
    documents: bytes | None = None  # their search documents, packed (when asked to extract)


@dataclass(frozen=True)
class FolderFetched:
    """Every message of the folder asked for was fetched and reported (or has vanished)."""

    folder: int


@dataclass(frozen=True)
class FolderFailed:
    folder: int
    error: str
    stale: bool  # its UIDVALIDITY is not the plan's


@dataclass(frozen=True)
class MailboxDone:
    stats: dict[str, int]


@dataclass(frozen=True)
class MailboxFailed:
    """``kind``: ``imap`` (the server or a secret: the mailbox's error), ``unwritable``
    (the archive's disk: ``errno``, ``filename``; the run stops), ``unexpected``."""

    kind: str
    error: str
    errno: int | None = None
    filename: str | None = None


@dataclass(frozen=True)
class Stopped:
    """The worker stopped on a signal, after the batch at hand."""


# --------------------------------------------------------------------- frames


class FrameError(Exception):
    """The other end sent something that is not a frame, or went away."""


def write_frame(fd: int, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > MAX_FRAME:
        raise FrameError(f"a frame of {len(data)} bytes is larger than {MAX_FRAME}")
    write_all(fd, _HEADER.pack(len(data)) + data)


class FrameReader:
    """Frames from a pipe, waiting no longer than asked."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()

    def read(self, timeout: float | None = None) -> object | None:
        """The next message; None when ``timeout`` seconds passed without a whole frame.
        EOFError when the pipe ended (between frames); FrameError on a torn or oversized
        frame."""
        while True:
            message = self._take()
            if message is not None:
                return message
            if timeout is not None:
                ready, _, _ = select.select([self.fd], [], [], timeout)
                if not ready:
                    return None
            data = os.read(self.fd, _READ)
            if not data:
                if self._buffer:
                    raise FrameError("the pipe ended inside a frame")
                raise EOFError
            self._buffer += data

    def _take(self) -> object | None:
        if len(self._buffer) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self._buffer)
        if size > MAX_FRAME:
            raise FrameError(f"a frame of {size} bytes is larger than {MAX_FRAME}")
        end = _HEADER.size + size
        if len(self._buffer) < end:
            return None
        data = bytes(self._buffer[_HEADER.size : end])
        del self._buffer[:end]
        message: object = pickle.loads(data)  # noqa: S301 (our own child or parent, private pipes)
        return message
