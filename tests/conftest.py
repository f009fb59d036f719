"""Shared fixtures: the private Dovecot server for tests marked ``dovecot``."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

import pytest

from servers.dovecot import DovecotServer, find_dovecot


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """A Dovecot server on 127.0.0.1 shared by the whole test session.

    Without a ``dovecot`` binary the tests are skipped, except under CI (``CI`` set),
    where they fail: CI must never pass without the real server.
    """
    if find_dovecot() is None:
        message = "dovecot binary not found (install dovecot-imapd or set DOVECOT_BINARY)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with DovecotServer() as server:
        yield server


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the end of the Dovecot log to failing tests that used the server."""
    report = yield
    server = getattr(item, "funcargs", {}).get("dovecot")
    if report.failed and isinstance(server, DovecotServer):
        report.sections.append(("dovecot log", "\n".join(server.read_log().splitlines()[-40:])))
    return report
