"""A configuration as a whole: user selection, identities, CSV profiles, secrets, warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from imapsync_decl.config.resolve import Config, SecretError, load_config
from imapsync_decl.secrets import Secret

from helpers import USERS, master_profile, write_config


def load(directory: Path) -> Config:
    return load_config(directory, "cfg")


def logins(config: Config, profile: str = "staff") -> list[str]:
    return [m.login for m in config.mailboxes[profile]]


def messages(config: Config) -> list[str]:
    return [str(p) for p in config.problems]


@pytest.fixture(autouse=True)
def master_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_MASTER_PW", "master-secret")


@pytest.mark.parametrize(
    ("master", "expected"),
    [
        ("", ["alice@example.com", "bob@example.com", '"carol@home"@example.com']),
        (
            "users: {select: all_except, names: [bob]}",
            ["alice@example.com", '"carol@home"@example.com'],
        ),
        (
            "users: {select: all_except, names: [BOB@example.com]}",
            ["alice@example.com", '"carol@home"@example.com'],
        ),
        (
            "users: {select: only, names: [carol, alice]}",
            ["alice@example.com", '"carol@home"@example.com'],
        ),
        ("identity: email_local_part", ["alice", "bob", '"carol@home"']),
        ("identity: username", ["alice", "bob", "carol"]),
        ("identity: username\nusers: {select: only, names: [scanner]}", ["scanner"]),
        (
            "identity: {template: '{{ user.name }}@mail.example.net'}",
            ["alice@mail.example.net", "bob@mail.example.net", "carol@mail.example.net"],
        ),
        (
            "identity: {template: '{{ local_part }}%{{ domain }}'}",
            ["alice%example.com", "bob%example.com", '"carol@home"%example.com'],
        ),
    ],
)
def test_selection_and_identity(tmp_path: Path, master: str, expected: list[str]) -> None:
    config = load(
        write_config(tmp_path, {"users.yaml": USERS, "staff.yaml": master_profile(master)})
    )
    assert config.ok, messages(config)
    assert logins(config) == expected


def test_master_mailbox_fields_and_credentials(tmp_path: Path) -> None:
    config = load(write_config(tmp_path, {"users.yaml": USERS, "staff.yaml": master_profile()}))
    alice = config.mailboxes["staff"][0]
    assert alice.to_json() == {
        "profile": "staff",
        "source": "master",
        "archive_user": "alice",
        "login": "alice@example.com",
        "email": "alice@example.com",
        "archive_folder": "alice@example.com",
        "mechanism": "sasl_plain",
    }
    assert alice.credentials.username == "archiver"
    assert alice.credentials.authzid == "alice@example.com"
    assert alice.credentials.resolve_password() == Secret("master-secret")


def test_login_separator_builds_the_login_name(tmp_path: Path) -> None:
    master = "mechanism: login_separator\nseparator: '%'\nusers: {select: only, names: [bob]}"
    config = load(
        write_config(tmp_path, {"users.yaml": USERS, "staff.yaml": master_profile(master)})
    )
    (bob,) = config.mailboxes["staff"]
    assert bob.login == "bob@example.com"
    assert bob.credentials.mechanism == "login_separator"
    assert bob.credentials.username == "bob@example.com%archiver"
    assert bob.credentials.authzid is None


def test_only_user_without_email_needs_an_identity_that_works_without(tmp_path: Path) -> None:
    master = "users: {select: only, names: [scanner, alice, nobody]}"
    config = load(
        write_config(tmp_path, {"users.yaml": USERS, "staff.yaml": master_profile(master)})
    )
    assert config.ok
    assert logins(config) == ["alice@example.com"]
    assert messages(config) == [
        "cfg/staff.yaml:7:5: warning: source.master.identity: user 'scanner' has no e-mail "
        "address, so identity email cannot be formed; not archived",
        "cfg/staff.yaml:9:51: warning: source.master.users.names[2]: no user 'nobody' in the "
        "user list",
    ]


def test_template_unknown_attribute_is_an_error_naming_the_user(tmp_path: Path) -> None:
    master = "identity: {template: '{{ user.uid }}'}"
    config = load(
        write_config(tmp_path, {"users.yaml": USERS, "staff.yaml": master_profile(master)})
    )
    assert not config.ok
    assert any("template for user 'alice'" in m and "uid" in m for m in messages(config))


def test_template_unknown_variable_is_a_validation_error(tmp_path: Path) -> None:
    master = "identity: {template: '{{ uid }}'}"
    config = load(
        write_config(tmp_path, {"users.yaml": USERS, "staff.yaml": master_profile(master)})
    )
    assert messages(config) == [
        "cfg/staff.yaml:9:15: source.master.identity.template: unknown template variable uid "
        "(known: domain, local_part, user)"
    ]


def test_same_identity_twice_is_an_error(tmp_path: Path) -> None:
    users = "kind: Users\nusers:\n  - {name: a, email: info@one.example}\n  - {name: b, email: info@two.example}\n"
    config = load(
        write_config(
            tmp_path,
            {"users.yaml": users, "staff.yaml": master_profile("identity: email_local_part")},
        )
    )
    assert not config.ok
    assert "users 'a' and 'b' have the same identity 'info'" in "\n".join(messages(config))


def test_csv_profile_resolves_rows(tmp_path: Path) -> None:
    config = load(
        write_config(
            tmp_path,
            {
                "c.yaml": "kind: Profile\nname: c\nserver: {host: h}\nsource: {csv: {file: m.csv}}\n",
                "m.csv": "login,password,email,archive user\nalice,pw1,alice@example.com,\nbob,pw2,,robert\n",
            },
        )
    )
    assert config.ok, messages(config)
    rows = [(m.archive_user, m.login, m.email, m.archive_folder) for m in config.mailboxes["c"]]
    assert rows == [
        ("alice", "alice", "alice@example.com", "alice@example.com"),
        ("robert", "bob", None, "bob"),
    ]
    assert config.mailboxes["c"][1].credentials.resolve_password() == Secret("pw2")


def test_csv_errors_are_reported_with_the_profile(tmp_path: Path) -> None:
    config = load(
        write_config(
            tmp_path,
            {
                "c.yaml": "kind: Profile\nname: c\nserver: {host: h}\nsource: {csv: {file: m.csv}}\n",
                "m.csv": "login;password\nalice;\n",
            },
        )
    )
    assert not config.ok
    found = messages(config)
    assert "cfg/c.yaml:4:22: source.csv.file: CSV file cfg/m.csv has errors" in found
    assert any(m.startswith("cfg/m.csv:2: ") for m in found), found


def test_missing_csv_file_is_an_error(tmp_path: Path) -> None:
    config = load(
        write_config(
            tmp_path,
            {
                "c.yaml": "kind: Profile\nname: c\nserver: {host: h}\nsource: {csv: {file: nope.csv}}\n"
            },
        )
    )
    assert not config.ok
    assert any(m.startswith("cfg/nope.csv") for m in messages(config)), messages(config)


def test_warnings_for_insecure_settings_and_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_MASTER_PW")
    (tmp_path / "pw.txt").write_text("filepw\n")
    (tmp_path / "pw.txt").chmod(0o644)
    write_config(
        tmp_path,
        {
            "users.yaml": USERS,
            "staff.yaml": master_profile(server="accept_all_certificates: true"),
            "one.yaml": "kind: Profile\nname: one\nserver: {host: h, security: plain}\n"
            "source: {single: {username: alice, password: hunter2}}\n",
            "two.yaml": "kind: Profile\nname: two\nserver: {host: h, ca_file: ca.pem}\n"
            "source: {single: {username: bob, password: {file: pw.txt}}}\n",
        },
    )
    config = load(tmp_path)
    assert config.ok
    assert messages(config) == [
        "cfg/one.yaml:3:29: warning: server.security: insecure: passwords and mail travel "
        "unencrypted; use starttls or tls",
        "cfg/one.yaml:4:46: warning: source.single.password: inline password in a document that "
        "may be committed; use {env: NAME} or {file: PATH}",
        "cfg/staff.yaml:5:28: warning: server.accept_all_certificates: insecure: every server "
        "certificate is accepted, so a man in the middle can read the passwords and the mail",
        "cfg/staff.yaml:9:15: warning: source.master.password: environment variable "
        "TEST_MASTER_PW is not set",
        f"cfg/two.yaml:3:28: warning: server.ca_file: file not found: {tmp_path}/ca.pem",
        f"cfg/two.yaml:4:44: warning: source.single.password: password file {tmp_path}/pw.txt "
        "is readable by group/others; chmod 600 it",
    ]
    assert "hunter2" not in "\n".join(messages(config))
    (two,) = config.mailboxes["two"]
    assert two.credentials.resolve_password() == Secret("filepw")
    with pytest.raises(SecretError, match="TEST_MASTER_PW is not set"):
        config.mailboxes["staff"][0].credentials.resolve_password()


def test_duplicates_across_documents(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {
            "a.yaml": USERS + "---\nkind: Archive\npath: ../arch\n",
            "b.yaml": "kind: Users\nusers:\n  - {name: Alice}\n  - {name: dave, email: bob@example.com}\n"
            "---\nkind: Archive\npath: elsewhere\n---\n"
            + master_profile()
            + "---\n"
            + master_profile(),
        },
    )
    config = load(tmp_path)
    assert [str(p) for p in config.errors] == [
        "cfg/b.yaml:3:12: users[0].name: duplicate user name 'Alice' (first in cfg/a.yaml:1)",
        "cfg/b.yaml:6:7: kind: only one Archive document is allowed (first in cfg/a.yaml)",
        "cfg/b.yaml:15:5: source.master.identity: users 'bob' and 'dave' have the same identity "
        "'bob@example.com'",
        "cfg/b.yaml:19:7: name: duplicate profile name 'staff' (first in cfg/b.yaml)",
        "cfg/b.yaml:24:5: source.master.identity: users 'bob' and 'dave' have the same identity "
        "'bob@example.com'",
    ]
    assert [str(p) for p in config.warnings] == [
        "cfg/b.yaml:4:25: warning: users[1].email: users 'bob' and 'dave' have the same e-mail address"
    ]
    assert config.archive_path == tmp_path.parent / "arch"


def test_default_archive_is_beside_the_config_dir(tmp_path: Path) -> None:
    config = load(write_config(tmp_path / "profiles.d", {"users.yaml": USERS}))
    assert config.archive_path == tmp_path / "archive"


def test_host_names_are_checked_at_their_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from imapsync_decl.cli.main import main

    write_config(
        tmp_path,
        {
            "p.yaml": master_profile(server="port: 993").replace(
                "host: imap.example.com", "host: mail.example.test [x]"
            ),
            "u.yaml": """
                kind: Users
                directory:
                  url: ldap://dir.example.test:99999
                  base_dn: dc=example,dc=test
            """,
        },
    )
    assert main(["validate", "--config-dir", str(tmp_path)]) == 10
    err = capsys.readouterr().err
    assert f"{tmp_path}/p.yaml:4:9: server.host: not a host name or IP address" in err
    assert f"{tmp_path}/u.yaml:3:8: directory.url: expected ldap://host[:port]" in err
    assert "Traceback" not in err


# --- values that reach the IMAP wire -------------------------------------------------------


def test_a_csv_login_with_crlf_fails_validate_at_its_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from imapsync_decl.cli.main import main
    from imapsync_decl.config.documents import WIRE_SAFE

    write_config(
        tmp_path,
        {
            "c.yaml": "kind: Profile\nname: c\nserver: {host: h}\nsource: {csv: {file: rows.csv}}\n",
            "rows.csv": 'login;password\n"alice\r\nZ9 DELETE INBOX";pw\nbob;"s3\x00cret"\n',
        },
    )
    assert main(["validate", "--config-dir", str(tmp_path)]) == 10
    err = capsys.readouterr().err
    assert f"{tmp_path}/rows.csv:2: login: {WIRE_SAFE.message}" in err
    assert f"{tmp_path}/rows.csv:4: password: {WIRE_SAFE.message}" in err
    assert "s3" not in err


@pytest.mark.parametrize(
    ("document", "place"),
    [
        (
            master_profile().replace("username: archiver", 'username: "arch\\r\\niver"'),
            "7:15: source.master.username",
        ),
        (
            master_profile('mechanism: login_separator\nseparator: "*\\n"'),
            "10:16: source.master.separator",
        ),
        (
            master_profile().replace("{env: TEST_MASTER_PW}", '"pw\\nZ9 LOGOUT"'),
            "8:15: source.master.password",
        ),
        (
            master_profile() + 'folders: {include: ["INBOX\\r\\nZ9 LOGOUT"]}\n',
            "9:21: folders.include[0]",
        ),
        (
            "kind: Profile\nname: one\nserver: {host: h}\n"
            'source: {single: {username: alice, password: {env: P}, email: "a@x\\x00"}}\n',
            "4:63: source.single.email",
        ),
    ],
)
def test_wire_values_in_documents_are_errors_at_their_place(
    tmp_path: Path, document: str, place: str
) -> None:
    from imapsync_decl.config.documents import WIRE_SAFE

    config = load(write_config(tmp_path, {"users.yaml": USERS, "p.yaml": document}))
    assert not config.ok
    found = [m for m in messages(config) if "warning" not in m]
    assert found == [f"cfg/p.yaml:{place}: {WIRE_SAFE.message}"]


def test_users_with_line_breaks_are_errors_at_their_place(tmp_path: Path) -> None:
    users = """
        kind: Users
        users:
          - {name: "alice\\r\\nZ9 LOGOUT", email: alice@example.com}
          - {name: bob, email: "bob@example.com\\n"}
          - {name: carol, email: "x y@@"}
    """
    config = load(write_config(tmp_path, {"users.yaml": users, "staff.yaml": master_profile()}))
    assert [m for m in messages(config) if "warning" not in m] == [
        "cfg/users.yaml:3:12: users[0].name: must not contain a line break (CR, LF) or NUL: "
        "it could not be sent to a server as it is",
        "cfg/users.yaml:4:24: users[1].email: must not contain a line break (CR, LF) or NUL: "
        "it could not be sent to a server as it is",
        "cfg/users.yaml:5:26: users[2].email: not an e-mail address",
    ]


def test_an_identity_template_that_renders_a_line_break_is_an_error(tmp_path: Path) -> None:
    users = 'kind: Users\nusers:\n  - {name: dora, email: dora@example.com, display_name: "D\\nZ9 LOGOUT"}\n'
    master = "identity: {template: '{{ user.display_name }}'}"
    config = load(
        write_config(tmp_path, {"users.yaml": users, "staff.yaml": master_profile(master)})
    )
    assert not config.ok
    assert "cfg/staff.yaml:9:15: source.master.identity: the identity of user 'dora' must not " in (
        "\n".join(messages(config))
    )
    assert config.mailboxes["staff"] == ()


@pytest.mark.parametrize("kind", ["env", "file"])
def test_a_referenced_password_with_a_line_break_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    from imapsync_decl.config.documents import WIRE_SAFE

    value = "secret\r\nZ9 LOGOUT"
    monkeypatch.setenv("TEST_MASTER_PW", value)
    (tmp_path / "pw.txt").write_text(value + "\n")
    (tmp_path / "pw.txt").chmod(0o600)
    reference = "{env: TEST_MASTER_PW}" if kind == "env" else "{file: pw.txt}"
    profile = master_profile().replace("{env: TEST_MASTER_PW}", reference)
    config = load(write_config(tmp_path, {"users.yaml": USERS, "staff.yaml": profile}))
    where = (
        "environment variable TEST_MASTER_PW"
        if kind == "env"
        else f"password file {tmp_path}/pw.txt"
    )
    assert messages(config) == [
        f"cfg/staff.yaml:8:15: source.master.password: the password in {where} {WIRE_SAFE.message}"
    ]
    # And when it changes after validate: refused at resolution, never sent.
    monkeypatch.setenv("TEST_MASTER_PW", "fine")
    (tmp_path / "pw.txt").write_text("fine\n")
    config = load(tmp_path)
    assert config.ok, messages(config)
    monkeypatch.setenv("TEST_MASTER_PW", value)
    (tmp_path / "pw.txt").write_text(value + "\n")
    with pytest.raises(SecretError) as refused:
        config.mailboxes["staff"][0].credentials.resolve_password()
    assert refused.value.exit_code == 10
    assert "secret" not in str(refused.value)


def test_directory_users_from_the_index_are_validated() -> None:
    from imapsync_decl.config.resolve import directory_users
    from imapsync_decl.store.index import UserRecord

    records = [
        UserRecord("ok", "ok@example.test", None),
        UserRecord("bad\r\nZ9 LOGOUT", "bad@example.test", None),
        UserRecord("worse", "x y@@", None),
    ]
    assert [u.user.name for u in directory_users(records)] == ["ok"]


# --- mailboxes that land in the same archive folder ------------------------------------------


def csv_profile(name: str, csv: str, host: str = "imap.example.test") -> str:
    return (
        f"kind: Profile\nname: {name}\nserver: {{host: {host}}}\nsource: {{csv: {{file: {csv}}}}}\n"
    )


def test_two_rows_for_one_mailbox_with_different_logins_are_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from imapsync_decl.cli.main import main

    write_config(
        tmp_path,
        {
            "c.yaml": csv_profile("c", "rows.csv"),
            "rows.csv": "login;password;email;archive_user\n"
            "user0001;pw;user0001@example.test;user0001\n"
            "other;pw;other@example.test;other\n"
            "user0001@example.test;pw;user0001@example.test;user0001\n",
        },
    )
    assert main(["validate", "--config-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert (
        f"{tmp_path}/rows.csv:4: warning: mailbox user0001@example.test lands in the archive "
        f"folder user0001@example.test of user user0001, as {tmp_path}/rows.csv:2 "
        "(user0001 on imap.example.test:993) does; their login differs" in err
    )


def test_the_same_mailbox_twice_is_an_error_in_validate_plan_and_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from imapsync_decl.cli.main import main

    write_config(
        tmp_path,
        {
            "a.yaml": csv_profile("a", "a.csv"),
            "a.csv": "login;password;email\nalice;pw;alice@example.test\n",
            # Another profile, the same server (host case and a trailing dot do not matter).
            "b.yaml": csv_profile("b", "b.csv", host="IMAP.example.test."),
            "b.csv": "login;password;email\nbob;pw;\nALICE;pw2;alice@example.test\n",
        },
    )
    expected = (
        f"{tmp_path}/b.csv:3: mailbox ALICE lands in the archive folder alice@example.test of "
        f"user ALICE, as {tmp_path}/a.csv:2 does"
    )
    # Archive users are names: alice and ALICE are two users, so no clash yet.
    assert main(["validate", "--config-dir", str(tmp_path)]) == 0
    assert expected not in capsys.readouterr().err
    (tmp_path / "b.csv").write_text(
        "login;password;email;archive_user\nbob;pw;;\nALICE;pw2;alice@example.test;alice\n"
    )
    expected = expected.replace("user ALICE", "user alice")
    for command in (["validate"], ["plan"], ["apply"]):
        assert main([*command, "--config-dir", str(tmp_path)]) == 10, command
        err = capsys.readouterr().err
        assert f"{expected}, with the same server and login: it is the same mailbox twice" in err
        assert "Traceback" not in err
    assert not (tmp_path.parent / "archive").exists()


def test_shared_archive_folders_across_sources(tmp_path: Path) -> None:
    from imapsync_decl.config.checks import shared_archive_folders

    users = "kind: Users\nusers:\n  - {name: bob, email: bob@example.com}\n"
    single = (
        "kind: Profile\nname: one\nserver: {host: imap.example.com, port: 993}\n"
        "source: {single: {username: BOB@example.com, password: {env: P}, email: bob@example.com,"
        " archive_user: bob}}\n"
    )
    write_config(
        tmp_path, {"users.yaml": users, "staff.yaml": master_profile(), "one.yaml": single}
    )
    config = load(tmp_path)
    found = [str(p) for p in config.problems if "lands in" in p.message]
    assert found == [
        "cfg/staff.yaml:7:5: source.master: mailbox bob@example.com lands in the archive folder "
        "bob@example.com of user bob, as cfg/one.yaml:4:18 does, with the same server and login: "
        "it is the same mailbox twice; remove one"
    ]
    # Another server: kept apart, a warning.
    (tmp_path / "one.yaml").write_text(single.replace("port: 993", "port: 10993"))
    config = load(tmp_path)
    (warning,) = [p for p in config.problems if "lands in" in p.message]
    assert not warning.is_error
    assert "their server differs" in warning.message
    # The function itself, over the resolved mailboxes.
    mailboxes = [m for found in config.mailboxes.values() for m in found]
    assert shared_archive_folders(mailboxes) == [warning]
    assert shared_archive_folders(mailboxes[:1]) == []


def test_invalid_directory_users_in_the_index_are_warnings_of_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Records an older version kept: left out, named at the index, JSON output intact."""
    import json

    from imapsync_decl.cli.main import main
    from imapsync_decl.sources.users import sync_directory_users
    from imapsync_decl.store import Archive
    from imapsync_decl.store.index import UserRecord

    config_dir = write_config(
        tmp_path / "profiles.d",
        {
            "u.yaml": "kind: Users\ndirectory: {url: 'ldaps://dir.example.test', base_dn: 'dc=x'}\n",
            "staff.yaml": master_profile(),
        },
    )
    with Archive.open(tmp_path / "archive") as archive:
        sync_directory_users(
            archive.index,
            "ldaps://dir.example.test/dc=x",
            [
                UserRecord("ann", "ann@example.test", None),
                UserRecord("bad\r\nZ9 LOGOUT", "bad@example.test", None),
            ],
        )
    assert main(["validate", "--format", "json", "--config-dir", str(config_dir)]) == 0
    out, err = capsys.readouterr()
    body = json.loads(out)
    index = str(tmp_path / "archive" / "index.sqlite")
    assert [(w["path"], w["message"]) for w in body["warnings"] if w["path"] == index] == [
        (
            index,
            "directory user 'bad\\r\\nZ9 LOGOUT' left out: name: must not contain a line break "
            "(CR, LF) or NUL: it could not be sent to a server as it is",
        )
    ]
    assert body["profiles"][0]["mailboxes"] == 1  # ann
    assert f"{index}: warning: directory user 'bad\\r\\nZ9 LOGOUT' left out" in err
