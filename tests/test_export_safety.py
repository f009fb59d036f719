"""Exports that meet trouble: damaged or missing blobs, foreign or unsafe directories, planted
files, and folder names longer than a path component may be."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from imapsync_decl.cli.main import main
from imapsync_decl.store import Archive, ArchivedMessage
from imapsync_decl.store.export import (
    NAME_MAX,
    SHORTENED_MARK,
    export_archive,
    fit_component,
    folder_names,
    maildir_component,
    mbox_directory_component,
    mbox_file_component,
    safe_component,
)
from imapsync_decl.store.message import parse_headers

from bed import Bed
from servers.dovecot import make_message

FORMATS = ("eml", "mbox", "maildir")
WHEN = dt.datetime(2023, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
CJK = "東京都の議事録と予算案" * 11  # 121 characters, 363 bytes of UTF-8


def _archive_with(root: Path, folders: dict[str, int]) -> Archive:
    """alice's mailbox with ``count`` messages in each folder (UIDVALIDITY 42, UIDs 1..)."""
    archive = Archive.open(root)
    index = archive.index
    user = index.ensure_user("alice", "alice@example.test")
    box = index.ensure_mailbox(user, "alice@example.test", "alice", "p")
    for path, count in folders.items():
        folder = index.ensure_folder(box, path)
        entries = []
        for uid in range(1, count + 1):
            data = make_message(subject=f"{path} {uid}", body=f"body {uid}\n", date=WHEN)
            info = archive.blobs.put(data)
            entries.append(ArchivedMessage(uid, info, WHEN, ("\\Seen",), parse_headers(data)))
        index.record(folder, 42, entries, None)
    return archive


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    with _archive_with(tmp_path / "archive", {"INBOX": 5, "Sent": 2}) as opened:
        yield opened


def _export(archive: Archive, fmt: str, out: Path) -> tuple[int, str, str]:
    return _run(["archive", "export", "--archive", str(archive.root), "--format", fmt, str(out)])


def _run(args: list[str]) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --- item: one bad blob stops no export ---------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_good_message_is_exported_and_the_bad_ones_listed(
    archive: Archive, tmp_path: Path, fmt: str
) -> None:
    rows = list(archive.index.iter_placements(folder="INBOX"))
    missing, flipped = rows[1], rows[3]
    archive.blobs.path(missing.sha256).unlink()
    path = archive.blobs.path(flipped.sha256)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    out = tmp_path / "out"
    code, stdout, stderr = _export(archive, fmt, out)
    assert code == 12
    assert "exported 5 messages" in stdout
    assert f"alice/alice@example.test/INBOX UIDVALIDITY 42 UID {missing.uid}:" in stderr
    assert f"blob {missing.sha256} is missing" in stderr
    assert f"alice/alice@example.test/INBOX UIDVALIDITY 42 UID {flipped.uid}:" in stderr
    assert "2 messages not exported" in stderr
    assert "Traceback" not in stderr

    base = out / "alice" / "alice@example.test"
    if fmt == "mbox":
        inbox = (base / "INBOX.mbox").read_bytes()
        assert inbox.count(b"\nFrom MAILER-DAEMON ") + inbox.startswith(b"From ") == 3
        assert b"INBOX 2" not in inbox
        assert b"INBOX 4" not in inbox
        assert (base / "Sent.mbox").read_bytes().count(b"From MAILER-DAEMON") == 2
    else:
        names = [p.relative_to(base).as_posix() for p in _files(base)]
        assert len(names) == 5
        uid = re.compile(r"42[-_](\d+)\.")
        exported = {
            folder: sorted(int(uid.findall(n)[0]) for n in names if n.startswith(folder + "/"))
            for folder in ("INBOX", "Sent")
        }
        assert exported == {"INBOX": [1, 3, 5], "Sent": [1, 2]}


def test_export_archive_returns_the_failed_placements(archive: Archive, tmp_path: Path) -> None:
    [bad] = [r for r in archive.index.iter_placements(folder="Sent") if r.uid == 2]
    archive.blobs.path(bad.sha256).write_bytes(b"")
    result = export_archive(archive, tmp_path / "out", "maildir")
    assert result.messages == 6
    assert [(f.row.folder, f.row.uid) for f in result.failed] == [("Sent", 2)]
    assert bad.sha256 in result.failed[0].error


# --- item: no writing into foreign files or directories ------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_planted_file_is_replaced_never_written_into(
    archive: Archive, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / "out"
    assert _export(archive, fmt, out)[0] == 0
    base = out / "alice" / "alice@example.test"
    if fmt == "maildir":
        [target] = (base / "INBOX" / "cur").glob("*.42_1.*")
    else:
        target = base / ("INBOX/42-1.eml" if fmt == "eml" else "INBOX.mbox")
    target.unlink()
    # A file that someone else can read, kept open elsewhere through a second link.
    target.write_bytes(b"")
    target.chmod(0o666)
    elsewhere = tmp_path / "elsewhere"
    os.link(target, elsewhere)

    assert _export(archive, fmt, out)[0] == 0
    assert elsewhere.read_bytes() == b"", "the planted file did not receive the message"
    assert target.stat().st_ino != elsewhere.stat().st_ino
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert b"Subject: INBOX 1" in target.read_bytes()
    assert list(out.rglob(".imapsync-decl-tmp-*")) == []


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("level", ["dest", "user", "folder"])
def test_a_group_or_world_writable_directory_is_refused(
    archive: Archive, tmp_path: Path, fmt: str, level: str
) -> None:
    out = tmp_path / "out"
    directory = {
        "dest": out,
        "user": out / "alice",
        "folder": out / "alice" / "alice@example.test" / "INBOX",
    }[level]
    directory.mkdir(parents=True)
    if fmt == "mbox" and level == "folder":  # INBOX.mbox is a file: use a folder level above
        directory = directory.parent
    directory.chmod(0o777)
    code, _, stderr = _export(archive, fmt, out)
    assert code == 10
    assert f"cannot export into {directory}" in stderr
    assert "writable by group or others" in stderr
    assert _files(out) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("level", ["dest", "archive-folder"])
