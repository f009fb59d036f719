"""The safe file-system primitives: atomic replacement, no symlinks, private directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imapsync_decl.fs import AtomicFile, UnsafePath, atomic_write, check_private_dir


def test_atomic_write_replaces_the_file_with_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "plan.json"
    target.write_text("old")
    target.chmod(0o644)
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["plan.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("old")

    def write_half() -> None:
        with AtomicFile(target) as out:
            out.write(b"half")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        write_half()
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out"]


def test_atomic_write_replaces_a_symlink_and_not_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "link"
    link.symlink_to(victim)
    atomic_write(link, b"data")
    assert victim.read_text() == "precious"
    assert not link.is_symlink()
    assert link.read_bytes() == b"data"


def test_private_directory_checks(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir(mode=0o700)
    check_private_dir(good)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UnsafePath, match="writable by group or others"):
        check_private_dir(shared)
    link = tmp_path / "link"
    link.symlink_to(good)
    with pytest.raises(UnsafePath, match="symbolic link"):
        check_private_dir(link)
    with pytest.raises(UnsafePath, match="does not exist"):
        check_private_dir(tmp_path / "missing")
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(UnsafePath, match="not a directory"):
        check_private_dir(afile)
