"""Hostile plan files, without a server: how they are read, parsed and held to a fresh plan.

The tampered plans against the real Dovecot are in test_saved_plan.py.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imapsync_decl.cli.main import main
from imapsync_decl.plan import saved as saved_plans
from imapsync_decl.plan.model import FolderPlan, MailboxPlan, Plan, PlanFormatError, ProfilePlan
from imapsync_decl.plan.saved import MAX_PLAN_BYTES, StalePlan, restrict_to_saved

from helpers import USERS, write_config

PLAN_ID = "0b7e2f4c-3a51-4c8e-9d67-2f1e5a9b8c01"


def folder(**changes: Any) -> FolderPlan:
    base = FolderPlan(
        path="INBOX",
        wire_name="INBOX",
        action="archive",
        uidvalidity=7,
        uidnext=20,
        exists=12,
        uids=(10, 11, 12),
        bytes=300,
        already_archived=9,
        delete=(1, 2),
    )
    return dataclasses.replace(base, **changes)


def mailbox(*folders: FolderPlan, **changes: Any) -> MailboxPlan:
    base = MailboxPlan(
        profile="staff",
        source="master",
        archive_user="alice",
        archive_folder="alice@example.com",
        login="alice@example.com",
        email="alice@example.com",
        folders=folders,
    )
    return dataclasses.replace(base, **changes)


def plan(*mailboxes: MailboxPlan, plan_id: str = PLAN_ID) -> Plan:
    return Plan(
        id=plan_id,
        created_at="2026-12-01T20:00:00+00:00",
        archive="/srv/archive",
        archive_id=None,
        profiles=(ProfilePlan("staff", "imap.example.com:993", "tls", mailboxes=mailboxes),),
    )


# --- parsing: every field of its type and range -----------------------------------------------


def base_document() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        json.dumps(plan(mailbox(folder(), folder(path="X", wire_name="X"))).to_json())
    )
    return body


def _folder_field(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body["profiles"][0]["mailboxes"][0]["folders"][0][name] = value

    return mutate


def _uid(value: Any, field: str = "uids") -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        target = body["profiles"][0]["mailboxes"][0]["folders"][0]
        target[field].append(value)
        target["messages"] = len(target["uids"])

    return mutate


F0 = "profiles[0].mailboxes[0].folders[0]"
MALFORMED: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("UID 0", _uid(0), f"{F0}.uids[3]: 0 is not in 1..4294967295"),
    ("UID 2^32", _uid(2**32), f"{F0}.uids[3]: 4294967296 is not in 1..4294967295"),
    ("negative UID", _uid(-1), "is not in 1..4294967295"),
    ("UID as a string", _uid("13"), f"{F0}.uids[3]: '13' is not an integer"),
    ("UID as a float", _uid(13.0), "13.0 is not an integer"),
    ("UID as a boolean", _uid(True), "True is not an integer"),
    ("UID twice", _uid(10), f"{F0}.uids[3]: UID 10 is listed twice"),
    ("delete UID 0", _uid(0, "delete"), f"{F0}.delete[2]: 0 is not in"),
    ("uids not a list", _folder_field("uids", "10,11"), f"{F0}.uids: '10,11' is not a list"),
    ("uidvalidity 0", _folder_field("uidvalidity", 0), f"{F0}.uidvalidity: 0 is not in"),
    ("uidvalidity null", _folder_field("uidvalidity", None), f"{F0}.uidvalidity: missing"),
    ("uidnext text", _folder_field("uidnext", "20"), f"{F0}.uidnext: '20' is not an integer"),
    ("bytes negative", _folder_field("bytes", -1), f"{F0}.bytes: -1 is not in"),
    ("wire_name a number", _folder_field("wire_name", 5), f"{F0}.wire_name: 5 is not a string"),
    (
        "wire_name missing",
        lambda b: b["profiles"][0]["mailboxes"][0]["folders"][0].pop("wire_name"),
        f"{F0}.wire_name: missing",
    ),
    ("unknown action", _folder_field("action", "delete"), f"{F0}.action: 'delete' is not an"),
    ("messages", _folder_field("messages", 2), f"{F0}.messages: does not match"),
    (
        "UIDs to archive in a folder to skip",
        _folder_field("action", "skip"),
        f"{F0}.uids: a folder to skip has no UIDs to archive",
    ),
    (
        "login a list",
        lambda b: b["profiles"][0]["mailboxes"][0].update(login=["a"]),
        "profiles[0].mailboxes[0].login: ['a'] is not a string",
    ),
    (
        "mailbox not an object",
        lambda b: b["profiles"][0].update(mailboxes=[1]),
        "mailboxes[0]: not",
    ),
    ("id with a line break", lambda b: b.update(id="x\r\ny"), "id: 'x\\r\\ny' is not a plan id"),
    ("created_at", lambda b: b.update(created_at="yesterday"), "created_at: 'yesterday' is not"),
    ("profiles missing", lambda b: b.pop("profiles"), "profiles: missing"),
    ("format_version", lambda b: b.update(format_version="1"), "format_version '1' is not 1"),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_a_malformed_plan_document_names_its_first_wrong_field(
    mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    body = base_document()
    assert Plan.from_json(copy.deepcopy(body)) == Plan.from_json(body)
    mutate(body)
    with pytest.raises(PlanFormatError) as caught:
        Plan.from_json(body)
    assert expected in str(caught.value)


def test_a_long_value_is_shown_cut_and_escaped() -> None:
    body = base_document()
    body["profiles"][0]["mailboxes"][0]["folders"][0]["uids"].append("\x1b[2J" * 100)
    body["profiles"][0]["mailboxes"][0]["folders"][0]["messages"] = 4
    with pytest.raises(PlanFormatError) as caught:
        Plan.from_json(body)
    message = str(caught.value)
    assert "\x1b" not in message
    assert message.endswith("... is not an integer")
    assert len(message) < 160


# --- reading the file: the command line --------------------------------------------------------


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEST_MASTER_PW", "not-used")
    profile = (
        "kind: Profile\nname: staff\nserver: {host: 127.0.0.1, port: 1, security: plain}\n"
        "source:\n  master: {username: archiver, password: {env: TEST_MASTER_PW}}\n"
    )
    return write_config(tmp_path / "profiles.d", {"users.yaml": USERS, "staff.yaml": profile})


def apply(capsys: pytest.CaptureFixture[str], config_dir: Path, path: Path) -> tuple[int, str]:
    code = main(["apply", str(path), "--config-dir", str(config_dir)])
    _out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, err


def test_a_plan_file_behind_a_symbolic_link_is_refused(
    capsys: pytest.CaptureFixture[str], config_dir: Path, tmp_path: Path
) -> None:
    real = tmp_path / "real.json"
    real.write_text(json.dumps(base_document()))
    link = tmp_path / "plan.json"
    link.symlink_to(real)
    code, err = apply(capsys, config_dir, link)
    assert code == 10
    assert "is a symbolic link" in err


def test_a_plan_file_that_is_no_regular_file_is_refused(
    capsys: pytest.CaptureFixture[str], config_dir: Path, tmp_path: Path
) -> None:
    fifo = tmp_path / "plan.json"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer, were it not refused
    code, err = apply(capsys, config_dir, fifo)
    assert code == 10
    assert "is not a regular file" in err


def test_a_huge_plan_file_is_refused_unread(
    capsys: pytest.CaptureFixture[str], config_dir: Path, tmp_path: Path
) -> None:
    huge = tmp_path / "plan.json"
    with huge.open("wb") as file:
        file.truncate(MAX_PLAN_BYTES + 1)  # sparse: no disk used
    code, err = apply(capsys, config_dir, huge)
    assert code == 11
    assert "larger than 64 MiB" in err


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe not UTF-8",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"format_version": 1, "id": ' + b"9" * 5000 + b"}",
        b"not json",
    ],
    ids=["not UTF-8", "nested too deeply", "a number of 5000 digits", "not JSON"],
)
def test_a_plan_file_that_is_not_json_is_refused(
    capsys: pytest.CaptureFixture[str], config_dir: Path, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(content)
    code, err = apply(capsys, config_dir, path)
    assert code == 11
    assert "is not a plan document" in err


def test_a_malformed_plan_file_exits_11_naming_the_field(
    capsys: pytest.CaptureFixture[str], config_dir: Path, tmp_path: Path
) -> None:
    body = base_document()
    _uid("1")(body)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(body))
    code, err = apply(capsys, config_dir, path)
    assert code == 11
    assert f"{F0}.uids[3]: '1' is not an integer" in err
    assert not (config_dir.parent / "archive").exists()


def test_plan_refuses_to_save_a_plan_apply_would_not_read(
    capsys: pytest.CaptureFixture[str],
    config_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(saved_plans, "MAX_PLAN_BYTES", 100)
    out = tmp_path / "plan.json"
    code = main(["plan", "--out", str(out), "--config-dir", str(config_dir)])
    _out, err = capsys.readouterr()
    assert code == 10
    assert "more than `apply` reads" in err
    assert not out.exists()


# --- holding a saved plan to a plan made now ---------------------------------------------------


def restricted(saved: Plan, now: Plan) -> FolderPlan:
    result = restrict_to_saved(saved, now)
    assert result.id == saved.id
    ((_, found),) = list(result.folders())
    return found


def test_an_untampered_plan_gives_the_plan_made_now() -> None:
    now = plan(mailbox(folder()), plan_id="other")
    assert restricted(plan(mailbox(folder())), now) == folder()


def test_only_the_saved_uids_are_applied_and_the_folder_is_not_checkpointed() -> None:
    now = plan(mailbox(folder(uids=(10, 11, 12, 13, 14), uidnext=22, bytes=500, delete=(1, 2, 13))))
    saved = plan(mailbox(folder(delete=(1, 2))))
    applied = restricted(saved, now)
    assert applied.uids == (10, 11, 12)
    assert applied.delete == (1, 2)
    assert (applied.uidnext, applied.exists) == (None, None)
    assert applied.bytes == 300


def test_uids_a_plan_made_now_does_not_offer_are_left_out() -> None:
    # 11 was expunged (or archived meanwhile, or the filters no longer choose it); 3 may
    # not be deleted now (flagged meanwhile); 12 is archived, but this plan does not archive
    # it: it cannot be deleted in this run.
    now = plan(mailbox(folder(uids=(10, 12), delete=(1, 2, 12))))
    saved = plan(mailbox(folder(uids=(10, 11), delete=(1, 2, 3, 12))))
    applied = restricted(saved, now)
    assert applied.uids == (10,)
    assert applied.delete == (1, 2)
    assert applied.uidnext is None


def test_all_missing_uids_applied_keep_the_checkpoint_even_when_some_vanished() -> None:
    now = plan(mailbox(folder(uids=(10, 12))))
    applied = restricted(plan(mailbox(folder())), now)
    assert applied.uids == (10, 12)
    assert (applied.uidnext, applied.exists) == (20, 12)


@pytest.mark.parametrize(
    ("saved", "expected"),
    [
        (
            folder(uids=(10, 20)),
            f"{F0}.uids[1]: UID 20 was never in the folder (its UIDNEXT is 20)",
        ),
        (folder(delete=(25,)), f"{F0}.delete[0]: UID 25 was never in the folder"),
        (
            folder(wire_name="INBOX\r\nX1 DELETE Sent"),
            f"{F0}.wire_name: the plan says 'INBOX\\r\\n",
        ),
        (folder(path="Sent"), f"{F0}.path: 'Sent' is not a folder that the configuration selects"),
        (folder(action="rescan", previous_uidvalidity=3), f"{F0}.action: the plan says 'rescan'"),
    ],
    ids=["UID at UIDNEXT", "delete above UIDNEXT", "wire_name", "path", "action"],
)
def test_a_folder_that_differs_refuses_the_whole_plan(saved: FolderPlan, expected: str) -> None:
    now = plan(mailbox(folder(), folder(path="Other", wire_name="Other")))
    with pytest.raises(StalePlan) as caught:
        restrict_to_saved(plan(mailbox(saved)), now)
    assert expected in caught.value.message
    assert caught.value.message.endswith("run `plan` again")
    assert "\r" not in caught.value.message


def test_a_rescan_with_another_previous_uidvalidity_is_refused() -> None:
    now = plan(mailbox(folder(action="rescan", previous_uidvalidity=3)))
    saved = plan(mailbox(folder(action="rescan", previous_uidvalidity=4)))
    with pytest.raises(StalePlan, match=r"previous_uidvalidity: the plan says 4, .* gives 3"):
        restrict_to_saved(saved, now)


def test_a_folder_with_new_mail_since_a_plan_that_skipped_it_applies_nothing() -> None:
    now = plan(mailbox(folder(uids=(13,), uidnext=21, delete=())))
    saved = plan(mailbox(folder(action="skip", uids=(), delete=(), note="nothing new")))
    applied = restricted(saved, now)
    assert (applied.uids, applied.delete, applied.uidnext) == ((), (), None)


def test_a_folder_recreated_since_the_plan_is_left_to_the_executor_as_stale() -> None:
    now = plan(mailbox(folder(uidvalidity=8, uids=(1, 2))))
    applied = restricted(plan(mailbox(folder())), now)
    # The executor examines the folder, sees UIDVALIDITY 8, not 7, and leaves it out.
    assert (applied.uidvalidity, applied.uids, applied.uidnext) == (7, (10, 11, 12), None)
    assert applied.wire_name == "INBOX"


def test_a_mailbox_that_fails_now_or_failed_then_applies_nothing() -> None:
    failing = mailbox(error="login refused")
    result = restrict_to_saved(plan(mailbox(folder())), plan(failing))
    assert result.profiles[0].mailboxes == (failing,)

    saved = plan(mailbox(error="login refused"))
    (applied,) = restrict_to_saved(saved, plan(mailbox(folder()))).profiles[0].mailboxes
    assert applied.folders == ()
    assert applied.error is not None
    assert "run `plan` again" in applied.error
