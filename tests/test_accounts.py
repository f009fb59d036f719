"""Web accounts of archive users: Argon2id hashes, sessions, throttling, the file's safety."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Literal

import pytest
from argon2 import PasswordHasher

from imapsync_decl.errors import ExitCode
from imapsync_decl.store.accounts import (
    ACCOUNTS_NAME,
    FAILURE_WINDOW_SECONDS,
    MAX_FAILURE_ROWS,
    MAX_FAILURES,
    MAX_SESSIONS_PER_USER,
    Accounts,
    AccountsCorrupt,
    AccountsError,
    InvalidPassword,
)

SECRET = "correct horse battery staple"


class CountingHasher(PasswordHasher):
    """Argon2id with cheap parameters, counting the verifications it does."""

    def __init__(self, time_cost: int = 1) -> None:
        super().__init__(time_cost=time_cost, memory_cost=8, parallelism=1)
        self.verifications = 0
        self.hashes = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verifications += 1
        return super().verify(hash, password)

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.hashes += 1
        return super().hash(password, salt=salt)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def open_accounts(root: Path, clock: Clock | None = None, **kwargs: object) -> Accounts:
    hasher = kwargs.pop("hasher", None) or CountingHasher()
    assert isinstance(hasher, PasswordHasher)
    return Accounts.open(root, hasher=hasher, clock=clock or Clock(), **kwargs)  # type: ignore[arg-type]


def stored_hash(root: Path, name: str) -> str | None:
    db = sqlite3.connect(root / ACCOUNTS_NAME)
    try:
        row = db.execute("SELECT password_hash FROM accounts WHERE name = ?", (name,)).fetchone()
    finally:
        db.close()
    return None if row is None else row[0]


def test_the_file_is_private_and_apart_from_the_index(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with open_accounts(root) as accounts:
        accounts.set_password("alice", SECRET)
    path = root / ACCOUNTS_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert not (root / "index.sqlite").exists()


def test_only_an_argon2id_hash_is_stored(tmp_path: Path) -> None:
    with open_accounts(tmp_path) as accounts:
        accounts.set_password("alice", SECRET)
    hashed = stored_hash(tmp_path, "alice")
    assert hashed is not None
    assert hashed.startswith("$argon2id$")
    assert SECRET.encode() not in (tmp_path / ACCOUNTS_NAME).read_bytes()


def test_verify_password_and_states(tmp_path: Path) -> None:
    with open_accounts(tmp_path) as accounts:
        assert accounts.password_state("alice") == "none"
        assert not accounts.verify_password("alice", SECRET)
        accounts.set_password("alice", SECRET)
        assert accounts.password_state("alice") == "set"
        assert accounts.verify_password("alice", SECRET)
        assert not accounts.verify_password("alice", SECRET + "x")
        assert not accounts.verify_password("Alice", SECRET)
        assert not accounts.verify_password("alice", "")
        accounts.disable("alice")
        assert accounts.password_state("alice") == "disabled"
        assert not accounts.verify_password("alice", SECRET)
        accounts.set_password("alice", "another one")
        assert accounts.password_state("alice") == "set"
        assert accounts.verify_password("alice", "another one")
        assert not accounts.verify_password("alice", SECRET)
        accounts.disable("bob")  # never had a password: disabled all the same
        assert accounts.password_state("bob") == "disabled"
        assert accounts.password_states() == {"alice": "set", "bob": "disabled"}


def test_an_unknown_or_disabled_name_costs_the_same_argon2_work(tmp_path: Path) -> None:
    hasher = CountingHasher()
    with open_accounts(tmp_path, hasher=hasher) as accounts:
        accounts.set_password("alice", SECRET)
        accounts.disable("carol")
        for name in ("alice", "nobody", "carol"):
            before = hasher.verifications
            assert not accounts.verify_password(name, "wrong")
            assert hasher.verifications == before + 1, name


@pytest.mark.parametrize("name", ["alice", "nobody", "carol"])
def test_the_first_sign_in_costs_the_same_for_every_name(tmp_path: Path, name: str) -> None:
    """The dummy hash is made at the first verification, whichever name it is for."""
    with open_accounts(tmp_path) as accounts:
        accounts.set_password("alice", SECRET)
        accounts.disable("carol")
    hasher = CountingHasher()
    with open_accounts(tmp_path, hasher=hasher) as accounts:
        assert not accounts.verify_password(name, "wrong")
    assert (hasher.hashes, hasher.verifications) == (1, 1)


def test_a_hash_of_old_parameters_is_replaced_at_sign_in(tmp_path: Path) -> None:
    with open_accounts(tmp_path, hasher=CountingHasher(time_cost=1)) as accounts:
        accounts.set_password("alice", SECRET)
    old = stored_hash(tmp_path, "alice")
    stronger = CountingHasher(time_cost=2)
    with open_accounts(tmp_path, hasher=stronger) as accounts:
        assert not accounts.verify_password("alice", "wrong")
        assert stored_hash(tmp_path, "alice") == old  # no rehash on a failure
        assert accounts.verify_password("alice", SECRET)
        new = stored_hash(tmp_path, "alice")
        assert new != old
        assert new is not None
        assert not stronger.check_needs_rehash(new)
        assert accounts.verify_password("alice", SECRET)


@pytest.mark.parametrize("password", ["", "x" * 1025])
def test_empty_and_overlong_passwords_are_refused(tmp_path: Path, password: str) -> None:
    with open_accounts(tmp_path) as accounts:
        with pytest.raises(InvalidPassword) as caught:
            accounts.set_password("alice", password)
        assert caught.value.exit_code == ExitCode.CONFIG
        assert accounts.password_state("alice") == "none"
        assert not accounts.verify_password("alice", password)
    if password:
        assert password not in caught.value.message


def test_the_longest_password_is_accepted(tmp_path: Path) -> None:
    with open_accounts(tmp_path) as accounts:
        accounts.set_password("alice", "y" * 1024)
        assert accounts.verify_password("alice", "y" * 1024)


def test_sessions_store_only_the_tokens_hash(tmp_path: Path) -> None:
    with open_accounts(tmp_path) as accounts:
        token = accounts.create_session("alice", 3600, "192.0.2.7")
        other = accounts.create_session("alice", 3600, None)
        assert token != other
        assert len(token) >= 43
        assert accounts.session_user(token) == "alice"
        assert accounts.session_user(token + "x") is None
        assert accounts.session_user("") is None
    data = (tmp_path / ACCOUNTS_NAME).read_bytes()
    assert token.encode() not in data
    db = sqlite3.connect(tmp_path / ACCOUNTS_NAME)
    hashes = {row[0] for row in db.execute("SELECT token_hash FROM sessions")}
    db.close()
    assert hashlib.sha256(token.encode()).hexdigest() in hashes


def test_sessions_expire_and_end(tmp_path: Path) -> None:
    clock = Clock()
    with open_accounts(tmp_path, clock) as accounts:
        short = accounts.create_session("alice", 60, None)
        long = accounts.create_session("alice", 3600, None)
        bobs = accounts.create_session("bob", 3600, None)
        clock.now += 60
        assert accounts.session_user(short) is None
        assert accounts.session_user(long) == "alice"
        accounts.end_session(long)
        assert accounts.session_user(long) is None
        accounts.end_session("unknown")  # nothing happens
        again = accounts.create_session("alice", 3600, None)
        another = accounts.create_session("alice", 3600, None)
        assert accounts.end_all_sessions("alice") == 2
        assert accounts.session_user(again) is None
        assert accounts.session_user(another) is None
        assert accounts.session_user(bobs) == "bob"
        with pytest.raises(ValueError, match="positive"):
            accounts.create_session("alice", 0, None)


def test_setting_a_password_or_disabling_ends_the_users_sessions(tmp_path: Path) -> None:
    with open_accounts(tmp_path) as accounts:
        accounts.set_password("alice", SECRET)
        first = accounts.create_session("alice", 3600, None)
        bobs = accounts.create_session("bob", 3600, None)
        accounts.set_password("alice", "new secret")
        assert accounts.session_user(first) is None
        second = accounts.create_session("alice", 3600, None)
        accounts.disable("alice")
        assert accounts.session_user(second) is None
        assert accounts.end_all_sessions("alice") == 0  # ended, not only refused
        assert accounts.session_user(bobs) == "bob"


def test_a_disabled_users_session_is_refused(tmp_path: Path) -> None:
    """Also a session made without a password (directory sign-in) ends with disable."""
    with open_accounts(tmp_path) as accounts:
        token = accounts.create_session("dora", 3600, None)
        assert accounts.session_user(token) == "dora"
        accounts.disable("dora")
        assert accounts.session_user(token) is None
        token = accounts.create_session("dora", 3600, None)
        assert accounts.session_user(token) is None


def test_expired_sessions_are_pruned_and_each_user_has_a_bounded_number(tmp_path: Path) -> None:
    clock = Clock()
    with open_accounts(tmp_path, clock) as accounts:
        accounts.create_session("bob", 10, None)
        clock.now += 11
        tokens = []
        for _ in range(MAX_SESSIONS_PER_USER + 3):
            clock.now += 1
            tokens.append(accounts.create_session("alice", 3600, None))
    db = sqlite3.connect(tmp_path / ACCOUNTS_NAME)
    count = db.execute("SELECT count(*) FROM sessions").fetchone()[0]
    db.close()
    assert count == MAX_SESSIONS_PER_USER
    with open_accounts(tmp_path, clock) as accounts:
        assert accounts.session_user(tokens[0]) is None
        assert accounts.session_user(tokens[-1]) == "alice"


def test_throttled_after_five_failures_of_a_name(tmp_path: Path) -> None:
    clock = Clock()
    with open_accounts(tmp_path, clock) as accounts:
        for n in range(MAX_FAILURES):
            assert not accounts.throttled("alice", "192.0.2.1")
            accounts.record_failure("alice", f"192.0.2.{n + 1}")
        assert accounts.throttled("alice", "198.51.100.9")
        assert accounts.throttled("ALICE", None)  # names are compared case-folded
        assert not accounts.throttled("bob", "198.51.100.9")
        clock.now += FAILURE_WINDOW_SECONDS
        assert not accounts.throttled("alice", None)


def test_throttled_after_five_failures_from_an_address(tmp_path: Path) -> None:
    with open_accounts(tmp_path) as accounts:
        for n in range(MAX_FAILURES):
            accounts.record_failure(f"user{n}", "192.0.2.1", now=5000.0 + n)
        assert accounts.throttled("someone", "192.0.2.1", now=5010.0)
        assert not accounts.throttled("someone", "192.0.2.2", now=5010.0)
        assert not accounts.throttled("someone", None, now=5010.0)
        # The window slides: the first failure drops out 15 minutes after it.
        assert accounts.throttled("someone", "192.0.2.1", now=5000.0 + FAILURE_WINDOW_SECONDS - 1)
        assert not accounts.throttled("someone", "192.0.2.1", now=5000.0 + FAILURE_WINDOW_SECONDS)


def test_setting_a_password_lifts_the_throttle_of_that_name(tmp_path: Path) -> None:
    with open_accounts(tmp_path) as accounts:
        for _ in range(MAX_FAILURES):
            accounts.record_failure("Alice", "192.0.2.1")
        accounts.set_password("alice", SECRET)
        assert not accounts.throttled("alice", None)
        assert accounts.throttled("alice", "192.0.2.1")  # the address stays throttled


def test_old_failures_are_pruned(tmp_path: Path) -> None:
    with open_accounts(tmp_path) as accounts:
        for n in range(20):
            accounts.record_failure("alice", None, now=1000.0 + n)
        accounts.record_failure("bob", None, now=1020.0 + FAILURE_WINDOW_SECONDS)
    db = sqlite3.connect(tmp_path / ACCOUNTS_NAME)
    rows = db.execute("SELECT name FROM failures").fetchall()
    db.close()
    assert rows == [("bob",)]


def test_the_failure_table_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("imapsync_decl.store.accounts.MAX_FAILURE_ROWS", 10)
    with open_accounts(tmp_path) as accounts:
        for n in range(25):
            accounts.record_failure(f"user{n}", None, now=1000.0)
    db = sqlite3.connect(tmp_path / ACCOUNTS_NAME)
    count = db.execute("SELECT count(*) FROM failures").fetchone()[0]
    db.close()
    assert count == 10
    assert MAX_FAILURE_ROWS >= 10_000


def test_read_only_creates_nothing_and_writes_nothing(tmp_path: Path) -> None:
    with open_accounts(tmp_path, read_only=True) as accounts:
        assert accounts.password_state("alice") == "none"
        assert not accounts.verify_password("alice", SECRET)
        assert accounts.session_user("token") is None
        with pytest.raises(AccountsError, match="read-only"):
            accounts.set_password("alice", SECRET)
    assert not (tmp_path / ACCOUNTS_NAME).exists()
    with open_accounts(tmp_path) as accounts:
        accounts.set_password("alice", SECRET)
    with open_accounts(tmp_path, read_only=True) as accounts:
        assert accounts.password_state("alice") == "set"
        assert accounts.verify_password("alice", SECRET)


def test_a_damaged_file_is_an_integrity_error(tmp_path: Path) -> None:
    (tmp_path / ACCOUNTS_NAME).write_bytes(b"not a database at all, just junk bytes " * 100)
    os.chmod(tmp_path / ACCOUNTS_NAME, 0o600)
    with pytest.raises(AccountsCorrupt) as caught:
        open_accounts(tmp_path)
    assert caught.value.exit_code == ExitCode.INTEGRITY
    assert "users passwd" in caught.value.message


def test_a_symlink_or_a_file_others_can_write_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.sqlite"
    target.write_bytes(b"")
    root = tmp_path / "archive"
    root.mkdir(mode=0o700)
    (root / ACCOUNTS_NAME).symlink_to(target)
    for read_only in (False, True):
        with pytest.raises(AccountsError) as caught:
            open_accounts(root, read_only=read_only)
        assert caught.value.exit_code == ExitCode.NOT_WRITABLE
        assert "symbolic link" in caught.value.message
    (root / ACCOUNTS_NAME).unlink()
    (root / ACCOUNTS_NAME).write_bytes(b"")
    os.chmod(root / ACCOUNTS_NAME, 0o622)  # noqa: S103 (the case under test)
    with pytest.raises(AccountsError, match="writable by group or others"):
        open_accounts(root)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    with open_accounts(tmp_path):
        pass
    db = sqlite3.connect(tmp_path / ACCOUNTS_NAME)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(AccountsError, match="newer") as caught:
        open_accounts(tmp_path)
    assert caught.value.exit_code == ExitCode.CONFIG


def test_threads_share_one_accounts(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    with open_accounts(tmp_path) as accounts:
        accounts.set_password("alice", SECRET)

        def work(n: int) -> None:
            try:
                for _ in range(5):
                    assert accounts.verify_password("alice", SECRET)
                    token = accounts.create_session("alice", 3600, f"192.0.2.{n}")
                    assert accounts.session_user(token) == "alice"
                    accounts.record_failure("bob", f"192.0.2.{n}")
                    accounts.end_session(token)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []


def test_two_processes_can_share_the_file(tmp_path: Path) -> None:
    """``users passwd`` writes while ``serve`` has the file open."""
    with open_accounts(tmp_path) as serving, open_accounts(tmp_path) as admin:
        token = serving.create_session("alice", 3600, None)
        admin.set_password("alice", SECRET)
        assert serving.session_user(token) is None
        assert serving.verify_password("alice", SECRET)
