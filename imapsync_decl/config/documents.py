"""The documents of a configuration directory, as pydantic models.

Three kinds of document live in ``profiles.d/``: ``Profile`` (what to archive and
how to log in), ``Users`` (the archive's user list) and ``Archive`` (where the
archive is). The models are strict: they accept exactly what the published JSON
Schemas in ``schemas/`` accept (``schema.py`` generates those from these models,
and a test checks that both agree on a catalogue of good and bad documents).

Cross-field rules are written twice, once as a model validator and once as a
JSON Schema fragment (``json_schema_extra``), so editors and ``validate`` reject
the same documents. Checks of single strings that a plain ``pattern`` cannot
say (host names, LDAP URLs, no line breaks in what reaches the IMAP server) are
:class:`Rule` lists, turned into both a validator and schema keywords by
:func:`checked`. Settings whose behaviour is not built yet are declared with
:func:`_not_yet`: the schema pins them to their default and ``validate`` says
"not supported yet" instead of silently ignoring them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from imapsync_decl.config.cron import SCHEDULE_PATTERN

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


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _not_yet(default: Any, what: str) -> tuple[Any, ...]:
    """Annotated metadata for a setting whose behaviour is not built yet.

    The value must equal ``default``; the JSON Schema says so with ``const``.
    """

    def check(value: Any) -> Any:
        if value != default:
            raise PydanticCustomError(
                "not_supported_yet",
                "not supported yet ({what}); remove it or leave it at {default}",
                {"what": what, "default": _yaml_repr(default)},
            )
        return value

    return (AfterValidator(check), Field(json_schema_extra={"const": default}))


def _yaml_repr(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


# --- secrets -----------------------------------------------------------------------------


class EnvSecret(StrictModel):
    """A secret read from an environment variable when it is needed."""

    env: str = Field(
        pattern=ENV_NAME_PATTERN, description="Name of the environment variable holding the secret."
    )


class FileSecret(StrictModel):
    """A secret read from a file (its content, without a trailing newline)."""

    file: str = Field(
        min_length=1,
        description="Path of the file holding the secret; relative paths resolve against the "
        "document that names them. Keep it readable by the owner only (chmod 600).",
    )


CREDENTIAL_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,254}$"


class CredentialSecret(StrictModel):
    """A secret read from a systemd credential (``LoadCredential=NAME:PATH`` in the
    service): the file ``$CREDENTIALS_DIRECTORY/NAME``, without a trailing newline."""

    credential: str = Field(
        pattern=CREDENTIAL_NAME_PATTERN,
        description="Name of the systemd credential holding the secret (LoadCredential=NAME:PATH "
        "in the service; read from $CREDENTIALS_DIRECTORY/NAME).",
    )


def _secret_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "secret:inline"
    if isinstance(value, EnvSecret):  # serialising a validated model
        return "secret:env"
    if isinstance(value, FileSecret):
        return "secret:file"
    if isinstance(value, CredentialSecret):
        return "secret:credential"
    if isinstance(value, dict):
        if "env" in value:
            return "secret:env"
        if "file" in value:
            return "secret:file"
        if "credential" in value:
            return "secret:credential"
    return None


SecretRef: TypeAlias = Annotated[
    Annotated[str, Field(min_length=1), *checked(WIRE_SAFE), Tag("secret:inline")]
    | Annotated[EnvSecret, Tag("secret:env")]
    | Annotated[FileSecret, Tag("secret:file")]
    | Annotated[CredentialSecret, Tag("secret:credential")],
    Discriminator(
        _secret_tag,
        custom_error_type="secret_ref",
        custom_error_message="expected a password string, {env: NAME}, {file: PATH} or"
        " {credential: NAME}",
    ),
]

SECRET_DESCRIPTION = (
    "A password: {env: NAME} (environment variable), {file: PATH} (file content), "
    "{credential: NAME} (a systemd credential), or an inline string (warned about, since "
    "profiles are committed to git). Never logged or shown."
)

SecretReference: TypeAlias = EnvSecret | FileSecret | CredentialSecret


def secret_references(model: BaseModel) -> list[SecretReference]:
    """Every secret reference in ``model`` and the models inside it, in field order (what a
    service that runs it must provide)."""
    found: list[SecretReference] = []
    stack: list[Any] = [model]
    while stack:
        value = stack.pop()
        if isinstance(value, EnvSecret | FileSecret | CredentialSecret):
            found.append(value)
        elif isinstance(value, BaseModel):
            stack.extend(reversed([getattr(value, name) for name in type(value).model_fields]))
        elif isinstance(value, list | tuple):
            stack.extend(reversed(value))
        elif isinstance(value, dict):
            stack.extend(reversed(list(value.values())))
    return found


# --- server ------------------------------------------------------------------------------


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


# --- sources -----------------------------------------------------------------------------


class IdentityTemplate(StrictModel):
    """A jinja2 template that renders the identity of a user."""

    template: str = Field(
        min_length=1,
        description="jinja2 template with user.name, user.email, user.display_name, local_part "
        "and domain, e.g. '{{ local_part }}@mail.example.com'. Unknown variables are errors.",
    )

    @field_validator("template")
    @classmethod
    def _compiles(cls, value: str) -> str:
        from imapsync_decl.config.templates import check_identity_template

        problem = check_identity_template(value)
        if problem is not None:
            raise PydanticCustomError("template", "{problem}", {"problem": problem})
        return value


def _identity_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "identity:name"
    if isinstance(value, dict | IdentityTemplate):
        return "identity:template"
    return None


Identity: TypeAlias = Annotated[
    Annotated[Literal["email", "email_local_part", "username"], Tag("identity:name")]
    | Annotated[IdentityTemplate, Tag("identity:template")],
    Discriminator(
        _identity_tag,
        custom_error_type="identity",
        custom_error_message="expected email, email_local_part, username or {template: ...}",
    ),
]

_SELECTION_RULES: dict[str, Any] = {
    "if": {"properties": {"select": {"const": "all"}}},
    "then": {"properties": {"names": {"maxItems": 0}}},
    "else": {"required": ["names"], "properties": {"names": {"minItems": 1}}},
}


class UserSelection(StrictModel):
    """Which users of the archive's user list are archived."""

    model_config = ConfigDict(json_schema_extra=_SELECTION_RULES)

    select: Literal["all", "all_except", "only"] = Field(
        default="all",
        description="all: every user with an e-mail address; all_except: all but the users in "
        "names; only: just the users in names.",
    )
    names: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="User names or e-mail addresses, for all_except and only (required there, "
        "not allowed with all).",
    )

    @model_validator(mode="after")
    def _names_fit_select(self) -> UserSelection:
        if self.select == "all" and self.names:
            raise PydanticCustomError(
                "names_with_all", "names is only used with select: all_except or only"
            )
        if self.select != "all" and not self.names:
            raise PydanticCustomError(
                "names_missing",
                "select: {select} needs at least one entry in names",
                {"select": self.select},
            )
        return self


