"""The web application: its routes behind the security guard (see ``security``)."""

from __future__ import annotations

from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imapsync_decl.config.model import Config
from imapsync_decl.store.accounts import Accounts
from imapsync_decl.web.routes import Routes
from imapsync_decl.web.security import Guard
from imapsync_decl.web.settings import Served
from imapsync_decl.web.site import Site

STYLESHEET = resources.files("imapsync_decl.web").joinpath("static/style.css").read_bytes()


def create_app(config: Config, settings: Served, accounts: Accounts | None = None) -> Starlette:
    """The application for the archive of ``config``; ``accounts`` default to the
    archive's own (``accounts.sqlite``), opened for as long as the application runs."""
    site = Site(config, settings, accounts or Accounts.open(config.archive_path))
    routes = Routes(site)

    async def stylesheet(request: Request) -> Response:
        return Response(STYLESHEET, media_type="text/css")

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        if status == 405:
            return site.problem(request, None, "Method not allowed.", 405)
        return site.not_found(request, None)

    app = Starlette(
        routes=[
            Route("/", routes.home),
            Route("/sign-in", routes.sign_in_page, methods=["GET", "POST"]),
            Route("/sign-out", routes.sign_out, methods=["POST"]),
            Route("/archive", routes.tree),
            Route("/folders/{folder_id}", routes.folder),
            Route("/search", routes.search),
            Route("/messages/{message_id}", routes.message),
            Route("/messages/{message_id}/body", routes.message_body),
            Route("/messages/{message_id}/raw", routes.raw),
            Route("/messages/{message_id}/attachments/{number}", routes.attachment),
            Route("/restore", routes.restore_page, methods=["GET", "POST"]),
            Route("/password", routes.password, methods=["GET", "POST"]),
            Route("/admin/runs", routes.runs),
            Route("/admin/runs/{run_id}", routes.run),
            Route("/admin/stats", routes.stats),
            Route("/static/style.css", stylesheet),
            Route("/api/session", routes.api_session, methods=["POST", "DELETE"]),
            Route("/api/search", routes.api_search),
            Route("/api/messages/{message_id}", routes.api_message),
            Route("/api/messages/{message_id}/raw", routes.raw),
        ],
        middleware=[
            Middleware(Guard, allowed_hosts=settings.allowed_hosts(), tls=settings.tls),
        ],
        exception_handlers={404: not_found, 405: not_found},
    )
    app.state.site = site
    return app
