"""Crashes, signals, faults and dropped connections: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from imapsync_decl.run import executor, workers
from imapsync_decl.store import BlobStore, Index

from bed import Bed, placement_count, seed, start_apply
from servers.proxy import DroppingProxy

pytestmark = pytest.mark.dovecot

MESSAGES = 240
FAULTY_WORKER = Path(__file__).parent / "faulty_worker.py"


def wait_for_placements(bed: Bed, process: subprocess.Popen[str], at_least: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        count = placement_count(bed.archive)
        if count >= at_least or process.poll() is not None:
            return count
        time.sleep(0.005)
    raise AssertionError("apply made no progress")


def assert_exactly_once(bed: Bed, users: list[str], per_user: int) -> None:
    rows = bed.placements()
    keys = [(r[0], r[1], r[2], r[3]) for r in rows]
    assert len(keys) == len(set(keys)), "a placement was doubled"
    for user in users:
        mine = [r for r in rows if r[0] == user and r[1] == "INBOX"]
        assert len(mine) == per_user, f"{user}: {len(mine)} of {per_user} archived"
    code, out, _ = bed.run("archive", "verify", "--format", "json")
    report = json.loads(out)
    assert code == 0, report
    assert report["damaged"] == []
    assert report["missing"] == []


@pytest.fixture
def big_bed(bed: Bed) -> tuple[Bed, list[str]]:
    users = [bed.new_user(f"k{i}") for i in range(4)]  # four jobs at once (the default)
    for user in users:
        seed(bed, user, "INBOX", MESSAGES // 4, tag="crash", size=6000)
    bed.master_profile("p", users)
    return bed, users


@pytest.mark.parametrize("kill_at", [1, 37, 150])
def test_kill_9_mid_apply_then_apply_archives_each_message_once(
    big_bed: tuple[Bed, list[str]], kill_at: int
) -> None:
    bed, users = big_bed
    process = start_apply(bed, "--batch-messages", "3")
    reached = wait_for_placements(bed, process, kill_at)
    process.kill()
    process.wait()
    assert reached < MESSAGES, "apply finished before the kill; the test proves nothing"
    assert placement_count(bed.archive) < MESSAGES
    # The killed run has no protocol; its jobs tell what it was doing.
    code, out, _ = bed.run("runs", "--last", "--format", "json")
    assert code == 0
    killed = json.loads(out)
    assert killed["status"] == "running"
    states = {job["mailbox"]: job["state"] for job in killed["jobs"]}
    assert sorted(states) == sorted(users)
    assert "claimed" in states.values()
    assert set(states.values()) <= {"claimed", "done", "pending"}
    assert all(job["runner"] for job in killed["jobs"] if job["state"] != "pending")
    code, result = bed.apply_json()
    assert code == 0, result
    assert_exactly_once(bed, users, MESSAGES // 4)
    assert bed.apply_json()[1]["totals"]["archived"] == 0


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_finishes_the_batch_and_exits(
    big_bed: tuple[Bed, list[str]], signum: int, exit_code: int
) -> None:
    bed, users = big_bed
    process = start_apply(bed, "--batch-messages", "2")
    wait_for_placements(bed, process, 20)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == exit_code, err
    assert "Interrupted" in out
    partial = placement_count(bed.archive)
    assert 20 <= partial < MESSAGES
    index = Index.open(bed.archive / "index.sqlite")
    try:
        (run,) = index.last_runs(1)
        assert run["status"] == "interrupted"
    finally:
        index.close()
    assert bed.apply_json()[0] == 0
    assert_exactly_once(bed, users, MESSAGES // 4)


def failing_after(
    monkeypatch: pytest.MonkeyPatch, where: str, error: BaseException, at: int = 5
) -> Any:
    """Make BlobStore.put_many or a method of Index raise ``error`` on its ``at``-th call;
    returns the original, to put back.

    ``put_many`` in a worker process (``worker:put_many``): the workers apply starts
    are the faulty ones of tests/faulty_worker.py, counting calls over all of them."""
    if where == "worker:put_many":
        assert isinstance(error, OSError)
        counter = Path(os.environ.get("TMPDIR", "/tmp")) / f"put-many-{os.getpid()}-{time.time()}"
        command = [sys.executable, str(FAULTY_WORKER), str(counter), str(at), str(error.errno)]
        original_command = workers.worker_command
        monkeypatch.setattr(workers, "worker_command", lambda: command)
        return workers, ("worker_command", original_command)
    target: Any = BlobStore if where == "put_many" else Index
    original = getattr(target, where)
    calls = {"n": 0}

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == at:
            raise error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(target, where, failing)
    return target, original


def undo(monkeypatch: pytest.MonkeyPatch, target: Any, where: str, original: Any) -> None:
    if isinstance(original, tuple):
        monkeypatch.setattr(target, *original)
    else:
        monkeypatch.setattr(target, where, original)


def in_threads(bed: Bed, where: str) -> None:
    """A fault injected into this process needs the archiving in it: worker_processes off."""
    if where == "put_many":
        profile = bed.config_dir / "p.yaml"
        profile.write_text(profile.read_text() + "worker_processes: false\n")


@pytest.mark.parametrize("where", ["put_many", "worker:put_many", "record"])
def test_a_failing_write_fails_the_mailbox_and_the_next_apply_completes(
    big_bed: tuple[Bed, list[str]], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    bed, users = big_bed
    in_threads(bed, where)
    target, original = failing_after(monkeypatch, where, OSError(5, "Input/output error"))
    code, result = bed.apply_json("--batch-messages", "10")
    assert code == 3
    failed = [m for m in result["mailboxes"] if m["error"]]
    assert len(failed) == 1
    assert "Input/output error" in failed[0]["error"]
    assert result["totals"]["archived"] > 0  # the other mailbox went on
    undo(monkeypatch, target, where, original)
    assert bed.apply_json()[0] == 0
    assert_exactly_once(bed, users, MESSAGES // 4)


@pytest.mark.parametrize(
    ("where", "error"),
    [
        ("put_many", OSError(28, "No space left on device")),
        ("worker:put_many", OSError(28, "No space left on device")),
        ("record", OSError(28, "No space left on device")),
        ("record", sqlite3.OperationalError("database or disk is full")),
        ("claim_job", sqlite3.OperationalError("database or disk is full")),
    ],
)
def test_a_full_disk_stops_the_run_with_exit_14_and_the_next_apply_completes(
    big_bed: tuple[Bed, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    error: BaseException,
) -> None:
    """A full disk is not one mailbox's fault: the run stops with 14, naming the archive."""
    bed, users = big_bed
    in_threads(bed, where)
    target, original = failing_after(monkeypatch, where, error)
    code, _, err = bed.run("apply", "--batch-messages", "10")
    assert code == 14, err
    assert f"the archive {bed.archive} cannot be written: no space left on device" in err
    assert "Traceback" not in err
    code, _out, err = bed.run("archive", "stats")  # read-only commands still work
    assert code == 0, err
    undo(monkeypatch, target, where, original)
    assert bed.apply_json()[0] == 0
    assert_exactly_once(bed, users, MESSAGES // 4)


def test_dropped_connection_is_retried(bed: Bed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executor, "BACKOFF_SECONDS", 0.05)
    user = bed.new_user()
    seed(bed, user, "INBOX", 40, size=20_000)
    with DroppingProxy((bed.server.host, bed.server.port), drop_after=300_000, drops=1) as proxy:
        bed.master_profile("p", [user])
        profile = bed.config_dir / "p.yaml"
        profile.write_text(
            profile.read_text().replace(f"port: {bed.server.port}", f"port: {proxy.port}")
        )
        code, out, err = bed.run("apply", "--format", "json", "--batch-messages", "5")
        assert proxy.dropped == 1
    assert code == 0, out
    assert any(json.loads(line)["event"] == "connection_lost" for line in err.splitlines())
    assert_exactly_once(bed, [user], 40)


def test_connection_that_keeps_dropping_fails_only_its_mailbox(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor, "BACKOFF_SECONDS", 0.01)
    flaky, steady = bed.new_user(), bed.new_user()
    seed(bed, flaky, "INBOX", 60, size=20_000)  # 1.2 MB: far more than 4 connections carry
    seed(bed, steady, "INBOX", 3)
    with DroppingProxy((bed.server.host, bed.server.port), drop_after=100_000, drops=-1) as proxy:
        bed.master_profile("flaky", [flaky])
        profile = bed.config_dir / "flaky.yaml"
        profile.write_text(
            profile.read_text().replace(f"port: {bed.server.port}", f"port: {proxy.port}")
        )
        bed.master_profile("steady", [steady])
        code, result = bed.apply_json("--batch-messages", "2")
    assert code == 3
    errors = {m["login"]: m["error"] for m in result["mailboxes"]}
    assert errors[steady] is None
    assert errors[flaky] is not None
    assert proxy.dropped == executor.RETRIES + 1
    assert_exactly_once(bed, [steady], 3)
    rows = [r for r in bed.placements() if r[0] == flaky]
    assert 0 < len(rows) < 60  # what was committed before the drops stays, once
    assert len({(r[2], r[3]) for r in rows}) == len(rows)


def test_plan_and_apply_leave_the_server_unchanged(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 3)
    with bed.server.client(user) as client:
        client.select_folder("INBOX", readonly=True)
        before = client.fetch(client.search("ALL"), ["FLAGS"])
    bed.master_profile("p", [user])
    assert bed.run("plan")[0] == 0
    assert bed.run("apply")[0] == 0
    with bed.server.client(user) as client:
        client.select_folder("INBOX", readonly=True)
        after = client.fetch(client.search("ALL"), ["FLAGS"])
    assert {u: d[b"FLAGS"] for u, d in after.items()} == {u: d[b"FLAGS"] for u, d in before.items()}
    assert all(b"\\Seen" not in d[b"FLAGS"] for d in after.values())


def test_a_second_concurrent_apply_exits_13_naming_the_first(
    big_bed: tuple[Bed, list[str]],
) -> None:
    bed, users = big_bed
    first = start_apply(bed, "--batch-messages", "2")
    try:
        wait_for_placements(bed, first, 1)
        assert first.poll() is None, "the first apply ended too soon"
        code, _, err = bed.run("apply")
        assert code == 13
        assert f"pid {first.pid}" in err
        assert "imapsync-decl apply" in err
    finally:
        _out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert_exactly_once(bed, users, MESSAGES // 4)
