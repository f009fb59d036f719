"""The Profile document: one server, one source of mailboxes, and what to archive of them.

The source is exactly one of ``master`` (one privileged account logs in as each
user of the user list), ``csv`` (a CSV file with a row of credentials per mailbox)
and ``single`` (one mailbox); ``folders``, ``filters`` and ``delete`` say which
folders and messages are archived and what is deleted from the server afterwards.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from pydantic_core import PydanticCustomError

from imapsync_decl.config.cron import SCHEDULE_PATTERN
from imapsync_decl.config.documents.rules import (
    HTTP_URL_RULES,
    NAME_PATTERN,
    SCHEMA_KEY,
    Email,
    StrictModel,
    WireStr,
    checked,
)
from imapsync_decl.config.documents.secret_refs import (
    SECRET_DESCRIPTION,
    CredentialSecret,
    EnvSecret,
    FileSecret,
    SecretRef,
    secret_tag,
)
from imapsync_decl.config.documents.server import Server


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


# --- health pings ----------------------------------------------------------------------

NotifyUrl: TypeAlias = Annotated[
    Annotated[str, *checked(*HTTP_URL_RULES), Tag("secret:inline")]
    | Annotated[EnvSecret, Tag("secret:env")]
    | Annotated[FileSecret, Tag("secret:file")]
    | Annotated[CredentialSecret, Tag("secret:credential")],
    Discriminator(
        secret_tag,
        custom_error_type="notify_url",
        custom_error_message="expected an http(s) URL, {env: NAME}, {file: PATH} or"
        " {credential: NAME}",
    ),
]

NOTIFY_DESCRIPTION = (
    "Health-check URLs (Healthchecks.io convention) pinged by every apply and daemon run of "
    "the profile: POST URL/start when it starts, URL when it succeeds, URL/fail when it fails, "
    "with a short run summary as the body. Each is an http(s) URL, or {env: NAME}, "
    "{file: PATH}, {credential: NAME} when the URL itself is a secret. A failing ping is "
    "logged as a warning and never fails the run."
)


# --- the document ------------------------------------------------------------------------


class Profile(StrictModel):
    """An archiving profile: one server, one source of mailboxes, and what to archive."""

    model_config = ConfigDict(title="Profile", populate_by_name=True)

    schema_ref: str | None = SCHEMA_KEY
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
    worker_processes: bool = Field(
        default=True,
        description="Archive each mailbox in a worker process of its own (fetching, hashing, "
        "compressing and writing its blobs), so that up to max_concurrent_jobs mailboxes use "
        "every core; apply itself writes the index. false: in threads of the apply process. "
        "Mailboxes with deletion planned are always archived by apply itself.",
    )
    schedule: str | None = Field(
        default=None,
        pattern=SCHEDULE_PATTERN,
        description="When `imapsync-decl daemon` (or the units and lines of `imapsync-decl "
        "schedule export`) runs the profile: a cron expression in the machine's local time "
        "(minute hour day-of-month month day-of-week, e.g. '0 2 * * *' or '*/15 8-18 * * 1-5') "
        "or @hourly, @daily, @weekly, @monthly, @yearly, @annually. null: never automatically.",
    )
    notify: list[NotifyUrl] = Field(
        default_factory=list, max_length=8, description=NOTIFY_DESCRIPTION
    )
