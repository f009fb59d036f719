"""The protocols of past runs, as kept in the index: finding them and their documents.

Every ``apply`` stores its protocol (the document ``apply --format json`` prints) in the
``runs`` table when it ends; one that never ended (killed) has its jobs to tell what it
did. This module reads them back for the ``runs`` command, which renders them
(:mod:`imapsync_decl.cli.render`). Passwords are never part of a protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from imapsync_decl.errors import UsageError

if TYPE_CHECKING:
    from imapsync_decl.store import Index

UNFINISHED = "not finished: still running, or ended without recording its end"


class UnknownRun(UsageError):
    """No run has this id (or the prefix is ambiguous)."""


def find_run(index: Index, run_id: str | None) -> dict[str, Any]:
    """The run ``run_id`` (a whole id, or a prefix naming exactly one run), or the newest
    run when ``run_id`` is None, with its ``jobs`` (``store/jobs.py``). Raises UnknownRun
    (exit 10) otherwise."""
    run = _find_run(index, run_id)
    return {**run, "jobs": index.run_jobs(str(run["id"]))}


def _find_run(index: Index, run_id: str | None) -> dict[str, Any]:
    if run_id is None:
        newest = index.last_runs(1)
        if not newest:
            raise UnknownRun("there are no runs yet in this archive")
        return newest[0]
    run = index.get_run(run_id) if run_id else None
    if run is not None:
        return run
    matches = index.run_ids_starting_with(run_id) if run_id else []
    if len(matches) == 1:
        found = index.get_run(matches[0])
        if found is not None:
            return found
    if len(matches) > 1:
        raise UnknownRun(
            f"run id {run_id!r} is ambiguous: it starts {len(matches)} runs"
            f" ({', '.join(matches[:5])}{', ...' if len(matches) > 5 else ''})"
        )
    raise UnknownRun(f"no run with id {run_id!r} in this archive (`imapsync-decl runs` lists them)")


def protocol_document(run: dict[str, Any]) -> dict[str, Any]:
    """The stored protocol of a run; a run without one (not finished) gets a short document
    made from its row, with the same keys for what is known, and its jobs: which mailboxes
    were done, which ones were being archived (claimed) and which were never started."""
    summary = run.get("summary")
    if isinstance(summary, dict):
        return summary
    return {
        "run_id": run["id"],
        "command": run.get("command"),
        "started_at": run.get("started_at"),
        "finished_at": run.get("finished_at"),
        "status": run.get("status"),
        "note": UNFINISHED,
        "jobs": run.get("jobs") or [],
    }


def list_document(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``runs --format json``: one object per run, newest first."""
    return [
        {
            "id": r["id"],
            "command": r.get("command"),
            "started_at": r.get("started_at"),
            "finished_at": r.get("finished_at"),
            "status": r.get("status"),
            "totals": r.get("totals"),
        }
        for r in runs
    ]