_MASTER_RULES: dict[str, Any] = {
    "if": {
        "not": {
            "properties": {"mechanism": {"const": "login_separator"}},
            "required": ["mechanism"],
        }
    },
    "then": {"not": {"required": ["separator"]}},
}


class MasterSource(StrictModel):
    """Many mailboxes through one privileged (master) account."""

    model_config = ConfigDict(json_schema_extra=_MASTER_RULES)

    username: WireStr = Field(
        min_length=1, description="Login name of the master (privileged) user."
    )
    password: SecretRef = Field(description=SECRET_DESCRIPTION)
    identity: Identity = Field(
        default="email",
        description="Whose mailbox to open: email (the user's e-mail address), email_local_part "
        "(everything before the last '@'), username (the archive user name), or "
        "{template: ...}.",
    )
    mechanism: Literal["sasl_plain", "login_separator"] = Field(
        default="sasl_plain",
        description="sasl_plain: AUTHENTICATE PLAIN with the identity as authorization identity "
        "(RFC 4616; Dovecot, Cyrus, Stalwart); login_separator: log in as "
        "'<identity><separator><username>' (Dovecot master users).",
    )
    separator: WireStr = Field(
        default="*",
        min_length=1,
        description="Separator for mechanism login_separator (Dovecot's "
        "auth_master_user_separator); only allowed with that mechanism.",
    )
    users: UserSelection = Field(
        default_factory=UserSelection, description="Which users of the user list to archive."
    )
    sync_directory: bool = Field(
        default=False,
        description="Read the Users documents' directories in plan (read-only: the plan shows "
        "the users it would add) and synchronise the user list with them in apply, before "
        "archiving.",
    )

    @model_validator(mode="after")
    def _separator_needs_mechanism(self) -> MasterSource:
        if "separator" in self.model_fields_set and self.mechanism != "login_separator":
            raise PydanticCustomError(
                "separator_unused", "separator is only used with mechanism: login_separator"
            )
        return self


