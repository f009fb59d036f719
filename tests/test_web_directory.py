"""Directory sign-in through the web application, against the real slapd: a user synced
from the directory signs in at ``POST /api/session`` and the sign-in form with the
directory password, when the Web document allows it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from test_directory_auth import ANNA_PW, STAR_PW, synced_config

from imapsync_decl.config.resolve import Config
from imapsync_decl.store.access_log import read_access_log
from imapsync_decl.store.accounts import Accounts
from imapsync_decl.web.app import create_app
from imapsync_decl.web.settings import served

from servers.slapd import SlapdServer
from web_bed import BASE_URL, CHEAP, form_value

__all__ = ["ldap_password"]


@pytest.fixture(autouse=True)
def ldap_password(slapd: SlapdServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LDAP_PW", slapd.reader_password)


def client(config: Config, *, directory_sign_in: bool = True) -> TestClient:
    settings = dataclasses.replace(served(config.web), directory_sign_in=directory_sign_in)
    accounts = Accounts.open(config.archive_path, hasher=CHEAP)
    return TestClient(
        create_app(config, settings, accounts), base_url=BASE_URL, follow_redirects=False
    )


def test_a_directory_user_signs_in_with_the_directory_password(
    slapd: SlapdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = synced_config(slapd, tmp_path, capsys)
    web = client(config)
    assert (
        web.post("/api/session", json={"username": "anna", "password": STAR_PW}).status_code == 401
    )
    answer = web.post("/api/session", json={"username": "anna", "password": ANNA_PW})
    assert answer.status_code == 200
    assert answer.json()["user"] == "anna"
    web = client(config)  # signed out
    page = web.get("/sign-in")
    form = web.post(
        "/sign-in",
        data={"username": "bob", "password": STAR_PW, "csrf": form_value(page.text, "csrf")},
    )
    assert form.status_code == 303
    actions = [(e.action, e.user) for e in read_access_log(config.archive_path)]
    assert actions == [("sign_in_failed", "anna"), ("sign_in", "anna"), ("sign_in", "bob")]


def test_not_without_the_web_documents_consent(
    slapd: SlapdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = synced_config(slapd, tmp_path, capsys)
    web = client(config, directory_sign_in=False)
    answer = web.post("/api/session", json={"username": "anna", "password": ANNA_PW})
    assert answer.status_code == 401


def test_a_web_password_takes_the_place_of_the_directory_one(
    slapd: SlapdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = synced_config(slapd, tmp_path, capsys)
    with Accounts.open(config.archive_path, hasher=CHEAP) as accounts:
        accounts.set_password("anna", "a web password")
    web = client(config)
    assert (
        web.post("/api/session", json={"username": "anna", "password": ANNA_PW}).status_code == 401
    )
    answer = web.post("/api/session", json={"username": "anna", "password": "a web password"})
    assert answer.status_code == 200
