"""The routes: the pages, and the JSON API under ``/api/`` that does the same for automation.

Every handler finds its visitor first; without one a page redirects to the sign-in page
and an API request answers 401. A form that changes anything carries the CSRF token of
its session (see ``security``); a JSON request (``Content-Type: application/json``)
and a DELETE need none, since a page of another site cannot send them. The blocking
work (Argon2, SQLite, IMAP) runs in a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from imapsync_decl.errors import ImapsyncError
from imapsync_decl.store.browse import Cursor
from imapsync_decl.store.restoring import RestoreItem
from imapsync_decl.web import message as mail
from imapsync_decl.web.security import foreign_origin
from imapsync_decl.web.site import Site, Visitor, local_target

T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]
SHOWN_HEADERS = ("From", "To", "Cc", "Date", "Subject", "Message-ID")
PAGE_SIZE = 50
SEARCH_PAGE = 50
WRONG = "Wrong user name or password."
THROTTLED = "Too many failed sign-ins: wait 15 minutes, then try again."


async def off(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await run_in_threadpool(partial(function, *args, **kwargs))


def _int(value: object, default: int = 0) -> int:
    text = str(value or "")
    return int(text) if text.isdigit() and len(text) < 12 else default


@dataclass(frozen=True)
class _Message:
    """A message a visitor may see: its placement and the archived bytes."""

    visitor: Visitor
    item: RestoreItem
    raw: bytes


class Routes:
    """The handlers, bound to one :class:`Site`."""

    def __init__(self, site: Site) -> None:
        self.site = site

    # --- signing in and out ------------------------------------------------------------

    def attempt(self, name: str, password: str, address: str | None) -> str | None:
        """The error of a sign-in, or None when ``name`` may come in. The same answer
        for an unknown name and a wrong password, and the same work for both."""
        accounts = self.site.accounts
        if accounts.throttled(name, address):
            return THROTTLED
        state = accounts.password_state(name)
        ok = accounts.verify_password(name, password)  # costs the same for every name
        if not ok and state == "none" and self._directory_user(name):
            ok = self._directory_sign_in(name, password)
        if ok:
            return None
        accounts.record_failure(name, address)
        return WRONG

    def _directory_user(self, name: str) -> bool:
        """Whether ``name`` may try their directory password: when the Web document allows
        it and the user list has them from a directory (which ``directory_sign_in`` checks
        again, with the directory's settings)."""
        if not self.site.settings.directory_sign_in:
            return False
        return any(
            u.user.name == name and u.source == "directory" and u.status == "active"
            for u in self.site.config.listed
        )

    def _directory_sign_in(self, name: str, password: str) -> bool:
        from imapsync_decl.sources.directory_auth import directory_sign_in

        try:
            return directory_sign_in(self.site.config, name, password)
        except ImapsyncError:
            return False

    async def _sign_in(self, request: Request, name: str, password: str) -> tuple[str | None, str]:
        """(the session token, "") or (None, the error)."""
        address = self.site.address(request)
        name = name.strip()[:256]
        if not name or not password:
            return None, WRONG
        error = await off(self.attempt, name, password, address)
        if error is not None:
            await off(
                self.site.record,
                request,
                user=name,
                action="sign_in_failed",
                detail={"reason": "throttled" if error == THROTTLED else "wrong"},
            )
            return None, error
        token = await off(
            self.site.accounts.create_session,
            name,
            self.site.settings.session_lifetime_seconds,
            address,
        )
        await off(self.site.record, request, user=name, action="sign_in")
        return token, ""

    async def sign_in_page(self, request: Request) -> Response:
        if request.method == "GET":
            if await off(self.site.visitor, request) is not None:  # signed in already
                return RedirectResponse(local_target(request.query_params.get("next")), 303)
            value = self.site.sign_in_token(request)
            response: Response = self.site.page(
                request,
                "sign_in.html",
                None,
                title="Sign in",
                csrf=value,
                error="",
                username="",
                next=local_target(request.query_params.get("next")),
            )
            self.site.set_sign_in_token(request, response, value)
            return response
        form = await request.form()
        target = local_target(form.get("next"))
        if not self.site.form_allowed(request, form, None):
            return self.site.problem(request, None, "The form has expired: reload the page.", 403)
        token, error = await self._sign_in(
            request, str(form.get("username", "")), str(form.get("password", ""))
        )
        if token is None:
            value = self.site.sign_in_token(request)
            response = self.site.page(
                request,
                "sign_in.html",
                None,
                429 if error == THROTTLED else 401,
                title="Sign in",
                csrf=value,
                error=error,
                username=str(form.get("username", ""))[:256],
                next=target,
            )
            self.site.set_sign_in_token(request, response, value)
            return response
        response = RedirectResponse(target, status_code=303)
        self.site.set_session(request, response, token)
        return response

    async def sign_out(self, request: Request) -> Response:
        visitor = await off(self.site.visitor, request)
        if visitor is None:
            return RedirectResponse("/sign-in", status_code=303)
        form = await request.form()
        if not self.site.form_allowed(request, form, visitor):
            return self.site.problem(
                request, visitor, "The form has expired: reload the page.", 403
            )
        everywhere = form.get("everywhere") == "1"
        if everywhere:
            ended = await off(self.site.accounts.end_all_sessions, visitor.name)
        else:
            await off(self.site.accounts.end_session, visitor.token)
            ended = 1
        await off(
            self.site.record,
            request,
            user=visitor.name,
            action="sign_out",
            detail={"everywhere": everywhere, "sessions": ended},
        )
        response = RedirectResponse("/sign-in", status_code=303)
        self.site.clear_session(request, response)
        return response

    async def api_session(self, request: Request) -> Response:
        if request.method == "DELETE":
            visitor = await off(self.site.visitor, request)
            if visitor is None:
                return self.site.sign_in_first(request)
            await off(self.site.accounts.end_session, visitor.token)
            await off(self.site.record, request, user=visitor.name, action="sign_out")
            response = Response(status_code=204)
            self.site.clear_session(request, response)
            return response
        fields = await self._fields(request)
        if fields is None:
            return JSONResponse(
                {"error": "send username and password as JSON or as a form"}, status_code=400
            )
        token, error = await self._sign_in(
            request, str(fields.get("username", "")), str(fields.get("password", ""))
        )
        if token is None:
            return JSONResponse({"error": error}, status_code=429 if error == THROTTLED else 401)
        name = str(fields.get("username", "")).strip()
        response = JSONResponse(
            {
                "user": name,
                "administrator": name in self.site.settings.administrators,
                "expires_in": self.site.settings.session_lifetime_seconds,
            }
        )
        self.site.set_session(request, response, token)
        return response

    async def _fields(self, request: Request) -> Mapping[str, Any] | None:
        """The fields of a JSON or form request (a form needs the sign-in CSRF value)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            if foreign_origin(request):
                return None
            try:
                data = json.loads(await request.body())
            except (ValueError, UnicodeDecodeError):
                return None
            return data if isinstance(data, dict) else None
        if kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.form()
            return form if self.site.form_allowed(request, form, None) else None
        return None

    # --- the archive tree and folders --------------------------------------------------

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/archive", status_code=303)

    async def tree(self, request: Request) -> Response:
        visitor = await off(self.site.visitor, request)
        if visitor is None:
            return self.site.sign_in_first(request)
        users = await off(self.site.users, visitor)
        wanted = request.query_params.get("user") or (
            visitor.name if visitor.name in users or not users else users[0]
        )
        if not visitor.may_see(wanted):
            return self.site.not_found(request, visitor)

        def read() -> Any:
            with self.site.browse() as browse:
                return browse.tree(wanted)

        mailboxes = await off(read)
        if request.query_params.get("user") and not mailboxes:
            return self.site.not_found(request, visitor)
        return self.site.page(
            request,
            "tree.html",
            visitor,
            title="Archive",
            user=wanted,
            users=users,
            mailboxes=mailboxes,
            profile=self.site.profile_for(wanted),
        )

    async def folder(self, request: Request) -> Response:
        visitor = await off(self.site.visitor, request)
        if visitor is None:
            return self.site.sign_in_first(request)
        folder_id = _int(request.path_params["folder_id"], -1)
        older = Cursor.decode(request.query_params.get("older", ""))
        newer = Cursor.decode(request.query_params.get("newer", ""))

        def read() -> Any:
            with self.site.browse() as browse:
                info = browse.folder(folder_id)
                if info is None or not visitor.may_see(info.user):
                    return None
                return info, browse.page(
                    folder_id, older_than=older, newer_than=newer, limit=PAGE_SIZE
                )

        found = await off(read)
        if found is None:
            return self.site.not_found(request, visitor)
        info, page = found
        return self.site.page(
            request, "folder.html", visitor, title=info.path, folder=info, page=page
        )

    # --- search ------------------------------------------------------------------------

    def _search(
        self, visitor: Visitor, text: str, user: str | None, limit: int, offset: int
    ) -> Any:
        from imapsync_decl.store.search.database import open_search
        from imapsync_decl.store.search.find import Scope, find
        from imapsync_decl.store.search.query import parse_query

        query = parse_query(text)
        scope_user = user if visitor.administrator else visitor.name
        with open_search(self.site.root) as search:
            return find(search, query, Scope(user=scope_user), limit=limit, offset=offset)

    async def search(self, request: Request) -> Response:
        visitor = await off(self.site.visitor, request)
        if visitor is None:
            return self.site.sign_in_first(request)
        text = request.query_params.get("q", "").strip()
        user = request.query_params.get("user") or None
        offset = _int(request.query_params.get("offset"))
        hits: list[Any] = []
        error = ""
        if text:
            try:
                hits = await off(self._search, visitor, text, user, SEARCH_PAGE + 1, offset)
            except ImapsyncError as exc:
                error = str(exc)
        return self.site.page(
            request,
            "search.html",
            visitor,
            400 if error else 200,
            title="Search",
            q=text,
            user=user if visitor.administrator else None,
            users=await off(self.site.users, visitor) if visitor.administrator else [],
            hits=hits[:SEARCH_PAGE],
            more=len(hits) > SEARCH_PAGE,
            offset=offset,
            page_size=SEARCH_PAGE,
            error=error,
        )

    async def api_search(self, request: Request) -> Response:
        visitor = await off(self.site.visitor, request)
        if visitor is None:
            return self.site.sign_in_first(request)
        text = request.query_params.get("q", "").strip()
        limit = _int(request.query_params.get("limit"), 50)
        if not text or not 1 <= limit <= 10_000:
            return JSONResponse({"error": "give q= (and limit= from 1 to 10000)"}, status_code=400)
        try:
            hits = await off(
                self._search,
                visitor,
                text,
                request.query_params.get("user") or None,
                limit,
                _int(request.query_params.get("offset")),
            )
        except ImapsyncError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse([hit.to_json() for hit in hits])

    # --- messages ----------------------------------------------------------------------

    async def _message(self, request: Request) -> _Message | Response:
        """The message the URL names, with its bytes, or the answer to send instead: to
        the sign-in page without a session, the one 404 when it is missing or not the
        visitor's."""
        visitor = await off(self.site.visitor, request)
        if visitor is None:
            return self.site.sign_in_first(request)
        found = await off(self.site.placement, visitor, _int(request.path_params["message_id"]))
        if found is None:
            return self.site.not_found(request, visitor)
        return _Message(visitor, *found)

    async def message(self, request: Request) -> Response:
        found = await self._message(request)
        if isinstance(found, Response):
            return found
        visitor, item, raw = found.visitor, found.item, found.raw
        from imapsync_decl.store.search.extract import readable

        shown = readable(raw)
        remote = request.query_params.get("remote") == "1"
        parts = mail.parts(raw, remote=remote)
        wanted = {h.lower() for h in SHOWN_HEADERS}
        headers = [(n, v) for n, v in shown.headers if n.lower() in wanted]
        subject = next((v for n, v in shown.headers if n.lower() == "subject"), "")
        await off(
            self.site.record, request, user=visitor.name, action="view", target=f"message {item.id}"
        )
        return self.site.page(
            request,
            "message.html",
            visitor,
            title=subject or "(no subject)",
            item=item,
            headers=headers,
            subject=subject,
            parts=parts,
            remote=remote,
            text=shown.text,
            profile=self.site.profile_for(item.user),
        )

    async def message_body(self, request: Request) -> Response:
        """The body alone, for the sandboxed frame of the message page: its own policy
        forbids script and every load but inline images (and remote ones when asked)."""
        found = await self._message(request)
        if isinstance(found, Response):
            return found
        visitor, raw = found.visitor, found.raw
        remote = request.query_params.get("remote") == "1"
        parts = mail.parts(raw, remote=remote)
        text = None
        if parts.html is None:
            from imapsync_decl.store.search.extract import readable

            text = readable(raw).text
        response = self.site.page(request, "body.html", visitor, html=parts.html, text=text)
        images = "data: http: https:" if remote else "data:"
        response.headers["content-security-policy"] = (
            f"default-src 'none'; img-src {images}; style-src 'unsafe-inline';"
            " frame-ancestors 'self'; form-action 'none'; base-uri 'none';"
            " sandbox allow-popups allow-popups-to-escape-sandbox"
        )
        response.headers["x-frame-options"] = "SAMEORIGIN"
        return response

    async def raw(self, request: Request) -> Response:
        found = await self._message(request)
        if isinstance(found, Response):
            return found
        visitor, item, raw = found.visitor, found.item, found.raw
        await off(
            self.site.record,
            request,
            user=visitor.name,
            action="download",
            target=f"message {item.id}",
        )
        return Response(
            raw,
            media_type="message/rfc822",
            headers={"content-disposition": f'attachment; filename="message-{item.id}.eml"'},
        )

    async def attachment(self, request: Request) -> Response:
        found = await self._message(request)
        if isinstance(found, Response):
            return found
        visitor, item, raw = found.visitor, found.item, found.raw
        number = _int(request.path_params["number"])
        got = mail.attachment(raw, number)
        if got is None:
            return self.site.not_found(request, visitor)
        info, data = got
        await off(
            self.site.record,
            request,
            user=visitor.name,
            action="download",
            target=f"message {item.id} attachment {number}",
            detail={"attachment": info.name},
        )
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"content-disposition": content_disposition(info.name)},
        )

    async def api_message(self, request: Request) -> Response:
        found = await self._message(request)
        if isinstance(found, Response):
            return found
        visitor, item, raw = found.visitor, found.item, found.raw
        from imapsync_decl.store.restoring import show_document
        from imapsync_decl.store.search.extract import readable

        await off(
            self.site.record, request, user=visitor.name, action="view", target=f"message {item.id}"
        )
        return JSONResponse(show_document(item.id, item, readable(raw)))

    # --- restore -----------------------------------------------------------------------

    def _selection(self, visitor: Visitor, params: Mapping[str, Any]) -> dict[str, Any] | str:
        """What a restore form or link names, checked against what the visitor may see:
        the request's fields, or the error to show."""
        ids = [_int(i) for i in str(params.get("ids", "")).split(",") if i.strip()]
        folder_id = _int(params.get("folder"), -1)
        query = str(params.get("q", "")).strip()
        if ids:
            owners = set()
            for placement_id in ids:
                found = self.site.placement(visitor, placement_id)
                if found is None:
                    return "not found"
                owners.add(found[0].user)
            if len(owners) != 1:
                return "restore the messages of one user at a time"
            return {"ids": tuple(ids), "user": owners.pop(), "what": _messages(len(ids))}
        if folder_id >= 0:
            with self.site.browse() as browse:
                info = browse.folder(folder_id)
                if info is None or not visitor.may_see(info.user):
                    return "not found"
                # By placement: that mailbox's folder only, not a folder of the same path
                # in another mailbox of the user.
                placements = tuple(browse.placement_ids(folder_id))
            if not placements:
                return "this folder holds no messages to restore"
            return {
                "ids": placements,
                "folder": info.path,
                "user": info.user,
                "what": f"the folder {info.path} ({_messages(info.count)}) and its subfolders",
                "folder_id": folder_id,
            }
        if query:
            user = str(params.get("user") or visitor.name)
            if not visitor.may_see(user):
                return "not found"
            return {"query": query, "user": user, "what": f"the messages found by {query!r}"}
        return "say what to restore"

    async def restore_page(self, request: Request) -> Response:
        visitor = await off(self.site.visitor, request)
        if visitor is None:
            return self.site.sign_in_first(request)
        if request.method == "GET":
            params: Mapping[str, Any] = request.query_params
        else:
            params = await request.form()
            if not self.site.form_allowed(request, params, visitor):
                return self.site.problem(
                    request, visitor, "The form has expired: reload the page.", 403
                )
        selection = await off(self._selection, visitor, params)
        if selection == "not found":
            return self.site.not_found(request, visitor)
        if isinstance(selection, str):
            return self.site.problem(request, visitor, selection)
        target_user = str(params.get("to_user") or selection["user"])
        if not visitor.administrator:
            target_user = visitor.name
        profile = self.site.profile_for(target_user)
        to_folder = str(params.get("to_folder", "")).strip() or None
        if request.method == "GET" or params.get("confirm") != "1":
            return self.site.page(
                request,
                "restore.html",
                visitor,
                title="Restore",
                selection=selection,
                params=params,
                target_user=target_user,
                users=await off(self.site.users, visitor) if visitor.administrator else [],
                profile=profile,
                to_folder=to_folder or "",
            )
        if profile is None:
            return self.site.problem(
                request, visitor, f"No profile reaches the mailbox of {target_user}.", 409
            )
        result = await off(
            self._restore, visitor, selection, profile, target_user, to_folder, request
        )
        if isinstance(result, str):
            return self.site.problem(request, visitor, result)
        return self.site.page(
            request,
            "restored.html",
            visitor,
            title="Restored",
            result=result.to_json(),
            profile=profile,
            target_user=target_user,
        )

    def _restore(
        self,
        visitor: Visitor,
        selection: Mapping[str, Any],
        profile: str,
        target_user: str,
        to_folder: str | None,
        request: Request,
    ) -> Any:
        from imapsync_decl.run.restore import RestoreRequest, restore

        ids = tuple(selection.get("ids", ()))
        wanted = RestoreRequest(
            profile=profile,
            ids=ids,
            user=None if ids else str(selection["user"]),
            query=None if ids else selection.get("query"),
            to_folder=to_folder,
            to_user=None if target_user == selection["user"] else target_user,
        )
        try:
            result = restore(self.site.config, wanted)
        except ImapsyncError as exc:
            return str(exc)
        totals = result.to_json()["totals"]
        self.site.record(
            request,
            user=visitor.name,
            action="restore",
            target=_restore_target(selection),
            detail={
                "profile": profile,
                "to_user": target_user,
                "folder": selection.get("folder"),
                "query": wanted.query,
                "to_folder": to_folder,
                "run_id": result.run_id,
                **totals,
            },
        )
        return result

    # --- the account -------------------------------------------------------------------

    async def password(self, request: Request) -> Response:
        visitor = await off(self.site.visitor, request)
        if visitor is None:
            return self.site.sign_in_first(request)
        if request.method == "GET":
            return self.site.page(request, "password.html", visitor, title="Password", error="")
        form = await request.form()
        if not self.site.form_allowed(request, form, visitor):
            return self.site.problem(
                request, visitor, "The form has expired: reload the page.", 403
            )
        current = str(form.get("current", ""))
        new = str(form.get("new", ""))
        error = ""
        if new != str(form.get("repeat", "")):
            error = "The new passwords differ."
        elif not await off(self.site.accounts.verify_password, visitor.name, current):
            error = "The current password is wrong."
        else:
            try:
                await off(self.site.accounts.set_password, visitor.name, new)
            except (ImapsyncError, ValueError) as exc:
                error = str(exc)
        if error:
            return self.site.page(
                request, "password.html", visitor, 400, title="Password", error=error
            )
        await off(self.site.record, request, user=visitor.name, action="password_changed")
        # Every session ended with the change; this browser gets a new one.
        token = await off(
            self.site.accounts.create_session,
            visitor.name,
            self.site.settings.session_lifetime_seconds,
            self.site.address(request),
        )
        response = RedirectResponse("/archive?changed=1", status_code=303)
        self.site.set_session(request, response, token)
        return response

    # --- administrators ----------------------------------------------------------------

    async def _administrator(self, request: Request) -> Visitor | Response:
        visitor = await off(self.site.visitor, request)
        if visitor is None:
            return self.site.sign_in_first(request)
        if not visitor.administrator:
            return self.site.not_found(request, visitor)
        return visitor

    async def runs(self, request: Request) -> Response:
        visitor = await self._administrator(request)
        if isinstance(visitor, Response):
            return visitor
        from imapsync_decl.store import Archive

        def read() -> list[dict[str, Any]]:
            with Archive.open(self.site.root, read_only=True) as archive:
                return archive.index.list_runs()

        return self.site.page(request, "runs.html", visitor, title="Runs", runs=await off(read))

    async def run(self, request: Request) -> Response:
        visitor = await self._administrator(request)
        if isinstance(visitor, Response):
            return visitor
        from imapsync_decl.store import Archive
        from imapsync_decl.store.runs import find_run, protocol_document

        run_id = str(request.path_params["run_id"])

        def read() -> dict[str, Any] | None:
            with Archive.open(self.site.root, read_only=True) as archive:
                try:
                    return protocol_document(find_run(archive.index, run_id))
                except ImapsyncError:
                    return None

        protocol = await off(read)
        if protocol is None:
            return self.site.not_found(request, visitor)
        return self.site.page(
            request,
            "run.html",
            visitor,
            title=f"Run {run_id[:8]}",
            protocol=protocol,
            document=json.dumps(protocol, indent=2, ensure_ascii=False),
        )

    async def stats(self, request: Request) -> Response:
        visitor = await self._administrator(request)
        if isinstance(visitor, Response):
            return visitor
        from imapsync_decl.store import Archive
        from imapsync_decl.store.stats import gather_stats

        def read() -> dict[str, Any]:
            with Archive.open(self.site.root, read_only=True) as archive:
                return gather_stats(archive.index, self.site.root).to_json()

        return self.site.page(
            request, "stats.html", visitor, title="Statistics", stats=await off(read)
        )


def _messages(count: int) -> str:
    return f"{count} message" if count == 1 else f"{count} messages"


def _restore_target(selection: Mapping[str, Any]) -> str:
    """The access log's target of a restore: its messages, folder or query."""
    if selection.get("folder") is not None:
        return f"folder {selection['user']}/{selection['folder']}"
    if selection.get("ids"):
        return "message " + ", ".join(str(i) for i in selection["ids"])
    return f"search {selection['user']}: {selection.get('query', '')}"


def content_disposition(name: str) -> str:
    """``attachment`` with the file name twice: ASCII (RFC 6266 ``filename``, anything
    else as ``_``) and UTF-8 (RFC 5987 ``filename*``); the name is already stripped of
    quotes, slashes and control characters (``message.file_name``)."""
    from urllib.parse import quote

    ascii_name = "".join(c if 32 <= ord(c) < 127 else "_" for c in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
