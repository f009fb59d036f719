"""Benchmark imapsync-decl against mbsync and a raw IMAP fetch, on one seeded Dovecot.

    .venv/bin/python benchmarks/run.py [--presets default,large] [--connections 1,4]
                                       [--repeat N] [--keep] [--profile]

Writes benchmarks/RESULTS.md, benchmarks/results.json and, with matplotlib installed,
benchmarks/results.png (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402
import tools  # noqa: E402
from measure import Outcome, run_measured  # noqa: E402
from seed import PRESETS, Preset, SeedResult, seed, user_name, users, warm_up  # noqa: E402
from tools import Target  # noqa: E402

from servers.dovecot import DovecotServer  # noqa: E402  (path set up by seed)

# imapsync-decl-nosearch: imapsync-decl with `search_during_apply: false`, the archiving path
# alone (the first-run targets compare it); next to the default, for the cost of indexing in
# apply, measured in the same run.
TOOLS = ("raw", "mbsync", "imapsync-decl", "imapsync-decl-nosearch")
#: py-spy is looked for in $PY_SPY, then in the virtualenv, then on PATH.
PY_SPY_ENV = "PY_SPY"
#: `plan` runs this many times after the no-op rerun; the median is recorded.
PLAN_RUNS = 3
#: The presets measured when neither --presets nor --preset is given.
DEFAULT_PRESETS = ("default", "large")
#: The chart, next to RESULTS.md (benchmarks/chart.py).
CHART_NAME = "results.png"

Record = dict[str, Any]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _settle() -> None:
    """Flush dirty pages of the previous measurement so they do not slow down the next, and
    let two seconds pass: mbsync sleeps a second before it reads a Maildir modified within
    the last second (a no-op rerun straight after the first run would pay for that)."""
    os.sync()
    time.sleep(2.0)


def _record(
    tool: str,
    phase: str,
    connections: int,
    repeat: int,
    outcome: Outcome,
    *,
    messages: int,
    data_bytes: int,
    expected: int,
    extra: dict[str, Any] | None = None,
) -> Record:
    record: Record = {
        "tool": tool,
        "phase": phase,
        "connections": connections,
        "repeat": repeat,
        **asdict(outcome),
        "messages": messages,
        "bytes": data_bytes,
        "expected_messages": expected,
        "ok": all(code == 0 for code in outcome.exit_codes)
        and (messages == expected if phase == "first" else True),
    }
    if phase == "first" and outcome.wall_s > 0:
        record["msg_per_s"] = messages / outcome.wall_s
        record["mb_per_s"] = data_bytes / 1e6 / outcome.wall_s
    record.update(extra or {})
    return record


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _report_failure(name: str, outcome: Outcome, prefix: Path, count: int) -> None:
    if all(code == 0 for code in outcome.exit_codes):
        return
    log(f"{name}: exit codes {outcome.exit_codes}")
    for n in range(count):
        log(f"--- {prefix}.{n}.err\n{_tail(Path(f'{prefix}.{n}.err'))}")


class Bench:
    def __init__(
        self,
        server: DovecotServer,
        target: Target,
        seeded: SeedResult,
        work: Path,
        keep: bool,
        folders: int,
    ) -> None:
        self.server = server
        self.target = target
        self.seeded = seeded
        self.work = work
        self.keep = keep
        self.folders = folders

    def _fresh(self, name: str) -> Path:
        directory = self.work / "runs" / name
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        return directory

    def _done(self, directory: Path) -> None:
        if not self.keep:
            shutil.rmtree(directory, ignore_errors=True)
        _settle()

    def _measure(self, commands: Sequence[Sequence[str]], directory: Path, name: str) -> Outcome:
        _settle()
        prefix = directory / name
        outcome = run_measured(
            commands,
            cwd=directory,
            env=self.target.env(),
            log_prefix=prefix,
            server_pgid=self.server.pid,
        )
        _report_failure(name, outcome, prefix, len(commands))
        log(
            f"  {name}: {outcome.wall_s:.2f} s, max RSS {outcome.max_rss_mb:.0f} MiB, "
            f"tree RSS {outcome.tree_rss_mb:.0f} MiB, exit {outcome.exit_codes}"
        )
        return outcome

    def raw(self, connections: int, repeat: int) -> list[Record]:
        directory = self._fresh(f"raw-c{connections}-r{repeat}")
        out = directory / "out"
        outcome = self._measure(
            [tools.raw_fetch_command(self.target, out, connections)], directory, "first"
        )
        files, size = tools.count_files(out)
        record = _record(
            "raw",
            "first",
            connections,
            repeat,
            outcome,
            messages=files,
            data_bytes=size,
            expected=self.seeded.messages,
            extra={"bytes_match": size == self.seeded.bytes},
        )
        self._done(directory)
        return [record]

    def mbsync(self, connections: int, repeat: int) -> list[Record]:
        directory = self._fresh(f"mbsync-c{connections}-r{repeat}")
        rc = tools.write_mbsyncrc(self.target, directory)
        commands = tools.mbsync_commands(rc, self.target.users, connections)
        records = []
        for phase in ("first", "noop"):
            outcome = self._measure(commands, directory, phase)
            count = tools.count_maildir_messages(directory / "maildir")
            size = tools.count_files(directory / "maildir")[1] if phase == "first" else 0
            records.append(
                _record(
                    "mbsync",
                    phase,
                    connections,
                    repeat,
                    outcome,
                    messages=count if phase == "first" else 0,
                    data_bytes=size,
                    expected=self.seeded.messages,
                    extra={"messages_on_disk": count, "processes": len(commands)},
                )
            )
        self._done(directory)
        return records

    def imapsync(self, connections: int, repeat: int, *, search: bool = True) -> list[Record]:
        tool = "imapsync-decl" if search else "imapsync-decl-nosearch"
        directory = self._fresh(f"{tool}-c{connections}-r{repeat}")
        config = tools.write_imapsync_config(self.target, directory, connections, search=search)
        check = subprocess.run(
            tools.imapsync_validate_command(config),
            env=self.target.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise RuntimeError(f"the benchmark profile is invalid:\n{check.stderr}")
        records = []
        for phase in ("first", "noop"):
            outcome = self._measure(
                [tools.imapsync_apply_command(config)], directory, f"apply-{phase}"
            )
            placements, blobs = tools.count_placements(directory / "archive")
            extra: dict[str, Any] = {"placements": placements, "blobs": blobs}
            if phase == "first":
                extra["archive_disk_bytes"] = tools.disk_usage(directory / "archive")
            summary = _apply_summary(directory / f"apply-{phase}.0.out")
            if summary is not None:
                extra["summary_archived"] = summary
            indexing = _apply_summary(directory / f"apply-{phase}.0.out", keys=("search",))
            if indexing is not None:
                extra["search_indexed"] = indexing.get("indexed")
                extra["search_seconds"] = indexing.get("seconds")
                extra["search_waited_seconds"] = indexing.get("waited_seconds")
            records.append(
                _record(
                    tool,
                    phase,
                    connections,
                    repeat,
                    outcome,
                    messages=placements if phase == "first" else 0,
                    data_bytes=self.seeded.bytes if phase == "first" else 0,
                    expected=self.seeded.messages,
                    extra=extra,
                )
            )
            if phase == "noop" and placements != self.seeded.messages:
                records[-1]["ok"] = False
        if search:
            records.append(self._plan(config, directory, connections, repeat))
        self._done(directory)
        return records

    def _plan(self, config: Path, directory: Path, connections: int, repeat: int) -> Record:
        """``plan`` on the archive after the no-op rerun (nothing changed): the median of
        PLAN_RUNS runs; ok when every run exits 0 (with --detailed-exitcode: no changes)."""
        outcomes = [
            self._measure([tools.imapsync_plan_command(config)], directory, f"plan-{n}")
            for n in range(PLAN_RUNS)
        ]
        median = sorted(outcomes, key=lambda o: o.wall_s)[len(outcomes) // 2]
        folders = len(self.target.users) * self.folders
        record = _record(
            "imapsync-decl",
            "plan",
            connections,
            repeat,
            median,
            messages=0,
            data_bytes=0,
            expected=self.seeded.messages,
            extra={
                "folders": folders,
                "ms_per_folder": 1000 * median.wall_s / folders,
                "plan_walls_s": [o.wall_s for o in outcomes],
            },
        )
        record["ok"] = all(o.exit_codes == [0] for o in outcomes)
        return record

    def profile(self, py_spy: Path, connections: int) -> dict[str, Any]:
        """Untimed runs under py-spy, wall-clock samples of every thread of every process of
        the run (``--subprocesses``, ``--threads``): the first run and the no-op rerun of the
        archiving path (imapsync-decl with `search_during_apply: false`), then a first run
        with the default settings, where the search indexer's process shows up apart."""
        result: dict[str, Any] = {
            "connections": connections,
            "configuration": "imapsync-decl-nosearch",
        }
        runs = (("first", "noop"), ("indexing",))
        for search, phases in zip((False, True), runs, strict=True):
            name = "profile-indexing" if search else "profile"
            directory = self._fresh(f"{name}-c{connections}")
            config = tools.write_imapsync_config(self.target, directory, connections, search=search)
            for phase in phases:
                raw = directory / f"profile-{phase}.txt"
                command = [
                    str(py_spy),
                    "record",
                    "--idle",
                    "--subprocesses",
                    "--threads",
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                    "--",
                    *tools.imapsync_apply_command(config),
                ]
                outcome = self._measure([command], directory, f"profile-{phase}")
                summary = report.summarise_profile(raw) if raw.exists() else {}
                result[phase] = summary | {"wall_s": outcome.wall_s}
            self._done(directory)
        return result

    def startup(self, times: int = 3) -> dict[str, float]:
        """Median wall time of ``imapsync-decl --version`` and of ``validate`` (no server)."""
        directory = self._fresh("startup")
        config = tools.write_imapsync_config(self.target, directory, 1)
        figures: dict[str, float] = {}
        for name, command in (
            ("version_s", [str(tools.IMAPSYNC_DECL), "--version"]),
            ("validate_s", tools.imapsync_validate_command(config)),
        ):
            walls = []
            for _ in range(times):
                started = time.monotonic()
                subprocess.run(command, env=self.target.env(), capture_output=True, check=False)
                walls.append(time.monotonic() - started)
            figures[name] = statistics.median(walls)
        self._done(directory)
        return figures