def test_a_directory_of_another_user_is_refused(
    archive: Archive, tmp_path: Path, fmt: str, level: str
) -> None:
    out = tmp_path / "out"
    directory = out if level == "dest" else out / "alice" / "alice@example.test"
    directory.mkdir(parents=True, mode=0o700)
    os.chown(directory, 65534, 65534)
    code, _, stderr = _export(archive, fmt, out)
    assert code == 10
    assert f"cannot export into {directory}" in stderr
    assert "belongs to uid 65534" in stderr
    assert _files(out) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_symlinked_destination_is_refused(archive: Archive, tmp_path: Path, fmt: str) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    os.symlink(real, tmp_path / "out")
    code, _, stderr = _export(archive, fmt, tmp_path / "out")
    assert code == 10
    assert "symbolic link" in stderr
    assert list(real.iterdir()) == []


def test_an_unwritable_destination_is_exit_10_naming_it(archive: Archive, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    code, _, stderr = _export(archive, "eml", tmp_path / "a-file" / "out")
    assert code == 10
    assert str(tmp_path / "a-file") in stderr
    assert "Traceback" not in stderr


def test_new_directories_are_private_whatever_the_umask(archive: Archive, tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        assert _export(archive, "maildir", tmp_path / "out")[0] == 0
    finally:
        os.umask(previous)
    for path in [tmp_path / "out", *(tmp_path / "out").rglob("*")]:
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


# --- item: path components over 255 bytes --------------------------------------------------------


def test_long_components_are_cut_at_a_character_and_keep_a_hash() -> None:
    assert fit_component("a" * NAME_MAX) == "a" * NAME_MAX
    short = fit_component("a" * (NAME_MAX + 1))
    assert len(short.encode()) <= NAME_MAX
    assert SHORTENED_MARK in short
    digest = hashlib.sha256(("a" * (NAME_MAX + 1)).encode()).hexdigest()[:16]
    assert short.endswith(SHORTENED_MARK + digest)

    cjk = safe_component(CJK)
    assert len(CJK.encode()) > NAME_MAX
    assert len(cjk.encode()) <= NAME_MAX
    prefix = cjk[: cjk.index(SHORTENED_MARK)]
    assert CJK.startswith(prefix)
    assert len(prefix) >= 75
    # Two long names with the same beginning stay apart.
    assert safe_component(CJK + "一") != safe_component(CJK + "二")
    # An escape is never cut in half.
    for n in range(240, 256):
        cut = safe_component("x" * n + "/" * 40)
        head = cut[: cut.index(SHORTENED_MARK)]
        assert "%" not in head[-2:], cut
    # Every layout's names fit, with their suffixes.
    for name in (mbox_file_component(CJK), mbox_directory_component(CJK), maildir_component(CJK)):
        assert len(name.encode()) <= NAME_MAX, name
    assert mbox_file_component(CJK).endswith(".mbox")
    assert folder_names(["alice", "alice@example.test", CJK], "eml") == [
        "alice",
        "alice@example.test",
        safe_component(CJK),
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_cjk_folder_name_over_255_bytes_is_exported(tmp_path: Path, fmt: str) -> None:
    folders = {f"Projekte/{CJK}": 2, f"Projekte/{CJK}二": 1, f"{CJK}/子": 1}
    with _archive_with(tmp_path / "archive", folders) as archive:
        code, stdout, stderr = _export(archive, fmt, tmp_path / "out")
    assert code == 0, stderr
    assert "exported 4 messages" in stdout
    files = _files(tmp_path / "out")
    assert len(files) == (3 if fmt == "mbox" else 4)
    for path in files:
        for part in path.relative_to(tmp_path / "out").parts:
            assert len(part.encode()) <= NAME_MAX
    top = tmp_path / "out" / "alice" / "alice@example.test"
    long_dirs = {p.name for p in top.iterdir()}
    assert long_dirs == {"Projekte", safe_component(CJK)}
    # The two long names that share their beginning went to two places.
    below = {p.name for p in (top / "Projekte").iterdir()}
    assert len(below) == 2


@pytest.mark.dovecot
def test_a_long_cjk_folder_through_apply_and_export(bed: Bed) -> None:
    """Dovecot stores folder names in modified UTF-7 (2 bytes per CJK character, in base64),
    so it takes names of 90 CJK characters that are 270 bytes in UTF-8."""
    user = bed.new_user()
    folder = CJK[:90]
    bed.server.create_folder(user, folder)
    data = make_message(subject="議事録", body="本文\n")
    bed.server.append(user, folder, data)
    bed.master_profile("p", [user])
    code, result = bed.apply_json()
    assert code == 0, result
    for fmt in FORMATS:
        code, out, err = bed.run("archive", "export", "--format", fmt, str(bed.root / fmt))
        assert code == 0, err
        assert "exported 1 message" in out
        [path] = _files(bed.root / fmt / user / f"{user}@example.test")
        top = path.relative_to(bed.root / fmt / user / f"{user}@example.test").parts[0]
        assert top == (mbox_file_component(folder) if fmt == "mbox" else safe_component(folder))
        assert SHORTENED_MARK in top
        if fmt != "mbox":
            assert path.read_bytes() == data
