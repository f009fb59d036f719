"""Search latency on a large archive: `archive search` in-process and as a whole command.

Seeds an archive directly (no server): generated messages (a vocabulary with a few
frequent and many rare words, 2,000 senders, dates over four years) go through the
real extraction into ``search.sqlite``, with users, mailboxes, folders, messages and
placements written to ``index.sqlite``; no blobs are written (searching reads none).
Then measures, warm, the p50 and p95 latency of three queries (a rare word, a
``from:`` address, a one-month date range), each for the first 50 hits by relevance and
by ``-date``: in-process (parse, plan and run the query over an open search index) and
as a whole ``imapsync-decl archive search`` command (a new process each time). Writes
the figures as the "Search" section of ``RESULTS.md`` (replacing an earlier one) and
prints them as JSON.

    .venv/bin/python benchmarks/search.py [--messages 100000] [--work-dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from imapsync_decl.store import Index
from imapsync_decl.store.search.database import SearchIndex
from imapsync_decl.store.search.extract import extract
from imapsync_decl.store.search.find import Scope, find
from imapsync_decl.store.search.query import parse_query

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "imapsync_decl"]
USERS = 50
SENDERS = 2000
START = datetime(2021, 1, 1, tzinfo=UTC)
DAYS = 4 * 365
RARE = "quokkaberry"
QUERIES = {
    "rare word": f"{RARE}",
    "from: address": "from:sender42@example.com",
    "one month": "after:2023-03-01 before:2023-04-01",
}
SORTS = ("relevance", "-date")
IN_PROCESS_RUNS = 40
COMMAND_RUNS = 12
NOW = "2024-01-01T00:00:00+00:00"


def vocabulary(rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choices(letters, k=rng.randint(3, 10))) for _ in range(20_000)]


def message(rng: random.Random, words: list[str], n: int) -> tuple[bytes, datetime]:
    sender = f"sender{rng.randrange(SENDERS)}@example.com"
    date = START + timedelta(seconds=rng.randrange(DAYS * 86400))
    # Zipf-like: most words from the first few hundred, some from the long tail.
    body_words = [words[min(int(rng.paretovariate(1.1)) - 1, len(words) - 1)] for _ in range(120)]
    if n % 10_000 == 7:
        body_words.insert(rng.randrange(len(body_words)), RARE)
    subject = " ".join(rng.choices(words[:2000], k=5))
    raw = (
        f"From: Sender {n % SENDERS} <{sender}>\r\nTo: user{n % USERS}@example.org\r\n"
        f"Subject: {subject}\r\nDate: {format_datetime(date)}\r\n"
        f"Message-ID: <{n}@bench.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + "\r\n".join(" ".join(body_words[i : i + 12]) for i in range(0, len(body_words), 12))
        + "\r\n"
    ).encode()
    return raw, date


def seed(root: Path, count: int) -> dict[str, float]:
    rng = random.Random(11)
    words = vocabulary(rng)
    Index.open(root / "index.sqlite").close()
    started = time.monotonic()
    extract_s = 0.0
    with sqlite3.connect(root / "index.sqlite") as db:
        for user in range(USERS):
            db.execute(
                "INSERT INTO users (id, name, created_at) VALUES (?, ?, ?)",
                (user + 1, f"user{user}", NOW),
            )
            db.execute(
                "INSERT INTO mailboxes (id, user_id, archive_folder, server, login, profile)"
                " VALUES (?, ?, ?, 'imap:143', ?, 'bench')",
                (user + 1, user + 1, f"user{user}@example.org", f"user{user}"),
            )
            db.execute(
                "INSERT INTO folders (id, mailbox_id, path) VALUES (?, ?, 'INBOX')",
                (user + 1, user + 1),
            )
    search = SearchIndex.open(root)
    batch: list[tuple[str, Any]] = []
    rows: list[tuple[Any, ...]] = []
    placements: list[tuple[Any, ...]] = []
    for n in range(count):
        raw, date = message(rng, words, n)
        sha = hashlib.sha256(raw).hexdigest()
        t = time.monotonic()
        batch.append((sha, extract(raw, date)))
        extract_s += time.monotonic() - t
        rows.append((sha, len(raw), len(raw), NOW))
        placements.append((n % USERS + 1, n // USERS + 1, sha, date.isoformat(), NOW))
        if len(batch) == 1000 or n == count - 1:
            with sqlite3.connect(root / "index.sqlite") as db:
                db.executemany(
                    "INSERT INTO messages (sha256, size, stored_size, first_archived_at)"
                    " VALUES (?, ?, ?, ?)",
                    rows,
                )
                db.executemany(
                    "INSERT INTO placements (folder_id, uidvalidity, uid, sha256,"
                    " internal_date, archived_at) VALUES (?, 1, ?, ?, ?, ?)",
                    placements,
                )
            search.add(batch)
            batch, rows, placements = [], [], []
    search.connection.execute("PRAGMA search.wal_checkpoint(TRUNCATE)")
    search.close()
    return {"seconds": time.monotonic() - started, "extract_seconds": extract_s}


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": 1000 * statistics.median(ordered), "p95_ms": 1000 * p95}


def in_process(root: Path, text: str, sort: str) -> dict[str, Any]:
    with SearchIndex.open(root, create=False) as search:
        hits = find(search, parse_query(text), Scope(), sort=sort, limit=50)  # warm-up
        samples = []
        for _ in range(IN_PROCESS_RUNS):
            started = time.perf_counter()
            find(search, parse_query(text), Scope(), sort=sort, limit=50)
            samples.append(time.perf_counter() - started)
    return {"hits": len(hits), **percentiles(samples)}


def as_command(root: Path, text: str, sort: str) -> dict[str, Any]:
    command = [*CLI, "archive", "search", "--archive", str(root), "--sort", sort, "--format",
               "json", text]  # fmt: skip
    subprocess.run(command, capture_output=True, check=True)  # warm-up
    samples = []
    for _ in range(COMMAND_RUNS):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


def startup() -> float:
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run([*CLI, "--version"], capture_output=True, check=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "## Search",
        "",
        "Written by `benchmarks/search.py`; replaced by every run of it.",
        "",
        f"- Date: {result['date']}",
        f"- Archive: {result['messages']:,} generated messages of {USERS} users (seeded directly"
        f" in {result['seed']['seconds']:.0f} s, extraction {result['seed']['extract_seconds']:.0f}"
        " s of it)",
        f"- Search index: {result['search_bytes'] / 1e6:.1f} MB, "
        f"{result['bytes_per_message']:.0f} bytes per message "
        f"(the index, index.sqlite: {result['index_bytes'] / 1e6:.1f} MB)",
        f"- Warm, first 50 hits; in-process: {IN_PROCESS_RUNS} runs over an open search index;"
        f" command: {COMMAND_RUNS} runs of `imapsync-decl archive search` (a new process each,"
        f" `imapsync-decl --version` alone takes {1000 * result['startup_s']:.0f} ms)",
    ]
    lines += result.get("apply_lines", [])
    lines += [
        "",
        "| query | sort | hits | in-process p50 ms | p95 ms | command p50 ms | p95 ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['name']} (`{row['query']}`) | {row['sort']} | {row['hits']} |"
            f" {row['in_process']['p50_ms']:.1f} | {row['in_process']['p95_ms']:.1f} |"
            f" {row['command']['p50_ms']:.0f} | {row['command']['p95_ms']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def apply_lines(path: Path) -> list[str]:
    """The indexing share of the first runs in a ``results.json`` of ``run.py``."""
    document = json.loads(path.read_text())
    lines = []
    for row in document.get("results", []):
        if row.get("tool") != "imapsync-decl" or row.get("phase") != "first":
            continue
        seconds, wall = row.get("search_seconds"), row.get("wall_s")
        if seconds is None or not wall:
            continue
        lines.append(
            f"- Indexing during `apply`, preset `{document['preset']['name']}`, first run at"
            f" {row['connections']} connection(s): {seconds:.1f} s of {wall:.1f} s wall"
            f" ({100 * seconds / wall:.0f} %) for {row.get('search_indexed') or 0:,} messages"
            " (the storing thread's time extracting and indexing; it overlaps the fetching)"
        )
    return lines


def write_section(section: str, path: Path) -> None:
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    head, found, tail = text.partition("\n## Search\n")
    if found:
        rest = tail.split("\n## ", 1)
        tail = "\n## " + rest[1] if len(rest) == 2 else ""
    else:
        tail = ""
    path.write_text(head.rstrip("\n") + "\n\n" + section + tail)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--apply-results",
        type=Path,
        default=None,
        help="a results.json of run.py whose indexing time of apply to report as well",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="search-bench-", dir=args.work_dir))
    root = work / "archive"
    root.mkdir(mode=0o700)
    try:
        print(f"seeding {args.messages:,} messages in {root}", file=sys.stderr)
        seeded = seed(root, args.messages)
        result: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "messages": args.messages,
            "seed": seeded,
            "search_bytes": (root / "search.sqlite").stat().st_size,
            "index_bytes": (root / "index.sqlite").stat().st_size,
            "startup_s": startup(),
            "rows": [],
            "apply_lines": apply_lines(args.apply_results) if args.apply_results else [],
        }
        result["bytes_per_message"] = result["search_bytes"] / args.messages
        for name, text in QUERIES.items():
            for sort in SORTS:
                print(f"measuring {name} by {sort}", file=sys.stderr)
                measured = in_process(root, text, sort)
                result["rows"].append(
                    {
                        "name": name,
                        "query": text,
                        "sort": sort,
                        "hits": measured.pop("hits"),
                        "in_process": measured,
                        "command": as_command(root, text, sort),
                    }
                )
        write_section(markdown(result), args.output)
        print(json.dumps(result, indent=2))
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
