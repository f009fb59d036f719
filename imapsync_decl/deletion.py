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

from imapsync_decl.filters import imap_date
from imapsync_decl.profile import Delete


def active(rules: Delete) -> bool:
    return rules.mode == "after_archive"


def candidate_criteria(rules: Delete, on: dt.date) -> tuple[str, ...]:
    """UID SEARCH keys of the messages that may be deleted once archived."""
    keys = ["UNFLAGGED", "UNDELETED"]
    if rules.older_than_days:
        keys += ["BEFORE", imap_date(on - dt.timedelta(days=rules.older_than_days))]
    return tuple(keys)


def deletable(
    candidates: set[int] | frozenset[int], archived: set[int] | frozenset[int], archiving: set[int]
) -> tuple[int, ...]:
    """The candidates that are archived already or archived by this run (in UID order)."""
    return tuple(sorted(set(candidates) & (set(archived) | archiving)))
