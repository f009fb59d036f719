"""The half of a batch that needs no index: hash, store the blobs durably, read the headers.

Both ways of archiving a mailbox use it: a worker process (``run/mailbox_worker.py``),
which then hands the result to the process that writes the index, and the
archiving thread of ``apply`` itself (``worker_processes: false``). What comes back
says everything the index needs to record the batch; the bodies stay where they
were fetched.
"""

from __future__ import annotations

import contextvars
import hashlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

from imapsync_decl.imap.facts import FetchedMessage
from imapsync_decl.store.interfaces import BlobStorage
from imapsync_decl.store.message import MessageHeaders, parse_headers

T = TypeVar("T")


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
            internal_date=_plain_offset(m.internal_date),
            flags=m.flags,
            headers=parse_headers(m.body),
        )
        for m, info in zip(batch, infos, strict=True)
    ]


def _plain_offset(moment: datetime | None) -> datetime | None:
    """The same moment with a standard-library time zone (the IMAP library's own offset
    class cannot be pickled, and a worker sends these to apply)."""
    if moment is None or moment.tzinfo is None:
        return moment
    offset = moment.utcoffset()
    return moment if offset is None else moment.replace(tzinfo=timezone(offset))


def batches(
    messages: Iterator[FetchedMessage], max_count: int, max_bytes: int
) -> Iterator[list[FetchedMessage]]:
    """The messages in batches of at most ``max_count`` and about ``max_bytes``."""
    batch: list[FetchedMessage] = []
    size = 0
    for message in messages:
        batch.append(message)
        size += len(message.body)
        if len(batch) >= max_count or size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


W = TypeVar("W")


class Pipeline(Generic[T, W]):
    """Stores batches on ``lanes`` threads while the caller fetches the next ones, and
    hands the results on in the order submitted.

    ``work`` runs on the lanes, several items at once (storing blobs: hashing,
    compressing, writing, syncing, much of it outside the GIL or waiting for the disk);
    ``report`` runs on one thread of its own, item after item in submission order, once
    the item's work is done. ``submit`` blocks while ``depth`` items wait, so memory stays
    bounded by ``lanes + depth + 1`` batches. A failure of either is raised in the
    caller (at the next submit, at ``wait`` or at the end); leaving the ``with`` block waits
    until every submitted item is reported.
    """

    _DONE = object()

    def __init__(
        self,
        work: Callable[[T], W],
        report: Callable[[W], None],
        *,
        lanes: int = 1,
        depth: int = 1,
    ) -> None:
        self._work = work
        self._report = report
        self._lanes = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="store")
        self._order: queue.Queue[Any] = queue.Queue(maxsize=lanes + depth - 1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._run,), daemon=True
        )

    def __enter__(self) -> Pipeline[T, W]:
        self._thread.start()
        return self

    def _guarded(self, item: T) -> W | None:
        if self._error is not None:
            return None  # after a failure nothing more is stored
        return self._work(item)

    def _run(self) -> None:
        while True:
            future = self._order.get()
            try:
                if future is self._DONE:
                    return
                try:
                    result = future.result()
                    if self._error is None and result is not None:
                        self._report(result)
                except BaseException as exc:  # handed to the caller
                    if self._error is None:
                        self._error = exc
            finally:
                self._order.task_done()

    def submit(self, item: T) -> None:
        self._raise()
        context = contextvars.copy_context()
        self._order.put(self._lanes.submit(context.run, self._guarded, item))

    def wait(self) -> None:
        """Until everything submitted so far is reported (a failure is raised here)."""
        self._order.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._order.put(self._DONE)
        self._thread.join()
        self._lanes.shutdown(wait=True)
        if exc is None:
            self._raise()
