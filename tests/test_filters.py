"""Message filters, evaluated by the real Dovecot, and the checkpoint condition under them."""

from __future__ import annotations

import datetime as dt

import pytest

from imapsync_decl.plan import filters

from bed import Bed
from servers.dovecot import make_message

pytestmark = pytest.mark.dovecot

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def days_ago(n: int) -> dt.datetime:
    return NOW - dt.timedelta(days=n)


def folder(plan: dict, path: str = "INBOX") -> dict:  # type: ignore[type-arg]
    (found,) = [
        f
        for p in plan["profiles"]
        for m in p["mailboxes"]
        for f in m["folders"]
        if f["path"] == path
    ]
    return found  # type: ignore[no-any-return]


def test_an_age_filter_archives_a_message_once_it_qualifies(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = bed.new_user()
    old = make_message(subject="old", body="old\n")
    young = make_message(subject="young", body="young\n")
    bed.server.append(user, "INBOX", old, internal_date=days_ago(100))
    bed.server.append(user, "INBOX", young, internal_date=days_ago(10))
    bed.server.append(user, "INBOX", make_message(subject="today", body="now\n"), internal_date=NOW)
    bed.master_profile("p", [user], folders="filters: {older_than_days: 30}\n")

    code, plan = bed.plan_json()
    inbox = folder(plan)
    assert (inbox["messages"], inbox["filtered_out"]) == (1, 2)
    assert bed.apply_json()[0] == 0
    assert len(bed.placements()) == 1

    code, plan = bed.plan_json()
    assert folder(plan)["note"] == "up to date"  # same day, nothing new: no search

    later = filters.today() + dt.timedelta(days=25)
    monkeypatch.setattr(filters, "today", lambda: later)
    code, plan = bed.plan_json()
    assert code == 0
    assert folder(plan)["messages"] == 1  # the young one is 35 days old now
    _code, result = bed.apply_json()
    assert result["totals"]["archived"] == 1
    assert len(bed.placements()) == 2


def test_flag_filters_follow_changes_through_highestmodseq(bed: Bed) -> None:
    user = bed.new_user()
    bed.server.append(user, "INBOX", make_message(subject="read", body="r\n"), flags=["\\Seen"])
    bed.server.append(
        user, "INBOX", make_message(subject="flagged", body="f\n"), flags=["\\Seen", "\\Flagged"]
    )
    unread_uid = bed.server.append(user, "INBOX", make_message(subject="unread", body="u\n"))
    bed.master_profile("p", [user], folders="filters: {skip_unread: true, skip_flagged: true}\n")
    code, result = bed.apply_json()
    assert code == 0
    assert len(bed.placements()) == 1
    code, plan = bed.plan_json()
    assert folder(plan)["note"] == "up to date"

    # Reading the message changes no UIDNEXT and no count, only its flags (and MODSEQ).
    with bed.server.client(user) as client:
        client.select_folder("INBOX")
        client.add_flags([unread_uid], ["\\Seen"])
    code, plan = bed.plan_json()
    assert folder(plan)["messages"] == 1
    code, result = bed.apply_json()
    assert result["totals"]["archived"] == 1
    assert sorted(p[3] for p in bed.placements()) == [1, unread_uid]


def test_size_and_newer_than_filters(bed: Bed) -> None:
    user = bed.new_user()
    bed.server.append(user, "INBOX", make_message(subject="small", body="s\n"), internal_date=NOW)
    bed.server.append(user, "INBOX", make_message(subject="big", size=50_000), internal_date=NOW)
    bed.server.append(
        user, "INBOX", make_message(subject="ancient", body="a\n"), internal_date=days_ago(400)
    )
    bed.master_profile("p", [user], folders="filters: {max_size: 10000, newer_than_days: 30}\n")
    code, result = bed.apply_json()
    assert code == 0
    assert result["totals"]["archived"] == 1
    (placement,) = bed.placements()
    assert placement[3] == 1