class CsvSource(StrictModel):
    """Many mailboxes from a CSV file with one row of credentials per mailbox."""

    file: str = Field(
        min_length=1,
        description="The CSV file (UTF-8, header row, separator ; , | or TAB), relative to this "
        "document. Columns: login and password (required), email and archive_user (optional).",
    )


class SingleSource(StrictModel):
    """One mailbox with its own credentials."""

    username: WireStr = Field(min_length=1, description="IMAP login name of the mailbox.")
    password: SecretRef = Field(description=SECRET_DESCRIPTION)
    email: Email | None = Field(
        default=None,
        description="E-mail address; names the mailbox's folder in the archive tree.",
    )
    archive_user: WireStr | None = Field(
        default=None,
        min_length=1,
        description="Archive user that receives the mailbox; default: the login name.",
    )


def _source_schema(schema: dict[str, Any]) -> None:
    """Source's members are optional keys, exactly one present, never null."""
    schema.update({"minProperties": 1, "maxProperties": 1})
    for prop in schema["properties"].values():
        any_of = prop.pop("anyOf")
        prop.update(next(item for item in any_of if "$ref" in item))
        prop.pop("default", None)


class Source(StrictModel):
    """Where the mailboxes and their credentials come from: exactly one of master, csv, single."""

    model_config = ConfigDict(json_schema_extra=_source_schema)

    master: MasterSource | None = Field(
        default=None, description="Master password: one privileged account logs in as each user."
    )
    csv: CsvSource | None = Field(default=None, description="One row per mailbox in a CSV file.")
    single: SingleSource | None = Field(default=None, description="One mailbox.")

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [k for k in ("master", "csv", "single") if k in data]
            if len(given) != 1 or len(data) != 1 or data[given[0]] is None:
                raise PydanticCustomError(
                    "source_choice",
                    "exactly one of master, csv or single is required (found {found})",
                    {"found": ", ".join(sorted(str(k) for k in data)) or "none"},
                )
        return data

    @property
    def kind(self) -> Literal["master", "csv", "single"]:
        if self.master is not None:
            return "master"
        if self.csv is not None:
            return "csv"
        return "single"


# --- folders, filters, deletion --------------------------------------------------------


class Folders(StrictModel):
    """Which folders of each mailbox are archived."""

    include: list[Annotated[WireStr, Field(min_length=1)]] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        description="Glob patterns on the decoded folder path ('/' between levels): '*' within one "
        "level, '**' across levels.",
    )
    exclude: list[Annotated[WireStr, Field(min_length=1)]] = Field(
        default_factory=list, description="Glob patterns of folders not to archive."
    )
    include_subfolders: bool = Field(
        default=True, description="An included folder brings its subfolders."
    )
    default_exclusions: bool = Field(
        default=True,
        description="Skip trash, junk, drafts and outbox folders (SPECIAL-USE attributes, else the "
        "usual names).",
    )


class Filters(StrictModel):
    """Which messages are archived, decided by the server (UID SEARCH). A message an age
    filter leaves out today is archived by a later run once it qualifies."""

    older_than_days: int | None = Field(
        default=None,
        ge=1,
        le=36500,
        description="Only messages whose internal date is more than this many days ago "
        "(IMAP day granularity).",
    )
    newer_than_days: int | None = Field(
        default=None,
        ge=1,
        le=36500,
        description="Only messages whose internal date is at most this many days ago.",
    )
    skip_unread: bool = Field(
        default=False, description="Skip messages without the \\Seen flag (until they are read)."
    )
    skip_flagged: bool = Field(
        default=False, description="Skip messages with the \\Flagged flag (while flagged)."
    )
    max_size: int | None = Field(
        default=None, ge=1, description="Skip messages larger than this many bytes."
    )