def _apply_summary(path: Path, keys: tuple[str, ...] = ("totals", "summary")) -> Any:
    """The messages-archived figure of ``apply --format json`` (or the object under one of
    ``keys``), if it can be found."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(document, dict):
        for key in keys:
            if isinstance(document.get(key), dict):
                return document[key]
    return None


def _versions() -> dict[str, str]:
    def first_line(command: list[str]) -> str:
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError:
            return "not found"
        return (result.stdout or result.stderr).strip().splitlines()[0]

    dovecot = shutil.which("dovecot") or "/usr/sbin/dovecot"
    return {
        "dovecot": first_line([dovecot, "--version"]),
        "isync": first_line(["mbsync", "--version"]),
        "python": platform.python_version(),
        "imapsync_decl": first_line([str(tools.IMAPSYNC_DECL), "--version"]),
        "kernel": platform.release(),
    }


def _machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(memory_kb / (1 << 20), 1),
        "cpu_model": model,
    }


def _medians(records: list[Record]) -> list[Record]:
    """One record per (preset, tool, phase, connections): the median of every figure over
    the repeats."""
    groups: dict[tuple[str, str, str, int], list[Record]] = {}
    for record in records:
        group_key = (record["preset"], record["tool"], record["phase"], record["connections"])
        groups.setdefault(group_key, []).append(record)
    merged = []
    for (preset, tool, phase, connections), group in groups.items():
        row: Record = {
            "preset": preset,
            "tool": tool,
            "phase": phase,
            "connections": connections,
        }
        row["repeats"] = len(group)
        row["ok"] = all(r["ok"] for r in group)
        for key, value in group[0].items():
            if key in row or key == "repeat":
                continue
            values = [r.get(key) for r in group]
            if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                row[key] = statistics.median(values)  # type: ignore[type-var]
            else:
                row[key] = value
        merged.append(row)
    return merged


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--presets",
        default=None,
        help=f"comma-separated presets, measured one after the other (default "
        f"{','.join(DEFAULT_PRESETS)}; of {','.join(PRESETS)})",
    )
    parser.add_argument(
        "--preset", choices=list(PRESETS), default=None, help="one preset (as --presets NAME)"
    )
    parser.add_argument(
        "--connections", default="1,4", help="comma-separated connection counts (default 1,4)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (median)")
    parser.add_argument(
        "--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the server's data and every output directory"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="add untimed imapsync-decl runs under py-spy (if installed) to see where time goes",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="parent of the temporary work directory"
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=HERE,
        help="where RESULTS.md, results.json and results.png go",
    )
    options = parser.parse_args(argv)
    if options.preset and options.presets:
        parser.error("give --preset or --presets, not both")
    names = options.presets.split(",") if options.presets else None
    if options.preset:
        names = [options.preset]
    options.preset_list = [n.strip() for n in names or DEFAULT_PRESETS if n.strip()]
    wrong = [n for n in options.preset_list if n not in PRESETS]
    if (
        wrong
        or not options.preset_list
        or len(set(options.preset_list)) != len(options.preset_list)
    ):
        parser.error(
            f"bad --presets {options.presets!r}: each of {', '.join(PRESETS)} at most once"
        )
    options.connection_counts = [int(n) for n in options.connections.split(",") if n.strip()]
    options.tool_list = [t.strip() for t in options.tools.split(",") if t.strip()]
    unknown = set(options.tool_list) - set(TOOLS)
    if unknown or not options.connection_counts or min(options.connection_counts) < 1:
        parser.error(f"bad --tools {sorted(unknown)} or --connections {options.connections}")
    if options.repeat < 1:
        parser.error("--repeat must be at least 1")
    return options


def _find_py_spy() -> Path | None:
    for candidate in (os.environ.get(PY_SPY_ENV), tools.VENV_BIN / "py-spy"):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    found = shutil.which("py-spy")
    return Path(found) if found else None


def compile_bytecode() -> None:
    """Compile the package and its dependencies to .pyc first, as an installation from a
    wheel does: with PYTHONDONTWRITEBYTECODE set (as in some CI images) and an editable
    install, every start would otherwise compile every module again."""
    venv_site = Path(sys.prefix) / "lib"
    targets = [str(Path(__file__).resolve().parent.parent / "imapsync_decl"), str(venv_site)]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *targets],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _measure_preset(
    options: argparse.Namespace, preset: Preset, work: Path, *, first: bool
) -> dict[str, Any]:
    """Seed ``preset`` on a Dovecot of its own, measure every tool, stop the server.

    ``first``: also measure the start-up and (with --profile) the profile."""
    server = DovecotServer(users(preset), directory=work / f"server-{preset.name}")
    result: dict[str, Any] = {"records": [], "profile": None, "startup": None}
    try:
        server.start()
        log(
            f"Dovecot on {server.host}:{server.port} (plain IMAP) in {work}; seeding preset "
            f"{preset.name}: {preset.mailboxes} mailboxes x {preset.folders} folders x "
            f"{preset.messages_per_folder} messages"
        )
        seeded = seed(server, preset)
        log(
            f"seeded {seeded.messages} messages, {seeded.bytes / 1e6:.1f} MB in "
            f"{seeded.seconds:.1f} s (writing {seeded.generate_seconds:.1f} s, indexing "
            f"{seeded.index_seconds:.1f} s)"
        )
        warm = warm_up(server, preset)
        log(f"warm-up (page cache, Dovecot cache) {warm:.1f} s")
        target = Target(
            host=server.host,
            port=server.port,
            master_user=server.master_user,
            master_password=server.master_password,
            users=tuple(user_name(i) for i in range(preset.mailboxes)),
        )
        bench = Bench(server, target, seeded, work / preset.name, options.keep, preset.folders)
        records: list[Record] = []
        for repeat in range(options.repeat):
            for connections in options.connection_counts:
                log(
                    f"preset {preset.name}, repeat {repeat + 1}/{options.repeat}, "
                    f"{connections} connection(s)"
                )
                if "raw" in options.tool_list:
                    records += bench.raw(connections, repeat)
                if "mbsync" in options.tool_list:
                    records += bench.mbsync(connections, repeat)
                if "imapsync-decl" in options.tool_list:
                    records += bench.imapsync(connections, repeat)
                if "imapsync-decl-nosearch" in options.tool_list:
                    records += bench.imapsync(connections, repeat, search=False)
        for record in records:
            record["preset"] = preset.name
        result["records"] = records
        if first and "imapsync-decl" in options.tool_list:
            result["startup"] = bench.startup()
            log(f"imapsync-decl start-up: {result['startup']}")
        if first and options.profile:
            py_spy = _find_py_spy()
            if py_spy is None:
                log("--profile: py-spy not found (pip install -e '.[bench]'), skipped")
            else:
                connections = max(options.connection_counts)
                log(f"profiling the archiving path at {connections} connection(s) with {py_spy}")
                result["profile"] = bench.profile(py_spy, connections) | {"preset": preset.name}
    finally:
        server.stop()
        if not options.keep:
            shutil.rmtree(work / f"server-{preset.name}", ignore_errors=True)
    result["preset"] = asdict(preset) | {
        "total_messages": preset.total_messages,
        "total_folders": preset.mailboxes * preset.folders,
        "data": {
            "messages": seeded.messages,
            "bytes": seeded.bytes,
            "mb": seeded.bytes / 1e6,
            "large_messages": seeded.large_messages,
            "largest_message_bytes": seeded.largest_message,
        },
        "seeding": {
            "method": "Maildir files written directly, then indexed by Dovecot (STATUS)",
            "seconds": seeded.seconds,
            "write_seconds": seeded.generate_seconds,
            "index_seconds": seeded.index_seconds,
            "warm_up_seconds": warm,
        },
    }
    return result


def run(options: argparse.Namespace) -> int:
    presets: list[Preset] = [PRESETS[name] for name in options.preset_list]
    if "mbsync" in options.tool_list and shutil.which("mbsync") is None:
        log("mbsync not found: install Debian's isync (apt-get install isync)")
        return 10
    started = time.monotonic()
    compile_bytecode()
    work = Path(tempfile.mkdtemp(prefix="imapsync-bench-", dir=options.work_dir))
    work.chmod(0o755)  # Dovecot's unprivileged processes must reach the server directory
    records: list[Record] = []
    measured: list[dict[str, Any]] = []
    profile: dict[str, Any] | None = None
    startup: dict[str, float] | None = None
    try:
        for n, preset in enumerate(presets):
            result = _measure_preset(options, preset, work, first=n == 0)
            records += result["records"]
            measured.append(result["preset"])
            profile = profile or result["profile"]
            startup = startup or result["startup"]
    finally:
        if options.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    document = {
        "format_version": 2,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "versions": _versions(),
        "presets": measured,
        "transport": "plain IMAP on 127.0.0.1 for every tool; master user login "
        "(SASL PLAIN with authorization identity for imapsync-decl and the raw baseline, "
        "LOGIN user*master for mbsync)",
        "repeat": options.repeat,
        "connections": options.connection_counts,
        "runs": records,
        "results": _medians(records),
        "profile": profile,
        "startup": startup,
        "total_seconds": time.monotonic() - started,
    }
    document["targets"] = report.targets(document)
    options.output_dir.mkdir(parents=True, exist_ok=True)
    results_json = options.output_dir / "results.json"
    results_json.write_text(
        json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    chart_written = _chart(results_json, options.output_dir / CHART_NAME)
    results_md = options.output_dir / "RESULTS.md"
    # The search benchmark's section (benchmarks/search.py) is kept as it was.
    kept = (
        report.search_section(results_md.read_text(encoding="utf-8"))
        if results_md.exists()
        else None
    )
    results_md.write_text(
        report.with_search_section(
            report.markdown(document, chart=CHART_NAME if chart_written else None), kept
        ),
        encoding="utf-8",
    )
    log(f"wrote {results_md}, results.json" + (f" and {CHART_NAME}" if chart_written else ""))
    return 0 if all(r["ok"] for r in records) else 1


def _chart(results_json: Path, png: Path) -> bool:
    """benchmarks/chart.py on the results, when matplotlib is installed (else it says so)."""
    try:
        import chart
    except ImportError as exc:
        log(f"no chart: {exc} (install it with .venv/bin/pip install -e '.[bench]')")
        return False
    chart.write_chart(json.loads(results_json.read_text(encoding="utf-8")), png)
    return True


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
