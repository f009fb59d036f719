"""The Web document: how `imapsync-decl serve` offers the archive to its users.

At most one per configuration. Plain HTTP only on a loopback address; any other
listen address needs ``tls`` (a certificate and key) or ``behind_proxy: true`` with
the addresses of the trusted reverse proxies, which then terminate TLS.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from imapsync_decl.config.documents.rules import (
    DURATION_RULES,
    IP_NETWORK_RULES,
    LISTEN_RULES,
    LOOPBACK_LISTEN_PATTERN,
    SCHEMA_KEY,
    StrictModel,
    WireStr,
    checked,
)

DEFAULT_LISTEN = "127.0.0.1:8462"
DEFAULT_SESSION_LIFETIME = "8h"
_LOOPBACK = re.compile(LOOPBACK_LISTEN_PATTERN)

_WEB_RULES: dict[str, Any] = {
    "allOf": [
        {
            "if": {"properties": {"behind_proxy": {"const": True}}, "required": ["behind_proxy"]},
            "then": {
                "required": ["trusted_proxies"],
                "properties": {"trusted_proxies": {"minItems": 1}},
            },
            "else": {"properties": {"trusted_proxies": {"maxItems": 0}}},
        },
        {
            "if": {
                "properties": {"listen": {"not": {"pattern": LOOPBACK_LISTEN_PATTERN}}},
                "required": ["listen"],
            },
            "then": {
                "anyOf": [
                    {"properties": {"tls": {"type": "object"}}, "required": ["tls"]},
                    {
                        "properties": {"behind_proxy": {"const": True}},
                        "required": ["behind_proxy"],
                    },
                ]
            },
        },
    ]
}


def is_loopback_listen(listen: str) -> bool:
    """Whether ``listen`` (HOST:PORT) is on the loopback interface: 127.0.0.0/8, [::1],
    localhost."""
    return _LOOPBACK.match(listen) is not None


class WebTls(StrictModel):
    """The certificate and key that `serve` speaks HTTPS with."""

    certificate: str = Field(
        min_length=1,
        description="PEM file of the certificate (with its chain), relative to this document.",
    )
    key: str = Field(
        min_length=1,
        description="PEM file of the private key, relative to this document; it must not be "
        "readable by others.",
    )


class WebDocument(StrictModel):
    """How `imapsync-decl serve` offers the archive to its users (at most one Web document)."""

    model_config = ConfigDict(title="Web", populate_by_name=True, json_schema_extra=_WEB_RULES)

    schema_ref: str | None = SCHEMA_KEY
    kind: Literal["Web"] = Field(description="Document kind.")
    tls: WebTls | None = Field(
        default=None,
        description="Serve HTTPS with this certificate and key. Without it, plain HTTP: only "
        "on a loopback address, or behind a proxy.",
    )
    behind_proxy: bool = Field(
        default=False,
        description="A reverse proxy (which terminates TLS) forwards the requests; the client "
        "address and scheme come from its X-Forwarded-For and X-Forwarded-Proto headers, "
        "believed only from trusted_proxies.",
    )
    trusted_proxies: list[Annotated[str, *checked(*IP_NETWORK_RULES)]] = Field(
        default_factory=list,
        validate_default=True,
        description="IP addresses or networks (CIDR) of the reverse proxies; required with "
        "behind_proxy: true, and only then.",
    )
    listen: Annotated[str, *checked(*LISTEN_RULES)] = Field(
        default=DEFAULT_LISTEN,
        description="HOST:PORT to listen on (an IPv6 address in [ ]). Plain HTTP only on a "
        "loopback address (127.0.0.0/8, [::1], localhost); any other needs tls or "
        "behind_proxy.",
    )
    session_lifetime: Annotated[str, *checked(*DURATION_RULES)] = Field(
        default=DEFAULT_SESSION_LIFETIME,
        description="How long a sign-in lasts: a number and s, m, h or d (from 5m to 30d).",
    )
    administrators: list[Annotated[WireStr, Field(min_length=1)]] = Field(
        default_factory=list,
        description="Archive users who reach every user's archive, the runs and the stats.",
    )
    directory_sign_in: bool = Field(
        default=False,
        description="Users synchronised from a directory may sign in with their directory "
        "password (a bind as their entry); needs a Users document with a directory.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_with_behind_proxy(cls, value: list[str], info: ValidationInfo) -> list[str]:
        behind = info.data.get("behind_proxy")
        if behind is True and not value:
            raise PydanticCustomError(
                "proxies_required", "behind_proxy: true needs the addresses of the proxies"
            )
        if behind is False and value:
            raise PydanticCustomError("proxies_without_proxy", "only used with behind_proxy: true")
        return value

    @field_validator("listen")
    @classmethod
    def _plain_http_only_on_loopback(cls, value: str, info: ValidationInfo) -> str:
        if "tls" not in info.data or "behind_proxy" not in info.data:
            return value  # those fields failed; their own errors say why
        if (
            not is_loopback_listen(value)
            and info.data["tls"] is None
            and not info.data["behind_proxy"]
        ):
            raise PydanticCustomError(
                "plain_http_off_loopback",
                "plain HTTP is served only on a loopback address (127.0.0.1, [::1], "
                "localhost): give tls (certificate and key) or behind_proxy: true",
            )
        return value
