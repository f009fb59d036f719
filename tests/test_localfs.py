"""Local file-system safety: shared locations, read-only archives, full disks, bad paths.

CI runs as root, so another owner is simulated with ``os.chown`` to uid 65534 and, where
the kernel must say no, a command runs as that user (``setpriv``) or inside a private
mount namespace with a read-only bind mount (``unshare``). Tests that need root say so
when skipped.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imapsync_decl.errors import ArchiveNotWritable, ExitCode
from imapsync_decl.store import Archive, ArchiveLock, BlobDamaged, Index
from imapsync_decl.store import lock as lock_module

from bed import Bed, seed
from helpers import USERS, master_profile, write_config

NOBODY = 65534
ROOT = Path(__file__).resolve().parent.parent
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from imapsync_decl.cli.main import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A valid configuration whose archive is ``tmp_path/archive`` (its server is never
    reached: every command here stops at the archive)."""
    monkeypatch.setenv("TEST_MASTER_PW", "secret-master")
    return write_config(
        tmp_path / "profiles.d",
        {"users.yaml": USERS, "staff.yaml": master_profile()},
    )


def make_archive(root: Path) -> None:
    with Archive.open(root) as archive:
        archive.blobs.put(b"Subject: hello\r\n\r\nbody\r\n")
        archive.index.begin_run("r1", "apply")
        archive.index.finish_run("r1", "ok", {"totals": {}})


# -- 9: shared locations -----------------------------------------------------------


def _world_writable_root(root: Path) -> str:
    root.mkdir(mode=0o700)
    os.chmod(root, 0o777)  # noqa: S103
    return "the archive directory is writable by group or others (mode 777)"


def _foreign_root(root: Path) -> str:
    root.mkdir(mode=0o700)
    os.chown(root, NOBODY, NOBODY)
    return f"the archive directory belongs to uid {NOBODY}, not to the running user"


def _symlinked_lock(root: Path) -> str:
    root.mkdir(mode=0o700)
    (root / "lock").symlink_to(root.parent / "precious")
    return "the lock file is a symbolic link"


def _shared_index(root: Path) -> str:
    root.mkdir(mode=0o700)
    (root / "index.sqlite").touch()
    os.chmod(root / "index.sqlite", 0o666)  # noqa: S103
    return "the index is writable by group or others (mode 666)"


def _foreign_index(root: Path) -> str:
    make_archive(root)
    os.chown(root / "index.sqlite", NOBODY, NOBODY)
    return f"the index belongs to uid {NOBODY}, not to the running user"


def _shared_blobs(root: Path) -> str:
    make_archive(root)
    os.chmod(root / "blobs", 0o777)  # noqa: S103
    return "the blob directory is writable by group or others (mode 777)"


def _foreign_lock(root: Path) -> str:
    root.mkdir(mode=0o700)
    (root / "lock").touch()
    os.chown(root / "lock", NOBODY, NOBODY)
    return f"the lock file belongs to uid {NOBODY}, not to the running user"


@needs_root
@pytest.mark.parametrize(
    "prepare",
    [
        _world_writable_root,
        _foreign_root,
        _symlinked_lock,
        _shared_index,
        _foreign_index,
        _shared_blobs,
        _foreign_lock,
    ],
)
def test_apply_refuses_an_archive_another_user_could_have_prepared(
    capsys: pytest.CaptureFixture[str], config: Path, prepare: object
) -> None:
    root = config.parent / "archive"
    precious = config.parent / "precious"
    precious.write_text("root's own file\n")
    reason = prepare(root)  # type: ignore[operator]
    code, _out, err = run(capsys, "apply", "--config-dir", str(config))
    assert code == ExitCode.NOT_WRITABLE, err
    assert int(ExitCode.NOT_WRITABLE) == 14
    assert "the archive cannot be written:" in err
    assert reason in err
    assert "Traceback" not in err
    assert precious.read_text() == "root's own file\n"  # never truncated through the link


