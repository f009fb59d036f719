"""What the commands share: the exit-code epilog, common options, and the plumbing around them.

Options (``--config-dir``, ``--format``, ``--profile``, ``--archive``), loading a
valid configuration, refusing an unusable output path, setting up the logs as the
global options say, catching Ctrl-C and SIGTERM around a run, and printing problems
and JSON documents.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from imapsync_decl.errors import ConfigError, Problem, UsageError
from imapsync_decl.fs import UnsafePath, check_output_path

if TYPE_CHECKING:
    from imapsync_decl.config.resolve import Config
    from imapsync_decl.run.executor import StopRequested

# The layers below are imported where they are used, not here: every command imports this
# module, and `archive search` or `--version` should not pay for pydantic or structlog.

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


def profiles_option(func: F) -> F:
    return click.option(
        "--profile",
        "profile_names",
        multiple=True,
        metavar="NAME",
        help="Only this profile (repeatable). Default: every profile.",
    )(func)


def archive_option(func: F) -> F:
    return click.option(
        "--archive",
        "archive_path",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="The archive directory. Default: the configuration's Archive document.",
    )(func)


def setup_logging(quiet_console: bool = False) -> None:
    """Configure the logs as the global options say (for commands that log).

    ``quiet_console``: progress bars are shown, so on a console only warnings and
    errors are logged, unless --log-level was given.
    """
    from imapsync_decl import log

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


@contextmanager
def catching_stop(stop: StopRequested) -> Iterator[None]:
    """While the block runs, Ctrl-C and SIGTERM set ``stop`` instead of ending the
    command; the previous handlers come back after it."""
    previous = {sig: signal.signal(sig, stop.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def valid_config(config_dir: Path) -> Config:
    """The configuration, with its warnings printed; invalid: ConfigError (exit 10)."""
    from imapsync_decl.sources.users import load_with_index_users

    config = load_with_index_users(config_dir, str(config_dir))
    if not config.ok:
        raise ConfigError(config.problems)
    print_problems(config.warnings)
    return config


def check_profiles(config: Config, names: Sequence[str]) -> None:
    known = [item.doc.name for item in config.profiles]
    for name in names:
        if name not in known:
            raise UsageError(f"no profile named {name!r} (profiles: {', '.join(known) or 'none'})")


def check_output(path: Path, what: str) -> None:
    """Refuse an output path of the command line before any work (exit 10, naming it)."""
    try:
        check_output_path(path)
    except UnsafePath as exc:
        raise UsageError(f"cannot write the {what} {exc}") from None


def print_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        click.echo(str(problem), err=True)


def print_json(body: Any) -> None:
    click.echo(json.dumps(body, indent=2, ensure_ascii=False))
