"""A TCP proxy on 127.0.0.1 that can drop connections, to test what a dropped connection does."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self


class DroppingProxy:
    """Forwards to ``target``; cuts a connection once it has sent ``drop_after`` bytes to the
    client, for the first ``drops`` connections that get that far (``drops=-1``: always)."""

    def __init__(self, target: tuple[str, int], drop_after: int, drops: int = 1) -> None:
        self.target = target
        self.drop_after = drop_after
        self.drops_left = drops
        self.dropped = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Self:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            upstream = socket.create_connection(self.target)
            for args in ((client, upstream, False), (upstream, client, True)):
                thread = threading.Thread(target=self._pump, args=args, daemon=True)
                thread.start()
                self._threads.append(thread)

    def _should_drop(self) -> bool:
        with self._lock:
            if self.drops_left == 0:
                return False
            if self.drops_left > 0:
                self.drops_left -= 1
            self.dropped += 1
            return True

    def _pump(self, source: socket.socket, sink: socket.socket, downstream: bool) -> None:
        sent = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
                sent += len(data)
                if downstream and sent >= self.drop_after and self._should_drop():
                    break
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
