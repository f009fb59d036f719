"""Text as the search index sees it: the same normalisation for documents and for queries.

FTS5's ``unicode61`` tokenizer (with ``remove_diacritics 2``) folds case and
diacritics, so ``Muller`` finds ``Müller``; it does not split Chinese, Japanese or
Korean text into words, which have no spaces between them. Each run of such
characters is therefore written as its overlapping bigrams (``東京都`` becomes
``東京 京都``), and a query term gets the same treatment, so that a two-character
word is found inside a longer run, and a longer word is the phrase of its bigrams.
A document also gets each CJK character once more at its end, on its own, so that
a one-character query finds it inside a run too; they come after the text so that
the bigrams of a run stay next to each other for phrase matching.
"""

from __future__ import annotations

import re
import unicodedata

FTS_TOKENIZER = "unicode61 remove_diacritics 2"

# Han, Hiragana, Katakana, Hangul, and their compatibility and extension blocks.
_CJK = re.compile(
    "["
    "\u1100-\u11ff\u2e80-\u2fdf\u3005-\u3007\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u3190-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\uff66-\uff9f"
    "\U00020000-\U0003134f"
    "]+"
)


# Every character of _CJK is in one of these two ranges: a quick look whether a text has any.
_MAYBE_CJK = re.compile("[\u1100-\u11ff\u2e80-\U0003134f]")


def _has_no_cjk(text: str) -> bool:
    """True when ``text`` certainly holds no CJK character; checked the cheap way first
    (most non-ASCII mail is Latin-1: Western European letters)."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return _MAYBE_CJK.search(text) is None
    return True


def _bigrams(match: re.Match[str]) -> str:
    run = match.group(0)
    if len(run) == 1:
        return f" {run} "
    return " " + " ".join(run[i : i + 2] for i in range(len(run) - 1)) + " "


def searchable(text: str, *, document: bool = False) -> str:
    """``text`` normalised for the index and for query terms: NFKC (full-width letters
    and ligatures become plain ones, ``ß`` stays for the tokenizer) and CJK runs as
    bigrams; with ``document``, the distinct CJK characters follow at the end."""
    if text.isascii():  # most mail: nothing to normalise, no CJK
        return text
    normal = unicodedata.normalize("NFKC", text)
    if _has_no_cjk(normal):
        return normal
    runs: list[str] = []

    def bigrams(match: re.Match[str]) -> str:
        runs.append(match.group(0))
        return _bigrams(match)

    out = _CJK.sub(bigrams, normal)
    if document:
        singles = dict.fromkeys(c for run in runs if len(run) > 1 for c in run)
        if singles:
            out += " " + " ".join(singles)
    return out


def cjk_terms(term: str) -> list[str]:
    """The words a query term becomes: a CJK run of more than two characters is the
    phrase of its bigrams, so the caller matches them as one phrase."""
    return searchable(term).split()
