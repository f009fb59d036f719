"""Folder states with the listing (LIST-STATUS, RFC 5819) and fewer round trips per mailbox.

The real Dovecot offers LIST-STATUS, SASL-IR and CAPABILITY in its answers: a plan sends
no STATUS, no CAPABILITY of its own after login, and still plans every folder that
changed (new mail, a new UIDVALIDITY, flags under a flag filter with CONDSTORE). The
scripted server sends answers that do not fit: a STATUS for a folder not listed or not
asked about, a listed folder without status, with an incomplete one or with two; none
of them is ever taken for another folder's state.
"""

from __future__ import annotations

import imaplib
from pathlib import Path
from typing import Any

import pytest

from imapsync_decl.config.imap_access import imap_endpoint, imap_login
from imapsync_decl.config.resolve import Credentials
from imapsync_decl.imap.connection import Connection
from imapsync_decl.imap.errors import ImapError, ProtocolError
from imapsync_decl.imap.facts import FolderInfo, FolderState
from imapsync_decl.imap.session import ImapSession
from imapsync_decl.secrets import Secret

from bed import Bed, seed
from servers.dovecot import make_message
from servers.fake_imap import FakeImap, lines


@pytest.fixture
def sent_commands(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The command lines every connection sends (verb and arguments, no literals), and
    ``= VERB`` where the client has read the tagged answer of one."""
    sent: list[str] = []
    command = Connection._command
    complete: Any = vars(imaplib.IMAP4)["_command_complete"]  # imaplib has no types

    def spy(self: Connection, name: str, *args: Any) -> bytes:
        shown = " ".join(str(getattr(a, "value", a)) for a in args if a is not None)
        sent.append(f"{name} {shown}".strip() if name != "AUTHENTICATE" else name)
        return command(self, name, *args)

    def completed(self: Connection, name: str, tag: bytes) -> Any:
        answer = complete(self, name, tag)
        sent.append(f"= {name}")
        return answer

    monkeypatch.setattr(Connection, "_command", spy)
    monkeypatch.setattr(Connection, "_command_complete", completed)
    return sent


def verbs(sent: list[str]) -> list[str]:
    return [line.split(" ", 1)[0] for line in sent if not line.startswith("=")]


def status_events(sent: list[str]) -> list[str]:
    """``STATUS <folder>`` for each STATUS sent, ``=`` for each answer read."""
    return [
        "=" if line.startswith("=") else line.rsplit(" (", 1)[0]
        for line in sent
        if line.startswith(("STATUS", "= STATUS"))
    ]


@pytest.fixture
def without_list_status(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions that do as if the server did not offer LIST-STATUS."""
    refresh = ImapSession._refresh_capabilities

    def capabilities(self: ImapSession) -> None:
        refresh(self)
        self._channel.capabilities -= {"LIST-STATUS"}

    monkeypatch.setattr(ImapSession, "_refresh_capabilities", capabilities)


def folders_of(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (mailbox,) = plan["profiles"][0]["mailboxes"]
    return {f["path"]: f for f in mailbox["folders"]}


# --- the real Dovecot ---------------------------------------------------------------------------


@pytest.mark.dovecot
def test_a_plan_takes_folder_states_from_the_listing_and_plans_every_change(
    bed: Bed, sent_commands: list[str]
) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 2)
    seed(bed, user, "Projekt", 2)
    seed(bed, user, "Kunden", 1)
    bed.master_profile("p", [user])
    assert bed.apply_json()[0] == 0

    sent_commands.clear()
    code, plan = bed.plan_json()
    assert code == 0
    assert {f["note"] for f in folders_of(plan).values()} == {"up to date"}
    assert "STATUS" not in verbs(sent_commands)
    assert verbs(sent_commands).count("LIST") == 1
    (listing,) = [c for c in sent_commands if c.startswith("LIST")]
    assert "STATUS (UIDVALIDITY UIDNEXT MESSAGES HIGHESTMODSEQ)" in listing
    # SASL-IR and the capabilities in the login answer: no round trip for either.
    assert verbs(sent_commands) == [
        *("STARTTLS", "CAPABILITY", "AUTHENTICATE", "NAMESPACE", "LIST", "LOGOUT")
    ]

    # New mail in one folder, a new UIDVALIDITY in another: both planned, the third not.
    seed(bed, user, "INBOX", 1, tag="new")
    bed.server.delete_folder(user, "Projekt")
    bed.server.create_folder(user, "Projekt")
    bed.server.append(user, "Projekt", make_message(subject="again", body="again\n"))
    sent_commands.clear()
    code, plan = bed.plan_json()
    folders = folders_of(plan)
    assert folders["INBOX"]["action"] == "archive"
    assert folders["INBOX"]["messages"] == 1
    assert folders["Projekt"]["action"] == "rescan"
    assert folders["Kunden"]["note"] == "up to date"
    assert "STATUS" not in verbs(sent_commands)
    assert bed.apply_json()[1]["totals"]["archived"] == 2


@pytest.mark.dovecot
def test_a_flag_change_under_a_flag_filter_is_planned_from_the_listed_modseq(
    bed: Bed, sent_commands: list[str]
) -> None:
    user = bed.new_user()
    bed.server.append(user, "INBOX", make_message(subject="read", body="r\n"), flags=["\\Seen"])
    unread = bed.server.append(user, "INBOX", make_message(subject="unread", body="u\n"))
    bed.master_profile("p", [user], folders="filters: {skip_unread: true}\n")
    assert bed.apply_json()[0] == 0
    _code, plan = bed.plan_json()
    assert folders_of(plan)["INBOX"]["note"] == "up to date"

    with bed.server.client(user) as client:
        client.select_folder("INBOX")
        client.add_flags([unread], ["\\Seen"])
    sent_commands.clear()
    _code, plan = bed.plan_json()
    assert folders_of(plan)["INBOX"]["messages"] == 1
    assert "STATUS" not in verbs(sent_commands)


@pytest.mark.dovecot
@pytest.mark.usefixtures("without_list_status")
def test_without_list_status_the_status_commands_go_in_one_round_trip(
    bed: Bed, sent_commands: list[str]
) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 2)
    seed(bed, user, "Projekt", 2)
    seed(bed, user, "Kunden", 1)
    bed.master_profile("p", [user])
    assert bed.apply_json()[0] == 0
    seed(bed, user, "INBOX", 1, tag="new")
    bed.server.delete_folder(user, "Projekt")
    bed.server.create_folder(user, "Projekt")
    bed.server.append(user, "Projekt", make_message(subject="again", body="again\n"))

    sent_commands.clear()
    _code, plan = bed.plan_json()
    folders = folders_of(plan)
    assert folders["INBOX"]["messages"] == 1
    assert folders["Projekt"]["action"] == "rescan"
    assert folders["Kunden"]["note"] == "up to date"
    (listing,) = [c for c in sent_commands if c.startswith("LIST")]
    assert "STATUS" not in listing
    # Every STATUS sent before the first answer is read.
    events = status_events(sent_commands)
    asked = [e for e in events if e != "="]
    assert {"STATUS INBOX", "STATUS Kunden", "STATUS Projekt"} <= set(asked)
    assert events == [*asked, *("=",) * len(asked)]


