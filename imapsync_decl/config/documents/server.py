"""The Server section of a profile: the IMAP server, how to reach it, and how far to trust it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from imapsync_decl.config.documents.rules import HOST_RULES, StrictModel, checked

_SERVER_RULES: dict[str, Any] = {
    "allOf": [
        {
            "if": {"properties": {"security": {"const": "plain"}}, "required": ["security"]},
            "then": {
                "properties": {
                    "accept_all_certificates": {"const": False},
                    "ca_file": {"const": None},
                }
            },
        },
        {
            "if": {
                "properties": {"accept_all_certificates": {"const": True}},
                "required": ["accept_all_certificates"],
            },
            "then": {"properties": {"ca_file": {"const": None}}},
        },
    ]
}


class Server(StrictModel):
    """The IMAP server that holds the mailboxes."""

    model_config = ConfigDict(json_schema_extra=_SERVER_RULES)

    host: Annotated[str, *checked(*HOST_RULES)] = Field(
        description="Host name (RFC 1123, a trailing dot allowed), IPv4 or IPv6 address of the "
        "IMAP server (an IPv6 address without brackets).",
    )
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="TCP port; default 143 for plain and starttls, 993 for tls.",
    )
    security: Literal["plain", "starttls", "tls"] = Field(
        default="tls",
        description="plain: unencrypted IMAP (passwords travel in clear; warned about); "
        "starttls: IMAP upgraded with STARTTLS, never falling back to plain (IMAP-TLS); "
        "tls: IMAP over implicit TLS (IMAP-SSL).",
    )
    accept_all_certificates: bool = Field(
        default=False,
        description="Accept any server certificate (self-signed, unknown CA, wrong name). Insecure: "
        "reported as a warning by validate, in every plan and in every run protocol. "
        "Not allowed with security: plain or together with ca_file.",
    )
    ca_file: str | None = Field(
        default=None,
        min_length=1,
        description="PEM file of the CA certificates that verify the server; default: the "
        "system store. Relative to the document. Not allowed with security: plain.",
    )
    timeout: float = Field(
        default=60,
        gt=0,
        le=3600,
        description="Seconds to wait for the connection and for each server answer: a command "
        "fails when the server sends nothing, or less than 16 KiB and no complete line, for this "
        "long.",
    )
    max_message_size: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        le=16 * 1024 * 1024 * 1024,
        description="Largest message, in bytes, that is fetched (default 256 MiB). A larger "
        "message fails its mailbox with a message that names it; a server that announces more "
        "than this (or much more than the message's RFC822.SIZE) is refused before anything is "
        "read.",
    )

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 993 if self.security == "tls" else 143

    @model_validator(mode="after")
    def _tls_options(self) -> Server:
        if self.security == "plain" and (self.accept_all_certificates or self.ca_file is not None):
            raise PydanticCustomError(
                "tls_option_without_tls",
                "accept_all_certificates and ca_file need security: starttls or tls",
            )
        if self.accept_all_certificates and self.ca_file is not None:
            raise PydanticCustomError(
                "ca_file_with_accept_all",
                "ca_file is not used when accept_all_certificates is true; remove one of them",
            )
        return self
