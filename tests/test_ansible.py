"""The Ansible collection: real ``ansible-playbook`` runs on localhost against the test Dovecot.

Check mode plans and changes nothing on disk; apply archives; a second run is unchanged;
exit codes 3, 11 and 13 fail the task as documented; the ``env`` secret reaches the command
in its environment only and never shows in the output.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from imapsync_decl.store.lock import ArchiveLock

from ansible_bed import BIN, MODULE_PYTHON, SECRET_NAME, Ansible, readme_playbook, task_play
from bed import Bed, seed
from servers.dovecot import make_message

pytestmark = pytest.mark.dovecot

APPLY = "Archive what is new (in check mode, show the plan)"
INFO = "Read the configuration, its mailboxes and the last runs"


@pytest.fixture
def ansible(bed: Bed) -> Iterator[Ansible]:
    # The secret given to the modules is the master password of the test Dovecot.
    runner = Ansible(bed, secret=bed.server.master_password)
    yield runner
    for output in bed.outputs:
        assert runner.secret not in output, "the env secret appeared in the output"


def master_bed(ansible: Ansible, users: list[str]) -> None:
    """A master-password profile ``staff`` whose password is the ``env`` secret."""
    ansible.bed.master_profile("staff", users)
    ansible.use_secret_name()


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its bytes (empty when root does not exist)."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_the_readme_playbook_plans_in_check_mode_archives_then_is_unchanged(
    ansible: Ansible,
) -> None:
    bed = ansible.bed
    user = bed.new_user()
    seed(bed, user, "INBOX", 3)
    seed(bed, user, "Projekte", 2)
    master_bed(ansible, [user])
    playbook = readme_playbook()

    # The modules run with a Python that has no imapsync_decl package (on Debian: the
    # system's), as on a managed host where the command lives in a virtualenv.
    if sys.executable != MODULE_PYTHON:
        probe = [MODULE_PYTHON, "-c", "import imapsync_decl"]
        assert subprocess.run(probe, cwd=bed.root, capture_output=True, check=False).returncode

    # Check mode: the plan, nothing on disk.
    checked = ansible.play(playbook, "--check", "--diff")
    assert checked.returncode == 0, checked.stdout[-3000:]
    result = checked.result(APPLY)
    assert result["changed"] is True
    assert result["run"] is None
    assert result["plan"]["totals"]["messages"] == 5
    assert not bed.archive.exists(), "check mode created the archive"
    diff = result["diff"]
    assert diff["before"].splitlines() == [
        f"staff/{user}@example.test/INBOX: 0 archived, 3 on the server",
        f"staff/{user}@example.test/Projekte: 0 archived, 2 on the server",
    ]
    assert diff["after"].splitlines() == [
        f"staff/{user}@example.test/INBOX: 3 archived, 3 on the server",
        f"staff/{user}@example.test/Projekte: 2 archived, 2 on the server",
    ]
    assert not checked.ran("Report")
    masked = {SECRET_NAME: "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"}
    assert result["invocation"]["module_args"]["env"] == masked

    # Apply: archived, and the plan that was applied is returned with the run.
    applied = ansible.play(playbook)
    assert applied.returncode == 0, applied.stdout[-3000:]
    result = applied.result(APPLY)
    assert result["changed"] is True
    assert result["run"]["status"] == "ok"
    assert result["run"]["totals"]["archived"] == 5
    assert result["plan"]["id"] == result["run"]["plan_id"]
    assert len(bed.placements()) == 5
    report = applied.result("Report")
    assert report["msg"] == f"5 messages archived in run {result['run']['run_id']}"

    # The second run changes nothing, and info sees both runs and the mailbox.
    again = ansible.play(playbook)
    assert again.returncode == 0, again.stdout[-3000:]
    result = again.result(APPLY)
    assert result["changed"] is False
    assert result["run"]["totals"]["archived"] == 0
    assert len(bed.placements()) == 5
    info = again.result(INFO)
    assert info["changed"] is False
    assert info["validate"]["valid"] is True
    assert [p["name"] for p in info["validate"]["profiles"]] == ["staff"]
    assert [(m["profile"], m["login"], m["selected"]) for m in info["mailboxes"]] == [
        ("staff", user, True)
    ]
    assert [r["id"] for r in info["runs"]] == [applied.result(APPLY)["run"]["run_id"]]
    assert info["runs"][0]["status"] == "ok"


def test_check_mode_leaves_an_existing_archive_as_it_was(ansible: Ansible) -> None:
    bed = ansible.bed
    user = bed.new_user()
    seed(bed, user, "INBOX", 2)
    master_bed(ansible, [user])
    playbook = readme_playbook()
    assert ansible.play(playbook).result(APPLY)["changed"] is True
    seed(bed, user, "INBOX", 2, tag="new")
    before = snapshot(bed.archive)

    checked = ansible.play(playbook, "--check", "--diff")
    result = checked.result(APPLY)
    assert result["changed"] is True
    assert (
        result["diff"]["before"]
        == f"staff/{user}@example.test/INBOX: 2 archived, 4 on the server\n"
    )
    assert (
        result["diff"]["after"] == f"staff/{user}@example.test/INBOX: 4 archived, 4 on the server\n"
    )
    assert snapshot(bed.archive) == before, "check mode changed the archive"

    # Diff mode of a real run shows what the run did.
    applied = ansible.play(playbook, "--diff")
    result = applied.result(APPLY)
    assert result["changed"] is True
    assert (
        result["diff"]["after"] == f"staff/{user}@example.test/INBOX: 4 archived, 4 on the server\n"
    )
    nothing = ansible.play(playbook, "--check").result(APPLY)
    assert nothing["changed"] is False


def test_a_partial_failure_fails_the_task_unless_allowed(ansible: Ansible) -> None:
    bed = ansible.bed
    good, bad = bed.new_user(), bed.new_user()
    seed(bed, good, "INBOX", 2)
    bed.csv_profile("rows", [(good, bed.users[good]), (bad, "not-the-password")])
    apply_task = {"imapsync_decl.archiving.apply": {"config_dir": "{{ config_dir }}"}}
    run = ansible.play(
        task_play(
            {"name": "strict", **apply_task, "ignore_errors": True},
            {
                "name": "tolerant",
                "imapsync_decl.archiving.apply": {
                    "config_dir": "{{ config_dir }}",
                    "allow_partial": True,
                },
            },
        )
    )
    strict = run.result("strict")
    assert run.status("strict") == "fatal"
    assert strict["exit_code"] == 3
    assert strict["msg"].startswith("some mailboxes or folders failed; the others are done: ")
    assert f"rows/{bad}:" in strict["msg"]
    assert strict["changed"] is True  # the good mailbox was archived
    assert strict["run"]["totals"]["failed_mailboxes"] == 1
    tolerant = run.result("tolerant")
    assert run.status("tolerant") == "ok"
    assert tolerant["exit_code"] == 3
    assert tolerant["changed"] is False  # nothing new in the good mailbox
    assert f"[WARNING]: rows/{bad}:" in run.stdout + run.stderr
    assert run.returncode == 0


def test_a_stale_saved_plan_fails_with_the_stale_message(ansible: Ansible) -> None:
    bed = ansible.bed
    user = bed.new_user()
    seed(bed, user, "INBOX", 2)
    bed.master_profile("staff", [user])
    plan_file = bed.root / "plan.json"
    assert bed.run("plan", "--out", str(plan_file))[0] == 0
    assert bed.run("apply")[0] == 0  # the archive moved on: the saved plan is stale
    run = ansible.play(
        task_play(
            {
                "name": "saved",
                "imapsync_decl.archiving.apply": {
                    "config_dir": "{{ config_dir }}",
                    "plan_file": str(plan_file),
                    "env": {"BED_MASTER_PASSWORD": bed.server.master_password},
                },
            }
        )
    )
    assert run.returncode != 0
    result = run.result("saved")
    assert run.status("saved") == "fatal"
    assert result["exit_code"] == 11
    assert result["msg"].startswith("the saved plan is stale: plan again: ")
    assert len(bed.placements()) == 2  # only the CLI's apply archived


def test_a_locked_archive_fails_naming_the_holder(ansible: Ansible) -> None:
    bed = ansible.bed
    user = bed.new_user()
    seed(bed, user, "INBOX", 1)
    bed.master_profile("staff", [user])
    task = {
        "name": "locked",
        "imapsync_decl.archiving.apply": {
            "config_dir": "{{ config_dir }}",
            "env": {"BED_MASTER_PASSWORD": bed.server.master_password},
        },
    }
    with ArchiveLock(bed.archive, "imapsync-decl apply"):
        run = ansible.play(task_play(task))
    result = run.result("locked")
    assert run.status("locked") == "fatal"
    assert result["exit_code"] == 13
    assert result["msg"].startswith("the archive is locked by another apply: ")
    assert result["changed"] is False
    assert result["run"] is None
    assert result["plan"]["totals"]["messages"] == 1  # what would have been applied
    assert f"`imapsync-decl apply` (pid {os.getpid()} on" in result["msg"]
    assert not (bed.archive / "index.sqlite").exists()  # nothing was applied


def test_the_secret_reaches_the_command_in_its_environment_only(ansible: Ansible) -> None:
    bed = ansible.bed
    user = bed.new_user()
    seed(bed, user, "INBOX", 1)
    master_bed(ansible, [user])
    record = bed.root / "record"
    wrapper = bed.root / "imapsync-decl-wrapper"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$0\" \"$@\" >> '{record}.argv'\n"
        f"env >> '{record}.env'\n"
        f"exec '{BIN / 'imapsync-decl'}' \"$@\"\n",
        encoding="utf-8",
    )
    wrapper.chmod(0o700)
    task = {
        "name": "wrapped",
        "imapsync_decl.archiving.apply": {
            "config_dir": "{{ config_dir }}",
            "executable": str(wrapper),
            "env": {SECRET_NAME: "{{ archiver_password }}"},
        },
    }
    run = ansible.play(task_play(task))
    argv = Path(f"{record}.argv").read_text(encoding="utf-8")
    assert ansible.secret not in argv
    assert {"plan", "apply"} <= set(argv.splitlines())
    result = run.result("wrapped")
    assert result["changed"] is True, result
    environment = Path(f"{record}.env").read_text(encoding="utf-8").splitlines()
    assert environment.count(f"{SECRET_NAME}={ansible.secret}") == 2  # plan, then apply
    assert ansible.secret not in json.dumps(result)
    assert ansible.secret not in run.stdout + run.stderr


def test_an_invalid_configuration_fails_info_and_apply_with_its_problems(ansible: Ansible) -> None:
    bed = ansible.bed
    bed.master_profile("staff", [bed.new_user()])
    profile = bed.config_dir / "staff.yaml"
    text = profile.read_text(encoding="utf-8")
    profile.write_text(text.replace(f"port: {bed.server.port}", "port: 99999"), encoding="utf-8")
    config = "{{ config_dir }}"
    run = ansible.play(
        task_play(
            {"name": "info", "imapsync_decl.archiving.info": {"config_dir": config}},
            {"name": "apply", "imapsync_decl.archiving.apply": {"config_dir": config}},
            ignore_errors=True,
        )
    )
    info = run.result("info")
    assert run.status("info") == "fatal"
    assert info["validate"]["valid"] is False
    assert info["msg"].startswith("the configuration is invalid: ")
    assert "staff.yaml:" in info["msg"]
    assert "server.port: " in info["msg"]
    assert "mailboxes" not in info
    applied = run.result("apply")
    assert run.status("apply") == "fatal"
    assert applied["exit_code"] == 10
    assert applied["msg"].startswith("the configuration or the command line is invalid: ")
    assert "staff.yaml:" in applied["msg"]
    assert not bed.archive.exists()


def test_profiles_choose_what_is_applied_and_listed(ansible: Ansible) -> None:
    bed = ansible.bed
    first, second = bed.new_user(), bed.new_user()
    seed(bed, first, "INBOX", 1)
    seed(bed, second, "INBOX", 1)
    bed.master_profile("first", [first])
    bed.master_profile("second", [second])
    env = {"BED_MASTER_PASSWORD": bed.server.master_password}
    run = ansible.play(
        task_play(
            {
                "name": "apply",
                "imapsync_decl.archiving.apply": {
                    "config_dir": "{{ config_dir }}",
                    "profiles": ["second"],
                    "env": env,
                },
            },
            {
                "name": "info",
                "imapsync_decl.archiving.info": {
                    "config_dir": "{{ config_dir }}",
                    "profiles": ["first"],
                    "runs": 0,
                },
            },
        )
    )
    applied = run.result("apply")
    assert [m["login"] for m in applied["run"]["mailboxes"]] == [second]
    assert [p["name"] for p in applied["plan"]["profiles"]] == ["second"]
    assert [row[0] for row in bed.placements()] == [second]
    info = run.result("info")
    assert {m["profile"] for m in info["mailboxes"]} == {"first"}
    assert [m["login"] for m in info["mailboxes"] if m["selected"]] == [first]
    assert info["runs"] == []


def test_re_pointed_messages_are_a_change(ansible: Ansible) -> None:
    bed = ansible.bed
    user = bed.new_user()
    bodies = [make_message(subject=f"r{i}", body=f"recreated {i}\n") for i in range(2)]
    bed.server.create_folder(user, "Projekt")
    for body in bodies:
        bed.server.append(user, "Projekt", body)
    master_bed(ansible, [user])
    playbook = readme_playbook()
    assert ansible.play(playbook).result(APPLY)["run"]["totals"]["archived"] == 2
    # The folder recreated with the same messages: a new UIDVALIDITY, nothing new to store.
    bed.server.delete_folder(user, "Projekt")
    bed.server.create_folder(user, "Projekt")
    for body in reversed(bodies):
        bed.server.append(user, "Projekt", body)

    checked = ansible.play(playbook, "--check").result(APPLY)
    (folder,) = [
        f
        for f in checked["plan"]["profiles"][0]["mailboxes"][0]["folders"]
        if f["path"] == "Projekt"
    ]
    assert folder["action"] == "rescan"
    assert checked["changed"] is True
    applied = ansible.play(playbook).result(APPLY)
    assert applied["run"]["totals"]["archived"] == 0
    assert applied["run"]["totals"]["already_present"] == 2
    assert applied["changed"] is True
    assert ansible.play(playbook).result(APPLY)["changed"] is False


def test_a_saved_plan_is_reported_in_check_mode_then_applied_exactly(ansible: Ansible) -> None:
    bed = ansible.bed
    user = bed.new_user()
    seed(bed, user, "INBOX", 2)
    bed.master_profile("staff", [user])
    plan_file = bed.root / "plan.json"
    assert bed.run("plan", "--out", str(plan_file))[0] == 0
    saved = json.loads(plan_file.read_text(encoding="utf-8"))
    seed(bed, user, "INBOX", 1, tag="later")  # not in the saved plan
    task = {
        "name": "saved",
        "imapsync_decl.archiving.apply": {
            "config_dir": "{{ config_dir }}",
            "plan_file": str(plan_file),
            "env": {"BED_MASTER_PASSWORD": "{{ archiver_password }}"},
        },
    }
    checked = ansible.play(task_play(task), "--check").result("saved")
    assert checked["changed"] is True
    assert checked["plan"] == saved
    assert not bed.archive.exists()
    applied = ansible.play(task_play(task)).result("saved")
    assert applied["changed"] is True
    assert applied["plan"]["id"] == saved["id"] == applied["run"]["plan_id"]
    assert applied["run"]["totals"]["archived"] == 2  # exactly the plan's UIDs
    assert len(bed.placements()) == 2
