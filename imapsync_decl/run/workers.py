"""The mailbox workers of one ``apply``: started when first needed, reused, stopped at the end.

Each worker is a process (``run/mailbox_worker.py``) that archives one mailbox at a
time over one IMAP connection. A thread of ``apply`` takes a worker from the
pool, sends it a job and reads its events until the job ends; the pool never
holds more workers than were busy at once. A worker that dies is not reused;
the job it had ends with :class:`WorkerLost` (that mailbox's error: what it
reported before is recorded, the rest is fetched by the next ``apply``).

The worker gets nothing on its command line or in its environment that it did
not have already: the job, password included, travels over its stdin.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

from imapsync_decl.run.worker_wire import (
    FrameError,
    FrameReader,
    MailboxDone,
    MailboxFailed,
    MailboxJob,
    Stopped,
    write_frame,
)

POLL_SECONDS = 0.2  # how often a waiting reader looks at the stop flag
STOP_WAIT_SECONDS = 10.0  # for a worker to end at close, before it is killed


class WorkerLost(Exception):
    """The worker process of a mailbox ended in the middle of its job."""


def worker_command() -> list[str]:
    """How a worker is started (the interpreter running ``apply``)."""
    return [sys.executable, "-m", "imapsync_decl.run.worker_main"]


class Worker:
    """One worker process and its two pipes."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            worker_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self._stdin = self.process.stdin
        self._reader = FrameReader(self.process.stdout.fileno())
        self.broken = False  # not to be given another job
        self._signalled = False

    def run(self, job: MailboxJob, should_stop: Callable[[], bool]) -> Iterator[object]:
        """Send ``job`` and yield the worker's events until its last one (MailboxDone,
        MailboxFailed or Stopped). A stop asked for meanwhile is passed on as SIGTERM."""
        try:
            write_frame(self._stdin.fileno(), job)
            while True:
                if should_stop() and not self._signalled:
                    self._signalled = True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.process.pid, signal.SIGTERM)
                event = self._reader.read(POLL_SECONDS)
                if event is None:
                    continue
                yield event
                if isinstance(event, (MailboxDone, MailboxFailed, Stopped)):
                    if isinstance(event, Stopped):
                        self.broken = True  # it stopped for good
                    return
        except (EOFError, FrameError, BrokenPipeError) as exc:
            self.broken = True
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()  # it may be alive, waiting to write what was not read
            code = self.process.wait()
            detail = f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
            raise WorkerLost(
                f"the worker process of this mailbox ended in the middle of its job ({detail})"
            ) from exc
        except BaseException:
            self.broken = True
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()  # in the middle of a job that no one will read
            raise

    def end_input(self) -> None:
        """No more jobs: the worker exits once it sees its stdin end."""
        with contextlib.suppress(OSError):
            self._stdin.close()

    def close(self) -> None:
        """End the worker: its stdin closes (it exits between jobs); killed if it lingers."""
        self.end_input()
        try:
            self.process.wait(STOP_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


class WorkerPool:
    """Idle workers, started on demand; ``close`` ends them all."""

    def __init__(self) -> None:
        self._idle: list[Worker] = []
        self._all: list[Worker] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def worker(self) -> Iterator[Worker]:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            worker = Worker()
            with self._lock:
                self._all.append(worker)
        try:
            yield worker
        finally:
            if worker.broken:
                worker.close()
            else:
                with self._lock:
                    self._idle.append(worker)

    @property
    def started(self) -> int:
        return len(self._all)

    def prestart(self, limit: int) -> None:
        """Start one more idle worker unless ``limit`` are running already, so that its
        start-up (the interpreter, its imports) overlaps with what the caller does meanwhile."""
        with self._lock:
            if len(self._all) >= limit:
                return
            worker = Worker()
            self._all.append(worker)
            self._idle.append(worker)

    def close(self) -> None:
        """End every worker: all are told at once, then each is waited for."""
        with self._lock:
            workers, self._all, self._idle = self._all, [], []
        for worker in workers:
            worker.end_input()
        for worker in workers:
            worker.close()
