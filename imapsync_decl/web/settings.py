"""Where and how ``serve`` listens, from the Web document and ``--listen``.

Plain HTTP is served only on a loopback address; any other address needs TLS (the Web
document's certificate and key) or ``behind_proxy`` (a reverse proxy in front ends TLS
and its address is trusted for ``X-Forwarded-For``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from imapsync_decl.config.web import WebSettings
from imapsync_decl.errors import UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8462
DEFAULT_SESSION_SECONDS = 8 * 3600


@dataclass(frozen=True)
class Served:
    """The settings the web application and its server run with."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    certificate: Path | None = None
    key: Path | None = None
    behind_proxy: bool = False
    trusted_proxies: tuple[str, ...] = ()
    session_lifetime_seconds: int = DEFAULT_SESSION_SECONDS
    administrators: frozenset[str] = frozenset()
    directory_sign_in: bool = False

    @property
    def tls(self) -> bool:
        return self.certificate is not None and self.key is not None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def allowed_hosts(self) -> frozenset[str] | None:
        """The Host header values accepted, or None for any (see ``security``)."""
        if self.tls or self.behind_proxy:
            return None  # the certificate, or the proxy in front, binds the names
        names = {self.host, f"[{self.host}]"}
        if is_loopback(self.host):
            names |= {"localhost", "127.0.0.1", "[::1]"}
        return frozenset(n.lower() for n in names) | frozenset(
            f"{n.lower()}:{self.port}" for n in names
        )


def served(web: WebSettings | None, listen: str | None = None) -> Served:
    """The settings of ``web`` (the defaults without a Web document), with ``listen``
    (``HOST:PORT``) in place of its address; plain HTTP on a non-loopback address is
    refused (exit 10)."""
    settings = Served()
    if web is not None:
        settings = Served(
            host=web.host,
            port=web.port,
            certificate=web.certificate,
            key=web.key,
            behind_proxy=web.behind_proxy,
            trusted_proxies=tuple(web.trusted_proxies),
            session_lifetime_seconds=web.session_lifetime_seconds,
            administrators=frozenset(web.administrators),
            directory_sign_in=web.directory_sign_in,
        )
    if listen is not None:
        host, port = parse_listen(listen)
        settings = Served(
            host,
            port,
            settings.certificate,
            settings.key,
            settings.behind_proxy,
            settings.trusted_proxies,
            settings.session_lifetime_seconds,
            settings.administrators,
            settings.directory_sign_in,
        )
    check_listen(settings)
    return settings


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8462`` for IPv6) as host and port; UsageError otherwise."""
    host, sep, port_text = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"--listen {text!r}: give HOST:PORT, e.g. 127.0.0.1:8462")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(settings: Served) -> None:
    if settings.tls or settings.behind_proxy or is_loopback(settings.host):
        return
    raise UsageError(
        f"refusing plain HTTP on {settings.host}:{settings.port}, which is not a loopback"
        " address: give the Web document a certificate and key, or set behind_proxy with"
        " the trusted proxy addresses (or listen on 127.0.0.1)"
    )
