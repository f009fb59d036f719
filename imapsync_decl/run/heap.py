"""One malloc heap for all the threads of a process that holds messages.

A process that archives holds messages of several megabytes for a moment each: the
literal read off the wire, its compressed blob, its search document, the frame that
carries a batch. glibc serves a large allocation with a mapping of its own only until
the first such mapping is freed; then it raises its ``mmap`` threshold to that size
(up to 32 MiB), and buffers of that size come from the heap. By default every thread
that allocates gets a heap (an arena) of its own, and each arena keeps the peak of its
thread: with a 5 MB message in the hands of the fetching thread, a storing lane and
the reporting thread, a mailbox worker held 50 to 67 MiB (PSS) at the peak of a run.

``bound_heap`` limits the process to one arena, so a buffer that one thread frees is
the next buffer of another, and the process keeps the peak of all its threads together
instead of the sum of their peaks: about 40 MiB less for an ``apply`` at 4 connections
on the benchmark's default preset. The other way, a fixed ``mmap`` threshold that
returns every large buffer to the system when freed, saved more memory but cost each
large buffer its page faults anew: four times the page faults, about 10 % more CPU.
The threads hardly compete for the one heap: most of their allocations are made
holding Python's GIL anyway.

The processes that hold messages call it when they start, before their threads: the
mailbox workers, the search indexer and ``apply``. Elsewhere than glibc it does
nothing.
"""

from __future__ import annotations

import ctypes
import sys

ARENAS = 1
"""malloc arenas (heaps) of the process, shared by all of its threads."""

_M_ARENA_MAX = -8  # glibc's malloc.h


def bound_heap(arenas: int = ARENAS) -> bool:
    """Limit glibc's malloc in this process to ``arenas`` heaps (see the module); True
    when it is set, False where there is no glibc to tell."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # no mallopt: not glibc
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))
