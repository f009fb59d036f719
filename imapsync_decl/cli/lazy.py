"""A command group whose commands are imported only when they run.

Each command names its module and attribute (``"imapsync_decl.cli.search:archive_search"``);
``imapsync-decl --version`` and ``archive search`` then import only what they use,
not pydantic, structlog and the IMAP client of every other command. ``--help``
lists every command (and so imports them all).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click

from imapsync_decl.run.lean_start import load_structlog_lean


class LazyGroup(click.Group):
    """A ``click.Group`` with a table of ``name -> "module:attribute"`` commands."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands and cmd_name not in self.commands:
            module_name, _, attribute = self.lazy_commands[cmd_name].partition(":")
            load_structlog_lean()
            command = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(command, click.Command):  # pragma: no cover - a wrong table entry
                raise TypeError(f"{self.lazy_commands[cmd_name]} is not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)
