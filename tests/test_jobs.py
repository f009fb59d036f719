"""The jobs of a run: mailboxes claimed from the index one at a time, never twice.

``apply`` writes one job per mailbox with work to do and its runners claim them from
the index (``store/jobs.py``, ``run/dispatch.py``). Claims are atomic across
connections; a run that is killed leaves jobs that tell what it did, and ``runs``
shows them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from imapsync_decl.cli.main import main
from imapsync_decl.plan.model import MailboxPlan
from imapsync_decl.run.dispatch import run_claimed
from imapsync_decl.run.results import MailboxResult
from imapsync_decl.store import Archive, Index

from bed import Bed, seed


def _plan(login: str) -> MailboxPlan:
    return MailboxPlan(
        profile="p", source="csv", archive_user=login, archive_folder="", login=login, email=None
    )


def test_runners_on_their_own_connections_never_claim_a_job_twice(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with Archive.open(root) as archive:
        archive.index.begin_run("r1", "apply")
        archive.index.add_jobs("r1", "p", [(n, f"user{n}@example.test") for n in range(300)])
        archive.index.add_jobs("r1", "other", [(0, "x@example.test")])
    claimed: list[list[int]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def runner(n: int) -> None:
        index = Index.open(root / "index.sqlite")  # a connection of its own, like a process
        try:
            start.wait()
            while (job := index.claim_job("r1", "p", f"runner-{n}")) is not None:
                claimed[n].append(job.position)
                index.finish_job(job.id)
        finally:
            index.close()

    threads = [threading.Thread(target=runner, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = sorted(p for positions in claimed for p in positions)
    assert every == list(range(300))
    with Archive.open(root) as archive:
        jobs = archive.index.run_jobs("r1")
    assert [j["state"] for j in jobs if j["profile"] == "p"] == ["done"] * 300
    # another profile's job is not the runners' of this one
    assert [(j["profile"], j["state"]) for j in jobs if j["profile"] != "p"] == [
        ("other", "pending")
    ]


def test_claimed_mailboxes_come_back_in_plan_order_done_or_failed(tmp_path: Path) -> None:
    plans = [(n, _plan(f"u{n}@example.test")) for n in range(6)]

    def archive(plan: MailboxPlan) -> MailboxResult:
        result = MailboxResult(plan.profile, plan.login, plan.archive_user, plan.archive_folder)
        if plan.login == "u3@example.test":
            result.error = "authentication failed"
        return result

    with Archive.open(tmp_path / "archive") as store:
        store.index.begin_run("r1", "apply")
        results = run_claimed(store.index, "r1", "p", plans, 3, archive, lambda: True)
        jobs = store.index.run_jobs("r1")
    assert sorted(results) == list(range(6))
    assert [results[n].login for n in range(6)] == [f"u{n}@example.test" for n in range(6)]
    assert [(j["mailbox"], j["state"], j["error"]) for j in jobs] == [
        (f"u{n}@example.test", *(("failed", "authentication failed") if n == 3 else ("done", None)))
        for n in range(6)
    ]
    assert all(j["runner"] == f"{socket.gethostname()}:{os.getpid()}" for j in jobs)


def test_a_stopping_run_claims_nothing_more_and_gives_back_what_it_did_not_start(
    tmp_path: Path,
) -> None:
    plans = [(n, _plan(f"u{n}@example.test")) for n in range(4)]
    stopping = threading.Event()

    def archive(plan: MailboxPlan) -> MailboxResult | None:
        if plan.login == "u1@example.test":
            stopping.set()  # the stop comes while this mailbox is archived
        return MailboxResult(plan.profile, plan.login, plan.archive_user, plan.archive_folder)

    def not_started(plan: MailboxPlan) -> MailboxResult | None:
        return None  # the stop came between the claim and the start

    runner = f"{socket.gethostname()}:{os.getpid()}"
    with Archive.open(tmp_path / "archive") as store:
        store.index.begin_run("r1", "apply")
        results = run_claimed(
            store.index, "r1", "p", plans, 1, archive, lambda: not stopping.is_set()
        )
        assert list(results) == [0, 1]
        assert [(j["state"], j["runner"]) for j in store.index.run_jobs("r1")] == [
            ("done", runner),
            ("done", runner),
            ("pending", None),
            ("pending", None),
        ]
        store.index.begin_run("r2", "apply")
        assert run_claimed(store.index, "r2", "p", plans, 1, not_started, lambda: True) == {}
        assert [(j["state"], j["claimed_at"]) for j in store.index.run_jobs("r2")] == [
            ("pending", None)
        ] * 4


def test_a_runner_that_raises_stops_the_others_claiming(tmp_path: Path) -> None:
    """An exception out of a mailbox (a full disk) is the run's end: the other runner
    finishes the mailbox it is on and claims no more; the exception comes out."""
    plans = [(n, _plan(f"u{n}@example.test")) for n in range(5)]
    raising = threading.Event()

    def archive(plan: MailboxPlan) -> MailboxResult:
        if plan.login == "u0@example.test":
            raising.wait(30)
            raise OSError(28, "No space left on device")
        raising.set()  # u1, on the other runner: now u0 raises
        time.sleep(0.2)  # ... and its runner has said so before this one claims again
        return MailboxResult(plan.profile, plan.login, plan.archive_user, plan.archive_folder)

    with Archive.open(tmp_path / "archive") as store:
        store.index.begin_run("r1", "apply")
        with pytest.raises(OSError, match="No space left"):
            run_claimed(store.index, "r1", "p", plans, 2, archive, lambda: True)
        states = [j["state"] for j in store.index.run_jobs("r1")]
    assert states == ["claimed", "done", "pending", "pending", "pending"]


_KILLED_RUN = """
import sys, time
from pathlib import Path
from imapsync_decl.plan.model import MailboxPlan
from imapsync_decl.run.dispatch import run_claimed
from imapsync_decl.run.results import MailboxResult
from imapsync_decl.store import Archive

