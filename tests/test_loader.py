"""Documents with mistakes: every problem reported at once, each at its file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imapsync_decl.config.loader import field_path, load_config_dir

from helpers import write_config


def problems(directory: Path) -> list[str]:
    return [str(p) for p in load_config_dir(directory, "cfg").problems]


def test_every_problem_of_every_file_at_its_place(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {
            "a.yaml": """
                kind: Profile
                name: staff
                server:
                  host: imap.example.com
                  port: 99999
                  securty: tls
                source:
                  master:
                    username: archiver
                    password: {env: IMAP_MASTER_PASSWORD}
                    identity: emial
                    users:
                      select: only
                delete:
                  mode: sometimes
                ---
                kind: Users
                users:
                  - {name: alice, email: alice@example.com}
                  - {name: bob, email: "not an email"}
                ---
                kind: Foo
            """,
            "b.json": '{"kind": "Archive", "path": 3}',
        },
    )
    assert problems(tmp_path) == [
        "cfg/a.yaml:5:9: server.port: Input should be less than or equal to 65535",
        "cfg/a.yaml:6:3: server.securty: unknown field; did you mean 'security'?",
        "cfg/a.yaml:11:15: source.master.identity: expected one of 'email', "
        "'email_local_part' or 'username', got 'emial'",
        "cfg/a.yaml:13:7: source.master.users: select: only needs at least one entry in names",
        "cfg/a.yaml:15:9: delete.mode: expected one of 'never' or 'after_archive', got 'sometimes'",
        "cfg/a.yaml:20:24: users[1].email: not an e-mail address",
        "cfg/a.yaml:22:7: kind: unknown kind 'Foo' (expected one of Profile, Users, Archive, Web)",
        "cfg/b.json:1:29: path: Input should be a valid string",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: Archive\npath: [a\n", "cfg/x.yaml:3:1: YAML:"),
        ("kind: Archive\nkind: Users\n", "cfg/x.yaml:2:1: YAML:"),
        ("- a\n- b\n", "cfg/x.yaml:1:1: a document must be a mapping"),
        ("path: ../a\n", "cfg/x.yaml:1:1: kind: missing"),
        ("kind: Archive\n", "cfg/x.yaml:1:1: path: required field is missing"),
        (
            "kind: Users\nusers:\n  - name: a\n    nmae: b\n",
            "cfg/x.yaml:4:5: users[0].nmae: unknown field; did you mean 'name'?",
        ),
        (
            "kind: Users\nusers:\n  - name: a\n    zzz: b\n",
            "cfg/x.yaml:4:5: users[0].zzz: unknown field (allowed: name, email, aliases, display_name)",
        ),
        (
            "kind: Users\ndirectory: {url: 'ldaps://x', base_dn: 'dc=x', starttls: true}\n",
            "cfg/x.yaml:2:12: directory: starttls is for ldap:// URLs",
        ),
        (
            "kind: Archive\npath: ''\n",
            "cfg/x.yaml:2:7: path: String should have at least 1 character",
        ),
    ],
)
def test_single_problem_places(tmp_path: Path, text: str, expected: str) -> None:
    write_config(tmp_path, {"x.yaml": text})
    found = problems(tmp_path)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


def test_json_syntax_error_has_its_place(tmp_path: Path) -> None:
    write_config(tmp_path, {"c.json": '{"kind": "Archive",\n "path": 3,}'})
    assert problems(tmp_path) == [
        "cfg/c.json:2:12: JSON: Expecting property name enclosed in double quotes"
    ]


def test_json_document_positions(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {
            "p.json": '{\n  "kind": "Profile",\n  "name": "x",\n  "server": {"host": "h", "port": -1},\n'
            '  "source": {"csv": {"file": "m.csv"}}\n}\n'
        },
    )
    assert problems(tmp_path) == [
        "cfg/p.json:4:35: server.port: Input should be greater than or equal to 1"
    ]


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    write_config(tmp_path, {"x.yaml": b"kind: Users\nusers:\n  - name: J\xf6rg\n"})
    assert problems(tmp_path) == ["cfg/x.yaml:3: not valid UTF-8"]


def test_empty_documents_and_other_files_are_ignored(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {"x.yaml": "---\nkind: Archive\npath: a\n---\n", "notes.txt": "hello", "m.csv": "a;b\n"},
    )
    result = load_config_dir(tmp_path, "cfg")
    assert result.ok
    assert [a.doc.path for a in result.archives] == ["a"]


def test_missing_directory_and_empty_directory(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope") == ["cfg: configuration directory not found"]
    assert problems(tmp_path) == ["cfg: no documents (*.yaml, *.yml, *.json) found"]


def test_field_path_drops_union_tags() -> None:
    assert field_path(("source", "master", "password", "secret:env", "env")) == (
        "source.master.password.env"
    )
    assert field_path(("users", 2, "name")) == "users[2].name"


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=300))
def test_any_text_gives_problems_never_an_exception(tmp_path: Path, text: str) -> None:
    write_config(tmp_path, {"x.yaml": text.encode("utf-8", "surrogatepass")})
    load_config_dir(tmp_path, "cfg")


YAMLISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "kind",
                    "name",
                    "server",
                    "host",
                    "port",
                    "source",
                    "master",
                    "csv",
                    "users",
                    "select",
                    "names",
                    "password",
                    "env",
                    "file",
                    "path",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(["Profile", "Users", "Archive", "x"]),
    body=st.dictionaries(st.text(max_size=6), YAMLISH, max_size=5),
)
def test_any_structure_gives_problems_never_an_exception(
    tmp_path: Path, kind: str, body: dict[str, object]
) -> None:
    import json

    (tmp_path / "x.json").write_text(json.dumps({**body, "kind": kind}), encoding="utf-8")
    result = load_config_dir(tmp_path, "cfg")
    for problem in result.problems:
        assert problem.path == "cfg/x.json"
        assert problem.line is not None


def billion_laughs(levels: int = 9) -> str:
    """Each level is ten aliases of the one before: 10**levels values once expanded."""
    lines = [
        "kind: Profile",
        "name: laughs",
        "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]",
    ]
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    lines.append(f"description: *l{levels}")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_the_alias(tmp_path: Path) -> None:
    write_config(tmp_path, {"bomb.yaml": billion_laughs(), "ok.yaml": "kind: Archive\npath: a\n"})
    result = load_config_dir(tmp_path, "cfg")
    # 10 + 100 + 1000 values are fine; the alias that would pass 10000 is refused.
    assert [str(p) for p in result.problems] == [
        "cfg/bomb.yaml:6:45: YAML: aliases expand this document by more than 10000 values "
        "(at *l2); write the values out or use fewer aliases"
    ]
    assert [item.doc.path for item in result.archives] == ["a"]  # other files still load


def test_validate_exits_10_on_an_alias_bomb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from imapsync_decl.cli.main import main

    write_config(tmp_path, {"bomb.yaml": billion_laughs()})
    assert main(["validate", "--config-dir", str(tmp_path)]) == 10
    err = capsys.readouterr().err
    assert f"{tmp_path}/bomb.yaml:6:45: YAML: aliases expand this document" in err
    assert "Traceback" not in err


def test_moderate_aliases_still_work(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {
            "u.yaml": """
                kind: Users
                users:
                  - {name: a, email: a@example.test, aliases: &shared [x@example.test, y@example.test]}
                  - {name: b, email: b@example.test, aliases: *shared}
            """
        },
    )
    result = load_config_dir(tmp_path, "cfg")
    assert result.problems == ()
    (users,) = result.users
    assert [u.aliases for u in users.doc.users] == [["x@example.test", "y@example.test"]] * 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "kind: Archive\npath: &a [x, *a]\n",
            "cfg/r.yaml:2:14: YAML: alias *a is inside its own anchor",
        ),
        (
            "kind: Archive\npath: " + "[" * 200 + "]" * 200 + "\n",
            "cfg/r.yaml:2:106: YAML: collections nested more than 100 levels deep",
        ),
    ],
)
def test_recursive_and_deeply_nested_documents_are_errors(
    tmp_path: Path, text: str, expected: str
) -> None:
    write_config(tmp_path, {"r.yaml": text})
    assert problems(tmp_path) == [expected]


def test_deeply_nested_json_is_an_error(tmp_path: Path) -> None:
    write_config(tmp_path, {"deep.json": '{"kind": "Archive", "path": ' + "[" * 100000})
    assert problems(tmp_path) == ["cfg/deep.json: JSON: nested too deeply"]
