"""Benchmark the archive's search: indexing speed, index size, and query latency.

    .venv/bin/python benchmarks/search.py [--messages N] [--work-dir DIR] [--keep]
                                          [--repeat N] [--output-dir DIR]

Seeds an archive of generated messages straight through the store (no IMAP), indexes
it as apply does, times four queries in-process and as the whole command, estimates
the cost of indexing in apply on the default preset, and writes
``benchmarks/search-results.json`` and the ``## Search`` section of
``benchmarks/RESULTS.md`` (see benchmarks/README.md). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import hashlib
import json
import os
import platform
import pstats
import random
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402
import search_report  # noqa: E402
from search_data import RARE_WORD, Corpus  # noqa: E402
from search_seed import SeedFigures, seed_archive, sizes  # noqa: E402
from tools import IMAPSYNC_DECL  # noqa: E402

from imapsync_decl.store.index import Index  # noqa: E402
from imapsync_decl.store.search.database import SearchIndex  # noqa: E402
from imapsync_decl.store.search.extract import extract  # noqa: E402
from imapsync_decl.store.search.find import find  # noqa: E402
from imapsync_decl.store.search.query import parse_query  # noqa: E402

TARGET_MS = 200.0
APPLY_SHARE_LIMIT = 0.25
SORTS = ("relevance", "-date")
#: The sender of the ``from:`` query: the 21st most frequent of the corpus's people.
FROM_RANK = 20


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def queries(corpus: Corpus) -> list[tuple[str, str]]:
    """(name, query text) of the measured queries: the issue's three, and a word that
    most messages hold, whose relevance order ranks every one of them."""
    return [
        ("rare word", RARE_WORD.lower()),
        ("common word", "invoice"),
        ("from: address", f"from:{corpus.people[FROM_RANK].address}"),
        ("one month", "after:2024-03-01 before:2024-04-01"),
    ]


def percentile(values: list[float], share: float) -> float:
    """The ``share`` percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.4999)))
    return ordered[rank - 1]


def _timed(action: Callable[[], object], repeat: int, warm: int) -> list[float]:
    for _ in range(warm):
        action()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return times


def _query_plan(search: SearchIndex, text: str, sort: str) -> list[str]:
    """The statements ``find`` runs for one query (values bound), and the plan of the first."""
    statements: list[str] = []
    connection = search.connection
    connection.set_trace_callback(statements.append)
    try:
        find(search, parse_query(text), sort=sort, limit=50)
    finally:
        connection.set_trace_callback(None)
    main = next(
        (s for s in statements if s.lstrip().upper().startswith(("SELECT P.ID", "WITH RANKED"))),
        None,
    )
    if main is None:
        return []
    rows = connection.execute("EXPLAIN QUERY PLAN " + main).fetchall()
    return [f"{row[0]}:{row[1]} {row[3]}" for row in rows]


def in_process(root: Path, corpus: Corpus, repeat: int) -> list[dict[str, Any]]:
    """Latency of ``find`` (parse, compile, execute, snippets) on one open SearchIndex."""
    rows = []
    with SearchIndex.open(root, create=False) as search:
        for name, text in queries(corpus):
            for sort in SORTS:
                matches = len(find(search, parse_query(text), sort=sort, limit=10_000))
                hits = find(search, parse_query(text), sort=sort, limit=50)
                times = _timed(
                    lambda t=text, s=sort: find(search, parse_query(t), sort=s, limit=50),  # type: ignore[misc]
                    repeat,
                    warm=3,
                )
                rows.append(
                    {
                        "query": name,
                        "text": text,
                        "sort": sort,
                        "hits": len(hits),
                        "matching_placements": matches,
                        "ids": [hit.id for hit in hits],
                        "repeat": repeat,
                        "p50_ms": percentile(times, 0.50),
                        "p95_ms": percentile(times, 0.95),
                        "max_ms": max(times),
                        "met": percentile(times, 0.95) < TARGET_MS,
                        "plan": _query_plan(search, text, sort),
                    }
                )
                log(
                    f"  in-process {name!r} {sort}: {len(hits)} hits of {matches}, "
                    f"p50 {rows[-1]['p50_ms']:.1f} ms, p95 {rows[-1]['p95_ms']:.1f} ms"
                )
    return rows


