"""Text for humans: every table and report the commands print on stdout.

The plan (read like `terraform plan`), the summary of a run, the protocols of past
runs, the archive's statistics, and the tables of ``validate``, ``mailboxes`` and
``users list``. Stored protocols are shown as well as they can be: keys a renderer
does not know are ignored and keys it misses are shown as absent, so protocols
written by older or newer versions are shown too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imapsync_decl.errors import Problem
from imapsync_decl.store.runs import UNFINISHED, protocol_document

if TYPE_CHECKING:
    from imapsync_decl.config.resolve import Config, Mailbox
    from imapsync_decl.plan.model import FolderPlan, Plan
    from imapsync_decl.run.results import ApplyResult
    from imapsync_decl.store.stats import ArchiveStats

SYMBOLS = {"archive": "+", "rescan": "~", "skip": " ", "error": "!"}


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover


def plural(count: int, word: str) -> str:
    """``1 mailbox``, ``2 mailboxes``, ``0 errors``."""
    if count == 1:
        return f"1 {word}"
    return f"{count} {'mailboxes' if word == 'mailbox' else word + 's'}"


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a table whose first row is the header: columns padded to their
    widest cell, two spaces apart, no trailing blanks."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _folder_line(folder: FolderPlan, width: int) -> str:
    symbol = SYMBOLS[folder.action]
    head = f"    {symbol} {folder.path.ljust(width)}  {folder.action.ljust(7)}"
    if folder.action == "error":
        return f"{head}  {folder.note}"
    detail = []
    if folder.uids:
        detail.append(f"{plural(folder.count, 'message')} ({human_bytes(folder.bytes)})")
    if folder.already_archived:
        detail.append(f"{folder.already_archived} already archived")
    if folder.filtered_out:
        detail.append(f"{folder.filtered_out} left out by filters")
    if folder.delete:
        detail.append(f"then delete {len(folder.delete)} from the server")
    if folder.no_deletion:
        detail.append(folder.no_deletion)
    if folder.note and folder.action == "skip":
        detail.append(folder.note)
    detail.append(f"uidvalidity {folder.uidvalidity}")
    line = f"{head}  {', '.join(detail)}"
    if folder.action == "rescan":
        line += f"\n        {folder.note}"
    return line


def render_plan(plan: Plan) -> str:
    lines = [f"Archive: {plan.archive}", ""]
    for profile in plan.profiles:
        lines.append(f"Profile {profile.name} ({profile.server}, {profile.security})")
        lines.extend(f"  ! warning: {w}" for w in profile.warnings)
        if profile.error:
            lines.append(f"  ! error: {profile.error}")
        lines.extend(f"  + user {name} (new in the directory)" for name in profile.users_added)
        lines.extend(f"  - user {name}: not archived ({why})" for name, why in profile.not_selected)
        if not profile.mailboxes and not profile.error:
            lines.append("  (no mailboxes)")
        for mailbox in profile.mailboxes:
            lines.append(
                f"  Mailbox {mailbox.archive_folder} (login {mailbox.login}) -> archive user "
                f"{mailbox.archive_user}"
            )
            if mailbox.error:
                lines.append(f"    ! error: {mailbox.error}")
                continue
            width = max((len(f.path) for f in mailbox.folders), default=0)
            lines.extend(_folder_line(f, width) for f in mailbox.folders)
            lines.extend(f"    - {e.path}  excluded: {e.reason}" for e in mailbox.excluded)
        lines.append("")
    totals = plan.totals
    if plan.has_changes:
        summary = (
            f"Plan: {plural(totals.messages, 'message')} ({human_bytes(totals.bytes)}) to archive "
            f"in {plural(totals.folders_to_archive, 'folder')}"
        )
    else:
        summary = "No changes: the archive is up to date"
    summary += f"; {totals.already_archived} already archived"
    if totals.errors:
        summary += f"; {plural(totals.errors, 'error')}"
    if totals.warnings:
        summary += f"; {plural(totals.warnings, 'warning')}"
    lines.append(summary + ".")
    return "\n".join(lines)


def render_result(result: ApplyResult) -> str:
    lines = [f"Run {result.run_id}: {result.status}"]
    lines.extend(f"  ! warning: {w}" for w in result.warnings)
    lines.extend(f"  ! error: {e}" for e in result.errors)
    for directory, changes in result.users.items():
        summary = ", ".join(f"{len(names)} {kind}" for kind, names in changes.items() if names)
        lines.append(f"  users from {directory}: {summary or 'no changes'}")
    for mailbox in result.mailboxes:
        head = (
            f"  {mailbox.profile}/{mailbox.archive_folder}: archived {mailbox.archived}, "
            f"already present {mailbox.already_present}"
        )
        vanished = sum(f.vanished for f in mailbox.folders)
        if vanished:
            head += f", vanished {vanished}"
        deleted = sum(f.deleted for f in mailbox.folders)
        if deleted:
            head += f", deleted from the server {deleted}"
        if mailbox.excluded:
            head += f", {plural(mailbox.excluded, 'folder')} excluded"
        lines.append(head)
        if mailbox.error:
            lines.append(f"    ! error: {mailbox.error}")
        for folder in mailbox.folders:
            if folder.error:
                lines.append(f"    ! {folder.path}: {folder.error}")
    totals = result.to_json()["totals"]
    lines.append(
        f"Total: archived {totals['archived']}, already present {totals['already_present']}, "
        f"{plural(totals['failed_mailboxes'], 'mailbox')} failed."
    )
    if result.repair is not None:
        repair = result.repair
        lines.append(
            f"Repair: {len(repair.repaired)} blob(s) repaired, {len(repair.unrepaired)} not"
            f" repaired, {len(repair.removed_orphans)} damaged orphan(s) removed."
        )
        lines.extend(
            f"  ! not repaired: blob {sha256} (its message was not fetched again: no longer on"
            " the server, or not in the selected profiles)"
            for sha256 in repair.unrepaired
        )
    if result.search is not None and result.search.get("error"):
        lines.append(
            f"  ! search index: {result.search['error']}; nothing archived is lost, the"
            " messages are indexed by the next apply or `archive rebuild-search --force`"
        )
    if result.interrupted_by is not None:
        lines.append("Interrupted: the last batch was committed; run `apply` again to go on.")
    return "\n".join(lines)


# --- validate, mailboxes, users ----------------------------------------------------------------


def problem_json(problem: Problem) -> dict[str, Any]:
    return {
        "path": problem.path,
        "line": problem.line,
        "col": problem.col,
        "field": problem.field,
        "message": problem.message,
        "severity": problem.severity.value,
    }


def validate_json(config_dir: Path, config: Config) -> dict[str, Any]:
    """``validate --format json``."""
    return {
        "valid": config.ok,
        "config_dir": str(config_dir),
        "archive": str(config.archive_path),
        "errors": [problem_json(p) for p in config.errors],
        "warnings": [problem_json(p) for p in config.warnings],
        "profiles": [
            {
                "name": item.doc.name,
                "source": item.doc.source.kind,
                "server": f"{item.doc.server.host}:{item.doc.server.effective_port}",
                "security": item.doc.server.security,
                "mailboxes": len(config.mailboxes.get(item.doc.name, ())),
            }
            for item in config.profiles
        ],
    }


def render_validate(config_dir: Path, config: Config) -> str:
    errors, warnings = len(config.errors), len(config.warnings)
    counts = f"{plural(errors, 'error')}, {plural(warnings, 'warning')}"
    if not config.ok:
        return f"{config_dir}: invalid ({counts})"
    total = sum(len(m) for m in config.mailboxes.values())
    lines = [
        f"{config_dir}: valid ({plural(config.document_count, 'document')}, "
        f"{plural(len(config.profiles), 'profile')}, {plural(total, 'mailbox')}, "
        f"{plural(warnings, 'warning')})"
    ]
    for item in config.profiles:
        server = item.doc.server
        count = len(config.mailboxes.get(item.doc.name, ()))
        lines.append(
            f"  {item.doc.name}: {item.doc.source.kind} on {server.host}:{server.effective_port}"
            f" ({server.security}), {plural(count, 'mailbox')}"
        )
    lines.append(f"  archive: {config.archive_path}")
    return "\n".join(lines)


def mailboxes_json(config: Config, profile_name: str | None) -> list[dict[str, Any]]:
    """``mailboxes --format json``: every user of the list with selected and reason, or
    (CSV and single profiles) every mailbox."""
    rows: list[dict[str, Any]] = []
    for item in config.profiles:
        name = item.doc.name
        if profile_name not in (None, name):
            continue
        if name in config.choices:
            rows += [c.to_json() for c in config.choices[name]]
        else:
            rows += [
                {**m.to_json(), "selected": True, "reason": None} for m in config.mailboxes[name]
            ]
    return rows


def render_mailboxes(config: Config, profile_name: str | None) -> str:
    """The mailboxes that are archived, then the users of the list that are not."""
    names = [item.doc.name for item in config.profiles if profile_name in (None, item.doc.name)]
    selected: list[Mailbox] = [m for name in names for m in config.mailboxes.get(name, ())]
    header = ("PROFILE", "SOURCE", "ARCHIVE USER", "LOGIN", "E-MAIL", "ARCHIVE FOLDER")
    lines = table(
        [header]
        + [
            (m.profile, m.source, m.archive_user, m.login, m.email or "-", m.archive_folder)
            for m in selected
        ]
    )
    lines.append(plural(len(selected), "mailbox"))
    lines.extend(
        f"not archived by {choice.profile}: {choice.listed.user.name} ({choice.reason})"
        for name in names
        for choice in config.choices.get(name, ())
        if not choice.selected
    )
    return "\n".join(lines)


def render_users(rows: Sequence[dict[str, Any]]) -> str:
    """``users list``: one line per user of the archive's list."""
    header = ("NAME", "E-MAIL", "ALIASES", "DISPLAY NAME", "SOURCE", "STATUS", "WEB")
    lines = table(
        [header]
        + [
            (
                str(r["name"]),
                r["email"] or "-",
                ",".join(r["aliases"]) or "-",
                r["display_name"] or "-",
                str(r["source"]),
                str(r["status"]),
                str(r.get("web_password", "none")),
            )
            for r in rows
        ]
    )
    lines.append(plural(len(rows), "user"))
    return "\n".join(lines)


