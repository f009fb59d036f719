"""`archive restore` against the real Dovecot: bytes, flags and dates come back, never twice."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from typing import Any

import pytest

from bed import Bed, sha
from servers.dovecot import make_message

pytestmark = pytest.mark.dovecot

State = list[tuple[str, frozenset[str], dt.datetime]]


def server_state(bed: Bed, user: str, folder: str) -> State:
    """SHA-256, flags and internal date of every message of a folder, sorted."""
    with bed.server.client(user) as client:
        client.select_folder(folder, readonly=True)
        uids = client.search("ALL")
        fetched = client.fetch(uids, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]) if uids else {}
    return sorted(
        (
            sha(item[b"BODY[]"]),
            frozenset(f.decode() for f in item[b"FLAGS"] if f != b"\\Recent"),
            item[b"INTERNALDATE"],
        )
        for item in fetched.values()
    )


def folder_exists(bed: Bed, user: str, folder: str) -> bool:
    with bed.server.client(user) as client:
        return bool(client.folder_exists(folder))


def restore(bed: Bed, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = bed.run("archive", "restore", "--format", "json", *args)
    assert out, err
    return code, json.loads(out)


def placement_ids(bed: Bed, user: str, folder: str) -> list[int]:
    with sqlite3.connect(bed.archive / "index.sqlite") as db:
        rows = db.execute(
            "SELECT p.id FROM placements p JOIN folders f ON f.id = p.folder_id"
            " JOIN mailboxes m ON m.id = f.mailbox_id JOIN users u ON u.id = m.user_id"
            " WHERE u.name = ? AND f.path = ? ORDER BY p.uid",
            (user, folder),
        ).fetchall()
    return [int(r[0]) for r in rows]


def archived_user(bed: Bed, folder: str = "Projekte") -> str:
    """A user with three messages in ``folder`` (flags and internal dates of their own) and
    one in INBOX, archived by profile staff."""
    user = bed.new_user()
    bed.master_profile("staff", [user])
    bed.server.create_folder(user, folder)
    cet = dt.timezone(dt.timedelta(hours=1))
    for n, (flags, when) in enumerate(
        [
            ((), dt.datetime(2023, 3, 1, 10, 0, tzinfo=cet)),
            ((b"\\Seen", b"\\Flagged"), dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
            ((b"\\Seen", b"\\Answered", b"$Forwarded"), dt.datetime(2022, 12, 31, 23, 59)),
        ]
    ):
        subject = ["Vertrag unterschrieben", "Urlaubsplanung", "Re: Vertrag"][n]
        bed.server.append(
            user, folder, make_message(subject=subject, body=f"Text {n}\n"), flags, when
        )
    bed.server.append(user, "INBOX", make_message(subject="hello"))
    code, _ = bed.apply_json()
    assert code == 0
    return user


def test_restore_a_deleted_folder_exactly_and_only_once(bed: Bed) -> None:
    user = archived_user(bed)
    before = server_state(bed, user, "Projekte")
    bed.server.delete_folder(user, "Projekte")
    assert not folder_exists(bed, user, "Projekte")

    code, doc = restore(bed, "--user", user, "--folder", "Projekte", "--profile", "staff")
    assert code == 0, doc
    assert doc["totals"] == {"restored": 3, "already_there": 0, "failed": 0, "damaged": 0}
    assert server_state(bed, user, "Projekte") == before  # bytes, flags, internal dates

    code, doc = restore(bed, "--user", user, "--folder", "Projekte", "--profile", "staff")
    assert code == 0
    assert doc["totals"]["restored"] == 0
    assert doc["totals"]["already_there"] == 3
    assert server_state(bed, user, "Projekte") == before

    code, out, _ = bed.run("runs")
    assert code == 0
    assert out.count(" restore ") == 2


def test_restore_into_a_new_to_folder_by_ids(bed: Bed) -> None:
    user = archived_user(bed)
    ids = [str(i) for i in placement_ids(bed, user, "Projekte")[:2]]
    target = "Wiederhergestellt/Übersicht"
    code, doc = restore(bed, *ids, "--profile", "staff", "--to-folder", target)
    assert code == 0, doc
    assert folder_exists(bed, user, target)
    assert doc["folders"][0]["created"] is True
    restored = server_state(bed, user, target)
    originals = server_state(bed, user, "Projekte")
    assert len(restored) == 2
    assert restored == [s for s in originals if s[0] in {r[0] for r in restored}]
    # Already there by SHA-256 or Message-ID and size: a second restore adds nothing.
    code, doc = restore(bed, *ids, "--profile", "staff", "--to-folder", target)
    assert code == 0
    assert doc["totals"]["already_there"] == 2
    assert len(server_state(bed, user, target)) == 2


def test_restore_by_query_restores_exactly_the_hits(bed: Bed) -> None:
    user = archived_user(bed)  # apply indexed what it archived
    with sqlite3.connect(bed.archive / "index.sqlite") as db:
        rows = db.execute("SELECT sha256, subject FROM messages").fetchall()
    wanted = {s for s, subject in rows if "Vertrag" in str(subject)}
    assert len(wanted) == 2
    code, doc = restore(
        bed, "--user", user, "--query", "vertrag", "--profile", "staff", "--to-folder", "Hits"
    )
    assert code == 0, doc
    assert {s[0] for s in server_state(bed, user, "Hits")} == wanted
    assert len(server_state(bed, user, "Hits")) == 2

    for name in ("search.sqlite", "search.sqlite-wal", "search.sqlite-shm"):
        (bed.archive / name).unlink(missing_ok=True)
    code, _, err = bed.run(
        "archive", "restore", "--user", user, "--query", "vertrag", "--profile", "staff"
    )
    assert code == 10
    assert "run `imapsync-decl archive rebuild-search`" in err


def test_dry_run_changes_nothing(bed: Bed) -> None:
    user = archived_user(bed)
    bed.server.delete_folder(user, "Projekte")
    inbox = server_state(bed, user, "INBOX")
    code, out, _ = bed.run("archive", "restore", "--user", user, "--profile", "staff", "--dry-run")
    assert code == 0
    assert "would restore 3, already there 1" in out
    assert not folder_exists(bed, user, "Projekte")
    assert server_state(bed, user, "INBOX") == inbox


def test_an_id_of_a_user_the_profile_does_not_reach_is_exit_3(bed: Bed) -> None:
    alice = archived_user(bed)
    bob = bed.new_user()
    bed.master_profile("staff", [alice, bob])
    bed.server.append(bob, "INBOX", make_message(subject="bob's"))
    assert bed.apply_json()[0] == 0
    bed.master_profile("staff", [alice])  # staff reaches alice only now
    bed.server.delete_folder(alice, "Projekte")
    ids = [*placement_ids(bed, alice, "Projekte")[:1], *placement_ids(bed, bob, "INBOX")]
    code, doc = restore(bed, *map(str, ids), "--profile", "staff")
    assert code == 3
    assert any(bob in e and "not reached by profile 'staff'" in e for e in doc["errors"])
    assert doc["totals"]["restored"] == 1
    assert doc["totals"]["failed"] == 1
    assert len(server_state(bed, alice, "Projekte")) == 1


def test_a_hostile_to_folder_is_refused(bed: Bed) -> None:
    user = archived_user(bed)
    ids = [str(i) for i in placement_ids(bed, user, "Projekte")]
    with bed.server.client(user) as client:
        before = sorted(str(f[2]) for f in client.list_folders())
    code, _, err = bed.run(
        "archive", "restore", *ids, "--profile", "staff", "--to-folder", "X\r\nA1 DELETE INBOX"
    )
    assert code == 10
    assert "line break or NUL" in err
    with bed.server.client(user) as client:
        assert sorted(str(f[2]) for f in client.list_folders()) == before
