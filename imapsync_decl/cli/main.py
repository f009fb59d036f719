"""The command line: parse, call one function, render, exit code.

stdout carries results (summaries, tables, JSON documents); stderr carries
problems and logs. Every error that ends a command is an ``ImapsyncError`` with
its own exit code; only a bug ends with a traceback (exit 1).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import sys
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click
import structlog

from imapsync_decl import __version__, log
from imapsync_decl.cli.progress import make_progress
from imapsync_decl.cli.render import render_plan, render_result
from imapsync_decl.config.resolve import Config, ListedUser, Mailbox, directory_users, load_config
from imapsync_decl.config.schema import document_schema, kind_schema, schema_files
from imapsync_decl.errors import ConfigError, ExitCode, ImapsyncError, Problem, UsageError
from imapsync_decl.fs import UnsafePath, atomic_write, check_output_path, open_nofollow
from imapsync_decl.plan.model import Plan, PlanFormatError
from imapsync_decl.plan.planner import make_plan, open_index_if_exists
from imapsync_decl.plan.saved import (
    MAX_PLAN_BYTES,
    StalePlan,
    check_saved_plan,
    restrict_to_saved,
)
from imapsync_decl.run.executor import ApplyResult, Batching, Executor, StopRequested
from imapsync_decl.sources import users as userlist
from imapsync_decl.sources.users import load_with_index_users
from imapsync_decl.store import Archive, ArchiveLock, remove_damaged_orphans, verify
from imapsync_decl.store.archive import open_for_writing
from imapsync_decl.store.export import export_archive

EXIT_CODES = """\b
Exit codes:
  0    success
  1    internal error (a bug: please report it with the traceback)
  2    changes pending (plan --detailed-exitcode)
  3    partial failure: some mailboxes or folders failed, the others are done
  10   invalid configuration or command line, or an unusable output path
  11   stale or tampered plan: run plan again
  12   integrity failure: damaged or missing blobs, or a corrupt index
  13   the archive is locked by another apply
  14   the archive cannot be written (read-only, full, wrong owner or mode)
  130  interrupted (Ctrl-C)
  143  terminated (SIGTERM)