# --- a scripted server --------------------------------------------------------------------------

CAPS = "IMAP4rev1 AUTH=PLAIN LIST-EXTENDED LIST-STATUS"


def state(uidvalidity: int, uidnext: int, messages: int) -> str:
    return f"(UIDVALIDITY {uidvalidity} UIDNEXT {uidnext} MESSAGES {messages})"


def status_reply(tag: str, args: str) -> bytes:
    """STATUS answers naming the folder asked about: UIDVALIDITY 500 + its name's length."""
    name = args.rsplit(" (", 1)[0].strip('"')
    return lines(f'* STATUS "{name}" {state(500 + len(name), 7, 6)}', f"{tag} OK done")


def session_on(fake: FakeImap) -> ImapSession:
    session = ImapSession.connect(imap_endpoint(fake.server(), Path()), mailbox="m")
    session.login(imap_login(Credentials("user_password", "u", None, Secret("pw"), Path())))
    return session


def test_listed_states_that_do_not_fit_a_folder_are_never_used_for_it() -> None:
    def listing(tag: str, args: str) -> bytes:
        if args == '"" ""':  # the hierarchy delimiter (no NAMESPACE)
            return lines('* LIST (\\Noselect) "/" ""', f"{tag} OK done")
        assert "RETURN (STATUS (UIDVALIDITY UIDNEXT MESSAGES))" in args
        return lines(
            '* LIST () "/" INBOX',
            f"* STATUS INBOX {state(1, 11, 10)}",
            # Not listed: never anyone's state.
            f'* STATUS "Other" {state(2, 22, 20)}',
            '* LIST () "/" Sent',
            "* STATUS Sent (UIDVALIDITY 3 MESSAGES 30)",  # incomplete
            '* LIST () "/" Drafts',
            f"* STATUS Drafts {state(4, 44, 40)}",
            f"* STATUS Drafts {state(5, 55, 50)}",  # two answers: which one is true?
            '* LIST () "/" Archive',  # no status at all
            b"* STATUS {14}\r\nArchive\r\nZ9 X " + state(6, 66, 60).encode() + b"\r\n",
            '* LIST (\\Noselect) "/" Parent',
            f"{tag} OK done",
        )

    with FakeImap({"LIST": listing, "STATUS": status_reply}, capabilities=CAPS) as fake:
        session = session_on(fake)
        folders = {f.path: f for f in session.list_folders()}
        states = {path: session.folder_state(f) for path, f in folders.items() if f.selectable}
        session.logout()
    assert set(folders) == {"INBOX", "Sent", "Drafts", "Archive", "Parent"}
    assert states["INBOX"] == FolderState(1, 11, 10)
    for path in ("Sent", "Drafts", "Archive"):
        assert states[path] == FolderState(500 + len(path), 7, 6), path
    asked = [line.split(" ", 2)[2] for line in fake.lines if " STATUS " in line]
    assert sorted(asked) == [
        f'"{p}" (UIDVALIDITY UIDNEXT MESSAGES)' for p in ("Archive", "Drafts", "Sent")
    ]


