"""Verified deletion: which messages may leave the server, decided without I/O.

A message is deleted from the server only when all of this holds: its placement
is committed in the index, its blob is on disk and re-hashes to the hash of the
bytes fetched, the folder's UIDVALIDITY is the one recorded, it is not flagged,
its owner has not marked it \\Deleted (such messages are left alone, never
expunged), it is old enough (``older_than_days``), and the server has UIDPLUS
so that exactly these UIDs are expunged. Where the server has CONDSTORE, the
flag is set with UNCHANGEDSINCE, so a flag set meanwhile keeps the message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Set

from imapsync_decl.config.documents import Delete
from imapsync_decl.plan.filters import imap_date


def active(rules: Delete) -> bool:
    return rules.mode == "after_archive"


def candidate_criteria(rules: Delete, on: dt.date) -> tuple[str, ...]:
    """UID SEARCH keys of the messages that may be deleted once archived."""
    keys = ["UNFLAGGED", "UNDELETED"]
    if rules.older_than_days:
        keys += ["BEFORE", imap_date(on - dt.timedelta(days=rules.older_than_days))]
    return tuple(keys)


def deletable(
    candidates: Iterable[int], archived: Set[int], archiving: Set[int] = frozenset()
) -> tuple[int, ...]:
    """The candidates that may leave the server: those whose message is in the archive
    (``archived``) or is archived by this run first (``archiving``), in UID order.

    The one rule the plan and the executor share. The plan passes the server's answer to
    :func:`candidate_criteria` with what the index holds and what the plan archives; the
    executor passes the plan's list with what the index holds after archiving, and then
    the server's answer asked again with the UIDs whose blob re-hashed. A candidate that
    is neither (left out by the filters, say) is never listed, so the plan shows exactly
    what would be deleted.
    """
    return tuple(sorted(uid for uid in set(candidates) if uid in archived or uid in archiving))
