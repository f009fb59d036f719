"""The web application in a real browser: Debian's chromium, headless, driven by Playwright.

``imapsync-decl serve`` runs as its own process on 127.0.0.1 against the archive that a
real apply made from the test Dovecot (``web_bed``). The browser signs in, browses,
searches, opens an HTML message whose script would set a marker and whose remote image
points at a local server that counts its requests, downloads the ``.eml``, restores a
message to Dovecot, signs out, and tries another user's message by its URL.

Only Debian's browser is used (``/usr/bin/chromium``, never a downloaded one). Without it
the tests are skipped, except under CI (``CI`` set), where they fail. With
``WEB_SCREENSHOTS=DIR`` each main page is saved there as PNG (``scripts/screenshots``
writes ``docs/screenshots/``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from imapsync_decl.store.search.database import open_search
from imapsync_decl.store.search.find import Scope, find
from imapsync_decl.store.search.query import parse_query

from web_bed import PASSWORDS, SCRIPT_MARKER, WebArchive, serving, web_archive

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Frame, Page

pytestmark = [pytest.mark.dovecot, pytest.mark.browser]
__all__ = ["web_archive"]  # the fixture, used by name

CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = os.environ.get("WEB_SCREENSHOTS")


def _missing() -> str | None:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} not found (install Debian's chromium: scripts/setup)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    missing = _missing()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(missing, pytrace=False)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def server(web_archive: WebArchive) -> Iterator[str]:
    """``imapsync-decl serve`` on a free loopback port; its URL once it listens."""
    with serving(web_archive) as url:
        yield url


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    context = browser.new_context(base_url=server, accept_downloads=True)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=False)


def sign_in(page: Page, web: WebArchive, role: str, *, screenshot: bool = False) -> None:
    page.goto("/archive")
    assert "/sign-in" in page.url
    page.fill("input[name=username]", web.names[role])
    page.fill("input[name=password]", PASSWORDS[role])
    if screenshot:
        shot(page, "sign-in")
    page.click("button[type=submit]")
    page.wait_for_url("**/archive**")


def body_frame(page: Page) -> Frame:
    element = page.wait_for_selector("iframe.body")
    assert element is not None
    frame = element.content_frame()
    assert frame is not None
    return frame


def hit(web: WebArchive, role: str, query: str) -> Any:
    with open_search(web.archive) as search:
        hits = find(search, parse_query(query), Scope(user=web.names[role]))
    assert len(hits) == 1
    return hits[0]


def test_sign_in_browse_search_and_sign_out(page: Page, web_archive: WebArchive) -> None:
    web = web_archive
    sign_in(page, web, "alice", screenshot=True)
    assert page.inner_text("h1") == f"Archive of {web.names['alice']}"
    assert f"{web.names['alice']}@example.test" in page.inner_text(".mailbox h2")
    shot(page, "archive-tree")
    page.click("ul.folders a:text-is('INBOX')")
    assert page.locator("table.messages tbody tr").count() == 50
    first = page.locator("table.messages td.subject").first.inner_text()
    assert first == "Quarterly newsletter"  # the newest of INBOX
    shot(page, "folder-list")
    page.click("nav.pager a:has-text('Older')")
    assert page.locator("table.messages tbody tr").count() == 11
    page.fill("header input[name=q]", 'subject:"Report 07"')
    page.press("header input[name=q]", "Enter")
    page.wait_for_url("**/search?q=**")
    assert page.locator("ol.hits li").count() == 1
    assert "Report 07" in page.inner_text("ol.hits")
    page.fill("main input[name=q]", "report*")
    page.click("main button[type=submit]")
    assert page.locator("ol.hits li").count() == 50
    shot(page, "search-results")
    page.click("button:text('Sign out')")
    page.wait_for_url("**/sign-in")
    page.goto("/archive")
    assert "/sign-in" in page.url


def test_an_html_message_runs_no_script_and_loads_nothing_remote(
    page: Page, web_archive: WebArchive
) -> None:
    web = web_archive
    web.pixel.requests.clear()
    sign_in(page, web, "alice")
    news = hit(web, "alice", "from:mallory")
    page.goto(f"/messages/{news.id}")
    frame = body_frame(page)
    frame.wait_for_load_state("load")
    assert frame.inner_text("h1") == "Newsletter"
    shot(page, "message-view")
    assert page.title() != SCRIPT_MARKER
    assert frame.evaluate("document.title") != SCRIPT_MARKER
    assert frame.locator("img[alt=tracker]").count() == 1
    assert frame.get_attribute("img[alt=tracker]", "src") is None
    assert web.pixel.requests == []
    # The control: asked for, the remote image loads, from the counting server.
    page.click("text=Show remote content")
    frame = body_frame(page)
    frame.wait_for_load_state("load")
    frame.wait_for_function("document.querySelector('img[alt=tracker]').complete")
    assert web.pixel.requests == ["/pixel.gif?n=1"]
    assert page.title() != SCRIPT_MARKER


def test_the_eml_download_is_the_archived_bytes(page: Page, web_archive: WebArchive) -> None:
    web = web_archive
    sign_in(page, web, "alice")
    news = hit(web, "alice", "from:mallory")
    page.goto(f"/messages/{news.id}")
    with page.expect_download() as waiting:
        page.click("text=Download .eml")
    download = waiting.value
    assert download.suggested_filename == f"message-{news.id}.eml"
    path = download.path()
    data = Path(path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == news.sha256
    assert data == web.sent["html"]


def test_a_message_is_restored_to_dovecot(page: Page, web_archive: WebArchive) -> None:
    web = web_archive
    sign_in(page, web, "alice")
    report = hit(web, "alice", '"Report 42"')
    page.goto(f"/messages/{report.id}")
    page.click("text=Restore…")
    assert "profile staff" in page.inner_text("main").replace("\n", " ")
    page.fill("input[name=to_folder]", "Browser-restored")
    shot(page, "restore-confirm")
    page.click("button:text('Restore')")
    page.wait_for_selector("text=Restore finished")
    assert "restored 1" in page.inner_text("main")
    with web.server.client(web.names["alice"]) as imap:
        imap.select_folder("Browser-restored", readonly=True)
        uids = imap.search("ALL")
        bodies = [d[b"BODY[]"] for d in imap.fetch(uids, ["BODY.PEEK[]"]).values()]
    assert len(bodies) == 1
    assert hashlib.sha256(bodies[0]).hexdigest() == report.sha256


def test_a_user_cannot_reach_another_users_message_by_its_url(
    page: Page, web_archive: WebArchive
) -> None:
    web = web_archive
    sign_in(page, web, "alice")
    bobs = hit(web, "bob", '"Bob private 0"')
    answer = page.goto(f"/messages/{bobs.id}")
    assert answer is not None
    assert answer.status == 404
    theirs = page.inner_text("main")
    missing = page.goto("/messages/987654321")
    assert missing is not None
    assert missing.status == 404
    assert page.inner_text("main") == theirs
    assert "Bob private" not in theirs
    raw = page.goto(f"/messages/{bobs.id}/raw")
    assert raw is not None
    assert raw.status == 404


def test_an_administrator_sees_the_runs_and_statistics(page: Page, web_archive: WebArchive) -> None:
    web = web_archive
    sign_in(page, web, "admin")
    page.goto("/admin/runs")
    assert page.locator("table.list tbody tr").count() >= 1
    assert "apply" in page.inner_text("table.list")
    shot(page, "admin-runs")
    page.goto("/admin/stats")
    assert "placements" in page.inner_text("main")
    shot(page, "admin-stats")
    page.goto(f"/archive?user={web.names['bob']}")
    assert page.inner_text("h1") == f"Archive of {web.names['bob']}"
