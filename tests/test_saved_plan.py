"""Saved plans, concurrent jobs and logs, against the real Dovecot."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import sqlite3
import stat
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from imapsync_decl.cli.main import main
from imapsync_decl.run import service
from imapsync_decl.store import Archive
from imapsync_decl.store.archive import open_for_writing

from bed import Bed, seed
from servers.dovecot import make_message

pytestmark = pytest.mark.dovecot


def saved_plan(bed: Bed) -> Path:
    path = bed.root / "plan.json"
    code, _, _ = bed.run("plan", "--out", str(path))
    assert code == 0
    return path


def folder_of(body: dict[str, Any], path: str, mailbox: int = 0) -> dict[str, Any]:
    found: dict[str, Any]
    (found,) = [
        f for f in body["profiles"][0]["mailboxes"][mailbox]["folders"] if f["path"] == path
    ]
    return found


def server_folders(bed: Bed, user: str) -> set[str]:
    with bed.server.client(user) as client:
        return {name for _flags, _delimiter, name in client.list_folders()}


def test_a_saved_plan_archives_only_what_it_lists(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 3)
    bed.master_profile("p", [user])
    path = saved_plan(bed)
    body = json.loads(path.read_text())
    assert body["format_version"] == 1
    assert body["archive_id"] is None
    assert body["config_digest"].startswith("sha256:")
    planned = folder_of(body, "INBOX")["uids"]
    seed(bed, user, "INBOX", 2, tag="later")  # arrives after the plan

    code, result = bed.apply_json(str(path))
    assert code == 0, result
    assert result["plan_id"] == body["id"]
    assert result["totals"]["archived"] == 3
    assert [p[3] for p in bed.placements()] == planned
    # The folder was archived in part: no checkpoint, so the next plan searches it again.
    code, now = bed.plan_json()
    assert (folder_of(now, "INBOX")["action"], folder_of(now, "INBOX")["messages"]) == (
        "archive",
        2,
    )

    code, _, err = bed.run("apply", str(path))
    assert code == 11
    assert "run `plan` again" in err
    assert len(bed.placements()) == 3

    code, result = bed.apply_json()
    assert result["totals"]["archived"] == 2
    assert len(bed.placements()) == 5


def test_a_folder_recreated_after_the_plan_is_left_out_with_exit_11(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 2)
    seed(bed, user, "Projekt", 2)
    bed.master_profile("p", [user])
    path = saved_plan(bed)
    bed.server.delete_folder(user, "Projekt")
    bed.server.create_folder(user, "Projekt")
    bed.server.append(user, "Projekt", make_message(subject="other", body="other\n"))
    bed.server.append(user, "Projekt", make_message(subject="other2", body="other2\n"))

    code, result = bed.apply_json(str(path))
    assert code == 11
    folders = {f["path"]: f for m in result["mailboxes"] for f in m["folders"]}
    assert "UIDVALIDITY" in folders["Projekt"]["error"]
    assert folders["INBOX"]["archived"] == 2
    assert {p[1] for p in bed.placements()} == {"INBOX"}
    # A fresh apply archives the recreated folder as it is now.
    code, result = bed.apply_json()
    assert code == 0
    assert sorted(p[1] for p in bed.placements()) == ["INBOX", "INBOX", "Projekt", "Projekt"]


def test_stale_plans_are_refused_before_anything_is_archived(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 1)
    bed.master_profile("p", [user])
    assert bed.run("apply")[0] == 0
    seed(bed, user, "INBOX", 1, tag="second")
    path = saved_plan(bed)

    # The configuration changed.
    profile = bed.config_dir / "p.yaml"
    original = profile.read_text()
    profile.write_text(original + "max_concurrent_jobs: 2\n")
    code, _, err = bed.run("apply", str(path))
    assert code == 11
    assert "configuration changed" in err
    profile.write_text(original)

    # Another apply ran since (or a crash interrupted one): after a crash, apply resumes.
    assert bed.run("apply")[0] == 0
    code, _, err = bed.run("apply", str(path))
    assert code == 11
    assert "archive changed since the plan" in err

    # Another format.
    body = json.loads(saved_plan(bed).read_text())
    body["format_version"] = 99
    path.write_text(json.dumps(body))
    code, _, err = bed.run("apply", str(path))
    assert code == 11
    assert "format_version 99" in err

    path.write_text("not json")
    assert bed.run("apply", str(path))[0] == 11
    assert bed.run("apply", str(bed.root / "missing.json"))[0] == 10
    assert bed.run("apply", str(path), "--profile", "p")[0] == 10
    assert len(bed.placements()) == 2


def test_an_apply_that_runs_between_the_check_and_the_lock_makes_the_plan_stale(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The saved plan is checked before the lock is taken and again under it: another
    apply that ran in between (and took the lock first) makes the plan stale."""
    user = bed.new_user()
    seed(bed, user, "INBOX", 1)
    bed.master_profile("p", [user])
    assert bed.run("apply")[0] == 0
    seed(bed, user, "INBOX", 2, tag="second")
    path = saved_plan(bed)
    real_open = open_for_writing
    raced: list[int] = []

    def another_apply_first(archive: Path, holder: str) -> AbstractContextManager[Archive]:
        if not raced:  # the outer apply only, not the one run here
            raced.append(-1)
            raced[0] = main(["apply", "--config-dir", str(bed.config_dir)])
        return real_open(archive, holder)

    monkeypatch.setattr(service, "open_for_writing", another_apply_first)
    code, _, err = bed.run("apply", str(path))
    assert raced == [0]
    assert code == 11, err
    assert "archive changed since the plan" in err
    assert len(bed.placements()) == 3


