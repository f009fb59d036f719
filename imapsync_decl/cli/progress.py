"""Progress for humans on a terminal: one bar per mailbox being archived and one overall.

The executor reports through the :class:`~imapsync_decl.run.progress.Progress`
protocol; without a terminal (cron, CI) it reports to ``NoProgress``, which does nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

from imapsync_decl.plan.model import Plan
from imapsync_decl.run.progress import NoProgress, Progress, ProgressFactory

if TYPE_CHECKING:  # rich is imported only when bars are shown: it is slow to import
    from rich.console import Console
    from rich.progress import Progress as RichBars
    from rich.progress import TaskID


class TerminalProgress:
    """Bars in bytes (rate and ETA follow the bytes), with messages done of total."""

    def __init__(self, bars: RichBars, plan: Plan) -> None:
        totals = plan.totals
        self._bars = bars
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskID] = {}
        self._overall = bars.add_task(
            "all mailboxes", total=max(totals.bytes, 1), messages="", count=totals.messages
        )
        self._done_messages = 0

    def mailbox_started(self, key: str, messages: int, size: int) -> None:
        with self._lock:
            self._tasks[key] = self._bars.add_task(
                key, total=max(size, 1), messages=f"0/{messages}", count=messages
            )

    def advanced(self, key: str, messages: int, size: int) -> None:
        with self._lock:
            task = self._tasks.get(key)
            if task is not None:
                current = self._bars.tasks[self._index(task)]
                done = int(current.fields.get("done", 0)) + messages
                self._bars.update(
                    task, advance=size, done=done, messages=f"{done}/{current.fields['count']}"
                )
            self._done_messages += messages
            overall = self._bars.tasks[self._index(self._overall)]
            self._bars.update(
                self._overall,
                advance=size,
                messages=f"{self._done_messages}/{overall.fields['count']}",
            )

    def mailbox_finished(self, key: str) -> None:
        with self._lock:
            task = self._tasks.pop(key, None)
            if task is not None:
                self._bars.remove_task(task)

    def _index(self, task: TaskID) -> int:
        return next(i for i, t in enumerate(self._bars.tasks) if t.id == task)


@contextmanager
def make_progress(show: bool, plan: Plan, console: Console | None = None) -> Iterator[Progress]:
    """Bars on stderr when ``show``; logs written meanwhile appear above them."""
    if not show or not plan.has_changes:
        yield NoProgress()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as RichBars

    bars = RichBars(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[messages]} messages"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        redirect_stderr=True,
        transient=False,
    )
    with bars:
        yield TerminalProgress(bars, plan)


def terminal_progress(show: bool) -> ProgressFactory:
    """The progress factory of ``apply``: bars on stderr when ``show``."""

    def factory(plan: Plan) -> AbstractContextManager[Progress]:
        return make_progress(show, plan)

    return factory
