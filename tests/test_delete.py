"""Verified deletion against the real Dovecot: only what is verifiably archived leaves the server."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from imapsync_decl.imap.session import ImapSession
from imapsync_decl.imap.writer import FolderWriter
from imapsync_decl.run.executor import Executor
from imapsync_decl.run.results import FolderResult

from bed import Bed
from servers.dovecot import DovecotServer, make_message

pytestmark = pytest.mark.dovecot

OLD = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=100)


def server_flags(bed: Bed, user: str) -> dict[int, set[str]]:
    with bed.server.client(user) as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")
        fetched = client.fetch(uids, ["FLAGS"]) if uids else {}
    return {uid: {f.decode() for f in d[b"FLAGS"]} for uid, d in fetched.items()}


def inbox(plan: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any]
    (found,) = [
        f
        for p in plan["profiles"]
        for m in p["mailboxes"]
        for f in m["folders"]
        if f["path"] == "INBOX"
    ]
    return found


@pytest.fixture
def mailbox(bed: Bed) -> tuple[str, dict[str, int]]:
    user = bed.new_user()
    uids = {
        "plain": bed.server.append(
            user, "INBOX", make_message(subject="plain", body="p\n"), internal_date=OLD
        ),
        "flagged": bed.server.append(
            user,
            "INBOX",
            make_message(subject="flagged", body="f\n"),
            flags=["\\Flagged"],
            internal_date=OLD,
        ),
        "owner_deleted": bed.server.append(
            user,
            "INBOX",
            make_message(subject="owner", body="o\n"),
            flags=["\\Deleted"],
            internal_date=OLD,
        ),
        "young": bed.server.append(user, "INBOX", make_message(subject="young", body="y\n")),
        "plain2": bed.server.append(
            user, "INBOX", make_message(subject="plain2", body="q\n"), internal_date=OLD
        ),
    }
    return user, uids


DELETE = "delete: {mode: after_archive, older_than_days: 30}\n"


def test_deletes_exactly_what_is_archived_old_unflagged_and_not_owner_deleted(
    bed: Bed, mailbox: tuple[str, dict[str, int]]
) -> None:
    user, uids = mailbox
    bed.master_profile("p", [user], folders=DELETE)
    code, plan = bed.plan_json()
    assert code == 0
    assert inbox(plan)["delete"] == sorted([uids["plain"], uids["plain2"]])
    assert plan["totals"]["deletions"] == 2
    assert set(server_flags(bed, user)) == set(uids.values()), "plan changed the server"

    code, result = bed.apply_json()
    assert code == 0, result
    assert result["totals"]["archived"] == 5
    assert result["totals"]["deleted"] == 2
    left = server_flags(bed, user)
    assert set(left) == {uids["flagged"], uids["owner_deleted"], uids["young"]}
    assert "\\Deleted" in left[uids["owner_deleted"]]  # the owner's mark is left alone
    assert "\\Deleted" not in left[uids["flagged"]]
    assert len(bed.placements()) == 5  # the deleted messages stay in the archive
    assert bed.run("archive", "verify")[0] == 0
    code, result = bed.apply_json()
    assert (result["totals"]["archived"], result["totals"]["deleted"]) == (0, 0)


def test_a_damaged_blob_is_not_deleted_from_the_server(
    bed: Bed, mailbox: tuple[str, dict[str, int]]
) -> None:
    user, uids = mailbox
    bed.master_profile("p", [user])
    assert bed.run("apply")[0] == 0
    victim = next(p for p in bed.placements() if p[3] == uids["plain"])[4]
    blob = next(p for p in (bed.archive / "blobs").rglob(victim))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))

    profile = bed.config_dir / "p.yaml"
    profile.write_text(profile.read_text() + DELETE)
    code, result = bed.apply_json()
    assert code == 3
    (folder,) = [f for m in result["mailboxes"] for f in m["folders"] if f["path"] == "INBOX"]
    assert "failed verification" in folder["error"]
    assert folder["deleted"] == 1
    assert set(server_flags(bed, user)) == set(uids.values()) - {uids["plain2"]}


def test_a_crash_between_archiving_and_deleting_loses_nothing(
    bed: Bed, mailbox: tuple[str, dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, uids = mailbox
    bed.master_profile("p", [user], folders=DELETE)

    def crash(self: FolderWriter, *args: Any, **kwargs: Any) -> set[int]:
        raise OSError("the machine went away")

    monkeypatch.setattr(FolderWriter, "mark_deleted", crash)
    code, result = bed.apply_json()
    assert code == 3
    assert result["totals"]["archived"] == 5
    assert set(server_flags(bed, user)) == set(uids.values())
    monkeypatch.undo()
    monkeypatch.setenv("BED_MASTER_PASSWORD", bed.server.master_password)

    code, result = bed.apply_json()
    assert code == 0, result
    assert (result["totals"]["archived"], result["totals"]["deleted"]) == (0, 2)
    assert len(bed.placements()) == 5
    assert bed.run("archive", "verify")[0] == 0


def test_a_message_flagged_after_the_plan_is_kept(
    bed: Bed, mailbox: tuple[str, dict[str, int]]
) -> None:
    user, uids = mailbox
    bed.master_profile("p", [user], folders=DELETE)
    path = bed.root / "plan.json"
    assert bed.run("plan", "--out", str(path))[0] == 0
    assert (
        uids["plain"]
        in json.loads(path.read_text())["profiles"][0]["mailboxes"][0]["folders"][0]["delete"]
    )
    with bed.server.client(user) as client:
        client.select_folder("INBOX")
        client.add_flags([uids["plain"]], ["\\Flagged"])
    code, result = bed.apply_json(str(path))
    assert code == 0, result
    assert result["totals"]["deleted"] == 1
    assert uids["plain"] in server_flags(bed, user)
    assert uids["plain2"] not in server_flags(bed, user)


NO_UIDPLUS = (
    "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT UNSELECT CHILDREN "
    "NAMESPACE LIST-EXTENDED I18NLEVEL=1 CONDSTORE ESEARCH SEARCHRES LITERAL+ SPECIAL-USE\n"
)


def test_a_server_without_uidplus_gets_no_deletion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with DovecotServer(extra_config=NO_UIDPLUS) as server:
        monkeypatch.setenv("BED_MASTER_PASSWORD", server.master_password)
        bed = Bed(server, tmp_path, capsys)
        bed.config_dir.mkdir()
        user = bed.new_user()
        server.append(user, "INBOX", make_message(subject="old", body="o\n"), internal_date=OLD)
        bed.master_profile("p", [user], folders=DELETE)
        code, plan = bed.plan_json()
        assert code == 0
        assert inbox(plan)["delete"] == []
        assert "no UIDPLUS" in inbox(plan)["no_deletion"]
        code, result = bed.apply_json()
        assert code == 0, result
        assert (result["totals"]["archived"], result["totals"]["deleted"]) == (1, 0)
        assert len(server_flags(bed, user)) == 1


def test_the_plan_lists_only_what_apply_deletes_under_filters(
    bed: Bed, mailbox: tuple[str, dict[str, int]]
) -> None:
    user, uids = mailbox
    unread = bed.server.append(
        user, "INBOX", make_message(subject="unread", body="u\n"), internal_date=OLD
    )
    with bed.server.client(user) as client:
        client.select_folder("INBOX")
        client.add_flags(list(uids.values()), ["\\Seen"])
    # The unread message is a deletion candidate (old, unflagged) but is not archived.
    bed.master_profile("p", [user], folders="filters: {skip_unread: true}\n" + DELETE)
    code, plan = bed.plan_json()
    assert code == 0
    assert inbox(plan)["delete"] == sorted([uids["plain"], uids["plain2"]])
    assert plan["totals"]["deletions"] == 2

    code, result = bed.apply_json()
    assert code == 0, result
    assert result["totals"]["deleted"] == 2
    (folder,) = [f for m in result["mailboxes"] for f in m["folders"] if f["path"] == "INBOX"]
    assert folder["kept"] == 0  # nothing planned for deletion was left over
    assert unread in server_flags(bed, user)


def test_a_flag_changed_between_the_search_and_the_store_keeps_the_message(
    bed: Bed, mailbox: tuple[str, dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CONDSTORE: \\Deleted is set with UNCHANGEDSINCE the MODSEQ of the SELECT, so a
    message whose flags changed after the executor asked the server is kept."""
    user, uids = mailbox
    bed.master_profile("p", [user], folders=DELETE)
    compare = Executor._same_on_server

    def owner_reads_meanwhile(
        self: Executor,
        session: ImapSession,
        found: list[int],
        placements: dict[int, str],
        result: FolderResult,
    ) -> list[int]:
        same = compare(self, session, found, placements, result)
        with bed.server.client(user) as client:  # the owner reads it (no \\Flagged)
            client.select_folder("INBOX")
            client.add_flags([uids["plain"]], ["\\Seen"])
        return same

    monkeypatch.setattr(Executor, "_same_on_server", owner_reads_meanwhile)
    code, result = bed.apply_json()
    assert code == 0, result
    (folder,) = [f for m in result["mailboxes"] for f in m["folders"] if f["path"] == "INBOX"]
    assert (folder["deleted"], folder["kept"]) == (1, 1)
    left = server_flags(bed, user)
    assert uids["plain2"] not in left
    assert "\\Deleted" not in left[uids["plain"]]
    assert "\\Seen" in left[uids["plain"]]