plans = [(n, MailboxPlan(profile="staff", source="csv", archive_user=f"u{n}", archive_folder="",
                         login=f"u{n}@example.test", email=None)) for n in range(3)]

def archive(plan):
    if plan.login == "u1@example.test":
        print("busy", flush=True)
        time.sleep(600)  # killed here
    return MailboxResult(plan.profile, plan.login, plan.archive_user, plan.archive_folder)

with Archive.open(Path(sys.argv[1])) as store:
    store.index.begin_run("killed-run", "apply")
    run_claimed(store.index, "killed-run", "staff", plans, 1, archive, lambda: True)
"""


def test_a_killed_run_shows_which_mailboxes_were_done_busy_and_never_started(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "archive"
    run = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert run.stdout is not None
        assert run.stdout.readline() == "busy\n"
        os.kill(run.pid, signal.SIGKILL)
    finally:
        run.kill()
        run.wait()
    assert main(["runs", "--archive", str(root), "killed-run"]) == 0
    out = capsys.readouterr().out
    runner = f"{socket.gethostname()}:{run.pid}"
    assert "  staff/u0@example.test: done\n" in out
    assert f"  staff/u1@example.test: being archived by {runner} since " in out
    assert "  staff/u2@example.test: not started" in out
    assert main(["runs", "--archive", str(root), "killed-run", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(j["mailbox"], j["state"]) for j in doc["jobs"]] == [
        ("u0@example.test", "done"),
        ("u1@example.test", "claimed"),
        ("u2@example.test", "pending"),
    ]


@pytest.mark.dovecot
def test_apply_claims_a_job_for_each_mailbox_with_work_and_none_for_the_others(bed: Bed) -> None:
    first, second = bed.new_user("a"), bed.new_user("b")
    seed(bed, first, "INBOX", 2)
    seed(bed, second, "INBOX", 1)
    bed.master_profile("staff", [first, second])
    code, run = bed.apply_json()
    assert code == 0, run
    seed(bed, second, "INBOX", 1, tag="late")
    code, again = bed.apply_json()
    assert code == 0, again
    assert again["totals"]["archived"] == 1
    with Archive.open(bed.archive) as archive:
        jobs = archive.index.run_jobs(run["run_id"])
        later = archive.index.run_jobs(again["run_id"])
    runner = f"{socket.gethostname()}:{os.getpid()}"
    assert sorted((j["mailbox"], j["state"], j["runner"]) for j in jobs) == sorted(
        [(first, "done", runner), (second, "done", runner)]
    )
    # the second run: only the mailbox with a new message was a job
    assert [(j["mailbox"], j["state"]) for j in later] == [(second, "done")]
