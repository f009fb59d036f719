"""Message filters as IMAP search keys, and the condition under which a checkpoint holds.

Filters are evaluated by the server (UID SEARCH), on the internal date at day
granularity, the flags and the size. Because what qualifies can change without
a new message arriving (a day passes, a message is read or unflagged), a
folder's checkpoint records a *condition* next to UIDVALIDITY, UIDNEXT and the
count: the filters, the day (with an age filter) and HIGHESTMODSEQ (with a flag
filter, where the server has CONDSTORE). The incremental shortcut applies only
while the condition is the same; without CONDSTORE a flag filter always searches.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from imapsync_decl.config.documents import Filters
from imapsync_decl.imap.facts import FolderState

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def today() -> dt.date:
    """The local date the age filters count from (one place, so tests can move it)."""
    return dt.date.today()


def imap_date(day: dt.date) -> str:
    """RFC 3501 date: 1-Feb-2026 (month names are English whatever the locale)."""
    return f"{day.day}-{_MONTHS[day.month - 1]}-{day.year}"


def active(filters: Filters) -> bool:
    return bool(
        filters.older_than_days
        or filters.newer_than_days
        or filters.skip_unread
        or filters.skip_flagged
        or filters.max_size
    )


def search_criteria(filters: Filters, on: dt.date) -> tuple[str, ...]:
    """UID SEARCH keys selecting the messages to archive (empty: every message)."""
    keys: list[str] = []
    if filters.older_than_days:
        keys += ["BEFORE", imap_date(on - dt.timedelta(days=filters.older_than_days))]
    if filters.newer_than_days:
        keys += ["SINCE", imap_date(on - dt.timedelta(days=filters.newer_than_days))]
    if filters.skip_unread:
        keys.append("SEEN")
    if filters.skip_flagged:
        keys.append("UNFLAGGED")
    if filters.max_size:
        keys += ["SMALLER", str(filters.max_size + 1)]  # SMALLER n: size < n
    return tuple(keys)


# The condition of a folder that is searched on every run (flag filters without CONDSTORE).
SEARCH_ALWAYS = "search-always"


def condition(filters: Filters, state: FolderState, on: dt.date) -> str | None:
    """What must stay the same for a checkpoint taken under these filters to hold.

    None without filters (the checkpoint alone decides). A flag filter on a server
    without CONDSTORE gives a condition that never matches, so the folder is
    searched every time.
    """
    if not active(filters):
        return None
    parts: dict[str, object] = {"filters": filters.model_dump(mode="json")}
    if filters.older_than_days or filters.newer_than_days:
        parts["day"] = on.isoformat()
    if filters.skip_unread or filters.skip_flagged:
        if state.highestmodseq is None:
            return SEARCH_ALWAYS
        parts["highestmodseq"] = state.highestmodseq
    text = json.dumps(parts, sort_keys=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]
