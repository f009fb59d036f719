"""Sign-in with the directory password, against the real slapd: a bind as the user's entry."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from imapsync_decl.cli.main import main
from imapsync_decl.config.resolve import Config
from imapsync_decl.sources import directory_auth
from imapsync_decl.sources.directory_auth import directory_sign_in, escape_filter_value
from imapsync_decl.sources.users import load_with_index_users

from helpers import write_config
from servers.certificates import make_self_signed
from servers.slapd import ACTIVE_USER_FILTER, SlapdServer

ANNA_PW = "anna's directory pw"
STAR_PW = "star user pw"


def users_doc(
    slapd: SlapdServer, base_dn: str, url: str, starttls: bool, ca_file: Path | None = None
) -> str:
    return "\n".join(
        [
            "kind: Users",
            "users:",
            "  - {name: docuser, email: docuser@example.test}",
            "directory:",
            f"  url: {url}",
            f"  starttls: {'true' if starttls else 'false'}",
            f"  ca_file: {ca_file or slapd.ca_file}",
            f"  bind_dn: '{slapd.reader_dn}'",
            "  password: {env: LDAP_PW}",
            f"  base_dn: '{base_dn}'",
            f"  filter: '{ACTIVE_USER_FILTER}'",
            "  timeout: 5",
            "",
        ]
    )


def synced_config(
    slapd: SlapdServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    ldaps: bool = False,
    ca_file: Path | None = None,
) -> tuple[Config, str]:
    """A directory unit with anna, bob, bab and b*b (all with passwords), synced into
    the archive's user list; the configuration and the unit's name."""
    ou = f"t{uuid.uuid4().hex[:8]}"
    base = slapd.add_ou(ou)
    slapd.add_user("anna", mail="anna@example.test", password=ANNA_PW, ou=ou)
    slapd.add_user("bob", mail="bob@example.test", password=STAR_PW, ou=ou)
    slapd.add_user("bab", mail="bab@example.test", password=STAR_PW, ou=ou)
    slapd.add_user("b*b", mail="bstar@example.test", password=STAR_PW, ou=ou)
    slapd.add_user("nopw", mail="nopw@example.test", ou=ou)
    url = slapd.ldaps_url if ldaps else slapd.url
    assert url is not None
    config_dir = write_config(
        tmp_path / "profiles.d",
        {
            "users.yaml": users_doc(slapd, base, url, not ldaps),
            "archive.yaml": f"kind: Archive\npath: {tmp_path / 'archive'}\n",
            "web.yaml": "kind: Web\ndirectory_sign_in: true\n",
        },
    )
    assert main(["users", "sync", "--config-dir", str(config_dir)]) == 0
    capsys.readouterr()
    if ca_file is not None:  # after the sync, the directory's certificate is not trusted
        (config_dir / "users.yaml").write_text(users_doc(slapd, base, url, not ldaps, ca_file))
    config = load_with_index_users(config_dir, str(config_dir))
    assert config.ok, [str(p) for p in config.problems]
    return config, ou


@pytest.fixture(autouse=True)
def reader_password(slapd: SlapdServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LDAP_PW", slapd.reader_password)


def test_right_and_wrong_password(
    slapd: SlapdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = synced_config(slapd, tmp_path, capsys)
    assert directory_sign_in(config, "anna", ANNA_PW)
    assert not directory_sign_in(config, "anna", ANNA_PW + "x")
    assert not directory_sign_in(config, "anna", STAR_PW)
    assert not directory_sign_in(config, "ANNA", ANNA_PW)  # the directory's spelling only
    assert not directory_sign_in(config, "nobody", ANNA_PW)
    assert not directory_sign_in(config, "nopw", "anything")


def test_only_when_the_web_document_allows_it(
    slapd: SlapdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = synced_config(slapd, tmp_path, capsys)
    assert directory_sign_in(config, "anna", ANNA_PW)
    (config.config_dir / "web.yaml").write_text("kind: Web\n")
    config = load_with_index_users(config.config_dir, str(config.config_dir))
    assert not config.web.directory_sign_in
    assert not directory_sign_in(config, "anna", ANNA_PW)


def test_a_user_whose_web_access_is_disabled_cannot_sign_in(
    slapd: SlapdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = synced_config(slapd, tmp_path, capsys)
    assert (
        main(["users", "passwd", "--disable", "anna", "--config-dir", str(config.config_dir)]) == 0
    )
    capsys.readouterr()
    assert not directory_sign_in(config, "anna", ANNA_PW)
    assert directory_sign_in(config, "bob", STAR_PW)


def test_over_ldaps(slapd: SlapdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = synced_config(slapd, tmp_path, capsys, ldaps=True)
    assert directory_sign_in(config, "anna", ANNA_PW)
    assert not directory_sign_in(config, "anna", "wrong")


def test_an_empty_password_is_refused_before_any_bind(
    slapd: SlapdServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, _ = synced_config(slapd, tmp_path, capsys)
    # slapd takes a DN without a password as a successful unauthenticated bind (RFC 4513
    # 5.1.2); nothing may reach it with an empty password.
    connects: list[Any] = []
    from imapsync_decl.sources.directory import connect as real

    def counting(*args: Any) -> Any:
        connects.append(args)
        return real(*args)

    monkeypatch.setattr(directory_auth, "connect", counting)
    assert not directory_sign_in(config, "anna", "")
    assert connects == []
    assert directory_sign_in(config, "anna", ANNA_PW)
    assert len(connects) == 2  # the service bind and search, then the user's bind


def test_filter_metacharacters_cannot_widen_the_search(
    slapd: SlapdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = synced_config(slapd, tmp_path, capsys)
    # b*b is a user of its own; unescaped, its name would also match bob and bab.
    assert directory_sign_in(config, "b*b", STAR_PW)
    assert not directory_sign_in(config, "b*b", ANNA_PW)
    for hostile in ("*", "a*", "anna)(uid=*", "*)(|(uid=*", "anna\\2a", "an\x00na"):
        assert not directory_sign_in(config, hostile, ANNA_PW), hostile


def test_escape_filter_value() -> None:
    assert escape_filter_value("b*b") == "b\\2ab"
    assert escape_filter_value("a)(uid=*") == "a\\29\\28uid=\\2a"
    assert escape_filter_value("back\\slash") == "back\\5cslash"
    assert escape_filter_value("nul\x00") == "nul\\00"
    assert escape_filter_value("Ünal") == "Ünal"


def test_a_user_not_from_a_directory_never_reaches_it(
    slapd: SlapdServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, ou = synced_config(slapd, tmp_path, capsys)
    # The directory has an entry of that name too, with that password.
    slapd.add_user("docuser", mail="docuser@example.test", password=ANNA_PW, ou=ou)
    connects: list[Any] = []
    monkeypatch.setattr(directory_auth, "connect", lambda *a: connects.append(a))
    assert not directory_sign_in(config, "docuser", ANNA_PW)
    assert connects == []


def test_a_user_gone_from_the_directory_cannot_sign_in_with_it(
    slapd: SlapdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, ou = synced_config(slapd, tmp_path, capsys)
    slapd.delete_user("bob", ou=ou)
    assert main(["users", "sync", "--config-dir", str(config.config_dir)]) == 0
    capsys.readouterr()
    slapd.add_user("bob", mail="bob@example.test", password=STAR_PW, ou=ou)
    config = load_with_index_users(config.config_dir, str(config.config_dir))
    assert not directory_sign_in(config, "bob", STAR_PW)  # gone until the next sync


@pytest.mark.parametrize("ldaps", [False, True])
def test_a_directory_whose_certificate_fails_is_false(
    slapd: SlapdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], ldaps: bool
) -> None:
    other = tmp_path / "other-ca"
    other.mkdir()
    cert, _ = make_self_signed(other)
    config, _ = synced_config(slapd, tmp_path, capsys, ldaps=ldaps, ca_file=cert)
    assert not directory_sign_in(config, "anna", ANNA_PW)
