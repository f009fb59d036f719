"""What every route of the web application shares: who is signed in, what they may see,
the access log, and rendering.

A visitor is signed in when their session cookie names a live session of
``Accounts`` (checked on the server at every request: an expired or ended session is
no session). A user sees only their own archive; an administrator (the Web document's
``administrators``) sees every one. What a visitor may not see answers exactly as what
does not exist: :meth:`Site.not_found` is the one answer for both.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import jinja2
import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from imapsync_decl.config.model import Config
from imapsync_decl.store import Archive
from imapsync_decl.store.accounts import Accounts
from imapsync_decl.store.browse import Browse
from imapsync_decl.store.restoring import RestoreItem
from imapsync_decl.web.security import ClientAddress, csrf_token, foreign_origin, same_token
from imapsync_decl.web.settings import Served

log = structlog.get_logger(__name__)

SESSION_COOKIE = "imapsync_session"
SIGN_IN_COOKIE = "imapsync_signin"  # the sign-in form's CSRF value, before any session
NOT_FOUND = "Not found: there is no such message, folder or mailbox in your archive."


@dataclass(frozen=True)
class Visitor:
    """A signed-in user of this request."""

    name: str
    token: str
    administrator: bool

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)

    def may_see(self, user: str) -> bool:
        return self.administrator or user == self.name


class Site:
    """The web application's state: configuration, settings, accounts, templates."""

    def __init__(self, config: Config, settings: Served, accounts: Accounts) -> None:
        self.config = config
        self.settings = settings
        self.root = config.archive_path
        self.accounts = accounts
        self.client_address = ClientAddress(settings.behind_proxy, settings.trusted_proxies)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("imapsync_decl.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["size"] = human_size
        self.templates.filters["moment"] = moment
        self.templates.filters["url"] = lambda v: quote(str(v), safe="")
        self._lock = threading.Lock()

    # --- who ---------------------------------------------------------------------------

    def https(self, request: Request) -> bool:
        """Whether the browser speaks HTTPS: under TLS, or behind a trusted proxy that says
        so (``X-Forwarded-Proto: https``)."""
        if self.settings.tls:
            return True
        return self.client_address.forwarded_https(request)

    def session_cookie(self, request: Request) -> str:
        # Over HTTPS the __Host- prefix: the browser keeps it only Secure, for this host, on /.
        return f"__Host-{SESSION_COOKIE}" if self.https(request) else SESSION_COOKIE

    def visitor(self, request: Request) -> Visitor | None:
        token = request.cookies.get(self.session_cookie(request), "")
        if not token:
            return None
        name = self.accounts.session_user(token)
        if name is None:
            return None
        return Visitor(name, token, name in self.settings.administrators)

    def address(self, request: Request) -> str | None:
        return self.client_address(request)

    def set_session(self, request: Request, response: Response, token: str) -> None:
        response.set_cookie(
            self.session_cookie(request),
            token,
            max_age=self.settings.session_lifetime_seconds,
            path="/",
            secure=self.https(request),
            httponly=True,
            samesite="strict",
        )

    def clear_session(self, request: Request, response: Response) -> None:
        response.delete_cookie(
            self.session_cookie(request),
            path="/",
            secure=self.https(request),
            httponly=True,
            samesite="strict",
        )

    def sign_in_token(self, request: Request) -> str:
        """The sign-in form's CSRF value: the one its cookie has, else a new one."""
        given = request.cookies.get(SIGN_IN_COOKIE, "")
        return given if len(given) == 43 else secrets.token_urlsafe(32)

    def set_sign_in_token(self, request: Request, response: Response, value: str) -> None:
        response.set_cookie(
            SIGN_IN_COOKIE,
            value,
            max_age=3600,
            path="/",
            secure=self.https(request),
            httponly=True,
            samesite="strict",
        )

    def form_allowed(
        self, request: Request, form: Mapping[str, Any], visitor: Visitor | None
    ) -> bool:
        """Whether a posted form may change anything: same site, and its CSRF token is
        the session's (or, signed out, the sign-in cookie's)."""
        if foreign_origin(request):
            return False
        given = form.get("csrf")
        if visitor is not None:
            return same_token(given, visitor.csrf)
        cookie = request.cookies.get(SIGN_IN_COOKIE, "")
        return bool(cookie) and same_token(given, cookie)

    # --- what they may see -------------------------------------------------------------

    @contextmanager
    def browse(self) -> Iterator[Browse]:
        with Browse.open(self.root) as browse:
            yield browse

    def placement(self, visitor: Visitor, placement_id: int) -> tuple[RestoreItem, bytes] | None:
        """The placement and its message's bytes, or None when it does not exist or is not
        the visitor's (the same None)."""
        with Archive.open(self.root, read_only=True) as archive:
            found = archive.index.placements_by_id([placement_id])
            if not found or not visitor.may_see(found[0].user):
                return None
            return found[0], archive.blobs.get(found[0].sha256)

    def users(self, visitor: Visitor) -> list[str]:
        with self.browse() as browse:
            names = browse.users()
        return names if visitor.administrator else [n for n in names if n == visitor.name]

    def profile_for(self, user: str) -> str | None:
        """The first profile (in the configuration's order) that reaches ``user``'s
        mailbox: where a restore for that user goes."""
        for loaded in self.config.profiles:
            name = loaded.doc.name
            if any(m.archive_user == user for m in self.config.mailboxes.get(name, ())):
                return name
        return None

    # --- the access log ----------------------------------------------------------------

    def record(
        self,
        request: Request,
        *,
        user: str | None,
        action: str,
        target: str | None = None,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        from imapsync_decl.store.access_log import append_access

        address = self.address(request)
        with self._lock:
            append_access(
                self.root, user=user, action=action, target=target, address=address, detail=detail
            )
        log.info("web_accessed", user=user, action=action, target=target, address=address)

    # --- answers -----------------------------------------------------------------------

    def page(
        self,
        request: Request,
        template: str,
        visitor: Visitor | None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        text = self.templates.get_template(template).render(
            visitor=visitor, path=request.url.path, **context
        )
        return HTMLResponse(text, status_code=status)

    def not_found(self, request: Request, visitor: Visitor | None) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "not found"}, status_code=404)
        return self.page(request, "error.html", visitor, 404, title="Not found", message=NOT_FOUND)

    def problem(
        self, request: Request, visitor: Visitor | None, message: str, status: int = 400
    ) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        return self.page(request, "error.html", visitor, status, title="Error", message=message)

    def sign_in_first(self, request: Request) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "sign in first"}, status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/sign-in?next={quote(target, safe='')}", status_code=303)


def human_size(value: object) -> str:
    size = float(value) if isinstance(value, int | float) else 0.0
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def moment(value: object) -> str:
    """An ISO 8601 timestamp of the index as ``2024-10-07 10:00:00 UTC`` (as given when
    it is not one)."""
    if not value:
        return ""
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if parsed.tzinfo else "")


def local_target(value: object) -> str:
    """Where to go after signing in: a path of this site, never another site's URL."""
    text = str(value or "")
    if text.startswith("/") and not text.startswith(("//", "/\\")) and "\n" not in text:
        return text
    return "/archive"


__all__ = ["Site", "Visitor", "human_size", "local_target", "moment"]
