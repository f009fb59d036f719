"""The web application over HTTP (Starlette's TestClient) against an archive that a real
apply made from the test Dovecot: sign-in, sessions, CSRF, throttling, what a user may
see, the headers of every response, the pages, the API, downloads and restore."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from imapsync_decl.store.access_log import read_access_log
from imapsync_decl.store.browse import Browse
from imapsync_decl.store.search.database import open_search
from imapsync_decl.store.search.find import Scope, find
from imapsync_decl.store.search.query import parse_query
from imapsync_decl.web.security import CSP, MAX_BODY

from web_bed import (
    ATTACHMENT,
    PASSWORDS,
    SCRIPT_MARKER,
    WebArchive,
    form_value,
    sign_in,
    web_archive,
)

pytestmark = pytest.mark.dovecot
__all__ = ["web_archive"]  # the fixture, used by name


@pytest.fixture
def web(web_archive: WebArchive) -> WebArchive:
    return web_archive


def signed_in(web: WebArchive, role: str, **kwargs: Any) -> TestClient:
    client = web.client(**kwargs)
    sign_in(client, web.names[role], PASSWORDS[role])
    return client


def placement_ids(web: WebArchive, user: str, folder: str | None = None) -> list[int]:
    with open_search(web.archive) as search:
        hits = find(search, parse_query("smaller:1G"), Scope(user=user, folder=folder), limit=1000)
    return [h.id for h in hits]


def message_id_of(web: WebArchive, user: str, query: str) -> int:
    with open_search(web.archive) as search:
        hits = find(search, parse_query(query), Scope(user=user))
    assert len(hits) == 1, hits
    return hits[0].id


# --- signed out ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/archive", "/search?q=report", "/messages/1", "/folders/1", "/admin/runs"]
)
def test_a_page_without_a_session_redirects_to_the_sign_in_page(web: WebArchive, path: str) -> None:
    answer = web.client().get(path)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/sign-in?next=")


@pytest.mark.parametrize("path", ["/api/search?q=report", "/api/messages/1", "/api/messages/1/raw"])
def test_an_api_request_without_a_session_is_401(web: WebArchive, path: str) -> None:
    answer = web.client().get(path)
    assert answer.status_code == 401
    assert answer.json() == {"error": "sign in first"}


# --- sign-in -------------------------------------------------------------------------------


def test_sign_in_sets_an_http_only_strict_cookie_that_expires(web: WebArchive) -> None:
    client = web.client()
    page = client.get("/sign-in")
    answer = client.post(
        "/sign-in",
        data={
            "username": web.names["alice"],
            "password": PASSWORDS["alice"],
            "csrf": form_value(page.text, "csrf"),
        },
    )
    assert answer.status_code == 303
    cookie = next(c for c in answer.headers.get_list("set-cookie") if "imapsync_session=" in c)
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Max-Age=28800" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback
    assert client.get("/archive").status_code == 200
    assert client.get("/sign-in?next=/search").headers["location"] == "/search"


def test_under_tls_the_cookie_is_secure_and_host_only(web: WebArchive, tmp_path: Any) -> None:
    settings = web.settings(certificate=tmp_path / "c.pem", key=tmp_path / "k.pem")
    client = web.client(settings=settings, base_url="https://127.0.0.1:8462")
    answer = client.post(
        "/api/session", json={"username": web.names["bob"], "password": PASSWORDS["bob"]}
    )
    assert answer.status_code == 200
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("__Host-imapsync_session=")
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert answer.headers["strict-transport-security"].startswith("max-age=")


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(web: WebArchive) -> None:
    def attempt(name: str) -> tuple[int, str, Any]:
        client = web.client()
        csrf = form_value(client.get("/sign-in").text, "csrf")
        answer = client.post("/sign-in", data={"username": name, "password": "wrong", "csrf": csrf})
        api = web.client().post("/api/session", json={"username": name, "password": "wrong"})
        text = answer.text.replace(csrf, "CSRF").replace(name, "NAME")
        return answer.status_code, text, (api.status_code, api.json())

    known = attempt(web.names["bob"])
    unknown = attempt("nobody-" + web.names["bob"])
    assert known == unknown
    assert known[0] == 401
    assert known[2] == (401, {"error": "Wrong user name or password."})


def test_a_sign_in_form_without_its_csrf_value_is_refused(web: WebArchive) -> None:
    client = web.client()
    client.get("/sign-in")
    answer = client.post(
        "/sign-in", data={"username": web.names["alice"], "password": PASSWORDS["alice"]}
    )
    assert answer.status_code == 403
    assert "imapsync_session" not in answer.headers.get("set-cookie", "")


def test_sign_in_is_throttled_after_five_failures_per_name(web: WebArchive) -> None:
    name = web.names["bob"]
    client = web.client()
    with web.accounts() as accounts:
        accounts.set_password(name, PASSWORDS["bob"])  # forgets earlier failures of the name
    for _ in range(5):
        answer = client.post(
            "/api/session",
            json={"username": name, "password": "wrong"},
            headers={"x-test": "throttle"},
        )
        assert answer.status_code == 401
    # Now even the right password is refused, for this name, from anywhere.
    answer = client.post("/api/session", json={"username": name, "password": PASSWORDS["bob"]})
    assert answer.status_code == 429
    assert "Too many failed sign-ins" in answer.json()["error"]
    with web.accounts() as accounts:
        accounts.set_password(name, PASSWORDS["bob"])


def test_sign_in_is_throttled_per_address(web: WebArchive) -> None:
    settings = web.settings(behind_proxy=True, trusted_proxies=("198.51.0.0/16",))
    client = web.client(settings=settings)
    headers = {"x-forwarded-for": "192.0.2.77"}
    for i in range(5):
        answer = client.post(
            "/api/session", json={"username": f"guess{i}", "password": "x"}, headers=headers
        )
        assert answer.status_code == 401
    blocked = client.post(
        "/api/session",
        json={"username": web.names["alice"], "password": PASSWORDS["alice"]},
        headers=headers,
    )
    assert blocked.status_code == 429
    other = client.post(
        "/api/session",
        json={"username": web.names["alice"], "password": PASSWORDS["alice"]},
        headers={"x-forwarded-for": "192.0.2.78"},
    )
    assert other.status_code == 200


def test_a_session_expires_on_the_server(web: WebArchive) -> None:
    now = [1_000_000_000.0]
    client = web.client(settings=web.settings(session_lifetime_seconds=60), clock=lambda: now[0])
    answer = client.post(
        "/api/session", json={"username": web.names["alice"], "password": PASSWORDS["alice"]}
    )
    assert answer.status_code == 200
    assert client.get("/archive").status_code == 200
    now[0] += 61
    assert client.get("/archive").status_code == 303
    assert client.get("/api/search?q=report").status_code == 401


def test_delete_api_session_signs_out_without_a_csrf_token(web: WebArchive) -> None:
    client = web.client()
    client.post("/api/session", json={"username": web.names["bob"], "password": PASSWORDS["bob"]})
    assert client.get("/api/search?q=bob").status_code == 200
    assert client.delete("/api/session").status_code == 204
    assert client.get("/api/search?q=bob").status_code == 401


def test_state_changing_forms_need_the_session_csrf_token(web: WebArchive) -> None:
    client = signed_in(web, "alice")
    item = placement_ids(web, web.names["alice"])[0]
    for path, data in [
        ("/sign-out", {}),
        ("/restore", {"ids": str(item), "confirm": "1"}),
        ("/password", {"current": PASSWORDS["alice"], "new": "x" * 12, "repeat": "x" * 12}),
    ]:
        assert client.post(path, data=data).status_code == 403
        assert client.post(path, data={**data, "csrf": "0" * 64}).status_code == 403
    # Still signed in: nothing of the above happened.
    assert client.get("/archive").status_code == 200


def test_a_form_from_another_origin_is_refused_even_with_the_token(web: WebArchive) -> None:
    client = signed_in(web, "alice")
    csrf = form_value(client.get("/password").text, "csrf")
    answer = client.post("/sign-out", data={"csrf": csrf}, headers={"origin": "https://evil.test"})
    assert answer.status_code == 403
    assert client.get("/archive").status_code == 200
    answer = client.post("/sign-out", data={"csrf": csrf})
    assert answer.status_code == 303
    assert client.get("/archive").status_code == 303


# --- what every response carries --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/sign-in", 303),
        ("/archive", 200),
        ("/search?q=report", 200),
        ("/messages/999999", 404),
        ("/no/such/page", 404),
        ("/static/style.css", 200),
        ("/api/search?q=report", 200),
    ],
)
def test_every_response_has_a_strict_policy_and_no_sniffing(
    web: WebArchive, path: str, status: int
) -> None:
    answer = signed_in(web, "alice").get(path)
    assert answer.status_code == status
    policy = answer.headers["content-security-policy"]
    assert policy == CSP
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "script-src" not in policy
    assert "unsafe" not in policy
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "same-origin"
    if not path.startswith("/static/"):
        assert answer.headers["cache-control"] == "no-store"


def test_an_unknown_host_header_is_refused(web: WebArchive) -> None:
    answer = web.client().get("/sign-in", headers={"host": "rebound.evil.test:8462"})
    assert answer.status_code == 400
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert web.client().get("/sign-in", headers={"host": "localhost:8462"}).status_code == 200


def test_a_large_request_body_is_refused(web: WebArchive) -> None:
    client = web.client()
    answer = client.post(
        "/api/session",
        content=json.dumps({"username": "a", "password": "x" * (MAX_BODY + 1)}),
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 413
    assert answer.headers["content-security-policy"] == CSP

    def chunks() -> Any:
        for _ in range(MAX_BODY // 1024 + 2):
            yield b"x" * 1024

    streamed = client.post(
        "/api/session", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413


# --- what a user may see -------------------------------------------------------------------------


def test_another_users_message_folder_and_mailbox_answer_as_missing_ones(web: WebArchive) -> None:
    client = signed_in(web, "alice")
    bobs = placement_ids(web, web.names["bob"])[0]
    with Browse.open(web.archive) as browse:
        bob_folder = browse.tree(web.names["bob"])[0].folders[0].id
        folders = [f.id for m in browse.tree(web.names["alice"]) for f in m.folders]
    missing = 10_000_000
    for template in [
        "/messages/{}",
        "/messages/{}/raw",
        "/messages/{}/body",
        "/messages/{}/attachments/1",
        "/api/messages/{}",
        "/api/messages/{}/raw",
        "/restore?ids={}",
    ]:
        theirs = client.get(template.format(bobs))
        nothing = client.get(template.format(missing))
        assert theirs.status_code == nothing.status_code == 404, template
        assert theirs.content == nothing.content
    assert client.get(f"/folders/{bob_folder}").content == client.get(f"/folders/{missing}").content
    assert client.get(f"/folders/{bob_folder}").status_code == 404
    assert client.get(f"/restore?folder={bob_folder}").status_code == 404
    mailbox = client.get(f"/archive?user={web.names['bob']}")
    assert mailbox.status_code == 404
    assert mailbox.content == client.get("/archive?user=nobody-at-all").content
    assert folders  # alice's own folders are there
    assert all(client.get(f"/folders/{f}").status_code == 200 for f in folders)


def test_an_administrator_sees_every_archive(web: WebArchive) -> None:
    client = signed_in(web, "admin")
    bobs = placement_ids(web, web.names["bob"])[0]
    assert client.get(f"/messages/{bobs}").status_code == 200
    tree = client.get(f"/archive?user={web.names['bob']}")
    assert tree.status_code == 200
    assert web.names["alice"] in tree.text  # the list of users
    hits = client.get("/api/search?q=secret").json()
    assert {h["user"] for h in hits} == {web.names["bob"]}
    for path in ["/admin/runs", "/admin/stats"]:
        assert client.get(path).status_code == 200
    run = client.get("/admin/runs").text
    run_id = re.search(r'href="/admin/runs/([0-9a-f-]+)"', run)
    assert run_id is not None
    protocol = client.get(f"/admin/runs/{run_id.group(1)}")
    assert protocol.status_code == 200
    assert "totals" in protocol.text


def test_administrator_pages_answer_404_to_a_user(web: WebArchive) -> None:
    client = signed_in(web, "alice")
    for path in ["/admin/runs", "/admin/stats", "/admin/runs/x"]:
        assert client.get(path).status_code == 404


# --- the tree, folders and search ----------------------------------------------------------------


def test_the_tree_shows_the_mailbox_then_its_folders_with_counts(web: WebArchive) -> None:
    page = signed_in(web, "alice").get("/archive").text
    alice = web.names["alice"]
    assert f"{alice}@example.test" in page
    assert re.search(r">INBOX</a>\s*<span class=\"count\">61</span>", page)
    assert re.search(r">Übersicht</a>\s*<span class=\"count\">1</span>", page)
    assert "Projekte" in page
    assert "profile <strong>staff</strong>" in page


def test_a_folder_is_listed_newest_first_a_page_at_a_time(web: WebArchive) -> None:
    client = signed_in(web, "alice")
    with Browse.open(web.archive) as browse:
        inbox = next(f for f in browse.tree(web.names["alice"])[0].folders if f.path == "INBOX")
    seen: list[str] = []
    url = f"/folders/{inbox.id}"
    pages = 0
    while url:
        page = client.get(url).text
        pages += 1
        seen += re.findall(r'<td class="date">([^<]*)</td>', page)
        older = re.search(r'href="(/folders/\d+\?older=[^"]+)"', page)
        url = older.group(1).replace("&amp;", "&") if older else ""
    assert pages == 2
    assert len(seen) == 61
    assert seen == sorted(seen, reverse=True)
    # And back: the page before the last is the first page again.
    last = client.get(f"/folders/{inbox.id}").text
    older = re.search(r'href="(/folders/\d+\?older=[^"]+)"', last)
    assert older is not None
    second = client.get(older.group(1)).text
    newer = re.search(r'href="(/folders/\d+\?newer=[^"]+)"', second)
    assert newer is not None
    assert (
        re.findall(r'<td class="date">([^<]*)</td>', client.get(newer.group(1)).text) == seen[:50]
    )


def test_a_folder_page_reads_by_the_index_without_sorting(web: WebArchive) -> None:
    with Browse.open(web.archive) as browse:
        for edge in (None, browse.page(1, limit=5).older):
            for newer in (False, True):
                sql, params = browse.page_query(1, edge, newer=newer, limit=51)
                plan = " | ".join(browse.query_plan(sql, params))
                assert "placements_folder_newest" in plan, plan
                assert "TEMP B-TREE" not in plan, plan
                if edge is not None:  # a later page starts in the index, not at the folder's top
                    assert "(folder_id=? AND <expr>" in plan, plan


def test_search_gives_what_the_command_line_gives(web: WebArchive, capsys: Any) -> None:
    client = signed_in(web, "alice")
    for query in ["report", "from:mallory", "Übersicht", "has:attachment", "report OR secret"]:
        api = client.get("/api/search", params={"q": query, "limit": 100}).json()
        capsys.readouterr()
        code = web.run(
            "archive", "search", "--format", "json", "--user", web.names["alice"],
            "--limit", "100", query,
        )  # fmt: skip
        assert code == 0
        assert api == json.loads(capsys.readouterr().out), query
        assert all(h["user"] == web.names["alice"] for h in api)
    assert client.get("/api/search", params={"q": "secret"}).json() == []
    page = client.get("/search", params={"q": "report 07"}).text
    assert "Report 07" in page
    bad = client.get("/api/search", params={"q": "after:yesterday"})
    assert bad.status_code == 400
    assert "after" in bad.json()["error"]


# --- messages ------------------------------------------------------------------------------------


def test_an_html_message_is_shown_sanitized_in_a_sandboxed_frame(web: WebArchive) -> None:
    client = signed_in(web, "alice")
    ident = message_id_of(web, web.names["alice"], "from:mallory")
    page = client.get(f"/messages/{ident}")
    assert page.status_code == 200
    assert 'sandbox=""' in page.text
    assert f'src="/messages/{ident}/body"' in page.text
    assert "Show remote content" in page.text
    body = client.get(f"/messages/{ident}/body")
    policy = body.headers["content-security-policy"]
    assert "sandbox" in policy
    assert "allow-scripts" not in policy
    assert body.headers["x-frame-options"] == "SAMEORIGIN"
    assert page.headers["x-frame-options"] == "DENY"
    assert "img-src data:;" in policy
    assert "frame-ancestors 'self'" in policy
    for bad in ["<script", SCRIPT_MARKER, "onerror", "<iframe", "<form", "javascript:"]:
        assert bad not in body.text
    assert "<h1>Newsletter</h1>" in body.text
    assert f"127.0.0.1:{web.pixel.port}" not in body.text  # image and link blocked
    shown = client.get(f"/messages/{ident}/body?remote=1")
    assert f'src="http://127.0.0.1:{web.pixel.port}/pixel.gif?n=1"' in shown.text
    assert 'target="_blank"' in shown.text
    assert "noopener" in shown.text
    assert "img-src data: http: https:" in shown.headers["content-security-policy"]
    assert SCRIPT_MARKER not in shown.text


def test_the_eml_download_is_the_archived_bytes(web: WebArchive) -> None:
    client = signed_in(web, "alice")
    ident = message_id_of(web, web.names["alice"], "from:mallory")
    raw = client.get(f"/messages/{ident}/raw")
    assert raw.status_code == 200
    assert raw.headers["content-disposition"] == f'attachment; filename="message-{ident}.eml"'
    api = client.get(f"/api/messages/{ident}/raw")
    assert api.content == raw.content
    with open_search(web.archive) as search:
        hit = find(search, parse_query("from:mallory"), Scope(user=web.names["alice"]))[0]
    assert hashlib.sha256(raw.content).hexdigest() == hit.sha256
    assert b"Quarterly newsletter" in raw.content


def test_an_attachment_downloads_with_a_safe_name_and_type(web: WebArchive) -> None:
    client = signed_in(web, "alice")
    ident = message_id_of(web, web.names["alice"], "has:attachment")
    page = client.get(f"/messages/{ident}").text
    assert f"/messages/{ident}/attachments/1" in page
    got = client.get(f"/messages/{ident}/attachments/1")
    assert got.status_code == 200
    assert got.content == ATTACHMENT
    assert got.headers["content-type"] == "application/octet-stream"
    disposition = got.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="')
    name = disposition.split('filename="')[1].split('"')[0]
    assert "/" not in name
    assert "\\" not in name
    assert not name.startswith(".")
    assert client.get(f"/messages/{ident}/attachments/2").status_code == 404


def test_api_message_is_the_document_of_archive_show(web: WebArchive, capsys: Any) -> None:
    client = signed_in(web, "alice")
    ident = message_id_of(web, web.names["alice"], "has:attachment")
    api = client.get(f"/api/messages/{ident}").json()
    capsys.readouterr()
    assert web.run("archive", "show", "--format", "json", str(ident)) == 0
    assert api == json.loads(capsys.readouterr().out)
    assert "Anbei die Übersicht." in api["text"]


# --- the access log ------------------------------------------------------------------------------


def test_every_access_is_in_the_access_log_with_the_address(web: WebArchive) -> None:
    alice = web.names["alice"]
    before = len(read_access_log(web.archive))
    client = web.client()
    client.post("/api/session", json={"username": "mistyped-" + alice, "password": "x"})
    client.post("/api/session", json={"username": alice, "password": PASSWORDS["alice"]})
    ident = message_id_of(web, alice, "from:mallory")
    client.get(f"/messages/{ident}")
    client.get(f"/messages/{ident}/raw")
    client.get(f"/api/messages/{ident}")
    client.delete("/api/session")
    entries = read_access_log(web.archive)[before:]
    got = [(e.action, e.user, e.target) for e in entries]
    assert got == [
        ("sign_in_failed", "mistyped-" + alice, None),
        ("sign_in", alice, None),
        ("view", alice, f"message {ident}"),
        ("download", alice, f"message {ident}"),
        ("view", alice, f"message {ident}"),
        ("sign_out", alice, None),
    ]
    assert {e.address for e in entries} == {f"198.51.{web.clients // 250}.{web.clients % 250 + 1}"}


# --- restore and the account ---------------------------------------------------------------------


def test_a_message_is_restored_after_a_confirmation(web: WebArchive) -> None:
    alice = web.names["alice"]
    client = signed_in(web, "alice")
    ident = message_id_of(web, alice, "has:attachment")
    confirm = client.get(f"/restore?ids={ident}")
    assert confirm.status_code == 200
    assert "profile <strong>staff</strong>" in confirm.text
    folder = "Restored-web"
    answer = client.post(
        "/restore",
        data={
            "ids": str(ident),
            "confirm": "1",
            "to_folder": folder,
            "csrf": form_value(confirm.text, "csrf"),
        },
    )
    assert answer.status_code == 200, answer.text
    assert "restored 1" in answer.text
    with web.server.client(alice) as imap:
        imap.select_folder(folder, readonly=True)
        uids = imap.search("ALL")
        bodies = [d[b"BODY[]"] for d in imap.fetch(uids, ["BODY.PEEK[]"]).values()]
    assert bodies == [web.sent["attachment"]]
    entry = read_access_log(web.archive, user=alice)[-1]
    assert entry.action == "restore"
    assert entry.target == f"message {ident}"
    assert entry.detail is not None
    assert entry.detail["restored"] == 1


def test_an_administrator_restores_a_users_mail_into_another_mailbox(web: WebArchive) -> None:
    bob, alice = web.names["bob"], web.names["alice"]
    client = signed_in(web, "admin")
    ident = message_id_of(web, bob, '"Bob private 1"')
    confirm = client.get(f"/restore?ids={ident}&to_user={alice}")
    assert f"to the mailbox of <strong>{alice}</strong>" in confirm.text
    answer = client.post(
        "/restore",
        data={
            "ids": str(ident),
            "confirm": "1",
            "to_user": alice,
            "to_folder": "From-bob",
            "csrf": form_value(confirm.text, "csrf"),
        },
    )
    assert answer.status_code == 200, answer.text
    with web.server.client(alice) as imap:
        imap.select_folder("From-bob", readonly=True)
        assert len(imap.search("ALL")) == 1
    # A user cannot send their mail elsewhere: to_user is ignored for them.
    user = signed_in(web, "bob")
    page = user.get(f"/restore?ids={ident}&to_user={alice}")
    assert f"to the mailbox of <strong>{bob}</strong>" in page.text


def test_changing_the_password_ends_the_other_sessions(web: WebArchive) -> None:
    bob = web.names["bob"]
    other = signed_in(web, "bob")
    client = signed_in(web, "bob")
    csrf = form_value(client.get("/password").text, "csrf")
    wrong = client.post(
        "/password", data={"csrf": csrf, "current": "nope", "new": "n" * 12, "repeat": "n" * 12}
    )
    assert wrong.status_code == 400
    new = "new-password-for-bob"
    answer = client.post(
        "/password", data={"csrf": csrf, "current": PASSWORDS["bob"], "new": new, "repeat": new}
    )
    assert answer.status_code == 303
    assert client.get("/archive").status_code == 200  # this browser got a new session
    assert other.get("/archive").status_code == 303
    try:
        assert (
            web.client().post("/api/session", json={"username": bob, "password": new}).status_code
            == 200
        )
    finally:
        with web.accounts() as accounts:
            accounts.set_password(bob, PASSWORDS["bob"])


def test_signing_out_of_every_session(web: WebArchive) -> None:
    first = signed_in(web, "alice")
    second = signed_in(web, "alice")
    csrf = form_value(first.get("/password").text, "csrf")
    answer = first.post("/sign-out", data={"csrf": csrf, "everywhere": "1"})
    assert answer.status_code == 303
    assert first.get("/archive").status_code == 303
    assert second.get("/archive").status_code == 303


# --- the command -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "message"),
    [("0.0.0.0:8462", "refusing plain HTTP on 0.0.0.0:8462"), ("8462", "give HOST:PORT")],
)
def test_serve_refuses_plain_http_off_loopback_and_bad_addresses(
    web: WebArchive, capsys: Any, listen: str, message: str
) -> None:
    capsys.readouterr()
    assert web.run("serve", "--listen", listen) == 10
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_behind_a_trusted_proxy_that_says_https_the_cookie_is_secure(web: WebArchive) -> None:
    settings = web.settings(behind_proxy=True, trusted_proxies=("198.51.0.0/16",))
    sign = {"username": web.names["bob"], "password": PASSWORDS["bob"]}
    proxied = web.client(settings=settings)
    answer = proxied.post("/api/session", json=sign, headers={"x-forwarded-proto": "https"})
    assert answer.status_code == 200
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("__Host-imapsync_session=")
    assert "Secure" in cookie
    # From a peer that is not a trusted proxy the header is not believed.
    direct = web.client(settings=web.settings(behind_proxy=True, trusted_proxies=("10.0.0.0/8",)))
    answer = direct.post("/api/session", json=sign, headers={"x-forwarded-proto": "https"})
    assert answer.status_code == 200
    assert "Secure" not in answer.headers["set-cookie"]


def test_serve_without_an_archive_says_so(web: WebArchive, tmp_path: Any, capsys: Any) -> None:
    config = tmp_path / "profiles.d"
    config.mkdir()
    (config / "web.yaml").write_text("kind: Web\n")
    capsys.readouterr()
    from imapsync_decl.cli.main import main

    assert main(["serve", "--config-dir", str(config), "--listen", "127.0.0.1:1"]) == 10
    assert "no archive at" in capsys.readouterr().err


def test_a_folder_and_search_results_are_restored(web: WebArchive) -> None:
    alice = web.names["alice"]
    client = signed_in(web, "alice")
    with Browse.open(web.archive) as browse:
        folder = next(f for f in browse.tree(alice)[0].folders if f.path == "Projekte/Übersicht")
    with Browse.open(web.archive) as browse:
        projekte = next(f for f in browse.tree(alice)[0].folders if f.path == "Projekte")
        assert browse.placement_ids(projekte.id) == browse.placement_ids(folder.id)  # subfolders
        assert len(browse.placement_ids(folder.id)) == 1
    confirm = client.get(f"/restore?folder={folder.id}")
    assert "the folder Projekte/Übersicht (1 message)" in confirm.text
    csrf = form_value(confirm.text, "csrf")
    answer = client.post(
        "/restore",
        data={"folder": str(folder.id), "confirm": "1", "to_folder": "Folder-back", "csrf": csrf},
    )
    assert answer.status_code == 200, answer.text
    answer = client.post(
        "/restore",
        data={"q": "from:mallory", "confirm": "1", "to_folder": "Query-back", "csrf": csrf},
    )
    assert answer.status_code == 200, answer.text
    with web.server.client(alice) as imap:
        for name, key in [("Folder-back", "attachment"), ("Query-back", "html")]:
            imap.select_folder(name, readonly=True)
            uids = imap.search("ALL")
            bodies = [d[b"BODY[]"] for d in imap.fetch(uids, ["BODY.PEEK[]"]).values()]
            assert bodies == [web.sent[key]], name
    # Again: nothing twice.
    again = client.post(
        "/restore",
        data={"q": "from:mallory", "confirm": "1", "to_folder": "Query-back", "csrf": csrf},
    )
    assert "restored 0, already there 1" in again.text
