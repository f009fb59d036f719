"""A command group whose commands are imported only when they run.

Each command names its module and attribute (``"imapsync_decl.cli.search:archive_search"``);
``imapsync-decl --version`` and ``archive search`` then import only what they use,
not pydantic, structlog and the IMAP client of every other command. ``--help``
lists every command (and so imports them all).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Mapping, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

import click


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
            load_structlog_without_rich()
            command = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(command, click.Command):  # pragma: no cover - a wrong table entry
                raise TypeError(f"{self.lazy_commands[cmd_name]} is not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


class _StructlogWithoutRich(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Loads structlog, the first time it is imported, with the console library rich hidden.

    structlog imports rich, when it is installed, only to pretty-print tracebacks on a
    console; this program's log lines carry exceptions as plain text (``log.py`` formats
    them before any renderer), so that import would cost about 0.1 s and 4.5 MB at every
    start of a command that logs. rich stays importable afterwards: the progress bars on a
    terminal (``cli/progress.py``) import it when they are drawn. A finder rather than an
    import here, so that commands that never log (``archive search``) never load structlog.
    """

    def __init__(self) -> None:
        self._loader: importlib.abc.Loader | None = None

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "structlog":
            return None
        sys.meta_path.remove(self)  # once: structlog's own modules load as usual
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or "rich" in sys.modules:
            return spec
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        assert self._loader is not None
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        assert self._loader is not None
        sys.modules["rich"] = None  # type: ignore[assignment]  # None: "not installed"
        try:
            self._loader.exec_module(module)
        finally:
            del sys.modules["rich"]


def load_structlog_without_rich() -> None:
    """Have structlog, when a command first imports it, load without rich."""
    if "structlog" in sys.modules or any(
        isinstance(finder, _StructlogWithoutRich) for finder in sys.meta_path
    ):
        return
    sys.meta_path.insert(0, _StructlogWithoutRich())
