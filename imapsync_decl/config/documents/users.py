"""The Users document: the archive's user list, and the LDAP / AD directory that joins it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from imapsync_decl.config.documents.rules import (
    LDAP_URL_RULES,
    SCHEMA_KEY,
    Email,
    StrictModel,
    WireStr,
    checked,
)
from imapsync_decl.config.documents.secret_refs import SECRET_DESCRIPTION, SecretRef


class User(StrictModel):
    """One archive user."""

    name: WireStr = Field(min_length=1, description="User name in the archive (unique).")
    email: Email | None = Field(default=None, description="Primary e-mail address.")
    aliases: list[Email] = Field(
        default_factory=list,
        description="Further e-mail addresses of the user; users.names may name a user by any "
        "of them.",
    )
    display_name: str | None = Field(default=None, description="Full name.")


DIRECTORY_DEFAULTS: dict[str, dict[str, str | None]] = {
    "openldap": {
        "filter": "(objectClass=inetOrgPerson)",
        "username": "uid",
        "email": "mail",
        "display_name": "cn",
        "aliases": None,
    },
    "active_directory": {
        "filter": "(&(objectCategory=person)(objectClass=user)"
        "(!(userAccountControl:1.2.840.113556.1.4.803:=2)))",
        "username": "sAMAccountName",
        "email": "mail",
        "display_name": "displayName",
        "aliases": "proxyAddresses",
    },
}


class DirectoryAttributes(StrictModel):
    """Which directory attributes give the user fields (null: the directory type's default)."""

    username: str | None = Field(
        default=None,
        min_length=1,
        description="Attribute of the user name; default uid (openldap), sAMAccountName "
        "(active_directory).",
    )
    email: str | None = Field(
        default=None, min_length=1, description="Attribute of the e-mail address; default mail."
    )
    display_name: str | None = Field(
        default=None,
        min_length=1,
        description="Attribute of the display name; default cn (openldap), displayName "
        "(active_directory).",
    )
    aliases: str | None = Field(
        default=None,
        min_length=1,
        description="Attribute of further addresses; default none (openldap), proxyAddresses "
        "(active_directory; 'smtp:' prefixes are removed).",
    )


_DIRECTORY_RULES: dict[str, Any] = {
    "allOf": [
        {
            "if": {"properties": {"url": {"pattern": "^ldaps://"}}, "required": ["url"]},
            "then": {"properties": {"starttls": {"const": False}}},
        },
        {
            "if": {"properties": {"bind_dn": {"type": "string"}}, "required": ["bind_dn"]},
            "then": {
                "required": ["password"],
                "properties": {"password": {"not": {"type": "null"}}},
            },
            "else": {"properties": {"password": {"type": "null"}}},
        },
    ]
}


class Directory(StrictModel):
    """An LDAP / Active Directory service that the user list is synchronised with."""

    model_config = ConfigDict(json_schema_extra=_DIRECTORY_RULES)

    type: Literal["openldap", "active_directory"] = Field(
        default="openldap",
        description="Sets the defaults of filter and attributes: openldap (inetOrgPerson) or "
        "active_directory (disabled accounts are skipped).",
    )
    url: Annotated[str, *checked(*LDAP_URL_RULES)] = Field(
        description="ldap://host[:port] or ldaps://host[:port] (LDAP over TLS); an IPv6 "
        "address in brackets: ldap://[2001:db8::1]:389.",
    )
    starttls: bool = Field(
        default=False, description="Upgrade ldap:// with StartTLS (never falls back)."
    )
    ca_file: str | None = Field(
        default=None,
        min_length=1,
        description="PEM file of the CA certificates that verify the directory; default: the "
        "system store. Relative to the document.",
    )
    bind_dn: str | None = Field(
        default=None, min_length=1, description="DN to bind as (with password); null: anonymous."
    )
    password: SecretRef | None = Field(
        default=None, description=SECRET_DESCRIPTION + " Required with bind_dn."
    )
    base_dn: str = Field(min_length=1, description="Where to search for users (subtree).")
    filter: str | None = Field(
        default=None,
        min_length=1,
        description="LDAP search filter (RFC 4515); default: the directory type's, e.g. "
        "(objectClass=inetOrgPerson).",
    )
    attributes: DirectoryAttributes = Field(
        default_factory=DirectoryAttributes, description="Attribute mapping."
    )
    page_size: int = Field(
        default=500, ge=1, le=10000, description="Entries per page of the paged search."
    )
    timeout: float = Field(
        default=30, gt=0, le=3600, description="Seconds to wait for the connection and answers."
    )

    def default(self, key: str) -> str | None:
        return DIRECTORY_DEFAULTS[self.type][key]

    @property
    def effective_filter(self) -> str:
        return self.filter or str(self.default("filter"))

    def attribute(self, key: str) -> str | None:
        value = getattr(self.attributes, key)
        return value if value is not None else self.default(key)

    @model_validator(mode="after")
    def _rules(self) -> Directory:
        if self.starttls and self.url.startswith("ldaps://"):
            raise PydanticCustomError(
                "starttls_with_ldaps", "starttls is for ldap:// URLs; ldaps:// is TLS already"
            )
        if (self.bind_dn is None) != (self.password is None):
            raise PydanticCustomError(
                "bind_needs_password", "bind_dn and password go together (or neither: anonymous)"
            )
        return self


class Users(StrictModel):
    """The archive's user list (several Users documents add up)."""

    model_config = ConfigDict(title="Users", populate_by_name=True)

    schema_ref: str | None = SCHEMA_KEY
    kind: Literal["Users"] = Field(description="Document kind.")
    users: list[User] = Field(default_factory=list, description="The users.")
    directory: Directory | None = Field(
        default=None,
        description="An LDAP / Active Directory service whose users join the user list "
        "(`imapsync-decl users sync`, or profiles with sync_directory: true).",
    )
