"""The protocols of past runs, as kept in the index: listing and showing them.

Every ``apply`` stores its protocol (the document ``apply --format json`` prints) in the
``runs`` table when it ends. This module reads them back for the ``runs`` command. It only
reads documents: keys it does not know are ignored and keys it misses are shown as absent,
so protocols written by older or newer versions are shown as well as they can be.
Passwords are never part of a protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from imapsync_decl.errors import UsageError
from imapsync_decl.store import Index

UNFINISHED = "not finished: still running, or ended without recording its end"


class UnknownRun(UsageError):
    """No run has this id (or the prefix is ambiguous)."""


def find_run(index: Index, run_id: str | None) -> dict[str, Any]:
    """The run ``run_id`` (a whole id, or a prefix naming exactly one run), or the newest
    run when ``run_id`` is None. Raises UnknownRun (exit 10) otherwise."""
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
    made from its row, with the same keys for what is known."""
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


def render_run_list(runs: Sequence[dict[str, Any]]) -> str:
    """One line per run, newest first, with the totals of its protocol."""
    if not runs:
        return "no runs yet"
    header = (
        "RUN ID",
        "COMMAND",
        "STARTED",
        "FINISHED",
        "STATUS",
        "ARCHIVED",
        "ALREADY PRESENT",
        "FAILED MAILBOXES",
    )
    table = [header]
    for run in runs:
        totals = run.get("totals") or {}
        table.append(
            (
                str(run["id"]),
                str(run.get("command") or "-"),
                str(run.get("started_at") or "-"),
                str(run.get("finished_at") or "-"),
                str(run.get("status") or "-"),
                _count(totals.get("archived")),
                _count(totals.get("already_present")),
                _failed(totals),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    ]
    lines.append(f"{len(runs)} run{'' if len(runs) == 1 else 's'}")
    return "\n".join(lines)


def render_run(run: dict[str, Any]) -> str:
    """A run's whole protocol for humans: start and end, status, warnings, per mailbox and
    folder what was archived, already present, vanished or skipped, and every error."""
    doc = protocol_document(run)
    lines = [
        f"Run {run['id']} ({run.get('command') or 'apply'}): {doc.get('status') or run.get('status')}"
    ]
    lines.append(f"  started   {doc.get('started_at') or run.get('started_at') or '-'}")
    finished = doc.get("finished_at") or run.get("finished_at")
    lines.append(f"  finished  {finished or '- (' + UNFINISHED + ')'}")
    if doc.get("exit_code") is not None:
        lines.append(f"  exit code {doc['exit_code']}")
    if doc.get("plan_id"):
        lines.append(f"  plan      {doc['plan_id']}")
    for warning in doc.get("warnings") or ():
        lines.append(f"  ! warning: {warning}")
    mailboxes = doc.get("mailboxes") or []
    for mailbox in mailboxes:
        lines.extend(_mailbox_lines(mailbox))
    totals = doc.get("totals")
    if isinstance(totals, dict):
        count = totals.get("mailboxes", len(mailboxes))
        lines.append(
            f"Total: {count} mailbox{'' if count == 1 else 'es'} ({_failed(totals)} failed),"
            f" archived {_count(totals.get('archived'))},"
            f" already present {_count(totals.get('already_present'))},"
            f" vanished {_count(totals.get('vanished'))}."
        )
    return "\n".join(lines)


def _mailbox_lines(mailbox: dict[str, Any]) -> list[str]:
    folders = [f for f in mailbox.get("folders") or () if isinstance(f, dict)]
    skipped = sum(1 for f in folders if _skipped(f))
    vanished = sum(int(f.get("vanished") or 0) for f in folders)
    head = (
        f"  Mailbox {mailbox.get('archive_folder', '?')} (profile {mailbox.get('profile', '?')},"
        f" login {mailbox.get('login', '?')}) -> archive user {mailbox.get('archive_user', '?')}:"
        f" archived {_count(mailbox.get('archived'))},"
        f" already present {_count(mailbox.get('already_present'))}, vanished {vanished},"
        f" {skipped} folder{'' if skipped == 1 else 's'} skipped"
    )
    excluded = mailbox.get("excluded_folders")
    if excluded:
        head += f", {excluded} excluded"
    lines = [head]
    if mailbox.get("error"):
        lines.append(f"    ! error: {mailbox['error']}")
    width = max((len(str(f.get("path", ""))) for f in folders), default=0)
    for folder in folders:
        path = str(folder.get("path", "?")).ljust(width)
        action = str(folder.get("action", "?")).ljust(7)
        if folder.get("error"):
            lines.append(f"    ! {path}  {action}  error: {folder['error']}")
        elif _skipped(folder):
            lines.append(f"      {path}  {action}  skipped")
        else:
            lines.append(
                f"      {path}  {action}  archived {_count(folder.get('archived'))},"
                f" already present {_count(folder.get('already_present'))},"
                f" vanished {_count(folder.get('vanished'))}"
            )
    return lines


def _skipped(folder: dict[str, Any]) -> bool:
    if "skipped" in folder:
        return bool(folder["skipped"])
    return folder.get("action") == "skip"


def _count(value: Any) -> str:
    return "-" if value is None else str(value)


def _failed(totals: dict[str, Any]) -> str:
    return _count(totals.get("failed_mailboxes"))
