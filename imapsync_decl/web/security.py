"""The rules every request and response of the web application passes.

:class:`Guard` is an ASGI middleware in front of every route: it refuses a request
whose Host header is not one the server answers to (DNS rebinding), or whose body is
larger than ``MAX_BODY`` (413, counted as it arrives, not only by Content-Length),
and it gives every response a strict Content-Security-Policy (no script at all,
``frame-ancestors 'none'``), ``X-Content-Type-Options: nosniff``, a Referrer-Policy
that sends nothing, and ``Cache-Control: no-store`` (the stylesheet alone may be
cached). A response may bring a policy and an X-Frame-Options of its own (the frame of
a message body, which only this site may embed); they are kept.

Client addresses: the peer's address, or behind a trusted proxy the address the
proxy puts last into ``X-Forwarded-For`` (read right to left, skipping the trusted
proxies). CSRF: a form of a signed-in user carries a token derived from the session
token (:func:`csrf_token`); the sign-in form, before any session, carries the value of
a cookie of its own (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from typing import Any

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)

MAX_BODY = 64 * 1024

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self';"
    " form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
)
STATIC_PREFIX = "/static/"


class Guard:
    """The ASGI middleware of the rules above."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: frozenset[str] | None, tls: bool) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = self._headers(message.get("headers", []), path)
            await send(message)

        host = headers.get(b"host", b"").decode("latin-1").lower()
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            await _plain(guarded_send, 400, b"unknown host")
            return
        length = headers.get(b"content-length", b"0").decode("latin-1")
        if not length.isdigit() or int(length) > MAX_BODY:
            await _drain(receive)
            await _plain(guarded_send, 413, b"request body too large")
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                await _plain(guarded_send, 413, b"request body too large")
        except Exception as exc:  # a bug: logged by its kind, never shown with a traceback
            log.error("web_request_failed", path=path, error=type(exc).__name__)
            if not started:
                await _plain(guarded_send, 500, b"internal error: the server log says more")

    def _headers(
        self, given: Iterable[tuple[bytes, bytes]], path: str
    ) -> list[tuple[bytes, bytes]]:
        given = list(given)
        headers = [(k, v) for k, v in given if k.lower() not in _SET_HERE]
        own = {k.lower(): v for k, v in given if k.lower() in _OWN}
        headers.append((b"content-security-policy", own.get(b"content-security-policy", CSP_BYTES)))
        headers.extend((k, own.get(k, v)) for k, v in HEADERS)
        if path.startswith(STATIC_PREFIX):
            headers.append((b"cache-control", b"public, max-age=3600"))
        else:
            headers.append((b"cache-control", b"no-store"))
            headers.append((b"pragma", b"no-cache"))
        if self.tls:
            headers.append((b"strict-transport-security", b"max-age=31536000"))
        return headers


CSP_BYTES = CSP.encode()
# What a response may set for itself (the frame of a message body): kept, not replaced.
_OWN = frozenset({b"content-security-policy", b"x-frame-options"})
_SET_HERE = frozenset(
    {b"content-security-policy", b"cache-control", b"pragma", *(k for k, _ in HEADERS)}
)


class BodyTooLarge(Exception):
    """The request body grew past MAX_BODY while it was read."""


async def _drain(receive: Receive) -> None:
    """Read what is sent of a refused body, up to MAX_BODY, so the answer gets through."""
    seen = 0
    while seen <= MAX_BODY:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _plain(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# --- client addresses ----------------------------------------------------------------------


def _networks(proxies: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


class ClientAddress:
    """The client address of a request: the peer, or behind trusted proxies the last
    untrusted address of ``X-Forwarded-For``."""

    def __init__(self, behind_proxy: bool, trusted_proxies: Iterable[str]) -> None:
        self.behind_proxy = behind_proxy
        self.trusted = _networks(trusted_proxies)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def forwarded_https(self, request: Request) -> bool:
        """Whether a trusted proxy says the browser spoke HTTPS (``X-Forwarded-Proto``,
        the value the last proxy added)."""
        peer = request.client.host if request.client is not None else None
        if not self.behind_proxy or peer is None or not self._is_trusted(peer):
            return False
        given = ",".join(request.headers.getlist("x-forwarded-proto")).split(",")
        return given[-1].strip().lower() == "https"

    def __call__(self, request: Request) -> str | None:
        peer = request.client.host if request.client is not None else None
        if not self.behind_proxy or peer is None or not self._is_trusted(peer):
            return peer
        forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # a malformed hop: the proxy is the last address known
        return peer


# --- CSRF ----------------------------------------------------------------------------------

_CSRF_CONTEXT = b"imapsync-decl web csrf\0"


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: a hash of its token, which a page of another site can
    neither read nor compute (the session cookie is HttpOnly)."""
    return hashlib.sha256(_CSRF_CONTEXT + session_token.encode()).hexdigest()


def same_token(given: object, expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def foreign_origin(request: Request) -> bool:
    """True when the browser says the request comes from another site (Origin or
    Sec-Fetch-Site): refused for every state-changing request."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin == "null"
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1].lower() != host.lower()
