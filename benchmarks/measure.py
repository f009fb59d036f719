"""Run commands and measure wall time, CPU time and memory of exactly their process trees.

Each command runs in a session of its own, under GNU time (``/usr/bin/time``, Debian package
``time``) when it is installed. Peak memory is taken two ways:

* ``max_rss_mb``: the kernel's peak resident set size of the largest single process of a
  command's tree (the rusage of ``wait4``, which covers every waited-for descendant), as GNU
  time reports it. GNU time matters here: a process forked from this (large) Python process
  starts with the parent's high-water mark, a process forked from the small ``time`` does not.
  Without GNU time the figure comes from this process's own ``wait4`` and is at least the
  harness's size;
* ``tree_rss_mb``: the peak of the summed RSS of every live process in the commands'
  sessions, sampled every 50 ms (catches several processes at once, may miss short peaks;
  pages shared by several processes count once per process);
* ``tree_pss_mb``: the peak of the summed PSS (proportional set size, ``Pss`` of
  ``/proc/PID/smaps_rollup``) of the same processes, sampled at the same moments: a page
  shared by n processes counts 1/n in each, so the sum is the memory the whole tree holds,
  shared pages once. Reading another user's ``smaps_rollup`` needs root (the benchmark
  runs as root); a process whose file cannot be read adds nothing.

The CPU time used by the Dovecot server during the run (its master, which collects the
time of ended children, plus its live processes) is reported as ``server_cpu_s``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

GNU_TIME = "/usr/bin/time"
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Outcome:
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mb: float
    tree_rss_mb: float
    server_cpu_s: float | None
    tree_pss_mb: float = 0.0
    sum_max_rss_mb: float = 0.0
    exit_codes: list[int] = field(default_factory=list)


def _stat_fields(pid: str) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ..." - comm may hold spaces and parentheses.
    return raw.rpartition(")")[2].split()


def _pss_bytes(pid: str) -> int:
    """``Pss`` of ``/proc/PID/smaps_rollup`` in bytes (0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
            text = handle.read()
    except OSError:
        return 0
    for line in text.split(b"\n"):
        if line.startswith(b"Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def session_memory_bytes(sessions: set[int]) -> tuple[int, int]:
    """(summed RSS, summed PSS) of every live process whose session id is in ``sessions``."""
    rss = pss = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is None or fields[0] in ("Z", "X"):
            continue
        if int(fields[3]) in sessions:
            rss += int(fields[21]) * _PAGE
            pss += _pss_bytes(entry)
    return rss, pss


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every process in group ``pgid``, plus the reaped children's time."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is None or int(fields[2]) != pgid:
            continue
        total += sum(int(value) for value in fields[11:15])
    return total / _TICK


def _read_time(path: Path) -> tuple[int, float, float] | None:
    """(max RSS KiB, user s, system s) from GNU time's ``-f "%M %U %S"`` output."""
    try:
        lines = path.read_text().split("\n")
    except OSError:
        return None
    for line in reversed(lines):
        parts = line.split()
        if len(parts) == 3:
            try:
                return int(parts[0]), float(parts[1]), float(parts[2])
            except ValueError:
                return None
    return None


class _Sampler(threading.Thread):
    def __init__(self, sessions: set[int], interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.sessions = sessions
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            rss, pss = session_memory_bytes(self.sessions)
            self.peak = max(self.peak, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def run_measured(
    commands: Sequence[Sequence[str]],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    log_prefix: Path,
    server_pgid: int | None = None,
) -> Outcome:
    """Start every command at once, wait for all; stdout/stderr go to ``log_prefix``.N.out/err."""
    server_before = group_cpu_seconds(server_pgid) if server_pgid else None
    processes: list[subprocess.Popen[bytes]] = []
    handles = []
    started = time.monotonic()
    gnu_time = os.access(GNU_TIME, os.X_OK)
    for n, command in enumerate(commands):
        if gnu_time:
            command = [GNU_TIME, "-f", "%M %U %S", "-o", f"{log_prefix}.{n}.time", *command]
        out = open(f"{log_prefix}.{n}.out", "wb")  # noqa: SIM115 - closed below
        err = open(f"{log_prefix}.{n}.err", "wb")  # noqa: SIM115 - closed below
        handles += [out, err]
        processes.append(
            subprocess.Popen(
                list(command),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        )
    sampler = _Sampler({p.pid for p in processes})
    sampler.start()
    codes: list[int] = []
    user = system = 0.0
    peaks_kb: list[int] = []
    try:
        for n, process in enumerate(processes):
            _pid, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            codes.append(process.returncode)
            figures = _read_time(Path(f"{log_prefix}.{n}.time")) if gnu_time else None
            if figures is None:
                figures = (usage.ru_maxrss, usage.ru_utime, usage.ru_stime)
            peaks_kb.append(figures[0])
            user += figures[1]
            system += figures[2]
    finally:
        wall = time.monotonic() - started
        sampler.stop()
        for handle in handles:
            handle.close()
        for process in processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, 9)
    server_cpu = None
    if server_pgid and server_before is not None:
        server_cpu = group_cpu_seconds(server_pgid) - server_before
    return Outcome(
        wall_s=wall,
        user_s=user,
        sys_s=system,
        max_rss_mb=max(peaks_kb, default=0) / 1024,
        sum_max_rss_mb=sum(peaks_kb) / 1024,
        tree_rss_mb=sampler.peak / (1 << 20),
        tree_pss_mb=sampler.peak_pss / (1 << 20),
        server_cpu_s=server_cpu,
        exit_codes=codes,
    )
