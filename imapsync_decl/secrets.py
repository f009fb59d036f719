"""A secret value that never shows itself in repr, str, logs or JSON."""

from __future__ import annotations

from typing import Final

_MASK: Final = "********"


class Secret:
    """Holds a password. Only :meth:`reveal` gives the value back.

    ``repr`` and ``str`` show a mask, so a Secret that ends up in a log line, an
    exception message or a plan file gives nothing away.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({_MASK!r})"

    def __str__(self) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)
