"""plan and apply against the real Dovecot: exactly once, byte-exact, failure isolation."""

from __future__ import annotations

import pytest

from imapsync_decl.store import ArchiveLock

from bed import Bed, seed, sha
from servers.dovecot import make_message

pytestmark = pytest.mark.dovecot


def test_master_and_csv_batches_archive_exactly_once(bed: Bed) -> None:
    alice, bob, carol = bed.new_user("a"), bed.new_user("b"), bed.new_user("c")
    for user in (alice, bob, carol):
        seed(bed, user, "INBOX", 3, tag=user)
        seed(bed, user, "Projekte/Übersicht", 2, tag=user)
    bed.master_profile("staff", [alice, bob])
    bed.csv_profile("contractors", [(carol, bed.users[carol])], security="tls")

    code, plan = bed.plan_json("--detailed-exitcode")
    assert code == 2
    assert plan["format_version"] == 1
    assert plan["totals"]["messages"] == 15
    assert not (bed.archive / "index.sqlite").exists(), "plan must not create the archive"

    code, result = bed.apply_json()
    assert code == 0, result
    assert result["totals"]["archived"] == 15
    placements = bed.placements()
    assert len(placements) == 15
    assert {p[0] for p in placements} == {alice, bob, carol}
    assert {p[1] for p in placements} == {"INBOX", "Projekte/Übersicht"}

    # Every archived blob is byte-for-byte what the server holds.
    for user in (alice, bob, carol):
        for folder in ("INBOX", "Projekte/Übersicht"):
            on_server = {sha(b) for b in bed.server_messages(user, folder).values()}
            archived = {p[4] for p in placements if p[0] == user and p[1] == folder}
            assert archived == on_server

    code, result = bed.apply_json()
    assert code == 0
    assert result["totals"]["archived"] == 0
    assert len(bed.placements()) == 15
    code, plan = bed.plan_json("--detailed-exitcode")
    assert code == 0
    assert plan["totals"]["messages"] == 0
    assert {f["note"] for p in plan["profiles"] for m in p["mailboxes"] for f in m["folders"]} == {
        "up to date"
    }

    seed(bed, alice, "INBOX", 1, tag="late")
    code, result = bed.apply_json()
    assert result["totals"]["archived"] == 1
    assert len(bed.placements()) == 16


def test_identical_messages_are_one_blob_and_export_is_byte_exact(bed: Bed) -> None:
    user = bed.new_user()
    same = make_message(subject="same", body="identical\n", message_id="<same@example.test>")
    bed.server.append(user, "INBOX", same)
    bed.server.create_folder(user, "Kopie")
    bed.server.append(user, "Kopie", same)
    big = make_message(subject="big", size=6 * 1024 * 1024)
    bed.server.append(user, "INBOX", big)
    bed.master_profile("p", [user])
    code, result = bed.apply_json("--batch-bytes", "1048576")
    assert code == 0
    placements = bed.placements()
    assert len(placements) == 3
    assert len({p[4] for p in placements}) == 2
    assert bed.blob_count() == 2
    assert result["totals"]["already_present"] == 1

    code, _, _ = bed.run("archive", "export", str(bed.root / "out"))
    assert code == 0
    exported = {
        p.relative_to(bed.root / "out").as_posix(): p.read_bytes()
        for p in (bed.root / "out").rglob("*.eml")
    }
    inbox = bed.server_messages(user, "INBOX")
    assert len(exported) == 3
    for path, data in exported.items():
        assert path.startswith(f"{user}/{user}@example.test/")
        if "/INBOX/" in path:
            uid = int(path.rsplit("-", 1)[1].removesuffix(".eml"))
            assert data == inbox[uid]
    assert big in exported.values()
    assert sum(1 for v in exported.values() if v == same) == 2


def test_folder_selection_and_exclusions_in_the_plan(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 1)
    seed(bed, user, "Trash", 1)
    seed(bed, user, "Projekte/Alt", 1)
    seed(bed, user, "Projekte/Neu", 1)
    bed.master_profile("p", [user], folders="folders:\n  exclude: ['**/Alt']\n")
    code, plan = bed.plan_json()
    assert code == 0
    (mailbox,) = plan["profiles"][0]["mailboxes"]
    excluded = {e["path"]: e["reason"] for e in mailbox["excluded"]}
    assert excluded["Trash"] == "default exclusion: \\Trash"
    assert excluded["Projekte/Alt"] == "excluded by '**/Alt'"
    archived = {f["path"] for f in mailbox["folders"] if f["action"] == "archive"}
    assert archived == {"INBOX", "Projekte/Neu"}
    code, _result = bed.apply_json()
    assert code == 0
    assert {p[1] for p in bed.placements()} == {"INBOX", "Projekte/Neu"}