def test_an_unreadable_listed_status_leaves_every_folder_to_status() -> None:
    def listing(tag: str, args: str) -> bytes:
        if args == '"" ""':
            return lines('* LIST (\\Noselect) "/" ""', f"{tag} OK done")
        return lines(
            '* LIST () "/" INBOX',
            f"* STATUS INBOX {state(1, 11, 10)}",
            '* LIST () "/" Sent',
            "* STATUS Sent (UIDNEXT 5",  # unbalanced
            f"{tag} OK done",
        )

    with FakeImap({"LIST": listing, "STATUS": status_reply}, capabilities=CAPS) as fake:
        session = session_on(fake)
        folders = session.list_folders()
        states = [session.folder_state(f) for f in folders]
        session.logout()
    assert [f.path for f in folders] == ["INBOX", "Sent"]
    assert states == [FolderState(505, 7, 6), FolderState(504, 7, 6)]


def test_a_listed_state_is_used_once() -> None:
    def listing(tag: str, args: str) -> bytes:
        if args == '"" ""':
            return lines('* LIST (\\Noselect) "/" ""', f"{tag} OK done")
        return lines('* LIST () "/" INBOX', f"* STATUS INBOX {state(1, 11, 10)}", f"{tag} OK done")

    with FakeImap({"LIST": listing, "STATUS": status_reply}, capabilities=CAPS) as fake:
        session = session_on(fake)
        (inbox,) = session.list_folders()
        assert session.folder_state(inbox) == FolderState(1, 11, 10)
        assert session.folder_state(inbox) == FolderState(505, 7, 6)
        session.logout()
    assert fake.commands.count("STATUS") == 1


def test_the_examined_folder_gets_no_listed_state() -> None:
    """The server may list the examined folder with the session's older view of it."""

    def listing(tag: str, args: str) -> bytes:
        if args == '"" ""':
            return lines('* LIST (\\Noselect) "/" ""', f"{tag} OK done")
        return lines('* LIST () "/" INBOX', f"* STATUS INBOX {state(1, 11, 10)}", f"{tag} OK done")

    with FakeImap({"LIST": listing, "STATUS": status_reply}, capabilities=CAPS) as fake:
        session = session_on(fake)
        session.examine(FolderInfo("INBOX", "INBOX", "/", frozenset()))
        (inbox,) = session.list_folders()
        assert session.folder_state(inbox) == FolderState(505, 7, 6)
        session.logout()
    assert fake.commands[-3:] == ["NOOP", "STATUS", "LOGOUT"]


