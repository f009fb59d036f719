"""Health pings: tell a Healthchecks.io-style service when a profile's run starts, succeeds or fails.

Per profile, each ``notify`` URL gets ``POST URL/start`` when a run begins, ``POST URL``
when it succeeds and ``POST URL/fail`` when it fails, with a short summary of the run as
the body (counts and statuses only: no passwords, no folder names). A ping has a short
timeout and a few attempts with backoff, within a bound on the total time; a ping that
fails is logged as a warning and never fails the run or changes its exit code. A URL
may itself be a secret ({env: NAME}, {file: PATH}, {credential: NAME}): logs name only
its scheme and host, never its path, query or the reference's value.
"""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog

from imapsync_decl.config.documents.rules import http_url_problem
from imapsync_decl.config.model import Config, read_secret
from imapsync_decl.errors import ImapsyncError
from imapsync_decl.secrets import Secret

log = structlog.get_logger(__name__)

Event = Literal["start", "success", "fail"]

TIMEOUT = 5.0  # seconds per attempt
ATTEMPTS = 3
BACKOFF = 1.0  # seconds before the second attempt, doubled after each
BUDGET = 20.0  # seconds for all attempts of one ping
MAX_BODY = 10_000  # bytes of the summary sent


@dataclass(frozen=True)
class Target:
    """One URL to ping; ``shown`` is what logs may say of it (scheme and host)."""

    url: Secret
    shown: str


def shown_url(url: str) -> str:
    """``https://hc-ping.com/…``: the scheme and host of ``url``, never its path or query."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/…"


def targets(config: Config, profiles: Sequence[str]) -> dict[str, list[Target]]:
    """The URLs of each profile, read now; one that cannot be read or is no http(s) URL is
    logged (naming its place, not its value) and left out."""
    found: dict[str, list[Target]] = {}
    for name in profiles:
        item = config.profile(name)
        if item is None or not item.doc.notify:
            continue
        for position, ref in enumerate(item.doc.notify):
            try:
                url = (
                    ref if isinstance(ref, str) else read_secret(ref, item.origin.base_dir).reveal()
                )
            except ImapsyncError as exc:
                log.warning(
                    "notify_url_unreadable", profile=name, notify=position, error=exc.message
                )
                continue
            problem = http_url_problem(url)
            if problem is not None:
                log.warning("notify_url_invalid", profile=name, notify=position, error=problem)
                continue
            found.setdefault(name, []).append(Target(Secret(url), shown_url(url)))
    return found


def event_url(base: str, event: Event) -> str:
    """``base`` with ``/start`` or ``/fail`` appended to its path (``success``: ``base``)."""
    if event == "success":
        return base
    parts = urllib.parse.urlsplit(base)
    path = parts.path.rstrip("/") + "/" + event
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a redirect is an answer that is not 2xx: the ping failed


_OPENER = urllib.request.build_opener(_NoRedirects)


def ping(
    target: Target,
    event: Event,
    body: str,
    *,
    profile: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """POST ``body`` to the target's URL for ``event``; True when it answered 2xx.

    Up to ATTEMPTS attempts, TIMEOUT seconds each, BACKOFF seconds apart (doubling),
    all within BUDGET seconds. A 4xx answer is not retried. Never raises."""
    url, authorization = _credentials(event_url(target.url.reveal(), event))
    data = body.encode("utf-8")[:MAX_BODY]
    deadline = clock() + BUDGET
    delay = BACKOFF
    error = "no attempt"
    for attempt in range(1, ATTEMPTS + 1):
        remaining = deadline - clock()
        if remaining <= 0:
            break
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked: http or https)
            url,
            data=data,
            method="POST",
            headers={
                "Content-Type": "text/plain; charset=utf-8",
                "User-Agent": "imapsync-decl",
                **authorization,
            },
        )
        try:
            with _OPENER.open(request, timeout=min(TIMEOUT, remaining)) as answer:
                answer.read(1024)
                status = int(answer.status)
            if 200 <= status < 300:
                log.debug("notify_sent", profile=profile, ping=event, url=target.shown)
                return True
            error = f"HTTP {status}"
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
            if 400 <= exc.code < 500 and exc.code != 429:
                break
        except (OSError, ValueError) as exc:  # refused, timed out, DNS, TLS
            error = type(exc).__name__ if isinstance(exc, TimeoutError) else _reason(exc)
        if attempt < ATTEMPTS and deadline - clock() > delay:
            sleep(delay)
            delay *= 2
        else:
            break
    log.warning("notify_failed", profile=profile, ping=event, url=target.shown, error=error)
    return False


def _credentials(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without a user name and password, and the Basic authentication header they
    make (none without them)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, {}
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    netloc = parts.netloc.rpartition("@")[2]
    bare = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return bare, {"Authorization": f"Basic {token}"}


def _reason(exc: BaseException) -> str:
    """Why a request failed, without the URL (urllib's messages do not hold it)."""
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return reason if isinstance(reason, str) else type(reason).__name__
    return type(exc).__name__


def notify(found: dict[str, list[Target]], event: Event, bodies: dict[str, str]) -> None:
    """Ping every target of every profile in ``bodies`` for ``event``."""
    for profile, body in bodies.items():
        for target in found.get(profile, ()):
            ping(target, event, body, profile=profile)
