"""``plan --format markdown``: a summary for merge-request comments that hostile names
cannot break, and that stays short for huge plans.

The Markdown is rendered with markdown-it-py's GitHub-like preset (tables, autolinks of
bare URLs, raw HTML allowed, as a permissive host would), and the HTML is checked.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from markdown_it import MarkdownIt

from imapsync_decl.cli.markdown import escape, render_plan_markdown
from imapsync_decl.plan.model import Action, FolderPlan, MailboxPlan, Plan, ProfilePlan

from bed import Bed, seed

HOSTILE = [
    "a|b",
    "x | y | z",
    "[click](https://evil.example/)",
    "![img](https://evil.example/x.png)",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "https://evil.example/path",
    "www.evil.example",
    "mail@evil.example",
    "@everyone",
    "**bold** _it_ `code` ~~s~~",
    "line\r\nbreak | injected | row",
    "&lt;entity&gt;",
    "\\|backslash",
    "#1 !1 :smile:",
    "@everyone #12 !3 ~label $snippet %milestone &epic",
    "evil\u202eexe.txt",
]


def gfm(text: str) -> str:
    return str(MarkdownIt("gfm-like").render(text))


def folder(
    path: str, action: Action = "archive", uids: tuple[int, ...] = (1, 2), **kw: Any
) -> FolderPlan:
    return FolderPlan(
        path=path, wire_name=path, action=action, uidvalidity=7, uids=uids, bytes=2048, **kw
    )


def a_plan(profiles: tuple[ProfilePlan, ...]) -> Plan:
    return Plan(
        id="0b8e5f5e-2a5a-4c5e-9a55-1d1f2f0c0a11",
        created_at="2026-12-02T03:00:00+00:00",
        archive="/srv/archive",
        archive_id=None,
        profiles=profiles,
    )


def mailbox(name: str, folders: tuple[FolderPlan, ...], error: str | None = None) -> MailboxPlan:
    return MailboxPlan(
        profile="staff",
        source="master",
        archive_user=name,
        archive_folder=name,
        login=name,
        email=None,
        folders=folders,
        error=error,
    )


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_folder_name_stays_one_cell_of_literal_text(name: str) -> None:
    plan = a_plan(
        (
            ProfilePlan(
                "staff",
                "imap.example.test:143",
                "starttls",
                mailboxes=(mailbox("alice", (folder(name), folder("INBOX"))),),
            ),
        )
    )
    html = gfm(render_plan_markdown(plan))
    assert "<a " not in html
    assert "<img" not in html
    assert "<script" not in html
    assert "<strong>" not in html
    assert "<em>" not in html
    assert "<code>" not in html.split("Plan ")[0]
    body = html.split("<table>")[2]  # the profile's table (the first is the totals)
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    assert len(rows) == 3, "a header and two folder rows: the name broke no row"
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows[1:]]
    assert all(len(c) == 7 for c in cells), cells
    shown = cells[0][1]
    expected = name.replace("\r", "\\u000d").replace("\n", "\\u000a").replace("\u202e", "\\u202e")
    expected = re.sub(r"([@#!~$%&])", "\\1\u2060", expected)
    expected = expected.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert shown == expected.replace('"', "&quot;"), "the name reads as it is"


def test_references_and_mentions_are_broken_up() -> None:
    shown = escape("@everyone see #12, !3 and ~label")
    for reference in ("@everyone", "#12", "!3", "~label"):
        assert reference not in shown.replace("\\", "")
    assert "\\@\u2060everyone" in shown
    assert escape("a\u202eb") == "a\\\\u202eb", "a bidirectional override is shown, not obeyed"


def test_escape_cuts_long_names() -> None:
    assert len(escape("x" * 1000)) == 120
    assert escape("x" * 1000).endswith("…")


def test_only_work_and_errors_are_listed_with_totals() -> None:
    plan = a_plan(
        (
            ProfilePlan(
                "staff",
                "imap.example.test:143",
                "starttls",
                warnings=("all certificates are accepted",),
                mailboxes=(
                    mailbox(
                        "alice",
                        (
                            folder("INBOX", uids=(1, 2, 3)),
                            folder("Old", action="skip", uids=(), note="nothing new"),
                            folder("Moved", action="rescan", uids=(4,)),
                            folder("Sent", action="skip", uids=(), delete=(9, 10)),
                            folder("Broken", action="error", uids=(), note="EXAMINE failed"),
                        ),
                    ),
                    mailbox("bob", (), error="login refused"),
                ),
            ),
            ProfilePlan("idle", "imap.example.test:993", "tls"),
        )
    )
    text = render_plan_markdown(plan)
    assert text.startswith(
        "### imapsync-decl plan: 4 messages (4.0 KB) to archive, "
        "2 messages to remove from the server, 2 errors\n"
    )
    html = gfm(text)
    totals = re.findall(r"<td[^>]*>(.*?)</td>", html.split("</table>")[0])
    assert totals == ["2", "2", "4", "4.0 KB", "1", "2", "0", "2", "1"]
    assert "Old" not in text, "a folder with nothing to do is not listed"
    for row in ("INBOX | archive | 3 | 2.0 KB", "Moved | rescan | 1", "Sent | skip | 0 |  | 2"):
        assert row in text
    assert "| bob |  | error |" in text
    assert "login refused" in text
    assert "Broken | error" in text
    assert "EXAMINE failed" in text
    assert "- warning: all certificates are accepted" in text
    assert (
        "#### Profile idle (imap\\.example\\.test\\:993, tls): 0 mailboxes\n\nNothing to do."
        in text
    )


def test_a_huge_plan_is_cut_with_and_n_more() -> None:
    boxes = tuple(mailbox(f"user{i}", (folder("INBOX"), folder("Sent"))) for i in range(150))
    plan = a_plan(
        (
            ProfilePlan("big", "h:143", "tls", mailboxes=boxes),
            ProfilePlan("later", "h:143", "tls", mailboxes=boxes[:5]),
        )
    )
    text = render_plan_markdown(plan, max_rows=100)
    assert text.count("| user") == 100
    assert "… and 210 more rows; 1 more profile" in text
    assert "Profile later" not in text
    assert len(render_plan_markdown(plan)) < 20_000, "well under a comment's size limit"


def test_no_changes() -> None:
    plan = a_plan(
        (
            ProfilePlan(
                "staff",
                "h:143",
                "tls",
                mailboxes=(mailbox("a", (folder("INBOX", action="skip", uids=()),)),),
            ),
        )
    )
    text = render_plan_markdown(plan)
    assert text.startswith("### imapsync-decl plan: no changes\n")
    assert "Nothing to do." in text


@pytest.mark.dovecot
def test_plan_format_markdown_against_the_server(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 3)
    seed(bed, user, "Pro|jekte", 2)
    bed.master_profile("staff", [user])
    out_file = bed.root / "plan.json"
    code, out, _ = bed.run(
        "plan", "--format", "markdown", "--detailed-exitcode", "--out", str(out_file)
    )
    assert code == 2
    assert out.startswith("### imapsync-decl plan: 5 messages (")
    assert f"| {user}\\@\u2060example\\.test | INBOX | archive | 3 |" in out
    assert f"| {user}\\@\u2060example\\.test | Pro\\|jekte | archive | 2 |" in out
    assert out_file.is_file(), "the plan is saved as JSON at the same time"
    assert bed.run("apply", str(out_file))[0] == 0
    code, out, _ = bed.run("plan", "--format", "markdown", "--detailed-exitcode")
    assert code == 0
    assert out.startswith("### imapsync-decl plan: no changes")
