"""The ``serve`` command: the web access of archive users (see ``imapsync_decl.web``)."""

from __future__ import annotations

from pathlib import Path

import click

from imapsync_decl.cli.options import EXIT_CODES, config_dir_option, setup_logging, valid_config
from imapsync_decl.errors import ExitCode


@click.command("serve", epilog=EXIT_CODES)
@config_dir_option
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Listen here instead of the Web document's address (default 127.0.0.1:8462).",
)
def serve_command(config_dir: Path, listen: str | None) -> int:
    """Serve the web access to the archive: archive users sign in, browse, search,
    read, download and restore their own mail; administrators reach every archive.

    The Web document (kind: Web) says where and how: listen address and port, TLS
    certificate and key, or behind_proxy with the trusted proxies, session lifetime,
    administrators, directory sign-in. Without one: http://127.0.0.1:8462. Plain HTTP
    is refused on an address that is not loopback (exit 10). Passwords are set with
    `users passwd NAME`. Logs are JSON lines on stderr; Ctrl-C stops it (exit 130).

    \b
    Examples:
      imapsync-decl serve
      imapsync-decl serve --listen 127.0.0.1:9000
    """
    from imapsync_decl.web.serve import serve
    from imapsync_decl.web.settings import served

    config = valid_config(config_dir)
    settings = served(config.web, listen)
    setup_logging()

    def started(url: str) -> None:
        click.echo(f"serving the archive {config.archive_path} on {url}", err=True)

    serve(config, settings, started=started)
    return ExitCode.OK
