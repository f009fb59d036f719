"""The commands that read only the configuration: ``validate``, ``schema``, ``mailboxes``.

None of them contacts a server or touches the archive (``validate`` and
``mailboxes`` read the user list the index keeps, when there is one).
"""

from __future__ import annotations

from pathlib import Path

import click

from imapsync_decl.cli.options import (
    EXIT_CODES,
    check_profiles,
    config_dir_option,
    format_option,
    print_json,
    print_problems,
    valid_config,
)
from imapsync_decl.cli.render import (
    mailboxes_json,
    render_mailboxes,
    render_validate,
    validate_json,
)
from imapsync_decl.config.schema import document_schema, kind_schema, schema_files
from imapsync_decl.errors import ExitCode
from imapsync_decl.sources.users import load_with_index_users


@click.command(epilog=EXIT_CODES)
@config_dir_option
@format_option
def validate(config_dir: Path, output_format: str) -> int:
    """Check every document and every CSV file it names; report all problems at once.

    Errors and warnings go to stderr as PATH:LINE:COL: FIELD: MESSAGE. No server
    is contacted. Exit 0 when valid (warnings allowed), 10 when not.
    """
    config = load_with_index_users(config_dir, str(config_dir))
    print_problems(config.problems)
    if output_format == "json":
        print_json(validate_json(config_dir, config))
    else:
        click.echo(render_validate(config_dir, config))
    return ExitCode.OK if config.ok else ExitCode.CONFIG


@click.command(epilog=EXIT_CODES)
@click.option(
    "--kind",
    type=click.Choice(["document", "profile", "users", "archive", "web"]),
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
    print_json(body)
    return ExitCode.OK


@click.command(epilog=EXIT_CODES)
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
    config = valid_config(config_dir)
    if profile_name is not None:
        check_profiles(config, [profile_name])
    if output_format == "json":
        print_json(mailboxes_json(config, profile_name))
    else:
        click.echo(render_mailboxes(config, profile_name))
    return ExitCode.OK
