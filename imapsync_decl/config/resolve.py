"""Resolution: the documents of a directory, checked together and turned into mailboxes.

``load_config`` never raises on bad input. It returns a :class:`Config` whose
``problems`` hold every error and warning: those of each document (``loader``),
those across documents and of each document's settings (``checks``), and those
found while resolving each profile to its mailboxes (CSV files, user selection,
identity templates, secrets). No server is contacted.

The resolved values live in ``model``; this module gives their names as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydantic
import structlog

from imapsync_decl.config.checks import (
    check_directory,
    check_profile_names,
    check_schedule,
    check_secret,
    check_server,
    find_archive_path,
    merge_users,
    resolve_path,
    shared_archive_folders,
)
from imapsync_decl.config.documents import (
    EMAIL_PATTERN,
    WIRE_SAFE,
    WIRE_UNSAFE,
    CredentialSecret,
    Delete,
    Directory,
    EnvSecret,
    FileSecret,
    Filters,
    Folders,
    Profile,
    Server,
    User,
    secret_references,
)
from imapsync_decl.config.documents.profile import (
    CsvSource,
    IdentityTemplate,
    MasterSource,
    SingleSource,
)
from imapsync_decl.config.loader import (
    Loaded,
    Loc,
    Origin,
    field_path,
    load_config_dir,
    validation_messages,
)
from imapsync_decl.config.model import (
    Config,
    Credentials,
    ListedUser,
    Mailbox,
    Place,
    UserChoice,
    config_digest,
)
from imapsync_decl.config.web import resolve_web
from imapsync_decl.errors import Problem, Severity
from imapsync_decl.secrets import SecretError
from imapsync_decl.sources.csv import CsvResult, load_csv

__all__ = [
    "EMAIL_PATTERN",
    "WIRE_SAFE",
    "WIRE_UNSAFE",
    "Config",
    "CredentialSecret",
    "Credentials",
    "Delete",
    "Directory",
    "EnvSecret",
    "FileSecret",
    "Filters",
    "Folders",
    "ListedUser",
    "Mailbox",
    "Profile",
    "SecretError",
    "Server",
    "User",
    "config_digest",
    "directory_users",
    "load_config",
    "secret_references",
]

WARNING = Severity.WARNING

log = structlog.get_logger(__name__)


def directory_users(records: Sequence[Any], skipped: list[str] | None = None) -> list[ListedUser]:
    """Users of the index (source directory) as members of the user list, validated like
    the users of a Users document. A record the model refuses (kept by an older version;
    the next `users sync` marks it gone) is left out and described in ``skipped``, or
    logged as a warning without it."""
    listed = []
    for record in records:
        try:
            user = User.model_validate(
                {
                    "name": record.name,
                    "email": record.email,
                    "aliases": list(record.aliases),
                    "display_name": record.display_name,
                }
            )
        except pydantic.ValidationError as exc:
            reasons = validation_messages(User, exc)
            if skipped is None:
                log.warning("directory_user_skipped", user=repr(record.name), problems=reasons)
            else:
                skipped.append(f"directory user {record.name!r} left out: {'; '.join(reasons)}")
            continue
        listed.append(ListedUser(user, "directory", record.status))
    return listed


def load_config(
    config_dir: Path,
    display_dir: str | None = None,
    directory: Sequence[ListedUser] = (),
) -> Config:
    """Load, check and resolve a configuration directory. ``directory``: the users that
    the directories gave (as the index keeps them, or as a fresh read says)."""
    loaded = load_config_dir(config_dir, display_dir)
    problems = list(loaded.problems)
    users = merge_users(loaded, problems)
    listed = [ListedUser(user, "document") for user, _ in users]
    known = {u.user.name.casefold() for u in listed}
    listed += [u for u in directory if u.user.name.casefold() not in known]
    archive_path = find_archive_path(config_dir, loaded, problems)
    check_profile_names(loaded.profiles, problems)
    with_directory = tuple(item for item in loaded.users if item.doc.directory is not None)
    for users_doc in with_directory:
        check_directory(users_doc, problems)
    mailboxes: dict[str, tuple[Mailbox, ...]] = {}
    choices: dict[str, tuple[UserChoice, ...]] = {}
    for item in loaded.profiles:
        check_server(item, problems)
        check_schedule(item, problems)
        master = item.doc.source.master
        if master is not None:
            if master.sync_directory and not with_directory:
                problems.append(
                    item.origin.problem(
                        ("source", "master", "sync_directory"),
                        "no Users document has a directory to synchronise with",
                    )
                )
            choices[item.doc.name] = tuple(_resolve_master(item, master, listed, problems))
            mailboxes[item.doc.name] = tuple(
                c.mailbox for c in choices[item.doc.name] if c.mailbox is not None
            )
        else:
            mailboxes[item.doc.name] = tuple(_resolve(item, listed, problems))
    for csv_file, origin in loaded.orphan_csv_files:
        _load_csv_rows(csv_file, origin, problems)
    problems += shared_archive_folders([m for found in mailboxes.values() for m in found])
    web, web_document = resolve_web(
        loaded,
        has_directory=bool(with_directory),
        user_names={u.user.name for u in listed}
        | {m.archive_user for found in mailboxes.values() for m in found},
        problems=problems,
    )
    document_count = (
        len(loaded.profiles) + len(loaded.users) + len(loaded.archives) + len(loaded.webs)
    )
    return Config(
        config_dir=config_dir,
        profiles=loaded.profiles,
        users=tuple(u.user for u in listed),
        archive_path=archive_path,
        mailboxes=mailboxes,
        problems=tuple(sorted(set(problems), key=lambda p: (p.path, p.line or 0, p.col or 0))),
        document_count=document_count,
        listed=tuple(listed),
        choices=choices,
        directories=with_directory,
        web=web,
        web_document=web_document,
        search_during_apply=all(item.doc.search_during_apply for item in loaded.archives[:1]),
    )


def _resolve(
    item: Loaded[Profile], users: list[ListedUser], problems: list[Problem]
) -> list[Mailbox]:
    source = item.doc.source
    if source.csv is not None:
        return _resolve_csv(item, source.csv, problems)
    assert source.single is not None
    return _resolve_single(item, source.single, problems)


def _resolve_single(
    item: Loaded[Profile], single: SingleSource, problems: list[Problem]
) -> list[Mailbox]:
    origin = item.origin
    password = check_secret(single.password, ("source", "single", "password"), origin, problems)
    return [
        Mailbox(
            profile=item.doc.name,
            source="single",
            archive_user=single.archive_user or single.username,
            login=single.username,
            email=single.email,
            archive_folder=single.email or single.username,
            credentials=Credentials(
                "user_password", single.username, None, password, origin.base_dir
            ),
            server=_server_key(item.doc),
            place=_document_place(origin, ("source", "single")),
        )
    ]


def _csv_display(file: str, origin: Origin) -> str:
    return file if Path(file).is_absolute() else _join_display(origin, file)


def _load_csv_rows(file: str, origin: Origin, problems: list[Problem]) -> CsvResult | None:
    path = resolve_path(file, origin)
    display = _csv_display(file, origin)
    result = load_csv(path, display)
    problems.extend(result.problems)
    if not result.ok:
        # Point the profile at the broken file too, so its line explains the CSV errors.
        problems.append(origin.problem(("source", "csv", "file"), f"CSV file {display} has errors"))
        return None
    return result


def _resolve_csv(item: Loaded[Profile], csv: CsvSource, problems: list[Problem]) -> list[Mailbox]:
    origin = item.origin
    result = _load_csv_rows(csv.file, origin, problems)
    if result is None:
        return []
    return [
        Mailbox(
            profile=item.doc.name,
            source="csv",
            archive_user=row.archive_user or row.login,
            login=row.login,
            email=row.email,
            archive_folder=row.email or row.login,
            credentials=Credentials(
                "user_password", row.login, None, row.password, origin.base_dir
            ),
            server=_server_key(item.doc),
            place=Place(_csv_display(csv.file, origin), row.line),
        )
        for row in result.accounts
    ]


def _server_key(profile: Profile) -> str:
    """The profile's server as mailboxes are told apart: host (case and a trailing dot do
    not matter) and port."""
    host = profile.server.host.rstrip(".").casefold()
    return (
        f"[{host}]:{profile.server.effective_port}"
        if ":" in host
        else f"{host}:{profile.server.effective_port}"
    )


def _document_place(origin: Origin, loc: Loc) -> Place:
    line, col = origin.position(loc)
    return Place(origin.display, line, col, field_path(loc))


def _join_display(origin: Origin, relative: str) -> str:
    parent = origin.display.rpartition("/")[0]
    return f"{parent}/{relative}" if parent else relative


def _resolve_master(
    item: Loaded[Profile],
    master: MasterSource,
    users: list[ListedUser],
    problems: list[Problem],
) -> list[UserChoice]:
    origin = item.origin
    base: Loc = ("source", "master")
    password = check_secret(master.password, (*base, "password"), origin, problems)
    selection = master.users
    by_key: dict[str, User] = {}
    for listed in users:
        user = listed.user
        for key in (user.name, user.email, *user.aliases):
            if key is not None:
                by_key.setdefault(key.casefold(), user)
    named: set[str] = set()
    for i, name in enumerate(selection.names):
        found = by_key.get(name.casefold())
        if found is None:
            problems.append(
                origin.problem(
                    (*base, "users", "names", i), f"no user {name!r} in the user list", WARNING
                )
            )
        else:
            named.add(found.name)

    choices: list[UserChoice] = []
    identities: dict[str, str] = {}

    def skip(listed: ListedUser, reason: str) -> None:
        choices.append(UserChoice(item.doc.name, listed, None, reason))

    for listed in users:
        user = listed.user
        if listed.status != "active":
            skip(listed, "gone from the directory")
            continue
        if selection.select == "only" and user.name not in named:
            skip(listed, "not in only")
            continue
        if selection.select == "all_except" and user.name in named:
            skip(listed, "excluded")
            continue
        if selection.select != "only" and user.email is None:
            skip(listed, "no e-mail address")
            continue
        identity = _identity(master.identity, user, (*base, "identity"), origin, problems)
        if identity is None:
            skip(listed, f"no identity ({_identity_name(master.identity)} needs what it lacks)")
            continue
        if identity.casefold() in identities:
            problems.append(
                origin.problem(
                    (*base, "identity"),
                    f"users {identities[identity.casefold()]!r} and {user.name!r} "
                    f"have the same identity {identity!r}",
                )
            )
            skip(listed, f"same identity as {identities[identity.casefold()]!r}")
            continue
        identities[identity.casefold()] = user.name
        if master.mechanism == "sasl_plain":
            credentials = Credentials(
                "sasl_plain", master.username, identity, password, origin.base_dir
            )
        else:
            credentials = Credentials(
                "login_separator",
                f"{identity}{master.separator}{master.username}",
                None,
                password,
                origin.base_dir,
            )
        mailbox = Mailbox(
            profile=item.doc.name,
            source="master",
            archive_user=user.name,
            login=identity,
            email=user.email,
            archive_folder=user.email or user.name,
            credentials=credentials,
            server=_server_key(item.doc),
            place=_document_place(origin, base),
        )
        choices.append(UserChoice(item.doc.name, listed, mailbox))
    quiet = master.sync_directory or any(p.is_error and p.path == origin.display for p in problems)
    if not any(c.selected for c in choices) and not quiet:
        problems.append(origin.problem(base, "selects no mailboxes", WARNING))
    return choices


def _identity_name(identity: str | IdentityTemplate) -> str:
    return "the template" if isinstance(identity, IdentityTemplate) else f"identity {identity}"


def _identity(
    identity: str | IdentityTemplate,
    user: User,
    loc: Loc,
    origin: Origin,
    problems: list[Problem],
) -> str | None:
    if isinstance(identity, IdentityTemplate):
        from imapsync_decl.config.templates import TemplateError, TemplateUser, render_identity

        try:
            rendered = render_identity(
                identity.template, TemplateUser(user.name, user.email, user.display_name)
            )
        except TemplateError as exc:
            problems.append(origin.problem(loc, str(exc)))
            return None
        if WIRE_UNSAFE.search(rendered):
            problems.append(
                origin.problem(loc, f"the identity of user {user.name!r} {WIRE_SAFE.message}")
            )
            return None
        return rendered
    if identity == "username":
        return user.name
    if user.email is None:
        problems.append(
            origin.problem(
                loc,
                f"user {user.name!r} has no e-mail address, so identity {identity} cannot be "
                "formed; not archived",
                WARNING,
            )
        )
        return None
    if identity == "email":
        return user.email
    return user.email.rpartition("@")[0]
