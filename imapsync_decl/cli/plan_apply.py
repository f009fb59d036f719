"""The commands ``plan`` and ``apply``: show what would be archived, and archive it.

Both call :mod:`imapsync_decl.run.service`; here they parse the options, catch
Ctrl-C and SIGTERM around the run, save or read the plan file, and render.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from imapsync_decl.cli.markdown import render_plan_markdown
from imapsync_decl.cli.options import (
    EXIT_CODES,
    catching_stop,
    check_output,
    check_profiles,
    config_dir_option,
    format_option,
    print_json,
    profiles_option,
    setup_logging,
    valid_config,
)
from imapsync_decl.cli.progress import terminal_progress
from imapsync_decl.cli.render import render_plan, render_result
from imapsync_decl.errors import ExitCode, UsageError
from imapsync_decl.plan.saved import read_plan, write_plan
from imapsync_decl.run.executor import Batching, StopRequested
from imapsync_decl.run.service import apply_profiles, plan_profiles


@click.command("plan", epilog=EXIT_CODES)
@config_dir_option
@profiles_option
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="text for humans, json for programs (one JSON document on stdout), markdown for a "
    "merge-request comment (a summary: only folders with work, at most 100 rows).",
)
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
    config = valid_config(config_dir)
    check_profiles(config, profile_names)
    if out_file is not None:
        check_output(out_file, "plan file")
    setup_logging()
    stop = StopRequested()
    the_plan = plan_profiles(
        config_dir,
        config,
        profile_names,
        should_stop=stop.__bool__,
        while_reading_servers=functools.partial(catching_stop, stop),
    )
    if stop:
        click.echo(
            "interrupted" if stop.exit_code == ExitCode.INTERRUPTED else "terminated", err=True
        )
        return stop.exit_code
    if out_file is not None:
        write_plan(out_file, the_plan)
    if output_format == "json":
        print_json(the_plan.to_json())
    elif output_format == "markdown":
        click.echo(render_plan_markdown(the_plan), nl=False)
    else:
        click.echo(render_plan(the_plan))
    if the_plan.has_errors:
        return ExitCode.PARTIAL
    if detailed_exitcode and the_plan.has_changes:
        return ExitCode.CHANGES_PENDING
    return ExitCode.OK


@click.command(epilog=EXIT_CODES)
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
@click.option(
    "--metrics-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="After the run, write Prometheus metrics (text format, for the node exporter's "
    "textfile collector) to this file, atomically, mode 0644. Wins over the Archive "
    "document's metrics_file.",
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
    metrics_file: Path | None,
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
    config = valid_config(config_dir)
    check_profiles(config, profile_names)
    if plan_file is not None and profile_names:
        raise UsageError("--profile does not go with a plan file: the plan says what is applied")
    if plan_file is not None and repair:
        raise UsageError("--repair does not go with a plan file: it plans afresh")
    if metrics_file is not None:
        check_output(metrics_file, "metrics file")
    saved = read_plan(plan_file) if plan_file is not None else None
    show = progress if progress is not None else sys.stderr.isatty()
    setup_logging(quiet_console=show)
    stop = StopRequested()
    with catching_stop(stop):
        result = apply_profiles(
            config_dir,
            config,
            profile_names,
            saved,
            stop=stop,
            batching=Batching(batch_messages, batch_bytes),
            progress=terminal_progress(show),
            repair=repair,
            metrics_file=metrics_file,
        )
    if result is None:
        return stop.exit_code
    if output_format == "json":
        print_json(result.to_json())
    else:
        click.echo(render_result(result))
    return result.exit_code
