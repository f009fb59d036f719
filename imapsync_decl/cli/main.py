"""The command line's root: global options, the command groups, and ``main()``.

stdout carries results (summaries, tables, JSON documents); stderr carries
problems and logs. Every error that ends a command is an ``ImapsyncError`` with
its own exit code; only a bug ends with a traceback (exit 1). Each command lives
in the module of its group and calls one function of the layers below.
"""

from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import click

from imapsync_decl import __version__
from imapsync_decl.cli.lazy import LazyGroup
from imapsync_decl.cli.options import EXIT_CODES, check_output, print_problems
from imapsync_decl.errors import ConfigError, ExitCode, ImapsyncError

__all__ = ["EXIT_CODES", "cli", "main"]

# Each command is imported when it runs (``cli.lazy``): a command pays only for its own imports.
COMMANDS = {
    "validate": "imapsync_decl.cli.config_commands:validate",
    "schema": "imapsync_decl.cli.config_commands:schema",
    "mailboxes": "imapsync_decl.cli.config_commands:mailboxes",
    "plan": "imapsync_decl.cli.plan_apply:plan_command",
    "apply": "imapsync_decl.cli.plan_apply:apply",
    "daemon": "imapsync_decl.cli.schedule:daemon_command",
    "schedule": "imapsync_decl.cli.schedule:schedule_group",
    "runs": "imapsync_decl.cli.archive:runs_command",
    "users": "imapsync_decl.cli.users:users_group",
    "access-log": "imapsync_decl.cli.access_log:access_log_command",
    "serve": "imapsync_decl.cli.serve:serve_command",
}
ARCHIVE_COMMANDS = {
    "export": "imapsync_decl.cli.archive:archive_export",
    "verify": "imapsync_decl.cli.archive:archive_verify",
    "rebuild-index": "imapsync_decl.cli.archive:archive_rebuild_index",
    "stats": "imapsync_decl.cli.archive:archive_stats",
    "search": "imapsync_decl.cli.search:archive_search",
    "show": "imapsync_decl.cli.search:archive_show",
    "rebuild-search": "imapsync_decl.cli.search:archive_rebuild_search",
    "restore": "imapsync_decl.cli.restore:restore_command",
}


class Terminated(Exception):
    """SIGTERM arrived."""


@click.group(
    cls=LazyGroup,
    lazy_commands=COMMANDS,
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
        check_output(log_file, "log file")
    ctx.obj = {
        "log_format": log_format,
        "log_file": log_file,
        "log_level": log_level,
        "log_level_given": ctx.get_parameter_source("log_level")
        is not click.core.ParameterSource.DEFAULT,
    }


@cli.group("archive", cls=LazyGroup, lazy_commands=ARCHIVE_COMMANDS, epilog=EXIT_CODES)
def archive_group() -> None:
    """Read the archive back: search, show, export and restore messages, verify integrity."""


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
        print_problems(exc.problems)
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
