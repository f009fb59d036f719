"""The Web settings of a configuration: the Web document resolved, or the defaults.

:class:`WebSettings` is what ``serve`` needs, as plain values: where to listen, the
TLS files (absolute paths), whom to believe as a proxy, how long a session lasts,
who administers, whether directory sign-in is on. :func:`resolve_web` makes it and
adds the problems the document model cannot see on its own: a second Web document,
TLS files that are missing or a key others can read, a session lifetime out of
bounds, a proxy network with host bits set, directory sign-in without a directory,
administrators that are no archive users.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from imapsync_decl.config.documents.web import (
    DEFAULT_LISTEN,
    DEFAULT_SESSION_LIFETIME,
    WebDocument,
)
from imapsync_decl.config.loader import Loaded, LoadResult
from imapsync_decl.errors import Problem, Severity

MIN_SESSION_LIFETIME_SECONDS = 5 * 60
MAX_SESSION_LIFETIME_SECONDS = 30 * 24 * 3600
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class WebSettings:
    """How ``serve`` offers the archive; ``host`` is an IPv6 address without brackets."""

    host: str
    port: int
    certificate: Path | None
    key: Path | None
    behind_proxy: bool
    trusted_proxies: tuple[str, ...]
    session_lifetime_seconds: int
    administrators: frozenset[str]
    directory_sign_in: bool

    @property
    def listen(self) -> str:
        """HOST:PORT as written in a Web document (an IPv6 address in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def tls(self) -> bool:
        return self.certificate is not None


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 address in brackets) as (host without brackets, port)."""
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def parse_duration(text: str) -> int:
    """``90s``, ``30m``, ``8h``, ``7d`` in seconds."""
    return int(text[:-1]) * _UNITS[text[-1]]


def _defaults() -> WebSettings:
    host, port = parse_listen(DEFAULT_LISTEN)
    return WebSettings(
        host=host,
        port=port,
        certificate=None,
        key=None,
        behind_proxy=False,
        trusted_proxies=(),
        session_lifetime_seconds=parse_duration(DEFAULT_SESSION_LIFETIME),
        administrators=frozenset(),
        directory_sign_in=False,
    )


DEFAULT_WEB = _defaults()
"""The settings of a configuration without a Web document."""


def resolve_web(
    loaded: LoadResult,
    *,
    has_directory: bool,
    user_names: Collection[str],
    problems: list[Problem],
) -> tuple[WebSettings, Loaded[WebDocument] | None]:
    """The Web settings (the defaults without a Web document) and the document used."""
    if not loaded.webs:
        return DEFAULT_WEB, None
    first = loaded.webs[0]
    for extra in loaded.webs[1:]:
        problems.append(
            extra.origin.problem(
                ("kind",), f"only one Web document is allowed (first in {first.origin.display})"
            )
        )
    doc, origin = first.doc, first.origin
    lifetime = parse_duration(doc.session_lifetime)
    if not MIN_SESSION_LIFETIME_SECONDS <= lifetime <= MAX_SESSION_LIFETIME_SECONDS:
        problems.append(
            origin.problem(("session_lifetime",), "a session lasts at least 5m and at most 30d")
        )
    certificate = key = None
    if doc.tls is not None:
        certificate = _tls_file(first, "certificate", doc.tls.certificate, problems)
        key = _tls_file(first, "key", doc.tls.key, problems)
        if key is not None:
            mode = stat.S_IMODE(os.stat(key).st_mode)
            if mode & stat.S_IROTH:
                problems.append(
                    origin.problem(
                        ("tls", "key"),
                        f"the private key {key} is readable by others (mode {mode:o}):"
                        f" chmod o-rwx {key}",
                    )
                )
    for i, proxy in enumerate(doc.trusted_proxies):
        try:
            ipaddress.ip_network(proxy, strict=True)
        except ValueError:
            network = ipaddress.ip_network(proxy, strict=False)
            problems.append(
                origin.problem(
                    ("trusted_proxies", i), f"host bits set in {proxy}; the network is {network}"
                )
            )
    if doc.directory_sign_in and not has_directory:
        problems.append(
            origin.problem(
                ("directory_sign_in",), "no Users document has a directory to sign in with"
            )
        )
    known = set(user_names)
    for i, name in enumerate(doc.administrators):
        if name not in known:
            problems.append(
                origin.problem(
                    ("administrators", i),
                    f"{name!r} is not a user of the archive's user list (yet): it cannot sign"
                    " in until it is",
                    Severity.WARNING,
                )
            )
    host, port = parse_listen(doc.listen)
    settings = WebSettings(
        host=host,
        port=port,
        certificate=certificate,
        key=key,
        behind_proxy=doc.behind_proxy,
        trusted_proxies=tuple(doc.trusted_proxies),
        session_lifetime_seconds=lifetime,
        administrators=frozenset(doc.administrators),
        directory_sign_in=doc.directory_sign_in,
    )
    return settings, first


def _tls_file(
    item: Loaded[WebDocument], field: str, value: str, problems: list[Problem]
) -> Path | None:
    path = Path(value).expanduser()
    path = Path(
        os.path.normpath(path if path.is_absolute() else item.origin.base_dir.absolute() / path)
    )
    if not path.is_file():
        problems.append(item.origin.problem(("tls", field), f"file not found: {path}"))
        return None
    return path