"""

F = TypeVar("F", bound=Callable[..., Any])


class Terminated(Exception):
    """SIGTERM arrived."""


def config_dir_option(func: F) -> F:
    return click.option(
        "--config-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=Path("profiles.d"),
        show_default=True,
        envvar="IMAPSYNC_DECL_CONFIG_DIR",
        help="Directory of the documents (*.yaml, *.yml, *.json). "
        "Environment: IMAPSYNC_DECL_CONFIG_DIR.",
    )(func)


def format_option(func: F) -> F:
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="text for humans, json for programs (one JSON document on stdout).",
    )(func)


@click.group(
    epilog=EXIT_CODES,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "-V", "--version", prog_name="imapsync-decl")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    show_default=True,
    envvar="IMAPSYNC_DECL_LOG_FORMAT",
    help="Logs on stderr: JSON lines (one object per line), console lines, or auto (console "
    "on a terminal, else JSON). Environment: IMAPSYNC_DECL_LOG_FORMAT.",
)
@click.option(
    "--log-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    envvar="IMAPSYNC_DECL_LOG_FILE",
    help="Append the logs (JSON lines) to this file instead of stderr (created 0600; a "
    "symbolic link, or a file of another user or writable by others, is refused).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Least important level logged.",
)
@click.pass_context
def cli(ctx: click.Context, log_format: str, log_file: Path | None, log_level: str) -> None:
    """Archive many IMAP mailboxes, declaratively.

    Profiles in the configuration directory say which mailboxes of which server
    are archived; `validate` checks them without contacting any server, `plan`
    shows what `apply` would archive.
    """
    # Every command, also those that log nothing; but `schedule export` only names the log
    # file in the units it prints, for the machine that will run them.
    if log_file is not None and ctx.invoked_subcommand != "schedule":
        _check_output(log_file, "log file")
    ctx.obj = {
        "log_format": log_format,
        "log_file": log_file,
        "log_level": log_level,
        "log_level_given": ctx.get_parameter_source("log_level")
        is not click.core.ParameterSource.DEFAULT,
    }


def _setup_logging(quiet_console: bool = False) -> None:
    """Configure the logs as the global options say (for commands that log).

    ``quiet_console``: progress bars are shown, so on a console only warnings and
    errors are logged, unless --log-level was given.
    """
    settings = click.get_current_context().find_root().obj or {}
    level = settings.get("log_level", "info")
    log_file = settings.get("log_file")
    if log_file is not None:
        log.configure("json", level, log.open_log_file(log_file))
        return
    log_format = settings.get("log_format", "auto")
    console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    if quiet_console and console and not settings.get("log_level_given"):
        level = "warning"
    log.configure(log_format, level)


# --- validate --------------------------------------------------------------------------------


@cli.command(epilog=EXIT_CODES)
@config_dir_option
@format_option
def validate(config_dir: Path, output_format: str) -> int:
    """Check every document and every CSV file it names; report all problems at once.

    Errors and warnings go to stderr as PATH:LINE:COL: FIELD: MESSAGE. No server
    is contacted. Exit 0 when valid (warnings allowed), 10 when not.
    """
    config = load_with_index_users(config_dir, str(config_dir))
    _print_problems(config.problems)
    if output_format == "json":
        _print_json(
            {
                "valid": config.ok,
                "config_dir": str(config_dir),
                "archive": str(config.archive_path),
                "errors": [_problem_json(p) for p in config.errors],
                "warnings": [_problem_json(p) for p in config.warnings],
                "profiles": [
                    {
                        "name": item.doc.name,
                        "source": item.doc.source.kind,
                        "server": f"{item.doc.server.host}:{item.doc.server.effective_port}",
                        "security": item.doc.server.security,
                        "mailboxes": len(config.mailboxes.get(item.doc.name, ())),
                    }
                    for item in config.profiles
                ],
            }
        )
    else:
        _print_validate_text(config_dir, config)
    return ExitCode.OK if config.ok else ExitCode.CONFIG


def _print_validate_text(config_dir: Path, config: Config) -> None:
    errors, warnings = len(config.errors), len(config.warnings)
    counts = f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}"
    if not config.ok:
        click.echo(f"{config_dir}: invalid ({counts})")
        return
    total = sum(len(m) for m in config.mailboxes.values())
    click.echo(
        f"{config_dir}: valid ({_plural(config.document_count, 'document')}, "
        f"{_plural(len(config.profiles), 'profile')}, {_plural(total, 'mailbox')}, "
        f"{_plural(warnings, 'warning')})"
    )
    for item in config.profiles:
        server = item.doc.server
        count = len(config.mailboxes.get(item.doc.name, ()))
        click.echo(
            f"  {item.doc.name}: {item.doc.source.kind} on {server.host}:{server.effective_port}"
            f" ({server.security}), {_plural(count, 'mailbox')}"
        )
    click.echo(f"  archive: {config.archive_path}")


# --- schema ----------------------------------------------------------------------------------


@cli.command(epilog=EXIT_CODES)
@click.option(
    "--kind",
    type=click.Choice(["document", "profile", "users", "archive"]),
    default="document",
    show_default=True,
    help="Which schema to print: one kind, or any document (dispatching on kind).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write every schema file into this directory instead of printing one.",
)
def schema(kind: str, out: Path | None) -> int:
    """Print or write the JSON Schemas (draft 2020-12) of the documents.

    The repository's schemas/ directory holds `schema --out schemas`. Editors read
    one document per file; multi-document YAML files are checked by `validate`.
    """
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in schema_files().items():
            (out / name).write_text(text, encoding="utf-8")
            click.echo(str(out / name))
        return ExitCode.OK
    body = document_schema() if kind == "document" else kind_schema(kind)
    _print_json(body)
    return ExitCode.OK


# --- mailboxes -------------------------------------------------------------------------------


@cli.command(epilog=EXIT_CODES)
@config_dir_option
@click.option("--profile", "profile_name", metavar="NAME", help="Only this profile.")
@format_option
def mailboxes(config_dir: Path, profile_name: str | None, output_format: str) -> int:
    """List the mailboxes each profile will archive, without contacting any server.

    Resolved from the user list (master password: the Users documents and the
    directory users last synchronised) or the CSV file. LOGIN is the identity used
    at login (the authorization identity, or the CSV login); ARCHIVE FOLDER names the
    mailbox in the archive tree. Users of the list a profile does not archive are
    listed with the reason (JSON: selected false and reason). Passwords never appear.
    """
    config = _valid_config(config_dir)
    names = [item.doc.name for item in config.profiles]
    if profile_name is not None and profile_name not in names:
        raise UsageError(
            f"no profile named {profile_name!r} (profiles: {', '.join(names) or 'none'})"
        )
    selected = [
        mailbox
        for name in names
        if profile_name in (None, name)
        for mailbox in config.mailboxes.get(name, ())
    ]
    not_selected = [
        choice
        for name in names
        if profile_name in (None, name)
        for choice in config.choices.get(name, ())
        if not choice.selected
    ]
    if output_format == "json":
        rows: list[dict[str, Any]] = []
        for name in names:
            if profile_name not in (None, name):
                continue
            if name in config.choices:
                rows += [c.to_json() for c in config.choices[name]]
            else:
                rows += [
                    {**m.to_json(), "selected": True, "reason": None}
                    for m in config.mailboxes[name]
                ]
        _print_json(rows)
    else:
        _print_mailbox_table(selected)
        for choice in not_selected:
            click.echo(
                f"not archived by {choice.profile}: {choice.listed.user.name} ({choice.reason})"
            )
    return ExitCode.OK


def _print_mailbox_table(rows: Sequence[Mailbox]) -> None:
    header = ("PROFILE", "SOURCE", "ARCHIVE USER", "LOGIN", "E-MAIL", "ARCHIVE FOLDER")
    table = [header] + [
        (m.profile, m.source, m.archive_user, m.login, m.email or "-", m.archive_folder)
        for m in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    click.echo(f"{_plural(len(rows), 'mailbox')}")


# --- plan and apply --------------------------------------------------------------------------


def profiles_option(func: F) -> F:
    return click.option(
        "--profile",
        "profile_names",
        multiple=True,
        metavar="NAME",
        help="Only this profile (repeatable). Default: every profile.",
    )(func)


def _check_profiles(config: Config, names: Sequence[str]) -> None:
    known = [item.doc.name for item in config.profiles]
    for name in names:
        if name not in known:
            raise UsageError(f"no profile named {name!r} (profiles: {', '.join(known) or 'none'})")


@cli.command("plan", epilog=EXIT_CODES)
@config_dir_option
@profiles_option
@format_option
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 2 when there are changes pending, 0 when there are none.",
)
@click.option(
    "--out",
    "out_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also save the plan (JSON) to this file, for `apply FILE` later.",
)
def plan_command(
    config_dir: Path,
    profile_names: tuple[str, ...],
    output_format: str,
    detailed_exitcode: bool,
    out_file: Path | None,
) -> int:
    """Show, per profile, mailbox and folder, what `apply` would archive.

    Reads the servers (STATUS, EXAMINE, UID SEARCH, sizes) and the archive; changes
    neither. A mailbox that cannot be reached or logged in to is an error in the
    plan, which still covers the others (exit 3). With --out the plan is saved for
    `apply FILE`, which then archives exactly what it lists.
    """
    config = _valid_config(config_dir)
    _check_profiles(config, profile_names)
    if out_file is not None:
        _check_output(out_file, "plan file")
    _setup_logging()
    config, directory_error, added = _read_directories(config_dir, config, profile_names)
    index = open_index_if_exists(config.archive_path)
    stop = StopRequested()
    previous = {sig: signal.signal(sig, stop.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        the_plan = make_plan(
            config,
            profile_names,
            index,
            directory_error=directory_error,
            users_added=added,
            should_stop=stop.__bool__,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if index is not None:
            index.close()
    if stop:
        click.echo(
            "interrupted" if stop.exit_code == ExitCode.INTERRUPTED else "terminated", err=True
        )
        return stop.exit_code
    if out_file is not None:
        saved = (json.dumps(the_plan.to_json(), indent=2, ensure_ascii=False) + "\n").encode()
        if len(saved) > MAX_PLAN_BYTES:
            raise UsageError(
                f"the plan has {len(saved) >> 20} MiB, more than `apply` reads "
                f"({MAX_PLAN_BYTES >> 20} MiB): save plans for fewer profiles at a time "
                "(--profile)"
            )
        try:
            atomic_write(out_file, saved)
        except OSError as exc:
            raise UsageError(f"cannot write the plan file {out_file}: {exc.strerror}") from None
        structlog.get_logger(__name__).info("plan_written", path=str(out_file), plan_id=the_plan.id)
    if output_format == "json":
        _print_json(the_plan.to_json())
    else:
        click.echo(render_plan(the_plan))
    if the_plan.has_errors:
        return ExitCode.PARTIAL
    if detailed_exitcode and the_plan.has_changes:
        return ExitCode.CHANGES_PENDING
    return ExitCode.OK


def _needs_directory(config: Config, profile_names: Sequence[str]) -> bool:
    return any(
        config.needs_directory(item.doc.name)
        for item in config.profiles
        if not profile_names or item.doc.name in profile_names
    )


def _read_directories(
    config_dir: Path, config: Config, profile_names: Sequence[str]
) -> tuple[Config, str | None, list[str]]:
    """For plan: read the directories (read-only) when a profile synchronises with them,
    and resolve the configuration with the user list a sync would give."""
    if not _needs_directory(config, profile_names):
        return config, None, []
    read = userlist.read_all(config)
    if read.error is not None:
        return config, read.error, []
    fresh_names = {u.user.name for u in read.users}
    gone = [
        ListedUser(u.user, "directory", "gone")
        for u in config.listed
        if u.source == "directory" and u.user.name not in fresh_names
    ]
    fresh = load_config(config_dir, str(config_dir), [*read.users, *gone])
    return fresh, None, userlist.would_add(config, read.users)


def _read_plan(path: Path) -> Plan:
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


@cli.command(epilog=EXIT_CODES)
@config_dir_option
@profiles_option
@format_option
@click.option(
    "--batch-messages",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="Messages fetched and committed per batch.",
)
@click.option(
    "--batch-bytes",
    type=click.IntRange(1024, 1 << 30),
    default=4 << 20,
    show_default=True,
    help="About this many bytes fetched per batch (a larger message goes alone).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars per mailbox and overall. Default: on when stderr is a terminal.",
)
@click.option(
    "--repair",
    is_flag=True,
    help="First verify the archive (every blob re-hashed); fetch the messages of damaged or "
    "missing blobs again and write them anew. Exit 12 if some cannot be repaired.",
)
@click.argument("plan_file", required=False, type=click.Path(path_type=Path, dir_okay=False))
def apply(
    config_dir: Path,
    profile_names: tuple[str, ...],
    output_format: str,
    batch_messages: int,
    batch_bytes: int,
    progress: bool | None,
    repair: bool,
    plan_file: Path | None,
) -> int:
    """Archive what is missing: plan afresh and apply, or apply a saved PLAN_FILE.

    Up to each profile's max_concurrent_jobs mailboxes at once. Idempotent: a second
    run archives nothing new. Crash-safe: after a crash, run apply (without a plan
    file) again. Ctrl-C or SIGTERM finish the current batch and exit 130 / 143. One
    apply at a time per archive (exit 13 otherwise). A saved plan made for another
    configuration or archive state, or applied already, is refused (exit 11); so is
    one that differs in anything but its UIDs from what the configuration and the
    servers give now. A folder whose UIDVALIDITY changed since the plan is left out
    (exit 11).

    With --repair, the messages whose blob `archive verify` reports damaged or missing
    are fetched again from the server (their SHA-256 must be the blob's name) and
    replace the bad files; damaged orphan blobs are removed. A blob whose message is no
    longer on the server (or not in the selected profiles) stays unrepaired: exit 12.
    """
    config = _valid_config(config_dir)
    _check_profiles(config, profile_names)
    if plan_file is not None and profile_names:
        raise UsageError("--profile does not go with a plan file: the plan says what is applied")
    if plan_file is not None and repair:
        raise UsageError("--repair does not go with a plan file: it plans afresh")
    saved = _read_plan(plan_file) if plan_file is not None else None
    show = progress if progress is not None else sys.stderr.isatty()
    _setup_logging(quiet_console=show)
    stop = StopRequested()
    previous = {sig: signal.signal(sig, stop.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = run_apply(
            config_dir,
            config,
            profile_names,
            saved,
            stop=stop,
            batching=Batching(batch_messages, batch_bytes),
            show_progress=show,
            repair=repair,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if result is None:
        return stop.exit_code
    if output_format == "json":
        _print_json(result.to_json())
    else:
        click.echo(render_result(result))
    return result.exit_code


def run_apply(
    config_dir: Path,
    config: Config,
    profile_names: Sequence[str],
    saved: Plan | None,
    *,
    stop: StopRequested,
    batching: Batching,
    show_progress: bool = False,
    run_id: str | None = None,
    repair: bool = False,
) -> ApplyResult | None:
    """Take the archive's lock, plan afresh (or check the saved plan) and apply.

    The body of `apply`, also used by the daemon. None: a stop was requested before
    anything was archived. Raises ArchiveLocked when another command holds the lock.
    ``repair``: verify first, remove damaged orphans, and plan the messages of damaged
    or missing blobs as not archived (apply --repair; not with a saved plan).
    """
    existed = (config.archive_path / "index.sqlite").exists()
    if saved is not None:
        # Refused before the archive is created or touched.
        index = open_index_if_exists(config.archive_path)
        try:
            check_saved_plan(saved, config, index)
        finally:
            if index is not None:
                index.close()
    with open_for_writing(config.archive_path, "imapsync-decl apply") as archive:
        users_changes: dict[str, Any] = {}
        directory_error: str | None = None
        if _needs_directory(config, profile_names) or (
            saved is not None and any(config.needs_directory(p.name) for p in saved.profiles)
        ):
            users_changes, read = userlist.sync(config, archive.index)
            directory_error = read.error
            config = load_config(
                config_dir,
                str(config_dir),
                directory_users(archive.index.list_users(source="directory")),
            )
        damage = None
        if repair:
            damage = verify(archive.blobs, archive.index)
            remove_damaged_orphans(archive.blobs, damage)
            structlog.get_logger(__name__).info(
                "archive_verified",
                checked=damage.checked,
                to_repair=len(damage.to_repair),
                damaged_orphans=len(damage.damaged_orphans),
            )
        if saved is not None:
            # Again under the lock: another apply may have run meanwhile.
            fresh = not existed and archive.index.state_token() == "runs:0"
            check_saved_plan(saved, config, archive.index, created_now=fresh)
            # Only the saved UIDs are taken from the file: everything else comes from a
            # plan made now, and the file must say the same.
            the_plan = saved  # a plan of no profiles applies nothing
            if saved.profiles:
                current = make_plan(
                    config,
                    [p.name for p in saved.profiles],
                    archive.index,
                    directory_error=directory_error,
                    should_stop=stop.__bool__,
                )
                the_plan = restrict_to_saved(saved, current)
        else:
            the_plan = make_plan(
                config,
                profile_names,
                archive.index,
                directory_error=directory_error,
                repair=damage.to_repair if damage is not None else frozenset(),
                should_stop=stop.__bool__,
            )
        if stop:
            return None
        run_id = run_id or str(uuid.uuid4())
        with (
            structlog.contextvars.bound_contextvars(run_id=run_id),
            make_progress(show_progress, the_plan) as bars,
        ):
            executor = Executor(
                config,
                archive,
                run_id,
                stop=stop,
                batching=batching,
                progress=bars,
                repair=damage,
            )
            result = executor.apply(the_plan)
            result.users = users_changes
        return result


# --- daemon and schedules --------------------------------------------------------------------


@cli.command("daemon", epilog=EXIT_CODES)
@config_dir_option
@click.option("--once", is_flag=True, help="Wait for the next due time, run it, exit.")
def daemon_command(config_dir: Path, once: bool) -> int:
    """Run each profile with a schedule whenever its cron expression is due.

    Sleeps until the earliest next run time (local time), then plans and applies
    the due profiles one after another, exactly as `apply --profile NAME`. The
    configuration is read again before every run (and every minute): changes take
    effect without a restart; an invalid configuration is logged and the previous
    schedules stay. When another command holds the archive's lock, the occurrence is
    skipped (run_skipped). Logs run_started / run_finished with run_id, profile,
    status and exit_code. SIGTERM / Ctrl-C: exit 0 at once when idle; during a run
    the current batch commits, then exit 143 / 130. No scheduled profile: exit 10.
    With --once the exit code is that of the run.

    \b
    Examples:
      imapsync-decl daemon
      imapsync-decl daemon --once --config-dir /etc/imapsync-decl/profiles.d
    """
    from imapsync_decl.run.daemon import Daemon

    _valid_config(config_dir)
    _setup_logging()
    daemon = Daemon(config_dir)
    previous = {
        sig: signal.signal(sig, daemon.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        daemon.reload(first=True)
        structlog.get_logger(__name__).info(
            "daemon_started",
            config_dir=str(config_dir),
            pid=os.getpid(),
            schedules={name: s.text for name, s in daemon.schedules.items()},
        )
        return daemon.run(once=once)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        daemon.close()


@cli.group("schedule", epilog=EXIT_CODES)
def schedule_group() -> None:
    """The profiles' schedules, for the system's own scheduler (systemd, cron)."""


@schedule_group.command("export", epilog=EXIT_CODES)
@config_dir_option
@click.option("--systemd", "target", flag_value="systemd", help="systemd service + timer units.")
@click.option("--cron", "target", flag_value="cron", help="crontab lines.")
@click.option("--profile", "profile_name", metavar="NAME", help="Only this profile.")
def schedule_export(config_dir: Path, target: str | None, profile_name: str | None) -> int:
    """Print what makes the system run each scheduled profile: systemd units or crontab lines.

    Each runs `imapsync-decl apply --config-dir DIR --profile NAME` (not the daemon),
    with absolute paths, in the configuration directory's parent. --systemd prints,
    per profile, imapsync-decl-NAME.service (Type=oneshot) and imapsync-decl-NAME.timer
    (OnCalendar= converted from the cron expression, exactly: two OnCalendar= lines
    when both day fields are restricted, since cron then runs on either;
    Persistent=true). The service is sandboxed (UMask=0077, NoNewPrivileges,
    PrivateTmp, ProtectSystem=strict with ReadWritePaths= the archive and the log
    file's directory) and gets {credential: NAME} passwords by LoadCredential= and
    {env: NAME} ones from an EnvironmentFile= (mode 0600), never Environment=.
    --cron prints one crontab line per profile. Use this or `imapsync-decl daemon`,
    not both. A profile without schedule is left out (named with --profile: exit 10).

    \b
    Examples:
      imapsync-decl schedule export --systemd
      imapsync-decl schedule export --cron --profile staff >> mycrontab
    """
    from imapsync_decl.config.cron import ServiceSecrets, crontab_line, parse, systemd_units
    from imapsync_decl.config.documents import CredentialSecret, EnvSecret, secret_references

    if target is None:
        raise UsageError("give --systemd or --cron")
    config = _valid_config(config_dir)
    if profile_name is not None:
        _check_profiles(config, [profile_name])
    chosen = [item.doc for item in config.profiles if profile_name in (None, item.doc.name)]
    scheduled = [doc for doc in chosen if doc.schedule is not None]
    if not scheduled:
        which = f"profile {profile_name!r} has" if profile_name else "no profile has"
        raise UsageError(f"{which} no schedule" if profile_name else f"{which} a schedule")
    directory = Path(os.path.normpath(config_dir.absolute()))
    log_file = click.get_current_context().find_root().obj.get("log_file")
    log_options: list[str] = []
    read_write = [config.archive_path]
    if log_file is not None:
        log_file = Path(os.path.normpath(Path(log_file).absolute()))
        log_options = ["--log-file", str(log_file)]
        read_write.append(log_file.parent)
    for doc in scheduled:
        assert doc.schedule is not None
        references = secret_references(doc)
        if config.needs_directory(doc.name):
            references += [r for item in config.directories for r in secret_references(item.doc)]
        secrets = ServiceSecrets(
            credentials=_unique(
                r.credential for r in references if isinstance(r, CredentialSecret)
            ),
            environment=_unique(r.env for r in references if isinstance(r, EnvSecret)),
        )
        command = [
            *_own_command(),
            *log_options,
            "apply",
            "--config-dir",
            str(directory),
            "--profile",
            doc.name,
        ]
        schedule_ = parse(doc.schedule)
        if target == "cron":
            click.echo(crontab_line(schedule_, command, directory.parent))
            continue
        for file_name, text in systemd_units(
            doc.name, schedule_, command, directory.parent, read_write=read_write, secrets=secrets
        ).items():
            click.echo(f"# --- {file_name}")
            click.echo(text)
    return ExitCode.OK


def _unique(values: Iterable[str]) -> list[str]:
    """``values`` without repeats, in their first order."""
    return list(dict.fromkeys(values))


def _own_command() -> list[str]:
    """The absolute command that runs imapsync-decl, as installed."""
    script = Path(sys.executable).parent / "imapsync-decl"
    if script.is_file():
        return [str(Path(os.path.abspath(script)))]
    found = shutil.which("imapsync-decl")
    if found is not None:
        return [os.path.abspath(found)]
    return [os.path.abspath(sys.executable), "-m", "imapsync_decl"]


# --- archive ---------------------------------------------------------------------------------


@cli.group("archive", epilog=EXIT_CODES)
def archive_group() -> None:
    """Read the archive back: export messages, verify integrity."""


def archive_option(func: F) -> F:
    return click.option(
        "--archive",
        "archive_path",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="The archive directory. Default: the configuration's Archive document.",
    )(func)


def _existing_archive(config_dir: Path, archive_path: Path | None) -> Archive:
    root = archive_path if archive_path is not None else _valid_config(config_dir).archive_path
    index = open_index_if_exists(root)
    if index is None:
        raise UsageError(f"no archive at {root} (run `apply` first)")
    index.close()
    return Archive.open(root, read_only=True)


@archive_group.command("export", epilog=EXIT_CODES)
@config_dir_option
@archive_option
@click.option(
    "--format",
    "export_format",
    type=click.Choice(["eml", "mbox", "maildir"]),
    default="eml",
    show_default=True,
    help="eml: one file per message; mbox: one mboxrd file per folder; maildir: one "
    "maildir per folder.",
)
@click.option("--user", metavar="USER", help="Only this archive user.")
@click.option(
    "--folder", metavar="PATH", help="Only this folder path (e.g. INBOX or Projects/2024)."
)
@click.argument("destination", type=click.Path(path_type=Path, file_okay=False))
def archive_export(
    config_dir: Path,
    archive_path: Path | None,
    export_format: str,
    user: str | None,
    folder: str | None,
    destination: Path,
) -> int:
    """Export messages as files below DEST/<user>/<archive folder>/<folder path>.

    \b
    eml      <folder path>/<uidvalidity>-<uid>.eml, exactly the archived bytes
    mbox     <folder path>.mbox, mboxrd: "From MAILER-DAEMON <internal date, UTC>"
             lines, LF line endings, ">From " quoting: NOT byte-exact
    maildir  <folder path>/cur/<epoch>.<uidvalidity>_<uid>.imapsync-decl:2,<flags>,
             exactly the archived bytes, mtime = internal date, flags as
             D F P R S T (\\Draft \\Flagged $Forwarded \\Answered \\Seen \\Deleted)

    Folder levels are directories. Names that cannot be path components ('/',
    NUL, '.', '..') are escaped as %XX; a name over 255 bytes is cut and ends with
    %~ and 16 hex digits of its SHA-256. Every file is written under a temporary
    name and renamed. DEST and the directories below it must be real directories of
    the running user that group and others cannot write (exit 10 naming the path
    otherwise). A message whose blob is damaged or missing is left out and listed on
    stderr; the others are exported, then exit 12. An empty selection writes nothing.

    \b
    Examples:
      imapsync-decl archive export --format maildir out/
      imapsync-decl archive export --format mbox --user alice --folder INBOX out/
      imapsync-decl archive export --archive /srv/archive out/
    """
    with _existing_archive(config_dir, archive_path) as archive:
        exported = export_archive(archive, destination, export_format, user=user, folder=folder)
    if not exported.messages and not exported.failed:
        selection = ", ".join(
            f"{name} {value!r}" for name, value in (("user", user), ("folder", folder)) if value
        )
        click.echo(
            f"nothing to export: no archived messages{' for ' + selection if selection else ''};"
            " nothing written"
        )
        return ExitCode.OK
    files = "" if export_format != "mbox" else f" in {_plural(exported.files, 'file')}"
    click.echo(
        f"exported {_plural(exported.messages, 'message')}{files} ({exported.bytes} bytes,"
        f" {export_format}) to {destination}"
    )
    if exported.failed:
        for failed in exported.failed:
            click.echo(f"not exported: {failed}", err=True)
        click.echo(
            f"error: {_plural(len(exported.failed), 'message')} not exported: damaged or missing"
            " blobs; run `archive verify`, then `apply --repair`",
            err=True,
        )
        return ExitCode.INTEGRITY
    return ExitCode.OK


@archive_group.command("verify", epilog=EXIT_CODES)
@config_dir_option
@archive_option
@format_option
def archive_verify(config_dir: Path, archive_path: Path | None, output_format: str) -> int:
    """Re-hash every blob and check that every index row resolves to one.

    Exit 12 naming each damaged or missing blob. Orphan blobs (left by a crash,
    reused by the next apply) are reported but are no failure.
    """
    with _existing_archive(config_dir, archive_path) as archive:
        report = verify(archive.blobs, archive.index)
    if output_format == "json":
        _print_json(
            {
                "ok": report.ok,
                "checked": report.checked,
                "damaged": list(report.damaged),
                "missing": list(report.missing),
                "orphans": list(report.orphans),
            }
        )
    else:
        for sha in report.damaged:
            click.echo(f"damaged blob: {sha}", err=True)
        for sha in report.missing:
            click.echo(f"missing blob: {sha}", err=True)
        click.echo(
            f"checked {_plural(report.checked, 'blob')}: {len(report.damaged)} damaged, "
            f"{len(report.missing)} missing, {len(report.orphans)} orphaned"
        )
        if not report.ok:
            click.echo(
                "run `apply --repair` to fetch their messages again from the server", err=True
            )
    return ExitCode.OK if report.ok else ExitCode.INTEGRITY


@archive_group.command("rebuild-index", epilog=EXIT_CODES)
@config_dir_option
@archive_option
@format_option
@click.option("--force", is_flag=True, help="Rebuild even when the index is healthy.")
def archive_rebuild_index(
    config_dir: Path, archive_path: Path | None, output_format: str, force: bool
) -> int:
    """Rebuild a damaged or lost index from the archive's journal.

    Every user, mailbox, folder, message and placement (and the runs) is restored
    from journal/; torn last records of a crash are ignored. The old database is
    kept as index.sqlite.damaged-<time>. Checkpoints are not restored: the next
    apply searches every folder once, and archives nothing twice. A healthy index
    is left alone unless --force (exit 10). Takes the archive's lock.

    \b
    Examples:
      imapsync-decl archive rebuild-index
      imapsync-decl archive rebuild-index --archive /srv/archive
    """
    from imapsync_decl.store.blobs import BlobStore
    from imapsync_decl.store.rebuild import rebuild_index

    root = archive_path if archive_path is not None else _valid_config(config_dir).archive_path
    if not root.is_dir():
        raise UsageError(f"no archive at {root}")
    with ArchiveLock(root, "imapsync-decl archive rebuild-index"):
        report = rebuild_index(root / "index.sqlite", BlobStore(root), force=force)
    restored = {
        kind: report.restored.get(kind, 0)
        for kind in ("user", "mailbox", "folder", "message", "place", "move", "run")
    }
    left_out = {
        kind: report.restored.get(kind, 0)
        for kind in ("missing_blobs", "placements_without_blob", "conflicts")
    }
    if output_format == "json":
        _print_json(
            {
                "index": str(report.index),
                "kept_as": str(report.kept_as) if report.kept_as else None,
                "segments": report.read.segments,
                "records": report.read.records,
                "torn": report.read.torn,
                "damaged": report.read.damaged,
                "restored": restored,
                "left_out": left_out,
            }
        )
    else:
        click.echo(
            f"rebuilt {report.index} from {_plural(report.read.records, 'journal record')}"
            f" in {_plural(report.read.segments, 'segment')}: {restored['place']} placements,"
            f" {restored['message']} messages, {restored['run']} runs"
            + (f"; the old index is kept as {report.kept_as}" if report.kept_as else "")
        )
        if report.read.torn:
            click.echo(f"ignored {report.read.torn} torn record(s) of an interrupted write")
        for kind, count in (("damaged journal record", report.read.damaged), *left_out.items()):
            if count:
                click.echo(f"warning: left out {count}: {kind}", err=True)
    problems = report.read.damaged + sum(left_out.values())
    return ExitCode.INTEGRITY if problems else ExitCode.OK


@archive_group.command("stats", epilog=EXIT_CODES)
@config_dir_option
@archive_option
@format_option
def archive_stats(config_dir: Path, archive_path: Path | None, output_format: str) -> int:
    """Show what the archive holds and what deduplication and compression save.

    Users, mailboxes, folders, messages (distinct contents, one blob each) and
    placements (copies in folders); bytes in folders (every placement), original
    (every distinct message) and stored (compressed, on disk); the ratios
    dedup = in folders / original, compression = original / stored and overall =
    in folders / stored; and per user its mailboxes, folders, messages, placements
    and bytes. Only the index is read.

    \b
    Examples:
      imapsync-decl archive stats
      imapsync-decl archive stats --archive /srv/archive --format json
    """
    from imapsync_decl.store.stats import gather_stats, render_stats

    with _existing_archive(config_dir, archive_path) as archive:
        stats = gather_stats(archive.index)
    if output_format == "json":
        _print_json(stats.to_json())
    else:
        click.echo(render_stats(stats))
    return ExitCode.OK


# --- runs ------------------------------------------------------------------------------------


@cli.command("runs", epilog=EXIT_CODES)
@config_dir_option
@archive_option
@format_option
@click.option("--last", is_flag=True, help="Show the protocol of the newest run.")
@click.argument("run_id", required=False, metavar="[RUN_ID]")
def runs_command(
    config_dir: Path,
    archive_path: Path | None,
    output_format: str,
    last: bool,
    run_id: str | None,
) -> int:
    """List past runs, newest first, or show one run's whole protocol.

    Without arguments: one line per run with its id, start, end, status and
    totals (archived, already present, failed mailboxes). With --last or a
    RUN_ID (a whole id, or a prefix naming one run): the run's protocol, its
    start and end, status, warnings, per mailbox and folder what was archived,
    already present, vanished or skipped, and every error. --format json prints
    the stored protocol document (the one `apply --format json` printed). An
    unknown RUN_ID exits 10. Passwords are never part of a protocol.

    \b
    Examples:
      imapsync-decl runs
      imapsync-decl runs --last
      imapsync-decl runs 3f2a9c1e --format json
      imapsync-decl runs --archive /srv/archive --format json
    """
    from imapsync_decl.store import runs as protocol

    if last and run_id is not None:
        raise UsageError("give either --last or a RUN_ID, not both")
    root = archive_path if archive_path is not None else _valid_config(config_dir).archive_path
    index = open_index_if_exists(root)
    if index is None:
        if last or run_id is not None:
            raise protocol.UnknownRun(f"no archive at {root}, so no runs (run `apply` first)")
        if output_format == "json":
            _print_json([])
        else:
            click.echo(f"no runs yet (no archive at {root})")
        return ExitCode.OK
    with index:
        if not last and run_id is None:
            listed = index.list_runs()
            if output_format == "json":
                _print_json(protocol.list_document(listed))
            else:
                click.echo(protocol.render_run_list(listed))
            return ExitCode.OK
        run = protocol.find_run(index, run_id)
    if output_format == "json":
        _print_json(protocol.protocol_document(run))
    else:
        click.echo(protocol.render_run(run))
    return ExitCode.OK


# --- users -----------------------------------------------------------------------------------


@cli.group("users", epilog=EXIT_CODES)
def users_group() -> None:
    """The archive's user list: Users documents, directory users, users of CSV profiles."""


@users_group.command("sync", epilog=EXIT_CODES)
@config_dir_option
@format_option
def users_sync(config_dir: Path, output_format: str) -> int:
    """Read every directory of the Users documents and bring the user list up to date.

    Adds new users, updates changed ones, and marks users that left the directory as
    gone (their archived mail stays). Takes the archive's lock. Exit 3 when a
    directory cannot be read (nothing is changed for it).
    """
    config = _valid_config(config_dir)
    if not config.directories:
        raise UsageError("no Users document has a directory to synchronise with")
    _setup_logging()
    with open_for_writing(config.archive_path, "imapsync-decl users sync") as archive:
        changes, read = userlist.sync(config, archive.index)
    if output_format == "json":
        _print_json({"changes": changes, "warnings": read.warnings, "error": read.error})
    else:
        for warning in read.warnings:
            click.echo(f"warning: {warning}", err=True)
        for directory, found in changes.items():
            click.echo(f"{directory}:")
            for kind in ("added", "updated", "returned", "gone"):
                for name in found[kind]:
                    click.echo(f"  {kind:8} {name}")
            if not any(found.values()):
                click.echo("  no changes")
    if read.error is not None:
        click.echo(f"error: {read.error}", err=True)
        return ExitCode.PARTIAL
    return ExitCode.OK


@users_group.command("list", epilog=EXIT_CODES)
@config_dir_option
@format_option
def users_list(config_dir: Path, output_format: str) -> int:
    """List the archive's users: NAME, E-MAIL, ALIASES, DISPLAY NAME, SOURCE, STATUS.

    SOURCE is document (a Users document), directory (synchronised from a directory;
    STATUS gone once it left it), csv or single (created by such a profile's apply).
    """
    config = _valid_config(config_dir)
    rows = [u.to_json() for u in config.listed]
    known = {row["name"] for row in rows}
    index = open_index_if_exists(config.archive_path)
    if index is not None:
        try:
            for record in index.list_users():
                if record.source in ("csv", "single") and record.name not in known:
                    rows.append(
                        {
                            "name": record.name,
                            "email": record.email,
                            "aliases": list(record.aliases),
                            "display_name": record.display_name,
                            "source": record.source,
                            "status": record.status,
                        }
                    )
        finally:
            index.close()
    rows.sort(key=lambda row: str(row["name"]).casefold())
    if output_format == "json":
        _print_json(rows)
        return ExitCode.OK
    header = ("NAME", "E-MAIL", "ALIASES", "DISPLAY NAME", "SOURCE", "STATUS")
    table = [header] + [
        (
            str(r["name"]),
            r["email"] or "-",
            ",".join(r["aliases"]) or "-",
            r["display_name"] or "-",
            str(r["source"]),
            str(r["status"]),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    click.echo(_plural(len(rows), "user"))
    return ExitCode.OK


# --- helpers ---------------------------------------------------------------------------------


def _valid_config(config_dir: Path) -> Config:
    config = load_with_index_users(config_dir, str(config_dir))
    if not config.ok:
        raise ConfigError(config.problems)
    _print_problems(config.warnings)
    return config


def _check_output(path: Path, what: str) -> None:
    """Refuse an output path of the command line before any work (exit 10, naming it)."""
    try:
        check_output_path(path)
    except UnsafePath as exc:
        raise UsageError(f"cannot write the {what} {exc}") from None


def _print_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        click.echo(str(problem), err=True)


def _problem_json(problem: Problem) -> dict[str, Any]:
    return {
        "path": problem.path,
        "line": problem.line,
        "col": problem.col,
        "field": problem.field,
        "message": problem.message,
        "severity": problem.severity.value,
    }


def _print_json(body: Any) -> None:
    click.echo(json.dumps(body, indent=2, ensure_ascii=False))


def _plural(count: int, word: str) -> str:
    if count == 1:
        return f"1 {word}"
    return f"{count} {'mailboxes' if word == 'mailbox' else word + 's'}"


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``imapsync-decl`` command; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if not args:
            click.echo(cli.get_help(click.Context(cli, info_name="imapsync-decl")), err=True)
            return ExitCode.CONFIG
        result = cli.main(args=args, prog_name="imapsync-decl", standalone_mode=False)
        return int(result) if isinstance(result, int) else ExitCode.OK
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        exc.show()
        return ExitCode.CONFIG
    except click.ClickException as exc:
        exc.show()
        return ExitCode.CONFIG
    except (click.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        return ExitCode.INTERRUPTED
    except Terminated:
        click.echo("terminated", err=True)
        return ExitCode.TERMINATED
    except ConfigError as exc:
        _print_problems(exc.problems)
        return exc.exit_code
    except ImapsyncError as exc:
        click.echo(f"error: {exc.message}", err=True)
        return exc.exit_code
    except Exception:
        click.echo("internal error (a bug in imapsync-decl):", err=True)
        click.echo(traceback.format_exc(), err=True)
        return ExitCode.INTERNAL
    finally:
        signal.signal(signal.SIGTERM, previous)
