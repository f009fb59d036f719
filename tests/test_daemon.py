"""The daemon against the real Dovecot, in-process, with a fake clock: due profiles are
archived, unscheduled ones never, a held archive lock skips an occurrence, and a changed
schedule is picked up without a restart."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import structlog

from imapsync_decl.run.daemon import Daemon
from imapsync_decl.store import ArchiveLock

from bed import Bed, seed, sha

pytestmark = pytest.mark.dovecot

BERLIN = ZoneInfo("Europe/Berlin")


def local(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=BERLIN).timestamp()


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start
        self.on_sleep: list[object] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        if self.on_sleep:
            action = self.on_sleep.pop(0)
            if callable(action):
                action()
        self.now += seconds


def scheduled(bed: Bed, name: str, users: list[str], schedule: str) -> None:
    bed.master_profile(name, users, folders=f'schedule: "{schedule}"\n')


def run_ids(archive: Path) -> list[str]:
    with sqlite3.connect(archive / "index.sqlite") as db:
        return [row[0] for row in db.execute("SELECT id FROM runs ORDER BY started_at")]


def test_the_daemon_archives_due_profiles_only(bed: Bed) -> None:
    due, manual = bed.new_user("d"), bed.new_user("m")
    seed(bed, due, "INBOX", 3, tag=due)
    seed(bed, due, "Projekte", 2, tag=due)
    seed(bed, manual, "INBOX", 2, tag=manual)
    scheduled(bed, "nightly", [due], "0 2 * * *")
    bed.master_profile("manual", [manual])
    clock = FakeClock(local(2024, 3, 10, 1, 59))
    daemon = Daemon(bed.config_dir, clock=clock, sleep=clock.sleep, tz=BERLIN, reload_every=600)

    with structlog.testing.capture_logs() as logs:
        assert daemon.run(once=True) == 0
    assert clock.now == local(2024, 3, 10, 2, 0)
    assert [(r.profile, r.due, r.status) for r in daemon.runs] == [
        ("nightly", local(2024, 3, 10, 2, 0), "ok")
    ]
    placements = bed.placements()
    assert len(placements) == 5
    assert {p[0] for p in placements} == {due}, "the profile without schedule never runs"
    for folder in ("INBOX", "Projekte"):
        on_server = {sha(b) for b in bed.server_messages(due, folder).values()}
        assert {p[4] for p in placements if p[1] == folder} == on_server
    started = next(e for e in logs if e["event"] == "run_started")
    finished = next(e for e in logs if e["event"] == "run_finished")
    assert started["run_id"] == finished["run_id"] == daemon.runs[0].run_id
    assert (finished["profile"], finished["status"], finished["exit_code"]) == ("nightly", "ok", 0)
    assert finished["archived"] == 5
    assert run_ids(bed.archive) == [daemon.runs[0].run_id], "the run is in the index"

    # The next occurrence is the next night; nothing new to archive.
    seed(bed, due, "INBOX", 1, tag="later")
    assert daemon.run(once=True) == 0
    assert daemon.runs[1].due == local(2024, 3, 11, 2, 0)
    assert len(bed.placements()) == 6


def test_an_occurrence_is_skipped_while_another_command_holds_the_lock(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 2)
    scheduled(bed, "nightly", [user], "0 2 * * *")
    clock = FakeClock(local(2024, 3, 10, 1, 0))
    daemon = Daemon(bed.config_dir, clock=clock, sleep=clock.sleep, tz=BERLIN, reload_every=600)

    with (
        ArchiveLock(bed.archive, "imapsync-decl users sync"),
        structlog.testing.capture_logs() as logs,
    ):
        assert daemon.run(once=True) == 13
    skipped = next(e for e in logs if e["event"] == "run_skipped")
    assert skipped["profile"] == "nightly"
    assert skipped["holder"]["command"] == "imapsync-decl users sync"
    assert "is in use by" in skipped["reason"]
    assert not (bed.archive / "index.sqlite").exists(), "nothing was archived"

    assert daemon.run(once=True) == 0
    assert [(r.status, r.due) for r in daemon.runs] == [
        ("skipped", local(2024, 3, 10, 2, 0)),
        ("ok", local(2024, 3, 11, 2, 0)),
    ]
    assert len(bed.placements()) == 2


def test_a_changed_schedule_is_picked_up_without_a_restart(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 2)
    scheduled(bed, "nightly", [user], "0 2 * * *")
    clock = FakeClock(local(2024, 3, 10, 1, 0))
    daemon = Daemon(bed.config_dir, clock=clock, sleep=clock.sleep, tz=BERLIN, reload_every=600)

    def change() -> None:
        scheduled(bed, "nightly", [user], "30 3 * * *")

    clock.on_sleep = [change]
    with structlog.testing.capture_logs() as logs:
        assert daemon.run(once=True) == 0
    assert [(r.profile, r.due) for r in daemon.runs] == [("nightly", local(2024, 3, 10, 3, 30))]
    assert clock.now == local(2024, 3, 10, 3, 30)
    loaded = [e for e in logs if e["event"] == "schedules_loaded"]
    assert loaded[-1]["schedules"] == {"nightly": "30 3 * * *"}
    assert len(bed.placements()) == 2
