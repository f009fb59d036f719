"""archive export (eml, mbox, maildir) and archive stats: against the real Dovecot, and the
format rules on a local archive."""

from __future__ import annotations

import datetime as dt
import json
import mailbox
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from imapsync_decl.cli.main import main
from imapsync_decl.store import Archive, ArchivedMessage
from imapsync_decl.store.export import (
    export_maildir,
    export_mbox,
    maildir_component,
    maildir_info,
    mbox_directory_component,
    mboxrd_entry,
)
from imapsync_decl.store.message import parse_headers

from bed import Bed, sha
from servers.dovecot import make_message

UTC = dt.UTC
FROM_BODY = (
    "Hello,\n"
    "From the start, this line must be quoted.\n"
    ">From here on, this one gets a second mark.\n"
    ">>From deep down too.\n"
    " From with a leading space is left alone.\n"
    "From\n"
)


def unquote_mboxrd(data: bytes) -> bytes:
    return re.sub(rb"(?m)^>(>*From )", rb"\1", data)


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


# --- the format rules, on a local archive ---------------------------------------------------


def test_mboxrd_entry_quotes_from_lines_and_ends_with_a_blank_line() -> None:
    when = dt.datetime(2024, 3, 5, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    entry = mboxrd_entry(b"Subject: x\r\n\r\nFrom a\r\n>From b\r\nno end", when)
    assert entry == (
        b"From MAILER-DAEMON Tue Mar  5 05:08:09 2024\nSubject: x\n\n>From a\n>>From b\nno end\n\n"
    )


def test_maildir_letters_and_names_that_clash_with_the_layout() -> None:
    assert maildir_info(["\\Seen", "\\Flagged", "\\Answered"]) == "FRS"
    assert maildir_info(["\\DELETED", "$Forwarded", "\\Draft", "$Junk", "\\Seen"]) == "DPST"
    assert maildir_info([]) == ""
    assert [maildir_component(n) for n in ("cur", "new", "tmp", "Cur", "a/b")] == [
        "%63ur",
        "%6Eew",
        "%74mp",
        "Cur",
        "a%2Fb",
    ]
    assert mbox_directory_component("Old.mbox") == "Old%2Embox"
    assert mbox_directory_component("..") == "%2E%2E"


@pytest.fixture
def local_archive(tmp_path: Path) -> Iterator[Archive]:
    """An archive with user alice, mailbox alice@example.test, folders INBOX and a/cur."""
    with Archive.open(tmp_path / "archive") as archive:
        index = archive.index
        user = index.ensure_user("alice", "alice@example.test")
        box = index.ensure_mailbox(user, "alice@example.test", "alice", "p")
        when = dt.datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC)
        for path, uid, body in (("INBOX", 1, "one"), ("a/cur", 7, "seven")):
            folder = index.ensure_folder(box, path)
            data = make_message(subject=body, body=FROM_BODY, message_id=f"<{body}@x>", date=when)
            info = archive.blobs.put(data)
            entry = ArchivedMessage(uid, info, when, ("\\Seen",), parse_headers(data))
            index.record(folder, 42, [entry], None)
        yield archive


def test_layouts_on_a_local_archive(local_archive: Archive, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = export_maildir(local_archive, out)
    assert (result.messages, result.files) == (2, 2)
    base = out / "alice" / "alice@example.test"
    epoch = int(dt.datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp())
    assert sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()) == [
        f"INBOX/cur/{epoch}.42_1.imapsync-decl:2,S",
        f"a/%63ur/cur/{epoch}.42_7.imapsync-decl:2,S",
    ]
    for sub in ("cur", "new", "tmp"):
        assert (base / "INBOX" / sub).is_dir()
        assert (base / "a" / "%63ur" / sub).is_dir()
    assert not (base / "a" / "cur").exists(), "folder a itself holds no messages"
    # Exporting again replaces, never doubles.
    export_maildir(local_archive, out)
    assert sum(1 for p in base.rglob("*") if p.is_file()) == 2

    result = export_mbox(local_archive, out / "mbox")
    assert (result.messages, result.files) == (2, 2)
    mbase = out / "mbox" / "alice" / "alice@example.test"
    assert sorted(p.relative_to(mbase).as_posix() for p in mbase.rglob("*") if p.is_file()) == [
        "INBOX.mbox",
        "a/cur.mbox",
    ]
    assert [p.name for p in mbase.rglob(".imapsync-decl-tmp-*")] == []


