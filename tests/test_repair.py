"""Damaged and missing blobs: `apply --repair` fetches their messages again, and a blob write
never keeps a damaged file. Against the real Dovecot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from imapsync_decl.store import BlobStore

from bed import Bed, seed, sha
from servers.dovecot import make_message


def _blob(bed: Bed, sha256: str) -> Path:
    return BlobStore(bed.archive).path(sha256)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:7])


def _archived_user(bed: Bed) -> tuple[str, dict[int, bytes], dict[int, bytes]]:
    """A user with four messages in INBOX and one of them again in Kopie, archived."""
    user = bed.new_user()
    seed(bed, user, "INBOX", 4, size=3000)
    inbox = bed.server_messages(user, "INBOX")
    bed.server.create_folder(user, "Kopie")
    bed.server.append(user, "Kopie", inbox[min(inbox)])
    bed.master_profile("p", [user])
    code, result = bed.apply_json()
    assert code == 0, result
    assert result["totals"]["archived"] == 4
    return user, inbox, bed.server_messages(user, "Kopie")


def _verify(bed: Bed) -> tuple[int, str]:
    code, out, err = bed.run("archive", "verify")
    return code, out + err


@pytest.mark.dovecot
def test_apply_repair_refetches_flipped_truncated_and_deleted_blobs(bed: Bed) -> None:
    _, inbox, _ = _archived_user(bed)
    placements = bed.placements()
    uids = sorted(inbox)
    flipped, truncated, deleted = (sha(inbox[uid]) for uid in uids[:3])  # the first is twice
    _flip(_blob(bed, flipped))
    _truncate(_blob(bed, truncated))
    _blob(bed, deleted).unlink()
    # A damaged orphan (no index row names it) cannot be fetched again: it is removed.
    orphan = BlobStore(bed.archive).put(b"Subject: orphan\r\n\r\nleft by a killed run\r\n")
    _flip(_blob(bed, orphan.sha256))
    code, report = _verify(bed)
    assert code == 12
    for name in (flipped, truncated, deleted, orphan.sha256):
        assert name in report
    assert "run `apply --repair`" in report

    # Without --repair the index says everything is archived: nothing is fetched.
    code, result = bed.apply_json()
    assert code == 0
    assert result["totals"]["archived"] == result["totals"]["already_present"] == 0
    assert "repair" not in result
    assert _verify(bed)[0] == 12

    code, result = bed.apply_json("--repair")
    assert code == 0, result
    assert result["repair"] == {
        "repaired": sorted([flipped, truncated, deleted]),
        "unrepaired": [],
        "removed_orphans": [orphan.sha256],
    }
    folders = {f["path"]: f for m in result["mailboxes"] for f in m["folders"]}
    assert folders["INBOX"]["already_present"] == 3  # written again, not new placements
    assert folders["INBOX"]["archived"] == 0
    code, report = _verify(bed)
    assert code == 0, report
    store = BlobStore(bed.archive)
    for uid in uids:
        assert store.get(sha(inbox[uid])) == inbox[uid]
    assert not _blob(bed, orphan.sha256).exists()
    assert bed.placements() == placements, "placements are neither doubled nor moved"

    # Repaired: the next apply --repair has nothing to do.
    code, result = bed.apply_json("--repair")
    assert code == 0
    assert result["repair"] == {"repaired": [], "unrepaired": [], "removed_orphans": []}
    assert result["totals"]["archived"] == result["totals"]["already_present"] == 0


@pytest.mark.dovecot
def test_a_blob_whose_message_is_gone_stays_unrepaired_exit_12(bed: Bed) -> None:
    user, inbox, _ = _archived_user(bed)
    uids = sorted(inbox)
    gone, kept = uids[-1], uids[-2]
    _flip(_blob(bed, sha(inbox[gone])))
    _truncate(_blob(bed, sha(inbox[kept])))
    with bed.server.client(user) as client:
        client.select_folder("INBOX")
        client.delete_messages([gone])
        client.expunge()

    code, out, err = bed.run("apply", "--repair")
    assert code == 12, out + err
    assert f"not repaired: blob {sha(inbox[gone])}" in out
    assert "1 blob(s) repaired, 1 not repaired" in out
    code, report = _verify(bed)
    assert code == 12
    assert sha(inbox[gone]) in report
    assert sha(inbox[kept]) not in report


@pytest.mark.dovecot
def test_repair_does_not_go_with_a_saved_plan(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 1)
    bed.master_profile("p", [user])
    plan_file = bed.root / "plan.json"
    assert bed.run("plan", "--out", str(plan_file))[0] == 0
    code, _, err = bed.run("apply", "--repair", str(plan_file))
    assert code == 10
    assert "--repair does not go with a plan file" in err


@pytest.mark.dovecot
def test_without_the_index_apply_replaces_damaged_blobs(bed: Bed) -> None:
    """Index and journal are gone, the blobs are not: apply fetches everything again, and a blob
    file of the same name that is damaged is written anew instead of being reused."""
    _, inbox, _ = _archived_user(bed)
    uids = sorted(inbox)
    _flip(_blob(bed, sha(inbox[uids[0]])))
    _truncate(_blob(bed, sha(inbox[uids[1]])))
    intact = _blob(bed, sha(inbox[uids[2]]))
    before = intact.stat().st_ino
    # Index and journal both gone (the journal alone would make apply ask for rebuild-index).
    for name in os.listdir(bed.archive):
        if name.startswith("index.sqlite"):
            (bed.archive / name).unlink()
    shutil.rmtree(bed.archive / "journal")

    code, result = bed.apply_json()
    assert code == 0, result
    code, report = _verify(bed)
    assert code == 0, report
    store = BlobStore(bed.archive)
    for uid in uids:
        assert store.get(sha(inbox[uid])) == inbox[uid]
    assert intact.stat().st_ino == before, "an intact blob is kept, not rewritten"


@pytest.mark.dovecot
def test_repair_after_a_uidvalidity_change_rewrites_the_repointed_blob(bed: Bed) -> None:
    """The folder was recreated (new UIDVALIDITY): its messages are re-pointed, not stored
    again, and a damaged blob among them is written anew all the same."""
    user = bed.new_user()
    bodies = [make_message(subject=f"r{i}", body=f"recreated {i}\n") for i in range(3)]
    bed.server.create_folder(user, "Projekt")
    for body in bodies:
        bed.server.append(user, "Projekt", body)
    bed.master_profile("p", [user])
    assert bed.apply_json()[0] == 0
    _flip(_blob(bed, sha(bodies[1])))
    bed.server.delete_folder(user, "Projekt")
    bed.server.create_folder(user, "Projekt")
    for body in reversed(bodies):
        bed.server.append(user, "Projekt", body)

    code, result = bed.apply_json("--repair")
    assert code == 0, result
    assert result["repair"]["repaired"] == [sha(bodies[1])]
    (folder,) = [f for m in result["mailboxes"] for f in m["folders"] if f["path"] == "Projekt"]
    assert folder["action"] == "rescan"
    assert _verify(bed)[0] == 0
    assert len(bed.placements()) == 3
