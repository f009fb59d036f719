"""Feeding the search index: every message of the index without a document, from its blob.

``catch_up`` is the search indexer of ``apply`` (in ``run.search_worker``) and of
``archive rebuild-search``. It reads the blobs of the messages that have no search
document yet, extracts each one as soon as it is read (so that only one message's
bytes are held at a time, however large), and adds the documents in batches, one
transaction each, of at most ``CATCH_UP_BATCH`` messages or ``BATCH_TEXT``
characters of text. A message whose blob is damaged or missing is skipped and
reported, never indexed from wrong bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from imapsync_decl.store.blobs import BlobError
from imapsync_decl.store.interfaces import BlobStorage
from imapsync_decl.store.rows import parse_datetime
from imapsync_decl.store.search.database import Document, SearchIndex

CATCH_UP_BATCH = 200
"""At most this many messages are looked up, extracted and added in one batch."""

BATCH_TEXT = 16 * 1024 * 1024
"""A batch is added once its documents hold this many characters of text."""


@dataclass
class CatchUp:
    """What ``catch_up`` did: messages indexed, and those whose blob could not be read."""

    indexed: int = 0
    skipped: list[str] = field(default_factory=list)
    after: int = 0  # the last row of the index looked at: where a later call may go on


def catch_up(
    search: SearchIndex,
    blobs: BlobStorage,
    *,
    after: int = 0,
    batch: int = CATCH_UP_BATCH,
    advanced: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    smaller_than: int | None = None,
) -> CatchUp:
    """Index every message of the index without a document, ``batch`` at a time, from
    its blob, beginning after the index's row ``after``; with ``smaller_than``, only the
    messages of fewer bytes (the larger ones get their documents another way, see
    ``run.search_documents``). ``advanced`` is told how many messages each batch dealt
    with."""
    done = CatchUp(after=after)
    limit = -1 if smaller_than is None else smaller_than
    while not should_stop():
        rows = search.connection.execute(
            "SELECT m.rowid, m.sha256, (SELECT min(p.internal_date) FROM idx.placements p"
            " WHERE p.sha256 = m.sha256) FROM idx.messages m"
            " WHERE m.rowid > ? AND (? < 0 OR m.size < ?) AND NOT EXISTS"
            " (SELECT 1 FROM search.docs d WHERE d.sha256 = m.sha256)"
            " ORDER BY m.rowid LIMIT ?",
            (after, limit, limit, batch),
        ).fetchall()
        if not rows:
            break
        # Here, not at the top: a run with nothing to index never loads the parsers.
        from imapsync_decl.store.search.extract import extract

        documents: list[tuple[str, Document]] = []
        text = 0
        for number, (rowid, sha, internal_date) in enumerate(rows, start=1):
            try:
                raw = blobs.get(str(sha))
            except BlobError:
                done.skipped.append(str(sha))
            else:
                document = extract(raw, parse_datetime(internal_date))
                del raw
                documents.append((str(sha), document))
                text += _text_size(document)
            if text >= BATCH_TEXT or number == len(rows):
                done.indexed += search.add(documents)
                documents, text = [], 0
                after = done.after = int(rowid)
        if advanced is not None:
            advanced(len(rows))
    return done


def _text_size(document: Document) -> int:
    return (
        len(document.sender)
        + len(document.recipients)
        + len(document.subject)
        + len(document.body)
        + len(document.attachment)
        + len(document.other)
    )
