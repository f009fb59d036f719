"""Targets, RESULTS.md and the py-spy profile summary, from the results document.

The document (``results.json``, format 2) holds one or more presets measured in the same
run; every result row names its preset. The targets are those of issue 14 (the archiving
path against mbsync and the raw baseline, memory, start-up, cost growth), plus the search
indexing target of issue 11, which is reported separately.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

Document = dict[str, Any]
Row = dict[str, Any]

#: imapsync-decl with `search_during_apply: false`: the archiving path the targets measure.
ARCHIVING = "imapsync-decl-nosearch"
#: imapsync-decl with the default settings (search indexing beside the archiving).
DEFAULTS = "imapsync-decl"
TOOL_LABELS = {
    "raw": "raw baseline",
    "mbsync": "mbsync",
    ARCHIVING: "imapsync-decl, archiving only",
    DEFAULTS: "imapsync-decl, with indexing (default)",
}

FIRST_VS_MBSYNC = 0.6
FIRST_VS_RAW = 1.5
NOOP_VS_MBSYNC = 1.0
VERSION_LIMIT_MS = 150.0
#: Peak summed PSS of the process tree, in MB (10^6 bytes).
PSS_LIMIT_MB = 300.0
#: Per-message CPU and per-folder plan time of the larger preset over the smaller, minus 1.
GROWTH_LIMIT = 0.10
SEARCH_SHARE_LIMIT = 0.25

_MIB = 1 << 20

#: Leaf frames of a thread that waits for another thread of the same process or for a child
#: process to end (not for I/O).
_WAITING_FILES = ("threading.py", "queue.py", "concurrent/futures/", "subprocess.py")

_FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*?)(?::\d+)?\)$")


# ------------------------------------------------------------------------ lookups


def presets(document: Document) -> list[dict[str, Any]]:
    """The measured presets, in the order they were measured."""
    return list(document["presets"])


def find(document: Document, preset: str, tool: str, phase: str, connections: int) -> Row | None:
    for row in document["results"]:
        if (row["preset"], row["tool"], row["phase"], row["connections"]) == (
            preset,
            tool,
            phase,
            connections,
        ):
            return row  # type: ignore[no-any-return]
    return None


def cpu_s(row: Row) -> float:
    return float(row["user_s"]) + float(row["sys_s"])


def cpu_ms_per_message(row: Row | None) -> float | None:
    """Client CPU (user + system, whole tree) per archived message, in ms."""
    if row is None or not row.get("messages"):
        return None
    return 1000 * cpu_s(row) / float(row["messages"])


def pss_mb(row: Row | None) -> float | None:
    """Peak summed PSS of the tree in MB (10^6 bytes)."""
    if row is None or not row.get("tree_pss_mb"):
        return None
    return float(row["tree_pss_mb"]) * _MIB / 1e6


def growth_pair(document: Document) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(smaller, larger) preset by messages, when two or more were measured."""
    measured = sorted(presets(document), key=lambda p: p["total_messages"])
    if len(measured) < 2 or measured[0]["total_messages"] == measured[-1]["total_messages"]:
        return None
    return measured[0], measured[-1]


# ------------------------------------------------------------------------ targets


def _target(
    ident: str,
    preset: str,
    connections: int | None,
    description: str,
    value: float | None,
    limit: float,
    op: str,
    unit: str,
    *,
    ok: bool = True,
) -> dict[str, Any]:
    met: bool | None = None
    if value is not None:
        met = {"<": value < limit, "<=": value <= limit, ">=": value >= limit}[op] and ok
    return {
        "id": ident,
        "preset": preset,
        "connections": connections,
        "description": description,
        "value": value,
        "limit": limit,
        "op": op,
        "unit": unit,
        "met": met,
    }


def _ratio(ours: Row | None, theirs: Row | None, key: str = "wall_s") -> float | None:
    if ours is None or theirs is None or not theirs.get(key):
        return None
    return float(ours[key]) / float(theirs[key])


