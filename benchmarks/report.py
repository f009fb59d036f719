"""Targets, RESULTS.md and the py-spy profile summary, from the results document."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

Document = dict[str, Any]
Row = dict[str, Any]

RSS_LIMIT_MIB = 300.0

#: Leaf frames of a thread that waits for another thread of the same process (not for I/O).
_WAITING_FILES = ("threading.py", "queue.py", "concurrent/futures/")

_FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*?)(?::\d+)?\)$")


def _find(document: Document, tool: str, phase: str, connections: int) -> Row | None:
    for row in document["results"]:
        if (row["tool"], row["phase"], row["connections"]) == (tool, phase, connections):
            return row  # type: ignore[no-any-return]
    return None


def _peak_rss(row: Row) -> float:
    return max(float(row["max_rss_mb"]), float(row["tree_rss_mb"]))


def targets(document: Document) -> list[dict[str, Any]]:
    """Each target with its measured ratio and whether it is met (None: not measured)."""
    found: list[dict[str, Any]] = []
    for n in document["connections"]:
        ours = _find(document, "imapsync-decl", "first", n)
        theirs = _find(document, "mbsync", "first", n)
        found.append(
            _ratio_target(
                "a",
                n,
                "imapsync-decl first run faster than mbsync (wall time ratio < 1)",
                ours["wall_s"] if ours else None,
                theirs["wall_s"] if theirs else None,
                limit=1.0,
                below=True,
            )
        )
    for n in document["connections"]:
        ours = _find(document, "imapsync-decl", "first", n)
        raw = _find(document, "raw", "first", n)
        found.append(
            _ratio_target(
                "b",
                n,
                "imapsync-decl first-run MB/s at least half the raw baseline's (ratio >= 0.5)",
                ours.get("mb_per_s") if ours else None,
                raw.get("mb_per_s") if raw else None,
                limit=0.5,
                below=False,
            )
        )
    for n in document["connections"]:
        ours = _find(document, "imapsync-decl", "noop", n)
        theirs = _find(document, "mbsync", "noop", n)
        found.append(
            _ratio_target(
                "c",
                n,
                "imapsync-decl no-op rerun within 1.5x of mbsync's no-op time (ratio <= 1.5)",
                ours["wall_s"] if ours else None,
                theirs["wall_s"] if theirs else None,
                limit=1.5,
                below=True,
                inclusive=True,
            )
        )
    n = 4 if 4 in document["connections"] else max(document["connections"])
    ours = _find(document, "imapsync-decl", "first", n)
    largest = document["data"]["largest_message_bytes"] / 1e6
    found.append(
        {
            "id": "d",
            "connections": n,
            "description": f"imapsync-decl peak RSS under {RSS_LIMIT_MIB:.0f} MiB with 4 jobs "
            f"and 5 MB messages (largest message here: {largest:.1f} MB)",
            "value": _peak_rss(ours) if ours else None,
            "limit": RSS_LIMIT_MIB,
            "unit": "MiB",
            "met": (_peak_rss(ours) < RSS_LIMIT_MIB and ours["ok"]) if ours else None,
        }
    )
    for n in document["connections"]:
        ours = _find(document, "imapsync-decl", "first", n)
        bare = _find(document, "imapsync-decl-nosearch", "first", n)
        cost = (ours["wall_s"] - bare["wall_s"]) / bare["wall_s"] if ours and bare else None
        found.append(
            {
                "id": "s",
                "connections": n,
                "description": "search indexing in apply costs at most 25 % of the first run's "
                "wall time (with indexing over without, same run, minus 1)",
                "value": cost,
                "limit": 0.25,
                "unit": "share",
                "met": cost <= 0.25 if cost is not None else None,
            }
        )
    return found


def _search_cost_table(document: Document) -> list[str]:
    rows = []
    for n in document["connections"]:
        ours = _find(document, "imapsync-decl", "first", n)
        bare = _find(document, "imapsync-decl-nosearch", "first", n)
        if ours is None or bare is None:
            continue
        cost = (ours["wall_s"] - bare["wall_s"]) / bare["wall_s"]
        rows.append(
            [
                str(n),
                _fmt(bare["wall_s"]),
                _fmt(ours["wall_s"]),
                f"{cost * 100:+.0f} %",
                _fmt(ours.get("search_seconds")),
                _fmt(ours.get("search_waited_seconds")),
                str(ours.get("search_indexed", "-")),
            ]
        )
    if not rows:
        return ["Not measured (run with the tools imapsync-decl and imapsync-decl-nosearch)."]
    return [
        "The same first run with `search_during_apply: false` in the Archive document and with "
        "the default (the indexer process beside the archiving), in the same benchmark run.",
        "",
        *_table(
            [
                "connections",
                "wall s without indexing",
                "wall s with indexing",
                "cost",
                "indexer wall s",
                "apply waited for it s",
                "indexed",
            ],
            rows,
        ),
    ]


def _ratio_target(
    ident: str,
    connections: int,
    description: str,
    ours: float | None,
    theirs: float | None,
    *,
    limit: float,
    below: bool,
    inclusive: bool = False,
) -> dict[str, Any]:
    ratio = ours / theirs if ours is not None and theirs else None
    met: bool | None = None
    if ratio is not None:
        met = (ratio <= limit if inclusive else ratio < limit) if below else ratio >= limit
    return {
        "id": ident,
        "connections": connections,
        "description": description,
        "value": ratio,
        "limit": limit,
        "unit": "ratio",
        "met": met,
    }


# ------------------------------------------------------------------------ markdown


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---:" if i else "---" for i in range(len(headers))) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _cpu(row: Row) -> str:
    return _fmt(row["user_s"] + row["sys_s"], 1)


def _first_table(document: Document, tool: str) -> list[str]:
    rows = []
    for n in document["connections"]:
        row = _find(document, tool, "first", n)
        if row is None:
            continue
        rows.append(
            [
                str(n),
                _fmt(row["wall_s"]),
                _fmt(row.get("msg_per_s"), 0),
                _fmt(row.get("mb_per_s"), 1),
                _cpu(row),
                _fmt(row["server_cpu_s"], 1),
                _fmt(row["max_rss_mb"], 0),
                _fmt(row["tree_rss_mb"], 0),
                f"{_fmt(row['messages'])} / {_fmt(row['expected_messages'])}",
                _fmt(row["ok"]),
            ]
        )
    return _table(
        [
            "connections",
            "wall s",
            "msg/s",
            "MB/s",
            "client CPU s",
            "server CPU s",
            "max RSS MiB",
            "tree RSS MiB",
            "messages",
            "ok",
        ],
        rows,
    )


def _noop_table(document: Document, tool: str) -> list[str]:
    rows = []
    for n in document["connections"]:
        row = _find(document, tool, "noop", n)
        if row is None:
            continue
        rows.append(
            [
                str(n),
                _fmt(row["wall_s"]),
                _cpu(row),
                _fmt(row["server_cpu_s"], 1),
                _fmt(row["max_rss_mb"], 0),
                _fmt(row["tree_rss_mb"], 0),
                _fmt(row["ok"]),
            ]
        )
    return _table(
        [
            "connections",
            "wall s",
            "client CPU s",
            "server CPU s",
            "max RSS MiB",
            "tree RSS MiB",
            "ok",
        ],
        rows,
    )


def _target_rows(document: Document) -> list[str]:
    rows = []
    for target in document["targets"]:
        met = {True: "met", False: "**not met**", None: "not measured"}[target["met"]]
        unit = target["unit"]
        value = _fmt(target["value"], 0 if unit == "MiB" else 2)
        limit = (
            "< " if target["id"] in ("a", "d") else "<= " if target["id"] in ("c", "s") else ">= "
        ) + (_fmt(target["limit"], 0 if unit == "MiB" else 2))
        rows.append(
            [
                f"({target['id']})",
                target["description"],
                str(target["connections"]),
                f"{value} {unit}" if unit == "MiB" else value,
                limit,
                met,
            ]
        )
    return _table(["", "target", "connections", "measured", "required", "result"], rows)


def _why(document: Document) -> list[str]:
    lines: list[str] = []
    nproc = document["machine"]["nproc"]
    for n in document["connections"]:
        for tool in ("imapsync-decl", "raw", "mbsync"):
            row = _find(document, tool, "first", n)
            if row is None:
                continue
            client = row["user_s"] + row["sys_s"]
            server = row["server_cpu_s"] or 0.0
            wall = row["wall_s"]
            lines.append(
                f"- {tool}, first run, {n} connection(s): {wall:.1f} s wall; the client used "
                f"{client:.1f} s CPU ({100 * client / wall:.0f} % of one core; user "
                f"{row['user_s']:.1f} s, system {row['sys_s']:.1f} s), Dovecot {server:.1f} s "
                f"({100 * server / wall:.0f} %); together "
                f"{100 * (client + server) / (wall * nproc):.0f} % of the {nproc} cores."
            )
    for n in document["connections"]:
        row = _find(document, "imapsync-decl", "first", n)
        raw = _find(document, "raw", "first", n)
        if row and raw and document["data"]["mb"]:
            per_mb = (row["user_s"] + row["sys_s"]) / document["data"]["mb"]
            raw_per_mb = (raw["user_s"] + raw["sys_s"]) / document["data"]["mb"]
            lines.append(
                f"- Client CPU per MB at {n} connection(s): imapsync-decl "
                f"{1000 * per_mb:.1f} ms, raw baseline {1000 * raw_per_mb:.1f} ms."
            )
        if row and row.get("search_seconds") is not None and row["wall_s"]:
            lines.append(
                f"- Search indexing in the first run at {n} connection(s): "
                f"{row['search_seconds']:.1f} s for {row.get('search_indexed') or 0:,} messages"
                f" ({100 * row['search_seconds'] / row['wall_s']:.0f} % of the wall time; the"
                " time the storing thread spent extracting and indexing, which overlaps the"
                " fetching, so at most the wall time indexing costs)."
            )
        if row and row.get("archive_disk_bytes"):
            lines.append(
                f"- Archive on disk after the first run at {n} connection(s): "
                f"{row['archive_disk_bytes'] / 1e6:.0f} MB for {document['data']['mb']:.0f} MB "
                "of messages."
            )
    startup = document.get("startup")
    if startup:
        lines.append(
            f"- Start-up of the CLI alone (median of 3): `imapsync-decl --version` "
            f"{startup['version_s']:.2f} s, `imapsync-decl validate` of the benchmark "
            f"configuration {startup['validate_s']:.2f} s (no server contacted)."
        )
    profile = document.get("profile") or {}
    for phase, title in (("first", "first run"), ("noop", "no-op rerun")):
        part = profile.get(phase)
        if not part or not part.get("samples"):
            continue
        lines += [
            "",
            f"py-spy, an extra (untimed) imapsync-decl {title} at {profile['connections']} "
            f"connection(s) ({part['wall_s']:.1f} s under the profiler): "
            f"{part['samples']:,} wall-clock samples at 200 Hz of threads that were running "
            "or blocked in a system call (I/O, fsync); another "
            f"{part.get('waiting_samples', 0):,} samples of threads waiting for another "
            "thread (locks, queues) are left out. Share of the samples spent *in* each "
            "function (self), and *under* each function of the package (inclusive).",
            "",
        ]
        lines += _table(
            ["self %", "function"],
            [[f"{share:.1f}", f"`{name}`"] for name, share in part["self"]],
        )
        lines.append("")
        lines += _table(
            ["inclusive %", "function"],
            [[f"{share:.1f}", f"`{name}`"] for name, share in part["inclusive"]],
        )
    return lines


def markdown(document: Document) -> str:
    data = document["data"]
    preset = document["preset"]
    machine = document["machine"]
    versions = document["versions"]
    seeding = document["seeding"]
    repeat = document["repeat"]
    lines = [
        "# Benchmark results",
        "",
        "Written by `benchmarks/run.py` (see `benchmarks/README.md`); overwritten by every run.",
        "",
        f"- Date: {document['date']}",
        f"- Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['ram_gib']} GiB "
        f"RAM, Linux {versions['kernel']}",
        f"- Versions: {versions['imapsync_decl']}, Dovecot {versions['dovecot']}, "
        f"{versions['isync']} (mbsync), Python {versions['python']}",
        f"- Preset `{preset['name']}`: {preset['mailboxes']} mailboxes x {preset['folders']} "
        f"folders x {preset['messages_per_folder']} messages = {data['messages']:,} messages, "
        f"{data['mb']:,.1f} MB ({data['large_messages']} messages of 0.5 MB or more, the "
        f"largest {data['largest_message_bytes'] / 1e6:.2f} MB)",
        f"- Transport: {document['transport']}",
        f"- Seeding (not part of any comparison): {seeding['seconds']:.1f} s "
        f"({seeding['method']}; writing {seeding['write_seconds']:.1f} s, indexing "
        f"{seeding['index_seconds']:.1f} s), then a warm-up of {seeding['warm_up_seconds']:.1f} s",
        f"- Each figure is {'the median of ' + str(repeat) + ' runs' if repeat > 1 else 'one run'}"
        "; every run starts from an empty output directory of its own. MB = 10^6 bytes of "
        "messages (the bytes the server sends for BODY[]); RSS in MiB.",
        f"- Whole benchmark: {document['total_seconds'] / 60:.1f} min.",
        "",
        "## Targets",
        "",
        *_target_rows(document),
        "",
        "## imapsync-decl apply, first run",
        "",
        *_first_table(document, "imapsync-decl"),
        "",
        "## imapsync-decl apply, no-op rerun",
        "",
        *_noop_table(document, "imapsync-decl"),
        "",
        "## Search indexing in apply: with and without, same run",
        "",
        *_search_cost_table(document),
        "",
        "## Raw baseline (`benchmarks/raw_fetch.py`)",
        "",
        *_first_table(document, "raw"),
        "",
        "## mbsync, first run",
        "",
        *_first_table(document, "mbsync"),
        "",
        "## mbsync, no-op rerun",
        "",
        *_noop_table(document, "mbsync"),
        "",
        "## Why: measured facts",
        "",
        *_why(document),
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------- profile


def _frame_name(frame: str) -> tuple[str, str]:
    match = _FRAME_RE.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    return match.group("func"), match.group("file")


def summarise_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares from py-spy's ``--format raw`` (collapsed stacks)."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = waiting = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")]
        code = [(func, file) for func, file in frames if file]
        if code and any(part in code[-1][1] for part in _WAITING_FILES):
            waiting += count
            continue
        total += count
        if code:
            func, file = code[-1]
            self_counts[f"{func} ({file})"] += count
        seen = {f"{func} ({file})" for func, file in code if "imapsync_decl" in file}
        for name in seen:
            inclusive[name] += count
    if total == 0:
        return {"samples": 0}
    return {
        "samples": total,
        "waiting_samples": waiting,
        "self": [(name, 100 * n / total) for name, n in self_counts.most_common(top)],
        "inclusive": [(name, 100 * n / total) for name, n in inclusive.most_common(top)],
    }


# -------------------------------------------------------------------------- search

SEARCH_BEGIN = "<!-- search: written by benchmarks/search.py -->"
SEARCH_END = "<!-- end of search -->"


def search_section(text: str) -> str | None:
    """The search benchmark's section of a RESULTS.md, markers included, if it has one."""
    start = text.find(SEARCH_BEGIN)
    end = text.find(SEARCH_END, start)
    if start < 0 or end < 0:
        return None
    return text[start : end + len(SEARCH_END)]


def with_search_section(text: str, section: str | None) -> str:
    """``text`` with its search section replaced by ``section`` (markers included), or
    with ``section`` appended when it has none; ``text`` as it is when ``section`` is None."""
    if section is None:
        return text
    old = search_section(text)
    if old is not None:
        return text.replace(old, section)
    return text.rstrip("\n") + ("\n\n" if text.strip() else "") + section + "\n"
