"""The IMAP session: a real Dovecot for the protocol, tiny fake servers for the corner cases."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import socket
import ssl
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imapsync_decl.config.documents import Server
from imapsync_decl.config.imap_access import imap_endpoint, imap_login
from imapsync_decl.config.resolve import Credentials
from imapsync_decl.imap.errors import (
    ConnectFailed,
    ConnectionLost,
    FolderGone,
    LoginFailed,
    ProtocolError,
)
from imapsync_decl.imap.facts import FolderInfo
from imapsync_decl.imap.session import ImapSession
from imapsync_decl.secrets import Secret

from servers.dovecot import DovecotServer, find_dovecot, make_message
from servers.fake_imap import FakeImap, Reply, lines

dovecot_only = pytest.mark.dovecot

DISTINCT_PASSWORD = "Zq7-unmistakable-Passw0rd"


# --- helpers ------------------------------------------------------------------------------------


def connect(server: Server, base_dir: Path, **options: Any) -> ImapSession:
    return ImapSession.connect(imap_endpoint(server, base_dir), **options)


def bed_server(dovecot: DovecotServer, security: str = "starttls", **extra: object) -> Server:
    port = dovecot.tls_port if security == "tls" else dovecot.port
    fields: dict[str, object] = {
        "host": dovecot.host,
        "port": port,
        "security": security,
        "timeout": 10,
    }
    if security != "plain" and "accept_all_certificates" not in extra:
        fields["ca_file"] = str(dovecot.ca_file)
    fields.update(extra)
    return Server.model_validate(fields)


def master(dovecot: DovecotServer, user: str) -> Credentials:
    return Credentials(
        "sasl_plain", dovecot.master_user, user, Secret(dovecot.master_password), Path()
    )


def new_user(dovecot: DovecotServer) -> str:
    user = f"u{uuid.uuid4().hex[:10]}"
    dovecot.add_user(user)
    return user


@contextlib.contextmanager
def open_session(
    dovecot: DovecotServer, user: str, security: str = "starttls"
) -> Iterator[ImapSession]:
    with connect(bed_server(dovecot, security), Path(), mailbox=user) as session:
        session.login(imap_login(master(dovecot, user)))
        yield session


def folder(session: ImapSession, path: str) -> FolderInfo:
    found = {f.path: f for f in session.list_folders()}
    assert path in found, sorted(found)
    return found[path]


def unseen(dovecot: DovecotServer, user: str, folder_name: str) -> set[int]:
    with dovecot.client(user) as imap:
        imap.select_folder(folder_name, readonly=True)
        return set(imap.search("UNSEEN"))


def fake_login(server: FakeImap, *, mailbox: str = "fake") -> ImapSession:
    session = connect(server.server(), Path(), mailbox=mailbox)
    session.login(
        imap_login(Credentials("user_password", "someone", None, Secret(DISTINCT_PASSWORD), Path()))
    )
    return session


# --- connecting ---------------------------------------------------------------------------------


@dovecot_only
@pytest.mark.parametrize("security", ["plain", "starttls", "tls"])
def test_connect_and_login_with_each_security(dovecot: DovecotServer, security: str) -> None:
    user = new_user(dovecot)
    with open_session(dovecot, user, security) as session:
        assert "IMAP4REV1" in session.capabilities
        assert "CONDSTORE" in session.capabilities  # authenticated capabilities
        assert session.list_folders()[0].path == "INBOX"
        # The timeout holds for every command, after STARTTLS too.
        assert session._channel.imap.timeout == 10
        if security == "plain":
            assert session.tls_version is None
        else:
            assert session.tls_version in ("TLSv1.2", "TLSv1.3")


@dovecot_only
def test_ca_file_is_relative_to_base_dir(dovecot: DovecotServer) -> None:
    server = bed_server(dovecot, "tls", ca_file="tls/cert.pem")
    with connect(server, dovecot.directory, mailbox="x") as session:
        assert session.tls_version is not None


@dovecot_only
@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_system_store_refuses_the_self_signed_certificate(
    dovecot: DovecotServer, security: str
) -> None:
    server = bed_server(dovecot, security, ca_file=None)
    with pytest.raises(ConnectFailed) as caught:
        connect(server, Path(), mailbox="alice")
    message = str(caught.value)
    assert "certificate verify failed" in message
    assert "self-signed" in message or "self signed" in message
    assert "ca_file or accept_all_certificates" in message
    assert f"{dovecot.host}:{server.effective_port}" in message


@dovecot_only
@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_accept_all_certificates_connects(dovecot: DovecotServer, security: str) -> None:
    user = new_user(dovecot)
    server = bed_server(dovecot, security, accept_all_certificates=True)
    with connect(server, Path(), mailbox=user) as session:
        session.login(imap_login(master(dovecot, user)))
        assert session.tls_version is not None


def test_starttls_not_offered_fails_without_falling_back() -> None:
    with FakeImap(capabilities="IMAP4rev1 AUTH=PLAIN") as fake:
        with pytest.raises(ConnectFailed, match="does not offer STARTTLS"):
            connect(fake.server(security="starttls"), Path(), mailbox="x")
        assert "LOGIN" not in fake.commands
        assert "AUTHENTICATE" not in fake.commands


def test_connection_refused_and_unknown_host() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    server = Server(host="127.0.0.1", port=port, security="plain", timeout=2)
    with pytest.raises(ConnectFailed, match="connection refused"):
        connect(server, Path(), mailbox="x")
    server = Server(host="no-such-host.invalid", security="tls", timeout=2)
    with pytest.raises(ConnectFailed, match="cannot resolve host"):
        connect(server, Path(), mailbox="x")


def test_missing_ca_file_is_a_connect_failure(tmp_path: Path) -> None:
    server = Server(host="127.0.0.1", port=1, security="tls", ca_file="missing.pem")
    with pytest.raises(ConnectFailed, match="ca_file"):
        connect(server, tmp_path, mailbox="x")


def test_silent_server_times_out_within_the_timeout() -> None:
    with FakeImap(greeting=None) as fake:
        started = time.monotonic()
        with pytest.raises((ConnectFailed, ConnectionLost), match=r"timed out|no answer"):
            connect(fake.server(timeout=1), Path(), mailbox="x")
        assert time.monotonic() - started < 3


def test_timeout_during_a_command_is_connection_lost() -> None:
    def never(tag: str, args: str) -> bytes:
        time.sleep(3)
        return f"{tag} OK late\r\n".encode()

    with FakeImap({"LIST": never}) as fake:
        session = connect(fake.server(timeout=1), Path(), mailbox="x")
        session.login(imap_login(Credentials("user_password", "u", None, Secret("p"), Path())))
        started = time.monotonic()
        with pytest.raises(ConnectionLost, match="no answer within 1 s"):
            session.list_folders()
        assert time.monotonic() - started < 2.5
        session.logout()


@pytest.mark.parametrize("sent", [b"", b"* 1 FETCH (UID 1 BODY[] {100}\r\n" + b"x" * 50])
def test_dropped_connection_mid_fetch_is_connection_lost(sent: bytes) -> None:
    """The server closes the connection at once, or in the middle of a literal."""
    with FakeImap({"UID FETCH": lambda tag, args: sent}, drop_after={"UID FETCH"}) as fake:
        session = fake_login(fake)
        session.examine(FolderInfo("INBOX", "INBOX", "/", frozenset()))
        started = time.monotonic()
        with pytest.raises(ConnectionLost, match="connection lost during FETCH"):
            list(session.fetch_messages([1, 2]))
        assert time.monotonic() - started < 2
        # The session is unusable now, and says so instead of hanging.
        with pytest.raises(ConnectionLost):
            session.search_uids()
        session.logout()
        session.logout()


# --- logging in ---------------------------------------------------------------------------------


@dovecot_only
@pytest.mark.parametrize("mechanism", ["sasl_plain", "login_separator"])
def test_master_login_opens_the_right_users_mailbox(dovecot: DovecotServer, mechanism: str) -> None:
    alice, bob = new_user(dovecot), new_user(dovecot)
    marks = {user: f"mark-{user}" for user in (alice, bob)}
    for user, mark in marks.items():
        dovecot.append(user, "INBOX", make_message(subject=mark))
    if mechanism == "sasl_plain":
        credentials = master(dovecot, alice)
    else:
        credentials = Credentials(
            "login_separator",
            f"{alice}*{dovecot.master_user}",
            None,
            Secret(dovecot.master_password),
            Path(),
        )
    with connect(bed_server(dovecot), Path(), mailbox=alice) as session:
        session.login(imap_login(credentials))
        session.examine(folder(session, "INBOX"))
        bodies = [m.body for m in session.fetch_messages(session.search_uids())]
    assert len(bodies) == 1
    assert marks[alice].encode() in bodies[0]
    assert marks[bob].encode() not in bodies[0]


@dovecot_only
@pytest.mark.parametrize("mechanism", ["user_password", "login_separator"])
def test_non_ascii_password(dovecot: DovecotServer, mechanism: str) -> None:
    # user_password uses AUTHENTICATE PLAIN (Dovecot offers AUTH=PLAIN); login_separator
    # sends LOGIN with the password as a UTF-8 literal.
    assert dovecot.users["umlaut"] == "pässwörd"
    credentials = Credentials(mechanism, "umlaut", None, Secret("pässwörd"), Path())  # type: ignore[arg-type]
    with connect(bed_server(dovecot), Path(), mailbox="umlaut") as session:
        session.login(imap_login(credentials))
        assert any(f.path == "INBOX" for f in session.list_folders())


@dovecot_only
@pytest.mark.parametrize("mechanism", ["sasl_plain", "login_separator", "user_password"])
def test_wrong_password_names_the_mailbox_never_the_password(
    dovecot: DovecotServer, mechanism: str
) -> None:
    user = new_user(dovecot)
    username = {
        "sasl_plain": dovecot.master_user,
        "login_separator": f"{user}*{dovecot.master_user}",
        "user_password": user,
    }[mechanism]
    authzid = user if mechanism == "sasl_plain" else None
    credentials = Credentials(mechanism, username, authzid, Secret(DISTINCT_PASSWORD), Path())  # type: ignore[arg-type]
    with (
        connect(bed_server(dovecot), Path(), mailbox=user) as session,
        pytest.raises(LoginFailed) as caught,
    ):
        session.login(imap_login(credentials))
    error = caught.value
    rendered = "".join(traceback.format_exception(error)) + repr(error)
    assert user in str(error)
    assert "uthentication failed" in str(error)  # the server's answer
    assert DISTINCT_PASSWORD not in rendered
    assert "Zq7" not in rendered
    assert not re.search(rf"\b{len(DISTINCT_PASSWORD)}\b", str(error))


def test_login_without_auth_plain_uses_login_and_a_literal_for_8bit() -> None:
    with FakeImap(capabilities="IMAP4rev1") as fake:
        session = connect(fake.server(), Path(), mailbox="m")
        session.login(
            imap_login(Credentials("user_password", "umlaut", None, Secret("pässwörd"), Path()))
        )
        session.logout()
    assert "LOGIN" in fake.commands
    assert "AUTHENTICATE" not in fake.commands
    assert fake.literals == ["pässwörd".encode()]


def test_sasl_plain_sends_authzid_and_authcid() -> None:
    with FakeImap() as fake:
        session = connect(fake.server(), Path(), mailbox="alice")
        session.login(
            imap_login(Credentials("sasl_plain", "archiver", "alice", Secret("pw"), Path()))
        )
        session.logout()
    assert fake.auth_payloads == [b"alice\0archiver\0pw"]


def test_refused_login_from_a_fake_never_echoes_the_password() -> None:
    def refuse(tag: str, args: str) -> bytes:
        # A careless server that echoes what it got.
        return f"{tag} NO [AUTHENTICATIONFAILED] bad login {args}\r\n".encode()

    with FakeImap({"LOGIN": refuse}, capabilities="IMAP4rev1") as fake:
        session = connect(fake.server(), Path(), mailbox="carol")
        with pytest.raises(LoginFailed) as caught:
            session.login(
                imap_login(
                    Credentials("user_password", "carol", None, Secret(DISTINCT_PASSWORD), Path())
                )
            )
        session.logout()
    assert "carol" in str(caught.value)
    assert "AUTHENTICATIONFAILED" in str(caught.value)
    assert DISTINCT_PASSWORD not in "".join(traceback.format_exception(caught.value))


def test_protocol_debug_stays_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    with FakeImap(capabilities="IMAP4rev1") as fake:
        session = connect(fake.server(), Path(), mailbox="m")
        session.login(
            imap_login(Credentials("user_password", "m", None, Secret(DISTINCT_PASSWORD), Path()))
        )
        session.logout()
    assert DISTINCT_PASSWORD not in caplog.text
    assert "LOGIN" not in caplog.text


# --- folders ------------------------------------------------------------------------------------


@dovecot_only
def test_list_folders_special_use_nested_non_ascii_and_noselect(dovecot: DovecotServer) -> None:
    user = new_user(dovecot)
    dovecot.create_folder(user, "Projekte/Übersicht")
    with dovecot.client(user) as imap:
        imap.create_folder("A/B")  # Dovecot leaves the missing parent A as \Noselect
    with open_session(dovecot, user) as session:
        folders = session.list_folders()
    by_path = {f.path: f for f in folders}
    assert [f.path for f in folders] == [
        "INBOX",
        *sorted(p for p in by_path if p != "INBOX"),
    ]
    for path, use in [
        ("Trash", "\\Trash"),
        ("Junk", "\\Junk"),
        ("Drafts", "\\Drafts"),
        ("Sent", "\\Sent"),
        ("Archive", "\\Archive"),
    ]:
        assert by_path[path].special_use == use
    nested = by_path["Projekte/Übersicht"]
    assert nested.wire_name == "Projekte/&ANw-bersicht"
    assert nested.delimiter == "/"
    assert nested.selectable
    assert not by_path["A"].selectable
    assert by_path["A/B"].selectable
    assert by_path["INBOX"].special_use is None


@dovecot_only
def test_examine_and_fetch_in_a_non_ascii_folder(dovecot: DovecotServer) -> None:
    user = new_user(dovecot)
    dovecot.create_folder(user, "Projekte/Übersicht")
    message = make_message(subject="Grüße aus dem Projekt", body="Ümlaute im Text.\n")
    uid = dovecot.append(user, "Projekte/Übersicht", message)
    with open_session(dovecot, user) as session:
        target = folder(session, "Projekte/Übersicht")
        state = session.examine(target)
        assert state.exists == 1
        assert session.status(target).uidnext == state.uidnext == uid + 1
        [fetched] = list(session.fetch_messages(session.search_uids()))
    assert fetched.uid == uid
    assert fetched.body == message


@dovecot_only
def test_folder_gone(dovecot: DovecotServer) -> None:
    user = new_user(dovecot)
    dovecot.create_folder(user, "Temporary")
    with open_session(dovecot, user) as session:
        gone = folder(session, "Temporary")
        dovecot.delete_folder(user, "Temporary")
        with pytest.raises(FolderGone, match="Temporary"):
            session.examine(gone)
        with pytest.raises(FolderGone, match="Temporary"):
            session.status(gone)
        # A \Noselect folder is refused but not gone.
        with dovecot.client(user) as imap:
            imap.create_folder("P/Q")
        parent = folder(session, "P")
        with pytest.raises(ProtocolError, match="Noselect"):
            session.examine(parent)
        with pytest.raises(ProtocolError, match="Noselect"):
            session.status(parent)
        # Forced through as if it were selectable: Dovecot says "doesn't exist", LIST knows better.
        forced = FolderInfo(parent.path, parent.wire_name, parent.delimiter, frozenset())
        with pytest.raises(ProtocolError, match="refused") as caught:
            session.examine(forced)
        assert not isinstance(caught.value, FolderGone)
        # The session still works.
        assert session.examine(folder(session, "INBOX")).exists == 0


def test_namespaces_cyrus_like_with_shared_and_other_users() -> None:
    """Cyrus: personal "INBOX." with ".", other users "user.", shared folders at ""."""

    def namespace(tag: str, args: str) -> bytes:
        return lines('* NAMESPACE (("INBOX." ".")) (("user." ".")) (("" "."))', f"{tag} OK done")

    def listing(tag: str, args: str) -> bytes:
        if args.startswith('"" "INBOX.*"'):
            return lines(
                '* LIST (\\HasNoChildren \\Sent) "." INBOX.Sent',
                '* LIST (\\HasChildren) "." INBOX.Projekte',
                '* LIST (\\HasNoChildren) "." "INBOX.Projekte.&ANw-bersicht"',
                '* LIST (\\Noselect \\HasChildren) "." INBOX.Leer',
                '* LIST (\\HasNoChildren) "." INBOX.Leer.Kind',
                f"{tag} OK done",
            )
        if args.startswith('"" "INBOX"'):
            return lines('* LIST (\\HasChildren) "." INBOX', f"{tag} OK done")
        return lines(
            '* LIST (\\HasNoChildren) "." user.bob.Sent',
            '* LIST (\\HasNoChildren) "." public',
            f"{tag} OK done",
        )

    with FakeImap(
        {"NAMESPACE": namespace, "LIST": listing},
        capabilities="IMAP4rev1 AUTH=PLAIN NAMESPACE",
    ) as fake:
        session = fake_login(fake)
        folders = session.list_folders()
        session.logout()
    assert [(f.path, f.wire_name) for f in folders] == [
        ("INBOX", "INBOX"),
        ("Leer", "INBOX.Leer"),
        ("Leer/Kind", "INBOX.Leer.Kind"),
        ("Projekte", "INBOX.Projekte"),
        ("Projekte/Übersicht", "INBOX.Projekte.&ANw-bersicht"),
        ("Sent", "INBOX.Sent"),
    ]
    assert not folders[1].selectable
    assert folders[-1].special_use == "\\Sent"


def test_namespace_prefix_shown_by_list_is_skipped_with_dovecot_like_shared() -> None:
    def namespace(tag: str, args: str) -> bytes:
        return lines('* NAMESPACE (("" "/")) (("Other/" "/")) (("Public/" "/"))', f"{tag} OK x")

    def listing(tag: str, args: str) -> bytes:
        return lines(
            '* LIST (\\HasNoChildren) "/" INBOX',
            '* LIST (\\HasNoChildren \\Trash) "/" Trash',
            '* LIST (\\Noselect \\HasChildren) "/" Other',
            '* LIST (\\HasNoChildren) "/" Other/bob/INBOX',
            '* LIST (\\Noselect \\HasChildren) "/" Public',
            '* LIST (\\HasNoChildren) "/" Public/News',
            '* LIST (\\HasNoChildren) "/" Publications',
            f"{tag} OK done",
        )

    with FakeImap(
        {"NAMESPACE": namespace, "LIST": listing},
        capabilities="IMAP4rev1 AUTH=PLAIN NAMESPACE LIST-EXTENDED SPECIAL-USE",
    ) as fake:
        session = fake_login(fake)
        paths = [f.path for f in session.list_folders()]
        session.logout()
    assert paths == ["INBOX", "Publications", "Trash"]
    assert "LIST" in fake.commands


def test_list_without_namespace_uses_the_list_delimiter_and_return_special_use() -> None:
    seen: list[str] = []

    def listing(tag: str, args: str) -> bytes:
        seen.append(args)
        if args == '"" ""':
            return lines('* LIST (\\Noselect) "." ""', f"{tag} OK done")
        return lines(
            '* LIST (\\HasNoChildren) "." INBOX',
            '* LIST (\\HasNoChildren \\Junk) "." Spam.Alt',
            f"{tag} OK done",
        )

    with FakeImap(
        {"LIST": listing}, capabilities="IMAP4rev1 AUTH=PLAIN LIST-EXTENDED SPECIAL-USE"
    ) as fake:
        session = fake_login(fake)
        folders = session.list_folders()
        session.logout()
    assert [f.path for f in folders] == ["INBOX", "Spam/Alt"]
    assert folders[1].special_use == "\\Junk"
    assert '"" "*" RETURN (SPECIAL-USE)' in seen


def test_examine_without_uidnext_falls_back_to_status_then_max_uid() -> None:
    def examine(tag: str, args: str) -> bytes:
        return lines("* 3 EXISTS", "* OK [UIDVALIDITY 7] ok", f"{tag} OK [READ-ONLY] done")

    def status_without_uidnext(tag: str, args: str) -> bytes:
        return lines(f"* STATUS {args.split()[0]} (UIDVALIDITY 7)", f"{tag} OK done")

    def search(tag: str, args: str) -> bytes:
        return lines("* SEARCH 4 10 2", f"{tag} OK done")

    with FakeImap(
        {"EXAMINE": examine, "STATUS": status_without_uidnext, "UID SEARCH": search}
    ) as fake:
        session = fake_login(fake)
        state = session.examine(FolderInfo("INBOX", "INBOX", "/", frozenset()))
        session.logout()
    assert (state.uidvalidity, state.uidnext, state.exists) == (7, 11, 3)
    assert fake.commands.index("STATUS") < fake.commands.index("UID SEARCH")


def test_fetch_skips_expunged_uids_even_when_the_server_says_no() -> None:
    def fetch(tag: str, args: str) -> bytes:
        return lines(
            '* 1 FETCH (UID 3 FLAGS (\\Seen) INTERNALDATE "01-Feb-2024 10:00:00 +0100" BODY[] {5}',
            b"hello)\r\n",
            "* 2 FETCH (FLAGS (\\Flagged))",  # unsolicited: no UID
            f"{tag} NO [EXPUNGEISSUED] Some messages were expunged",
        )

    with FakeImap({"UID FETCH": fetch}) as fake:
        session = fake_login(fake)
        session.examine(FolderInfo("INBOX", "INBOX", "/", frozenset()))
        fetched = list(session.fetch_messages([2, 3]))
        session.logout()
    assert [(m.uid, m.body, m.flags) for m in fetched] == [(3, b"hello", ("\\Seen",))]
    assert fetched[0].internal_date == dt.datetime(
        2024, 2, 1, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))
    )


def test_only_read_only_commands_are_sent() -> None:
    def fetch(tag: str, args: str) -> bytes:
        return lines(
            '* 1 FETCH (UID 1 RFC822.SIZE 5 FLAGS () INTERNALDATE "01-Feb-2024 10:00:00 +0000"'
            " BODY[] {5}",
            b"hello)\r\n",
            f"{tag} OK done",
        )

    def listing(tag: str, args: str) -> bytes:
        return lines('* LIST () "/" INBOX', f"{tag} OK done")

    def status(tag: str, args: str) -> bytes:
        return lines("* STATUS INBOX (UIDVALIDITY 1 UIDNEXT 2 MESSAGES 1)", f"{tag} OK done")

    def search(tag: str, args: str) -> bytes:
        return lines("* SEARCH 1", f"{tag} OK done")

    replies: dict[str, Reply] = {
        "UID FETCH": fetch,
        "LIST": listing,
        "STATUS": status,
        "UID SEARCH": search,
    }
    with FakeImap(replies) as fake, fake_login(fake) as session:
        [inbox] = session.list_folders()
        session.status(inbox)
        session.examine(inbox)
        uids = session.search_uids()
        sizes = session.fetch_sizes(uids)
        assert [m.body for m in session.fetch_messages(uids, sizes=sizes)] == [b"hello"]
    allowed = {
        "CAPABILITY",
        "AUTHENTICATE",
        "LOGIN",
        "LIST",
        "STATUS",
        "EXAMINE",
        "UID SEARCH",
        "UID FETCH",
        "NOOP",
        "LOGOUT",
    }
    assert set(fake.commands) <= allowed, fake.commands
    assert "SELECT" not in fake.commands
    # EXAMINE alone keeps \Seen unset on most servers; BODY.PEEK keeps it on all of them.
    body_fetches = [line for line in fake.lines if "BODY" in line]
    assert body_fetches
    assert all("BODY.PEEK[]" in line for line in body_fetches), body_fetches


class CyrusLikeDovecot(DovecotServer):
    """Dovecot with a Cyrus-like personal namespace ``INBOX.`` (separator ``.``) and a
    public namespace ``Public.`` that LIST shows next to it."""

    def _write_config(self) -> None:
        super()._write_config()
        text = self.config_file.read_text(encoding="utf-8")
        personal = "  separator = /\n  prefix =\n"
        assert personal in text
        text = text.replace(personal, "  separator = .\n  prefix = INBOX.\n")
        public = self.directory / "public"
        public.mkdir(mode=0o777, exist_ok=True)
        public.chmod(0o777)
        text += (
            "namespace public {\n  type = public\n  separator = .\n  prefix = Public.\n"
            f"  location = maildir:{public}:LAYOUT=fs:INDEX=~/public-index\n"
            "  list = yes\n  subscriptions = no\n}\n"
        )
        self.config_file.write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def cyrus_like() -> Iterator[CyrusLikeDovecot]:
    if find_dovecot() is None:
        pytest.skip("dovecot binary not found")
    with CyrusLikeDovecot(users={"alice": "alice-secret"}) as server:
        yield server


@dovecot_only
def test_cyrus_like_namespace_on_a_real_server(cyrus_like: CyrusLikeDovecot) -> None:
    cyrus_like.create_folder("alice", "INBOX.Projekte")
    cyrus_like.create_folder("alice", "INBOX.Projekte.Übersicht")
    cyrus_like.create_folder("alice", "Public.News")
    message = make_message(subject="Cyrus-artig", body="Grüße\n")
    uid = cyrus_like.append("alice", "INBOX.Projekte.Übersicht", message)
    with open_session(cyrus_like, "alice") as session:
        folders = session.list_folders()
        assert [f.path for f in folders] == [
            "INBOX",
            "Archive",
            "Drafts",
            "Junk",
            "Projekte",
            "Projekte/Übersicht",
            "Sent",
            "Trash",
        ]
        by_path = {f.path: f for f in folders}
        assert by_path["Sent"].wire_name == "INBOX.Sent"
        assert by_path["Sent"].special_use == "\\Sent"
        target = by_path["Projekte/Übersicht"]
        assert target.wire_name == "INBOX.Projekte.&ANw-bersicht"
        assert target.delimiter == "."
        assert session.examine(target).exists == 1
        [fetched] = list(session.fetch_messages(session.search_uids()))
    assert (fetched.uid, fetched.body) == (uid, message)


# --- folder state and messages ------------------------------------------------------------------


@dovecot_only
def test_examine_status_search_and_sizes_follow_appends(dovecot: DovecotServer) -> None:
    user = new_user(dovecot)
    with open_session(dovecot, user) as session:
        inbox = folder(session, "INBOX")
        empty = session.examine(inbox)
        assert empty.exists == 0
        assert session.search_uids() == []
        assert session.status(inbox) == empty
        assert empty.highestmodseq is not None  # Dovecot offers CONDSTORE

        messages = [make_message(subject=f"m{i}", size=1000 + 500 * i) for i in range(3)]
        uids = [dovecot.append(user, "INBOX", m) for m in messages]
        after = session.status(inbox)
        assert after.uidvalidity == empty.uidvalidity
        assert after.exists == 3
        assert after.uidnext == uids[-1] + 1 > empty.uidnext
        assert after.highestmodseq is not None
        assert empty.highestmodseq is not None
        assert after.highestmodseq > empty.highestmodseq

        state = session.examine(inbox)
        assert (state.exists, state.uidnext) == (3, after.uidnext)
        assert session.search_uids() == uids
        sizes = session.fetch_sizes([*uids, uids[-1] + 100])
        assert sizes == {uid: len(m) for uid, m in zip(uids, messages, strict=True)}


@dovecot_only
def test_fetch_batches_by_count_and_by_bytes_byte_exact(dovecot: DovecotServer) -> None:
    user = new_user(dovecot)
    messages = [make_message(subject=f"big {i}", size=300 * 1024) for i in range(5)]
    uids = [dovecot.append(user, "INBOX", m) for m in messages]
    expected = dict(zip(uids, messages, strict=True))
    with open_session(dovecot, user) as session:
        session.examine(folder(session, "INBOX"))
        sizes = session.fetch_sizes(uids)
        fetched = list(session.fetch_messages(uids, max_bytes=700 * 1024, sizes=sizes))
        assert [m.uid for m in fetched] == uids
        assert {m.uid: m.body for m in fetched} == expected
        assert session.stats.fetch_commands == 3
        assert session.stats.largest_fetch_bytes <= 700 * 1024
        assert session.stats.largest_fetch_count == 2

        before = session.stats.fetch_commands
        by_count = list(session.fetch_messages(list(reversed(uids)), max_count=2))
        assert [m.uid for m in by_count] == uids
        assert session.stats.fetch_commands - before == 3
        assert all(m.internal_date is not None and m.internal_date.tzinfo for m in by_count)


@dovecot_only
def test_large_message_byte_exact_and_never_marked_seen(dovecot: DovecotServer) -> None:
    user = new_user(dovecot)
    large = make_message(subject="six megabytes", size=6 * 1024 * 1024)
    small = make_message(subject="small", body="Zeile mit Ümlaut\nund \r\n CRLF\n")
    flagged = make_message(subject="flagged")
    uid_large = dovecot.append(user, "INBOX", large)
    uid_small = dovecot.append(user, "INBOX", small)
    uid_flagged = dovecot.append(user, "INBOX", flagged, flags=["\\Flagged", "$Custom"])
    assert unseen(dovecot, user, "INBOX") == {uid_large, uid_small, uid_flagged}
    with open_session(dovecot, user) as session:
        session.examine(folder(session, "INBOX"))
        uids = session.search_uids()
        sizes = session.fetch_sizes(uids)
        fetched = {m.uid: m for m in session.fetch_messages(uids, max_bytes=1024, sizes=sizes)}
    assert fetched[uid_large].body == large
    assert fetched[uid_small].body == small
    assert set(fetched[uid_flagged].flags) == {"\\Flagged", "$Custom"}
    assert "\\Seen" not in fetched[uid_small].flags
    assert unseen(dovecot, user, "INBOX") == {uid_large, uid_small, uid_flagged}


@dovecot_only
def test_message_expunged_meanwhile_is_not_yielded(dovecot: DovecotServer) -> None:
    user = new_user(dovecot)
    uids = [dovecot.append(user, "INBOX", make_message(subject=f"e{i}")) for i in range(3)]
    with open_session(dovecot, user) as session:
        session.examine(folder(session, "INBOX"))
        assert session.search_uids() == uids
        with dovecot.client(user) as imap:
            imap.select_folder("INBOX")
            imap.delete_messages([uids[1]])
            imap.expunge()
        # Examined again (as a retry would), the old UID list still works.
        assert session.examine(folder(session, "INBOX")).exists == 2
        fetched = [m.uid for m in session.fetch_messages([*uids, uids[-1] + 50])]
        sizes = session.fetch_sizes(uids)
    assert fetched == [uids[0], uids[2]]
    assert set(sizes) == {uids[0], uids[2]}


def test_methods_need_an_examined_folder() -> None:
    with FakeImap() as fake, fake_login(fake) as session:
        with pytest.raises(RuntimeError, match="examine"):
            session.search_uids()
        with pytest.raises(RuntimeError, match="examine"):
            list(session.fetch_messages([1]))


@dovecot_only
def test_logout_never_raises(dovecot: DovecotServer) -> None:
    user = new_user(dovecot)
    session = connect(bed_server(dovecot), Path(), mailbox=user)
    session.login(imap_login(master(dovecot, user)))
    session._channel.imap.sock.close()  # the connection breaks under the session
    session.logout()
    session.logout()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_ssl_context_minimum_version_is_tls12(tmp_path: Path) -> None:
    """A server that speaks only TLS 1.1 is refused in the handshake."""
    cert = tmp_path / "cert.pem"
    key = tmp_path / "key.pem"
    import subprocess

    result = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip("openssl not available")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    try:
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot serve TLS 1.1")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with contextlib.suppress(OSError, ssl.SSLError):
                context.wrap_socket(conn, server_side=True).sendall(b"* OK hi\r\n")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    server = Server(
        host="127.0.0.1", port=port, security="tls", accept_all_certificates=True, timeout=5
    )
    try:
        with pytest.raises(ConnectFailed, match="TLS handshake failed"):
            connect(server, tmp_path, mailbox="x")
    finally:
        listener.close()
        thread.join(5)
