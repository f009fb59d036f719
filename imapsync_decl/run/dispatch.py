"""Runners that claim a profile's mailboxes from the index, one job at a time.

``apply`` writes a job per mailbox with work to do into the index (``store/jobs.py``)
and starts up to the profile's ``max_concurrent_jobs`` runners; each claims the next
pending job, archives that mailbox (in a mailbox worker process or in ``apply``),
marks the job done or failed, and claims again until none is left or the run is
stopped. The results come back in the order of the plan, whoever ran them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from imapsync_decl.plan.model import MailboxPlan
from imapsync_decl.plan.parallel import in_parallel
from imapsync_decl.run.results import MailboxResult
from imapsync_decl.store.interfaces import RunJobs
from imapsync_decl.store.jobs import runner_name


def run_claimed(
    jobs: RunJobs,
    run_id: str,
    profile: str,
    mailboxes: Sequence[tuple[int, MailboxPlan]],
    runners: int,
    archive: Callable[[MailboxPlan], MailboxResult | None],
    go_on: Callable[[], bool],
) -> dict[int, MailboxResult]:
    """Archive ``mailboxes`` (their positions in the profile's plan, and their plans) as
    jobs of the run, on up to ``runners`` threads; the results by position. ``archive``
    gives None for a mailbox it did not start (the run is stopping): its job is pending
    again. No job is claimed once ``go_on`` says no, or once a runner has raised (the
    exception comes out of this call; the job it was on stays claimed)."""
    plans = dict(mailboxes)
    jobs.add_jobs(run_id, profile, [(position, plan.login) for position, plan in mailboxes])
    results: dict[int, MailboxResult] = {}
    runner = runner_name()
    failed = threading.Event()  # a runner's exception (a full disk) ends the claiming

    def run() -> None:
        try:
            while go_on() and not failed.is_set():
                job = jobs.claim_job(run_id, profile, runner)
                if job is None:
                    return
                result = archive(plans[job.position])
                if result is None:
                    jobs.release_job(job.id)
                    return
                results[job.position] = result
                jobs.finish_job(job.id, result.error)
        except BaseException:
            failed.set()
            raise

    count = max(1, min(runners, len(mailboxes)))
    if mailboxes:
        in_parallel(count, [run] * count)
    return results