def test_four_jobs_give_the_same_archive_as_one(bed: Bed, tmp_path: Path) -> None:
    users = [bed.new_user() for _ in range(5)]
    for user in users:
        seed(bed, user, "INBOX", 6, tag=user)
        seed(bed, user, "Projekte/Übersicht", 3, tag=user)
    archives = {}
    for jobs in (1, 4):
        bed.config_dir.joinpath(f"archive-{jobs}.yaml").write_text(
            f"kind: Archive\npath: {tmp_path / f'archive-{jobs}'}\n"
        )
        for other in bed.config_dir.glob("archive-*.yaml"):
            if other.name != f"archive-{jobs}.yaml":
                other.unlink()
        bed.master_profile("p", users, folders=f"max_concurrent_jobs: {jobs}\n")
        code, result = bed.apply_json()
        assert code == 0
        assert result["totals"]["archived"] == 45
        archives[jobs] = tmp_path / f"archive-{jobs}"
    contents = {}
    for jobs, archive in archives.items():
        with sqlite3.connect(archive / "index.sqlite") as db:
            contents[jobs] = sorted(
                db.execute(
                    "SELECT u.name, f.path, p.uid, p.sha256, p.flags FROM placements p "
                    "JOIN folders f ON f.id = p.folder_id JOIN mailboxes m ON m.id = f.mailbox_id "
                    "JOIN users u ON u.id = m.user_id"
                ).fetchall()
            )
        blobs = sorted(p.name for p in (archive / "blobs").rglob("*") if p.is_file())
        contents[jobs].append(("blobs", *blobs))
    assert contents[1] == contents[4]
    assert len(contents[4]) == 46


def test_json_log_lines_carry_the_context(bed: Bed, tmp_path: Path) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 2)
    bed.master_profile("p", [user])
    code, _, err = bed.run("--log-format", "json", "apply")
    assert code == 0
    events = [json.loads(line) for line in err.splitlines()]
    assert events, "no log lines"
    for event in events:
        assert {"timestamp", "level", "event"} <= event.keys()
    archived = [e for e in events if e["event"] == "folder_archived"]
    assert archived
    for event in archived:
        assert {"run_id", "profile", "mailbox", "folder", "uidvalidity"} <= event.keys()
        assert event["profile"] == "p"
        assert event["mailbox"] == user

    log_file = tmp_path / "apply.log"
    code, _, err = bed.run("--log-file", str(log_file), "apply")
    assert code == 0
    assert err == ""
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any(e["event"] == "mailbox_archived" for e in lines)
    assert bed.server.master_password not in log_file.read_text()


def test_progress_shows_mailboxes_and_totals(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 4)
    bed.master_profile("p", [user])
    code, _, err = bed.run("apply", "--progress")
    assert code == 0
    assert "all mailboxes" in err
    assert "4/4 messages" in err


def test_apply_fetches_at_most_a_batch_of_bytes_at_a_time(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 20, size=30_000)
    bed.master_profile("p", [user])
    code, _, err = bed.run("--log-format", "json", "apply", "--batch-bytes", "100000")
    assert code == 0
    (fetched,) = [e for e in map(json.loads, err.splitlines()) if e["event"] == "mailbox_fetched"]
    assert fetched["messages"] == 20
    assert fetched["bytes"] >= 20 * 30_000
    assert fetched["largest_fetch_bytes"] <= 100_000
    assert fetched["fetch_commands"] >= 6


def test_plan_files_are_written_0600(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 1)
    bed.master_profile("p", [user])
    path = bed.root / "plan.json"
    path.write_text("{}")
    path.chmod(0o644)
    previous = os.umask(0)
    try:
        assert bed.run("plan", "--out", str(path))[0] == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["format_version"] == 1


