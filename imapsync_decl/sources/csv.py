"""Read a CSV file of mailbox credentials: one header row, then one row per mailbox.

The format follows what people write for batch archiving (MailStore Server's
"batch archiving from a CSV file" is the model):

* UTF-8, a leading byte order mark is dropped. Lines end with LF or CRLF (a lone
  CR outside a quoted field is an error); a line that is completely empty
  (outside a quoted field) is skipped.
* The first non-empty record is the header. Its cells name the columns, in any
  spelling listed in :data:`HEADER_SYNONYMS`; case, spaces, ``-`` and ``_`` do not
  matter. ``login`` and ``password`` are required, ``email`` and ``archive_user``
  optional; other columns are ignored with a warning.
* The separator is ``;``, ``,``, ``|`` or TAB: whichever occurs most often
  (outside quoted fields) in the header line; on a tie the earlier one in that
  list wins.
* A field is quoted only when its first character is ``"`` or ``'``. Inside it,
  that quote character is doubled to stand for itself; the other quote character,
  separators, CR and LF are plain data, so a record can span lines. Fields are
  never trimmed.

Lines are physical lines of the file counted by LF (the byte order mark is not
counted), and each problem names the line where its record starts. Messages use
the column keys (``login``, ``password``, ``email``, ``archive_user``) when they
speak of a column's values, and the header text as written when they speak of a
header cell. No message shows a data value other than a login name, so
passwords never appear in problems.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

from imapsync_decl.config.documents.rules import EMAIL_PATTERN, WIRE_SAFE, WIRE_UNSAFE
from imapsync_decl.errors import Problem, Severity
from imapsync_decl.secrets import Secret

SEPARATORS: Final = (";", ",", "|", "\t")
"""The accepted separators, in order of preference when the header is a tie."""

QUOTES: Final = ('"', "'")
"""The characters that quote a field when they are its first character."""

REQUIRED_COLUMNS: Final = ("login", "password")
OPTIONAL_COLUMNS: Final = ("email", "archive_user")

HEADER_SYNONYMS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "login": (
            "IMAP-Benutzername",
            "IMAP username",
            "IMAP user name",
            "IMAP user",
            "IMAP-Benutzer",
            "IMAP login",
            "login",
            "user",
            "username",
            "user name",
            "Benutzername",
            "Benutzer",
        ),
        "password": (
            "IMAP-Kennwort",
            "IMAP password",
            "IMAP-Passwort",
            "password",
            "Passwort",
            "Kennwort",
            "pass",
        ),
        "email": (
            "E-Mail-Adresse",
            "e-mail address",
            "email address",
            "email",
            "e-mail",
            "E-Mail",
            "mail",
            "Mailadresse",
            "mail address",
        ),
        "archive_user": (
            "MailStore-Benutzername",
            "MailStore user name",
            "MailStore user",
            "MailStore-Benutzer",
            "archive user",
            "archive user name",
            "Archiv-Benutzer",
            "Archivbenutzer",
            "Archiv-Benutzername",
        ),
    }
)
"""Each column key with the header spellings that name it, as people write them.

