"""The wire format without a server: tables of server lines and what they mean."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from imapsync_decl.imap.errors import ProtocolError, UnsafeValue
from imapsync_decl.imap.facts import FetchedMessage
from imapsync_decl.imap.wire import (
    Literal,
    Namespace,
    Str,
    answer_text,
    batch_uids,
    encode_argument,
    fetched_message,
    folder_path,
    modified_uids,
    namespace_of,
    parse_list_response,
    parse_namespace_response,
    parse_search_response,
    parse_status_responses,
    redact,
    same_mailbox,
    sasl_plain,
    sequence_set,
)

# --- folder names and UID sets ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "prefix", "delimiter", "path"),
    [
        ("INBOX", "", "/", "INBOX"),
        ("inbox", "", "/", "INBOX"),
        ("Sent", "", "/", "Sent"),
        ("Projekte/Übersicht", "", "/", "Projekte/Übersicht"),
        ("INBOX/Sub", "", "/", "INBOX/Sub"),
        # Cyrus: personal namespace "INBOX." with "."
        ("INBOX", "INBOX.", ".", "INBOX"),
        ("INBOX.Sent", "INBOX.", ".", "Sent"),
        ("INBOX.Projekte.Übersicht", "INBOX.", ".", "Projekte/Übersicht"),
        ("inbox.Sent", "INBOX.", ".", "Sent"),
        # Exchange-like and Gmail-like: "" with "/"
        ("Gesendete Elemente", "", "/", "Gesendete Elemente"),
        ("[Gmail]/Sent Mail", "", "/", "[Gmail]/Sent Mail"),
        # Courier-like with a backslash or other delimiters, and a flat server
        ("Work\\2024", "", "\\", "Work/2024"),
        ("Mail/Archiv/2023", "Mail/", "/", "Archiv/2023"),
        ("Flat name", "", None, "Flat name"),
    ],
)
def test_folder_path(name: str, prefix: str, delimiter: str | None, path: str) -> None:
    assert folder_path(name, prefix, delimiter) == path


def test_sequence_set_is_exact_and_compact() -> None:
    assert sequence_set([7, 1, 2, 3, 3, 9, 10]) == "1:3,7,9:10"
    assert sequence_set([5]) == "5"
    with pytest.raises(ValueError, match="empty"):
        sequence_set([])


def test_batch_uids_by_count_and_by_bytes() -> None:
    assert list(batch_uids(range(1, 8), max_count=3, max_bytes=10**9)) == [
        [1, 2, 3],
        [4, 5, 6],
        [7],
    ]
    sizes = {1: 300, 2: 300, 3: 300, 4: 2000, 5: 100, 6: 100}
    batches = list(batch_uids([6, 5, 4, 3, 2, 1], max_count=100, max_bytes=700, sizes=sizes))
    assert batches == [[1, 2], [3], [4], [5, 6]]  # the large message goes alone


def test_parse_list_response_keeps_wire_names_exactly() -> None:
    data = [
        b'(\\HasNoChildren \\Sent) "/" Sent',
        b'(\\HasNoChildren) "/" 007',  # a numeric atom stays the string "007"
        b'(\\Noselect \\HasChildren) "/" "With \\"quotes\\" and \\\\"',
        (b'(\\HasNoChildren) "/" {9}', b"Literal x"),
        b' ("CHILDINFO" ("SUBSCRIBED"))',
        b'() NIL "Flat"',
        b'(\\HasNoChildren) "." "INBOX.Projekte.&ANw-bersicht"',
    ]
    entries = parse_list_response(data)
    assert [e.name for e in entries] == [
        b"Sent",
        b"007",
        b'With "quotes" and \\',
        b"Literal x",
        b"Flat",
        b"INBOX.Projekte.&ANw-bersicht",
    ]
    assert entries[0].attributes == ("\\HasNoChildren", "\\Sent")
    assert entries[4].delimiter is None
    assert entries[5].delimiter == "."


def test_parse_list_response_rejects_garbage() -> None:
    with pytest.raises(ProtocolError, match="LIST"):
        parse_list_response([b'(\\HasNoChildren "/" Sent'])


# --- what goes out ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "wire"),
    [
        (Str("INBOX", "folder name"), b'"INBOX"'),
        (Str('say "hi" \\', "folder name"), b'"say \\"hi\\" \\\\"'),
        (Str("", "LIST reference"), b'""'),
        (Str("Übersicht", "folder name"), Literal("Übersicht".encode())),
        (Str("caf\udce9", "folder name"), Literal(b"caf\xe9")),  # a raw 8-bit wire name
        ("(UNCHANGEDSINCE 7)", b"(UNCHANGEDSINCE 7)"),
        ("1:3,7", b"1:3,7"),
    ],
)
def test_arguments_are_quoted_or_literals(argument: Str | str, wire: bytes | Literal) -> None:
    assert encode_argument(argument) == wire


@pytest.mark.parametrize(
    ("argument", "shown"),
    [
        (
            Str("INBOX\r\nZ9 DELETE INBOX", "folder name"),
            "folder name 'INBOX\\r\\nZ9 DELETE INBOX'",
        ),
        (Str("a\0b", "user name"), "user name 'a\\x00b'"),
        (Str("pw\nx", "password", secret=True), "password contains"),
        ("ALL\r\n", "command argument 'ALL\\r\\n'"),
    ],
)
def test_cr_lf_and_nul_never_pass(argument: Str | str, shown: str) -> None:
    with pytest.raises(UnsafeValue, match="nothing was sent") as caught:
        encode_argument(argument)
    assert shown in str(caught.value)
    if isinstance(argument, Str) and argument.secret:
        assert argument.value not in str(caught.value)


def test_an_atom_must_be_printable_ascii() -> None:
    with pytest.raises(UnsafeValue, match="not printable ASCII"):
        encode_argument("Übersicht")


def test_sasl_plain_and_redaction() -> None:
    payload = sasl_plain("alice", "archiver", "pässwort")
    assert base64.b64decode(payload) == "alice\0archiver\0pässwort".encode()
    assert redact("no pässwort here, pässwort", ["pässwort", ""]) == "no ******** here, ********"


# --- what comes back ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (
            [b"[AUTHENTICATIONFAILED] Authentication failed."],
            "[AUTHENTICATIONFAILED] Authentication failed.",
        ),
        ([None, b"first", b"last"], "last"),
        ([(b"with literal", b"data")], "with literal"),
        ([], ""),
        (b"bytes", "bytes"),
    ],
)
def test_answer_text(data: object, text: str) -> None:
    assert answer_text(data) == text


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (
            [b"INBOX (UIDVALIDITY 7 UIDNEXT 12 MESSAGES 3)"],
            [(b"INBOX", {"UIDVALIDITY": 7, "UIDNEXT": 12, "MESSAGES": 3})],
        ),
        (
            [b'"Sent Items" (uidnext 5 highestmodseq 99)'],
            [(b"Sent Items", {"UIDNEXT": 5, "HIGHESTMODSEQ": 99})],
        ),
        (
            [b"INBOX (UIDNEXT 4)", b"Sent (UIDNEXT 5)"],
            [(b"INBOX", {"UIDNEXT": 4}), (b"Sent", {"UIDNEXT": 5})],
        ),
        ([(b"{5}", b"A B C"), b" (MESSAGES 1)"], [(b"A B C", {"MESSAGES": 1})]),
        ([b'"a\\"b" (MESSAGES 2)'], [(b'a"b', {"MESSAGES": 2})]),
        # Values that are not numbers, or absurdly long ones, are left out.
        ([b"INBOX (MESSAGES x UIDNEXT " + b"9" * 30 + b")"], [(b"INBOX", {})]),
        ([None], []),
    ],
)
def test_parse_status_responses(
    data: list[object], found: list[tuple[bytes, dict[str, int]]]
) -> None:
    assert parse_status_responses(data) == found


@pytest.mark.parametrize(
    "data",
    [[b"INBOX"], [b"INBOX (MESSAGES 1"], [b"(MESSAGES 1)"], [b"INBOX (MESSAGES 1) extra"]],
)
def test_a_status_response_that_cannot_be_parsed_is_refused(data: list[object]) -> None:
    with pytest.raises(ProtocolError, match="STATUS response"):
        parse_status_responses(data)


def test_same_mailbox_is_exact_except_for_inbox() -> None:
    assert same_mailbox(b"INBOX", b"inbox")
    assert same_mailbox(b"Sent", b"Sent")
    assert not same_mailbox(b"Sent", b"sent")
    assert not same_mailbox(b"INBOX/a", b"inbox/a")


@pytest.mark.parametrize(
    ("data", "uids"),
    [
        ([b"3 1 2"], [1, 2, 3]),
        ([b""], []),
        ([b"4 5 (MODSEQ 917162500)"], [4, 5]),
        ([b"1 2", b"2 9"], [1, 2, 9]),
        ([None], []),
    ],
)
def test_parse_search_response(data: list[object], uids: list[int]) -> None:
    assert parse_search_response(data) == uids


def test_parse_namespace_response_in_the_servers_order() -> None:
    data = [b'(("INBOX." ".")) (("user." ".")) (("Public/" "/") ("Shared/" NIL))']
    assert parse_namespace_response(data) == [
        Namespace("INBOX.", ".", True),
        Namespace("user.", ".", False),
        Namespace("Public/", "/", False),
        Namespace("Shared/", None, False),
    ]
    assert parse_namespace_response([b'(("" "/")) NIL NIL']) == [Namespace("", "/", True)]
    assert parse_namespace_response([]) == []


def test_namespace_of_prefers_the_longest_prefix() -> None:
    spaces = [Namespace("", "/", True), Namespace("Public/", "/", False)]
    assert namespace_of("INBOX", spaces) == spaces[0]
    assert namespace_of("Sent", spaces) == spaces[0]
    assert namespace_of("Public/Team", spaces) == spaces[1]
    assert namespace_of("Public", spaces) == spaces[1]  # the namespace's own root
    assert namespace_of("INBOX", [Namespace("Public/", "/", False)]) is None


def test_fetched_message_keeps_the_body_and_drops_recent() -> None:
    date = dt.datetime(2024, 2, 1, 10, 0, tzinfo=dt.UTC)
    item = {b"BODY[]": b"hello", b"INTERNALDATE": date, b"FLAGS": (b"\\Seen", b"\\Recent")}
    assert fetched_message(3, item) == FetchedMessage(3, b"hello", date, ("\\Seen",))
    assert fetched_message(3, {b"BODY[]": None, b"INTERNALDATE": "not a date"}) == FetchedMessage(
        3, b"", None, ()
    )
    assert fetched_message(3, {b"RFC822.SIZE": 5}) is None
    with pytest.raises(ValueError, match="not a string"):
        fetched_message(3, {b"BODY[]": 42})


@pytest.mark.parametrize(
    ("text", "uids"),
    [
        ("[MODIFIED 7,9] Conditional STORE failed", {7, 9}),
        ("[MODIFIED 3:5,1] done", {1, 3, 4, 5}),
        ("[modified 5:3] done", {3, 4, 5}),
        ("OK done", set()),
    ],
)
def test_modified_uids(text: str, uids: set[int]) -> None:
    assert modified_uids(text) == uids
