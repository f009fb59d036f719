"""Which folders of a mailbox are archived: include/exclude patterns and default exclusions.

Pure functions over :class:`FolderInfo` values; no I/O.

Patterns are globs on the decoded folder path ('/' between levels): ``*`` and
``?`` stay within one level, ``**`` crosses levels. With ``include_subfolders``
an included folder brings its subfolders. An excluded folder always takes its
subfolders with it (``exclude: [Archive]`` leaves out ``Archive/2019`` too).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from imapsync_decl.config.documents import Folders
from imapsync_decl.imap.facts import FolderInfo

# SPECIAL-USE attributes that the default exclusions leave out.
EXCLUDED_SPECIAL_USE = frozenset({"\\Trash", "\\Junk", "\\Drafts"})

# Usual names (case-folded) for servers that report no SPECIAL-USE attributes.
# Outbox has no SPECIAL-USE attribute, so its names always count.
DEFAULT_EXCLUDED_NAMES: dict[str, frozenset[str]] = {
    "trash": frozenset(
        {
            "trash", "deleted items", "deleted messages", "deleted", "bin", "papierkorb",
            "gelöschte elemente", "gelöschte objekte", "corbeille", "éléments supprimés",
            "papelera", "elementos eliminados", "cestino", "posta eliminata", "prullenbak",
            "verwijderde items",
        }
    ),
    "junk": frozenset(
        {
            "junk", "junk e-mail", "junk email", "junk mail", "spam", "bulk mail",
            "junk-e-mail", "spamverdacht", "courrier indésirable", "correo no deseado",
            "posta indesiderata", "ongewenste e-mail",
        }
    ),
    "drafts": frozenset(
        {"drafts", "draft", "entwürfe", "brouillons", "borradores", "bozze", "concepten"}
    ),
    "outbox": frozenset(
        {"outbox", "postausgang", "boîte d'envoi", "bandeja de salida", "posta in uscita",
         "postvak uit"}
    ),
}  # fmt: skip


@dataclass(frozen=True)
class FolderChoice:
    """A folder and whether it is archived; ``reason`` says why not."""

    folder: FolderInfo
    included: bool
    reason: str | None = None


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """``**`` -> any levels, ``*`` -> within one level, ``?`` -> one character of a level."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")  # zero or more whole levels
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def matches(pattern: str, path: str) -> bool:
    # INBOX is case-insensitive (RFC 3501); every other name is matched as written.
    if path.upper() == "INBOX" or path.upper().startswith("INBOX/"):
        path = "INBOX" + path[5:]
        if pattern.upper() == "INBOX" or pattern.upper().startswith("INBOX/"):
            pattern = "INBOX" + pattern[5:]
    return glob_regex(pattern).fullmatch(path) is not None


def _self_and_ancestors(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]


def _first_match(patterns: Sequence[str], candidates: Sequence[str]) -> str | None:
    for pattern in patterns:
        if any(matches(pattern, c) for c in candidates):
            return pattern
    return None


def _default_name_class(path: str, server_has_special_use: bool) -> str | None:
    parts = path.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2 and parts[0].upper() == "INBOX":
        name = parts[1]
    else:
        return None
    folded = name.casefold()
    for kind, names in DEFAULT_EXCLUDED_NAMES.items():
        if folded in names and (kind == "outbox" or not server_has_special_use):
            return kind
    return None


def select_folders(folders: Sequence[FolderInfo], rules: Folders) -> list[FolderChoice]:
    """Decide for every folder whether it is archived, in the order given."""
    by_path = {f.path: f for f in folders}
    server_has_special_use = any(f.special_use for f in folders)
    choices: list[FolderChoice] = []
    for folder in folders:
        choices.append(_choose(folder, rules, by_path, server_has_special_use))
    return choices


def _choose(
    folder: FolderInfo,
    rules: Folders,
    by_path: dict[str, FolderInfo],
    server_has_special_use: bool,
) -> FolderChoice:
    lineage = _self_and_ancestors(folder.path)
    if not folder.selectable:
        return FolderChoice(folder, False, "not selectable (\\Noselect)")
    if rules.default_exclusions:
        for path in lineage:
            ancestor = by_path.get(path)
            special = ancestor.special_use if ancestor is not None else None
            below = "" if path == folder.path else f" (inside {path})"
            if special in EXCLUDED_SPECIAL_USE:
                return FolderChoice(folder, False, f"default exclusion: {special}{below}")
            kind = _default_name_class(path, server_has_special_use)
            if kind is not None:
                return FolderChoice(folder, False, f"default exclusion: {kind}{below}")
    excluded_by = _first_match(rules.exclude, lineage)
    if excluded_by is not None:
        return FolderChoice(folder, False, f"excluded by {excluded_by!r}")
    candidates = lineage if rules.include_subfolders else [folder.path]
    if _first_match(rules.include, candidates) is None:
        return FolderChoice(folder, False, "matches no include pattern")
    return FolderChoice(folder, True)
