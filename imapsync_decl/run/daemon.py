"""The daemon: runs each profile whose schedule is due, one run at a time.

For every profile with a ``schedule`` the daemon keeps its next run time
(:mod:`imapsync_decl.config.cron`, local time). It sleeps until the earliest is due,
waking at least every ``reload_every`` seconds (default 60) to re-read the configuration, then
runs plan + apply for each due profile through the same code as ``apply``.
Time is injectable (``clock``, ``sleep``, ``tz``) so tests need not wait.

* The configuration is read again before every run and on every wake-up: a
  changed schedule takes effect without a restart. An invalid configuration
  is logged (once per distinct set of problems) and the previous schedules and
  profiles stay in force until it is fixed.
* The archive lock keeps runs apart: when another command holds it, the
  occurrence is skipped (``run_skipped`` naming the holder) and the profile
  waits for its next one.
* Occurrences that pass while a run is going are not caught up: the next run
  is the first occurrence after the run ends.
* A stop (SIGTERM / SIGINT, see :meth:`Daemon.request_stop`) while idle ends the
  daemon at once with exit 0; during a run the current batch is committed, then
  the daemon ends with the run's exit code (143 / 130).
"""

from __future__ import annotations

import contextlib
import os
import select
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from imapsync_decl.config.cron import CronSchedule, parse
from imapsync_decl.config.resolve import Config
from imapsync_decl.errors import ConfigError, ExitCode, ImapsyncError, UsageError
from imapsync_decl.run.executor import Batching, StopRequested
from imapsync_decl.run.results import ApplyResult
from imapsync_decl.run.service import apply_profiles
from imapsync_decl.sources.users import load_with_index_users
from imapsync_decl.store import ArchiveLocked

log = structlog.get_logger(__name__)

RELOAD_SECONDS = 60.0

Runner = Callable[[Path, Config, str, StopRequested, str], "ApplyResult | None"]


class NoSchedules(UsageError):
    """No profile of the configuration has a schedule."""


@dataclass(frozen=True)
class RunRecord:
    """One occurrence the daemon handled (for its caller and the tests)."""

    profile: str
    due: float  # the scheduled time (Unix seconds)
    started: float
    run_id: str
    status: str  # ok, partial, stale, interrupted, failed, skipped
    exit_code: int


def default_runner(
    config_dir: Path,
    config: Config,
    profile: str,
    stop: StopRequested,
    run_id: str,
    *,
    metrics_file: Path | None = None,
) -> ApplyResult | None:
    """plan + apply of one profile, exactly as `apply --profile NAME` does it: with its
    health pings, and the metrics file (``metrics_file``, else the Archive document's)
    written after the run."""
    return apply_profiles(
        config_dir,
        config,
        (profile,),
        None,
        stop=stop,
        batching=Batching(),
        run_id=run_id,
        metrics_file=metrics_file,
    )


def load_valid_config(config_dir: Path) -> Config:
    return load_with_index_users(config_dir, str(config_dir))