def targets(document: Document) -> list[dict[str, Any]]:
    """Each target with its measured value and whether it is met (None: not measured)."""
    found: list[dict[str, Any]] = []
    counts = document["connections"]
    comparisons = (
        (
            "a",
            ARCHIVING,
            "first",
            "mbsync",
            FIRST_VS_MBSYNC,
            f"first run at most {FIRST_VS_MBSYNC}x mbsync's wall time (archiving path)",
        ),
        (
            "b",
            ARCHIVING,
            "first",
            "raw",
            FIRST_VS_RAW,
            f"first run at most {FIRST_VS_RAW}x the raw fetch+write baseline's wall time "
            "(archiving path)",
        ),
        (
            "c",
            DEFAULTS,
            "noop",
            "mbsync",
            NOOP_VS_MBSYNC,
            "no-op rerun no slower than mbsync's no-op rerun (default settings)",
        ),
    )
    for ident, tool, phase, other, limit, description in comparisons:
        for p in presets(document):
            for n in counts:
                ours = find(document, p["name"], tool, phase, n)
                found.append(
                    _target(
                        ident,
                        p["name"],
                        n,
                        description,
                        _ratio(ours, find(document, p["name"], other, phase, n)),
                        limit,
                        "<=",
                        "ratio",
                        ok=bool(ours and ours["ok"]),
                    )
                )
    startup = document.get("startup") or {}
    version = startup.get("version_s")
    found.append(
        _target(
            "d",
            "-",
            None,
            f"`imapsync-decl --version` under {VERSION_LIMIT_MS:.0f} ms (median of 3)",
            1000 * version if version is not None else None,
            VERSION_LIMIT_MS,
            "<",
            "ms",
        )
    )
    n = 4 if 4 in counts else max(counts)
    for p in presets(document):
        ours = find(document, p["name"], DEFAULTS, "first", n)
        largest = p["data"]["largest_message_bytes"] / 1e6
        found.append(
            _target(
                "e",
                p["name"],
                n,
                f"peak memory of the process tree (summed PSS) under {PSS_LIMIT_MB:.0f} MB with "
                f"4 connections and 5 MB messages (default settings; largest message here "
                f"{largest:.1f} MB)",
                pss_mb(ours),
                PSS_LIMIT_MB,
                "<",
                "MB",
                ok=bool(ours and ours["ok"]),
            )
        )
    pair = growth_pair(document)
    if pair is None:
        for ident, what in (
            ("f", "per-message client CPU of the first run on the larger preset"),
            ("g", "`plan` when nothing changed: ms per folder on the larger preset"),
        ):
            found.append(
                _target(
                    ident,
                    "-",
                    None,
                    f"{what} within {GROWTH_LIMIT * 100:.0f} % of the smaller preset's (needs "
                    "two presets of different sizes, e.g. `--presets default,large`)",
                    None,
                    GROWTH_LIMIT,
                    "<=",
                    "share",
                )
            )
    else:
        small, large = pair
        label = f"{large['name']} / {small['name']}"
        for n in counts:
            per_small = cpu_ms_per_message(find(document, small["name"], ARCHIVING, "first", n))
            per_large = cpu_ms_per_message(find(document, large["name"], ARCHIVING, "first", n))
            found.append(
                _target(
                    "f",
                    label,
                    n,
                    f"per-message client CPU of the first run on `{large['name']}` within "
                    f"{GROWTH_LIMIT * 100:.0f} % of `{small['name']}`'s (archiving path; "
                    "ratio minus 1)",
                    per_large / per_small - 1 if per_small and per_large else None,
                    GROWTH_LIMIT,
                    "<=",
                    "share",
                )
            )
        for n in counts:
            plan_small = find(document, small["name"], DEFAULTS, "plan", n)
            plan_large = find(document, large["name"], DEFAULTS, "plan", n)
            value = None
            if plan_small and plan_large and plan_small["ms_per_folder"]:
                value = plan_large["ms_per_folder"] / plan_small["ms_per_folder"] - 1
            found.append(
                _target(
                    "g",
                    label,
                    n,
                    f"`plan` when nothing changed is O(folders): ms per folder on "
                    f"`{large['name']}` ({large['total_folders']} folders) within "
                    f"{GROWTH_LIMIT * 100:.0f} % of `{small['name']}`'s "
                    f"({small['total_folders']}) (ratio minus 1)",
                    value,
                    GROWTH_LIMIT,
                    "<=",
                    "share",
                    ok=bool(plan_small and plan_large and plan_small["ok"] and plan_large["ok"]),
                )
            )
    for p in presets(document):
        for n in counts:
            ratio = _ratio(
                find(document, p["name"], DEFAULTS, "first", n),
                find(document, p["name"], ARCHIVING, "first", n),
            )
            found.append(
                _target(
                    "s",
                    p["name"],
                    n,
                    "search indexing in apply costs at most 25 % of the first run's wall time "
                    "(with indexing over without, same run, minus 1; reported separately)",
                    ratio - 1 if ratio is not None else None,
                    SEARCH_SHARE_LIMIT,
                    "<=",
                    "share",
                )
            )
    return found


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


