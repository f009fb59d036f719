"""Searching an archive: one hit per placement in scope, snippets, scoping by user and folder."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from test_search_database import Doc, sha

from imapsync_decl.store import Index
from imapsync_decl.store.search.database import SearchIndex
from imapsync_decl.store.search.find import Scope, find
from imapsync_decl.store.search.query import parse_query
from imapsync_decl.store.search.text import searchable

NOW = "2024-01-01T00:00:00+00:00"


def archive(directory: Path) -> Path:
    """alice has message 0 in INBOX and in Projekte/2024, and message 1 in Sent; bob has
    message 0 (the same bytes) in his INBOX and message 2 in Projekte."""
    Index.open(directory / "index.sqlite").close()
    with sqlite3.connect(directory / "index.sqlite") as db:
        for n in range(3):
            db.execute(
                "INSERT INTO messages (sha256, size, stored_size, first_archived_at)"
                " VALUES (?, 10, 10, ?)",
                (sha(n), NOW),
            )
        for user_id, name in ((1, "alice"), (2, "bob")):
            db.execute(
                "INSERT INTO users (id, name, created_at) VALUES (?, ?, ?)", (user_id, name, NOW)
            )
            db.execute(
                "INSERT INTO mailboxes (id, user_id, archive_folder, server, login, profile)"
                " VALUES (?, ?, ?, 'imap:143', ?, 'p')",
                (user_id, user_id, f"{name}@example.test", name),
            )
        folders = [(1, 1, "INBOX"), (2, 1, "Projekte/2024"), (3, 1, "Sent"), (4, 2, "INBOX"),
                   (5, 2, "Projekte")]  # fmt: skip
        db.executemany("INSERT INTO folders (id, mailbox_id, path) VALUES (?, ?, ?)", folders)
        placements = [(1, 0, 1), (2, 0, 2), (3, 1, 3), (4, 0, 4), (5, 2, 5)]
        for uid, message, folder in placements:
            db.execute(
                "INSERT INTO placements (folder_id, uidvalidity, uid, sha256, archived_at)"
                " VALUES (?, 1, ?, ?, ?)",
                (folder, uid, sha(message), NOW),
            )
    with SearchIndex.open(directory) as search:
        search.add(
            [
                (sha(0), Doc("Vertrag", body=searchable("Der Vertrag von Müller liegt bei"))),
                (sha(1), Doc("Re: Vertrag", body=searchable("danke"))),
                (sha(2), Doc("Urlaub", body=searchable("Urlaubsplanung 2024"))),
            ]
        )
    return directory


def hits(directory: Path, text: str, scope: Scope | None = None) -> list[tuple[str, str]]:
    with SearchIndex.open(directory) as search:
        found = find(search, parse_query(text), scope, sort="date")
    return sorted((h.user, h.folder) for h in found)


def test_a_message_in_two_folders_is_found_in_both(tmp_path: Path) -> None:
    root = archive(tmp_path)
    assert hits(root, "muller") == [
        ("alice", "INBOX"),
        ("alice", "Projekte/2024"),
        ("bob", "INBOX"),
    ]


def test_scoping_by_user_mailbox_and_folder_with_its_subfolders(tmp_path: Path) -> None:
    root = archive(tmp_path)
    assert hits(root, "vertrag", Scope(user="bob")) == [("bob", "INBOX")]
    assert hits(root, "vertrag", Scope(mailbox="alice@example.test")) == [
        ("alice", "INBOX"),
        ("alice", "Projekte/2024"),
        ("alice", "Sent"),
    ]
    assert hits(root, "vertrag OR urlaub", Scope(folder="Projekte")) == [
        ("alice", "Projekte/2024"),
        ("bob", "Projekte"),
    ]
    assert hits(root, "vertrag", Scope(user="carol")) == []
    assert hits(root, "vertrag", Scope(folder="Projekte_")) == []  # LIKE wildcards are text


def test_hits_carry_a_snippet_and_the_placement_id(tmp_path: Path) -> None:
    root = archive(tmp_path)
    with SearchIndex.open(root) as search:
        (hit,) = find(search, parse_query("müller"), Scope(user="bob"))
        assert hit.id == 4
        assert "[Müller]" in hit.snippet
        assert hit.to_json()["sha256"] == sha(0)
        paged = find(search, parse_query("vertrag"), sort="date", limit=2, offset=3)
        assert len(paged) == 1


def test_a_snippet_of_long_tokens_stays_short(tmp_path: Path) -> None:
    root = archive(tmp_path)
    with sqlite3.connect(root / "index.sqlite") as db:
        db.execute(
            "INSERT INTO messages (sha256, size, stored_size, first_archived_at)"
            " VALUES (?, 10, 10, ?)",
            (sha(9), NOW),
        )
        db.execute(
            "INSERT INTO placements (folder_id, uidvalidity, uid, sha256, archived_at)"
            " VALUES (1, 1, 9, ?, ?)",
            (sha(9), NOW),
        )
    with SearchIndex.open(root) as search:
        search.add([(sha(9), Doc("long", body=" ".join(["x" * 80] * 20) + " needle"))])
        (hit,) = find(search, parse_query("long"))
        (found,) = find(search, parse_query("needle"))
    assert len(hit.snippet) <= 240
    assert hit.snippet.endswith("…")
    assert "[needle]" in found.snippet
