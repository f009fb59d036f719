"""The Ansible modules' reading of plans, runs and the command's stderr: table tests.

The collection's module_utils are loaded from their files (Ansible imports them as
``ansible_collections.imapsync_decl.archiving.plugins.module_utils``); the playbook tests
in test_ansible.py run them for real.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ansible_bed import COLLECTIONS

UTILS = COLLECTIONS / "ansible_collections/imapsync_decl/archiving/plugins/module_utils"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"collection_{name}", UTILS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


changes = load("changes")
cli = load("cli")


def plan_of(*folders: dict[str, Any]) -> dict[str, Any]:
    mailbox = {"profile": "p", "login": "a", "archive_folder": "a@x", "folders": list(folders)}
    return {"profiles": [{"name": "p", "mailboxes": [mailbox]}]}


def folder(action: str, uids: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    return {"path": "INBOX", "action": action, "uids": uids or [], "delete": [], **extra}


@pytest.mark.parametrize(
    ("folders", "work"),
    [
        ([folder("archive", [1, 2])], True),
        ([folder("rescan", [7])], True),
        ([folder("skip", delete=[3])], True),  # deletion only is work too
        ([folder("archive", [])], False),
        ([folder("skip")], False),
        ([folder("error", note="gone")], False),
        ([folder("skip"), folder("rescan", [1])], True),
        ([], False),
    ],
)
def test_a_plan_has_work_exactly_when_it_archives_rescans_or_deletes(
    folders: list[dict[str, Any]], work: bool
) -> None:
    assert changes.plan_has_work(plan_of(*folders)) is work


@pytest.mark.parametrize(
    ("totals", "changed"),
    [
        ({"archived": 1, "already_present": 0, "deleted": 0}, True),
        ({"archived": 0, "already_present": 4, "deleted": 0}, True),  # re-pointed
        ({"archived": 0, "already_present": 0, "deleted": 2}, True),
        ({"archived": 0, "already_present": 0, "deleted": 0}, False),
        ({"archived": 0, "already_present": 0, "vanished": 3}, False),
        ({}, False),
    ],
)
def test_a_run_changed_exactly_when_it_archived_repointed_or_deleted(
    totals: dict[str, int], changed: bool
) -> None:
    assert changes.run_changed({"totals": totals}) is changed


def test_the_diff_of_a_plan_counts_archived_and_deleted_messages() -> None:
    plan = plan_of(
        folder("archive", [4, 5], already_archived=3, exists=5),
        {**folder("skip", delete=[1, 2], already_archived=5, exists=5), "path": "Sent"},
        {**folder("skip", already_archived=2, exists=2), "path": "Old"},
    )
    diff = changes.plan_diff(plan)
    assert diff["before"] == (
        "p/a@x/INBOX: 3 archived, 5 on the server\np/a@x/Sent: 5 archived, 5 on the server\n"
    )
    assert diff["after"] == (
        "p/a@x/INBOX: 5 archived, 5 on the server\np/a@x/Sent: 5 archived, 3 on the server\n"
    )


def test_the_diff_of_a_run_shows_what_it_did() -> None:
    plan = plan_of(folder("rescan", [1, 2, 3], already_archived=0, exists=3))
    run = {
        "mailboxes": [
            {
                "profile": "p",
                "login": "a",
                "folders": [{"path": "INBOX", "archived": 1, "already_present": 2, "deleted": 0}],
            }
        ]
    }
    diff = changes.run_diff(plan, run)
    assert diff["before"] == "p/a@x/INBOX: 0 archived, 3 on the server\n"
    assert diff["after"] == "p/a@x/INBOX: 3 archived, 3 on the server\n"


def test_errors_name_their_profile_mailbox_and_folder() -> None:
    plan = plan_of(folder("error", note="EXAMINE failed"))
    plan["profiles"][0]["mailboxes"][0]["error"] = "login refused"
    assert changes.plan_errors(plan) == [
        "p/a@x: login refused",
        "p/a@x/INBOX: EXAMINE failed",
    ]


def test_failure_messages_keep_the_commands_words_and_drop_its_json_logs() -> None:
    stderr = (
        '{"event": "plan_started", "level": "warning"}\n'
        "error: the archive /a is in use by `imapsync-decl apply` (pid 7 on h since t);"
        " wait for it to finish\n"
    )
    assert cli.failure_message(13, stderr) == (
        "the archive is locked by another apply: the archive /a is in use by"
        " `imapsync-decl apply` (pid 7 on h since t); wait for it to finish"
    )
    assert cli.failure_message(11, "error: x: run `plan` again\n") == (
        "the saved plan is stale: plan again: x: run `plan` again"
    )
    assert cli.failure_message(99, "") == "imapsync-decl exited 99"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"A=B": "x"}, "env: 'A=B' is not an environment variable name"),
        ({"1A": "x"}, "env: '1A' is not an environment variable name"),
        ({"A": None}, "env: A has no value"),
        ({"A": ["x"]}, "env: the value of A must be a string"),
        ({"A": "x\0y"}, "env: the value of A contains a NUL character"),
    ],
)
def test_bad_env_entries_are_refused_without_their_value(env: dict[str, Any], message: str) -> None:
    with pytest.raises(cli.CommandError) as caught:
        cli.check_env(env)
    assert caught.value.msg == message


def test_env_values_become_strings() -> None:
    assert cli.check_env({"PORT": 993, "PW": "s"}) == {"PORT": "993", "PW": "s"}


def test_a_plan_file_is_not_read_through_a_symbolic_link(tmp_path: Path) -> None:
    real = tmp_path / "plan.json"
    real.write_text('{"profiles": []}', encoding="utf-8")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert cli.read_plan_file(str(real)) == {"profiles": []}
    with pytest.raises(cli.CommandError, match="is a symbolic link"):
        cli.read_plan_file(str(link))
    (tmp_path / "bad.json").write_text("[1]", encoding="utf-8")
    with pytest.raises(cli.CommandError, match="is not a plan"):
        cli.read_plan_file(str(tmp_path / "bad.json"))
