"""Saved plans, concurrent jobs and logs, against the real Dovecot."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from bed import Bed, seed
from servers.dovecot import make_message

pytestmark = pytest.mark.dovecot


def saved_plan(bed: Bed) -> Path:
    path = bed.root / "plan.json"
    code, _, _ = bed.run("plan", "--out", str(path))
    assert code == 0
    return path


def test_a_saved_plan_archives_only_what_it_lists(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 3)
    bed.master_profile("p", [user])
    path = saved_plan(bed)
    body = json.loads(path.read_text())
    assert body["format_version"] == 1
    assert body["archive_id"] is None
    assert body["config_digest"].startswith("sha256:")
    seed(bed, user, "INBOX", 2, tag="later")  # arrives after the plan

    code, result = bed.apply_json(str(path))
    assert code == 0, result
    assert result["plan_id"] == body["id"]
    assert result["totals"]["archived"] == 3
    assert len(bed.placements()) == 3

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
        contents[jobs].append(("blobs", *blobs))  # type: ignore[arg-type]
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