_DELETE_RULES: dict[str, Any] = {
    "if": {"not": {"properties": {"mode": {"const": "after_archive"}}, "required": ["mode"]}},
    "then": {"properties": {"older_than_days": {"type": "null"}}},
}


class Delete(StrictModel):
    """What is deleted from the server after archiving: only messages verifiably in the
    archive, never flagged ones, never what the owner marked \\Deleted."""

    model_config = ConfigDict(json_schema_extra=_DELETE_RULES)

    mode: Literal["never", "after_archive"] = Field(
        default="never",
        description="never: leave the server as it is; after_archive: delete messages once "
        "their placement is committed and their blob re-hashes to what was fetched (needs "
        "UIDPLUS; never flagged ones).",
    )
    older_than_days: int | None = Field(
        default=None,
        ge=1,
        le=36500,
        description="With after_archive: only delete messages whose internal date is more "
        "than this many days ago.",
    )

    @model_validator(mode="after")
    def _age_needs_mode(self) -> Delete:
        if self.older_than_days is not None and self.mode != "after_archive":
            raise PydanticCustomError(
                "delete_age_without_mode", "older_than_days is only used with mode: after_archive"
            )
        return self


# --- documents ---------------------------------------------------------------------------

_SCHEMA_KEY = Field(
    default=None,
    alias="$schema",
    description="Optional URL or path of the JSON Schema, for editors; ignored otherwise.",
)


class Profile(StrictModel):
    """An archiving profile: one server, one source of mailboxes, and what to archive."""

    model_config = ConfigDict(title="Profile", populate_by_name=True)

    schema_ref: str | None = _SCHEMA_KEY
    kind: Literal["Profile"] = Field(description="Document kind.")
    name: str = Field(
        pattern=NAME_PATTERN,
        max_length=64,
        description="Unique name of the profile (letters, digits, '.', '_', '-').",
    )
    description: str | None = Field(default=None, description="Free text for humans.")
    server: Server = Field(description="The IMAP server.")
    source: Source = Field(description="Where the mailboxes come from.")
    folders: Folders = Field(default_factory=Folders, description="Folder selection.")
    filters: Filters = Field(default_factory=Filters, description="Message filters.")
    delete: Delete = Field(default_factory=Delete, description="Deletion after archiving.")
    max_concurrent_jobs: int = Field(
        default=4, ge=1, le=64, description="How many mailboxes are archived at once."
    )
    schedule: str | None = Field(
        default=None,
        pattern=SCHEDULE_PATTERN,
        description="When `imapsync-decl daemon` (or the units and lines of `imapsync-decl "
        "schedule export`) runs the profile: a cron expression in the machine's local time "
        "(minute hour day-of-month month day-of-week, e.g. '0 2 * * *' or '*/15 8-18 * * 1-5') "
        "or @hourly, @daily, @weekly, @monthly, @yearly, @annually. null: never automatically.",
    )


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

    schema_ref: str | None = _SCHEMA_KEY
    kind: Literal["Users"] = Field(description="Document kind.")
    users: list[User] = Field(default_factory=list, description="The users.")
    directory: Directory | None = Field(
        default=None,
        description="An LDAP / Active Directory service whose users join the user list "
        "(`imapsync-decl users sync`, or profiles with sync_directory: true).",
    )


class Archive(StrictModel):
    """Where the archive lives (at most one Archive document)."""

    model_config = ConfigDict(title="Archive", populate_by_name=True)

    schema_ref: str | None = _SCHEMA_KEY
    kind: Literal["Archive"] = Field(description="Document kind.")
    path: str = Field(
        min_length=1,
        description="Archive directory, relative to this document. Without an Archive document "
        "the archive is archive/ beside the configuration directory.",
    )


Document: TypeAlias = Profile | Users | Archive

DOCUMENT_KINDS: dict[str, type[Profile] | type[Users] | type[Archive]] = {
    "Profile": Profile,
    "Users": Users,
    "Archive": Archive,
}
