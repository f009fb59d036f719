"""The pure rules of the web application: listen addresses, client addresses behind
proxies, HTML sanitizing, download names, page cursors, sign-in targets."""

from __future__ import annotations

import dataclasses
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from selectolax.lexbor import LexborHTMLParser as HTMLParser
from starlette.requests import Request

from imapsync_decl.config.web import DEFAULT_WEB
from imapsync_decl.errors import UsageError
from imapsync_decl.store.browse import Cursor
from imapsync_decl.web.message import ATTRIBUTES, TAGS, attachment, parts, sanitize
from imapsync_decl.web.routes import content_disposition
from imapsync_decl.web.security import ClientAddress, csrf_token, foreign_origin
from imapsync_decl.web.settings import Served, parse_listen, served
from imapsync_decl.web.site import local_target


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:8462", "127.0.0.1", 8462),
        ("[::1]:9000", "::1", 9000),
        ("0.0.0.0:1", "0.0.0.0", 1),
    ],
)
def test_listen_addresses(text: str, host: str, port: int) -> None:
    assert parse_listen(text) == (host, port)


@pytest.mark.parametrize("text", ["8462", "host:", ":8462", "h:0", "h:65536", "h:x", "[::1]"])
def test_bad_listen_addresses_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="HOST:PORT"):
        parse_listen(text)


def test_the_defaults_are_loopback_8462_without_a_web_document() -> None:
    settings = served(None)
    assert (settings.host, settings.port, settings.tls) == ("127.0.0.1", 8462, False)
    assert settings.url == "http://127.0.0.1:8462"


@pytest.mark.parametrize("listen", ["0.0.0.0:8462", "192.0.2.1:8462", "[::]:8462", "mail:80"])
def test_plain_http_is_refused_off_loopback(listen: str) -> None:
    with pytest.raises(UsageError, match="refusing plain HTTP"):
        served(None, listen)


def test_tls_or_a_proxy_allows_any_address() -> None:
    tls = dataclasses.replace(
        DEFAULT_WEB,
        certificate=Path("/etc/ssl/c.pem"),
        key=Path("/etc/ssl/k.pem"),
        session_lifetime_seconds=600,
    )
    settings = served(tls, "0.0.0.0:443")
    assert settings.tls
    assert settings.url == "https://0.0.0.0:443"
    assert settings.session_lifetime_seconds == 600
    proxied = dataclasses.replace(DEFAULT_WEB, behind_proxy=True, trusted_proxies=("10.0.0.1",))
    assert served(proxied, "0.0.0.0:8080").behind_proxy


def test_the_host_header_is_checked_only_for_plain_http() -> None:
    hosts = Served().allowed_hosts()
    assert hosts is not None
    assert {"127.0.0.1:8462", "localhost:8462", "localhost"} <= hosts
    assert "evil.test" not in hosts
    assert Served(certificate=Path("c"), key=Path("k")).allowed_hosts() is None


def request(peer: str, headers: dict[str, str] | None = None) -> Request:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": (peer, 1234),
    }
    return Request(scope)


def test_x_forwarded_for_counts_only_from_a_trusted_proxy() -> None:
    address = ClientAddress(True, ["10.0.0.0/8"])
    forwarded = {"x-forwarded-for": "203.0.113.9, 198.51.100.4, 10.1.1.1"}
    assert address(request("10.0.0.5", forwarded)) == "198.51.100.4"
    assert address(request("192.0.2.8", forwarded)) == "192.0.2.8"  # not a trusted proxy
    assert address(request("10.0.0.5", {"x-forwarded-for": "junk"})) == "10.0.0.5"
    assert address(request("10.0.0.5")) == "10.0.0.5"
    assert ClientAddress(False, ["10.0.0.0/8"])(request("10.0.0.5", forwarded)) == "10.0.0.5"