def _table(headers: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    """A Markdown table: the first ``text_columns`` columns left-aligned, the rest right."""
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append(
        "|" + "|".join("---" if i < text_columns else "---:" for i in range(len(headers))) + "|"
    )
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _value(target: dict[str, Any], value: float | None) -> str:
    if value is None:
        return "-"
    unit = target["unit"]
    if unit == "share":
        return f"{value * 100:+.0f} %"
    if unit == "MB":
        return f"{value:,.0f} MB"
    if unit == "ms":
        return f"{value:,.0f} ms"
    return f"{value:.2f}"


def _required(target: dict[str, Any]) -> str:
    limit = target["limit"]
    if target["unit"] == "share":
        return f"{target['op']} {limit * 100:+.0f} %"
    return f"{target['op']} {_value(target, limit)}"


def _target_rows(document: Document) -> list[str]:
    rows = []
    for target in document["targets"]:
        met = {True: "met", False: "**not met**", None: "not measured"}[target["met"]]
        rows.append(
            [
                f"({target['id']})",
                target["description"],
                f"`{target['preset']}`" if target["preset"] != "-" else "-",
                _fmt(target["connections"]),
                _value(target, target["value"]),
                _required(target),
                met,
            ]
        )
    return _table(
        ["", "target", "preset", "connections", "measured", "required", "result"],
        rows,
        text_columns=3,
    )


def _load(row: Row, nproc: int) -> str:
    """What the client and the server used of the machine during a run."""
    wall = float(row["wall_s"]) or 1.0
    client = cpu_s(row)
    server = float(row.get("server_cpu_s") or 0.0)
    return (
        f"{row['wall_s']:.1f} s wall, client CPU {client:.1f} s "
        f"({100 * client / wall:.0f} % of one core), Dovecot {server:.1f} s; together "
        f"{100 * (client + server) / (wall * nproc):.0f} % of the {nproc} cores"
    )


def _not_met(document: Document) -> list[str]:
    """The measured facts next to every target that is not met."""
    nproc = int(document["machine"]["nproc"] or 1)
    lines: list[str] = []
    for target in document["targets"]:
        if target["met"] is not False:
            continue
        ident, preset, n = target["id"], target["preset"], target["connections"]
        head = f"- ({ident}) `{preset}`" + (f", {n} connection(s)" if n else "") + ": "
        if ident in ("a", "b", "c"):
            phase = "noop" if ident == "c" else "first"
            tool = DEFAULTS if ident == "c" else ARCHIVING
            other = "raw" if ident == "b" else "mbsync"
            ours = find(document, preset, tool, phase, n)
            theirs = find(document, preset, other, phase, n)
            if ours is None or theirs is None:
                continue
            lines.append(
                head + f"{TOOL_LABELS[tool]} {_load(ours, nproc)}; {TOOL_LABELS[other]} "
                f"{_load(theirs, nproc)}. Ratio {_value(target, target['value'])}, "
                f"required {_required(target)}."
                + ("" if ours["ok"] else " The run failed or archived the wrong count.")
            )
        elif ident == "e":
            ours = find(document, preset, DEFAULTS, "first", n)
            bare = find(document, preset, ARCHIVING, "first", n)
            if ours is None:
                continue
            lines.append(
                head + f"peak summed PSS {_value(target, target['value'])} with indexing, "
                f"{_value(target, pss_mb(bare))} without; the largest single process "
                f"{ours['max_rss_mb']:.0f} MiB RSS."
            )
        elif ident in ("f", "g", "s", "d"):
            lines.append(
                head + f"{_value(target, target['value'])}, required {_required(target)} "
                "(figures in the tables below)."
            )
    first = (document.get("profile") or {}).get("first") or {}
    if lines and first.get("groups"):
        busiest = "; ".join(
            f"`{g['thread']}` of `{g['process']}` ({g['threads']} thread(s)) {g['share']:.0f} %"
            + (f", mostly in `{g['top'][0][0]}`" if g["top"] else "")
            for g in first["groups"][:4]
        )
        lines.append(
            f"- Where the archiving path's first run spends its time (py-spy, share of the "
            f"samples of working threads, see the end): {busiest}."
        )
    return lines


def _summary_table(document: Document, preset: str) -> list[str]:
    """Wall time of every tool: first run and no-op, per connection count."""
    counts = document["connections"]
    headers = ["tool"]
    headers += [f"first run s, {n} conn." for n in counts]
    headers += [f"no-op s, {n} conn." for n in counts]
    headers += [f"first run / mbsync, {n} conn." for n in counts]
    rows = []
    for tool in ("raw", "mbsync", ARCHIVING, DEFAULTS):
        cells = [TOOL_LABELS[tool]]
        present = False
        for phase in ("first", "noop"):
            for n in counts:
                row = find(document, preset, tool, phase, n)
                present = present or row is not None
                cells.append(_fmt(row["wall_s"]) if row else "-")
        for n in counts:
            ratio = _ratio(
                find(document, preset, tool, "first", n),
                find(document, preset, "mbsync", "first", n),
            )
            cells.append(_fmt(ratio))
        if present:
            rows.append(cells)
    return _table(headers, rows)


def _first_table(document: Document, preset: str) -> list[str]:
    rows = []
    for tool in ("raw", "mbsync", ARCHIVING, DEFAULTS):
        for n in document["connections"]:
            row = find(document, preset, tool, "first", n)
            if row is None:
                continue
            rows.append(
                [
                    TOOL_LABELS[tool],
                    str(n),
                    _fmt(row["wall_s"]),
                    _fmt(row.get("msg_per_s"), 0),
                    _fmt(row.get("mb_per_s"), 1),
                    _fmt(cpu_s(row), 1),
                    _fmt(cpu_ms_per_message(row), 2),
                    _fmt(row["server_cpu_s"], 1),
                    _fmt(row["max_rss_mb"], 0),
                    _fmt(row["tree_rss_mb"], 0),
                    _fmt(row.get("tree_pss_mb"), 0),
                    f"{_fmt(row['messages'])} / {_fmt(row['expected_messages'])}",
                    _fmt(row["ok"]),
                ]
            )
    return _table(
        [
            "tool",
            "connections",
            "wall s",
            "msg/s",
            "MB/s",
            "client CPU s",
            "CPU ms/msg",
            "server CPU s",
            "max RSS MiB",
            "tree RSS MiB",
            "tree PSS MiB",
            "messages",
            "ok",
        ],
        rows,
    )


def _noop_table(document: Document, preset: str) -> list[str]:
    rows = []
    for tool in ("mbsync", ARCHIVING, DEFAULTS):
        for n in document["connections"]:
            row = find(document, preset, tool, "noop", n)
            if row is None:
                continue
            rows.append(
                [
                    TOOL_LABELS[tool],
                    str(n),
                    _fmt(row["wall_s"]),
                    _fmt(cpu_s(row), 1),
                    _fmt(row["server_cpu_s"], 1),
                    _fmt(row["max_rss_mb"], 0),
                    _fmt(row.get("tree_pss_mb"), 0),
                    _fmt(row["ok"]),
                ]
            )
    return _table(
        [
            "tool",
            "connections",
            "wall s",
            "client CPU s",
            "server CPU s",
            "max RSS MiB",
            "tree PSS MiB",
            "ok",
        ],
        rows,
    )


def _plan_table(document: Document, preset: str) -> list[str]:
    rows = []
    for n in document["connections"]:
        row = find(document, preset, DEFAULTS, "plan", n)
        if row is None:
            continue
        rows.append(
            [
                str(n),
                _fmt(row["folders"]),
                _fmt(row["wall_s"]),
                _fmt(row["ms_per_folder"], 2),
                _fmt(cpu_s(row), 2),
                _fmt(row["server_cpu_s"], 2),
                _fmt(row["ok"]),
            ]
        )
    if not rows:
        return ["Not measured (run with the tool imapsync-decl)."]
    return [
        "`imapsync-decl plan --format json --detailed-exitcode` on the archive after the no-op "
        "rerun, with nothing new on the server (median of 3; *ok*: every run exited 0, no "
        "changes pending).",
        "",
        *_table(
            [
                "connections",
                "folders",
                "wall s",
                "ms per folder",
                "client CPU s",
                "server CPU s",
                "ok",
            ],
            rows,
        ),
    ]


def _search_cost_table(document: Document, preset: str) -> list[str]:
    rows = []
    for n in document["connections"]:
        ours = find(document, preset, DEFAULTS, "first", n)
        bare = find(document, preset, ARCHIVING, "first", n)
        if ours is None or bare is None:
            continue
        cost = (ours["wall_s"] - bare["wall_s"]) / bare["wall_s"]
        rows.append(
            [
                str(n),
                _fmt(bare["wall_s"]),
                _fmt(ours["wall_s"]),
                f"{cost * 100:+.0f} %",
                _fmt(cpu_s(bare), 1),
                _fmt(cpu_s(ours), 1),
                _fmt(ours.get("search_seconds")),
                _fmt(ours.get("search_waited_seconds")),
                _fmt(ours.get("search_indexed")),
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
                "client CPU s without",
                "client CPU s with",
                "indexer wall s",
                "apply waited for it s",
                "indexed",
            ],
            rows,
        ),
    ]


