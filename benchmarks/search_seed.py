"""Seed an archive for the search benchmark through the store's own APIs, and index it.

The messages of ``search_data`` are written in batches as apply writes them: blobs
first (``BlobStore.put_many``, durable), then the placements of each folder in one
transaction (``Index.record``); then each batch is indexed as apply indexes it,
``extract`` on the bytes in hand and one ``SearchIndex.add`` per batch. Storing and
indexing are timed apart. A finished archive is remembered in ``seeded.json`` in its
directory and reused by the next run with the same parameters.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search_data import Corpus, Generated, make_message  # noqa: E402

from imapsync_decl.store.archive import open_for_writing  # noqa: E402
from imapsync_decl.store.index import Index  # noqa: E402
from imapsync_decl.store.message import parse_headers  # noqa: E402
from imapsync_decl.store.rows import ArchivedMessage  # noqa: E402
from imapsync_decl.store.search.database import SEARCH_NAME, SearchIndex  # noqa: E402
from imapsync_decl.store.search.extract import extract  # noqa: E402

#: Changed whenever the generated data changes, so that a cached archive is not reused.
DATA_VERSION = 2
MARKER = "seeded.json"
UIDVALIDITY = 1


@dataclass
class SeedFigures:
    messages: int = 0
    placements: int = 0
    message_bytes: int = 0
    stored_bytes: int = 0
    generate_s: float = 0.0
    store_s: float = 0.0
    extract_s: float = 0.0
    add_s: float = 0.0
    headers_only: int = 0
    batch: int = 0
    cached: bool = False
    seeded_at: str = ""

    @property
    def index_s(self) -> float:
        return self.extract_s + self.add_s


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class _Folders:
    """Folder ids of the benchmark's users, created on first use."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.ids: dict[tuple[str, str], int] = {}
        self.next_uid: dict[int, int] = {}

    def folder(self, user: str, path: str) -> int:
        key = (user, path)
        if key not in self.ids:
            address = f"{user}@example.org"
            user_id = self.index.ensure_user(user, address)
            mailbox_id = self.index.ensure_mailbox(
                user_id, address, user, "bench", "imap.example.org:993"
            )
            self.ids[key] = self.index.ensure_folder(mailbox_id, path)
        return self.ids[key]

    def uid(self, folder_id: int) -> int:
        uid = self.next_uid.get(folder_id, 1)
        self.next_uid[folder_id] = uid + 1
        return uid


def _store_batch(
    archive_blobs: Any, folders: _Folders, batch: list[Generated], figures: SeedFigures
) -> list[str]:
    infos = archive_blobs.put_many([g.raw for g in batch])
    by_folder: dict[int, list[ArchivedMessage]] = {}
    for generated, info in zip(batch, infos, strict=True):
        headers = parse_headers(generated.raw)
        for user, path in generated.placements:
            folder_id = folders.folder(user, path)
            by_folder.setdefault(folder_id, []).append(
                ArchivedMessage(
                    uid=folders.uid(folder_id),
                    blob=info,
                    internal_date=generated.internal_date,
                    flags=generated.flags,
                    headers=headers,
                )
            )
        figures.message_bytes += info.size
        figures.stored_bytes += info.stored_size
    for folder_id, entries in by_folder.items():
        recorded = folders.index.record(folder_id, UIDVALIDITY, entries, None)
        figures.placements += recorded.placements
    return [info.sha256 for info in infos]


def index_batch(
    search: SearchIndex, items: list[tuple[str, bytes, Any]], figures: SeedFigures
) -> None:
    """Index (sha256, raw, internal date) items as apply does; add the time to ``figures``."""
    started = time.perf_counter()
    documents = [(sha256, extract(raw, internal_date)) for sha256, raw, internal_date in items]
    extracted = time.perf_counter()
    search.add(documents)
    figures.extract_s += extracted - started
    figures.add_s += time.perf_counter() - extracted
    figures.headers_only += sum(not doc.extracted for _, doc in documents)


def seed_archive(
    root: Path,
    messages: int,
    *,
    batch: int = 500,
    progress: Callable[[str], None] = _log,
) -> SeedFigures:
    """An archive of ``messages`` generated messages at ``root``, indexed; reused when a
    finished one with the same parameters is there already."""
    marker = root / MARKER
    wanted = {"data_version": DATA_VERSION, "messages": messages, "batch": batch}
    if marker.exists():
        saved = json.loads(marker.read_text(encoding="utf-8"))
        if {key: saved.get(key) for key in wanted} == wanted:
            figures = SeedFigures(**saved["figures"])
            figures.cached = True
            progress(f"reusing the seeded archive {root} ({messages:,} messages)")
            return figures
    if root.exists():
        shutil.rmtree(root)
    corpus = Corpus()
    figures = SeedFigures(batch=batch)
    started = time.monotonic()
    with open_for_writing(root, "benchmark") as archive:
        folders = _Folders(archive.index)
        search = SearchIndex.open(root, create=True)
        try:
            for first in range(0, messages, batch):
                t0 = time.perf_counter()
                generated = [
                    make_message(corpus, n) for n in range(first, min(messages, first + batch))
                ]
                t1 = time.perf_counter()
                hashes = _store_batch(archive.blobs, folders, generated, figures)
                t2 = time.perf_counter()
                figures.generate_s += t1 - t0
                figures.store_s += t2 - t1
                index_batch(
                    search,
                    [(h, g.raw, g.internal_date) for h, g in zip(hashes, generated, strict=True)],
                    figures,
                )
                figures.messages += len(generated)
                if (first // batch) % 20 == 19 or figures.messages == messages:
                    elapsed = time.monotonic() - started
                    progress(
                        f"  {figures.messages:,} / {messages:,} messages in {elapsed:.0f} s "
                        f"(store {figures.store_s:.0f} s, index {figures.index_s:.0f} s)"
                    )
            search.connection.execute("PRAGMA search.wal_checkpoint(TRUNCATE)")
        finally:
            search.close()
    figures.seeded_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    marker.write_text(
        json.dumps({**wanted, "figures": asdict(figures)}, indent=2) + "\n", encoding="utf-8"
    )
    marker.chmod(0o600)
    return figures


def sizes(root: Path) -> dict[str, int]:
    """Bytes on disk of the search database, the index and the blobs."""
    search = sum(
        (root / (SEARCH_NAME + suffix)).stat().st_size
        for suffix in ("", "-wal")
        if (root / (SEARCH_NAME + suffix)).exists()
    )
    index = sum(
        (root / ("index.sqlite" + suffix)).stat().st_size
        for suffix in ("", "-wal")
        if (root / ("index.sqlite" + suffix)).exists()
    )
    blobs = sum(path.stat().st_size for path in (root / "blobs").rglob("*") if path.is_file())
    return {"search_bytes": search, "index_bytes": index, "blob_files_bytes": blobs}
