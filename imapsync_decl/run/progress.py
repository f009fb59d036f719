"""How a run reports its progress: the :class:`Progress` protocol and a silent default.

The executor reports each mailbox started, each batch stored and each mailbox
finished. Callers that show something (the terminal bars of the command line) pass
their own implementation; without one a run reports to :class:`NoProgress`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from imapsync_decl.plan.model import Plan


class Progress(Protocol):
    def mailbox_started(self, key: str, messages: int, size: int) -> None: ...

    def advanced(self, key: str, messages: int, size: int) -> None: ...

    def mailbox_finished(self, key: str) -> None: ...


class NoProgress:
    def mailbox_started(self, key: str, messages: int, size: int) -> None:
        pass

    def advanced(self, key: str, messages: int, size: int) -> None:
        pass

    def mailbox_finished(self, key: str) -> None:
        pass


# Given the plan about to be applied, a context that reports its progress while it lasts.
ProgressFactory = Callable[[Plan], AbstractContextManager[Progress]]


@contextmanager
def no_progress(plan: Plan) -> Iterator[Progress]:
    """The factory for runs that show nothing (the daemon, tests)."""
    yield NoProgress()