def _growth(document: Document) -> list[str]:
    pair = growth_pair(document)
    if pair is None:
        return ["Needs two presets of different sizes (`--presets default,large`)."]
    small, large = pair
    rows = []
    for tool in (ARCHIVING, DEFAULTS, "mbsync", "raw"):
        for n in document["connections"]:
            a = cpu_ms_per_message(find(document, small["name"], tool, "first", n))
            b = cpu_ms_per_message(find(document, large["name"], tool, "first", n))
            if a is None and b is None:
                continue
            change = f"{(b / a - 1) * 100:+.0f} %" if a and b else "-"
            rows.append([TOOL_LABELS[tool], str(n), _fmt(a), _fmt(b), change])
    lines = [
        f"Client CPU (user + system of the whole process tree) per message of the first run, "
        f"`{small['name']}` ({small['total_messages']:,} messages) against `{large['name']}` "
        f"({large['total_messages']:,}); the messages of the first mailboxes are the same in "
        "both (fixed seeds), the larger preset has more mailboxes of the same kind.",
        "",
        *_table(
            [
                "tool",
                "connections",
                f"ms/msg `{small['name']}`",
                f"ms/msg `{large['name']}`",
                "change",
            ],
            rows,
        ),
        "",
    ]
    rows = []
    for n in document["connections"]:
        plan_a = find(document, small["name"], DEFAULTS, "plan", n)
        plan_b = find(document, large["name"], DEFAULTS, "plan", n)
        if plan_a is None or plan_b is None:
            continue
        extra = plan_b["folders"] - plan_a["folders"]
        marginal = 1000 * (plan_b["wall_s"] - plan_a["wall_s"]) / extra if extra else None
        rows.append(
            [
                str(n),
                f"{plan_a['wall_s']:.2f} s / {plan_a['folders']:,}",
                f"{plan_b['wall_s']:.2f} s / {plan_b['folders']:,}",
                _fmt(plan_a["ms_per_folder"]),
                _fmt(plan_b["ms_per_folder"]),
                _fmt(marginal),
            ]
        )
    if rows:
        lines += [
            "`plan` when nothing changed: wall time over folders. Linear cost with a fixed "
            "start-up gives a lower (or equal) figure per folder on the larger preset; the "
            "marginal cost is the extra time per extra folder.",
            "",
            *_table(
                [
                    "connections",
                    f"`{small['name']}` wall / folders",
                    f"`{large['name']}` wall / folders",
                    f"ms/folder `{small['name']}`",
                    f"ms/folder `{large['name']}`",
                    "marginal ms per extra folder",
                ],
                rows,
            ),
        ]
    return lines


