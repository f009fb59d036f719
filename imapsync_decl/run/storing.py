"""The half of a batch that needs no index: hash, store the blobs durably, read the headers.

Both ways of archiving a mailbox use it: a worker process (``run/mailbox_worker.py``),
which then hands the result to the process that writes the index, and the
archiving thread of ``apply`` itself (``worker_processes: false``). What comes back
says everything the index needs to record the batch; the bodies stay where they
were fetched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from imapsync_decl.imap.facts import FetchedMessage
from imapsync_decl.store.interfaces import BlobStorage
from imapsync_decl.store.message import MessageHeaders, parse_headers


@dataclass(frozen=True)
class StoredMessage:
    """One fetched message whose blob is durably on disk."""

    uid: int
    sha256: str
    size: int  # bytes of the message as fetched
    stored_size: int  # bytes of its blob file
    internal_date: datetime | None
    flags: tuple[str, ...]
    headers: MessageHeaders


def store_batch(blobs: BlobStorage, batch: Sequence[FetchedMessage]) -> list[StoredMessage]:
    """Store every message of ``batch`` (``put_many``: written and synced, or an intact
    blob of the same content kept, a damaged one replaced) and return them, in order.

    Nothing is returned before every blob is durable: only then may the index name them.
    """
    hashes = [hashlib.sha256(m.body).hexdigest() for m in batch]
    infos = blobs.put_many([m.body for m in batch], hashes)
    return [
        StoredMessage(
            uid=m.uid,
            sha256=info.sha256,
            size=info.size,
            stored_size=info.stored_size,
            internal_date=m.internal_date,
            flags=m.flags,
            headers=parse_headers(m.body),
        )
        for m, info in zip(batch, infos, strict=True)
    ]
