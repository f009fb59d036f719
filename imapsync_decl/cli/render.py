"""Text for humans: the plan (read like `terraform plan`) and the summary of a run."""

from __future__ import annotations

from imapsync_decl.plan.model import FolderPlan, Plan
from imapsync_decl.run.executor import ApplyResult

SYMBOLS = {"archive": "+", "rescan": "~", "skip": " ", "error": "!"}


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else (plural or word + 's')}"


def _folder_line(folder: FolderPlan, width: int) -> str:
    symbol = SYMBOLS[folder.action]
    head = f"    {symbol} {folder.path.ljust(width)}  {folder.action.ljust(7)}"
    if folder.action == "error":
        return f"{head}  {folder.note}"
    detail = []
    if folder.uids:
        detail.append(f"{_plural(folder.count, 'message')} ({human_bytes(folder.bytes)})")
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
            f"Plan: {_plural(totals.messages, 'message')} ({human_bytes(totals.bytes)}) to archive "
            f"in {_plural(totals.folders_to_archive, 'folder')}"
        )
    else:
        summary = "No changes: the archive is up to date"
    summary += f"; {totals.already_archived} already archived"
    if totals.errors:
        summary += f"; {_plural(totals.errors, 'error')}"
    if totals.warnings:
        summary += f"; {_plural(totals.warnings, 'warning')}"
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
            head += f", {_plural(mailbox.excluded, 'folder')} excluded"
        lines.append(head)
        if mailbox.error:
            lines.append(f"    ! error: {mailbox.error}")
        for folder in mailbox.folders:
            if folder.error:
                lines.append(f"    ! {folder.path}: {folder.error}")
    totals = result.to_json()["totals"]
    lines.append(
        f"Total: archived {totals['archived']}, already present {totals['already_present']}, "
        f"{_plural(totals['failed_mailboxes'], 'mailbox', 'mailboxes')} failed."
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
    if result.interrupted_by is not None:
        lines.append("Interrupted: the last batch was committed; run `apply` again to go on.")
    return "\n".join(lines)
