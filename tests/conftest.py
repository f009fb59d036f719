"""Shared fixtures: the private Dovecot server for tests marked ``dovecot``."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bed import Bed
from servers.dovecot import DovecotServer, find_dovecot

if TYPE_CHECKING:
    from servers.slapd import SlapdServer


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


@pytest.fixture
def bed(
    dovecot: DovecotServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Bed]:
    """A configuration directory for profiles on the test Dovecot; every output it saw is
    checked afterwards for passwords."""
    monkeypatch.setenv("BED_MASTER_PASSWORD", dovecot.master_password)
    b = Bed(dovecot, tmp_path, capsys)
    b.config_dir.mkdir()
    yield b
    secrets = [dovecot.master_password, *b.users.values()]
    for output in b.outputs:
        for secret in secrets:
            assert secret not in output, "a password appeared in the output"


@pytest.fixture(scope="session")
def slapd() -> Iterator[SlapdServer]:
    """An OpenLDAP server on 127.0.0.1 shared by the whole test session (see
    ``servers/slapd.py`` for its tree, accounts, limits and helpers).

    Without a ``slapd`` binary the tests are skipped, except under CI (``CI`` set), where
    they fail: CI must never pass without the real server.
    """
    # Imported here: the rest of the suite runs even without the LDAP client (ldap3).
    try:
        from servers.slapd import SlapdServer, find_slapd
    except ImportError as error:
        missing = f"the LDAP test bed cannot be imported: {error}"
    else:
        missing = "" if find_slapd() else "slapd binary not found (install slapd, SLAPD_BINARY)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing, pytrace=False)
        pytest.skip(missing)
    with SlapdServer() as server:
        yield server