def _why(document: Document) -> list[str]:
    lines: list[str] = []
    nproc = int(document["machine"]["nproc"] or 1)
    for p in presets(document):
        for n in document["connections"]:
            for tool in (ARCHIVING, DEFAULTS, "raw", "mbsync"):
                row = find(document, p["name"], tool, "first", n)
                if row is None:
                    continue
                lines.append(
                    f"- `{p['name']}`, {TOOL_LABELS[tool]}, first run, {n} connection(s): "
                    f"{_load(row, nproc)} (user {row['user_s']:.1f} s, system "
                    f"{row['sys_s']:.1f} s)."
                )
            row = find(document, p["name"], ARCHIVING, "first", n)
            if row and row.get("archive_disk_bytes"):
                lines.append(
                    f"- `{p['name']}`, archive on disk after the first run at {n} "
                    f"connection(s): {row['archive_disk_bytes'] / 1e6:,.0f} MB for "
                    f"{p['data']['mb']:,.0f} MB of messages."
                )
    startup = document.get("startup")
    if startup:
        lines.append(
            f"- Start-up of the CLI alone (median of 3): `imapsync-decl --version` "
            f"{1000 * startup['version_s']:.0f} ms, `imapsync-decl validate` of the benchmark "
            f"configuration {1000 * startup['validate_s']:.0f} ms (no server contacted)."
        )
    return lines


