"""The real-server test bed: the private Dovecot behaves as the archiving tests assume."""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import email.policy
import socket
import ssl
import time
import uuid
from functools import partial
from typing import cast

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

import servers.dovecot as dovecot_module
from servers.dovecot import SPECIAL_FOLDERS, DovecotServer, make_message, process_group_alive

pytestmark = pytest.mark.dovecot


def _unique_message(subject: str) -> tuple[str, bytes]:
    message_id = f"<{uuid.uuid4().hex}@bed.example.test>"
    return message_id, make_message(subject, "marker\n", message_id=message_id)


def _find(imap: IMAPClient, message_id: str, folder: str = "INBOX") -> list[int]:
    imap.select_folder(folder, readonly=True)
    return list(imap.search(["HEADER", "Message-ID", message_id]))


def _close(imap: IMAPClient) -> None:
    """Drop the connection, whatever state a failed command left it in."""
    with contextlib.suppress(Exception):
        imap.shutdown()


def _own_login(server: DovecotServer, user: str) -> IMAPClient:
    imap = server.connect()
    imap.login(user, server.users[user])
    return imap


@pytest.fixture
def alice_marker(dovecot: DovecotServer) -> str:
    """Message-ID of a message that alice appended to her INBOX with her own password."""
    message_id, message = _unique_message("only for alice")
    imap = _own_login(dovecot, "alice")
    try:
        imap.append("INBOX", message)
    finally:
        imap.logout()
    return message_id


# ------------------------------------------------------------------ master user


def test_master_plain_login_with_authzid_is_the_users_session(
    dovecot: DovecotServer, alice_marker: str
) -> None:
    imap = dovecot.connect()
    imap.plain_login(dovecot.master_user, dovecot.master_password, authorization_identity="alice")
    try:
        assert len(_find(imap, alice_marker)) == 1
    finally:
        imap.logout()

    imap = dovecot.connect()
    imap.plain_login(dovecot.master_user, dovecot.master_password, authorization_identity="bob")
    try:
        assert _find(imap, alice_marker) == []
    finally:
        imap.logout()


def test_master_login_with_separator(dovecot: DovecotServer, alice_marker: str) -> None:
    imap = dovecot.connect()
    imap.login(f"alice*{dovecot.master_user}", dovecot.master_password)
    try:
        assert len(_find(imap, alice_marker)) == 1
    finally:
        imap.logout()


@pytest.mark.parametrize("style", ["authzid", "separator"])
def test_wrong_master_password_is_refused(dovecot: DovecotServer, style: str) -> None:
    imap = dovecot.connect()
    if style == "authzid":
        login = partial(imap.plain_login, dovecot.master_user, "wrong", "alice")
    else:
        login = partial(imap.login, f"alice*{dovecot.master_user}", "wrong")
    try:
        with pytest.raises(LoginError):
            login()
    finally:
        _close(imap)


def test_master_cannot_become_an_unknown_user(dovecot: DovecotServer) -> None:
    imap = dovecot.connect()
    try:
        with pytest.raises(LoginError):
            imap.plain_login(
                dovecot.master_user, dovecot.master_password, authorization_identity="nobody-here"
            )
    finally:
        _close(imap)


def test_user_password_does_not_make_a_master(dovecot: DovecotServer) -> None:
    imap = dovecot.connect()
    try:
        with pytest.raises(LoginError):
            imap.plain_login("bob", dovecot.users["bob"], authorization_identity="alice")
    finally:
        _close(imap)


# ---------------------------------------------------------------- user logins


def test_user_login_with_own_password(dovecot: DovecotServer, alice_marker: str) -> None:
    imap = _own_login(dovecot, "alice")
    try:
        assert len(_find(imap, alice_marker)) == 1
    finally:
        imap.logout()

    imap = dovecot.connect()
    try:
        with pytest.raises(LoginError):
            imap.login("alice", dovecot.users["bob"])
    finally:
        _close(imap)


def test_non_ascii_password_with_authenticate_plain(dovecot: DovecotServer) -> None:
    password = dovecot.users["umlaut"]
    assert not password.isascii()

    imap = dovecot.connect()
    try:
        imap.plain_login("umlaut", password)
        assert imap.folder_exists("INBOX")
    finally:
        imap.logout()

    imap = dovecot.connect()
    try:
        with pytest.raises(LoginError):
            imap.plain_login("umlaut", "passwoerd")
    finally:
        _close(imap)


def test_every_documented_user_can_log_in(dovecot: DovecotServer) -> None:
    assert {"alice", "bob", "carol"} <= dovecot.users.keys()
    for user, password in dovecot.users.items():
        imap = dovecot.connect()
        try:
            imap.plain_login(user, password)
        finally:
            imap.logout()


# ------------------------------------------------------------------------ TLS


def _peer_names(sock: object) -> set[str]:
    assert isinstance(sock, ssl.SSLSocket)
    cert = sock.getpeercert()
    assert cert is not None
    names = cast("tuple[tuple[str, str], ...]", cert.get("subjectAltName", ()))
    return {value for _, value in names}


def test_starttls_verifies_with_ca_file(dovecot: DovecotServer) -> None:
    imap = dovecot.connect()
    try:
        assert {b"STARTTLS", b"AUTH=PLAIN", b"AUTH=LOGIN"} <= set(imap.capabilities())
        imap.starttls(dovecot.ssl_context())
        assert {"127.0.0.1", "localhost"} <= _peer_names(imap._imap.sock)
        imap.login("alice", dovecot.users["alice"])
    finally:
        imap.logout()


