"""How a mailbox worker process starts: ``python -m imapsync_decl.run.worker_main``.

A worker never draws on a terminal (its log events go to ``apply``), so before
anything is imported it keeps structlog from loading the optional console library
that it would otherwise load for pretty tracebacks (rich): that saves each worker
about 50 ms of start-up and 4.5 MB of memory, which count at every connection.
"""

import sys

sys.modules.setdefault("rich", None)  # type: ignore[arg-type]  # None: "not installed"

from imapsync_decl.run.mailbox_worker import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
