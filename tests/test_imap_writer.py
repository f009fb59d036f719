"""Reading never writes: the session has no command that changes a server, the write
handle deletes only in the folder it opened, and a plan sends read-only commands only."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from imapsync_decl.imap.connection import Connection
from imapsync_decl.imap.errors import ConnectionLost, ProtocolError
from imapsync_decl.imap.facts import FolderInfo, FolderState
from imapsync_decl.imap.session import ImapSession
from imapsync_decl.imap.settings import Endpoint, Login
from imapsync_decl.imap.writer import FolderWriter
from imapsync_decl.secrets import Secret

from bed import Bed
from servers.dovecot import make_message
from servers.fake_imap import FakeImap, Reply, lines

INBOX = FolderInfo("INBOX", "INBOX", "/", frozenset())
ARCHIVE = FolderInfo("Archive", "Archive", "/", frozenset())
WRITES = {"mark_deleted", "expunge_uids", "select_for_deletion", "append", "create", "delete"}
READ_ONLY = {
    "CAPABILITY",
    "STARTTLS",
    "LOGIN",
    "AUTHENTICATE",
    "ID",
    "ENABLE",
    "NAMESPACE",
    "LIST",
    "STATUS",
    "EXAMINE",
    "UID SEARCH",
    "UID FETCH",
    "NOOP",
    "LOGOUT",
}


def select(tag: str, args: str) -> bytes:
    return lines(
        "* 5 EXISTS",
        "* OK [UIDVALIDITY 42] ok",
        "* OK [UIDNEXT 9] ok",
        "* OK [HIGHESTMODSEQ 17] ok",
        f"{tag} OK [READ-WRITE] done",
    )


def store(tag: str, args: str) -> bytes:
    return lines(f"{tag} OK [MODIFIED 3] Conditional STORE failed")


def expunge(tag: str, args: str) -> bytes:
    return lines("* 2 EXPUNGE", "* 3 EXPUNGE", f"{tag} OK done")


WRITE_REPLIES: dict[str, Reply] = {"SELECT": select, "UID STORE": store, "UID EXPUNGE": expunge}


def logged_in(fake: FakeImap) -> ImapSession:
    endpoint = Endpoint("127.0.0.1", fake.port, security="plain", timeout=5)
    session = ImapSession.connect(endpoint, mailbox="m")
    session.login(Login("user_password", "m", None, Secret("pw")))
    return session


def test_a_session_has_no_command_that_changes_the_server() -> None:
    with FakeImap() as fake, logged_in(fake) as session:
        for name in WRITES:
            assert not hasattr(ImapSession, name), name
            assert not hasattr(session, name), name
        session.examine(INBOX)
        assert not WRITES & set(dir(session))
    assert {"mark_deleted", "expunge_uids"} <= set(dir(FolderWriter))


def test_deletion_goes_through_the_handle_of_the_selected_folder() -> None:
    caps = "IMAP4rev1 AUTH=PLAIN UIDPLUS CONDSTORE"
    with FakeImap(WRITE_REPLIES, capabilities=caps) as fake, logged_in(fake) as session:
        writer = session.open_for_deletion(INBOX)
        assert writer.state == FolderState(42, 9, 5, 17)
        assert writer.can_delete_exactly
        assert writer.mark_deleted([2, 3, 4], writer.state.highestmodseq) == {2, 4}
        writer.expunge_uids([4, 2])
        assert writer.mark_deleted([], None) == set()
        writer.expunge_uids([])
    assert fake.commands.count("SELECT") == 1
    sent = [line.split(" ", 1)[1] for line in fake.lines]
    assert 'SELECT "INBOX" (CONDSTORE)' in sent
    assert "UID STORE 2:4 (UNCHANGEDSINCE 17) +FLAGS.SILENT (\\Deleted)" in sent
    assert "UID EXPUNGE 2,4" in sent
    assert fake.commands.count("UID STORE") == fake.commands.count("UID EXPUNGE") == 1


def test_a_handle_refuses_once_another_folder_is_opened() -> None:
    with FakeImap(WRITE_REPLIES, capabilities="IMAP4rev1 AUTH=PLAIN UIDPLUS") as fake:
        session = logged_in(fake)
        old = session.open_for_deletion(INBOX)
        session.examine(INBOX)  # the same folder, but read-only now
        with pytest.raises(RuntimeError, match="no longer open for deletion"):
            old.mark_deleted([1], None)
        with pytest.raises(RuntimeError, match="no longer open for deletion"):
            old.expunge_uids([1])
        again = session.open_for_deletion(ARCHIVE)
        with pytest.raises(RuntimeError, match="no longer open for deletion"):
            old.mark_deleted([1], None)
        assert again.mark_deleted([1], None) == {1}
        session.logout()
        with pytest.raises(ConnectionLost, match="closed"):
            again.mark_deleted([1], None)
    assert fake.commands.count("UID STORE") == 1
    assert "UID EXPUNGE" not in fake.commands


def test_without_uidplus_nothing_is_expunged() -> None:
    with FakeImap(WRITE_REPLIES) as fake, logged_in(fake) as session:
        assert not session.can_delete_exactly
        writer = session.open_for_deletion(INBOX)
        with pytest.raises(ProtocolError, match="no UIDPLUS"):
            writer.expunge_uids([1])
    assert "UID EXPUNGE" not in fake.commands


@pytest.mark.dovecot
def test_a_plan_sends_read_only_commands_and_only_apply_deletes(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the real server, with deletion rules, so the plan searches the deletion
    candidates too; the apply afterwards shows that the recording sees the writes."""
    user = bed.new_user()
    old = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=100)
    for subject in ("one", "two"):
        bed.server.append(user, "INBOX", make_message(subject=subject), internal_date=old)
    bed.server.append(user, "INBOX", make_message(subject="young"))
    bed.master_profile("p", [user], folders="delete: {mode: after_archive, older_than_days: 30}\n")
    sent: list[str] = []
    command = Connection._command

    def recording(self: Connection, name: str, *args: Any) -> bytes:
        sent.append(f"UID {args[0]}" if name == "UID" else name)
        return command(self, name, *args)

    monkeypatch.setattr(Connection, "_command", recording)
    code, plan = bed.plan_json()
    assert code == 0, plan
    assert plan["totals"]["deletions"] == 2
    assert {"EXAMINE", "UID SEARCH", "UID FETCH"} <= set(sent)
    assert set(sent) <= READ_ONLY, sorted(set(sent) - READ_ONLY)

    sent.clear()
    code, result = bed.apply_json()
    assert code == 0, result
    assert result["totals"]["deleted"] == 2
    assert {"SELECT", "UID STORE", "UID EXPUNGE"} <= set(sent)