# --- runs ---------------------------------------------------------------------------------------


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
    rows = [header]
    for run in runs:
        totals = run.get("totals") or {}
        rows.append(
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
    lines = table(rows)
    lines.append(plural(len(runs), "run"))
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
    if doc.get("command") == "restore":
        return "\n".join(lines + _restore_lines(doc))
    mailboxes = doc.get("mailboxes") or []
    for mailbox in mailboxes:
        lines.extend(_mailbox_lines(mailbox))
    lines.extend(_job_lines(doc.get("jobs")))
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


_JOB_STATES = {
    "pending": "not started",
    "claimed": "being archived",
    "done": "done",
    "failed": "failed",
}


def _job_lines(jobs: object) -> list[str]:
    """The jobs of a run that has no protocol: what each mailbox with work came to."""
    if not isinstance(jobs, list):
        return []
    lines = []
    for job in jobs:
        if not isinstance(job, dict):
            continue
        state = _JOB_STATES.get(str(job.get("state")), _printable(job.get("state")))
        line = f"  {_printable(job.get('profile'))}/{_printable(job.get('mailbox'))}: {state}"
        if job.get("state") == "claimed":
            line += f" by {_printable(job.get('runner'))} since {_printable(job.get('claimed_at'))}"
        elif job.get("error"):
            line += f": {_printable(job.get('error'))}"
        lines.append(line)
    return lines


def _restore_lines(doc: dict[str, Any]) -> list[str]:
    """The folders and totals of a restore run's protocol."""
    lines = [f"  profile   {_printable(doc.get('profile'))}"]
    for folder in doc.get("folders") or ():
        if isinstance(folder, dict):
            lines.append(
                f"  {_printable(folder.get('user'))} {_printable(folder.get('folder'))}:"
                f" restored {_count(folder.get('restored'))},"
                f" already there {_count(folder.get('already_there'))},"
                f" failed {_count(folder.get('failed'))}"
            )
    lines.extend(f"  ! error: {_printable(e)}" for e in doc.get("errors") or ())
    found = doc.get("totals")
    totals: dict[str, Any] = found if isinstance(found, dict) else {}
    lines.append(
        f"Total: restored {_count(totals.get('restored'))},"
        f" already there {_count(totals.get('already_there'))},"
        f" failed {_count(totals.get('failed'))}."
    )
    return lines


def _printable(text: object) -> str:
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in str(text))


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


