"""The Plan value: its JSON round-trips."""

from __future__ import annotations

import json

from imapsync_decl.plan.model import ExcludedFolder, FolderPlan, MailboxPlan, Plan, ProfilePlan


def test_plan_json_round_trips() -> None:
    plan = Plan(
        id="p1",
        created_at="2026-11-29T00:00:00+00:00",
        archive="/srv/archive",
        archive_id=None,
        profiles=(
            ProfilePlan(
                "staff",
                "imap.example.com:993",
                "tls",
                ("w",),
                (
                    MailboxPlan(
                        "staff",
                        "master",
                        "alice",
                        "alice@example.com",
                        "alice@example.com",
                        "alice@example.com",
                        folders=(
                            FolderPlan(
                                "INBOX", "INBOX", "archive", 7, 10, 9, None, (1, 2, 9), 300, 6
                            ),
                            FolderPlan(
                                "Übersicht",
                                "&ANw-bersicht",
                                "rescan",
                                8,
                                3,
                                2,
                                5,
                                (1, 2),
                                20,
                                0,
                                "n",
                            ),
                            FolderPlan("X", "X", "error", note="gone"),
                        ),
                        excluded=(ExcludedFolder("Trash", "default exclusion: \\Trash"),),
                    ),
                ),
            ),
        ),
    )
    body = json.loads(json.dumps(plan.to_json()))
    assert Plan.from_json(body) == plan
    assert body["totals"]["messages"] == 5
