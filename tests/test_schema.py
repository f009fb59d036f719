"""The published schemas: no drift from the models, and the same verdicts as the models."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the test extras
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imapsync_decl.config.documents import DOCUMENT_KINDS
from imapsync_decl.config.schema import document_schema, schema_files

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
VALIDATOR = jsonschema.Draft202012Validator(document_schema())


def test_checked_in_schemas_match_the_models() -> None:
    generated = schema_files()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in SCHEMAS.glob("*.json")}
    assert sorted(on_disk) == sorted(generated), "run `imapsync-decl schema --out schemas`"
    for name, text in generated.items():
        assert on_disk[name] == text, (
            f"schemas/{name} drifted: run `imapsync-decl schema --out schemas`"
        )


@pytest.mark.parametrize("name", sorted(schema_files()))
def test_schemas_are_valid_draft_2020_12(name: str) -> None:
    body = json.loads(schema_files()[name])
    assert body["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(body)


RULE_KEYWORDS = {"if", "then", "else", "not", "allOf"}


def _every_property_has_a_description(node: Any, where: str) -> list[str]:
    missing: list[str] = []
    if isinstance(node, dict):
        for name, prop in node.get("properties", {}).items():
            if name != "kind" and "description" not in prop:
                missing.append(f"{where}.{name}")
        for key, value in node.items():
            if key not in RULE_KEYWORDS:  # cross-field rules restate constraints only
                missing += _every_property_has_a_description(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            missing += _every_property_has_a_description(value, f"{where}[{i}]")
    return missing


def test_every_field_is_documented() -> None:
    assert _every_property_has_a_description(document_schema(), "$") == []


def model_accepts(doc: Any) -> bool:
    kind = doc.get("kind") if isinstance(doc, dict) else None
    model = DOCUMENT_KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        return False
    try:
        model.model_validate(doc)
    except pydantic.ValidationError:
        return False
    return True


def schema_accepts(doc: Any) -> bool:
    return bool(VALIDATOR.is_valid(doc))


@dataclass(frozen=True)
class Leaf:
    """Values for one key: each acceptable on its own, or each wrong on its own."""

    valid: tuple[Any, ...]
    invalid: tuple[Any, ...]


Spec = dict[str, "Leaf | Spec"]

SECRET = Leaf(
    ("pw", 'p w;"x', {"env": "IMAP_PW"}, {"file": "pw.txt"}),
    (
        "",
        "pw\r\nZ9 LOGOUT",
        "pw\n",
        "p\x00w",
        {"env": "1BAD"},
        {"file": ""},
        {"env": "A", "file": "b"},
        {"other": 1},
        5,
        None,
    ),
)
# Wire-bound strings: no CR, LF or NUL, wherever they are.
NOT_WIRE_SAFE = ("a\r\nZ9 DELETE INBOX", "a\n", "a\r", "a\x00b")
HOSTS = Leaf(
    (
        "imap.example.com",
        "mail.example.test.",
        "h",
        "xn--bcher-kva.example",
        "a1-b.c2",
        "127.0.0.1",
        "::1",
        "2001:db8::8a2e:370:7334",
        "::ffff:192.0.2.1",
        "a" * 63 + ".test",
        ".".join(["a" * 62] * 4) + "a",  # 253 characters
        ".".join(["a" * 62] * 4) + "a.",  # and a trailing dot
    ),
    (
        "",
        "mail.example.test [x]",
        "mail example",
        "[::1]",
        "-a.example",
        "a-.example",
        "a..b",
        ".a",
        "a" * 64 + ".test",
        ".".join(["a" * 62] * 4) + "ab",  # 254 characters
        "256.1.1.1",
        "1.2.3",
        "123",
        "2001:db8::1::2",
        "fe80::1%eth0",
        "h_1.example",
        "imap.example.com\n",
        "imap.example.com\r\nZ9 LOGOUT",
        "h\x00",
        5,
        None,
    ),
)
SPECS: dict[str, Spec] = {
    "Profile": {
        "$schema": Leaf(("./schemas/profile.schema.json", None), (1,)),
        "name": Leaf(("staff", "a.b-c_d", "x" * 64), ("", "with space", "-x", "x" * 65, 5)),
        "description": Leaf(("text", None), (5,)),
        "server": {
            "host": HOSTS,
            "port": Leaf((143, 993, 1, 65535, None), (0, 70000, "993", True)),
            "security": Leaf(("plain", "starttls", "tls"), ("ssl", None)),
            "accept_all_certificates": Leaf((True, False), ("yes", None)),
            "ca_file": Leaf(("ca.pem", None), ("",)),
            "timeout": Leaf((60, 0.5, 3600), (0, -1, "60", 4000, True)),
            "max_message_size": Leaf((1024, 268435456), (0, 1023, "1 MB", 2**40, True, None)),
            "colour": Leaf((), ("blue",)),
        },
        "source": {
            "master": {
                "username": Leaf(("archiver", "arch iver"), ("", 3, *NOT_WIRE_SAFE)),
                "password": SECRET,
                "identity": Leaf(
                    ("email", "email_local_part", "username", {"template": "{{ user.name }}"}),
                    ("uid", {"template": ""}, {"tmpl": "x"}, None),
                ),
                "mechanism": Leaf(("sasl_plain", "login_separator"), ("cram",)),
                "separator": Leaf(("*", "%"), ("", "\n")),
                "users": {
                    "select": Leaf(("all", "all_except", "only"), ("some",)),
                    "names": Leaf(([], ["alice"], ["alice", "bob@example.com"]), ([""], "alice")),
                },
                "sync_directory": Leaf((False,), (True, "no")),
            },
            "csv": {"file": Leaf(("m.csv",), ("", None)), "sep": Leaf((), (";",))},
            "single": {
                "username": Leaf(("alice",), ("", *NOT_WIRE_SAFE)),
                "password": SECRET,
                "email": Leaf(
                    ("alice@example.com", '"a@b"@example.com', None),
                    ("alice", "x y@@", "a@b\n", "a@b\x00", "a\r\n@b"),
                ),
                "archive_user": Leaf(("alice", None), ("", "a\nb")),
            },
            "ldap": Leaf((), ({},)),
        },
        "folders": {
            "include": Leaf(
                (["*"], ["INBOX", "Projects/**"]), ([], [""], "INBOX", ["INBOX\r\nZ9 LOGOUT"])
            ),
            "exclude": Leaf(([], ["Trash"]), ([3], ["Trash\x00"])),
            "include_subfolders": Leaf((True, False), (1,)),
            "default_exclusions": Leaf((True, False), (None,)),
        },
        "filters": {
            "older_than_days": Leaf((None, 30, 1), (0, "30", 40000)),
            "newer_than_days": Leaf((None, 7), (0, True)),
            "skip_unread": Leaf((False, True), ("yes",)),
            "skip_flagged": Leaf((False, True), (None,)),
            "max_size": Leaf((None, 1000), (-5, 0)),
        },
        "delete": {
            "mode": Leaf(("never", "after_archive"), ("always", None)),
            "older_than_days": Leaf((None, 30), (0, "30")),
        },
        "max_concurrent_jobs": Leaf((1, 4, 64), (0, 65, "4")),
        "schedule": Leaf(
            (None, "0 2 * * *", "*/15 8-18 * * 1-5", "@daily", "@annually"),
            ("0 2 * *", "", 5, "@reboot", "0 2 * * * *"),
        ),
        "extra": Leaf((), (1,)),
    },
    "Users": {
        "users": Leaf(
            (
                [],
                [{"name": "alice"}],
                [{"name": "a", "email": "a@x.y", "display_name": "A"}],
                [{"name": "a", "aliases": ["b@x.y", '"c@d"@x.y']}],
            ),
            (
                [{"name": ""}],
                [{"email": "a@b.c"}],
                [{"name": "a", "aliases": ["no-at"]}],
                [{"name": "a\r\nZ9 LOGOUT"}],
                [{"name": "a", "email": "a@b\n"}],
                [{"name": "a", "aliases": ["b@c\x00"]}],
                [{"name": "a", "alias": []}],
                "alice",
                None,
            ),
        ),
        "directory": {
            "type": Leaf(("openldap", "active_directory"), ("ad", None)),
            "url": Leaf(
                (
                    "ldap://127.0.0.1:389",
                    "ldaps://dir.example.test/",
                    "ldap://dir.example.test.:636",
                    "ldap://[::1]:389",
                    "ldaps://[2001:db8::1]/",
                    "ldap://h:65535",
                ),
                (
                    "http://x",
                    "",
                    "ldap://host/path",
                    "ldap://dir.example.test [x]",
                    "ldap://::1",
                    "ldap://[::1",
                    "ldap://h:0",
                    "ldap://h:65536",
                    "ldap://h:",
                    "ldap://256.0.0.1",
                    "ldap://-h",
                    "ldap://h\n",
                    "ldap://" + "a" * 64,
                    None,
                ),
            ),
            "starttls": Leaf((True, False), ("yes",)),
            "ca_file": Leaf(("ca.pem", None), ("",)),
            "bind_dn": Leaf(("cn=reader,dc=example", None), ("",)),
            "password": Leaf(("pw", {"env": "LDAP_PW"}, None), ("", 5)),
            "base_dn": Leaf(("dc=example",), ("", None)),
            "filter": Leaf(("(uid=*)", None), ("",)),
            "attributes": {
                "username": Leaf(("uid", None), ("",)),
                "aliases": Leaf(("proxyAddresses", None), ("",)),
                "phone": Leaf((), ("telephoneNumber",)),
            },
            "page_size": Leaf((1, 500), (0, 20000)),
            "timeout": Leaf((30, 2.5), (0,)),
        },
    },
    "Archive": {"path": Leaf(("../archive", "/srv/archive"), ("", None, 3))},
    "Web": {
        # Off loopback, plain HTTP needs tls or behind_proxy: valid only in combination.
        "listen": Leaf(
            (
                "127.0.0.1:8462",
                "127.9.0.1:1",
                "[::1]:8462",
                "localhost:65535",
                "0.0.0.0:8462",
                "[2001:db8::1]:443",
                "archive.example.com:443",
            ),
            (
                "127.0.0.1",
                "127.0.0.1:0",
                "127.0.0.1:65536",
                ":8462",
                "::1:8462",
                "[::1]",
                "256.0.0.1:80",
                "127.0.0.1:80\n",
                "host name:80",
                8462,
                None,
            ),
        ),
        "tls": {
            "certificate": Leaf(("cert.pem",), ("", None, 5)),
            "key": Leaf(("key.pem",), ("", None)),
            "password": Leaf((), ("x",)),
        },
        "behind_proxy": Leaf((False, True), ("yes", None)),
        "trusted_proxies": Leaf(
            ([], ["10.0.0.0/8"], ["192.0.2.1", "2001:db8::/32"]), (["10.0.0.0/8 "], "10.0.0.1")
        ),
        "session_lifetime": Leaf(
            ("8h", "30m", "90s", "7d", "1s"), ("", "8", "8 h", "08h", "1w", "h", 8, None)
        ),
        "administrators": Leaf(([], ["alice", "bob"]), ([""], "alice", ["a\nb"], [5])),
        "directory_sign_in": Leaf((True, False), ("no", None)),
        "port": Leaf((), (8462,)),
    },
}


def _leaves(spec: Spec, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, sub in spec.items():
        out += [(*prefix, key)] if isinstance(sub, Leaf) else _leaves(sub, (*prefix, key))
    return out


def _build(
    draw: st.DrawFn, spec: Spec, prefix: tuple[str, ...], bad: tuple[str, ...] | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, sub in spec.items():
        path = (*prefix, key)
        on_bad_path = bad is not None and bad[: len(path)] == path
        if not on_bad_path and draw(st.integers(0, 4)) == 0:
            continue  # most keys present, some left out
        if isinstance(sub, Leaf):
            pool = sub.invalid if path == bad else sub.valid
            if pool:
                out[key] = draw(st.sampled_from(pool))
        else:
            out[key] = _build(draw, sub, path, bad)
    return out


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """Documents that are valid, or break exactly one rule, or a cross-field rule by combination."""
    kind = draw(st.sampled_from(sorted(SPECS)))
    spec = SPECS[kind]
    bad = draw(st.one_of(st.none(), st.sampled_from(_leaves(spec))))
    return {"kind": kind, **_build(draw, spec, (), bad)}


@settings(max_examples=1000, deadline=None)
@given(documents())
def test_schema_and_models_agree(doc: dict[str, Any]) -> None:
    assert schema_accepts(doc) == model_accepts(doc), doc


WEB_DOCUMENTS = [
    ({"kind": "Web"}, True),
    ({"kind": "Web", "listen": "0.0.0.0:8462"}, False),
    ({"kind": "Web", "listen": "[2001:db8::1]:443"}, False),
    ({"kind": "Web", "listen": "archive.example.com:443"}, False),
    ({"kind": "Web", "listen": "127.0.0.1.example.com:80"}, False),
    ({"kind": "Web", "listen": "0.0.0.0:443", "tls": None}, False),
    (
        {"kind": "Web", "listen": "0.0.0.0:443", "tls": {"certificate": "c.pem", "key": "k.pem"}},
        True,
    ),
    (
        {
            "kind": "Web",
            "listen": "[::]:8462",
            "behind_proxy": True,
            "trusted_proxies": ["10.0.0.1", "192.0.2.0/24", "2001:db8::/32", "::1"],
        },
        True,
    ),
    ({"kind": "Web", "listen": "0.0.0.0:8462", "behind_proxy": True}, False),
    ({"kind": "Web", "behind_proxy": True, "trusted_proxies": []}, False),
    ({"kind": "Web", "trusted_proxies": ["10.0.0.1"]}, False),
    ({"kind": "Web", "behind_proxy": True, "trusted_proxies": ["10.0.0.0/33"]}, False),
    ({"kind": "Web", "behind_proxy": True, "trusted_proxies": ["10.0.0"]}, False),
    ({"kind": "Web", "behind_proxy": True, "trusted_proxies": ["proxy.example.com"]}, False),
    ({"kind": "Web", "behind_proxy": True, "trusted_proxies": ["2001:db8::/129"]}, False),
]


@pytest.mark.parametrize(("doc", "valid"), WEB_DOCUMENTS)
def test_known_web_documents(doc: dict[str, Any], valid: bool) -> None:
    assert schema_accepts(doc) is valid
    assert model_accepts(doc) is valid


@pytest.mark.parametrize(
    ("doc", "valid"),
    [
        ({"kind": "Archive", "path": "../a"}, True),
        ({"kind": "Users", "users": [{"name": "alice"}]}, True),
        (
            {
                "kind": "Profile",
                "name": "staff",
                "server": {"host": "h"},
                "source": {"master": {"username": "a", "password": {"env": "P"}}},
            },
            True,
        ),
        (
            {
                "kind": "Profile",
                "name": "staff",
                "server": {"host": "h"},
                "source": {"csv": {"file": "m.csv"}},
                "filters": {"older_than_days": 30},
            },
            True,
        ),
        ({"kind": "Users", "directory": {"url": "ldap://x", "base_dn": "dc=x"}}, True),
        (
            {
                "kind": "Users",
                "directory": {"url": "ldaps://x", "base_dn": "dc=x", "starttls": True},
            },
            False,
        ),
        (
            {
                "kind": "Users",
                "directory": {"url": "ldap://x", "base_dn": "dc=x", "bind_dn": "cn=a"},
            },
            False,
        ),
    ],
)
def test_known_documents(doc: dict[str, Any], valid: bool) -> None:
    assert schema_accepts(doc) is valid
    assert model_accepts(doc) is valid


def _profile_with_host(host: Any) -> dict[str, Any]:
    return {
        "kind": "Profile",
        "name": "p",
        "server": {"host": host},
        "source": {"csv": {"file": "m.csv"}},
    }


@pytest.mark.parametrize(
    ("host", "valid"), [(h, True) for h in HOSTS.valid] + [(h, False) for h in HOSTS.invalid]
)
def test_host_names_model_and_schema(host: Any, valid: bool) -> None:
    doc = _profile_with_host(host)
    assert model_accepts(doc) is valid
    assert schema_accepts(doc) is valid


@pytest.mark.parametrize(
    ("url", "valid"),
    [(u, True) for u in SPECS["Users"]["directory"]["url"].valid]  # type: ignore[index,union-attr]
    + [(u, False) for u in SPECS["Users"]["directory"]["url"].invalid],  # type: ignore[index,union-attr]
)
def test_directory_urls_model_and_schema(url: Any, valid: bool) -> None:
    doc = {"kind": "Users", "directory": {"url": url, "base_dn": "dc=x"}}
    assert model_accepts(doc) is valid
    assert schema_accepts(doc) is valid


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_every_ip_address_is_a_host(address: Any) -> None:
    for text in {str(address), address.exploded}:
        assert model_accepts(_profile_with_host(text)), text
        assert schema_accepts(_profile_with_host(text)), text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789abcdefABCDEF:.", max_size=45))
def test_ip_like_text_is_a_host_exactly_when_it_is_an_address_or_a_name(text: str) -> None:
    import ipaddress
    import re

    try:
        ipaddress.ip_address(text)
        is_address = True
    except ValueError:
        is_address = False
    label = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    is_name = (
        re.fullmatch(rf"{label}(?:\.{label})*\.?", text) is not None
        and re.search(r"[A-Za-z]", text.rstrip(".").rpartition(".")[2]) is not None
    )
    doc = _profile_with_host(text)
    assert model_accepts(doc) is (is_address or is_name), text
    assert schema_accepts(doc) is (is_address or is_name), text
