"""Read a configuration directory into validated documents, with the place of every problem.

YAML and JSON are parsed with ruamel.yaml, which keeps the line and column of
every key and item; pydantic's error locations are mapped back onto them, so a
problem reads ``profiles.d/staff.yaml:14:7: server.port: ...``. Nothing here
raises on bad input: every problem of every file is collected and returned.

YAML aliases are bounded (:class:`_BoundedComposer`): a document whose aliases
would expand it by more than :data:`MAX_ALIAS_NODES` nodes (a "billion laughs"
document), or an alias inside its own anchor, is refused at the alias.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import pydantic
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer, ComposerError, MaxDepthExceededError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, MappingStartEvent, SequenceStartEvent
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from imapsync_decl.config.documents import (
    DOCUMENT_KINDS,
    ENV_NAME_PATTERN,
    NAME_PATTERN,
    TAG_MARK,
    ArchiveDocument,
    Document,
    Profile,
    Users,
    WebDocument,
)
from imapsync_decl.errors import Problem, Severity

DOCUMENT_SUFFIXES = (".yaml", ".yml", ".json")

MAX_ALIAS_NODES = 10_000
"""How many nodes the aliases of one document may add to it, all together."""
MAX_DEPTH = 100
"""How deeply collections may nest in a document (deeper ones are refused)."""

PATTERN_MESSAGES = {
    NAME_PATTERN: "use letters, digits, '.', '_' and '-', starting with a letter or digit",
    ENV_NAME_PATTERN: "not an environment variable name",
}

Loc = tuple[str | int, ...]
Position = tuple[int, int]  # 1-based line and column

D = TypeVar("D", Profile, Users, ArchiveDocument, WebDocument)


@dataclass(frozen=True)
class Origin:
    """Where a document came from, and the place of each of its keys and values."""

    path: Path  # the file, as found
    display: str  # how problems name the file
    index: int  # 0-based number of the document in its file
    start: Position
    values: Mapping[Loc, Position] = field(repr=False)
    keys: Mapping[Loc, Position] = field(repr=False)

    @property
    def base_dir(self) -> Path:
        """Relative paths in the document resolve against this directory."""
        return self.path.parent

    def position(self, loc: Loc) -> Position:
        """The place of the value at ``loc``, or of its nearest enclosing value."""
        loc = tuple(loc)
        while loc:
            if loc in self.values:
                return self.values[loc]
            loc = loc[:-1]
        return self.start

    def key_position(self, loc: Loc) -> Position:
        """The place of the key that names ``loc`` (falls back to the value's place)."""
        return self.keys.get(tuple(loc)) or self.position(loc)

    def problem(
        self,
        loc: Loc,
        message: str,
        severity: Severity = Severity.ERROR,
        *,
        at_key: bool = False,
    ) -> Problem:
        line, col = self.key_position(loc) if at_key else self.position(loc)
        return Problem(self.display, line, col, field_path(loc) or None, message, severity)


@dataclass(frozen=True)
class Loaded(Generic[D]):
    """A validated document and its origin."""

    doc: D
    origin: Origin


@dataclass(frozen=True)
class LoadResult:
    profiles: tuple[Loaded[Profile], ...]
    users: tuple[Loaded[Users], ...]
    archives: tuple[Loaded[ArchiveDocument], ...]
    problems: tuple[Problem, ...]
    files: tuple[Path, ...]
    # CSV files named by profiles that failed validation: still checked, so that one
    # run of `validate` reports the problems of the CSV file too.
    orphan_csv_files: tuple[tuple[str, Origin], ...] = ()
    webs: tuple[Loaded[WebDocument], ...] = ()

    @property
    def ok(self) -> bool:
        return not any(p.is_error for p in self.problems)


def field_path(loc: Loc) -> str:
    """``('source', 'master', 'users', 'names', 2)`` -> ``source.master.users.names[2]``.

    Union tags (names containing ':') are not fields and are left out.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif TAG_MARK in part:
            continue
        else:
            out += f".{part}" if out else part
    return out


def find_documents(config_dir: Path) -> list[Path]:
    return sorted(
        p for p in config_dir.iterdir() if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES
    )


def load_config_dir(config_dir: Path, display_dir: str | None = None) -> LoadResult:
    """Load and validate every document in ``config_dir``; never raises on bad input."""
    display_dir = str(config_dir) if display_dir is None else display_dir
    problems: list[Problem] = []
    profiles: list[Loaded[Profile]] = []
    users: list[Loaded[Users]] = []
    archives: list[Loaded[ArchiveDocument]] = []
    webs: list[Loaded[WebDocument]] = []
    orphan_csv: list[tuple[str, Origin]] = []
    if not config_dir.is_dir():
        problems.append(Problem(display_dir, None, None, None, "configuration directory not found"))
        return LoadResult((), (), (), tuple(problems), ())
    files = find_documents(config_dir)
    if not files:
        problems.append(
            Problem(display_dir, None, None, None, "no documents (*.yaml, *.yml, *.json) found")
        )
    for path in files:
        display = f"{display_dir.rstrip('/')}/{path.name}"
        for raw, origin in _read_documents(path, display, problems):
            loaded = _validate_document(raw, origin, problems)
            if loaded is None and (csv_file := _csv_file_of(raw)) is not None:
                orphan_csv.append((csv_file, origin))
            if isinstance(loaded, Profile):
                profiles.append(Loaded(loaded, origin))
            elif isinstance(loaded, Users):
                users.append(Loaded(loaded, origin))
            elif isinstance(loaded, ArchiveDocument):
                archives.append(Loaded(loaded, origin))
            elif isinstance(loaded, WebDocument):
                webs.append(Loaded(loaded, origin))
    return LoadResult(
        tuple(profiles),
        tuple(users),
        tuple(archives),
        tuple(problems),
        tuple(files),
        tuple(orphan_csv),
        tuple(webs),
    )


def _csv_file_of(raw: Any) -> str | None:
    """``source.csv.file`` of a raw Profile document, if it names one."""
    try:
        value = raw["source"]["csv"]["file"] if raw.get("kind") == "Profile" else None
    except (AttributeError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) and value else None


# --- parsing ---------------------------------------------------------------------------------


def _read_documents(
    path: Path, display: str, problems: list[Problem]
) -> Iterator[tuple[Any, Origin]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.append(Problem(display, None, None, None, f"cannot read: {exc.strerror}"))
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad_line = data[: exc.start].count(b"\n") + 1
        problems.append(Problem(display, bad_line, None, None, "not valid UTF-8"))
        return
    if path.suffix.lower() == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(Problem(display, exc.lineno, exc.colno, None, f"JSON: {exc.msg}"))
            return
        except RecursionError:
            problems.append(Problem(display, None, None, None, "JSON: nested too deeply"))
            return
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.Composer = _BoundedComposer
    yaml.max_depth = MAX_DEPTH
    try:
        nodes = list(yaml.load_all(text))
    except MaxDepthExceededError as exc:
        mark = exc.problem_mark
        problems.append(
            Problem(
                display,
                mark.line + 1 if mark is not None else None,
                mark.column + 1 if mark is not None else None,
                None,
                f"YAML: collections nested more than {MAX_DEPTH} levels deep",
            )
        )
        return
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line: int | None = mark.line + 1 if mark is not None else None
        col: int | None = mark.column + 1 if mark is not None else None
        message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        problems.append(Problem(display, line, col, None, f"YAML: {message or exc}"))
        return
    except YAMLError as exc:
        problems.append(Problem(display, None, None, None, f"YAML: {exc}"))
        return
    for index, node in enumerate(nodes):
        if node is None:  # an empty document, e.g. after a trailing '---'
            continue
        values: dict[Loc, Position] = {}
        keys: dict[Loc, Position] = {}
        start = _node_start(node)
        plain = _plain(node, (), values, keys)
        yield plain, Origin(path, display, index, start, values, keys)


class _BoundedComposer(Composer):
    """ruamel's composer, with a bound on what aliases add to a document.

    Composing stays linear: an alias yields the anchor's node itself. The expansion
    happens later, when the document becomes plain values, so the bound is checked
    here, at each alias, on the size of the node it repeats.
    """

    def compose_document(self) -> Any:
        self._added = 0
        self._open: list[str] = []  # anchors of the collections being composed
        self._sizes: dict[int, int] = {}
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            if event.anchor in self._open:
                raise ComposerError(
                    None, None, f"alias *{event.anchor} is inside its own anchor", event.start_mark
                )
            node = self.anchors.get(event.anchor)
            if node is not None:
                self._added += self._size(node)
                if self._added > MAX_ALIAS_NODES:
                    raise ComposerError(
                        None,
                        None,
                        f"aliases expand this document by more than {MAX_ALIAS_NODES} values "
                        f"(at *{event.anchor}); write the values out or use fewer aliases",
                        event.start_mark,
                    )
            return super().compose_node(parent, index)
        anchor = getattr(event, "anchor", None)
        if anchor is None or not isinstance(event, MappingStartEvent | SequenceStartEvent):
            return super().compose_node(parent, index)
        self._open.append(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._open.pop()

    def _size(self, node: Node) -> int:
        """The number of values ``node`` stands for, with its aliases expanded."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        size = 1
        if isinstance(node, SequenceNode):
            size += sum(self._size(item) for item in node.value)
        elif isinstance(node, MappingNode):
            size += sum(self._size(key) + self._size(value) for key, value in node.value)
        self._sizes[id(node)] = size
        return size


def _node_start(node: Any) -> Position:
    lc = getattr(node, "lc", None)
    if lc is not None and lc.line is not None:
        return (lc.line + 1, lc.col + 1)
    return (1, 1)


def _plain(node: Any, loc: Loc, values: dict[Loc, Position], keys: dict[Loc, Position]) -> Any:
    """ruamel's round-trip types -> plain Python values, recording positions on the way."""
    if isinstance(node, CommentedMap):
        values.setdefault(loc, _node_start(node))
        out: dict[Any, Any] = {}
        for key, value in node.items():
            sub = (*loc, key if isinstance(key, str) else str(key))
            try:
                kline, kcol = node.lc.key(key)
                keys[sub] = (kline + 1, kcol + 1)
                vline, vcol = node.lc.value(key)
                values[sub] = (vline + 1, vcol + 1)
            except (KeyError, TypeError, AttributeError):
                pass
            out[_scalar(key)] = _plain(value, sub, values, keys)
        return out
    if isinstance(node, CommentedSeq):
        values.setdefault(loc, _node_start(node))
        items: list[Any] = []
        for i, value in enumerate(node):
            try:
                line, col = node.lc.item(i)
                values[(*loc, i)] = (line + 1, col + 1)
            except (KeyError, TypeError, AttributeError):
                pass
            items.append(_plain(value, (*loc, i), values, keys))
        return items
    return _scalar(node)


def _scalar(value: Any) -> Any:
    # ruamel wraps scalars in subclasses (ScalarInt, ScalarFloat, LiteralScalarString...);
    # strict validation wants the plain types.
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


# --- validation ------------------------------------------------------------------------------


def _validate_document(raw: Any, origin: Origin, problems: list[Problem]) -> Document | None:
    kinds = ", ".join(DOCUMENT_KINDS)
    if not isinstance(raw, dict):
        problems.append(origin.problem((), f"a document must be a mapping with a kind ({kinds})"))
        return None
    kind = raw.get("kind")
    if "kind" not in raw:
        problems.append(origin.problem((), f"kind: missing (one of {kinds})"))
        return None
    model = DOCUMENT_KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        problems.append(
            origin.problem(("kind",), f"unknown kind {kind!r} (expected one of {kinds})")
        )
        return None
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as exc:
        for error in exc.errors(include_url=False):
            problems.append(_problem_from_error(model, error, origin))
        return None


def _problem_from_error(model: type[pydantic.BaseModel], error: Any, origin: Origin) -> Problem:
    loc: Loc = tuple(error["loc"])
    message, at_key = _error_message(model, error)
    return origin.problem(loc, message, at_key=at_key)


def validation_messages(
    model: type[pydantic.BaseModel], exc: pydantic.ValidationError
) -> list[str]:
    """``field: message`` for each error of validating ``model`` (as documents word them);
    for values that come from elsewhere than a document, such as a directory entry."""
    out = []
    for error in exc.errors(include_url=False):
        message, _ = _error_message(model, error)
        where = field_path(tuple(error["loc"]))
        out.append(f"{where}: {message}" if where else message)
    return out


def _error_message(model: type[pydantic.BaseModel], error: Any) -> tuple[str, bool]:
    """The message for one pydantic error, and whether it belongs at the key."""
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    message = str(error["msg"])
    if kind == "extra_forbidden":
        allowed = _allowed_fields(model, loc[:-1])
        key = str(loc[-1])
        message = "unknown field"
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        elif allowed:
            message += f" (allowed: {', '.join(allowed)})"
        return message, True
    if kind == "missing":
        return "required field is missing", False
    if kind == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern")
        message = PATTERN_MESSAGES.get(pattern, message)
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected")
        if expected:
            message = f"expected one of {expected}, got {_short(error.get('input'))}"
    return message, False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _allowed_fields(model: type[pydantic.BaseModel], loc: Loc) -> list[str]:
    """The field names (as written in documents) of the model found at ``loc``."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or TAG_MARK in str(part):
            continue
        sub = _model_in(current)
        if sub is None or part not in _names(sub):
            return []
        name = _names(sub)[part]
        current = sub.model_fields[name].annotation
    found = _model_in(current)
    return list(_names(found)) if found is not None else []


def _names(model: type[pydantic.BaseModel]) -> dict[str, str]:
    """Document key -> attribute name."""
    return {(f.alias or name): name for name, f in model.model_fields.items()}


def _model_in(annotation: Any) -> type[pydantic.BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
