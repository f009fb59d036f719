"""One malloc heap for all the threads of a process that holds messages (``run.heap``):
the buffers one thread freed are reused by another, not kept for the first."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from imapsync_decl.run import service

from bed import Bed, seed

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the mmap threshold is glibc's"
)

GROWTH_AFTER_A_THREAD = textwrap.dedent(
    """
    import sys, threading
    from imapsync_decl.run.heap import bound_heap

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

    if sys.argv[1] == "bound":
        assert bound_heap()
    # Freeing a mapped buffer makes glibc serve buffers this large from its heaps.
    first = b"x" * (8 << 20)
    del first

    def work():  # as a storing lane does: a few message-sized buffers, then freed
        held = [bytes([65 + i]) * (4 << 20) for i in range(3)]
        del held

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    before = rss()
    again = [bytes([70 + i]) * (4 << 20) for i in range(3)]  # the same, in another thread
    print(rss() - before)
    """
)


def growth_after_a_thread(mode: str) -> int:
    """Bytes of RSS the main thread adds for 12 MB of buffers that another thread has
    just allocated and freed."""
    done = subprocess.run(
        [sys.executable, "-c", GROWTH_AFTER_A_THREAD, mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_a_thread_reuses_what_another_one_freed() -> None:
    assert growth_after_a_thread("bound") < 2 << 20


def test_without_it_each_thread_keeps_its_own_freed_buffers() -> None:
    """What ``bound_heap`` is for: glibc's own behaviour, which the test above would
    not tell from a working ``bound_heap`` otherwise."""
    assert growth_after_a_thread("free") > 8 << 20


BOUND_AT_START = textwrap.dedent(
    """
    import importlib, sys
    from imapsync_decl.run import heap

    calls = []
    heap.bound_heap = lambda *a: calls.append(a) or True
    module = importlib.import_module(sys.argv[1])
    if sys.argv[1].endswith("search_worker"):
        assert module.main([]) == 10  # a usage error, after the heap is bound
    print(len(calls))
    """
)


@pytest.mark.parametrize(
    "module", ["imapsync_decl.run.worker_main", "imapsync_decl.run.search_worker"]
)
def test_the_workers_bound_their_heap_when_they_start(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", BOUND_AT_START, module], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"]


@pytest.mark.dovecot
def test_apply_bounds_its_heap(bed: Bed, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def bound() -> bool:
        calls.append(1)
        return True

    monkeypatch.setattr(service, "bound_heap", bound)
    user = bed.new_user()
    seed(bed, user, "INBOX", 2, tag="heap")
    bed.master_profile("p", [user])
    assert bed.run("apply")[0] == 0
    assert calls == [1]
