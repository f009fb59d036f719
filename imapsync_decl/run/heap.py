"""Large buffers go back to the system when freed: a fixed ``mmap`` threshold for malloc.

A process that archives holds messages of several megabytes for a moment each: the
literal read off the wire, its compressed blob, its search document, the frame that
carries a batch. glibc serves an allocation above its ``mmap`` threshold (128 KiB at
first) with a mapping of its own, which ``free`` returns to the system. But the first
time such a mapping is freed, glibc raises the threshold to its size (up to 32 MiB),
and from then on buffers of that size come from the heap arenas, one per thread, each
of which keeps its peak. With a 5 MB message in the hands of the fetching thread, a
storing lane and the reporting thread, a mailbox worker held 50 to 67 MiB (PSS) at the
peak of a run instead of about 40; four workers, about 75 MiB more.

``bound_heap`` fixes the threshold (which also turns the raising off), so every
buffer above it is mapped and unmapped on its own: a few system calls per large
message, against megabytes held for the rest of the run. Small messages, most mail,
are below it and served as before. The processes that hold messages call it when they
start: the mailbox workers, the search indexer and ``apply``. Elsewhere than glibc
(musl, other systems) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

MMAP_THRESHOLD = 256 * 1024
"""Bytes: a buffer above this is a mapping of its own, returned to the system when freed."""

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def bound_heap(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's ``mmap`` threshold of this process at ``threshold`` bytes (see the
    module); True when it is set, False where there is no glibc to tell."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # no mallopt: not glibc
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))
