"""The chart of a benchmark run: wall time per tool, connection count and preset.

    .venv/bin/python benchmarks/chart.py [RESULTS_JSON] [PNG]

Reads ``results.json`` (written by ``run.py``, which also calls this at the end) and writes
``results.png`` beside it: one panel per preset and phase (first run, no-op rerun), one group
of bars per connection count, one bar per tool, with the wall time on each bar and the
first-run and no-op targets against mbsync as a dashed line per group. Needs matplotlib
(``.venv/bin/pip install -e '.[bench]'``); draws off-screen (Agg backend).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402

#: (tool, label, colour) in the order of the bars.
BARS: tuple[tuple[str, str, str], ...] = (
    ("raw", "raw fetch+write baseline", "#9e9e9e"),
    ("mbsync", "mbsync", "#4c72b0"),
    (report.ARCHIVING, "imapsync-decl, archiving only", "#dd8452"),
    (report.DEFAULTS, "imapsync-decl with indexing (default)", "#c44e52"),
)
PHASES = (("first", "first run"), ("noop", "no-op rerun"))
TARGET_COLOUR = "#2a9d3a"
RAW_TARGET_COLOUR = "#333333"


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _panel(axes: Any, document: dict[str, Any], preset: dict[str, Any], phase: str) -> None:
    counts: list[int] = document["connections"]
    tools = [
        bar
        for bar in BARS
        if any(report.find(document, preset["name"], bar[0], phase, n) for n in counts)
    ]
    width = 0.8 / max(len(tools), 1)
    tallest = 0.0
    for t, (tool, label, colour) in enumerate(tools):
        xs, heights = [], []
        for g, n in enumerate(counts):
            row = report.find(document, preset["name"], tool, phase, n)
            if row is None:
                continue
            xs.append(g - 0.4 + width * (t + 0.5))
            heights.append(float(row["wall_s"]))
        tallest = max([tallest, *heights])
        bars = axes.bar(xs, heights, width * 0.92, label=label, color=colour)
        axes.bar_label(
            bars,
            labels=[_seconds(h) for h in heights],
            fontsize=8,
            padding=2,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.85},
            zorder=4,
        )
    if phase == "first":
        lines = [
            ("mbsync", report.FIRST_VS_MBSYNC, "(a) target: at most 0.6 x mbsync", "dashed"),
            ("raw", report.FIRST_VS_RAW, "(b) target: at most 1.5 x raw baseline", "dotted"),
        ]
    else:
        lines = [("mbsync", report.NOOP_VS_MBSYNC, "(c) target: no slower than mbsync", "dashed")]
    for reference, factor, label, style in lines:
        for g, n in enumerate(counts):
            row = report.find(document, preset["name"], reference, phase, n)
            if row is None:
                continue
            axes.hlines(
                factor * float(row["wall_s"]),
                g - 0.45,
                g + 0.45,
                colors=TARGET_COLOUR if style == "dashed" else RAW_TARGET_COLOUR,
                linestyles=style,
                linewidth=1.6,
                label=label,
            )
    axes.set_xticks(range(len(counts)), [f"{n} connection{'s' if n > 1 else ''}" for n in counts])
    axes.set_ylim(0, tallest * 1.18 if tallest else 1)
    axes.set_ylabel("wall time, s (lower is better)")
    title = "first run" if phase == "first" else "no-op rerun"
    axes.set_title(
        f"{preset['name']}: {title}\n{preset['total_messages']:,} messages, "
        f"{preset['data']['mb']:,.0f} MB, {preset['total_folders']:,} folders",
        fontsize=10,
    )
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)


def write_chart(document: dict[str, Any], png: Path) -> None:
    """Draw the results of ``document`` (results.json, format 2) into ``png``."""
    presets = report.presets(document)
    figure, grid = plt.subplots(
        len(PHASES),
        len(presets),
        figsize=(max(5.2 * len(presets) + 1.0, 7.5), 8.6 if len(presets) == 1 else 8.2),
        squeeze=False,
        layout="constrained",
    )
    for column, preset in enumerate(presets):
        for row, (phase, _title) in enumerate(PHASES):
            _panel(grid[row][column], document, preset, phase)
    entries: dict[str, Any] = {}
    for axes in grid.flat:
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    # The tools in the order of the bars, then the targets (a), (b), (c).
    order = [label for _tool, label, _colour in BARS] + sorted(
        label for label in entries if label.startswith("(")
    )
    labels = [label for label in order if label in entries]
    handles = [entries[label] for label in labels]
    columns = 4 if len(presets) > 1 else 2
    figure.legend(handles, labels, loc="outside lower center", ncol=columns, fontsize=9)
    repeat = document["repeat"]
    figure.suptitle(
        f"imapsync-decl apply against mbsync and a raw fetch, {document['date'][:10]}"
        f"{' ' if len(presets) > 1 else chr(10)}({document['machine']['nproc']} CPUs; "
        f"{'median of ' + str(repeat) + ' runs' if repeat > 1 else 'one run each'})",
        fontsize=11,
    )
    figure.savefig(png, dpi=110)
    plt.close(figure)


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else HERE / "results.json"
    png = Path(argv[1]) if len(argv) > 1 else source.with_name("results.png")
    document = json.loads(source.read_text(encoding="utf-8"))
    if document.get("format_version", 1) < 2:
        print(
            f"{source}: format {document.get('format_version', 1)}, written before the chart "
            "existed (one preset, no per-row preset); run benchmarks/run.py again",
            file=sys.stderr,
        )
        return 1
    write_chart(document, png)
    print(f"wrote {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
