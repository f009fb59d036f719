"""The directory test bed: the private slapd behaves as the directory tests assume."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import uuid
from pathlib import Path

import ldap3
import pytest
from ldap3.core.exceptions import (
    LDAPException,
    LDAPInvalidCredentialsResult,
    LDAPNoSuchObjectResult,
)

import servers.slapd as slapd_module
from servers.slapd import (
    ACTIVE_USER_FILTER,
    DEFAULT_SIZE_LIMIT,
    USER_FILTER,
    SlapdServer,
)

NON_ASCII_NAME = "Zoë Ångström-Núñez 山田 🦉"


def _token() -> str:
    return uuid.uuid4().hex[:10]


def _uids(conn: ldap3.Connection, base: str, search_filter: str) -> set[str]:
    conn.search(base, search_filter, attributes=["uid"])
    return {str(entry.uid.value) for entry in conn.entries}


def _process_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for process {pid}")


# ------------------------------------------------------------------ accounts


def test_reader_finds_user_by_uid_with_mail_and_non_ascii_display_name(
    slapd: SlapdServer,
) -> None:
    uid = f"ann-{_token()}"
    dn = slapd.add_user(
        uid, mail=f"{uid}@example.test", display_name=NON_ASCII_NAME, password="ann-secret"
    )
    assert dn == f"uid={uid},ou=people,dc=example,dc=test" == slapd.user_dn(uid)
    with slapd.reader() as conn:
        assert conn.search(
            slapd.base_dn,
            f"(&{USER_FILTER}(uid={uid}))",
            attributes=["uid", "mail", "displayName", "userPassword"],
        )
        (entry,) = conn.entries
        assert entry.entry_dn == dn
        assert entry.mail.value == f"{uid}@example.test"
        assert entry.displayName.value == NON_ASCII_NAME
        # The reader never sees passwords (ldap3 lists requested attributes, empty).
        assert not entry.entry_attributes_as_dict.get("userPassword")
        assert not conn.response[0]["raw_attributes"].get("userPassword")
    with slapd.admin() as conn:
        conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["userPassword"])
        (stored,) = conn.response[0]["raw_attributes"]["userPassword"]
        assert stored.startswith(b"{SSHA}")


def test_anonymous_reads_neither_users_nor_passwords(slapd: SlapdServer) -> None:
    uid = f"anon-{_token()}"
    slapd.add_user(uid, mail=f"{uid}@example.test", password="anon-secret")
    conn = slapd.connect(raise_exceptions=False)
    try:
        conn.search(slapd.base_dn, f"(uid={uid})", attributes=["mail", "userPassword"])
        assert conn.entries == []
        assert conn.result["description"] in ("noSuchObject", "success")
    finally:
        conn.unbind()


def test_wrong_password_bind_fails(slapd: SlapdServer) -> None:
    with pytest.raises(LDAPInvalidCredentialsResult):
        slapd.connect(slapd.reader_dn, slapd.reader_password + "x")
    conn = slapd.connect(raise_exceptions=False)
    try:
        assert not conn.rebind(slapd.admin_dn, "not-the-admin-password")
        assert conn.result["description"] == "invalidCredentials"
        assert not conn.bound
    finally:
        conn.unbind()


def test_user_binds_with_own_password(slapd: SlapdServer) -> None:
    uid = f"self-{_token()}"
    dn = slapd.add_user(uid, password="pässwörd")
    with slapd.connect(dn, "pässwörd") as conn:
        assert conn.extend.standard.who_am_i() == f"dn:{dn}"
    with pytest.raises(LDAPInvalidCredentialsResult):
        slapd.connect(dn, "passwort")


# ----------------------------------------------------------------------- TLS


def test_starttls_verifies_with_ca_file(slapd: SlapdServer) -> None:
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(slapd.ca_file))
    server = ldap3.Server(slapd.host, port=slapd.port, tls=tls, get_info=ldap3.NONE)
    conn = ldap3.Connection(server, slapd.reader_dn, slapd.reader_password, raise_exceptions=True)
    try:
        conn.open()
        assert conn.start_tls()
        assert conn.tls_started
        assert conn.bind()
        assert conn.extend.standard.who_am_i() == f"dn:{slapd.reader_dn}"
    finally:
        conn.unbind()


def test_starttls_fails_against_the_system_store(slapd: SlapdServer) -> None:
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED)
    server = ldap3.Server(slapd.host, port=slapd.port, tls=tls, get_info=ldap3.NONE)
    conn = ldap3.Connection(server, raise_exceptions=True)
    try:
        conn.open()
        with pytest.raises((LDAPException, ssl.SSLError)):
            conn.start_tls()
        assert not conn.tls_started
    finally:
        with contextlib.suppress(LDAPException):
            conn.unbind()  # the failed handshake may have closed the socket


def test_ldaps_verifies_with_ca_file(slapd: SlapdServer) -> None:
    assert slapd.ldaps_port is not None
    assert slapd.ldaps_url == f"ldaps://127.0.0.1:{slapd.ldaps_port}"
    with slapd.connect(slapd.reader_dn, slapd.reader_password, mode="ldaps") as conn:
        assert conn.server.ssl
        assert conn.extend.standard.who_am_i() == f"dn:{slapd.reader_dn}"
    with slapd.connect(slapd.reader_dn, slapd.reader_password, mode="starttls") as conn:
        assert conn.tls_started


# -------------------------------------------------------------------- limits


def test_plain_search_is_cut_by_the_size_limit_and_a_paged_search_is_not(
    slapd: SlapdServer,
) -> None:
    count = DEFAULT_SIZE_LIMIT + 700
    ou = f"bulk-{_token()}"
    uids = slapd.add_many(count, "bulk", ou=ou)
    assert len(uids) == count
    base = slapd.ou_dn(ou)
    conn = slapd.connect(slapd.reader_dn, slapd.reader_password, raise_exceptions=False)
    try:
        conn.search(base, USER_FILTER, attributes=["uid"])
        assert conn.result["description"] == "sizeLimitExceeded"
        assert len(conn.entries) == DEFAULT_SIZE_LIMIT
        # Asking for more than the limit does not help without paging.
        conn.search(base, USER_FILTER, attributes=["uid"], size_limit=count)
        assert conn.result["description"] == "sizeLimitExceeded"
        assert len(conn.entries) == DEFAULT_SIZE_LIMIT

        found = [
            str(item["attributes"]["uid"][0])
            for item in conn.extend.standard.paged_search(
                base, USER_FILTER, attributes=["uid"], paged_size=200, generator=True
            )
            if item["type"] == "searchResEntry"
        ]
        assert conn.result["description"] == "success"
        assert sorted(found) == uids
    finally:
        conn.unbind()


# ---------------------------------------------------------- disabled users


def test_disabled_filter_excludes_the_disabled_user(slapd: SlapdServer) -> None:
    ou = f"dis-{_token()}"
    slapd.add_user("active", ou=ou, mail="active@example.test")
    slapd.add_user("gone", ou=ou, mail="gone@example.test", disabled=True)
    slapd.add_user("later", ou=ou, mail="later@example.test")
    base = slapd.ou_dn(ou)
    with slapd.reader() as conn:
        assert _uids(conn, base, USER_FILTER) == {"active", "gone", "later"}
        assert _uids(conn, base, ACTIVE_USER_FILTER) == {"active", "later"}
        slapd.set_disabled("later", ou=ou)
        slapd.set_disabled("gone", False, ou=ou)
        assert _uids(conn, base, ACTIVE_USER_FILTER) == {"active", "gone"}


# ------------------------------------------------------------ live changes


def test_changes_while_running_are_visible_at_once(slapd: SlapdServer) -> None:
    uid = f"live-{_token()}"
    with slapd.reader() as conn:
        assert _uids(conn, slapd.base_dn, f"(uid={uid})") == set()
        slapd.add_user(uid, mail=f"{uid}@example.test", cn="Live User")
        assert _uids(conn, slapd.base_dn, f"(uid={uid})") == {uid}
        assert _uids(conn, slapd.base_dn, f"(mail={uid}@example.test)") == {uid}


def test_modify_rename_and_delete(slapd: SlapdServer) -> None:
    uid = f"mod-{_token()}"
    slapd.add_user(uid, mail=f"{uid}@example.test", display_name="Old")
    slapd.modify_user(uid, mail=[f"{uid}@example.test", f"alias-{uid}@example.test"])
    slapd.modify_user(uid, display_name="Nëw", mail=f"{uid}@example.test")
    slapd.modify_user(uid, displayName=None)
    with slapd.reader() as conn:
        conn.search(slapd.user_dn(uid), "(objectClass=*)", ldap3.BASE, attributes=["*"])
        (entry,) = conn.entries
        assert entry.mail.values == [f"{uid}@example.test"]
        assert "displayName" not in entry.entry_attributes_as_dict

        new_uid = f"{uid}-renamed"
        assert slapd.rename_user(uid, new_uid) == slapd.user_dn(new_uid)
        assert _uids(conn, slapd.base_dn, f"(uid={uid}*)") == {new_uid}

        slapd.delete_user(new_uid)
        assert _uids(conn, slapd.base_dn, f"(uid={uid}*)") == set()
    with pytest.raises(LDAPNoSuchObjectResult):
        slapd.delete_user(new_uid)


# ----------------------------------------------------------------- lifecycle


def test_a_server_stops_without_leftovers(
    slapd: SlapdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second server beside the session's one (whose fixture skips or fails the test
    without slapd)."""
    # The first port handed out is taken: the server has to pick another one.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        real_free_port = slapd_module._free_port
        ports = iter([taken])
        monkeypatch.setattr(
            slapd_module, "_free_port", lambda: next(ports, None) or real_free_port()
        )
        server = SlapdServer(ldaps=False)
        with server:
            pid = server.pid
            directory = server.directory
            assert pid is not None
            assert server.port not in (taken, slapd.port)
            assert server.ldaps_port is None
            if os.geteuid() == 0:
                assert _process_uid(pid) != 0, "slapd kept root privileges"
            with server.reader() as conn:
                assert conn.extend.standard.who_am_i() == f"dn:{server.reader_dn}"
    assert not server.running
    assert not Path(f"/proc/{pid}").exists()
    assert not directory.exists()
