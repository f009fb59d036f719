"""Bringing a directory's users into the index, without a directory server.

``sources.users.sync_directory_users`` decides what changes; the index only adds,
updates and marks user rows, in one transaction, each change journaled.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from imapsync_decl.sources.users import sync_directory_users
from imapsync_decl.store import Archive, Index, UserRecord
from imapsync_decl.store.rebuild import rebuild_index

DIRECTORY = "ldaps://dir.example.test/dc=x"
OTHER = "ldaps://other.example.test/dc=y"


def states(index: Index) -> dict[str, tuple[str | None, str, str, str | None]]:
    return {u.name: (u.email, u.source, u.status, u.directory) for u in index.list_users()}


def test_users_are_added_updated_marked_gone_and_return(tmp_path: Path) -> None:
    with Archive.open(tmp_path / "archive") as archive:
        index = archive.index
        index.ensure_user("carl", "carl@example.test")  # of a Users document: not the directory's
        first = sync_directory_users(
            index,
            DIRECTORY,
            [
                UserRecord("anna", "anna@example.test", "Anna", ("a@example.test",)),
                UserRecord("ben", "ben@example.test", None),
                UserRecord("carl", "other@example.test", None),
            ],
        )
        assert first == {"added": ["anna", "ben"], "updated": [], "gone": [], "returned": []}
        assert sync_directory_users(index, OTHER, [UserRecord("dora", None, None)])["added"] == [
            "dora"
        ]
        second = sync_directory_users(
            index,
            DIRECTORY,
            [UserRecord("anna", "anna@new.example.test", "Anna", ("a@example.test",))],
        )
        assert second == {"added": [], "updated": ["anna"], "gone": ["ben"], "returned": []}
        assert states(index) == {
            "anna": ("anna@new.example.test", "directory", "active", DIRECTORY),
            "ben": ("ben@example.test", "directory", "gone", DIRECTORY),
            "carl": ("carl@example.test", "document", "active", None),
            "dora": (None, "directory", "active", OTHER),
        }
        third = sync_directory_users(
            index,
            DIRECTORY,
            [
                UserRecord("anna", "anna@new.example.test", "Anna", ("a@example.test",)),
                UserRecord("ben", "ben@example.test", None),
            ],
        )
        assert third == {"added": [], "updated": [], "gone": [], "returned": ["ben"]}
        expected = states(index)
    # Every change is in the journal: an index rebuilt from it has the same users.
    rebuild_index(tmp_path / "archive" / "index.sqlite", archive.blobs, force=True)
    with Index.open(tmp_path / "archive" / "index.sqlite", read_only=True) as rebuilt:
        assert states(rebuilt) == expected


def test_a_sync_is_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Archive.open(tmp_path / "archive") as archive:
        index = archive.index
        sync_directory_users(index, DIRECTORY, [UserRecord("ben", None, None)])

        def failing(self: Index, name: str, status: str) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(Index, "set_user_status", failing)
        with pytest.raises(OSError, match="Input/output error"):
            sync_directory_users(index, DIRECTORY, [UserRecord("anna", None, None)])
        assert sorted(states(index)) == ["ben"]  # anna's addition was rolled back too