def _profile(document: Document) -> list[str]:
    profile = document.get("profile") or {}
    lines: list[str] = []
    for phase, heading, title in (
        (
            "first",
            "First run, archiving only",
            "first run of the archiving path (`search_during_apply: false`)",
        ),
        ("noop", "No-op rerun, archiving only", "no-op rerun of the archiving path"),
        (
            "indexing",
            "First run with indexing (default settings)",
            "first run with the default settings (the search indexer beside the archiving, in "
            "a process of its own)",
        ),
    ):
        part = profile.get(phase)
        if not part or not part.get("samples"):
            continue
        lines += [
            f"### {heading}",
            "",
            f"An extra (untimed) {title} "
            f"on `{profile.get('preset', '?')}` at {profile['connections']} connection(s), "
            f"{part['wall_s']:.1f} s under the profiler: {part['samples']:,} wall-clock samples "
            "at 200 Hz of threads that were running or blocked in a system call (I/O, fsync), "
            f"of every process of the run; another {part.get('waiting_samples', 0):,} samples "
            "of threads waiting for another thread (locks, queues, futures) or for a child "
            "process to end are left out of the shares.",
            "",
        ]
        groups = part.get("groups") or []
        if groups:
            lines += [
                "By process and thread (threads of the same kind together; a share near 100 % "
                "per thread means that thread was busy the whole run):",
                "",
                *_table(
                    [
                        "process",
                        "thread",
                        "threads",
                        "share of samples",
                        "waiting samples",
                        "busiest functions (self)",
                    ],
                    [
                        [
                            f"`{g['process']}`",
                            f"`{g['thread']}`",
                            str(g["threads"]),
                            f"{g['share']:.1f} %",
                            f"{g['waiting']:,}",
                            ", ".join(f"`{name}` {share:.0f} %" for name, share in g["top"]),
                        ]
                        for g in groups
                    ],
                    text_columns=2,
                ),
                "",
            ]
        lines += _table(
            ["function (all processes and threads)", "self %"],
            [[f"`{name}`", f"{share:.1f}"] for name, share in part["self"]],
        )
        lines.append("")
        lines += _table(
            ["function of the package", "inclusive %"],
            [[f"`{name}`", f"{share:.1f}"] for name, share in part["inclusive"]],
        )
        lines.append("")
    if not lines:
        return ["Not profiled (run with `--profile`; py-spy comes with `.[bench]`)."]
    return lines


