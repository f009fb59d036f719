"""Saved plans: a plan file carries UIDs, not authority.

``apply PLAN_FILE`` uses nothing of the file but its UIDs. Everything else (profiles,
mailboxes with their login, archive user and archive folder, folder paths and wire
names, actions, UIDVALIDITY) is derived again, from the configuration and from a fresh
plan made at apply time, and the file must say exactly the same: the first field that
differs refuses the whole plan (:class:`StalePlan`, exit 11), nothing is corrected.

* :func:`check_saved_plan`: before anything is touched, the plan against the
  configuration and the archive's state (no server is contacted);
* :func:`restrict_to_saved`: under the archive's lock, the plan made now, restricted to
  the saved plan's mailboxes, folders and UIDs: that is what is applied;
* :func:`write_plan` and :func:`read_plan`: the plan file itself, at most
  ``MAX_PLAN_BYTES``, written atomically and read without following a symbolic link.

UIDs are the only free data: each must be one the fresh plan would archive (or delete)
now. A UID at or above the folder's UIDNEXT was never on the server and refuses the
plan; one below it that the fresh plan does not offer (expunged meanwhile, archived
already, or no longer chosen by the filters or the deletion rules) is left out and
logged (``planned_uids_skipped``).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

import structlog

from imapsync_decl.config.resolve import Config, config_digest
from imapsync_decl.errors import ExitCode, ImapsyncError, UsageError
from imapsync_decl.fs import atomic_write, open_nofollow
from imapsync_decl.plan import deletion
from imapsync_decl.plan.model import (
    FolderPlan,
    MailboxPlan,
    Plan,
    PlanFormatError,
    ProfilePlan,
    shown_value,
)
from imapsync_decl.store import Index

log = structlog.get_logger(__name__)

MAX_PLAN_BYTES = 64 << 20  # a plan file larger than this is refused unread
AGAIN = "; run `plan` again"


class StalePlan(ImapsyncError):
    """A saved plan that no longer fits the configuration, the archive or the servers,
    or that was changed after it was written."""

    exit_code = ExitCode.STALE_PLAN


def write_plan(path: Path, plan: Plan) -> None:
    """Save ``plan`` for ``apply PLAN_FILE``: refused (exit 10) when it is larger than
    ``apply`` reads, written atomically otherwise."""
    saved = (json.dumps(plan.to_json(), indent=2, ensure_ascii=False) + "\n").encode()
    if len(saved) > MAX_PLAN_BYTES:
        raise UsageError(
            f"the plan has {len(saved) >> 20} MiB, more than `apply` reads "
            f"({MAX_PLAN_BYTES >> 20} MiB): save plans for fewer profiles at a time "
            "(--profile)"
        )
    try:
        atomic_write(path, saved)
    except OSError as exc:
        raise UsageError(f"cannot write the plan file {path}: {exc.strerror}") from None
    log.info("plan_written", path=str(path), plan_id=plan.id)


def read_plan(path: Path) -> Plan:
    """Read a saved plan: a regular file (not through a symbolic link) of at most
    MAX_PLAN_BYTES. An unreadable file is a command-line error (exit 10); one that is
    not a plan document, or too large to be one, a stale plan (exit 11)."""
    try:
        fd = open_nofollow(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(
                f"the plan file {path} is a symbolic link; give the file itself"
            ) from None
        raise UsageError(f"cannot read the plan file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise UsageError(f"the plan file {path} is not a regular file")
        try:
            data = file.read(MAX_PLAN_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"cannot read the plan file {path}: {exc.strerror}") from None
    if len(data) > MAX_PLAN_BYTES:
        raise StalePlan(
            f"{path} is larger than {MAX_PLAN_BYTES >> 20} MiB, so it is no plan that "
            "`plan --out` wrote; run `plan --out` again"
        )
    try:
        body = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deeply
        raise StalePlan(f"{path} is not a plan document ({exc}); run `plan --out` again") from None
    try:
        return Plan.from_json(body)
    except PlanFormatError as exc:
        raise StalePlan(f"{path}: {exc}; run `plan --out` again") from None


def _differs(place: str, saved: Any, current: Any, source: str) -> StalePlan:
    return StalePlan(
        f"{place}: the plan says {shown_value(saved)}, {source} gives {shown_value(current)}{AGAIN}"
    )


def _same(place: str, saved: Any, current: Any, source: str) -> None:
    if saved != current:
        raise _differs(place, saved, current, source)


def check_saved_plan(
    plan: Plan, config: Config, index: Index | None, *, created_now: bool = False
) -> None:
    """Refuse a saved plan made for another configuration or archive state, or whose
    profiles and mailboxes are not exactly those the configuration gives.

    ``created_now``: the archive did not exist before this apply opened it, which
    is the state a plan made without an archive expects.
    """
    if created_now and plan.archive_id is None and plan.archive_state is None:
        index = None
    if plan.archive != str(config.archive_path):
        raise StalePlan(
            f"the plan is for the archive {shown_value(plan.archive)}, not "
            f"{config.archive_path}{AGAIN}"
        )
    if plan.config_digest != config_digest(config):
        raise StalePlan(f"the configuration changed since the plan was made{AGAIN}")
    archive_id = index.archive_id if index is not None else None
    if plan.archive_id != archive_id:
        raise StalePlan(f"the plan was made for another archive (or before it existed){AGAIN}")
    state = index.state_token() if index is not None else None
    if plan.archive_state != state:
        raise StalePlan(
            "the archive changed since the plan was made (the plan was applied already, or "
            f"an apply ran or was interrupted since){AGAIN}; after a crash, `apply` without a "
            "plan file resumes"
        )
    _check_against_config(plan, config)


def _check_against_config(plan: Plan, config: Config) -> None:
    source = "the configuration"
    seen: set[str] = set()
    for i, profile in enumerate(plan.profiles):
        where = f"profiles[{i}]"
        item = config.profile(profile.name)
        if item is None:
            raise StalePlan(
                f"{where}.name: {shown_value(profile.name)} is not a profile of the "
                f"configuration{AGAIN}"
            )
        if profile.name in seen:
            raise StalePlan(f"{where}.name: profile {profile.name!r} is listed twice{AGAIN}")
        seen.add(profile.name)
        server = item.doc.server
        _same(f"{where}.server", profile.server, f"{server.host}:{server.effective_port}", source)
        _same(f"{where}.security", profile.security, server.security, source)
        deleting = deletion.active(item.doc.delete)
        mailboxes = {m.login: m for m in config.mailboxes.get(profile.name, ())}
        logins: set[str] = set()
        for j, mailbox in enumerate(profile.mailboxes):
            inner = f"{where}.mailboxes[{j}]"
            found = mailboxes.get(mailbox.login)
            if found is None:
                raise StalePlan(
                    f"{inner}.login: {shown_value(mailbox.login)} is not a mailbox of profile "
                    f"{profile.name!r} in the configuration{AGAIN}"
                )
            if mailbox.login in logins:
                raise StalePlan(f"{inner}.login: {mailbox.login!r} is listed twice{AGAIN}")
            logins.add(mailbox.login)
            for name in ("profile", "source", "archive_user", "archive_folder", "email"):
                _same(f"{inner}.{name}", getattr(mailbox, name), getattr(found, name), source)
            for k, folder in enumerate(mailbox.folders):
                if folder.delete and not deleting:
                    raise StalePlan(
                        f"{inner}.folders[{k}].delete: profile {profile.name!r} removes no "
                        f"messages from the server (its delete mode is never){AGAIN}"
                    )


def restrict_to_saved(saved: Plan, current: Plan) -> Plan:
    """The plan to apply for ``saved``: ``current`` (made now, for the saved plan's
    profiles) restricted to the saved plan's mailboxes, folders and UIDs.

    Call :func:`check_saved_plan` first. Raises :class:`StalePlan` at the first folder
    field that differs. A folder of which this run leaves out UIDs that ``current``
    would archive gets no checkpoint (``uidnext`` and ``exists`` None), so that the next
    plan searches it again.
    """
    by_name = {p.name: p for p in current.profiles}
    profiles = []
    for i, profile in enumerate(saved.profiles):
        now = by_name.get(profile.name)
        if now is None:
            raise StalePlan(
                f"profiles[{i}].name: {shown_value(profile.name)} is not a profile of the "
                f"configuration{AGAIN}"
            )
        profiles.append(_profile(f"profiles[{i}]", profile, now))
    return dataclasses.replace(current, id=saved.id, profiles=tuple(profiles))


def _profile(where: str, saved: ProfilePlan, now: ProfilePlan) -> ProfilePlan:
    if now.error is not None:  # e.g. its directory cannot be read: nothing is applied
        return dataclasses.replace(now, mailboxes=())
    by_login = {m.login: m for m in now.mailboxes}
    mailboxes = []
    for j, mailbox in enumerate(saved.mailboxes):
        found = by_login.get(mailbox.login)
        if found is None:
            raise StalePlan(
                f"{where}.mailboxes[{j}].login: {shown_value(mailbox.login)} is not a mailbox "
                f"of profile {saved.name!r} in the configuration{AGAIN}"
            )
        mailboxes.append(_mailbox(f"{where}.mailboxes[{j}]", mailbox, found))
    error = None
    if saved.error is not None:
        error = f"the plan has an error for this profile, so nothing is applied{AGAIN}"
    return dataclasses.replace(now, mailboxes=tuple(mailboxes), error=error)


def _mailbox(where: str, saved: MailboxPlan, now: MailboxPlan) -> MailboxPlan:
    if now.error is not None:  # cannot be reached now: nothing to compare, nothing applied
        return now
    by_path = {f.path: f for f in now.folders}
    folders = []
    paths: set[str] = set()
    for k, folder in enumerate(saved.folders):
        inner = f"{where}.folders[{k}]"
        found = by_path.get(folder.path)
        if found is None:
            raise StalePlan(
                f"{inner}.path: {shown_value(folder.path)} is not a folder that the "
                f"configuration selects on the server now{AGAIN}"
            )
        if folder.path in paths:
            raise StalePlan(f"{inner}.path: {folder.path!r} is listed twice{AGAIN}")
        paths.add(folder.path)
        with structlog.contextvars.bound_contextvars(
            profile=now.profile, mailbox=now.login, folder=found.path
        ):
            folders.append(_folder(inner, folder, found))
    if saved.error is not None:
        return dataclasses.replace(
            now,
            folders=(),
            error=f"the plan has an error for this mailbox, so nothing is applied{AGAIN}",
        )
    return dataclasses.replace(now, folders=tuple(folders))


def _folder(where: str, saved: FolderPlan, now: FolderPlan) -> FolderPlan:
    _same(f"{where}.wire_name", saved.wire_name, now.wire_name, "the server")
    if now.action == "error":
        return now
    if saved.action == "error":
        return FolderPlan(
            now.path,
            now.wire_name,
            "error",
            note=f"the plan has an error for this folder, so nothing is applied{AGAIN}",
        )
    assert now.uidvalidity is not None
    assert now.uidnext is not None
    if saved.uidvalidity != now.uidvalidity and (saved.uids or saved.delete):
        # Recreated since the plan: its UIDs name other messages now. The executor sees
        # the other UIDVALIDITY when it examines the folder and leaves the folder out.
        return dataclasses.replace(
            now,
            uidvalidity=saved.uidvalidity,
            uids=saved.uids,
            delete=saved.delete,
            uidnext=None,
            exists=None,
            previous_uidvalidity=None,
            bytes=0,
        )
    if saved.uidvalidity == now.uidvalidity:
        if saved.action != now.action and "skip" not in (saved.action, now.action):
            raise _differs(
                f"{where}.action", saved.action, now.action, "the server and the archive"
            )
        if saved.action == now.action:
            _same(
                f"{where}.previous_uidvalidity",
                saved.previous_uidvalidity,
                now.previous_uidvalidity,
                "the server and the archive",
            )
    for name, uids in (("uids", saved.uids), ("delete", saved.delete)):
        for n, uid in enumerate(uids):
            if uid >= now.uidnext:
                raise StalePlan(
                    f"{where}.{name}[{n}]: UID {uid} was never in the folder (its UIDNEXT is "
                    f"{now.uidnext}){AGAIN}"
                )
    offered = set(now.uids)
    uids = tuple(uid for uid in saved.uids if uid in offered)
    left_out = offered.difference(uids)  # what a plan made now archives, but this one not
    deletable = set(now.delete) - left_out
    delete = tuple(uid for uid in saved.delete if uid in deletable)
    skipped = len(saved.uids) - len(uids) + len(saved.delete) - len(delete)
    if skipped:
        log.warning(
            "planned_uids_skipped",
            archive=len(saved.uids) - len(uids),
            delete=len(saved.delete) - len(delete),
            reason="not on the server any more, archived already, or no longer chosen",
        )
    complete = not left_out
    return dataclasses.replace(
        now,
        uids=uids,
        delete=delete,
        bytes=now.bytes if complete else min(saved.bytes, now.bytes),
        uidnext=now.uidnext if complete else None,
        exists=now.exists if complete else None,
    )
