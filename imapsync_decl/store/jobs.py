"""The ``jobs`` table of the index: the mailboxes of a run, claimed one at a time by its runners.

``apply`` does not hand its mailboxes out from memory: when a profile's turn comes,
it writes one job per mailbox with work to do (``add_jobs``), and each of its
runners (up to the profile's ``max_concurrent_jobs``) claims the next pending job
(``claim_job``, one ``UPDATE ... RETURNING`` in a transaction of its own, so two
runners never get the same job), archives that mailbox, and marks the job done or
failed (``finish_job``). A runner is named by host and process id; on one index,
runners of other processes or machines could claim from the same run the same way.

What the table tells: a run that was killed has no protocol, but its jobs say which
mailboxes were done, which one each runner was working on (``claimed``, with the
runner and the time) and which were never started (``pending``); ``runs show`` prints
that. A stopped run leaves its unstarted jobs pending; the next ``apply`` plans anew
and makes jobs of its own.

The jobs are the coordination of a run, not archived content: they are not written
to the journal (the run's protocol is), so an index rebuilt from the journal has
none for the runs before it. A job names its mailbox by profile and login, the way
the plan does, and holds no credentials: the runner that claims it resolves them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

from imapsync_decl.store.connection import IndexConnection
from imapsync_decl.store.rows import Job, now_text


def runner_name() -> str:
    """Who claims: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class JobQueue(IndexConnection):
    """The jobs of the index: added, claimed, finished, listed."""

    def add_jobs(self, run_id: str, profile: str, mailboxes: Sequence[tuple[int, str]]) -> None:
        """One pending job per (position, login) of ``profile``'s plan, in one transaction."""
        if not mailboxes:
            return
        with self.atomic() as db:
            db.executemany(
                "INSERT INTO jobs (run_id, profile, position, mailbox) VALUES (?, ?, ?, ?)",
                [(run_id, profile, position, login) for position, login in mailboxes],
            )

    def claim_job(self, run_id: str, profile: str, runner: str) -> Job | None:
        """The next pending job of ``profile`` in the run, now claimed by ``runner``; None
        when none is left."""
        with self.atomic() as db:
            row = db.execute(
                "UPDATE jobs SET state = 'claimed', runner = ?, claimed_at = ?"
                " WHERE id = (SELECT id FROM jobs WHERE run_id = ? AND profile = ?"
                " AND state = 'pending' ORDER BY position LIMIT 1)"
                " RETURNING id, profile, position, mailbox",
                (runner, now_text(), run_id, profile),
            ).fetchone()
        if row is None:
            return None
        return Job(int(row[0]), str(row[1]), int(row[2]), str(row[3]))

    def finish_job(self, job_id: int, error: str | None = None) -> None:
        """The job's mailbox is archived (``done``), or failed with ``error``."""
        with self.atomic() as db:
            db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, error = ? WHERE id = ?",
                ("done" if error is None else "failed", now_text(), error, job_id),
            )

    def release_job(self, job_id: int) -> None:
        """A claimed job that was not started after all (the run is stopping): pending again."""
        with self.atomic() as db:
            db.execute(
                "UPDATE jobs SET state = 'pending', runner = NULL, claimed_at = NULL"
                " WHERE id = ? AND state = 'claimed'",
                (job_id,),
            )

    def run_jobs(self, run_id: str) -> list[dict[str, Any]]:
        """The jobs of a run, in plan order: profile, mailbox, state, runner, claimed_at,
        finished_at, error; none in an index older than the table (opened read-only)."""
        if self._one("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'") is None:
            return []
        rows = self._all(
            "SELECT profile, mailbox, state, runner, claimed_at, finished_at, error FROM jobs"
            " WHERE run_id = ? ORDER BY id",
            (run_id,),
        )
        keys = ("profile", "mailbox", "state", "runner", "claimed_at", "finished_at", "error")
        return [dict(zip(keys, row, strict=True)) for row in rows]
