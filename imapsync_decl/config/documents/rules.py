"""The checks and patterns that the document models and their JSON Schemas share.

Checks of single strings that a plain ``pattern`` cannot say (host names, LDAP
URLs, no line breaks in what reaches the IMAP server) are :class:`Rule` lists,
turned into both a validator and schema keywords by :func:`checked`, so that
editors and ``validate`` reject the same values. :class:`StrictModel` is the base
of every document model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, TypeAlias

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

# Union members are tagged with names that contain ':' so that error locations
# can drop them (field names never contain ':'); see loader.field_path().
TAG_MARK = ":"

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# Everything up to the LAST '@' is the local part, which may itself hold '@' when quoted.
EMAIL_PATTERN = r"^[^\s]+@[^\s@]+$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


# --- checks shared by models and schemas --------------------------------------------------
# Written as plain regular expressions (no look-around), so that the models and the JSON
# Schemas check exactly the same: each Rule is a pattern that must match somewhere in the
# value (JSON Schema's "pattern"), or must match nowhere in it ("not": {"pattern"}), with
# the message shown when it fails. Values that are checked for "$" never hold a line feed
# (every rule list starts with the WIRE_SAFE one), so "$" means the same in every dialect.


@dataclass(frozen=True)
class Rule:
    pattern: str
    message: str
    forbidden: bool = False  # True: the value must contain no match


WIRE_SAFE = Rule(
    r"[\r\n\x00]",
    "must not contain a line break (CR, LF) or NUL: it could not be sent to a server as it is",
    forbidden=True,
)
"""For every value that may reach the IMAP wire: logins, passwords, identities, e-mail
addresses, folder patterns, host names."""
WIRE_UNSAFE = re.compile(WIRE_SAFE.pattern)
"""Finds what :data:`WIRE_SAFE` forbids, for values that come from elsewhere than a model."""


def checked(*rules: Rule) -> tuple[Any, ...]:
    """Annotated metadata: a validator and the matching JSON Schema for ``rules``."""
    compiled = [(re.compile(rule.pattern), rule) for rule in rules]

    def check(value: str) -> str:
        for pattern, rule in compiled:
            if (pattern.search(value) is None) != rule.forbidden:
                raise PydanticCustomError("checked", rule.message)
        return value

    schema = [
        {"not": {"pattern": rule.pattern}} if rule.forbidden else {"pattern": rule.pattern}
        for rule in rules
    ]
    extra: dict[str, Any] = schema[0] if len(schema) == 1 else {"allOf": schema}
    return (AfterValidator(check), Field(json_schema_extra=extra))


WireStr: TypeAlias = Annotated[str, *checked(WIRE_SAFE)]
"""A string that may reach the IMAP wire: no CR, LF or NUL."""

Email: TypeAlias = Annotated[str, *checked(WIRE_SAFE, Rule(EMAIL_PATTERN, "not an e-mail address"))]
"""An e-mail address: everything up to the last '@' is the local part."""

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{_IPV4})"
_IPV6 = (  # RFC 3986, section 3.2.2
    "(?:"
    + "|".join(
        (
            rf"(?:{_H16}:){{6}}{_LS32}",
            rf"::(?:{_H16}:){{5}}{_LS32}",
            rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
            rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
            rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
            rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
        )
    )
    + ")"
)
_NAME = rf"{_LABEL}(?:\.{_LABEL})*\.?"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_NUMERIC = "not a valid IPv4 address (the last label of a host name is not all digits)"
_TOO_LONG = "host name longer than 253 characters"

HOST_RULES: tuple[Rule, ...] = (
    WIRE_SAFE,
    Rule(
        r"^\[[0-9A-Fa-f:.]*\]$",
        "an IPv6 address goes without brackets here: ::1, not [::1]",
        forbidden=True,
    ),
    Rule(
        rf"^(?:{_NAME}|{_IPV6})$",
        "not a host name or IP address: a host name is labels of letters, digits and '-' "
        "(at most 63 characters each, not starting or ending with '-') joined by '.'",
    ),
    # The last label has a letter, or the whole is an IPv4 or IPv6 address (RFC 1123 2.1).
    Rule(rf"[A-Za-z][A-Za-z0-9-]*\.?$|:|^{_IPV4}$", _NUMERIC),
    Rule(r"^(?:.{1,253}|.{253}\.)$", _TOO_LONG),
)
"""A host: an RFC 1123 name (a trailing dot allowed), an IPv4 or a bare IPv6 address."""

LDAP_URL_RULES: tuple[Rule, ...] = (
    WIRE_SAFE,
    Rule(r"^ldaps?://", "must start with ldap:// or ldaps://"),
    Rule(
        rf"^ldaps?://(?:{_NAME}|\[{_IPV6}\])(?::{_PORT})?/?$",
        "expected ldap://host[:port] or ldaps://host[:port] (an IPv6 address in [ ]), "
        "with a port from 1 to 65535 and nothing after the host but '/'",
    ),
    Rule(
        rf"^ldaps?://(?:\[|{_IPV4}(?::|/|$)|[^/]*[A-Za-z][A-Za-z0-9-]*\.?(?::[0-9]+)?/?$)", _NUMERIC
    ),
    Rule(r"^ldaps?://(?:\[|[^:/]{1,253}(?::|/|$)|[^:/]{253}\.(?::|/|$))", _TOO_LONG),
)
"""An LDAP URL: scheme, a host as in :data:`HOST_RULES` (IPv6 in brackets), a port."""

LISTEN_RULES: tuple[Rule, ...] = (
    WIRE_SAFE,
    Rule(
        rf"^(?:{_NAME}|\[{_IPV6}\]):{_PORT}$",
        "expected HOST:PORT: a host name or IPv4 address, or an IPv6 address in [ ], and a"
        " port from 1 to 65535, e.g. 127.0.0.1:8462 or [::1]:8462",
    ),
    Rule(rf"^(?:\[|{_IPV4}:|[^:]*[A-Za-z][A-Za-z0-9-]*\.?:)", _NUMERIC),
    Rule(r"^(?:\[|[^:]{1,253}:|[^:]{253}\.:)", _TOO_LONG),
)
"""Where a server listens: HOST:PORT, the host as in :data:`HOST_RULES` (IPv6 in brackets)."""

LOOPBACK_LISTEN_PATTERN = rf"^(?:127(?:\.{_OCTET}){{3}}|\[::1\]|localhost\.?):"
"""A listen address on the loopback interface: 127.0.0.0/8, [::1] or localhost."""

IP_NETWORK_RULES: tuple[Rule, ...] = (
    WIRE_SAFE,
    Rule(
        rf"^(?:{_IPV4}(?:/(?:3[0-2]|[12]?[0-9]))?|{_IPV6}(?:/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$",
        "not an IP address or network: e.g. 10.0.0.1, 192.0.2.0/24, ::1 or 2001:db8::/32",
    ),
)
"""An IPv4 or IPv6 address, or a network in CIDR notation (address/prefix length)."""

DURATION_RULES: tuple[Rule, ...] = (
    Rule(
        r"^[1-9][0-9]{0,6}[smhd]$",
        "a duration is a whole number and a unit (s, m, h or d), e.g. 8h or 30m",
    ),
)
"""A duration: a whole number of seconds, minutes, hours or days (``90s``, ``8h``, ``7d``)."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


SCHEMA_KEY = Field(
    default=None,
    alias="$schema",
    description="Optional URL or path of the JSON Schema, for editors; ignored otherwise.",
)
