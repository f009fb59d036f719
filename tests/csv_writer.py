"""Writing CSV text that the CSV source reads back unchanged, for building test files."""

from __future__ import annotations

from collections.abc import Sequence

from imapsync_decl.sources.csv import QUOTES, SEPARATORS


def _needs_quotes(field: str, separator: str, only_field: bool) -> bool:
    if field == "":
        return only_field  # a record of one empty field would be an empty line
    return (
        field[0] == "\ufeff"
        or separator in field
        or any(ch in field for ch in ('"', "'", "\r", "\n"))
    )


def format_csv(rows: Sequence[Sequence[str]], separator: str, quote: str) -> str:
    """Write records that ``split_records`` and ``parse_csv`` read back unchanged.

    Quoting rule: a field is written inside ``quote`` (with ``quote`` doubled in
    it) when it contains the separator, either quote character, CR or LF, or
    starts with U+FEFF (which would look like a byte order mark at the start of a
    file); a record whose only field is empty is written as two quotes, since an
    empty line is no record. Every other field is written as it is. Each record
    ends with CRLF.
    """
    if separator not in SEPARATORS:
        raise ValueError(f"separator must be one of {SEPARATORS!r}, not {separator!r}")
    if quote not in QUOTES:
        raise ValueError(f"quote must be one of {QUOTES!r}, not {quote!r}")
    out: list[str] = []
    for row in rows:
        if not row:
            raise ValueError("a record needs at least one field")
        cells = [
            quote + field.replace(quote, quote * 2) + quote
            if _needs_quotes(field, separator, len(row) == 1)
            else field
            for field in row
        ]
        out.append(separator.join(cells) + "\r\n")
    return "".join(out)
