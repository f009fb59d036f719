"""`archive search` and `archive show` against real mail archived from Dovecot.

Alice's INBOX holds every fixture message of tests/fixtures/mail/ and a few made
here; the nested multipart is in her Projekte/2024 folder too; Bob holds a copy of
one fixture and a message of his own. Every query word, sort order and scope is
run through the command line, and what it finds is compared by subject.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bed import Bed
from servers.dovecot import DovecotServer, make_message

pytestmark = pytest.mark.dovecot

MAIL = Path(__file__).parent / "fixtures" / "mail"
EVIL_SUBJECT = "=?utf-8?q?Invoice_=1B]0;evil=07_due_=1B[31mred?="
OLD_DAY = dt.datetime(2023, 5, 5, 12, 0, tzinfo=dt.UTC)


@dataclass
class Archived:
    bed: Bed
    alice: str
    bob: str


def fixture_bytes(name: str) -> bytes:
    return (MAIL / name).read_bytes()


def seed_archive(bed: Bed) -> Archived:
    """Seed Dovecot and archive it all (apply in a child process, so that a module's
    tests share one archive, each test working on a copy of it)."""
    alice, bob = bed.new_user("alice"), bed.new_user("bob")
    server = bed.server
    for path in sorted(MAIL.glob("*.eml")):
        date = OLD_DAY if path.name == "broken-date.eml" else None
        server.append(alice, "INBOX", path.read_bytes(), internal_date=date)
    server.create_folder(alice, "Projekte/2024")
    server.append(alice, "Projekte/2024", fixture_bytes("nested.eml"), flags=[r"\Seen"])
    day = dt.datetime(2024, 11, 5, 10, 0, tzinfo=dt.UTC)
    made = [
        make_message("okapi okapi okapi", "okapi crossing, okapi stripes\n", date=day),
        make_message("one animal", "a okapi was seen\n", date=day + dt.timedelta(days=1)),
        make_message("big scan", "scanword\n", size=200_000, date=day + dt.timedelta(days=2)),
        make_message(
            EVIL_SUBJECT,
            "before\x1b[2J after \x1b]0;evil\x07 end\n",
            sender="Mallory <mallory@example.test>",
            date=day,
        ),
    ]
    for message in made:
        server.append(alice, "INBOX", message)
    server.append(bob, "INBOX", fixture_bytes("latin1-q.eml"))
    server.append(bob, "INBOX", make_message("bobsecret plans", "only for bob\n", date=day))
    bed.master_profile("p", [alice, bob])
    applied = run_child(bed, "apply", "--format", "json")
    assert applied.returncode == 0, applied.stderr
    return Archived(bed, alice, bob)


def run_child(bed: Bed, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "BED_MASTER_PASSWORD": bed.server.master_password}
    return subprocess.run(
        [sys.executable, "-m", "imapsync_decl", *args, "--config-dir", str(bed.config_dir)],
        capture_output=True,
        check=False,
        env=env,
    )


@pytest.fixture(scope="module")
def built(
    dovecot: DovecotServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, str]:
    root = tmp_path_factory.mktemp("search")
    (root / "profiles.d").mkdir()
    seeded = seed_archive(Bed(dovecot, root, None))  # type: ignore[arg-type]
    return root, seeded.alice, seeded.bob


@pytest.fixture
def archived(bed: Bed, built: tuple[Path, str, str]) -> Archived:
    root, alice, bob = built
    shutil.copytree(root, bed.root, dirs_exist_ok=True, symlinks=True)
    return Archived(bed, alice, bob)


def search(archived: Archived, *args: str) -> list[dict[str, Any]]:
    code, out, err = archived.bed.run("archive", "search", "--format", "json", *args)
    assert code == 0, err
    hits = json.loads(out)
    assert isinstance(hits, list)
    return hits


def subjects(archived: Archived, *args: str) -> set[str]:
    return {hit["subject"] for hit in search(archived, "--user", archived.alice, *args)}


# Query words ---------------------------------------------------------------------------

QUERIES = [
    # free text, case- and diacritic-insensitive, in headers and body
    (["Müller"], {"Grüße aus Köln"}),
    (["muller"], {"Grüße aus Köln"}),
    (["KOLN"], {"Grüße aus Köln"}),
    (["survivor*"], {"Cut off in transit"}),
    (["Unsubscribe", "Crème"], {"Autumn sale"}),  # the text of an HTML-only message
    (["hiddenscript"], set()),  # not text: a script
    (['"schöne Grüße vom Rhein"'], {"Grüße aus Köln"}),
    (["Москвы"], {"Привет из Москвы"}),
    (["会議"], {"東京都庁の会議について"}),
    (["北京"], {"关于北京会议"}),
    (["from:carol@example.com"], {"Quarterly report"}),
    (["from:Jürgen"], {"Grüße aus Köln"}),
    (["to:dave"], {"Quarterly report"}),
    (["subject:quarterly"], {"Quarterly report"}),
    (["attachment:report-q3"], {"Quarterly report"}),
    (["attachment:übersicht"], {"Dokumente"}),
    (["attachment:König"], {"Ihr Angebot"}),
    (["after:2024-10-20", "before:2024-10-22"], {"Qapla' and café", "Fwd: Contract draft"}),
    (["after:2023-05-01", "before:2023-06-01"], {"Broken date"}),  # the internal date
    (["larger:100K"], {"big scan"}),
    (["okapi", "NOT", "subject:okapi"], {"one animal"}),
    (["plainword", "OR", "survivorword"], {"Quarterly report", "Cut off in transit"}),
    (["from:carol@example.com", "attachment:report-q3", "has:attachment"], {"Quarterly report"}),
]


@pytest.mark.parametrize(("words", "expected"), QUERIES, ids=[" ".join(q[0]) for q in QUERIES])
def test_each_query_word_finds_what_it_names(
    archived: Archived, words: list[str], expected: set[str]
) -> None:
    assert subjects(archived, *words) == expected


def test_has_attachment_smaller_and_a_query_as_one_argument(archived: Archived) -> None:
    with_attachment = subjects(archived, "has:attachment")
    assert {"Quarterly report", "Dokumente", "Ihr Angebot"} <= with_attachment
    assert "Autumn sale" not in with_attachment
    small = subjects(archived, "smaller:100K", "after:2024-11-01", "before:2025-01-01")
    # the display fields hold no control characters
    assert small == {"okapi okapi okapi", "one animal", "Invoice ]0;evil due [31mred"}
    assert subjects(archived, "from:carol@example.com subject:quarterly") == {"Quarterly report"}


def test_options_may_follow_the_query_words(archived: Archived) -> None:
    code, out, err = archived.bed.run(
        "archive", "search", "Müller", "--user", archived.alice, "--format", "json"
    )
    assert code == 0, err
    assert [hit["subject"] for hit in json.loads(out)] == ["Grüße aus Köln"]


@pytest.mark.parametrize(
    "query",
    [["okapi", "OR"], ["after:2024-13-01"], ["larger:lots"], ['"unclosed'], ["NOT"], ["OR", "x"]],
)
def test_an_invalid_query_exits_10_with_a_message(archived: Archived, query: list[str]) -> None:
    code, out, err = archived.bed.run("archive", "search", *query)
    assert code == 10
    assert out == ""
    assert err.startswith("error: ")
    assert "Traceback" not in err
    assert "fts5" not in err.lower()


# Sort orders, limit, offset ----------------------------------------------------------


def test_sort_by_date_either_way_and_by_relevance(archived: Archived) -> None:
    oldest = search(archived, "--user", archived.alice, "after:2024-10-01", "--sort", "date")
    dates = [hit["date"] for hit in oldest]
    assert len(dates) > 10
    assert dates == sorted(dates)
    newest = search(archived, "--user", archived.alice, "after:2024-10-01", "--sort", "-date")
    assert [hit["date"] for hit in newest] == sorted(dates, reverse=True)
    # without free-text words the default is newest first
    default = search(archived, "--user", archived.alice, "after:2024-10-01")
    assert [h["id"] for h in default] == [h["id"] for h in newest]
    ranked = search(archived, "--user", archived.alice, "okapi")
    assert [hit["subject"] for hit in ranked] == ["okapi okapi okapi", "one animal"]
    by_date = search(archived, "--user", archived.alice, "okapi", "--sort", "date")
    assert [hit["subject"] for hit in by_date] == ["okapi okapi okapi", "one animal"]
    by_newest = search(archived, "--user", archived.alice, "okapi", "--sort", "-date")
    assert [hit["subject"] for hit in by_newest] == ["one animal", "okapi okapi okapi"]


def test_limit_and_offset_page_through_the_hits(archived: Archived) -> None:
    every = search(archived, "--user", archived.alice, "after:2024-10-01", "--limit", "100")
    first = search(archived, "--user", archived.alice, "after:2024-10-01", "--limit", "3")
    rest = search(archived, "--user", archived.alice, "after:2024-10-01", "--offset", "3")
    assert [h["id"] for h in first + rest] == [h["id"] for h in every]
    assert len(first) == 3


# Scopes ------------------------------------------------------------------------------


def test_a_user_never_sees_another_users_messages(archived: Archived) -> None:
    alice, bob = archived.alice, archived.bob
    assert search(archived, "--user", alice, "bobsecret") == []
    bobs = search(archived, "--user", bob, "after:2000-01-01")
    assert {hit["user"] for hit in bobs} == {bob}
    assert {hit["subject"] for hit in bobs} == {"bobsecret plans", "Grüße aus Köln"}
    # the message both hold is found once per user without a scope, and once with one
    shared = search(archived, "Müller")
    assert sorted(hit["user"] for hit in shared) == sorted([alice, bob])
    assert [hit["user"] for hit in search(archived, "--user", alice, "Müller")] == [alice]
    mailbox = search(archived, "--mailbox", f"{bob}@example.test", "Müller")
    assert [hit["user"] for hit in mailbox] == [bob]


def test_a_message_in_two_folders_is_found_in_both(archived: Archived) -> None:
    hits = search(archived, "--user", archived.alice, "from:carol@example.com")
    assert sorted(hit["folder"] for hit in hits) == ["INBOX", "Projekte/2024"]
    assert len({hit["sha256"] for hit in hits}) == 1
    assert len({hit["id"] for hit in hits}) == 2
    in_folder = search(archived, "--folder", "Projekte", "after:2000-01-01")
    assert [(h["folder"], h["subject"]) for h in in_folder] == [
        ("Projekte/2024", "Quarterly report")
    ]
    assert search(archived, "--folder", "Projekte/2024", "from:erin@example.com") == []


def test_json_hits_carry_the_documented_fields(archived: Archived) -> None:
    (hit,) = search(archived, "--user", archived.alice, "--folder", "INBOX", "plainword")
    assert hit["from"] == "Carol Jones <carol@example.com>"
    assert hit["to"] == "Dave <dave@example.com>"
    assert hit["date"] == "2024-10-17T16:00:00+00:00"
    assert hit["attachments"] == ["report-q3.pdf"]
    assert hit["mailbox"] == f"{archived.alice}@example.test"
    assert "[plainword]" in hit["snippet"]
    on_server = archived.bed.server_messages(archived.alice, "Projekte/2024")[1]
    assert hit["size"] == len(on_server)
    assert hit["sha256"] == hashlib.sha256(on_server).hexdigest()


def test_text_output_is_one_line_per_hit_then_the_snippet(archived: Archived) -> None:
    code, out, _ = archived.bed.run("archive", "search", "--user", archived.alice, "plainword")
    assert code == 0
    head, snippet = out.splitlines()[:2]
    assert head.startswith("2024-10-17 16:00  ")
    assert archived.alice in head
    assert "/INBOX" in head
    assert "Carol Jones <carol@example.com>" in head
    assert "Quarterly report" in head
    assert head.endswith("]")
    assert "[id " in head
    assert snippet.startswith("    ")
    assert "plainword" in snippet
    code, out, _ = archived.bed.run("archive", "search", "nosuchwordanywhere")
    assert (code, out) == (0, "no messages found\n")


def test_an_archive_without_a_search_index_says_how_to_build_it(archived: Archived) -> None:
    (archived.bed.archive / "search.sqlite").unlink()
    code, _, err = archived.bed.run("archive", "search", "okapi")
    assert code == 10
    assert "imapsync-decl archive rebuild-search" in err


# Show ---------------------------------------------------------------------------------


def hit_id(archived: Archived, *query: str) -> int:
    (hit,) = search(archived, "--user", archived.alice, *query)
    return int(hit["id"])


def test_show_raw_writes_the_archived_bytes_exactly(archived: Archived) -> None:
    every = search(archived, "--user", archived.alice, "smaller:1G", "--limit", "100")
    by_sha = {hit["sha256"]: hit["id"] for hit in every if hit["folder"] == "INBOX"}
    on_server = archived.bed.server_messages(archived.alice, "INBOX")
    assert len(by_sha) == len(on_server) == 25
    wanted = {"关于北京会议", "big scan", "Grüße aus Köln", "Привет из Москвы"}
    picked = [raw for raw in on_server.values() if b"Subject:" not in raw]  # does not parse
    picked += [
        on_server_raw
        for hit in every
        if hit["subject"] in wanted and hit["folder"] == "INBOX"
        for on_server_raw in on_server.values()
        if hashlib.sha256(on_server_raw).hexdigest() == hit["sha256"]
    ]
    assert len(picked) == 5
    for raw in picked:
        shown = subprocess.run(
            [sys.executable, "-m", "imapsync_decl", "archive", "show",
             str(by_sha[hashlib.sha256(raw).hexdigest()]), "--raw",
             "--archive", str(archived.bed.archive)],
            capture_output=True, check=False,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == raw


def test_show_prints_headers_attachments_and_text(archived: Archived) -> None:
    shown_id = hit_id(archived, "--folder", "INBOX", "plainword")
    code, out, _ = archived.bed.run("archive", "show", str(shown_id))
    assert code == 0
    assert "From: Carol Jones <carol@example.com>" in out
    assert "Subject: Quarterly report" in out
    assert "Message-ID: <nested-1@example.com>" in out
    assert "Attachments: report-q3.pdf" in out
    assert "Plain version: revenue grew by plainword percent." in out
    assert "Content-Type" not in out
    code, headers, _ = archived.bed.run("archive", "show", str(shown_id), "--headers")
    assert "Content-Type: multipart/mixed" in headers
    assert "plainword" not in headers
    code, text, _ = archived.bed.run("archive", "show", str(shown_id), "--text")
    assert "plainword" in text
    assert "From:" not in text
    latin = hit_id(archived, "from:juergen.mueller@example.de")
    code, out, _ = archived.bed.run("archive", "show", str(latin))
    assert "From: Jürgen Müller <juergen.mueller@example.de>" in out
    assert "schöne Grüße vom Rhein" in out


def test_show_json_has_the_placement_and_the_decoded_message(archived: Archived) -> None:
    hits = search(archived, "--user", archived.alice, "--folder", "Projekte", "plainword")
    code, out, _ = archived.bed.run("archive", "show", str(hits[0]["id"]), "--format", "json")
    assert code == 0
    shown = json.loads(out)
    assert shown["user"] == archived.alice
    assert shown["folder"] == "Projekte/2024"
    assert shown["flags"] == ["\\Seen"]
    assert shown["uid"] == 1
    assert shown["uidvalidity"] > 0
    assert shown["internal_date"]
    assert shown["sha256"] == hits[0]["sha256"]
    assert {"name": "Subject", "value": "Quarterly report"} in shown["headers"]
    assert shown["attachments"] == ["report-q3.pdf"]
    assert "plainword" in shown["text"]


def test_show_of_an_unknown_id_and_of_a_damaged_blob(archived: Archived) -> None:
    code, _, err = archived.bed.run("archive", "show", "999999")
    assert code == 10
    assert "no message with id 999999" in err
    (hit,) = search(archived, "--user", archived.alice, "scanword")
    blob = next(p for p in (archived.bed.archive / "blobs").rglob(f"{hit['sha256']}*"))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.chmod(0o600)
    blob.write_bytes(bytes(data))
    code, _out, err = archived.bed.run("archive", "show", str(hit["id"]))
    assert code == 12
    assert hit["sha256"] in err
    assert "Traceback" not in err


def test_escape_sequences_from_a_message_never_reach_the_terminal(archived: Archived) -> None:
    (hit,) = search(archived, "--user", archived.alice, "from:mallory@example.test")
    outputs = [
        archived.bed.run("archive", "search", "--user", archived.alice, "from:mallory")[1],
        archived.bed.run("archive", "search", "--user", archived.alice, "after")[1],
        archived.bed.run("archive", "show", str(hit["id"]))[1],
        archived.bed.run("archive", "show", str(hit["id"]), "--headers")[1],
        archived.bed.run("archive", "show", str(hit["id"]), "--text")[1],
    ]
    for out in outputs:
        for control in ("\x1b", "\x07", "\x9b"):
            assert control not in out
    assert "Invoice ]0;evil due [31mred" in outputs[0]
    assert "Subject: Invoice  due red" in outputs[2]
    assert "before after  end" in outputs[4]
