"""Folder selection: patterns, subfolders, default exclusions, \\Noselect."""

from __future__ import annotations

from typing import Any

import pytest

from imapsync_decl.config.documents import Folders
from imapsync_decl.imap.facts import FolderInfo
from imapsync_decl.plan.folders import matches, select_folders


def folder(path: str, *attributes: str) -> FolderInfo:
    return FolderInfo(path, path, "/", frozenset(attributes))


DOVECOT_LIKE = [
    folder("INBOX"),
    folder("Archive", "\\Archive"),
    folder("Archive/2019"),
    folder("Drafts", "\\Drafts"),
    folder("Junk", "\\Junk"),
    folder("Outbox"),
    folder("Projekte"),
    folder("Projekte/Übersicht"),
    folder("Projekte/Übersicht/Alt"),
    folder("Sent", "\\Sent"),
    folder("Shared", "\\Noselect"),
    folder("Shared/Team"),
    folder("Trash", "\\Trash"),
    folder("Trash/Old"),
    folder("Spam"),  # a user folder: the server reports SPECIAL-USE, so names do not count
]


def chosen(rules: dict[str, Any], folders: list[FolderInfo] = DOVECOT_LIKE) -> dict[str, str]:
    return {
        c.folder.path: ("archive" if c.included else f"skip: {c.reason}")
        for c in select_folders(folders, Folders.model_validate(rules))
    }


def test_defaults() -> None:
    assert chosen({}) == {
        "INBOX": "archive",
        "Archive": "archive",
        "Archive/2019": "archive",
        "Drafts": "skip: default exclusion: \\Drafts",
        "Junk": "skip: default exclusion: \\Junk",
        "Outbox": "skip: default exclusion: outbox",
        "Projekte": "archive",
        "Projekte/Übersicht": "archive",
        "Projekte/Übersicht/Alt": "archive",
        "Sent": "archive",
        "Shared": "skip: not selectable (\\Noselect)",
        "Shared/Team": "archive",
        "Trash": "skip: default exclusion: \\Trash",
        "Trash/Old": "skip: default exclusion: \\Trash (inside Trash)",
        "Spam": "archive",
    }


def test_names_count_where_the_server_reports_no_special_use() -> None:
    plain = [
        folder("INBOX"),
        folder("Deleted Items"),
        folder("Spam"),
        folder("INBOX/Entwürfe"),
        folder("Papierkorb/2020"),
        folder("Papierkorb"),
        folder("Sent Items"),
    ]
    assert chosen({}, plain) == {
        "INBOX": "archive",
        "Deleted Items": "skip: default exclusion: trash",
        "Spam": "skip: default exclusion: junk",
        "INBOX/Entwürfe": "skip: default exclusion: drafts",
        "Papierkorb/2020": "skip: default exclusion: trash (inside Papierkorb)",
        "Papierkorb": "skip: default exclusion: trash",
        "Sent Items": "archive",
    }
    assert set(chosen({"default_exclusions": False}, plain).values()) == {"archive"}


def test_include_exclude_and_subfolders() -> None:
    rules = {"include": ["INBOX", "Projekte"], "exclude": ["**/Alt"]}
    result = chosen(rules)
    assert [p for p, v in result.items() if v == "archive"] == [
        "INBOX",
        "Projekte",
        "Projekte/Übersicht",
    ]
    assert result["Projekte/Übersicht/Alt"] == "skip: excluded by '**/Alt'"
    assert result["Sent"] == "skip: matches no include pattern"

    result = chosen({"include": ["Projekte"], "include_subfolders": False})
    assert [p for p, v in result.items() if v == "archive"] == ["Projekte"]

    result = chosen({"include": ["Projekte/**"], "include_subfolders": False})
    assert [p for p, v in result.items() if v == "archive"] == [
        "Projekte/Übersicht",
        "Projekte/Übersicht/Alt",
    ]

    result = chosen({"exclude": ["Archive"]})
    assert result["Archive/2019"] == "skip: excluded by 'Archive'"


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*", "INBOX", True),
        ("*", "A/B", False),
        ("**", "A/B/C", True),
        ("A/*", "A/B", True),
        ("A/*", "A/B/C", False),
        ("A/**", "A/B/C", True),
        ("**/C", "C", True),
        ("**/C", "A/B/C", True),
        ("**/C", "A/BC", False),
        ("inbox", "INBOX", True),
        ("INBOX/*", "inbox/x", True),
        ("sent", "Sent", False),
        ("Re?", "Rex", True),
        ("Re?", "Re/", False),
        ("a.b", "axb", False),
        ("[x]", "[x]", True),
    ],
)
def test_glob(pattern: str, path: str, expected: bool) -> None:
    assert matches(pattern, path) is expected