def command_available(program: list[str], cwd: Path) -> bool:
    result = subprocess.run(
        [*program, "archive", "search", "--help"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and "--archive" in result.stdout


def search_command(program: list[str], root: Path, text: str, sort: str) -> list[str]:
    return [
        *program,
        "archive",
        "search",
        "--archive",
        str(root),
        "--sort",
        sort,
        "--limit",
        "50",
        "--format",
        "json",
        *text.split(),
    ]


def _run_json(command: list[str], cwd: Path) -> Any:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"exit {result.returncode}: {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout)


def whole_command(
    program: list[str], root: Path, rows: list[dict[str, Any]], repeat: int
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Latency of ``imapsync-decl archive search ... --format json`` in a subprocess,
    for the rows measured in-process; and of ``imapsync-decl --version`` for scale. The
    commands run in the work directory, so no ``profiles.d`` or package of the current
    directory is picked up."""
    cwd = root.parent
    version = _timed(
        lambda: subprocess.run([*program, "--version"], cwd=cwd, capture_output=True, check=True),
        repeat,
        warm=2,
    )
    startup = {"p50_ms": percentile(version, 0.5), "p95_ms": percentile(version, 0.95)}
    measured = []
    for row in rows:
        command = search_command(program, root, row["text"], row["sort"])
        entry: dict[str, Any] = {"query": row["query"], "text": row["text"], "sort": row["sort"]}
        try:
            output = _run_json(command, cwd)
            ids = [item["id"] for item in output]
            times = _timed(lambda c=command: _run_json(c, cwd), repeat, warm=2)  # type: ignore[misc]
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            entry.update({"error": str(exc), "met": None})
            log(f"  command {row['query']!r} {row['sort']}: failed: {exc}")
            measured.append(entry)
            continue
        entry.update(
            {
                "hits": len(ids),
                "same_ids_as_in_process": ids == row["ids"],
                "repeat": repeat,
                "p50_ms": percentile(times, 0.50),
                "p95_ms": percentile(times, 0.95),
                "max_ms": max(times),
                "met": percentile(times, 0.95) < TARGET_MS,
            }
        )
        log(
            f"  command {row['query']!r} {row['sort']}: {len(ids)} hits, "
            f"p50 {entry['p50_ms']:.0f} ms, p95 {entry['p95_ms']:.0f} ms"
        )
        measured.append(entry)
    return measured, startup


def apply_cost(results_json: Path, work: Path, batch: int) -> dict[str, Any]:
    """Extraction and ``add`` over the default preset's messages (the CPU cost of indexing),
    and the first runs of imapsync-decl with and without indexing that ``benchmarks/run.py``
    measured in one run and recorded in ``results.json``."""
    import seed  # the apply benchmark's generator (imports the test servers' package)

    preset = seed.PRESETS["default"]
    corpus = seed._Corpus(random.Random("bench-corpus"))
    directory = work / "apply-cost"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(mode=0o700, parents=True)
    Index.open(directory / "index.sqlite").close()
    figures = SeedFigures(batch=batch)
    classes = {name: {"messages": 0, "bytes": 0, "extract_s": 0.0} for name in ("small", "large")}
    internal = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    generate_s = 0.0
    with SearchIndex.open(directory, create=True) as search:
        for mailbox in range(preset.mailboxes):
            started = time.perf_counter()
            items = [
                (hashlib.sha256(message).hexdigest(), message, internal)
                for _folder, _number, message in seed.iter_mailbox(corpus, preset, mailbox)
            ]
            generate_s += time.perf_counter() - started
            for first in range(0, len(items), batch):
                chunk = items[first : first + batch]
                documents = []
                for sha256, raw, internal_date in chunk:
                    begun = time.perf_counter()
                    documents.append((sha256, extract(raw, internal_date)))
                    spent = time.perf_counter() - begun
                    size_class = classes["large" if len(raw) >= seed.LARGE_MIN else "small"]
                    size_class["messages"] += 1
                    size_class["bytes"] += len(raw)
                    size_class["extract_s"] += spent
                    figures.extract_s += spent
                begun = time.perf_counter()
                search.add(documents)
                figures.add_s += time.perf_counter() - begun
                figures.messages += len(chunk)
                figures.message_bytes += sum(len(raw) for _, raw, _ in chunk)
        profile = _extract_profile(seed, corpus, preset)
    shutil.rmtree(directory, ignore_errors=True)
    runs: list[dict[str, Any]] = []
    recorded: dict[str, Any] = {}
    if results_json.exists():
        recorded = json.loads(results_json.read_text(encoding="utf-8"))
        # Format 2 holds several presets (every row names its own); format 1 held one.
        first_runs = {
            (row["tool"], row["connections"]): row
            for row in recorded.get("results", [])
            if row.get("phase") == "first" and row.get("preset", "default") == "default"
        }
        for (tool, connections), row in first_runs.items():
            bare = first_runs.get(("imapsync-decl-nosearch", connections))
            if tool != "imapsync-decl" or bare is None:
                continue
            share = (row["wall_s"] - bare["wall_s"]) / bare["wall_s"]
            runs.append(
                {
                    "connections": connections,
                    "first_run_wall_s": row["wall_s"],
                    "without_search_wall_s": bare["wall_s"],
                    "indexer_s": row.get("search_seconds"),
                    "waited_s": row.get("search_waited_seconds"),
                    "share": share,
                    "met": share <= APPLY_SHARE_LIMIT,
                }
            )
    log(
        f"  default preset: {figures.messages:,} messages, {figures.message_bytes / 1e6:.0f} MB, "
        f"extract {figures.extract_s:.1f} s + add {figures.add_s:.1f} s"
    )
    return {
        "preset": "default",
        "messages": figures.messages,
        "message_bytes": figures.message_bytes,
        "generate_s": generate_s,
        "extract_s": figures.extract_s,
        "add_s": figures.add_s,
        "index_s": figures.index_s,
        "messages_per_s": figures.messages / figures.index_s if figures.index_s else None,
        "results_json_date": recorded.get("date"),
        "preset_in_results_json": _recorded_preset(recorded),
        "runs": sorted(runs, key=lambda r: int(r["connections"])),
        "size_classes": classes,
        "large_min_bytes": seed.LARGE_MIN,
        "profile": profile,
    }


def _recorded_preset(recorded: dict[str, Any]) -> str | None:
    """The preset whose runs the share is taken from: ``default`` when results.json (format
    2) measured it, else the one preset of format 1."""
    if "presets" in recorded:
        names = [p.get("name") for p in recorded["presets"]]
        return "default" if "default" in names else None
    return (recorded.get("preset") or {}).get("name")


def _extract_profile(seed: Any, corpus: Any, preset: Any, top: int = 10) -> dict[str, Any]:
    """Where ``extract`` spends its time on the first mailbox of the preset: the functions
    with the most time of their own under cProfile, with their share of the total."""
    messages = [message for _f, _n, message in seed.iter_mailbox(corpus, preset, 0)]
    profiler = cProfile.Profile()
    profiler.enable()
    for message in messages:
        extract(message)
    profiler.disable()
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in entries.values()) or 1.0
    ranked = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return {
        "messages": len(messages),
        "functions": [
            {
                "function": f"{Path(file).name}:{line}({name})",
                "self_share": own / total,
                "calls": calls,
            }
            for (file, line, name), (_primitive, calls, own, _cumulative, _callers) in ranked
        ],
    }


def _versions() -> dict[str, str]:
    result = subprocess.run(
        [str(IMAPSYNC_DECL), "--version"], capture_output=True, text=True, check=False
    )
    options = [row[0] for row in sqlite3.connect(":memory:").execute("PRAGMA compile_options")]
    return {
        "imapsync_decl": (result.stdout or result.stderr).strip(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "fts5": "yes" if "ENABLE_FTS5" in options else "not in compile options",
        "kernel": platform.release(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000, help="messages to seed")
    parser.add_argument("--repeat", type=int, default=30, help="warm repetitions per query")
    parser.add_argument("--batch", type=int, default=500, help="messages per indexing batch")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep the seeded archive here and reuse it next time (default: a temporary "
        "directory, removed at the end unless --keep)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=HERE,
        help="where search-results.json and RESULTS.md are written (default: this directory)",
    )
    parser.add_argument(
        "--skip-apply-cost", action="store_true", help="leave out the default preset's estimate"
    )
    parser.add_argument(
        "--imapsync-decl",
        dest="program",
        default=str(IMAPSYNC_DECL),
        help="the command measured as a whole (split like a shell; default: the virtualenv's)",
    )
    options = parser.parse_args(argv)
    options.program = shlex.split(options.program)
    if options.messages < 1 or options.repeat < 1 or options.batch < 1:
        parser.error("--messages, --repeat and --batch must be at least 1")
    return options


def run(options: argparse.Namespace) -> int:
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    temporary = options.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="search-bench-")) if temporary else options.work_dir
    work.mkdir(parents=True, exist_ok=True)
    root = work / f"archive-{options.messages}"
    corpus = Corpus()
    compile_bytecode()
    try:
        log(f"seeding {options.messages:,} messages in {root}")
        seeded = seed_archive(root, options.messages, batch=options.batch)
        on_disk = sizes(root)
        log(
            f"seeded: store {seeded.store_s:.1f} s, index {seeded.index_s:.1f} s; "
            f"search.sqlite {on_disk['search_bytes'] / seeded.messages:,.0f} B/message"
        )
        log(f"in-process latency, {options.repeat} warm repetitions per query")
        local = in_process(root, corpus, options.repeat)
        command: list[dict[str, Any]] | None = None
        startup: dict[str, float] | None = None
        if command_available(options.program, work):
            log(f"whole command latency: {shlex.join(options.program)}")
            command, startup = whole_command(options.program, root, local, options.repeat)
        else:
            log("imapsync-decl archive search is not available here: whole command skipped")
        cost = None
        if not options.skip_apply_cost:
            log("indexing cost on the default preset's messages")
            cost = apply_cost(options.output_dir / "results.json", work, options.batch)
    finally:
        if temporary and not options.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")
    document = {
        "format_version": 1,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "versions": _versions(),
        "target_ms": TARGET_MS,
        "apply_share_limit": APPLY_SHARE_LIMIT,
        "data": {
            "messages": seeded.messages,
            "placements": seeded.placements,
            "message_bytes": seeded.message_bytes,
            "stored_bytes": seeded.stored_bytes,
            "users": len(corpus.users),
            "senders": len(corpus.people),
            "vocabulary": len(corpus.words),
            **on_disk,
        },
        "seeding": {
            "cached": seeded.cached,
            "seeded_at": seeded.seeded_at,
            "batch": seeded.batch,
            "generate_s": seeded.generate_s,
            "store_s": seeded.store_s,
            "extract_s": seeded.extract_s,
            "add_s": seeded.add_s,
            "index_s": seeded.index_s,
            "headers_only": seeded.headers_only,
            "indexed_per_s": seeded.messages / seeded.index_s if seeded.index_s else None,
        },
        "in_process": local,
        "command": command,
        "command_program": shlex.join(options.program),
        "startup": startup,
        "apply_cost": cost,
        "load": [load_start, os.getloadavg()[0]],
        "total_seconds": time.monotonic() - started,
    }
    options.output_dir.mkdir(parents=True, exist_ok=True)
    (options.output_dir / "search-results.json").write_text(
        json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    results_md = options.output_dir / "RESULTS.md"
    old = results_md.read_text(encoding="utf-8") if results_md.exists() else ""
    results_md.write_text(
        report.with_search_section(old, search_report.markdown(document)), encoding="utf-8"
    )
    log(f"wrote {options.output_dir / 'search-results.json'} and the Search section of RESULTS.md")
    for line in search_report.summary(document):
        print(line)
    return 0


def _machine() -> dict[str, Any]:
    from run import _machine as machine  # the apply benchmark's description of the machine

    return machine()


def compile_bytecode() -> None:
    """As the apply benchmark does: compile the package and the virtualenv first, so that
    the whole command does not compile every module on each start."""
    from run import compile_bytecode as compile_all

    compile_all()


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
