"""Resolved mailboxes log in to a real Dovecot: master password (both mechanisms) and CSV rows."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path

import pytest
from csv_writer import format_csv
from imapclient import IMAPClient

from imapsync_decl.config.resolve import Credentials, Mailbox, load_config

from helpers import write_config
from servers.dovecot import DovecotServer, make_message

pytestmark = pytest.mark.dovecot


def open_mailbox(server: DovecotServer, credentials: Credentials) -> IMAPClient:
    """Log in as the mailbox says (STARTTLS verified against the server's CA)."""
    client = IMAPClient(server.host, port=server.port, ssl=False, timeout=10)
    client.starttls(ssl.create_default_context(cafile=str(server.ca_file)))
    password = credentials.resolve_password().reveal()
    if credentials.mechanism == "sasl_plain":
        client.plain_login(
            credentials.username, password, authorization_identity=credentials.authzid
        )
    elif credentials.mechanism == "login_separator":
        client.login(credentials.username, password)
    else:
        client.plain_login(credentials.username, password)
    return client


def subjects_in_inbox(client: IMAPClient) -> set[str]:
    client.select_folder("INBOX", readonly=True)
    uids = client.search("ALL")
    fetched = client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]) if uids else {}
    return {
        data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().strip().removeprefix("Subject: ")
        for data in fetched.values()
    }


def server_block(server: DovecotServer) -> str:
    return (
        f"server:\n  host: {server.host}\n  port: {server.port}\n  security: starttls\n"
        f"  ca_file: {server.ca_file}\n"
    )


def mailboxes(directory: Path, profile: str) -> tuple[Mailbox, ...]:
    config = load_config(directory, "cfg")
    assert config.ok, [str(p) for p in config.errors]
    return config.mailboxes[profile]


@pytest.mark.parametrize("mechanism", ["sasl_plain", "login_separator"])
def test_master_password_opens_each_users_own_mailbox(
    dovecot: DovecotServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mechanism: str
) -> None:
    monkeypatch.setenv("BED_MASTER_PW", dovecot.master_password)
    marks = {user: f"{user}-{uuid.uuid4().hex}" for user in ("alice", "bob")}
    for user, mark in marks.items():
        dovecot.append(user, "INBOX", make_message(subject=mark, body="hello"))
    write_config(
        tmp_path,
        {
            "users.yaml": "kind: Users\nusers:\n"
            "  - {name: alice, email: alice@example.org}\n"
            "  - {name: bob, email: bob@example.org}\n",
            "staff.yaml": "kind: Profile\nname: staff\n"
            + server_block(dovecot)
            + f"source:\n  master:\n    username: {dovecot.master_user}\n"
            "    password: {env: BED_MASTER_PW}\n    identity: email_local_part\n"
            f"    mechanism: {mechanism}\n",
        },
    )
    found = mailboxes(tmp_path, "staff")
    assert [m.login for m in found] == ["alice", "bob"]
    for mailbox in found:
        client = open_mailbox(dovecot, mailbox.credentials)
        try:
            seen = subjects_in_inbox(client)
        finally:
            client.logout()
        assert marks[mailbox.login] in seen
        other = next(mark for user, mark in marks.items() if user != mailbox.login)
        assert other not in seen


def test_wrong_master_password_is_refused(
    dovecot: DovecotServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BED_MASTER_PW", "not-the-password")
    write_config(
        tmp_path,
        {
            "users.yaml": "kind: Users\nusers: [{name: alice, email: alice@example.org}]\n",
            "staff.yaml": "kind: Profile\nname: staff\n"
            + server_block(dovecot)
            + f"source:\n  master:\n    username: {dovecot.master_user}\n"
            "    password: {env: BED_MASTER_PW}\n    identity: username\n",
        },
    )
    (alice,) = mailboxes(tmp_path, "staff")
    from imapclient.exceptions import LoginError

    with pytest.raises(LoginError):
        open_mailbox(dovecot, alice.credentials)


def test_csv_rows_log_in_with_their_own_passwords(dovecot: DovecotServer, tmp_path: Path) -> None:
    marks = {user: f"{user}-{uuid.uuid4().hex}" for user in ("carol", "umlaut")}
    for user, mark in marks.items():
        dovecot.append(user, "INBOX", make_message(subject=mark, body="hello"))
    rows = [["IMAP-Benutzername", "IMAP-Kennwort", "E-Mail-Adresse"]]
    rows += [[user, dovecot.users[user], ""] for user in marks]
    csv_text = format_csv(rows, ";", '"')
    write_config(
        tmp_path,
        {
            "c.yaml": "kind: Profile\nname: c\n"
            + server_block(dovecot)
            + "source: {csv: {file: m.csv}}\n",
            "m.csv": csv_text,
        },
    )
    found = mailboxes(tmp_path, "c")
    assert [m.login for m in found] == ["carol", "umlaut"]
    for mailbox in found:
        client = open_mailbox(dovecot, mailbox.credentials)
        try:
            assert marks[mailbox.login] in subjects_in_inbox(client)
        finally:
            client.logout()
