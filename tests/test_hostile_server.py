"""Hostile and broken servers, and hostile values on their way to a server.

A scripted server on 127.0.0.1 (``servers/fake_imap.py``) injects commands, forges
responses before STARTTLS, announces huge literals, floods untagged responses and
trickles bytes. Every test asserts on errors, bytes on the wire and memory, not on
elapsed time; the waits inside the scripts only pace the server.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from imapsync_decl.config.documents import Server
from imapsync_decl.config.imap_access import imap_endpoint, imap_login
from imapsync_decl.config.resolve import Credentials
from imapsync_decl.imap import connection
from imapsync_decl.imap.errors import (
    ConnectFailed,
    ConnectionLost,
    ImapError,
    Interrupted,
    MessageTooLarge,
    ProtocolError,
    UnsafeValue,
)
from imapsync_decl.imap.facts import FolderInfo
from imapsync_decl.imap.session import ImapSession
from imapsync_decl.secrets import Secret

from helpers import write_config
from servers.certificates import CertificateError, make_self_signed
from servers.fake_imap import FakeImap, Reply, lines

INBOX = FolderInfo("INBOX", "INBOX", "/", frozenset())
INJECTED = "alice\r\nZ9 DELETE INBOX"
MiB = 1024 * 1024


def connect(server: Server, base_dir: Path, **options: Any) -> ImapSession:
    return ImapSession.connect(imap_endpoint(server, base_dir), **options)


def login(fake: FakeImap, credentials: Credentials | None = None, **server: object) -> ImapSession:
    session = connect(fake.server(**server), Path(), mailbox="m")
    session.login(
        imap_login(credentials or Credentials("user_password", "u", None, Secret("pw"), Path()))
    )
    return session


def user_password(username: str, password: str = "pw") -> Credentials:  # noqa: S107
    return Credentials("user_password", username, None, Secret(password), Path())


# --- item 6: CR, LF and NUL never reach the wire ------------------------------------------------


@pytest.mark.parametrize(
    ("capabilities", "credentials", "what"),
    [
        ("IMAP4rev1", user_password(INJECTED), "user name"),
        ("IMAP4rev1", user_password("alice", "pw\r\nZ9 DELETE INBOX"), "password"),
        ("IMAP4rev1 AUTH=PLAIN", user_password(INJECTED), "user name"),
        ("IMAP4rev1 AUTH=PLAIN", user_password("alice", "pw\0admin"), "password"),
        (
            "IMAP4rev1 AUTH=PLAIN",
            Credentials("sasl_plain", "archiver", INJECTED, Secret("pw"), Path()),
            "authorization identity",
        ),
        (
            "IMAP4rev1 AUTH=PLAIN",
            Credentials("sasl_plain", "archiver", "alice\0bob", Secret("pw"), Path()),
            "authorization identity",
        ),
    ],
    ids=[
        "login-user",
        "login-password",
        "plain-user",
        "plain-password-nul",
        "authzid",
        "authz-nul",
    ],
)
def test_a_login_with_cr_lf_or_nul_sends_nothing(
    capabilities: str, credentials: Credentials, what: str
) -> None:
    with FakeImap(capabilities=capabilities) as fake:
        session = connect(fake.server(), Path(), mailbox="alice")
        with pytest.raises(UnsafeValue, match=what) as caught:
            session.login(imap_login(credentials))
        session.logout()
    assert "LOGIN" not in fake.commands
    assert "AUTHENTICATE" not in fake.commands
    assert b"DELETE" not in fake.received
    assert b"pw" not in fake.received
    secret = credentials.resolve_password().reveal()
    assert secret not in str(caught.value)
    assert "nothing was sent" in str(caught.value)


@pytest.mark.parametrize("method", ["examine", "status", "open_for_deletion"])
def test_a_folder_name_with_cr_lf_or_nul_is_never_sent(method: str) -> None:
    with FakeImap() as fake:
        session = login(fake)
        for name in ("INBOX\r\nZ9 DELETE INBOX", "INBOX\0x", "INBOX\nZ9 DELETE INBOX"):
            hostile = FolderInfo("X", name, "/", frozenset())
            with pytest.raises(UnsafeValue, match="folder name"):
                getattr(session, method)(hostile)
        # The session is still usable: nothing half-sent.
        assert session.examine(INBOX).uidvalidity == 42
        session.logout()
    assert b"DELETE" not in fake.received
    assert b"\0" not in fake.received


@pytest.mark.parametrize(
    ("capabilities", "plus"), [("IMAP4rev1", b""), ("IMAP4rev1 LITERAL+", b"+")]
)
def test_non_ascii_strings_go_as_literals(capabilities: str, plus: bytes) -> None:
    """Synchronizing literals by default, non-synchronizing ones with LITERAL+."""
    name = "Übersicht"  # a raw 8-bit name, as some servers send them
    with FakeImap(capabilities=capabilities) as fake:
        session = login(fake, user_password("jörg", "pässwörd"))
        session.examine(FolderInfo(name, name, "/", frozenset()))
        session.logout()
    # LOGIN jörg pässwörd: two literals; EXAMINE of the name: a third one.
    assert fake.literals == ["jörg".encode(), "pässwörd".encode(), name.encode()]
    assert b"LOGIN {5" + plus + b"}\r\n" in fake.received
    assert b" {10" + plus + b"}\r\n" in fake.received
    assert b"EXAMINE {10" + plus + b"}\r\n" in fake.received
    assert fake.commands[:2] == ["CAPABILITY", "LOGIN"]


def test_list_names_with_cr_lf_or_nul_are_skipped_and_never_sent_back() -> None:
    def listing(tag: str, args: str) -> bytes:
        return lines(
            '* LIST () "/" INBOX',
            b'* LIST () "/" {22}\r\nINBOX\r\nZ9 DELETE INBOX\r\n',
            b'* LIST () "/" {5}\r\nA\0Bcd\r\n',
            '* LIST () "/" "Sent"',
            f"{tag} OK done",
        )

    with FakeImap({"LIST": listing}) as fake:
        session = login(fake)
        folders = session.list_folders()
        for folder in folders:
            session.examine(folder)
        session.logout()
    assert [f.wire_name for f in folders] == ["INBOX", "Sent"]
    assert b"DELETE" not in fake.received
    assert fake.commands.count("EXAMINE") == 2


def test_a_namespace_prefix_with_cr_lf_is_skipped() -> None:
    def namespace(tag: str, args: str) -> bytes:
        return lines(
            b'* NAMESPACE (("" "/") ({9}\r\nX\r\nDELETE "/")) NIL NIL\r\n', f"{tag} OK done"
        )

    def listing(tag: str, args: str) -> bytes:
        return lines('* LIST () "/" INBOX', f"{tag} OK done")

    with FakeImap(
        {"NAMESPACE": namespace, "LIST": listing}, capabilities="IMAP4rev1 AUTH=PLAIN NAMESPACE"
    ) as fake:
        session = login(fake)
        assert [f.path for f in session.list_folders()] == ["INBOX"]
        session.logout()
    assert b"DELETE" not in fake.received


# --- item 7: nothing from before STARTTLS survives it -------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    try:
        cert, key = make_self_signed(tmp_path_factory.mktemp("tls"))
    except CertificateError as error:
        pytest.skip(str(error))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return cert, context


def test_responses_injected_before_starttls_are_discarded(
    certificate: tuple[Path, ssl.SSLContext],
) -> None:
    cert, context = certificate

    def starttls(tag: str, args: str) -> bytes:
        # A man in the middle answers first: a namespace that hides every folder, and
        # capabilities the server does not have.
        return lines(
            '* NAMESPACE (("Hidden/" "/")) NIL NIL',
            "* CAPABILITY IMAP4rev1 AUTH=PLAIN NAMESPACE XFORGED LITERAL+",
            f"{tag} OK begin TLS now",
        )

    def namespace(tag: str, args: str) -> bytes:
        return lines('* NAMESPACE (("" "/")) NIL NIL', f"{tag} OK done")

    listed: list[str] = []

    def listing(tag: str, args: str) -> bytes:
        listed.append(args)
        return lines('* LIST () "/" INBOX', '* LIST () "/" Projects', f"{tag} OK done")

    replies: dict[str, Reply] = {"STARTTLS": starttls, "NAMESPACE": namespace, "LIST": listing}
    with FakeImap(replies, capabilities="IMAP4rev1 AUTH=PLAIN NAMESPACE", tls=context) as fake:
        server = fake.server(security="starttls", ca_file=str(cert))
        with connect(server, Path(), mailbox="m") as session:
            assert "XFORGED" not in session.capabilities
            session.login(imap_login(user_password("u")))
            assert "XFORGED" not in session.capabilities
            paths = [f.path for f in session.list_folders()]
            assert session.tls_version is not None
    assert paths == ["INBOX", "Projects"]
    assert listed == ['"" "*"']


def test_plaintext_after_the_starttls_answer_is_refused(
    certificate: tuple[Path, ssl.SSLContext],
) -> None:
    cert, context = certificate

    def starttls(tag: str, args: str) -> bytes:
        return lines(f"{tag} OK begin TLS now", '* NAMESPACE (("Hidden/" "/")) NIL NIL')

    with FakeImap({"STARTTLS": starttls}, tls=context) as fake:
        server = fake.server(security="starttls", ca_file=str(cert))
        with pytest.raises(ConnectFailed, match="STARTTLS answer"):
            connect(server, Path(), mailbox="m")


# --- item 8: bounded memory, idle deadlines, stop -----------------------------------------------


def fetch_replies(body: Callable[[str], bytes | Iterator[bytes]], size: int = 100) -> Reply:
    """UID FETCH: the RFC822.SIZE ``size`` for UID 1, and ``body(tag)`` for the body."""

    def fetch(tag: str, args: str) -> bytes | Iterator[bytes]:
        if "RFC822.SIZE" in args:
            return lines(f"* 1 FETCH (UID 1 RFC822.SIZE {size})", f"{tag} OK done")
        return body(tag)

    return fetch


def failing_with_peak(action: Callable[[], object]) -> tuple[ImapError, int]:
    """The error ``action`` raises, and the peak of traced memory while it ran."""
    tracemalloc.start()
    try:
        with pytest.raises(ImapError) as caught:
            action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return caught.value, peak


def test_a_huge_literal_after_a_small_size_fails_without_allocating_it() -> None:
    def body(tag: str) -> bytes:
        return b"* 1 FETCH (UID 1 BODY[] {8589934592}\r\n" + b"x" * 1000

    with FakeImap({"UID FETCH": fetch_replies(body)}) as fake:
        session = login(fake)
        session.examine(INBOX)
        sizes = session.fetch_sizes([1])
        assert sizes == {1: 100}
        error, peak = failing_with_peak(lambda: list(session.fetch_messages([1], sizes=sizes)))
        session.logout()
    assert isinstance(error, ProtocolError)
    assert "literal of 8589934592 bytes" in str(error)
    assert "RFC822.SIZE" in str(error)
    assert peak < 8 * MiB


def test_a_literal_beyond_max_message_size_fails_without_sizes() -> None:
    def body(tag: str) -> bytes:
        return b"* 1 FETCH (UID 1 BODY[] {2097152}\r\n" + b"x" * 1000

    with FakeImap({"UID FETCH": fetch_replies(body)}) as fake:
        session = login(fake, max_message_size=MiB)
        session.examine(INBOX)
        with pytest.raises(ProtocolError, match=r"literal of 2097152 bytes.*max_message_size"):
            list(session.fetch_messages([1]))
        session.logout()


def test_a_message_larger_than_max_message_size_is_not_fetched() -> None:
    with FakeImap({"UID FETCH": fetch_replies(lambda tag: b"", size=5 * MiB)}) as fake:
        session = login(fake, max_message_size=MiB)
        session.examine(INBOX)
        sizes = session.fetch_sizes([1])
        with pytest.raises(MessageTooLarge, match=r"UID 1 .* 5242880 bytes.*max_message_size"):
            list(session.fetch_messages([1], sizes=sizes))
        # Refused before asking: the session goes on.
        assert session.examine(INBOX).uidvalidity == 42
        session.logout()
    assert not [line for line in fake.lines if "BODY.PEEK" in line]


def test_an_announced_size_is_never_allocated_before_the_bytes_arrive() -> None:
    def body(tag: str) -> bytes:
        return b"* 1 FETCH (UID 1 BODY[] {209715200}\r\n" + b"x" * 4096

    with FakeImap({"UID FETCH": fetch_replies(body)}, drop_after={"UID FETCH"}) as fake:
        session = login(fake)  # max_message_size: 256 MiB, and no sizes: 200 MiB is allowed
        session.examine(INBOX)
        error, peak = failing_with_peak(lambda: list(session.fetch_messages([1])))
        session.logout()
    assert isinstance(error, ConnectionLost)
    assert peak < 8 * MiB


@pytest.mark.parametrize("line_size", [6, 64 * 1024])
def test_endless_untagged_responses_fail_the_command(
    monkeypatch: pytest.MonkeyPatch, line_size: int
) -> None:
    monkeypatch.setattr(connection, "MAX_UNTAGGED", 4 * MiB)
    flood = b"* OK " + b"x" * (line_size - 7) + b"\r\n"

    def noop(tag: str, args: str) -> Iterator[bytes]:
        chunk = flood * max(1, 256 * 1024 // len(flood))
        for _ in range(64 * MiB // len(chunk)):  # far more than the limit, then an end
            yield chunk
        yield f"{tag} OK done\r\n".encode()

    with FakeImap({"NOOP": noop}) as fake:
        session = login(fake)
        session.examine(INBOX)
        error, peak = failing_with_peak(lambda: session.status(INBOX))  # examined: NOOP first
        session.logout()
    assert isinstance(error, ProtocolError)
    assert f"more than {4 * MiB} bytes of responses" in str(error)
    assert peak < 24 * MiB


def test_a_line_longer_than_max_line_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "MAX_LINE", MiB)

    def search(tag: str, args: str) -> Iterator[bytes]:
        yield b"* SEARCH"
        for _ in range(64):
            yield b" 1" * (64 * 1024)
        yield f"\r\n{tag} OK done\r\n".encode()

    with FakeImap({"UID SEARCH": search}) as fake:
        session = login(fake)
        session.examine(INBOX)
        with pytest.raises(ProtocolError, match=f"line longer than {MiB} bytes"):
            session.search_uids()
        session.logout()


def trickle(data: bytes, every: float) -> Iterator[bytes]:
    """``data`` one byte at a time; then the script ends the connection."""
    for i in range(len(data)):
        yield data[i : i + 1]
        time.sleep(every)
    raise OSError("the script drops the connection")


def test_a_trickle_of_single_bytes_fails_within_the_idle_rule() -> None:
    """One byte every 0.5 s with timeout 2: every single read gets a byte in time, but no
    line completes and 16 KiB never arrive, so the command fails."""

    def listing(tag: str, args: str) -> Iterator[bytes]:
        return trickle(b'* LIST () "/" "A folder name that never ends"\r\n', every=0.5)

    with FakeImap({"LIST": listing}) as fake:
        session = login(fake, timeout=2)
        with pytest.raises(ConnectionLost, match="no answer within 2 s during LIST"):
            session.list_folders()
        session.logout()


def test_a_slow_but_steady_literal_succeeds() -> None:
    body = os.urandom(256 * 1024)

    def slow(tag: str) -> Iterator[bytes]:
        yield f"* 1 FETCH (UID 1 BODY[] {{{len(body)}}}\r\n".encode()
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]
            time.sleep(0.1)  # 80 KiB/s, several times the timeout in all
        yield f")\r\n{tag} OK done\r\n".encode()

    with FakeImap({"UID FETCH": fetch_replies(slow, size=len(body))}) as fake:
        session = login(fake, timeout=1)
        session.examine(INBOX)
        sizes = session.fetch_sizes([1])
        [message] = session.fetch_messages([1], sizes=sizes)
        session.logout()
    assert message.body == body


def steady_endless_literal(started: threading.Event) -> Callable[[str], Iterator[bytes]]:
    """A body of 200 MB sent at about 320 KB/s: progress all the time, no end in sight."""

    def body(tag: str) -> Iterator[bytes]:
        yield b"* 1 FETCH (UID 1 BODY[] {200000000}\r\n"
        started.set()
        while True:
            yield b"x" * 65536
            time.sleep(0.2)

    return body


def test_should_stop_interrupts_a_waiting_read() -> None:
    started, stop = threading.Event(), threading.Event()
    with FakeImap({"UID FETCH": fetch_replies(steady_endless_literal(started), 200_000_000)}) as fk:
        session = connect(fk.server(timeout=30), Path(), mailbox="m", should_stop=stop.is_set)
        session.login(imap_login(user_password("u")))
        session.examine(INBOX)
        sizes = session.fetch_sizes([1])

        def stop_once_started() -> None:
            if started.wait(30):
                stop.set()

        threading.Thread(target=stop_once_started, daemon=True).start()
        with pytest.raises(Interrupted, match="stop was requested during FETCH"):
            list(session.fetch_messages([1], sizes=sizes))
        session.logout()


def listing_inbox(tag: str, args: str) -> bytes:
    """LIST: the delimiter, then one folder, INBOX."""
    if args.startswith('"" ""'):
        return lines('* LIST (\\Noselect) "/" ""', f"{tag} OK done")
    return lines('* LIST (\\HasNoChildren) "/" INBOX', f"{tag} OK done")


def sigterm_apply(
    tmp_path: Path, fake: FakeImap, waiting: threading.Event, timeout: int, command: str = "apply"
) -> tuple[int, str]:
    """Run ``command`` (apply or plan) in a process against ``fake``; once ``waiting`` is
    set (the server holds it up), send SIGTERM; return the exit code and stderr (a hang
    fails the test)."""
    config = write_config(
        tmp_path / "profiles.d",
        {
            "p.yaml": f"""
                kind: Profile
                name: p
                server: {{host: 127.0.0.1, port: {fake.port}, security: plain, timeout: {timeout}}}
                source:
                  single: {{username: alice, password: {{env: FAKE_PW}}}}
            """
        },
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "imapsync_decl", command, "--config-dir", str(config)],
        env={**os.environ, "FAKE_PW": "pw"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert waiting.wait(60), f"{command} never reached the server's wait"
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    return process.returncode, err


def test_sigterm_during_a_steady_fetch_ends_apply_with_143(tmp_path: Path) -> None:
    started = threading.Event()
    replies: dict[str, Reply] = {
        "LIST": listing_inbox,
        "STATUS": lambda tag, args: lines(
            "* STATUS INBOX (UIDVALIDITY 42 UIDNEXT 2 MESSAGES 1)", f"{tag} OK done"
        ),
        "EXAMINE": lambda tag, args: lines(
            "* 1 EXISTS", "* OK [UIDVALIDITY 42] ok", "* OK [UIDNEXT 2] ok", f"{tag} OK done"
        ),
        "UID SEARCH": lambda tag, args: lines("* SEARCH 1", f"{tag} OK done"),
        "UID FETCH": fetch_replies(steady_endless_literal(started), size=200_000_000),
    }
    with FakeImap(replies) as fake:
        code, err = sigterm_apply(tmp_path, fake, started, timeout=30)
    assert code == 143, err


@pytest.mark.parametrize("command", ["apply", "plan"])
def test_sigterm_while_planning_waits_for_a_silent_server_ends_with_143(
    tmp_path: Path, command: str
) -> None:
    """The server never answers STATUS: SIGTERM during planning ends plan or apply at once."""
    asked = threading.Event()

    def silent_status(tag: str, args: str) -> Iterator[bytes]:
        asked.set()
        while True:  # nothing, ever: only the stop hook ends the wait
            time.sleep(0.2)
            yield b""

    with FakeImap({"LIST": listing_inbox, "STATUS": silent_status}) as fake:
        code, err = sigterm_apply(tmp_path, fake, asked, timeout=3600, command=command)
    assert code == 143, err


def test_should_stop_interrupts_a_silent_greeting() -> None:
    stop = threading.Event()
    with FakeImap(greeting=None) as fake:
        threading.Timer(0.3, stop.set).start()
        with pytest.raises(Interrupted, match="while connecting"):
            connect(fake.server(timeout=60), Path(), mailbox="m", should_stop=stop.is_set)
