"""The storage seams: what planning, apply, verify and export need of an archive.

Small protocols that name operations, not SQL or paths: ``BlobStorage`` (content
stored once under its SHA-256, read back and re-hashed), ``IndexReader`` (what
planning, verify and export read of the index: folders, checkpoints, placements),
``MessageIndex`` (what apply writes in addition: users, mailboxes, folders,
placements, checkpoints, runs and their jobs, in transactions), and ``ArchiveStorage`` (an index
and its blobs together). The SQLite ``Index`` and the local ``BlobStore`` fill them
today; another index (PostgreSQL) or blob store (S3-compatible) only has to fill them
too, and keep the write order: a blob is durable before the placement that names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from imapsync_decl.store.blobs import BlobInfo
from imapsync_decl.store.rows import ArchivedMessage, Checkpoint, Job, PlacementRow, Recorded


class BlobStorage(Protocol):
    """Message contents, each stored once under the SHA-256 of its content."""

    # Temporary files older than this are a killed run's (stores that work together
    # share it).
    stale_before: float

    def exists(self, sha256: str) -> bool: ...

    def put(self, data: bytes) -> BlobInfo: ...

    def put_many(
        self, items: Sequence[bytes], hashes: Sequence[str] | None = None
    ) -> list[BlobInfo]: ...

    def get(self, sha256: str) -> bytes: ...

    def check(self, sha256: str) -> int: ...

    def remove(self, sha256: str) -> None: ...

    def iter_hashes(self) -> Iterator[str]: ...


class IndexReader(Protocol):
    """What planning, verify and export read of the index."""

    @property
    def archive_id(self) -> str: ...

    def state_token(self) -> str: ...

    def find_folder(
        self,
        user: str,
        archive_folder: str,
        path: str,
        *,
        login: str | None = None,
        server: str | None = None,
    ) -> int | None: ...

    def checkpoint(self, folder_id: int) -> Checkpoint | None: ...

    def archived_uids(self, folder_id: int, uidvalidity: int) -> set[int]: ...

    def count_placements(
        self,
        folder_id: int,
        uidvalidity: int | None = None,
        exclude_uidvalidity: int | None = None,
    ) -> int: ...

    def placements_of(self, folder_id: int, uidvalidity: int) -> dict[int, str]: ...

    def placements_elsewhere(
        self, folder_id: int, uidvalidity: int
    ) -> list[tuple[int, int, str]]: ...

    def known_blobs(self, sha256s: Iterable[str]) -> set[str]: ...

    def iter_placements(
        self,
        user: str | None = None,
        archive_folder: str | None = None,
        folder: str | None = None,
    ) -> Iterator[PlacementRow]: ...

    def iter_message_hashes(self) -> Iterator[str]: ...


class RunJobs(Protocol):
    """The mailboxes of a run as jobs that its runners claim one at a time."""

    def add_jobs(self, run_id: str, profile: str, mailboxes: Sequence[tuple[int, str]]) -> None: ...

    def claim_job(self, run_id: str, profile: str, runner: str) -> Job | None: ...

    def finish_job(self, job_id: int, error: str | None = None) -> None: ...

    def release_job(self, job_id: int) -> None: ...


class MessageIndex(IndexReader, RunJobs, Protocol):
    """What apply writes to the index. Every change is in a transaction of its own, or
    joins the one ``atomic()`` holds open."""

    def atomic(self) -> AbstractContextManager[object]: ...

    def ensure_user(
        self,
        name: str,
        email: str | None = None,
        display_name: str | None = None,
        *,
        source: str = "document",
    ) -> int: ...

    def ensure_mailbox(
        self,
        user_id: int,
        archive_folder: str,
        login: str,
        profile: str,
        server: str | None = None,
    ) -> int: ...

    def ensure_folder(self, mailbox_id: int, path: str) -> int: ...

    def set_checkpoint(
        self,
        folder_id: int,
        uidvalidity: int,
        uidnext: int,
        message_count: int,
        condition: str | None = None,
    ) -> None: ...

    def record(
        self,
        folder_id: int,
        uidvalidity: int,
        entries: Sequence[ArchivedMessage],
        run_id: str | None,
    ) -> Recorded: ...

    def repoint(
        self,
        folder_id: int,
        new_uidvalidity: int,
        moves: Sequence[tuple[int, int, int]],
        run_id: str | None,
    ) -> int: ...

    def begin_run(self, run_id: str, command: str) -> None: ...

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None: ...

    def run_archived_bytes(self, run_id: str) -> dict[str, int]: ...

    def size_of(self, shas: set[str]) -> int: ...


class ArchiveStorage(Protocol):
    """An archive's index and its blobs."""

    @property
    def index(self) -> MessageIndex: ...

    @property
    def blobs(self) -> BlobStorage: ...