@needs_root
def test_read_only_commands_accept_an_archive_of_another_owner(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    root = config.parent / "archive"
    make_archive(root)
    for path in [root, *root.rglob("*")]:
        os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in root.rglob("*"))
    for args in (
        ["archive", "stats"],
        ["archive", "verify"],
        ["runs"],
        ["users", "list"],
        ["archive", "export", str(config.parent / "out")],
    ):
        code, _out, err = run(capsys, *args, "--config-dir", str(config))
        assert code == 0, (args, err)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in root.rglob("*")) == before
    code, _, err = run(capsys, "apply", "--config-dir", str(config))
    assert code == 14
    assert f"the archive directory belongs to uid {NOBODY}" in err


def test_the_lock_never_truncates_through_a_symlink(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    root.mkdir(mode=0o700)
    target = tmp_path / "target"
    target.write_text("keep me\n")
    (root / "lock").symlink_to(target)
    with pytest.raises(ArchiveNotWritable, match="the lock file is a symbolic link"):
        ArchiveLock(root, "apply").acquire()
    assert target.read_text() == "keep me\n"


def test_the_lock_refuses_a_directory_or_fifo(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    root.mkdir(mode=0o700)
    os.mkfifo(root / "lock", 0o600)
    with pytest.raises(ArchiveNotWritable, match="the lock file is not a regular file"):
        ArchiveLock(root, "apply").acquire()


def test_new_directories_are_0700_and_files_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        root = tmp_path / "a" / "b" / "archive"
        with ArchiveLock(root, "apply"), Archive.open(root) as archive:
            archive.blobs.put(b"x")
            for path in (tmp_path / "a", tmp_path / "a" / "b", root):
                assert mode(path) == 0o700, path
            for name in ("lock", "index.sqlite"):
                assert mode(root / name) == 0o600, name
    finally:
        os.umask(old)


def test_the_index_is_never_opened_through_a_symlink(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    root.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere.sqlite"
    (root / "index.sqlite").symlink_to(elsewhere)
    with pytest.raises(ArchiveNotWritable, match="the index is a symbolic link"):
        Archive.open(root)
    assert not elsewhere.exists()


# -- 13: a read-only archive -------------------------------------------------------


def _world_readable_copy(root: Path) -> Iterator[Path]:
    """A directory every user can reach (pytest's tmp_path is private to root)."""
    place = Path(tempfile.mkdtemp(prefix="imapsync-decl-test-"))
    os.chmod(place, 0o755)  # noqa: S103
    try:
        yield place
    finally:
        shutil.rmtree(place, ignore_errors=True)


@pytest.fixture
def shared_place() -> Iterator[Path]:
    yield from _world_readable_copy(Path("/tmp"))


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "imapsync_decl", *args]


@needs_root
def test_a_read_only_bind_mount_reads_and_apply_exits_14(config: Path, shared_place: Path) -> None:
    """For real: the archive is mounted read-only in a private mount namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    source = shared_place / "source"
    mounted = shared_place / "archive"
    make_archive(source)
    mounted.mkdir()
    config_dir = shared_place / "profiles.d"
    shutil.copytree(config, config_dir)
    (config_dir / "archive.yaml").write_text(f"kind: Archive\npath: {mounted}\n")
    script = (
        'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" || exit 99\n'
        'shift 2; for c in "archive stats" "archive verify" runs "users list" plan apply \\\n'
        '    "archive export $OUT"; do\n'
        '  "$@" $c --config-dir "$CONFIG"; echo "exit=$c=$?"\n'
        "done\n"
    )
    done = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(source),
            str(mounted),
            sys.executable,
            "-m",
            "imapsync_decl",
        ],
        env={
            **os.environ,
            "CONFIG": str(config_dir),
            "OUT": str(shared_place / "out"),
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode == 99:
        pytest.skip(f"no read-only bind mount here: {done.stderr.strip()}")
    codes = dict(
        line.split("=")[1:] for line in done.stdout.splitlines() if line.startswith("exit=")
    )
    assert codes == {
        "archive stats": "0",
        "archive verify": "0",
        "runs": "0",
        "users list": "0",
        "plan": "3",  # the archive is read; the server imap.example.com is not there
        "apply": "14",
        f"archive export {shared_place / 'out'}": "0",
    }, done.stdout + done.stderr
    assert f"the archive cannot be written: {mounted}/lock: the file system is read-only" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
    assert not (source / "lock").exists()


@needs_root
def test_another_user_reads_an_archive_it_cannot_write(shared_place: Path) -> None:
    """For real: uid 65534 can neither write the directory nor the index, so the index
    is opened immutable; its apply-like open is refused."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv(1)")
    root = shared_place / "archive"
    make_archive(root)
    for path in [root, *root.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    nobody = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args in (["archive", "stats"], ["archive", "verify"], ["runs"]):
        done = subprocess.run(
            [*nobody, *_command(*args, "--archive", str(root))],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, (args, done.stderr)
    probe = (
        "import sys; from pathlib import Path; from imapsync_decl.store import Archive\n"
        "try:\n    Archive.open(Path(sys.argv[1]))\n"
        "except Exception as e:\n    print(type(e).__name__, e.exit_code, e)\n"
    )
    done = subprocess.run(
        [*nobody, sys.executable, "-c", probe, str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.startswith("ArchiveNotWritable 14 "), done.stdout + done.stderr
    assert str(root) in done.stdout


def test_a_read_only_index_is_opened_immutable_only_when_nobody_can_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated: is_writable says no (as root, chmod stops nobody). The URI sqlite gets
    carries immutable=1 then, and only then."""
    from imapsync_decl.store import index as index_module

    root = tmp_path / "archive"
    make_archive(root)
    uris: list[str] = []
    real_connect = sqlite3.connect

    def connect(database: str, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        uris.append(database)
        connection: sqlite3.Connection = real_connect(database, *args, **kwargs)
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect)  # the module the index uses
    with Index.open(root / "index.sqlite", read_only=True) as index:
        assert index.archive_id
    assert uris[-1] == str(root / "index.sqlite")  # ours: a normal connection, no leftovers
    monkeypatch.setattr(index_module, "is_writable", lambda path: False)
    with Index.open(root / "index.sqlite", read_only=True) as index:
        assert index.list_runs()
    assert uris[-1].endswith("?mode=ro&immutable=1")
    # A writer has it open (its -wal and -shm exist): no immutable, its commits are seen.
    with Index.open(root / "index.sqlite") as writer:
        writer.begin_run("r2", "apply")
        with Index.open(root / "index.sqlite", read_only=True) as index:
            assert [run["id"] for run in index.list_runs()] == ["r2", "r1"]
        assert uris[-1].endswith("?mode=ro")
    assert sorted(p.name for p in root.iterdir()) == ["blobs", "index.sqlite", "journal"]


# -- 14: a full disk ---------------------------------------------------------------


def test_the_lock_holds_when_its_holder_text_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    monkeypatch.setattr(os, "ftruncate", full)
    with ArchiveLock(tmp_path / "archive", "apply") as held:
        assert held.held
        with pytest.raises(lock_module.ArchiveLocked):
            ArchiveLock(tmp_path / "archive", "other").acquire()


def test_a_full_disk_at_the_index_is_exit_14_naming_the_archive(
    capsys: pytest.CaptureFixture[str], config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = config.parent / "archive"
    make_archive(root)

    def full(self: Index) -> str:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Index, "_ensure_archive_id", full)
    code, _, err = run(capsys, "apply", "--config-dir", str(config))
    assert code == 14, err
    assert f"the archive {root} cannot be written: no space left on device" in err
    assert "Traceback" not in err
    assert not (root / "lock").read_text()  # released
    code, _, err = run(capsys, "archive", "stats", "--config-dir", str(config))
    assert code == 0, err


# -- 15: paths -------------------------------------------------------------------------


def test_an_archive_path_that_is_a_file(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    archive = config.parent / "archive"
    archive.write_text("not a directory\n")
    code, _out, err = run(capsys, "validate", "--config-dir", str(config))
    assert code == 10
    assert f"the archive path {archive} exists and is not a directory" in err
    for args in (["apply"], ["archive", "stats"], ["runs"], ["archive", "verify"]):
        code, _, err = run(capsys, *args, "--config-dir", str(config))
        assert code == 10, (args, err)
        assert str(archive) in err
        assert "Traceback" not in err
    assert archive.read_text() == "not a directory\n"


def test_an_archive_document_pointing_at_a_file_is_reported_at_its_place(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    (config.parent / "data").write_text("x")
    (config / "archive.yaml").write_text("kind: Archive\npath: ../data/archive\n")
    code, _out, err = run(capsys, "validate", "--config-dir", str(config))
    assert code == 10
    assert f"{config / 'archive.yaml'}:2:7: path: " in err
    assert "not a directory" in err


@pytest.mark.parametrize(
    "where", ["missing/plan.json", "afile/plan.json"], ids=["missing-dir", "through-a-file"]
)
def test_plan_out_into_a_missing_directory_or_through_a_file(
    capsys: pytest.CaptureFixture[str], config: Path, where: str
) -> None:
    (config.parent / "afile").write_text("x")
    out_file = config.parent / where
    code, _out, err = run(capsys, "plan", "--config-dir", str(config), "--out", str(out_file))
    assert code == 10, err
    assert str(out_file) in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "where", ["missing/log.jsonl", "afile/log.jsonl"], ids=["missing-dir", "through-a-file"]
)
@pytest.mark.parametrize("command", ["plan", "validate", "mailboxes"])
def test_log_file_into_a_missing_directory_or_through_a_file(
    capsys: pytest.CaptureFixture[str], config: Path, where: str, command: str
) -> None:
    """Also for the commands that log nothing: the option is refused, never ignored."""
    (config.parent / "afile").write_text("x")
    log_file = config.parent / where
    code, _out, err = run(capsys, "--log-file", str(log_file), command, "--config-dir", str(config))
    assert code == 10, err
    assert str(log_file) in err
    assert "Traceback" not in err


# -- with a real server ------------------------------------------------------------


@pytest.mark.dovecot
def test_apply_on_a_full_disk_then_again_on_a_still_full_disk(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC at the blob writes and at the lock's holder text: exit 14 both times,
    never a crash in the lock file; read-only commands still work; then it completes."""
    user = bed.new_user()
    seed(bed, user, "INBOX", 5)
    bed.master_profile("p", [user])
    from imapsync_decl.store import blobs as blobs_module

    real_write_all = os.write

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    profile = bed.config_dir / "p.yaml"  # the fault is injected here: archive here too
    profile.write_text(profile.read_text() + "worker_processes: false\n")
    monkeypatch.setattr(blobs_module.BlobStore, "put_many", lambda self, *a, **k: full())
    for _ in range(2):
        code, _out, err = bed.run("apply")
        assert code == 14, err
        assert f"the archive {bed.archive} cannot be written: no space left on device" in err
        assert "Traceback" not in err
        monkeypatch.setattr(os, "pwrite", full)  # still full: the holder text too
    for args in (["archive", "stats"], ["archive", "verify"], ["runs"], ["plan"]):
        code, _, err = bed.run(*args)
        assert code in (0, 2), (args, err)
    monkeypatch.undo()
    assert real_write_all is os.write
    monkeypatch.setenv("BED_MASTER_PASSWORD", bed.server.master_password)
    code, result = bed.apply_json()
    assert code == 0, result
    assert result["totals"]["archived"] == 5


# -- 11: the log file ------------------------------------------------------------------


def test_the_log_file_is_created_0600_and_appended_to(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    log_file = config.parent / "logs.jsonl"
    old = os.umask(0)
    try:
        code, _, err = run(capsys, "--log-file", str(log_file), "plan", "--config-dir", str(config))
    finally:
        os.umask(old)
    assert code == 3, err  # the server imap.example.com is not there: a plan error
    assert mode(log_file) == 0o600
    first = log_file.read_text()
    assert first.endswith("\n")
    assert "secret-master" not in first
    run(capsys, "--log-file", str(log_file), "plan", "--config-dir", str(config))
    assert log_file.read_text().startswith(first)  # appended, never truncated
    assert len(log_file.read_text()) > len(first)


def _log_symlink(path: Path) -> str:
    path.symlink_to(path.parent / "precious")
    return "the log file is a symbolic link"


def _log_group_writable(path: Path) -> str:
    path.write_text("")
    os.chmod(path, 0o664)
    return "the log file is writable by group or others (mode 664)"


def _log_foreign(path: Path) -> str:
    path.write_text("")
    os.chown(path, NOBODY, NOBODY)
    return f"the log file belongs to uid {NOBODY}, not to the running user"


def _log_fifo(path: Path) -> str:
    os.mkfifo(path, 0o600)
    return "the log file is not a regular file"


@pytest.mark.parametrize("prepare", [_log_symlink, _log_group_writable, _log_foreign, _log_fifo])
def test_an_unsafe_log_file_is_refused(
    capsys: pytest.CaptureFixture[str], config: Path, prepare: object
) -> None:
    if prepare is _log_foreign and os.geteuid() != 0:
        pytest.skip("chown to another uid needs root")
    precious = config.parent / "precious"
    precious.write_text("root's own file\n")
    log_file = config.parent / "logs.jsonl"
    reason = prepare(log_file)  # type: ignore[operator]
    code, _, err = run(capsys, "--log-file", str(log_file), "plan", "--config-dir", str(config))
    assert code == 10, err
    assert f"cannot use the log file {log_file}: {reason}" in err
    assert "Traceback" not in err
    assert precious.read_text() == "root's own file\n"


# -- 11: systemd units and credentials ---------------------------------------------


def _units(out: str) -> dict[str, str]:
    units: dict[str, str] = {}
    name = ""
    for line in out.splitlines(keepends=True):
        if line.startswith("# --- "):
            name = line.removeprefix("# --- ").strip()
            units[name] = ""
        elif name:
            units[name] += line
    return units


def test_the_systemd_service_is_sandboxed_and_takes_passwords_from_credentials(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config_dir = write_config(
        tmp_path / "etc" / "profiles.d",
        {
            "users.yaml": USERS,
            "staff.yaml": master_profile(name="staff").replace(
                "{env: TEST_MASTER_PW}", "{credential: imap-master}"
            )
            + 'schedule: "0 2 * * *"\n',
            "one.yaml": "kind: Profile\nname: one\nschedule: '@daily'\n"
            "server: {host: imap.example.com}\n"
            "source: {single: {username: u, password: {env: ONE_PW}}}\n",
            "archive.yaml": "kind: Archive\npath: /srv/mail archive\n",
        },
    )
    log_file = tmp_path / "log" / "imapsync-decl.jsonl"
    code, out, err = run(
        capsys,
        "--log-file",
        str(log_file),
        "schedule",
        "export",
        "--systemd",
        "--config-dir",
        str(config_dir),
    )
    assert code == 0, err
    units = _units(out)
    staff, one = units["imapsync-decl-staff.service"], units["imapsync-decl-one.service"]
    for service in (staff, one):
        for line in ("UMask=0077", "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectSystem=strict"):
            assert f"\n{line}\n" in service
        assert f'\nReadWritePaths="/srv/mail archive" {log_file.parent}\n' in service
        assert f" --log-file {log_file} apply " in service
        assert "\nEnvironment=" not in service
    assert "\nLoadCredential=imap-master:/etc/imapsync-decl/credentials/imap-master\n" in staff
    assert "EnvironmentFile" not in staff
    assert "\nEnvironmentFile=/etc/imapsync-decl/imapsync-decl-one.env\n" in one
    assert "# Sets ONE_PW (NAME=value lines); keep it root-owned, mode 0600." in one
    assert "LoadCredential" not in one
    if shutil.which("systemd-analyze") is None:
        return  # the unit text above is all that can be checked here
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / name) for name in units)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_a_credential_is_read_from_the_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imapsync_decl.secrets import SecretError, read_credential

    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(SecretError, match=r"credential imap-master: \$CREDENTIALS_DIRECTORY is"):
        read_credential("imap-master")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(SecretError, match="credential imap-master is not in") as missing:
        read_credential("imap-master")
    assert str(tmp_path) in str(missing.value)
    (tmp_path / "imap-master").write_text("s3cret value\n")
    assert read_credential("imap-master").reveal() == "s3cret value"
    (tmp_path / "linked").symlink_to(tmp_path / "imap-master")
    with pytest.raises(SecretError, match="a symbolic link") as linked:
        read_credential("linked")
    assert "s3cret" not in str(linked.value)


def test_validate_accepts_a_credential_and_refuses_a_bad_name(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    staff = config / "staff.yaml"
    staff.write_text(
        staff.read_text().replace("{env: TEST_MASTER_PW}", "{credential: imap-master}")
    )
    code, _, err = run(capsys, "validate", "--config-dir", str(config))
    assert code == 0, err
    staff.write_text(staff.read_text().replace("imap-master", "../etc/shadow"))
    code, _, err = run(capsys, "validate", "--config-dir", str(config))
    assert code == 10
    assert "source.master.password.credential: String should match pattern" in err


@pytest.mark.dovecot
def test_apply_logs_in_with_a_credential(
    bed: Bed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 3)
    bed.master_profile("p", [user])
    profile = bed.config_dir / "p.yaml"
    profile.write_text(
        profile.read_text().replace("{env: BED_MASTER_PASSWORD}", "{credential: master}")
    )
    monkeypatch.delenv("BED_MASTER_PASSWORD")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    code, result = bed.apply_json()
    assert code == 3
    (failed,) = result["mailboxes"]
    assert "credential master: $CREDENTIALS_DIRECTORY is not set" in failed["error"]
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "master").write_text(bed.server.master_password + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    code, result = bed.apply_json()
    assert code == 0, result
    assert result["totals"]["archived"] == 3


def test_a_blob_that_is_a_symlink_is_damage_and_never_followed(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with Archive.open(root) as archive:
        info = archive.blobs.put(b"Subject: x\r\n\r\nbody\r\n")
        blob = archive.blobs.path(info.sha256)
    elsewhere = tmp_path / "elsewhere"
    shutil.copy(blob, elsewhere)  # a valid blob, but outside the archive
    blob.unlink()
    blob.symlink_to(elsewhere)
    with Archive.open(root, read_only=True) as archive:
        with pytest.raises(BlobDamaged, match="is a symbolic link"):
            archive.blobs.get(info.sha256)
        with pytest.raises(BlobDamaged, match="is a symbolic link"):
            archive.blobs.check(info.sha256)


@needs_root
def test_apply_where_the_user_may_not_create_the_archive_exits_14(
    config: Path, shared_place: Path
) -> None:
    """For real, as uid 65534: the archive's parent belongs to root (mode 755)."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv(1)")
    config_dir = shared_place / "profiles.d"
    shutil.copytree(config, config_dir)
    for path in [config_dir, *config_dir.iterdir()]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    done = subprocess.run(
        [
            "setpriv",
            "--reuid",
            str(NOBODY),
            "--regid",
            str(NOBODY),
            "--clear-groups",
            *_command("apply", "--config-dir", str(config_dir)),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 14, done.stderr
    assert f"{shared_place / 'archive'}" in done.stderr
    assert f"the archive cannot be written: {shared_place / 'archive'}: Permission denied" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
    assert not (shared_place / "archive").exists()


def _users_from_an_unreachable_directory(config: Path) -> None:
    """A Users document whose directory (port 9 on loopback) never answers."""
    (config / "users.yaml").write_text(
        "kind: Users\nusers: []\ndirectory:\n  url: ldap://127.0.0.1:9\n"
        "  base_dn: 'dc=example,dc=test'\n"
    )


@needs_root
def test_validate_and_mailboxes_read_the_directory_users_of_another_owners_archive(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    _users_from_an_unreachable_directory(config)
    root = config.parent / "archive"
    make_archive(root)
    for path in [root, *root.rglob("*")]:
        os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
    for args in (["validate"], ["mailboxes"], ["users", "list"]):
        code, _, err = run(capsys, *args, "--config-dir", str(config))
        assert code == 0, (args, err)
    assert sorted(p.name for p in root.iterdir()) == ["blobs", "index.sqlite", "journal"]


def test_users_sync_refuses_a_shared_archive_before_reading_the_directory(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    _users_from_an_unreachable_directory(config)
    root = config.parent / "archive"
    reason = _world_writable_root(root)
    code, _, err = run(capsys, "users", "sync", "--config-dir", str(config))
    assert code == 14, err
    assert f"the archive cannot be written: {root}: {reason}" in err
    assert list(root.iterdir()) == []
