"""A mailbox worker whose blob writes fail: ``python faulty_worker.py COUNTER AT ERRNO``.

The ``AT``-th call of ``BlobStore.put_many`` counted over every worker of the run (one
byte appended to the file ``COUNTER`` per call), and every later one when ``AT`` is
negative (from the ``-AT``-th on), raises ``OSError(ERRNO)``; then the worker runs as
``apply`` starts it. Tests put it in place of the real worker command.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from imapsync_decl.run import mailbox_worker
from imapsync_decl.store.blobs import BlobStore


def main() -> int:
    counter, at, code = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    original = BlobStore.put_many

    def failing(self: BlobStore, *args: Any, **kwargs: Any) -> Any:
        fd = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, b".")
            calls = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if calls == at or (at < 0 and calls >= -at):
            raise OSError(code, os.strerror(code))
        return original(self, *args, **kwargs)

    BlobStore.put_many = failing  # type: ignore[method-assign]
    return mailbox_worker.main()


if __name__ == "__main__":
    raise SystemExit(main())