def test_empty_selection_writes_nothing_and_says_so(
    local_archive: Archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for fmt in ("eml", "mbox", "maildir"):
        out = tmp_path / f"empty-{fmt}"
        code = main(
            [
                "archive",
                "export",
                "--archive",
                str(local_archive.root),
                "--format",
                fmt,
                "--user",
                "nobody",
                str(out),
            ]
        )
        stdout = capsys.readouterr().out
        assert code == 0
        assert "nothing to export" in stdout
        assert "user 'nobody'" in stdout
        assert not out.exists()


@pytest.mark.parametrize("fmt", ["eml", "mbox", "maildir"])
def test_a_planted_symlink_is_never_followed(
    local_archive: Archive, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    out = tmp_path / "out"
    outside = tmp_path / "outside"
    outside.mkdir()
    (out / "alice").mkdir(parents=True)
    os.symlink(outside, out / "alice" / "alice@example.test")
    code = main(
        ["archive", "export", "--archive", str(local_archive.root), "--format", fmt, str(out)]
    )
    err = capsys.readouterr().err
    assert code == 10
    assert "symbolic link" in err
    assert list(outside.iterdir()) == []


def test_stats_of_an_empty_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Archive.open(tmp_path / "a").close()
    code = main(["archive", "stats", "--archive", str(tmp_path / "a"), "--format", "json"])
    stats = json.loads(capsys.readouterr().out)
    assert code == 0
    assert stats["messages"] == stats["placements"] == stats["bytes_stored"] == 0
    assert stats["dedup_ratio"] is None
    assert stats["per_user"] == []


# --- against the real Dovecot -----------------------------------------------------------------


FOLDERS = ("INBOX", "Projekte/Übersicht", "Projekte", "Résumé/2024", "Kopie")


def _seed_export_bed(bed: Bed) -> tuple[str, dict[tuple[str, int], tuple[dt.datetime, set[str]]]]:
    """A user with flags, known internal dates, nested and non-ASCII folders, From lines
    and one message in two folders; returns the user and (folder, uid) -> (date, flags)."""
    user = bed.new_user()
    seeded: dict[tuple[str, int], tuple[dt.datetime, set[str]]] = {}
    specs = [
        ("INBOX", FROM_BODY, ("\\Seen",), dt.datetime(2021, 6, 1, 12, 0, 0, tzinfo=UTC)),
        (
            "INBOX",
            "plain\n",
            ("\\Flagged", "\\Answered"),
            dt.datetime(2022, 2, 2, 8, 30, 0, tzinfo=UTC),
        ),
        ("INBOX", "unread\n", (), dt.datetime(2020, 12, 31, 23, 59, 59, tzinfo=UTC)),
        (
            "Projekte/Übersicht",
            "Grüße\nFrom Köln\n",
            ("\\Seen", "\\Flagged"),
            dt.datetime(2019, 5, 5, 5, 5, 5, tzinfo=UTC),
        ),
        ("Projekte", "parent\n", ("\\Answered",), dt.datetime(2018, 1, 1, tzinfo=UTC)),
        (
            "Résumé/2024",
            "accents\r\n>From quoted\n",
            ("\\Seen",),
            dt.datetime(2024, 2, 29, 10, 11, 12, tzinfo=UTC),
        ),
    ]
    for folder in FOLDERS[1:]:
        bed.server.create_folder(user, folder, exist_ok=True)
    for i, (folder, body, flags, when) in enumerate(specs):
        data = make_message(subject=f"export {i}", body=body, date=when)
        uid = bed.server.append(user, folder, data, flags=flags, internal_date=when)
        seeded[(folder, uid)] = (when, set(flags))
    # The same message in two folders: one blob, two placements, exported twice.
    same = make_message(subject="twice", body="From twice\n", message_id="<twice@example.test>")
    when = dt.datetime(2023, 7, 7, 7, 7, 7, tzinfo=UTC)
    for folder in ("INBOX", "Kopie"):
        uid = bed.server.append(user, folder, same, flags=("\\Seen",), internal_date=when)
        seeded[(folder, uid)] = (when, {"\\Seen"})
    return user, seeded


@pytest.mark.dovecot
def test_export_eml_mbox_maildir_round_trip(bed: Bed) -> None:
    user, seeded = _seed_export_bed(bed)
    bed.master_profile("p", [user])
    code, result = bed.apply_json()
    assert code == 0, result
    assert result["totals"]["archived"] == 7
    assert result["totals"]["already_present"] == 1
    server = {folder: bed.server_messages(user, folder) for folder in FOLDERS}
    assert sum(len(m) for m in server.values()) == 8
    uidvalidities = {folder: _uidvalidity(bed, user, folder) for folder in FOLDERS}
    tree = f"{user}/{user}@example.test"

    # eml: byte-identical to the server, each placement exactly once.
    code, out, _ = bed.run("archive", "export", str(bed.root / "eml"))
    assert code == 0
    assert "exported 8 messages" in out
    emls = {
        p.relative_to(bed.root / "eml" / tree).as_posix(): p.read_bytes()
        for p in (bed.root / "eml").rglob("*.eml")
    }
    expected_eml = {
        f"{folder}/{uidvalidities[folder]}-{uid}.eml": data
        for folder, messages in server.items()
        for uid, data in messages.items()
    }
    assert emls == expected_eml

    # maildir: byte-identical, flag letters, mtimes = internal dates, exactly once.
    code, out, _ = bed.run("archive", "export", "--format", "maildir", str(bed.root / "md"))
    assert code == 0
    assert "exported 8 messages" in out
    files = [p for p in (bed.root / "md").rglob("*") if p.is_file()]
    assert len(files) == 8
    letters = {"\\Seen": "S", "\\Flagged": "F", "\\Answered": "R"}
    for (folder, uid), (when, flags) in seeded.items():
        directory = bed.root / "md" / tree / folder
        name = f"{int(when.timestamp())}.{uidvalidities[folder]}_{uid}.imapsync-decl:2," + "".join(
            sorted(letters[f] for f in flags)
        )
        path = directory / "cur" / name
        assert path.read_bytes() == server[folder][uid], path
        assert path.stat().st_mtime == when.timestamp()
        assert {p.name for p in (directory / "new").iterdir()} == set()
        assert {p.name for p in (directory / "tmp").iterdir()} == set()

    # mbox: parses back into the same messages after LF normalisation and un-quoting.
    code, out, _ = bed.run("archive", "export", "--format", "mbox", str(bed.root / "mbox"))
    assert code == 0
    assert "exported 8 messages in 5 files" in out
    mbox_files = sorted(p for p in (bed.root / "mbox").rglob("*") if p.is_file())
    assert sorted(p.relative_to(bed.root / "mbox" / tree).as_posix() for p in mbox_files) == sorted(
        f"{f}.mbox" for f in FOLDERS
    )
    total = 0
    for folder in FOLDERS:
        path = bed.root / "mbox" / tree / f"{folder}.mbox"
        raw = path.read_bytes()
        assert b"\r\n" not in raw
        box = mailbox.mbox(path, create=False)
        try:
            keys = box.keys()
            parsed = [unquote_mboxrd(box.get_bytes(k)) for k in keys]
            from_lines = [box.get_message(k).get_from() for k in keys]
        finally:
            box.close()
        originals = [lf(server[folder][uid]) for uid in sorted(server[folder])]
        assert parsed == originals
        dates = [seeded[(folder, uid)][0] for uid in sorted(server[folder])]
        assert from_lines == [
            "MAILER-DAEMON " + d.strftime("%a %b ") + f"{d.day:2d}" + d.strftime(" %H:%M:%S %Y")
            for d in dates
        ]
        total += len(parsed)
    assert total == 8
    # The From lines of the bodies were quoted, so mbox readers see no extra message.
    inbox = (bed.root / "mbox" / tree / "INBOX.mbox").read_bytes()
    assert b"\n>From the start" in inbox
    assert b"\n>>From here on" in inbox
    assert b"\n>>>From deep down" in inbox
    assert b"\n From with a leading space" in inbox

    # Selections: one folder of one user.
    code, out, _ = bed.run(
        "archive",
        "export",
        "--format",
        "mbox",
        "--user",
        user,
        "--folder",
        "Kopie",
        str(bed.root / "one"),
    )
    assert code == 0
    assert [p.name for p in (bed.root / "one").rglob("*.mbox")] == ["Kopie.mbox"]


def _uidvalidity(bed: Bed, user: str, folder: str) -> int:
    with bed.server.client(user) as client:
        return int(client.folder_status(folder, ["UIDVALIDITY"])[b"UIDVALIDITY"])


@pytest.mark.dovecot
def test_archive_stats_counts_a_duplicate_once(bed: Bed) -> None:
    alice, bob = bed.new_user("a"), bed.new_user("b")
    same = make_message(subject="same", body="identical\n", message_id="<same@example.test>")
    bed.server.append(alice, "INBOX", same)
    bed.server.create_folder(alice, "Kopie")
    bed.server.append(alice, "Kopie", same)
    bed.server.append(alice, "INBOX", make_message(subject="a2", body="only alice\n"))
    bed.server.append(bob, "INBOX", make_message(subject="b1", body="only bob\n" * 50))
    bed.master_profile("p", [alice, bob])
    assert bed.apply_json()[0] == 0

    bodies = {
        user: [b for folder in ("INBOX", "Kopie") for b in _maybe(bed, user, folder)]
        for user in (alice, bob)
    }
    distinct = {sha(b): b for user_bodies in bodies.values() for b in user_bodies}
    stored = {p.name: p.stat().st_size for p in (bed.archive / "blobs").rglob("*") if p.is_file()}
    assert set(stored) == set(distinct)
    placed = sum(len(b) for user_bodies in bodies.values() for b in user_bodies)
    original = sum(len(b) for b in distinct.values())

    code, out, _ = bed.run("archive", "stats", "--format", "json")
    assert code == 0
    stats = json.loads(out)
    assert {k: stats[k] for k in ("users", "mailboxes", "messages", "placements")} == {
        "users": 2,
        "mailboxes": 2,
        "messages": 3,
        "placements": 4,
    }
    assert stats["bytes_placed"] == placed
    assert stats["bytes_original"] == original
    assert stats["bytes_stored"] == sum(stored.values())
    assert stats["dedup_ratio"] == round(placed / original, 4)
    assert stats["dedup_ratio"] > 1
    assert stats["compression_ratio"] == round(original / sum(stored.values()), 4)
    per_user = {u["user"]: u for u in stats["per_user"]}
    # The server's own empty folders (Sent, ...) are folders of the archive too.
    assert stats["folders"] == sum(u["folders"] for u in per_user.values())
    assert per_user[alice]["folders"] == per_user[bob]["folders"] + 1  # Kopie
    assert per_user[alice]["messages"] == 2
    assert per_user[alice]["placements"] == 3
    assert per_user[alice]["bytes_original"] == sum(len(b) for b in set(bodies[alice]))
    assert per_user[alice]["bytes_placed"] == sum(len(b) for b in bodies[alice])
    assert per_user[bob]["messages"] == per_user[bob]["placements"] == 1
    assert per_user[bob]["bytes_original"] == len(bodies[bob][0])
    assert per_user[bob]["bytes_stored"] == stored[sha(bodies[bob][0])]

    code, out, _ = bed.run("archive", "stats")
    assert code == 0
    assert re.search(r"^messages\s+3 ", out, re.MULTILINE)
    assert re.search(r"^placements\s+4 ", out, re.MULTILINE)
    assert re.search(rf"^{alice}\s+1\s+\d+\s+2\s+3\s", out, re.MULTILINE)
    assert f"({original} bytes)" in out


def _maybe(bed: Bed, user: str, folder: str) -> list[bytes]:
    with bed.server.client(user) as client:
        if not client.folder_exists(folder):
            return []
    return list(bed.server_messages(user, folder).values())