def test_another_sites_origin_is_foreign() -> None:
    host = {"host": "archive.example:8462"}
    assert not foreign_origin(request("1.2.3.4", host))
    assert not foreign_origin(
        request("1.2.3.4", {**host, "origin": "https://archive.example:8462"})
    )
    assert foreign_origin(request("1.2.3.4", {**host, "origin": "https://evil.test"}))
    assert foreign_origin(request("1.2.3.4", {**host, "origin": "null"}))
    assert foreign_origin(request("1.2.3.4", {**host, "sec-fetch-site": "cross-site"}))


def test_the_csrf_token_is_not_the_session_token() -> None:
    assert csrf_token("abc") != "abc"
    assert csrf_token("abc") == csrf_token("abc") != csrf_token("abd")


HOSTILE = (
    "<script>alert(1)</script><style>body{}</style><p onclick='x()'>Hi "
    "<a href='javascript:alert(1)'>js</a> <a href='https://example.test/x'>web</a>"
    "<img src='https://tracker.test/p.gif'><img src='cid:logo'>"
    "<img src='data:image/png;base64,iVBORw0KGgo='><svg onload=alert(1)></svg>"
    "<iframe src='https://e.test'></iframe><object data='x'></object>"
    "<form action='https://e.test'><input name=p></form><base href='https://e.test/'>"
    "<meta http-equiv='refresh' content='0;url=https://e.test'></p>"
)


def test_sanitizing_drops_every_script_and_blocks_remote_content() -> None:
    cleaned, remote = sanitize(HOSTILE, remote=False)
    assert remote
    for bad in [
        "<script", "alert", "<style", "onclick", "javascript:", "tracker.test", "example.test",
        "cid:", "<svg", "onload", "<iframe", "<object", "<form", "<input", "<base", "<meta",
    ]:  # fmt: skip
        assert bad not in cleaned, bad
    assert "data:image/png;base64," in cleaned
    assert "<p>Hi" in cleaned


def test_remote_content_comes_back_when_asked_for() -> None:
    cleaned, _ = sanitize(HOSTILE, remote=True)
    assert 'src="https://tracker.test/p.gif"' in cleaned
    assert 'href="https://example.test/x"' in cleaned
    assert 'rel="noopener noreferrer nofollow"' in cleaned
    assert "javascript:" not in cleaned
    assert "<script" not in cleaned


def mail_with(name: str) -> bytes:
    msg = EmailMessage()
    msg["Subject"] = "x"
    msg.set_content("text")
    msg.add_alternative("<p>html <script>x</script></p>", subtype="html")
    msg.add_attachment(b"\x00data", maintype="application", subtype="x-bin", filename=name)
    return msg.as_bytes()


def test_parts_and_attachments_of_a_message() -> None:
    raw = mail_with("report.bin")
    found = parts(raw)
    assert found.html is not None
    assert "<script" not in found.html
    assert [(a.number, a.name, a.size) for a in found.attachments] == [(1, "report.bin", 5)]
    got = attachment(raw, 1)
    assert got is not None
    assert got[1] == b"\x00data"
    assert attachment(raw, 2) is None
    assert parts(b"\xff\xfe garbage \x00").attachments == ()


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("../../etc/passwd", "etc_passwd"),
        ('a"b\\c.pdf', "a_b_c.pdf"),
        ("\x1b[31mred\t.txt", "[31mred_.txt"),
        ("", "attachment"),
        ("...", "attachment"),
    ],
)
def test_attachment_names_are_made_safe(given: str, safe: str) -> None:
    got = attachment(mail_with(given), 1)
    assert got is not None
    assert got[0].name == safe


def test_content_disposition_of_a_non_ascii_name() -> None:
    assert content_disposition("Übersicht 2024.pdf") == (
        "attachment; filename=\"_bersicht 2024.pdf\"; filename*=UTF-8''%C3%9Cbersicht%202024.pdf"
    )


def test_page_cursors_round_trip_and_refuse_junk() -> None:
    cursor = Cursor("2024-10-07T10:00:00+00:00", 42)
    assert Cursor.decode(cursor.encode()) == cursor
    assert Cursor.decode("42.") == Cursor("", 42)
    for junk in ["", "x.1", "-1.a", "1" * 3 + "." + "k" * 65]:
        assert Cursor.decode(junk) is None


