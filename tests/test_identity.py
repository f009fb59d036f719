"""A mailbox's identity in the index, re-pointing and the journal, against the real Dovecot.

* Two mailboxes of one archive folder (other logins, equal UIDVALIDITY) never share
  placements: both are archived before anything is deleted, and deletion compares the
  server's copy with the archived blob.
* A folder archived partly, then recreated, is re-pointed by content, not doubled.
* The index can be lost or damaged: every command says so (exit 12) and
  ``archive rebuild-index`` restores it from the journal, export for export.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from imapsync_decl.plan.model import MailboxPlan
from imapsync_decl.run import executor
from imapsync_decl.run.results import MailboxResult
from imapsync_decl.store import Index

from bed import Bed, seed
from helpers import write_config

pytestmark = pytest.mark.dovecot

DELETE = "delete: {mode: after_archive}\n"


def set_uidvalidity(bed: Bed, user: str, folder: str, uidvalidity: int) -> None:
    """Give a folder a chosen UIDVALIDITY (as a dsync migration keeps it)."""
    subprocess.run(
        [
            "doveadm",
            "-c",
            str(bed.server.config_file),
            "mailbox",
            "update",
            "-u",
            user,
            "--uid-validity",
            str(uidvalidity),
            folder,
        ],
        check=True,
        capture_output=True,
    )


def uidvalidity_of(bed: Bed, user: str, folder: str) -> int:
    with bed.server.client(user) as client:
        return int(client.folder_status(folder, ["UIDVALIDITY"])[b"UIDVALIDITY"])


def shared_csv_profile(bed: Bed, logins: list[str], extra: str = "") -> None:
    """One CSV profile whose rows all go to archive user ``shared``, one archive folder."""
    rows = "".join(f'{login};"{bed.users[login]}";shared@example.test;shared\n' for login in logins)
    write_config(
        bed.config_dir,
        {
            "shared.yaml": "kind: Profile\nname: shared\n"
            + bed.server_yaml()
            + "source: {csv: {file: shared.csv}}\n"
            + extra,
            "shared.csv": "login;password;email;archive_user\n" + rows,
        },
    )


def export_tree(bed: Bed, destination: Path) -> dict[str, bytes]:
    code, out, err = bed.run("archive", "export", str(destination))
    assert code == 0, out + err
    return {
        str(p.relative_to(destination)): p.read_bytes()
        for p in sorted(destination.rglob("*"))
        if p.is_file()
    }


def folder_result(result: dict[str, Any], login: str, path: str = "INBOX") -> dict[str, Any]:
    found: dict[str, Any]
    (found,) = [
        f
        for m in result["mailboxes"]
        if m["login"] == login
        for f in m["folders"]
        if f["path"] == path
    ]
    return found


@pytest.fixture
def two_mailboxes(bed: Bed) -> tuple[str, str]:
    """Two Dovecot users with different messages in INBOX under the same UIDVALIDITY."""
    first, second = bed.new_user("a"), bed.new_user("b")
    seed(bed, first, "INBOX", 3, tag="first")
    seed(bed, second, "INBOX", 4, tag="second")
    set_uidvalidity(bed, second, "INBOX", uidvalidity_of(bed, first, "INBOX"))
    assert uidvalidity_of(bed, first, "INBOX") == uidvalidity_of(bed, second, "INBOX")
    return first, second


def test_two_mailboxes_of_one_archive_folder_are_archived_before_anything_is_deleted(
    bed: Bed, two_mailboxes: tuple[str, str], tmp_path: Path
) -> None:
    first, second = two_mailboxes
    on_server = {u: bed.server_messages(u, "INBOX") for u in (first, second)}
    shared_csv_profile(bed, [first, second], DELETE)
    code, result = bed.apply_json()
    assert code == 0, result
    assert folder_result(result, first)["archived"] == 3
    assert folder_result(result, second)["archived"] == 4
    assert folder_result(result, first)["deleted"] == 3
    assert folder_result(result, second)["deleted"] == 4
    # Every message of both is in the archive, each mailbox in its own directory.
    tree = export_tree(bed, tmp_path / "out")
    archived = sorted(hashlib.sha256(b).hexdigest() for b in tree.values())
    expected = sorted(
        hashlib.sha256(b).hexdigest() for u in on_server for b in on_server[u].values()
    )
    assert archived == expected
    # The mailbox second in the plan gets the suffix, whichever job ran first.
    assert {Path(name).parts[1] for name in tree} == {
        "shared@example.test",
        f"shared@example.test~{second}@{bed.server.host}:{bed.server.port}",
    }
    assert bed.run("archive", "verify")[0] == 0
    code, out, _ = bed.run("archive", "stats", "--format", "json")
    assert json.loads(out)["mailboxes"] == 2


def test_of_two_mailboxes_of_one_archive_folder_the_first_in_the_plan_has_the_plain_name(
    bed: Bed, two_mailboxes: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = two_mailboxes
    shared_csv_profile(bed, [first, second])

    def last_first(
        jobs: Any,
        run_id: str,
        profile: str,
        mailboxes: Sequence[tuple[int, MailboxPlan]],
        runners: int,
        archive: Callable[[MailboxPlan], MailboxResult | None],
        go_on: Callable[[], bool],
    ) -> dict[int, MailboxResult]:
        """The jobs archived one at a time, the last of the plan first."""
        results = {}
        for position, plan in reversed(mailboxes):
            result = archive(plan)
            assert result is not None
            results[position] = result
        return results

    monkeypatch.setattr(executor, "run_claimed", last_first)
    code, result = bed.apply_json()
    assert code == 0, result
    assert [m["login"] for m in result["mailboxes"]] == [first, second]
    counts: dict[str, int] = {}
    for name in export_tree(bed, tmp_path / "out"):
        counts[Path(name).parts[1]] = counts.get(Path(name).parts[1], 0) + 1
    assert counts == {
        "shared@example.test": 3,
        f"shared@example.test~{second}@{bed.server.host}:{bed.server.port}": 4,
    }
    # Later runs keep the names.
    seed(bed, second, "INBOX", 1, tag="later")
    monkeypatch.undo()
    assert bed.run("apply")[0] == 0
    later = {Path(n).parts[1] for n in export_tree(bed, tmp_path / "again")}
    assert later == set(counts)


def test_a_message_whose_server_copy_differs_from_the_archived_one_is_kept(
    bed: Bed, tmp_path: Path
) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 4, tag="keep")
    bed.master_profile("p", [user])
    assert bed.run("apply")[0] == 0
    # The index now says UIDs 1 and 2 hold each other's content (both blobs are sound).
    with sqlite3.connect(bed.archive / "index.sqlite") as db:
        (one,), (two,) = db.execute(
            "SELECT sha256 FROM placements WHERE uid IN (1, 2) ORDER BY uid"
        ).fetchall()
        db.execute("UPDATE placements SET sha256 = ? WHERE uid = 1", (two,))
        db.execute("UPDATE placements SET sha256 = ? WHERE uid = 2", (one,))
    profile = bed.config_dir / "p.yaml"
    profile.write_text(profile.read_text() + DELETE)
    code, result = bed.apply_json()
    assert code == 3, result
    inbox = folder_result(result, user)
    assert inbox["differing"] == 2
    assert inbox["deleted"] == 2
    assert "differ on the server" in inbox["error"]
    assert sorted(bed.server_messages(user, "INBOX")) == [1, 2]


def test_a_partly_archived_folder_that_is_recreated_is_re_pointed_not_doubled(
    bed: Bed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    user = bed.new_user()
    seed(bed, user, "Box", 9, tag="box")
    bed.master_profile("p", [user])
    original = Index.record
    calls = {"n": 0}

    def failing(self: Index, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("injected failure")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Index, "record", failing)
    assert bed.run("apply", "--batch-messages", "4")[0] == 3
    monkeypatch.setattr(Index, "record", original)
    assert 0 < len(bed.placements()) < 9, "the first apply was not cut off mid-folder"

    messages = list(bed.server_messages(user, "Box").values())
    bed.server.delete_folder(user, "Box")
    bed.server.create_folder(user, "Box")
    bed.server.append_many(user, "Box", messages)
    code, result = bed.apply_json()
    assert code == 0, result
    box = folder_result(result, user, "Box")
    assert box["action"] == "rescan"
    assert box["archived"] + box["already_present"] == 9

    tree = export_tree(bed, tmp_path / "out")
    exported = [v for k, v in tree.items() if "/Box/" in k]
    assert sorted(exported) == sorted(messages), "each message exactly once"
    assert bed.run("archive", "verify")[0] == 0


def test_two_mailboxes_storing_the_same_messages_count_them_archived_once(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 6, tag="once")
    # The same mailbox reached through two logins: the user's own, and the master login.
    master = f"{user}*{bed.server.master_user}"
    bed.users[master] = bed.server.master_password
    shared_csv_profile(bed, [user, master], "max_concurrent_jobs: 1\n")
    # As when both mailboxes run at once: each looks before either has stored anything.
    monkeypatch.setattr(Index, "known_blobs", lambda self, hashes: set())
    code, result = bed.apply_json()
    assert code == 0, result
    assert result["totals"]["archived"] == 6
    assert result["totals"]["already_present"] == 6
    code, out, _ = bed.run("archive", "stats", "--format", "json")
    stats = json.loads(out)
    assert (stats["messages"], stats["placements"]) == (6, 12)


# -- the journal and rebuild-index ---------------------------------------------------------


@pytest.fixture
def history(bed: Bed, tmp_path: Path) -> tuple[Bed, dict[str, bytes]]:
    """An archive made by several applies: new mail, a recreated folder (re-pointed), a
    deletion, two mailboxes of one archive folder; and its export."""
    first, second = bed.new_user("h"), bed.new_user("i")
    seed(bed, first, "INBOX", 3, tag="one")
    seed(bed, first, "Box", 3, tag="box")
    seed(bed, second, "INBOX", 2, tag="two")
    set_uidvalidity(bed, second, "INBOX", uidvalidity_of(bed, first, "INBOX"))
    shared_csv_profile(bed, [first, second])
    assert bed.run("apply")[0] == 0
    seed(bed, first, "INBOX", 2, tag="more")
    messages = list(bed.server_messages(first, "Box").values())
    bed.server.delete_folder(first, "Box")
    bed.server.create_folder(first, "Box")
    bed.server.append_many(first, "Box", messages)
    code, result = bed.apply_json()
    assert code == 0, result
    assert folder_result(result, first, "Box")["already_present"] == 3
    shared_csv_profile(bed, [first, second], DELETE)
    code, result = bed.apply_json()
    assert code == 0, result
    assert result["totals"]["deleted"] == 3 + 2 + 2 + 3
    return bed, export_tree(bed, tmp_path / "before")


def damage(index: Path, how: str) -> None:
    for suffix in ("-wal", "-shm"):
        index.with_name(index.name + suffix).unlink(missing_ok=True)
    if how == "deleted":
        index.unlink()
    elif how == "random":
        index.write_bytes(os.urandom(64 * 1024))
    elif how == "truncated":
        data = index.read_bytes()
        index.write_bytes(data[: len(data) // 2])
    elif how == "emptied":
        index.write_bytes(b"")


COMMANDS = [
    ("archive", "verify"),
    ("archive", "stats"),
    ("plan",),
    ("apply",),
    ("archive", "export", "OUT"),
    ("runs",),
]


@pytest.mark.parametrize("how", ["deleted", "random", "truncated", "emptied"])
def test_a_lost_or_damaged_index_is_a_clear_error_and_is_rebuilt_from_the_journal(
    history: tuple[Bed, dict[str, bytes]], tmp_path: Path, how: str
) -> None:
    bed, before = history
    (bed.archive / "index.sqlite").stat()
    with sqlite3.connect(bed.archive / "index.sqlite") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damage(bed.archive / "index.sqlite", how)
    for command in COMMANDS:
        args = [str(tmp_path / "out") if a == "OUT" else a for a in command]
        code, out, err = bed.run(*args)
        assert code == 12, (command, out, err)
        assert "Traceback" not in err
        assert "archive rebuild-index" in err, (command, err)
    assert not (tmp_path / "out").exists()

    code, out, err = bed.run("archive", "rebuild-index")
    assert code == 0, out + err
    assert "rebuilt" in out
    assert bed.run("archive", "verify")[0] == 0
    assert export_tree(bed, tmp_path / "after") == before
    # Nothing lost or doubled by the next apply: no checkpoints, so every folder is
    # searched, and nothing is missing.
    code, result = bed.apply_json()
    assert code == 0, result
    assert (result["totals"]["archived"], result["totals"]["deleted"]) == (0, 0)
    assert export_tree(bed, tmp_path / "again") == before
    assert len(bed.run("runs", "--format", "json")[1]) > 2


def test_rebuild_index_refuses_a_healthy_index_unless_forced(
    history: tuple[Bed, dict[str, bytes]], tmp_path: Path
) -> None:
    bed, before = history
    code, out, err = bed.run("archive", "rebuild-index")
    assert code == 10
    assert "healthy" in err
    assert "--force" in err
    code, out, err = bed.run("archive", "rebuild-index", "--force", "--format", "json")
    assert code == 0, out + err
    report = json.loads(out)
    assert report["kept_as"] is not None
    assert Path(report["kept_as"]).exists()
    assert report["restored"]["move"] == 3
    assert export_tree(bed, tmp_path / "after") == before