def markdown(document: Document, chart: str | None = None) -> str:
    machine = document["machine"]
    versions = document["versions"]
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
    ]
    for p in presets(document):
        data, seeding = p["data"], p["seeding"]
        lines.append(
            f"- Preset `{p['name']}`: {p['mailboxes']} mailboxes x {p['folders']} folders x "
            f"{p['messages_per_folder']} messages = {data['messages']:,} messages in "
            f"{p['total_folders']:,} folders, {data['mb']:,.1f} MB ({data['large_messages']} "
            f"messages of 0.5 MB or more, the largest {data['largest_message_bytes'] / 1e6:.2f}"
            f" MB); seeded on a Dovecot of its own in {seeding['seconds']:.1f} s (not part of "
            f"any comparison: {seeding['method']}), warm-up {seeding['warm_up_seconds']:.1f} s"
        )
    lines += [
        f"- Transport: {document['transport']}",
        f"- Each figure is {'the median of ' + str(repeat) + ' runs' if repeat > 1 else 'one run'}"
        "; every run starts from an empty output directory of its own. MB = 10^6 bytes of "
        "messages (the bytes the server sends for BODY[]); RSS and PSS in MiB. "
        "*Archiving only*: `search_during_apply: false` (fetch, hash, compress, store, journal, "
        "index rows); *with indexing*: the default settings, the full-text indexer beside it.",
        f"- Whole benchmark: {document['total_seconds'] / 60:.1f} min.",
        "",
    ]
    if chart:
        lines += [f"![Wall time per tool, preset and connection count]({chart})", ""]
    lines += ["## Targets", "", *_target_rows(document), ""]
    missed = _not_met(document)
    if missed:
        lines += ["### Not met: the measured facts", "", *missed, ""]
    for p in presets(document):
        name = p["name"]
        lines += [
            f"## Preset `{name}` ({p['total_messages']:,} messages, {p['data']['mb']:,.0f} MB)",
            "",
            "### Wall time per tool",
            "",
            *_summary_table(document, name),
            "",
            "### First run",
            "",
            *_first_table(document, name),
            "",
            "### No-op rerun",
            "",
            *_noop_table(document, name),
            "",
            "### `plan` when nothing changed",
            "",
            *_plan_table(document, name),
            "",
            "### Search indexing in apply: with and without, same run",
            "",
            *_search_cost_table(document, name),
            "",
        ]
    lines += [
        "## Cost growth: per message and per folder",
        "",
        *_growth(document),
        "",
        "## Why: measured facts",
        "",
        *_why(document),
        "",
        "## Where the time goes (py-spy)",
        "",
        *_profile(document),
        "",
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


# ------------------------------------------------------------------------- profile


def _frame_name(frame: str) -> tuple[str, str]:
    match = _FRAME_RE.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    return match.group("func"), match.group("file")


_PROCESS_RE = re.compile(r'process (\d+):"(.*?)";', re.DOTALL)
_THREAD_RE = re.compile(r"thread \((?:0x)?(?P<tid>[0-9a-fA-F]+)\)(?::\s*(?P<name>.*))?$")
#: The name of the profiled command's own process in the summary.
ROOT_PROCESS = "imapsync-decl apply"


def process_label(command: str) -> str:
    """A short name for a profiled process: the module (``-m``) or the program and its
    sub-command, without paths or options."""
    words = [w for w in command.split() if not os.path.basename(w).startswith("python")]
    if not words:
        return "python"
    if words[0] == "-m" and len(words) > 1:
        return words[1]
    if words[0] == "-c":
        return "python -c"
    label = os.path.basename(words[0])
    if len(words) > 1 and not words[1].startswith("-") and "/" not in words[1]:
        label += " " + words[1]
    return label


def thread_label(name: str | None) -> str:
    """Threads of one kind under one name: numbers become N (``blob-writer_0`` -> ``_N``)."""
    if not name:
        return "(unnamed)"
    return re.sub(r"\d+", "N", name.strip())


def _records(text: str) -> list[tuple[str, int]]:
    """(stack, count) of py-spy's raw format; a process frame's command line may span
    lines, so a record ends at the first line that ends in a count."""
    found: list[tuple[str, int]] = []
    pending = ""
    for line in text.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        stack, _, count_text = pending.rpartition(" ")
        if stack and count_text.isdigit():
            found.append((stack, int(count_text)))
            pending = ""
    return found


def summarise_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares, and the shares per process and thread kind, from py-spy's
    ``--format raw`` (collapsed stacks, with ``--subprocesses --threads``)."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    group_counts: Counter[tuple[str, str]] = Counter()
    group_waiting: Counter[tuple[str, str]] = Counter()
    group_self: dict[tuple[str, str], Counter[str]] = {}
    group_threads: dict[tuple[str, str], set[tuple[str, str]]] = {}
    total = waiting = 0
    for stack, count in _records(path.read_text(errors="replace")):
        # The outermost process is the profiled command itself (its command line as py-spy
        # read it may still be the interpreter's); nested ones are its worker processes.
        process, pid, depth = ROOT_PROCESS, "", 0
        while True:
            match = _PROCESS_RE.match(stack)
            if match is None:
                break
            pid = match.group(1)
            process = ROOT_PROCESS if depth == 0 else process_label(match.group(2))
            depth += 1
            stack = stack[match.end() :]
        parts = stack.split(";")
        thread, tid = "MainThread", ""
        if parts and parts[0].startswith("thread ("):
            match = _THREAD_RE.match(parts[0])
            tid = match.group("tid") if match else parts[0]
            name = match.group("name") if match else None
            # A thread py-spy has no name for yet: the main thread has the process's id.
            thread = "MainThread" if not name and tid == pid else thread_label(name)
            parts = parts[1:]
        key = (process, thread)
        group_threads.setdefault(key, set()).add((pid, tid))
        frames = [_frame_name(f) for f in parts]
        code = [(func, file) for func, file in frames if file]
        if code and any(part in code[-1][1] for part in _WAITING_FILES):
            waiting += count
            group_waiting[key] += count
            continue
        total += count
        group_counts[key] += count
        if code:
            func, file = code[-1]
            self_counts[f"{func} ({file})"] += count
            group_self.setdefault(key, Counter())[f"{func} ({file})"] += count
        seen = {f"{func} ({file})" for func, file in code if "imapsync_decl" in file}
        for name in seen:
            inclusive[name] += count
    if total == 0:
        return {"samples": 0, "waiting_samples": waiting}
    groups = [
        {
            "process": process,
            "thread": thread,
            "threads": len(group_threads[(process, thread)]),
            "samples": n,
            "waiting": group_waiting[(process, thread)],
            "share": 100 * n / total,
            "top": [
                (name, 100 * c / n)
                for name, c in group_self.get((process, thread), Counter()).most_common(3)
            ],
        }
        for (process, thread), n in group_counts.most_common()
        if 100 * n / total >= 0.5
    ]
    return {
        "samples": total,
        "waiting_samples": waiting,
        "groups": groups,
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
