"""The plan as Markdown, for merge-request comments: a heading, totals, a table per profile.

Only what has work or went wrong is listed (folders to archive or rescan, deletions,
folder and mailbox errors); folders with nothing to do are counted, not shown. Huge
plans stay short: at most ``max_rows`` rows in all, then "and N more". Every name
that comes from outside (folder paths, logins, notes, server names) is escaped, so a
hostile folder name can neither break a table nor add links, mentions or HTML.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from imapsync_decl.cli.render import human_bytes, plural

if TYPE_CHECKING:
    from imapsync_decl.plan.model import FolderPlan, MailboxPlan, Plan, ProfilePlan

MAX_ROWS = 100  # table rows in the whole comment
MAX_CELL = 120  # characters of one name or note before it is cut
HEADING = "imapsync-decl plan"

# Every ASCII punctuation character may be backslash-escaped in CommonMark; escaping all
# of them leaves no emphasis, link, image, code span, table cell end or autolink.
_PUNCTUATION = re.compile(r"([!\"#$%'()*+,\-./:;=?@\[\\\]^_`{|}~])")
# Control characters, and the bidirectional overrides that make text read other than it is.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")
# GitHub and GitLab find references (@user, #12, !3, ~label, $snippet, %milestone, &epic)
# in the rendered text, after the escapes are gone: an invisible word joiner after each
# of these characters keeps a folder name from mentioning anyone or linking anything.
_REFERENCE = re.compile(r"(\\[@#!~$%]|&amp;)")
WORD_JOINER = "\u2060"


def escape(text: str, limit: int = MAX_CELL) -> str:
    """``text`` as literal Markdown inline text: one line, at most ``limit`` characters
    of it, punctuation backslash-escaped, ``<``, ``>`` and ``&`` as entities, control
    characters (a CR or LF in a folder name, a bidirectional override) shown as
    ``\\uXXXX``, and a word joiner
    (U+2060) after the characters that start references and mentions."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    text = _PUNCTUATION.sub(r"\\\1", text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _REFERENCE.sub(lambda m: m.group() + WORD_JOINER, text)


def _has_work(folder: FolderPlan) -> bool:
    return bool(
        (folder.action in ("archive", "rescan") and folder.uids)
        or folder.delete
        or folder.action == "error"
    )


def _folder_row(mailbox: MailboxPlan, folder: FolderPlan) -> str:
    if folder.action == "error":
        cells = ["error", "", "", "", escape(folder.note or "")]
    else:
        notes = []
        if folder.already_archived:
            notes.append(f"{folder.already_archived} already archived")
        if folder.no_deletion:
            notes.append(escape(folder.no_deletion))
        if folder.action == "rescan":
            notes.append("UIDVALIDITY changed: re-pointed, not stored again")
        cells = [
            folder.action,
            str(folder.count),
            human_bytes(folder.bytes) if folder.uids else "",
            str(len(folder.delete)) if folder.delete else "",
            ", ".join(notes),
        ]
    return _row([escape(mailbox.archive_folder), escape(folder.path), *cells])


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _profile_rows(profile: ProfilePlan) -> list[str]:
    rows = []
    for mailbox in profile.mailboxes:
        if mailbox.error:
            rows.append(
                _row(
                    [escape(mailbox.archive_folder), "", "error", "", "", "", escape(mailbox.error)]
                )
            )
            continue
        rows.extend(_folder_row(mailbox, f) for f in mailbox.folders if _has_work(f))
    return rows


def _summary(plan: Plan) -> str:
    totals = plan.totals
    if plan.has_changes:
        parts = [f"{plural(totals.messages, 'message')} ({human_bytes(totals.bytes)}) to archive"]
        if totals.deletions:
            parts.append(plural(totals.deletions, "message") + " to remove from the server")
        text = ", ".join(parts)
    else:
        text = "no changes"
    if totals.errors:
        text += f", {plural(totals.errors, 'error')}"
    return text


def render_plan_markdown(plan: Plan, max_rows: int = MAX_ROWS) -> str:
    """The plan as a Markdown comment (GitHub / GitLab flavoured: tables)."""
    totals = plan.totals
    rescans = sum(1 for _, f in plan.folders() if f.action == "rescan" and f.uids)
    lines = [
        f"### {HEADING}: {_summary(plan)}",
        "",
        "| mailboxes | folders to archive | messages | size | rescans | deletions "
        "| already archived | errors | warnings |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        _row(
            [
                str(totals.mailboxes),
                str(totals.folders_to_archive),
                str(totals.messages),
                human_bytes(totals.bytes),
                str(rescans),
                str(totals.deletions),
                str(totals.already_archived),
                str(totals.errors),
                str(totals.warnings),
            ]
        ),
        "",
    ]
    left = max_rows
    hidden_rows = 0
    hidden_profiles = 0
    for profile in plan.profiles:
        rows = _profile_rows(profile)
        if left <= 0:
            hidden_rows += len(rows)
            hidden_profiles += 1
            continue
        mailboxes = len(profile.mailboxes)
        lines.append(
            f"#### Profile {escape(profile.name)} ({escape(profile.server)}, "
            f"{escape(profile.security)}): {plural(mailboxes, 'mailbox')}"
        )
        lines.append("")
        lines.extend(f"- warning: {escape(w, 300)}" for w in profile.warnings)
        if profile.error:
            lines.append(f"- error: {escape(profile.error, 300)}")
        if profile.warnings or profile.error:
            lines.append("")
        if not rows:
            lines.append("Nothing to do.")
            lines.append("")
            continue
        lines.append("| mailbox | folder | action | messages | size | deletions | note |")
        lines.append("|---|---|---|---:|---:|---:|---|")
        lines.extend(rows[:left])
        if len(rows) > left:
            hidden_rows += len(rows) - left
        left -= len(rows)
        lines.append("")
    if hidden_rows or hidden_profiles:
        more = f"… and {hidden_rows} more {'row' if hidden_rows == 1 else 'rows'}"
        if hidden_profiles:
            more += f"; {hidden_profiles} more {'profile' if hidden_profiles == 1 else 'profiles'}"
        lines.append(f"_{more} (see the plan file, or `plan --format text`)._")
        lines.append("")
    lines.append(f"Plan `{plan.id}`, made {escape(plan.created_at)}.")
    return "\n".join(lines) + "\n"