class _Waker:
    """An interruptible sleep: a signal handler wakes it by writing to a pipe."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def sleep(self, seconds: float) -> None:
        ready, _, _ = select.select([self._read], [], [], max(0.0, seconds))
        if ready:
            os.read(self._read, 4096)

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # woken many times already
            os.write(self._write, b"x")

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


class Daemon:
    """Runs the scheduled profiles of one configuration directory."""

    def __init__(
        self,
        config_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] | None = None,
        tz: tzinfo | None = None,
        runner: Runner = default_runner,
        stop: StopRequested | None = None,
        load: Callable[[Path], Config] = load_valid_config,
        reload_every: float = RELOAD_SECONDS,
    ) -> None:
        self.config_dir = config_dir
        self.reload_every = reload_every
        self.clock = clock
        self.tz = tz
        self.runner = runner
        self.stop = stop if stop is not None else StopRequested()
        self._load = load
        self._waker: _Waker | None = None
        if sleep is None:
            self._waker = _Waker()
            sleep = self._waker.sleep
        self.sleep = sleep
        self.config: Config | None = None
        self.schedules: dict[str, CronSchedule] = {}
        self.next_due: dict[str, float] = {}
        self.runs: list[RunRecord] = []
        self._last_problems: tuple[str, ...] = ()

    # --- signals ---------------------------------------------------------------------------

    def request_stop(self, signum: int, frame: FrameType | None = None) -> None:
        """A signal handler: ask the daemon (and a running apply) to stop."""
        self.stop.handler(signum, frame)
        if self._waker is not None:
            self._waker.wake()

    def close(self) -> None:
        if self._waker is not None:
            self._waker.close()
            self._waker = None

    # --- configuration ---------------------------------------------------------------------

    def reload(self, *, first: bool = False) -> bool:
        """Read the configuration again; keep the previous one if it is invalid.

        The first load raises (ConfigError, NoSchedules): the daemon cannot start.
        """
        config = self._load(self.config_dir)
        if not config.ok:
            if first:
                raise ConfigError(config.problems)
            problems = tuple(str(p) for p in config.errors)
            if problems != self._last_problems:
                self._last_problems = problems
                log.error("config_invalid", problems=list(problems), kept="previous schedules")
            return False
        self._last_problems = ()
        schedules = {
            item.doc.name: parse(item.doc.schedule)
            for item in config.profiles
            if item.doc.schedule is not None
        }
        if first and not schedules:
            names = ", ".join(item.doc.name for item in config.profiles) or "none"
            raise NoSchedules(
                f"no profile in {self.config_dir} has a schedule (profiles: {names}); "
                'add e.g. `schedule: "0 2 * * *"` to a profile'
            )
        now = self.clock()
        changed = {
            name: schedule.expression
            for name, schedule in schedules.items()
            if name not in self.schedules or self.schedules[name].expression != schedule.expression
        }
        removed = sorted(set(self.schedules) - set(schedules))
        for name in removed:
            self.next_due.pop(name, None)
        for name in changed:
            self.next_due[name] = schedules[name].next_after(now, self.tz)
        self.config, self.schedules = config, schedules
        if changed or removed:
            log.info(
                "schedules_loaded",
                schedules={name: s.text for name, s in schedules.items()},
                next_runs={name: self._iso(t) for name, t in sorted(self.next_due.items())},
                removed=removed,
            )
        if not schedules and not first:
            log.warning("no_schedules", message="no profile has a schedule; nothing will run")
        return True

    # --- the loop --------------------------------------------------------------------------

    def run(self, *, once: bool = False) -> int:
        """Run due profiles until stopped; with ``once`` only the next due time's runs.

        Returns the exit code: 0 when stopped while idle, else the last run's code
        (the highest of one due time's runs).
        """
        if self.config is None:
            self.reload(first=True)
        while True:
            if self.stop:
                log.info("daemon_stopped", signal=self.stop.signal)
                return ExitCode.OK
            due_at = min(self.next_due.values(), default=None)
            now = self.clock()
            if due_at is None or due_at > now:
                wait = self.reload_every if due_at is None else min(due_at - now, self.reload_every)
                self.sleep(wait)
                if self.stop:
                    continue
                self.reload()
                continue
            code = self._run_due(due_at)
            if self.stop:
                log.info("daemon_stopped", signal=self.stop.signal, exit_code=int(code))
                return code
            if once:
                return code

    def _run_due(self, due_at: float) -> int:
        """Run every profile due at ``due_at`` (after reading the configuration again)."""
        self.reload()
        due = sorted(name for name, t in self.next_due.items() if t <= due_at)
        worst = 0
        for name in due:
            if self.stop:
                return self.stop.exit_code
            scheduled = self.next_due[name]
            code = self._run_one(name, scheduled)
            worst = max(worst, code)
            self.next_due[name] = self.schedules[name].next_after(
                max(self.clock(), scheduled), self.tz
            )
            log.info("run_scheduled", profile=name, next_run=self._iso(self.next_due[name]))
        return worst

    def _run_one(self, name: str, due: float) -> int:
        assert self.config is not None
        run_id = str(uuid.uuid4())
        started = self.clock()
        context: dict[str, Any] = {"run_id": run_id, "profile": name}
        log.info("run_started", **context, due=self._iso(due))
        try:
            result = self.runner(self.config_dir, self.config, name, self.stop, run_id)
        except ArchiveLocked as exc:
            log.warning("run_skipped", **context, holder=exc.holder, reason=exc.message)
            return self._record(name, due, started, run_id, "skipped", exc.exit_code)
        except ImapsyncError as exc:
            log.error("run_failed", **context, error=exc.message, exit_code=int(exc.exit_code))
            return self._record(name, due, started, run_id, "failed", exc.exit_code)
        except Exception as exc:  # a bug in one run must not end the schedule of all
            log.exception("run_failed", **context, error=repr(exc), exit_code=1)
            return self._record(name, due, started, run_id, "failed", ExitCode.INTERNAL)
        if result is None:  # stopped before anything was archived
            code = self.stop.exit_code
            log.info("run_finished", **context, status="interrupted", exit_code=int(code))
            return self._record(name, due, started, run_id, "interrupted", code)
        totals = result.to_json()["totals"]
        log.info(
            "run_finished",
            **context,
            status=result.status,
            exit_code=int(result.exit_code),
            archived=totals["archived"],
            already_present=totals["already_present"],
            failed_mailboxes=totals["failed_mailboxes"],
        )
        return self._record(name, due, started, run_id, result.status, result.exit_code)

    def _record(
        self, name: str, due: float, started: float, run_id: str, status: str, code: int
    ) -> int:
        self.runs.append(RunRecord(name, due, started, run_id, status, int(code)))
        return int(code)

    def _iso(self, moment: float) -> str:
        return datetime.fromtimestamp(moment, self.tz).astimezone(self.tz).isoformat()