def test_an_untampered_plan_applied_whole_checkpoints_its_folders(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 3)
    bed.master_profile("p", [user])
    path = saved_plan(bed)
    code, result = bed.apply_json(str(path))
    assert code == 0, result
    assert result["totals"]["archived"] == 3
    code, now = bed.plan_json()
    assert folder_of(now, "INBOX")["note"] == "up to date"


def test_a_plan_with_imap_commands_in_a_wire_name_is_refused_whole(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 2)
    seed(bed, user, "Sent", 1)
    bed.master_profile("p", [user])
    path = saved_plan(bed)
    body = json.loads(path.read_text())
    folder_of(body, "INBOX")["wire_name"] = "INBOX\r\nX1 DELETE Sent\r\nX2 NOOP"
    path.write_text(json.dumps(body))

    code, out, err = bed.run("apply", str(path))
    assert code == 11, out + err
    assert "profiles[0].mailboxes[0].folders[0].wire_name" in err
    assert "run `plan` again" in err
    assert "\r" not in err  # the file's value is shown escaped
    # Dovecot creates Sent again at the next login (auto = create): its message tells.
    assert "Sent" in server_folders(bed, user)
    assert len(bed.server_messages(user, "Sent")) == 1
    assert len(bed.server_messages(user, "INBOX")) == 2
    # Refused before anything was applied: no run, nothing archived.
    if (bed.archive / "index.sqlite").exists():
        assert bed.placements() == []
        with sqlite3.connect(bed.archive / "index.sqlite") as db:
            assert db.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    assert not [p for p in bed.archive.glob("blobs/**/*") if p.is_file()]


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    """Set a field given as dotted path with list indexes: "mailboxes.0.archive_user"
    within profiles[0]."""

    def mutate(body: dict[str, Any]) -> None:
        target: Any = body["profiles"][0]
        *parents, last = path.split(".")
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


def _inbox(change: Callable[[dict[str, Any]], None]) -> Mutation:
    def mutate(body: dict[str, Any]) -> None:
        change(folder_of(body, "INBOX"))

    return mutate


def _add_uid(uid: Any, field: str = "uids") -> Mutation:
    def change(folder: dict[str, Any]) -> None:
        folder[field].append(uid)
        folder["messages"] = len(folder["uids"])

    return _inbox(change)


def _add_mailbox(body: dict[str, Any]) -> None:
    mailboxes = body["profiles"][0]["mailboxes"]
    intruder = copy.deepcopy(mailboxes[0])
    intruder["login"] = intruder["archive_user"] = "intruder"
    mailboxes.append(intruder)


def _add_folder(body: dict[str, Any]) -> None:
    folders = body["profiles"][0]["mailboxes"][0]["folders"]
    trash = copy.deepcopy(folder_of(body, "Projekt"))
    trash["path"] = trash["wire_name"] = "Trash"
    folders.append(trash)


def _to_rescan(folder: dict[str, Any]) -> None:
    folder["action"] = "rescan"
    folder["previous_uidvalidity"] = 1


TAMPERED: list[tuple[str, Mutation, str]] = [
    ("archive user", _set("mailboxes.0.archive_user", "mallory"), "mailboxes[0].archive_user"),
    ("archive folder", _set("mailboxes.0.archive_folder", "x@evil"), "archive_folder"),
    ("mailbox e-mail", _set("mailboxes.0.email", "x@evil"), "mailboxes[0].email"),
    ("mailbox source", _set("mailboxes.0.source", "csv"), "mailboxes[0].source"),
    ("mailbox login", _set("mailboxes.0.login", "someone"), "is not a mailbox of profile"),
    ("mailbox profile", _set("mailboxes.0.profile", "q"), "mailboxes[0].profile"),
    ("profile name", _set("name", "q"), "profiles[0].name: 'q' is not a profile"),
    ("profile server", _set("server", "127.0.0.1:1"), "profiles[0].server"),
    ("profile security", _set("security", "plain"), "profiles[0].security"),
    ("added mailbox", _add_mailbox, "'intruder' is not a mailbox"),
    ("added folder", _add_folder, "'Trash' is not a folder that the configuration selects"),
    ("folder path", _inbox(lambda f: f.update(path="Elsewhere")), "'Elsewhere' is not a"),
    ("action", _inbox(_to_rescan), "folders[0].action"),
    ("UID 0", _add_uid(0), "uids[5]: 0 is not in 1..4294967295"),
    ("UID 2^32", _add_uid(2**32), "is not in 1..4294967295"),
    ("negative UID", _add_uid(-3), "is not in 1..4294967295"),
    ("UID as a string", _add_uid("1"), "uids[5]: '1' is not an integer"),
    ("UID as a float", _add_uid(1.0), "is not an integer"),
    ("UID as a boolean", _add_uid(True), "is not an integer"),
    ("UID listed twice", _add_uid(3), "uids[5]: UID 3 is listed twice"),
    ("UID never on the server", _add_uid(4000), "UID 4000 was never in the folder"),
    ("deletion not configured", _add_uid(1, "delete"), "removes no messages from the server"),
    ("messages", _inbox(lambda f: f.update(messages=99)), "does not match the number of uids"),
]