@pytest.mark.parametrize(
    ("given", "target"),
    [
        ("/messages/4", "/messages/4"),
        ("//evil.test/x", "/archive"),
        ("/\\evil.test", "/archive"),
        ("https://evil.test/", "/archive"),
        ("", "/archive"),
        (None, "/archive"),
    ],
)
def test_after_sign_in_only_a_path_of_this_site(given: str | None, target: str) -> None:
    assert local_target(given) == target


def test_a_bug_answers_500_with_the_headers_and_without_a_traceback() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from imapsync_decl.web.security import CSP, Guard

    async def broken(request: Request) -> Any:
        raise RuntimeError("secret detail of a bug")

    app = Guard(Starlette(routes=[Route("/", broken)]), allowed_hosts=None, tls=False)
    answer = TestClient(app).get("/")
    assert answer.status_code == 500
    assert answer.headers["content-security-policy"] == CSP
    assert "secret detail" not in answer.text
    assert "Traceback" not in answer.text


_PIECES = st.sampled_from(
    [
        "<script>alert(1)</script>", "<SCRIPT SRC=//e.test/x.js></SCRIPT>", "<img src=x onerror=alert(1)>",
        "<a href='javascript:alert(1)'>x</a>", "<a href=' JaVaScRiPt:alert(1)'>x</a>",
        "<svg/onload=alert(1)>", "<iframe srcdoc='<script>alert(1)</script>'>", "<style>*{}</style>",
        "<img src='data:image/svg+xml,<svg onload=alert(1)>'>", "<p style='background:url(//e.test)'>",
        "<form action=//e.test><button>go</button></form>", "<object data=x>", "<embed src=x>",
        "<math><mi xlink:href='javascript:alert(1)'>x</mi></math>", "<base href=//e.test/>",
        "<meta http-equiv=refresh content=0>", "<link rel=stylesheet href=//e.test/s.css>",
        "<!--<script>-->", "<img src=data:image/png;base64,AAAA>", "<a href=https://e.test/>y</a>",
        "<img src=https://e.test/p.gif onclick=alert(1)>", "<a href=x onmouseover=alert(1) onclick=alert(2)>z</a>", "<p>", "</p>", "<b>", "text", "&lt;script&gt;", "<", ">", "'", '"', "=",
        "<table><tr><td background=//e.test/i.gif>", "<body onload=alert(1)>", "<video poster=//e.test>",
    ]
)  # fmt: skip


@given(st.lists(_PIECES, max_size=12))
def test_no_combination_of_hostile_pieces_survives_sanitizing(pieces: list[str]) -> None:
    """Parsed as a browser parses it, what comes out has only allowed elements and
    attributes, no event handler, and no URL but data images (and, asked for, web links
    and images); hostile markup may remain only as inert, escaped text."""
    for remote in (False, True):
        cleaned, _ = sanitize("".join(pieces), remote=remote)
        body = HTMLParser(cleaned).body
        for node in body.traverse() if body is not None else []:
            if node.tag in ("-text", "body", "-comment"):
                assert node.tag != "-comment"
                continue
            assert node.tag in TAGS, (pieces, cleaned)
            for name, value in node.attributes.items():
                allowed = ATTRIBUTES["*"] | ATTRIBUTES.get(node.tag, set()) | {"rel", "target"}
                assert name in allowed, (pieces, cleaned)
                assert not name.startswith("on"), (pieces, cleaned)
                if name in ("src", "href"):
                    url = (value or "").strip().lower()
                    assert url.startswith(("data:image/png", "http", "mailto:")), cleaned
                    assert remote or url.startswith("data:image/png"), cleaned


def test_deeply_nested_or_huge_mail_is_read_within_bounds() -> None:
    nested = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    for _ in range(3000):
        nested += b"--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    found = parts(nested)
    assert found.html is None
    many = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"".join(
        b"--b\r\nContent-Type: application/x-bin\r\nContent-Disposition: attachment\r\n\r\nx\r\n"
        for _ in range(5000)
    )
    assert len(parts(many).attachments) <= 1000