Matching folds both sides with :func:`fold_header` (so ``E-Mail``, ``email`` and
``e_mail`` are one spelling, and ``Archivbenutzer`` matches ``Archiv-Benutzer``).
"""

_BOM: Final = b"\xef\xbb\xbf"
_EMAIL: Final = re.compile(EMAIL_PATTERN)
_FOLD_DROP: Final = str.maketrans("", "", " -_")


def fold_header(text: str) -> str:
    """The form in which header cells and synonyms are compared."""
    return text.casefold().translate(_FOLD_DROP)


def _build_header_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for key, spellings in HEADER_SYNONYMS.items():
        for spelling in spellings:
            folded = fold_header(spelling)
            if index.setdefault(folded, key) != key:
                raise AssertionError(f"header spelling {spelling!r} names two columns")
    return index


_HEADER_INDEX: Final = _build_header_index()


@dataclass(frozen=True)
class CsvAccount:
    """One mailbox from a data row."""

    line: int  # line where the record starts
    login: str
    password: Secret
    email: str | None
    archive_user: str | None


@dataclass(frozen=True)
class CsvResult:
    """The accounts of a CSV file and every problem found in it."""

    accounts: tuple[CsvAccount, ...]
    problems: tuple[Problem, ...]
    separator: str | None  # detected separator; None when the header has none

    @property
    def ok(self) -> bool:
        """True when no problem is an error (warnings allowed)."""
        return not any(p.is_error for p in self.problems)


@dataclass(frozen=True)
class RawRecord:
    """One record as split from the text, before the header gives it meaning.

    ``error`` is set when the record is malformed; ``fields`` then holds what
    could be read, which is not to be trusted.
    """

    line: int  # line where the record starts
    fields: tuple[str, ...]
    error: str | None = None


# --------------------------------------------------------------------------- splitting


_PLAIN_PATTERNS: Final = {
    sep: re.compile(f"(?:[^{re.escape(sep)}\r\n]|\r(?!\n))*") for sep in SEPARATORS
}

_QUOTE_HINT: Final = (
    "a field that starts with ' or \" is quoted: quote the whole field and double "
    "the quote character inside it"
)


def iter_records(text: str, separator: str) -> Iterator[RawRecord]:
    """Split ``text`` into records, skipping completely empty lines.

    An unquoted field ends at the separator, LF, CRLF or the end of the text. A
    record with an unterminated quote takes the rest of the text and is the last
    one produced.
    """
    if separator not in _PLAIN_PATTERNS:
        raise ValueError(f"separator must be one of {SEPARATORS!r}, not {separator!r}")
    plain = _PLAIN_PATTERNS[separator]
    n = len(text)
    i = 0
    line = 1
    while i < n:
        # A completely empty line is no record.
        if text[i] == "\n":
            i += 1
            line += 1
            continue
        if text.startswith("\r\n", i):
            i += 2
            line += 1
            continue

        start_line = line
        fields: list[str] = []
        error: str | None = None
        while True:
            number = len(fields) + 1
            if i < n and text[i] in QUOTES:
                quote = text[i]
                i += 1
                parts: list[str] = []
                while True:
                    j = text.find(quote, i)
                    if j < 0:
                        parts.append(text[i:])
                        line += text.count("\n", i)
                        fields.append("".join(parts))
                        yield RawRecord(
                            start_line,
                            tuple(fields),
                            f"field {number} starts with the quote {quote} and never closes "
                            f"({_QUOTE_HINT})",
                        )
                        return
                    parts.append(text[i:j])
                    line += text.count("\n", i, j)
                    if j + 1 < n and text[j + 1] == quote:
                        parts.append(quote)
                        i = j + 2
                    else:
                        i = j + 1
                        break
                value = "".join(parts)
                if i < n and text[i] != separator and not _at_line_end(text, i):
                    if error is None:
                        error = (
                            f"unexpected character after closing quote in field {number} "
                            f"({_QUOTE_HINT})"
                        )
                    match = plain.match(text, i)
                    assert match is not None
                    value += match.group()
                    i = match.end()
            else:
                match = plain.match(text, i)
                assert match is not None
                value = match.group()
                i = match.end()
                if "\r" in value and error is None:
                    error = (
                        f"carriage return without line feed in field {number} "
                        "(lines must end with LF or CRLF)"
                    )
            fields.append(value)
            # The plain pattern stops only at the separator, a line end or the end.
            if i < n and text[i] == separator:
                i += 1
                continue
            if i < n:
                i += 2 if text[i] == "\r" else 1
                line += 1
            break
        yield RawRecord(start_line, tuple(fields), error)


def _at_line_end(text: str, i: int) -> bool:
    return text[i] == "\n" or text.startswith("\r\n", i)


def split_records(text: str, separator: str) -> list[RawRecord]:
    """All records of ``text``; see :func:`iter_records`."""
    return list(iter_records(text, separator))


def detect_separator(text: str) -> str | None:
    """The separator of the header (the first non-empty line), or None if it has none.

    Each candidate is counted outside quoted fields, where a quote opens a field at
    the start of the line or right after any candidate (the separator is not known
    yet). The most frequent wins; a tie goes to the one listed first in
    :data:`SEPARATORS`.
    """
    counts = dict.fromkeys(SEPARATORS, 0)
    n = len(text)
    i = 0
    while i < n and (text[i] == "\n" or text.startswith("\r\n", i)):
        i += 1 if text[i] == "\n" else 2
    field_start = True
    while i < n:
        c = text[i]
        if field_start and c in QUOTES:
            # Skip to the closing quote (a doubled quote stands for itself).
            i += 1
            while i < n:
                j = text.find(c, i)
                if j < 0 or j + 1 >= n or text[j + 1] != c:
                    i = n if j < 0 else j + 1
                    break
                i = j + 2
            field_start = False
            continue
        if c == "\n":
            break
        field_start = c in counts
        if field_start:
            counts[c] += 1
        i += 1
    best = max(SEPARATORS, key=lambda sep: counts[sep])  # max keeps the first of equals
    return best if counts[best] else None


# --------------------------------------------------------------------------- parsing


def _accepted_names(key: str) -> str:
    names = ", ".join(HEADER_SYNONYMS[key])
    return f'{names}; case, spaces, "-" and "_" do not matter'


def parse_csv(data: bytes, path: str) -> CsvResult:
    """Parse the bytes of a CSV file; ``path`` only names the file in problems.

    Never raises on bad input: every problem is collected. Parsing stops early
    only on invalid UTF-8, a missing or malformed header row, a header without a
    separator, and an unterminated quote (which takes the rest of the file).
    """
    problems: list[Problem] = []

    def report(line: int | None, message: str, severity: Severity = Severity.ERROR) -> None:
        problems.append(Problem(path, line, None, None, message, severity))

    def result(accounts: Sequence[CsvAccount] = (), separator: str | None = None) -> CsvResult:
        return CsvResult(tuple(accounts), tuple(problems), separator)

    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        report(data.count(b"\n", 0, exc.start) + 1, "not valid UTF-8 (save the file as UTF-8)")
        return result()

    separator = detect_separator(text)
    records = iter_records(text, separator or SEPARATORS[0])
    header = next(records, None)
    if header is None:
        report(None, "the file is empty (a header row is required)")
        return result(separator=separator)
    if header.error is not None:
        report(header.line, f"header row: {header.error}")
        return result(separator=separator)

    # Map the header cells to column keys.
    columns: dict[str, int] = {}
    for index, cell in enumerate(header.fields):
        key = _HEADER_INDEX.get(fold_header(cell))
        if key is None:
            if cell.strip():
                report(header.line, f'column "{cell}" is not used', Severity.WARNING)
            else:
                report(
                    header.line, f"column {index + 1} has no name and is not used", Severity.WARNING
                )
        elif key in columns:
            first = header.fields[columns[key]]
            report(header.line, f'columns "{first}" and "{cell}" are both the {key} column')
        else:
            columns[key] = index
    for key in REQUIRED_COLUMNS:
        if key not in columns:
            report(header.line, f'missing column "{key}" (accepted names: {_accepted_names(key)})')
    if separator is None:
        # One column only: the rows cannot be read; the errors above say why.
        return result()
    header_ok = all(p.severity is Severity.WARNING for p in problems)

    width = len(header.fields)
    accounts: list[CsvAccount] = []
    first_line: dict[str, int] = {}
    data_rows = 0
    for record in records:
        data_rows += 1
        if record.error is not None:
            report(record.line, record.error)
            continue
        if len(record.fields) != width:
            report(record.line, f"expected {width} fields, found {len(record.fields)}")
            continue
        values = {key: record.fields[index] for key, index in columns.items()}
        row_ok = True
        for key in REQUIRED_COLUMNS:
            if values.get(key) == "":
                report(record.line, f'column "{key}" is empty')
                row_ok = False
        for key, value in values.items():
            if WIRE_UNSAFE.search(value):
                problems.append(Problem(path, record.line, None, key, WIRE_SAFE.message))
                row_ok = False
        email = values.get("email", "")
        if email and not WIRE_UNSAFE.search(email) and not _EMAIL.search(email):
            problems.append(Problem(path, record.line, None, "email", "not an e-mail address"))
            row_ok = False
        login = values.get("login", "")
        if login:
            folded = login.casefold()
            if folded in first_line:
                report(
                    record.line,
                    f'duplicate login "{login}" (first on line {first_line[folded]})',
                )
                row_ok = False
            else:
                first_line[folded] = record.line
        if row_ok and header_ok:
            accounts.append(
                CsvAccount(
                    line=record.line,
                    login=values["login"],
                    password=Secret(values["password"]),
                    email=values.get("email") or None,
                    archive_user=values.get("archive_user") or None,
                )
            )
    if data_rows == 0:
        report(header.line, "no data rows after the header", Severity.WARNING)
    return result(accounts, separator)


def load_csv(file: Path, display_path: str) -> CsvResult:
    """Read and parse a CSV file; ``display_path`` names it in problems.

    A file that cannot be read is an error problem, never an exception. A file that
    group or others may access gets a warning, since it holds passwords.
    """
    try:
        with file.open("rb") as stream:
            mode = os.fstat(stream.fileno()).st_mode
            data = stream.read()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        problem = Problem(display_path, None, None, None, f"cannot read the CSV file: {reason}")
        return CsvResult((), (problem,), None)
    parsed = parse_csv(data, display_path)
    if os.name == "posix" and mode & 0o077:
        warning = Problem(
            display_path,
            None,
            None,
            None,
            f"file is readable by group/others (mode {mode & 0o777:04o}); chmod 600 it",
            Severity.WARNING,
        )
        return CsvResult(parsed.accounts, (warning, *parsed.problems), parsed.separator)
    return parsed
