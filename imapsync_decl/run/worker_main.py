"""How a mailbox worker process starts: ``python -m imapsync_decl.run.worker_main``.

A worker never draws on a terminal (its log events go to ``apply``) and never runs an
event loop, so before anything is imported it has structlog load without rich and
without asyncio (``run.lean_start``): that saves each worker start-up time and about
6 MB of memory, which count at every connection. Its threads share one malloc heap
(``run.heap``), so a large message's buffer freed by one is reused by the next.
"""

from imapsync_decl.run.heap import bound_heap
from imapsync_decl.run.lean_start import load_structlog_lean

bound_heap()
load_structlog_lean()

from imapsync_decl.run.mailbox_worker import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