def test_implicit_tls_verifies_with_ca_file(dovecot: DovecotServer) -> None:
    imap = dovecot.connect(tls=True)
    try:
        assert {"127.0.0.1", "localhost"} <= _peer_names(imap._imap.sock)
        imap.login("alice", dovecot.users["alice"])
    finally:
        imap.logout()


def test_implicit_tls_fails_with_system_trust_store(dovecot: DovecotServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient(
            dovecot.host,
            port=dovecot.tls_port,
            ssl=True,
            ssl_context=ssl.create_default_context(),
            timeout=10,
        )


def test_starttls_fails_with_system_trust_store(dovecot: DovecotServer) -> None:
    imap = dovecot.connect()
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            imap.starttls(ssl.create_default_context())
    finally:
        _close(imap)


# ------------------------------------------------------------------- folders


def test_special_use_folders_of_a_fresh_user(dovecot: DovecotServer) -> None:
    user = f"fresh-{uuid.uuid4().hex[:8]}"
    dovecot.add_user(user)
    with dovecot.client(user) as imap:
        listed = {name: set(flags) for flags, _, name in imap.list_folders()}
        delimiter = imap.namespace().personal[0][1]
    assert delimiter == "/"
    for name, use in SPECIAL_FOLDERS.items():
        assert use.encode() in listed[name], (name, listed)
    for name in ("Trash", "Junk", "Drafts", "Sent"):
        assert sum(SPECIAL_FOLDERS[name].encode() in flags for flags in listed.values()) == 1


def test_non_ascii_nested_folder_round_trip(dovecot: DovecotServer) -> None:
    user = f"fresh-{uuid.uuid4().hex[:8]}"
    dovecot.add_user(user)
    folder = "Projekte/Übersicht"
    dovecot.create_folder(user, folder)

    message = make_message("Grüße aus Köln", "Hällo Wörld\nzweite Zeile\n", size=5000)
    when = dt.datetime(2021, 3, 4, 5, 6, 7, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    uid = dovecot.append(user, folder, message, flags=["\\Seen", "$Label1"], internal_date=when)

    with dovecot.client(user) as imap:
        names = [name for _, _, name in imap.list_folders()]
        assert folder in names
        assert "Projekte" in names
        imap.folder_encode = False
        raw_names = [name for _, _, name in imap.list_folders()]
        assert b"Projekte/&ANw-bersicht" in raw_names
        imap.folder_encode = True

        imap.select_folder(folder, readonly=True)
        data = imap.fetch([uid], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE", "RFC822.SIZE"])[uid]
    assert data[b"BODY[]"] == message
    assert data[b"RFC822.SIZE"] == len(message)
    assert {b"\\Seen", b"$Label1"} <= set(data[b"FLAGS"])
    assert data[b"INTERNALDATE"].astimezone(dt.UTC) == when.astimezone(dt.UTC)

    dovecot.delete_folder(user, folder)
    with dovecot.client(user) as imap:
        assert not imap.folder_exists(folder)


def test_append_returns_increasing_uids(dovecot: DovecotServer) -> None:
    user = f"fresh-{uuid.uuid4().hex[:8]}"
    dovecot.add_user(user)
    first = dovecot.append(user, "INBOX", make_message("one"))
    second = dovecot.append(user, "INBOX", make_message("two"))
    assert second > first >= 1
    with dovecot.client(user) as imap:
        imap.select_folder("INBOX", readonly=True)
        assert imap.search() == [first, second]


# ---------------------------------------------------------------- life cycle


def _refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def test_start_is_fast_and_stop_is_clean(dovecot: DovecotServer) -> None:
    began = time.monotonic()
    with DovecotServer() as server:
        elapsed = time.monotonic() - began
        pid, directory = server.pid, server.directory
        ports = (server.port, server.tls_port)
        assert pid is not None
        assert server.running
        with server.client("carol") as imap:
            assert imap.folder_exists("INBOX")
    assert elapsed < 3.0
    assert not server.running
    assert not process_group_alive(pid)
    assert not directory.exists()
    assert all(_refuses(port) for port in ports)


def test_start_retries_when_a_port_is_taken(
    dovecot: DovecotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        real_free_port = dovecot_module._free_port
        offered = iter([taken])
        monkeypatch.setattr(
            dovecot_module, "_free_port", lambda: next(offered, None) or real_free_port()
        )
        with DovecotServer() as server:
            assert next(offered, None) is None  # the taken port was tried first
            assert taken not in (server.port, server.tls_port)
            with server.client("bob") as imap:
                assert imap.folder_exists("INBOX")


# ------------------------------------------------------------------- messages


def test_make_message_is_valid_crlf_and_padded() -> None:
    message = make_message("Grüße", "Zeile eins\nZeile zwei ä\n", size=4096, message_id="<x@y>")
    assert b"\n" not in message.replace(b"\r\n", b"")
    assert abs(len(message) - 4096) <= 2
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert parsed["Subject"] == "Grüße"
    assert parsed["Message-ID"] == "<x@y>"
    content = parsed.get_content().replace("\r\n", "\n")
    assert content.startswith("Zeile eins\nZeile zwei ä\n0123")
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    natural = make_message("s", "b", message_id="<n@y>", date=when)
    assert make_message("s", "b", size=10, message_id="<n@y>", date=when) == natural
    assert b"Date: Tue, 02 Jan 2024 03:04:05 +0000\r\n" in natural