@pytest.mark.parametrize(
    "answer",
    [
        [f"* STATUS Other {state(2, 22, 20)}"],
        [f"* STATUS INBOX/Sub {state(2, 22, 20)}"],
        [],
    ],
    ids=["another-folder", "a-sub-folder", "none"],
)
def test_a_status_answer_about_another_folder_is_refused(answer: list[str]) -> None:
    def status(tag: str, args: str) -> bytes:
        return lines(*answer, f"{tag} OK done")

    with FakeImap({"STATUS": status}) as fake:
        session = session_on(fake)
        with pytest.raises(ProtocolError, match="no STATUS response"):
            session.status(FolderInfo("INBOX", "INBOX", "/", frozenset()))
        session.logout()


def test_of_several_status_answers_the_one_naming_the_folder_counts() -> None:
    def status(tag: str, args: str) -> bytes:
        return lines(
            f"* STATUS inbox {state(1, 11, 10)}",
            f"* STATUS Other {state(2, 22, 20)}",
            f"{tag} OK done",
        )

    with FakeImap({"STATUS": status}) as fake:
        session = session_on(fake)
        assert session.status(FolderInfo("INBOX", "INBOX", "/", frozenset())) == FolderState(
            1, 11, 10
        )
        session.logout()


def test_sasl_ir_and_greeting_capabilities_save_round_trips() -> None:
    greeting = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n"
    with FakeImap(greeting=greeting) as fake:
        session = ImapSession.connect(imap_endpoint(fake.server(), Path()), mailbox="m")
        session.login(
            imap_login(Credentials("sasl_plain", "archiver", "alice", Secret("pw"), Path()))
        )
        session.logout()
    assert fake.commands[:2] == ["AUTHENTICATE", "CAPABILITY"]
    # The payload goes with the command (no continuation to wait for).
    assert fake.lines[0].split(" ")[1:3] == ["AUTHENTICATE", "PLAIN"]
    assert len(fake.lines[0].split(" ")) == 4
    assert fake.auth_payloads == [b"alice\0archiver\0pw"]


def test_pipelined_status_answers_that_do_not_fit_leave_the_folder_to_be_asked_alone(
    sent_commands: list[str],
) -> None:
    def listing(tag: str, args: str) -> bytes:
        if args == '"" ""':
            return lines('* LIST (\\Noselect) "/" ""', f"{tag} OK done")
        assert "STATUS" not in args
        names = ("INBOX", "Sent", "Drafts", "Gone", "Twice")
        return lines(*(f'* LIST () "/" {n}' for n in names), f"{tag} OK done")

    def status(tag: str, args: str) -> bytes:
        name = args.rsplit(" (", 1)[0].strip('"')
        if name == "Gone":  # refused, whatever came before
            return lines(f"* STATUS Gone {state(3, 33, 30)}", f"{tag} NO [NONEXISTENT] gone")
        if name == "Drafts":  # an answer about another folder
            return lines(f"* STATUS Other {state(9, 99, 90)}", f"{tag} OK done")
        if name == "Twice":
            return lines(
                f"* STATUS Twice {state(7, 77, 70)}",
                f"* STATUS Twice {state(8, 88, 80)}",
                f"{tag} OK done",
            )
        return status_reply(tag, args)

    caps = "IMAP4rev1 AUTH=PLAIN"
    with FakeImap({"LIST": listing, "STATUS": status}, capabilities=caps) as fake:
        session = session_on(fake)
        folders = session.list_folders()
        sent_commands.clear()
        session.prefetch_states(folders)
        pipelined = status_events(sent_commands)
        states: dict[str, FolderState | str] = {}
        for folder in folders:
            try:
                states[folder.path] = session.folder_state(folder)
            except ImapError as exc:
                states[folder.path] = type(exc).__name__
        session.logout()
    assert pipelined == [*(f"STATUS {f.path}" for f in folders), *("=",) * len(folders)]
    assert states["INBOX"] == FolderState(505, 7, 6)
    assert states["Sent"] == FolderState(504, 7, 6)
    assert states["Drafts"] == "ProtocolError"
    assert states["Gone"] in {"FolderGone", "ProtocolError"}
    assert states["Twice"] == FolderState(8, 88, 80)  # asked alone: the last answer counts
    # Drafts, Gone and Twice were asked alone once more.
    alone = [e for e in status_events(sent_commands)[len(pipelined) :] if e != "="]
    assert alone == ["STATUS Drafts", "STATUS Gone", "STATUS Twice"]
    assert fake.commands.count("STATUS") == len(folders) + 3