# --- archive stats ------------------------------------------------------------------------------


def _search_line(search: dict[str, Any] | None) -> str:
    if search is None:
        return "no search index (run `imapsync-decl archive rebuild-search`)"
    if search.get("error"):
        return "damaged (run `imapsync-decl archive rebuild-search --force`)"
    return (
        f"{search['indexed']} indexed ({search['headers_only']} by headers only),"
        f" {search['unindexed']} not indexed"
    )


def render_stats(stats: ArchiveStats) -> str:
    """The text form of ``archive stats``."""

    def size(count: int, note: str = "") -> str:
        return f"{human_bytes(count)} ({count} bytes{note})"

    lines = [
        f"users        {stats.users}",
        f"mailboxes    {stats.mailboxes}",
        f"folders      {stats.folders}",
        f"messages     {stats.messages} (distinct contents)",
        f"placements   {stats.placements} (copies in folders)",
        f"in folders   {size(stats.bytes_placed)}",
        f"original     {size(stats.bytes_original)}",
        f"stored       {size(stats.bytes_stored, ', compressed, on disk')}",
        f"dedup        {_times(stats.dedup_ratio)} (in folders / original)",
        f"compression  {_times(stats.compression_ratio)} (original / stored)",
        f"overall      {_times(stats.total_ratio)} (in folders / stored)",
        f"search       {_search_line(stats.search)}",
    ]
    if stats.per_user:
        header = ("USER", "MAILBOXES", "FOLDERS", "MESSAGES", "PLACEMENTS", "ORIGINAL", "STORED")
        rows = [header] + [
            (
                u.user,
                str(u.mailboxes),
                str(u.folders),
                str(u.messages),
                str(u.placements),
                human_bytes(u.bytes_original),
                human_bytes(u.bytes_stored),
            )
            for u in stats.per_user
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines.append("")
        for row in rows:
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
            lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
