"""Search documents of large messages, made where their bytes are at hand, for the indexer.

Most of the bytes of an archive are in a few large messages, and most of theirs are
attachments, whose content the search index leaves out (it keeps their names).
For the search indexer to read such a message back from its blob is a
decompression and a second SHA-256 of every byte, for a few lines of text. A
mailbox worker has the message in memory until its batch is stored, and extracting
it there costs about a millisecond, attachments or not. So a worker makes the
documents of the messages of at least ``MIN_BYTES`` (``pack``); they go to
``apply`` with the batch (``Batch.documents``) and on to the search indexer once the
batch's placements are committed, so the write order holds: a search document never
comes before its placement. Smaller messages, mostly text, are cheaper to read back
than to extract in the worker (where the extraction would hold the GIL that fetching
needs): the indexer reads their blobs as before.

Packing is pickle: both ends are this program, over pipes no one else holds (see
``run.worker_wire``). The parsers are loaded only once a message is large enough to
be extracted here (about 3 MB more for a worker). ``unpack`` still checks the shape of what it
gets and gives None for anything else; the documents are then dropped, and the
indexer's final catch-up indexes those messages from their blobs.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imapsync_decl.store.search.extract import SearchDocument

_SHA256 = re.compile(r"[0-9a-f]{64}")

MIN_BYTES = 256 * 1024
"""Messages of at least this many bytes get their search document in the worker."""


def pack(messages: Sequence[tuple[str, bytes, datetime | None]]) -> bytes | None:
    """The search documents of the ``messages`` (sha256, raw bytes, internal date) of at
    least MIN_BYTES, packed; None when there is nothing to pack. A message that cannot
    be extracted is left out: archiving never fails for the search index."""
    large = [m for m in messages if len(m[1]) >= MIN_BYTES]
    if not large:
        return None
    from imapsync_decl.store.search.extract import extract  # the parsers, when needed

    documents: list[tuple[str, SearchDocument]] = []
    for sha256, raw, internal_date in large:
        try:
            documents.append((sha256, extract(raw, internal_date)))
        except Exception:  # noqa: S112 (it never raises; if it did, the catch-up indexes it)
            continue
    return pickle.dumps(documents, protocol=pickle.HIGHEST_PROTOCOL) if documents else None


def unpack(payload: bytes) -> list[tuple[str, SearchDocument]] | None:
    """The documents of ``pack``, or None when ``payload`` is not what it makes."""
    from imapsync_decl.store.search.extract import SearchDocument

    try:
        documents = pickle.loads(payload)  # noqa: S301 (see the module)
    except Exception:  # any unpickling failure: the payload is dropped
        return None
    if not isinstance(documents, list):
        return None
    for item in documents:
        if not (
            isinstance(item, tuple)
            and len(item) == 2
            and isinstance(item[0], str)
            and _SHA256.fullmatch(item[0])
            and isinstance(item[1], SearchDocument)
        ):
            return None
    return documents
