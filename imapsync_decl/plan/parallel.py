"""Bounded concurrency for per-mailbox work: run calls on a few threads, results in order.

Planning and applying both handle a profile's mailboxes up to its
``max_concurrent_jobs`` at once; this is the one place that does it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def in_parallel(jobs: int, calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run the calls on up to ``jobs`` threads; results in the order of the calls.

    Each call runs in a copy of the caller's context, so bound log keys (run_id,
    profile) follow it into its thread.
    """
    if jobs <= 1 or len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=min(jobs, len(calls))) as pool:
        futures = [pool.submit(contextvars.copy_context().run, call) for call in calls]
        return [future.result() for future in futures]
