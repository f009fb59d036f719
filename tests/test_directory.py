"""Directory synchronisation against a real OpenLDAP slapd, and user selection end to end."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from imapsync_decl.config.documents import Directory
from imapsync_decl.secrets import Secret
from imapsync_decl.sources.directory import DirectoryError, DirectorySettings, read_directory

from bed import Bed, seed
from helpers import write_config
from servers.slapd import ACTIVE_USER_FILTER, SlapdServer

pytestmark = [pytest.mark.dovecot]


def new_ou(slapd: SlapdServer) -> tuple[str, str]:
    ou = f"t{uuid.uuid4().hex[:8]}"
    return ou, slapd.add_ou(ou)


def settings(slapd: SlapdServer, base_dn: str, **extra: object) -> DirectorySettings:
    body = {
        "url": slapd.url,
        "starttls": True,
        "ca_file": str(slapd.ca_file),
        "bind_dn": slapd.reader_dn,
        "password": {"env": "LDAP_PW"},
        "base_dn": base_dn,
        "filter": ACTIVE_USER_FILTER,
        "attributes": {"display_name": "displayName"},
        **extra,
    }
    return DirectorySettings(
        Directory.model_validate(body), Path("/"), Secret(slapd.reader_password)
    )


def users_doc(slapd: SlapdServer, base_dn: str, **extra: str) -> str:
    lines = [
        "kind: Users",
        "directory:",
        f"  url: {slapd.url}",
        "  starttls: true",
        f"  ca_file: {slapd.ca_file}",
        f"  bind_dn: '{slapd.reader_dn}'",
        "  password: {env: LDAP_PW}",
        f"  base_dn: '{base_dn}'",
        f"  filter: '{ACTIVE_USER_FILTER}'",
        "  attributes: {display_name: displayName}",
    ]
    lines += [f"  {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(autouse=True)
def ldap_password(slapd: SlapdServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LDAP_PW", slapd.reader_password)


def test_read_directory_maps_entries_to_users(slapd: SlapdServer) -> None:
    ou, base = new_ou(slapd)
    slapd.add_user("jdoe", mail="jane.doe@example.test", display_name="Jane Doé", ou=ou)
    slapd.add_user("nomail", display_name="No Mail", ou=ou)
    slapd.add_user("gone", mail="gone@example.test", disabled=True, ou=ou)
    read = read_directory(settings(slapd, base))
    users = {u.name: u for u in read.users}
    assert sorted(users) == ["jdoe", "nomail"]
    assert users["jdoe"].email == "jane.doe@example.test"  # local part differs from the uid
    assert users["jdoe"].display_name == "Jane Doé"
    assert users["nomail"].email is None
    assert users["jdoe"].source == "directory"


def test_paged_search_reads_more_than_the_size_limit(slapd: SlapdServer) -> None:
    ou, base = new_ou(slapd)
    assert slapd.size_limit is not None
    count = slapd.size_limit + 150
    slapd.add_many(count, prefix="bulk", ou=ou)
    read = read_directory(settings(slapd, base, page_size=200))
    assert len(read.users) == count


def test_bind_failure_and_unreachable_directory_are_clear_errors(slapd: SlapdServer) -> None:
    _ou, base = new_ou(slapd)
    wrong = settings(slapd, base)
    wrong = DirectorySettings(wrong.directory, wrong.base_dir, Secret("not-the-password-42"))
    with pytest.raises(DirectoryError) as refused:
        read_directory(wrong)
    assert slapd.url in str(refused.value)
    assert "bind" in str(refused.value)
    assert "not-the-password-42" not in str(refused.value)
    closed = settings(slapd, base, url="ldap://127.0.0.1:9", timeout=2)
    with pytest.raises(DirectoryError, match="cannot connect"):
        read_directory(closed)


def test_users_sync_adds_updates_and_marks_gone(slapd: SlapdServer, bed: Bed) -> None:
    ou, base = new_ou(slapd)
    slapd.add_user("anna", mail="anna@example.test", display_name="Anna", ou=ou)
    slapd.add_user("ben", mail="ben@example.test", ou=ou)
    write_config(bed.config_dir, {"dir.yaml": users_doc(slapd, base)})
    code, out, err = bed.run("users", "sync", "--format", "json")
    assert code == 0, err
    (changes,) = json.loads(out)["changes"].values()
    assert changes["added"] == ["anna", "ben"]

    slapd.modify_user("anna", ou=ou, display_name="Anna Ärger")
    slapd.delete_user("ben", ou=ou)
    code, out, _ = bed.run("users", "sync", "--format", "json")
    (changes,) = json.loads(out)["changes"].values()
    assert changes["updated"] == ["anna"]
    assert changes["gone"] == ["ben"]

    code, out, _ = bed.run("users", "list", "--format", "json")
    listed = {u["name"]: u for u in json.loads(out)}
    assert listed["anna"]["display_name"] == "Anna Ärger"
    assert (listed["anna"]["source"], listed["anna"]["status"]) == ("directory", "active")
    assert (listed["ben"]["source"], listed["ben"]["status"]) == ("directory", "gone")


def test_sync_directory_archives_a_new_employee(slapd: SlapdServer, bed: Bed) -> None:
    ou, base = new_ou(slapd)
    first = bed.new_user("e")
    seed(bed, first, "INBOX", 2)
    slapd.add_user(first, mail=f"{first}@example.test", ou=ou)
    write_config(bed.config_dir, {"dir.yaml": users_doc(slapd, base)})
    profile = (
        "kind: Profile\nname: staff\n"
        + bed.server_yaml()
        + "source:\n  master:\n"
        + f"    username: {bed.server.master_user}\n"
        + "    password: {env: BED_MASTER_PASSWORD}\n"
        + "    identity: email_local_part\n"
        + "    sync_directory: true\n"
    )
    write_config(bed.config_dir, {"staff.yaml": profile})

    code, plan = bed.plan_json()
    assert code == 0
    assert plan["profiles"][0]["users_added"] == [first]
    assert plan["totals"]["messages"] == 2
    assert not (bed.archive / "index.sqlite").exists(), "plan only reads"

    code, result = bed.apply_json()
    assert code == 0, result
    assert result["totals"]["archived"] == 2

    # A new employee appears in the directory; nobody touches the profile.
    second = bed.new_user("n")
    seed(bed, second, "INBOX", 3)
    slapd.add_user(second, mail=f"{second}@example.test", ou=ou)
    code, result = bed.apply_json()
    assert code == 0, result
    assert result["totals"]["archived"] == 3
    assert {p[0] for p in bed.placements()} == {first, second}


def test_an_unreachable_directory_fails_only_the_profiles_that_need_it(
    slapd: SlapdServer, bed: Bed
) -> None:
    _ou, base = new_ou(slapd)
    write_config(
        bed.config_dir,
        {"dir.yaml": users_doc(slapd, base).replace(slapd.url, "ldap://127.0.0.1:9")},
    )
    other = bed.new_user()
    seed(bed, other, "INBOX", 2)
    bed.csv_profile("others", [(other, bed.users[other])])
    write_config(
        bed.config_dir,
        {
            "staff.yaml": "kind: Profile\nname: staff\n"
            + bed.server_yaml()
            + "source:\n  master:\n"
            + f"    username: {bed.server.master_user}\n"
            + "    password: {env: BED_MASTER_PASSWORD}\n"
            + "    sync_directory: true\n"
        },
    )
    code, plan = bed.plan_json()
    assert code == 3
    errors = {p["name"]: p["error"] for p in plan["profiles"]}
    assert "ldap://127.0.0.1:9" in errors["staff"]
    assert errors["others"] is None
    code, result = bed.apply_json()
    assert code == 3
    assert any("ldap://127.0.0.1:9" in e for e in result["errors"])
    assert {p[0] for p in bed.placements()} == {other}


@pytest.mark.parametrize(
    ("users", "identity", "archived", "reasons"),
    [
        ("{select: all}", "email_local_part", ["a", "b"], {"c": "no e-mail address"}),
        (
            "{select: all_except, names: [a]}",
            "email_local_part",
            ["b"],
            {"a": "excluded", "c": "no e-mail address"},
        ),
        ("{select: only, names: [c]}", "username", ["c"], {"a": "not in only", "b": "not in only"}),
        (
            "{select: only, names: [B@example.test]}",
            '{template: "{{ user.name }}"}',
            ["b"],
            {"a": "not in only", "c": "not in only"},
        ),
        ("{select: only, names: [a]}", "email", ["a"], {"b": "not in only", "c": "not in only"}),
    ],
)
def test_selection_and_identity_end_to_end(
    bed: Bed, users: str, identity: str, archived: list[str], reasons: dict[str, str]
) -> None:
    tag = uuid.uuid4().hex[:6]
    names = {letter: f"{letter}{tag}" for letter in "abc"}
    for letter, name in names.items():
        bed.users[name] = bed.server.add_user(name)
        seed(bed, name, "INBOX", 1, tag=letter)
    # identity email logs in with the whole address: the server knows that name too.
    bed.users[f"{names['a']}@example.test"] = bed.server.add_user(f"{names['a']}@example.test")
    seed(bed, f"{names['a']}@example.test", "INBOX", 1, tag="a")
    users_yaml = (
        "kind: Users\nusers:\n"
        f"  - {{name: {names['a']}, email: {names['a']}@example.test}}\n"
        f"  - {{name: {names['b']}, email: {names['b']}@example.test}}\n"
        f"  - {{name: {names['c']}}}\n"
    )
    for letter, name in names.items():
        users = users.replace(f"[{letter}]", f"[{name}]").replace(
            f"[{letter.upper()}@", f"[{name.upper()}@"
        )
    write_config(
        bed.config_dir,
        {
            "users.yaml": users_yaml,
            "p.yaml": "kind: Profile\nname: p\n"
            + bed.server_yaml()
            + "source:\n  master:\n"
            + f"    username: {bed.server.master_user}\n"
            + "    password: {env: BED_MASTER_PASSWORD}\n"
            + f"    identity: {identity}\n"
            + f"    users: {users}\n",
        },
    )
    code, out, err = bed.run("mailboxes", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    got = {r["archive_user"]: r["reason"] for r in rows if not r["selected"]}
    assert got == {names[k]: v for k, v in reasons.items()}
    code, result = bed.apply_json()
    assert code == 0, result
    assert sorted(p[0] for p in bed.placements()) == sorted(names[k] for k in archived)


# --- every Directory option, set explicitly, through `users sync` ---------------------------


def sync_users(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], directory: dict[str, object]
) -> tuple[int, dict[str, dict[str, object]], str]:
    """Write one Users document with exactly ``directory``, run `users sync`, then return the
    exit code, the directory users of `users list` by name, and what sync printed."""
    from imapsync_decl.cli.main import main

    config_dir = tmp_path / "profiles.d"
    write_config(config_dir, {"dir.json": json.dumps({"kind": "Users", "directory": directory})})
    code = main(["users", "sync", "--format", "json", "--config-dir", str(config_dir)])
    out, err = capsys.readouterr()
    assert main(["users", "list", "--format", "json", "--config-dir", str(config_dir)]) == 0
    listed = {u["name"]: u for u in json.loads(capsys.readouterr().out)}
    return code, {n: u for n, u in listed.items() if u["source"] == "directory"}, out + err


def directory_options(slapd: SlapdServer, base_dn: str, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "url": slapd.url,
        "starttls": True,
        "ca_file": str(slapd.ca_file),
        "bind_dn": slapd.reader_dn,
        "password": {"env": "LDAP_PW"},
        "base_dn": base_dn,
    }
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize("timeout", [30, 2.5, 3600])
def test_an_explicit_timeout_syncs(
    slapd: SlapdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], timeout: float
) -> None:
    ou, base = new_ou(slapd)
    slapd.add_user("tina", mail="tina@example.test", ou=ou)
    code, users, err = sync_users(tmp_path, capsys, directory_options(slapd, base, timeout=timeout))
    assert code == 0, err
    assert list(users) == ["tina"]


def test_the_timeout_ends_a_wait_for_a_silent_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that accepts the connection and never answers: the bind gives up after
    ``timeout`` seconds with an error naming the directory (no time is asserted)."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"ldap://127.0.0.1:{silent.getsockname()[1]}"
        directory = {"url": url, "base_dn": "dc=example,dc=test", "timeout": 1}
        code, users, err = sync_users(tmp_path, capsys, directory)
    assert code == 3
    assert url in err
    assert users == {}


def test_type_sets_the_default_filter_and_attributes(
    slapd: SlapdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ou, base = new_ou(slapd)
    slapd.add_user("olga", mail="olga@example.test", cn="Olga Cn", display_name="Olga Dn", ou=ou)
    code, users, err = sync_users(tmp_path, capsys, directory_options(slapd, base, type="openldap"))
    assert code == 0, err
    assert users["olga"]["display_name"] == "Olga Cn"  # openldap: cn
    # active_directory: displayName (sAMAccountName does not exist in this slapd, so the
    # user name comes from uid and the AD filter is replaced).
    options = directory_options(
        slapd,
        base,
        type="active_directory",
        filter="(objectClass=inetOrgPerson)",
        attributes={"username": "uid"},
    )
    code, users, err = sync_users(tmp_path / "ad", capsys, options)
    assert code == 0, err
    assert users["olga"]["display_name"] == "Olga Dn"
    assert users["olga"]["aliases"] == []  # proxyAddresses: none here


def test_url_starttls_and_ca_file(
    slapd: SlapdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ou, base = new_ou(slapd)
    slapd.add_user("uma", mail="uma@example.test", ou=ou)
    assert slapd.ldaps_url is not None
    cases: list[tuple[dict[str, object], int]] = [
        ({"url": slapd.url, "starttls": False, "ca_file": None}, 0),  # plain LDAP
        ({"url": slapd.url, "starttls": True}, 0),
        # StartTLS really happens: without the CA file the certificate is not trusted.
        ({"url": slapd.url, "starttls": True, "ca_file": None}, 3),
        ({"url": slapd.ldaps_url, "starttls": False}, 0),
        ({"url": slapd.ldaps_url + "/", "starttls": False, "ca_file": None}, 3),
    ]
    for number, (extra, expected) in enumerate(cases):
        options = directory_options(slapd, base, **extra)
        if extra.get("ca_file", "") is None:
            options.pop("ca_file", None)
        code, users, err = sync_users(tmp_path / str(number), capsys, options)
        assert code == expected, (extra, err)
        assert list(users) == (["uma"] if expected == 0 else []), extra


def test_bind_dn_and_password(
    slapd: SlapdServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ou, base = new_ou(slapd)
    slapd.add_user("vera", mail="vera@example.test", ou=ou)
    secret = tmp_path / "ldap.pw"
    secret.write_text(slapd.reader_password + "\n", encoding="utf-8")
    secret.chmod(0o600)
    code, users, err = sync_users(
        tmp_path / "file", capsys, directory_options(slapd, base, password={"file": str(secret)})
    )
    assert (code, list(users)) == (0, ["vera"]), err
    monkeypatch.setenv("LDAP_PW", "not-the-reader-password")
    code, users, err = sync_users(tmp_path / "wrong", capsys, directory_options(slapd, base))
    assert code == 3
    assert "bind as cn=reader" in err
    assert "not-the-reader-password" not in err
    # Anonymous (neither bind_dn nor password): the bind is accepted, but this directory
    # shows anonymous nothing, so the search fails.
    options = directory_options(slapd, base, bind_dn=None, password=None)
    code, users, err = sync_users(tmp_path / "anon", capsys, options)
    assert code == 3
    assert "search failed: noSuchObject" in err
    assert users == {}


def test_base_dn_and_filter(
    slapd: SlapdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ou, base = new_ou(slapd)
    _other, other_base = new_ou(slapd)
    slapd.add_user("wim", mail="wim@example.test", ou=ou)
    slapd.add_user("wanda", mail="wanda@example.test", disabled=True, ou=ou)
    slapd.add_user("xeno", mail="xeno@example.test", ou=_other)
    code, users, err = sync_users(tmp_path / "a", capsys, directory_options(slapd, base))
    assert (code, sorted(users)) == (0, ["wanda", "wim"]), err
    options = directory_options(slapd, base, filter=ACTIVE_USER_FILTER)
    code, users, err = sync_users(tmp_path / "b", capsys, options)
    assert (code, sorted(users)) == (0, ["wim"]), err
    code, users, err = sync_users(tmp_path / "c", capsys, directory_options(slapd, other_base))
    assert (code, sorted(users)) == (0, ["xeno"]), err


def test_attributes_map_each_user_field(
    slapd: SlapdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ou, base = new_ou(slapd)
    slapd.add_user(
        "yuri",
        cn="yuri.cn",
        given_name="Yuri Given",
        mail=["yuri@example.test", "y.alias@example.test"],
        extra={"description": "yuri.desc@example.test"},
        ou=ou,
    )
    attributes = {
        "username": "cn",
        "email": "description",
        "display_name": "givenName",
        "aliases": "mail",
    }
    options = directory_options(slapd, base, attributes=attributes)
    code, users, err = sync_users(tmp_path, capsys, options)
    assert code == 0, err
    assert users["yuri.cn"]["email"] == "yuri.desc@example.test"
    assert users["yuri.cn"]["display_name"] == "Yuri Given"
    assert users["yuri.cn"]["aliases"] == ["yuri@example.test", "y.alias@example.test"]


def test_page_size_sets_the_entries_per_page(
    slapd: SlapdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ou, base = new_ou(slapd)
    uids = slapd.add_many(7, prefix="pg", ou=ou)
    before = slapd.read_log().count(f'SRCH base="{base}"')
    code, users, err = sync_users(tmp_path, capsys, directory_options(slapd, base, page_size=3))
    assert code == 0, err
    assert sorted(users) == uids
    # 7 entries, 3 per page: three paged searches.
    assert slapd.read_log().count(f'SRCH base="{base}"') - before == 3


def test_entries_the_user_model_refuses_are_skipped_with_a_warning_naming_the_dn(
    slapd: SlapdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ou, base = new_ou(slapd)
    slapd.add_user("good", cn="good", mail="good@example.test", ou=ou)
    spaced = slapd.add_user("spaced", cn="spaced", mail="x y@@", ou=ou)
    crlf = slapd.add_user("crlf", cn="crlf\r\nZ9 DELETE INBOX", mail="crlf@example.test", ou=ou)
    options = directory_options(slapd, base, attributes={"username": "cn"})
    code, users, err = sync_users(tmp_path, capsys, options)
    assert code == 0, err
    assert list(users) == ["good"]
    assert f"{spaced}: skipped: email: not an e-mail address" in err
    assert f"{crlf}: skipped: name: must not contain a line break" in err
    assert slapd.reader_password not in err
