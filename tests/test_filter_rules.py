"""Message filters as search keys and checkpoint conditions: pure, no server."""

from __future__ import annotations

import datetime as dt

from imapsync_decl.config.documents import Filters
from imapsync_decl.imap.facts import FolderState
from imapsync_decl.plan import filters


def test_search_criteria_and_condition() -> None:
    day = dt.date(2026, 11, 29)
    rules = Filters(older_than_days=30, skip_unread=True, skip_flagged=True, max_size=1000)
    assert filters.search_criteria(rules, day) == (
        "BEFORE", "30-Oct-2026", "SEEN", "UNFLAGGED", "SMALLER", "1001",
    )  # fmt: skip
    assert filters.search_criteria(Filters(newer_than_days=7), day) == ("SINCE", "22-Nov-2026")
    assert filters.search_criteria(Filters(), day) == ()
    state = FolderState(7, 10, 9, highestmodseq=55)
    assert filters.condition(Filters(), state, day) is None
    age = Filters(older_than_days=30)
    assert filters.condition(age, state, day) != filters.condition(
        age, state, day + dt.timedelta(1)
    )
    flags = Filters(skip_unread=True)
    assert filters.condition(flags, state, day) == filters.condition(
        flags, state, day + dt.timedelta(1)
    )
    assert filters.condition(flags, state, day) != filters.condition(
        flags, FolderState(7, 10, 9, highestmodseq=56), day
    )
    assert filters.condition(flags, FolderState(7, 10, 9), day) == "search-always"