def test_each_tampered_field_refuses_the_whole_plan(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 2)
    seed(bed, user, "Projekt", 1)
    seed(bed, user, "Trash", 1)
    bed.master_profile("p", [user])
    assert bed.run("apply")[0] == 0
    seed(bed, user, "INBOX", 5, tag="new")
    seed(bed, user, "Projekt", 1, tag="new")
    path = saved_plan(bed)
    original = json.loads(path.read_text())
    paths = [f["path"] for f in original["profiles"][0]["mailboxes"][0]["folders"]]
    assert paths[0] == "INBOX"
    assert "Projekt" in paths
    assert "Trash" not in paths
    before = bed.placements()
    assert len(before) == 3

    for name, mutate, expected in TAMPERED:
        body = copy.deepcopy(original)
        mutate(body)
        path.write_text(json.dumps(body))
        code, out, err = bed.run("apply", str(path))
        assert code == 11, (name, out, err)
        assert expected in err, (name, err)
        assert "run `plan" in err, (name, err)
        assert bed.placements() == before, name

    # Each refusal left the archive as it was: the untampered plan still applies.
    path.write_text(json.dumps(original))
    code, result = bed.apply_json(str(path))
    assert code == 0, result
    assert result["totals"]["archived"] == 6
    archived = {(p[1], p[3]) for p in bed.placements()} - {(p[1], p[3]) for p in before}
    assert archived == {
        (f["path"], uid)
        for f in original["profiles"][0]["mailboxes"][0]["folders"]
        for uid in f["uids"]
    }


OLD = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=100)


def test_a_plan_cannot_add_uids_to_archive_or_delete(bed: Bed) -> None:
    user = bed.new_user()
    uids = {
        "read_old": bed.server.append(
            user, "INBOX", make_message(subject="r", body="r\n"), ["\\Seen"], OLD
        ),
        "unread_old": bed.server.append(
            user, "INBOX", make_message(subject="u", body="u\n"), internal_date=OLD
        ),
        "read_young": bed.server.append(
            user, "INBOX", make_message(subject="y", body="y\n"), ["\\Seen"]
        ),
    }
    bed.master_profile(
        "p",
        [user],
        folders="filters: {skip_unread: true}\n"
        "delete: {mode: after_archive, older_than_days: 30}\n",
    )
    path = saved_plan(bed)
    body = json.loads(path.read_text())
    inbox = folder_of(body, "INBOX")
    assert inbox["uids"] == [uids["read_old"], uids["read_young"]]
    assert inbox["delete"] == [uids["read_old"]]
    # The filters leave the unread message out and the rules keep the young one: a plan
    # that lists them anyway changes nothing of that.
    inbox["uids"].insert(1, uids["unread_old"])
    inbox["messages"] = 3
    inbox["delete"] += [uids["unread_old"], uids["read_young"]]
    path.write_text(json.dumps(body))

    code, result = bed.apply_json(str(path))
    assert code == 0, result
    assert (result["totals"]["archived"], result["totals"]["deleted"]) == (2, 1)
    assert {p[3] for p in bed.placements()} == {uids["read_old"], uids["read_young"]}
    assert set(bed.server_messages(user, "INBOX")) == {uids["unread_old"], uids["read_young"]}


def test_a_saved_rescan_plan_re_points_what_is_archived(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "Projekt", 2)
    bed.master_profile("p", [user])
    assert bed.run("apply")[0] == 0
    bodies = list(bed.server_messages(user, "Projekt").values())
    bed.server.delete_folder(user, "Projekt")
    bed.server.create_folder(user, "Projekt")
    for body in bodies:
        bed.server.append(user, "Projekt", body)
    path = saved_plan(bed)
    planned = folder_of(json.loads(path.read_text()), "Projekt")
    assert planned["action"] == "rescan"

    code, result = bed.apply_json(str(path))
    assert code == 0, result
    assert (result["totals"]["archived"], result["totals"]["already_present"]) == (0, 2)
    assert {p[2] for p in bed.placements() if p[1] == "Projekt"} == {planned["uidvalidity"]}
    assert bed.blob_count() == 2
