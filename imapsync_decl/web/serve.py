"""``serve``: the web application in uvicorn, on the address of the Web document.

The socket is bound here, before uvicorn starts, so that an address in use or not
allowed is a clear error (exit 10) and not a server that logs and quits. TLS comes
from the Web document's certificate and key. uvicorn's own access log stays off
(it would log every query string); the application logs each request without it,
and never a cookie or a session token. Proxy headers are read by the application
itself (``security.ClientAddress``), only from the trusted proxies.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import structlog

from imapsync_decl.config.model import Config
from imapsync_decl.errors import UsageError
from imapsync_decl.web.settings import Served

log = structlog.get_logger(__name__)


def bind(settings: Served) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(
    config: Config, settings: Served, *, started: Callable[[str], None] | None = None
) -> None:
    """Serve the archive of ``config`` until interrupted; ``started`` gets the URL once
    the socket listens."""
    import uvicorn

    from imapsync_decl.web.app import create_app

    if not (config.archive_path / "index.sqlite").is_file():
        raise UsageError(f"no archive at {config.archive_path} (run `apply` first)")
    for path, what in ((settings.certificate, "certificate"), (settings.key, "key")):
        if path is not None and not path.is_file():
            raise UsageError(f"the Web document's TLS {what} {path} is not a readable file")
    app = create_app(config, settings)
    sock = bind(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            ssl_certfile=str(settings.certificate) if settings.tls else None,
            ssl_keyfile=str(settings.key) if settings.tls else None,
            lifespan="off",
        )
    )
    log.info("web_started", url=settings.url, archive=str(config.archive_path))
    if started is not None:
        started(settings.url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        app.state.site.accounts.close()
        log.info("web_stopped", url=settings.url)