def test_uidvalidity_change_doubles_nothing_and_loses_nothing(bed: Bed) -> None:
    user = bed.new_user()
    bodies = [make_message(subject=f"r{i}", body=f"recreated {i}\n") for i in range(4)]
    bed.server.create_folder(user, "Projekt")
    for body in bodies[:3]:
        bed.server.append(user, "Projekt", body)
    bed.master_profile("p", [user])
    assert bed.apply_json()[0] == 0
    before = bed.placements()
    assert len(before) == 3
    old_uidvalidity = before[0][2]

    # Recreate the folder: a new UIDVALIDITY, the old messages under shifted UIDs, one new one.
    bed.server.delete_folder(user, "Projekt")
    bed.server.create_folder(user, "Projekt")
    bed.server.append(user, "Projekt", make_message(subject="filler", body="filler\n"))
    for body in [bodies[1], bodies[0], bodies[2], bodies[3]]:
        bed.server.append(user, "Projekt", body)

    code, plan = bed.plan_json()
    folders = plan["profiles"][0]["mailboxes"][0]["folders"]
    (folder,) = [f for f in folders if f["path"] == "Projekt"]
    assert folder["action"] == "rescan"
    assert folder["previous_uidvalidity"] == old_uidvalidity
    code, result = bed.apply_json()
    assert code == 0, result
    after = bed.placements()
    assert len(after) == 5  # three re-pointed, the filler and the new one
    assert {p[2] for p in after} == {folder["uidvalidity"]}
    on_server = bed.server_messages(user, "Projekt")
    assert sorted(p[4] for p in after) == sorted(sha(b) for b in on_server.values())
    assert bed.blob_count() == 5
    assert result["totals"]["already_present"] == 3
    assert bed.apply_json()[1]["totals"]["archived"] == 0


def test_a_failing_mailbox_does_not_stop_the_others(bed: Bed) -> None:
    good, bad = bed.new_user(), bed.new_user()
    seed(bed, good, "INBOX", 2)
    seed(bed, bad, "INBOX", 2)
    bed.csv_profile("c", [(bad, "wrong-password-123"), (good, bed.users[good])])
    code, plan = bed.plan_json()
    assert code == 3
    errors = {m["login"]: m["error"] for m in plan["profiles"][0]["mailboxes"]}
    assert errors[good] is None
    assert bad in errors[bad]
    assert "wrong-password-123" not in errors[bad]
    code, result = bed.apply_json()
    assert code == 3
    assert {p[0] for p in bed.placements()} == {good}
    failed = [m for m in result["mailboxes"] if m["error"]]
    assert [m["login"] for m in failed] == [bad]
    code, out, err = bed.run("apply")
    assert code == 3
    assert "wrong-password-123" not in out + err


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_accept_all_certificates_connects_and_warns(bed: Bed, security: str) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 1)
    bed.master_profile("p", [user], security=security, accept_all_certificates=True)
    code, out, _ = bed.run("plan")
    assert code == 0
    assert "warning: server.accept_all_certificates is true" in out
    code, result = bed.apply_json()
    assert code == 0
    assert any("accept_all_certificates" in w for w in result["warnings"])
    assert len(bed.placements()) == 1


def test_untrusted_certificate_is_an_error_in_the_plan(bed: Bed) -> None:
    user = bed.new_user()
    bed.master_profile("p", [user])
    profile = bed.config_dir / "p.yaml"
    profile.write_text(profile.read_text().replace(f"  ca_file: {bed.server.ca_file}\n", ""))
    code, plan = bed.plan_json()
    assert code == 3
    error = plan["profiles"][0]["mailboxes"][0]["error"]
    assert "certificate" in error


def test_second_concurrent_apply_exits_13(bed: Bed) -> None:
    user = bed.new_user()
    bed.master_profile("p", [user])
    with ArchiveLock(bed.archive, "imapsync-decl apply (another one)"):
        code, _out, err = bed.run("apply")
    assert code == 13
    assert "imapsync-decl apply (another one)" in err
    assert bed.run("apply")[0] == 0


def test_flipped_byte_makes_verify_exit_12(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 2)
    bed.master_profile("p", [user])
    assert bed.run("apply")[0] == 0
    assert bed.run("archive", "verify")[0] == 0
    victim = sorted(p for p in (bed.archive / "blobs").rglob("*") if p.is_file())[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    code, _out, err = bed.run("archive", "verify")
    assert code == 12
    assert f"damaged blob: {victim.name}" in err


def test_an_archive_in_the_old_blob_layout_stays_in_it(bed: Bed) -> None:
    """Archives made with ``blobs/ab/cd/<sha256>`` are read and written in that layout."""
    user = bed.new_user()
    seed(bed, user, "INBOX", 4)
    bed.master_profile("p", [user])
    assert bed.apply_json()[0] == 0
    blobs = bed.archive / "blobs"
    for path in [p for p in blobs.rglob("*") if p.is_file()]:
        nested = blobs / path.name[:2] / path.name[2:4]
        nested.mkdir(exist_ok=True)
        path.rename(nested / path.name)
    seed(bed, user, "INBOX", 3, tag="later")
    code, result = bed.apply_json()
    assert code == 0, result
    assert result["totals"]["archived"] == 3
    files = [p for p in blobs.rglob("*") if p.is_file()]
    assert len(files) == 7
    assert all(p.parent.parent.parent == blobs for p in files)  # all in ab/cd
    code, out, err = bed.run("archive", "verify")
    assert code == 0, out + err
    code, _, err = bed.run("archive", "export", str(bed.root / "out"))
    assert code == 0, err
    assert len(list((bed.root / "out").rglob("*.eml"))) == 7
