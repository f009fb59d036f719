"""Process start-up without unused weight: structlog loads without rich, asyncio on first use.

structlog imports two things that no process of this program uses while it logs: the
console library rich, when it is installed, only to pretty-print tracebacks (the log
lines here carry exceptions as plain text, ``log.py`` formats them before any renderer),
and asyncio, only for its ``a``-prefixed logging methods. Loading them would cost every
process that logs (``apply`` and each of its mailbox workers) about 0.1 s and 4.5 MB for
rich and tens of ms and 1.4 MB for asyncio, and the workers count once per connection.

:func:`load_structlog_lean` installs a finder that, when structlog is first imported,
loads it with rich hidden and with a stand-in for asyncio that imports the real one on
its first attribute access. Both are in place only while structlog loads: anything
imported later gets the real modules (``serve``'s web server runs on asyncio, the
progress bars on a terminal are drawn by rich). A finder rather than an import, so
that commands that never log (``archive search``) never load structlog at all.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__ = ["load_structlog_lean"]


def _stand_in(name: str) -> ModuleType:
    """A module that imports the real module ``name`` at its first attribute access and
    hands that on (PEP 562's module ``__getattr__``)."""
    stand_in = ModuleType(name, f"Stands in for {name}, imported on first use.")

    def __getattr__(attribute: str) -> object:
        real = importlib.import_module(name)
        if real is stand_in:  # asked for while it still stands in: no module to ask yet
            raise AttributeError(f"module {name!r} has no attribute {attribute!r} yet")
        return getattr(real, attribute)

    stand_in.__getattr__ = __getattr__  # type: ignore[method-assign]
    return stand_in


class _LeanStructlog(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Loads structlog, the first time it is imported, without rich and with asyncio deferred."""

    def __init__(self) -> None:
        self._loader: importlib.abc.Loader | None = None

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "structlog":
            return None
        sys.meta_path.remove(self)  # once: structlog's own modules load as usual
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        assert self._loader is not None
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        assert self._loader is not None
        # Only while structlog loads: what it binds is the stand-in, anything imported
        # later gets the real asyncio (or rich).
        standing_in: dict[str, ModuleType | None] = {}
        if "asyncio" not in sys.modules:
            standing_in["asyncio"] = _stand_in("asyncio")
        if "rich" not in sys.modules:
            standing_in["rich"] = None  # None: "not installed"
        sys.modules.update(standing_in)  # type: ignore[arg-type]  # None: see above
        try:
            self._loader.exec_module(module)
        finally:
            for name in standing_in:
                del sys.modules[name]


def load_structlog_lean() -> None:
    """Have structlog, when it is first imported, load without rich and asyncio."""
    if "structlog" in sys.modules or any(
        isinstance(finder, _LeanStructlog) for finder in sys.meta_path
    ):
        return
    sys.meta_path.insert(0, _LeanStructlog())
