"""HTML mail as plain text for the search index: markup stripped, scripts and styles dropped.

``html_text`` parses with selectolax (the lexbor HTML5 parser): entities are
decoded, ``script``, ``style``, ``noscript``, ``template`` and the ``head`` go with
their content, and a line break follows each block, so that the words of two
paragraphs or table cells stay apart while ``M<b>ü</b>ller`` stays one word.

An HTML5 parser takes time proportional to the depth of nesting for each element
it opens, which hostile mail can make quadratic (a few megabytes of ``<div>``).
Markup nested deeper than ``MAX_NESTING`` is therefore read by a simple linear
stripper instead, which gives the same words with less care for layout.
"""

from __future__ import annotations

import html
import re

from selectolax.lexbor import LexborHTMLParser

MAX_NESTING = 500
"""Markup whose elements nest deeper than this is not given to the HTML5 parser."""

_BLOCKS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "caption",
        "center",
        "dd",
        "div",
        "dl",
        "dt",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "td",
        "th",
        "tr",
        "ul",
    ]
)
_HIDDEN = ("script", "style", "noscript", "template", "head")

# Elements that never nest by themselves: void elements, and those whose end tag may
# be left out (the parser closes them when the next one opens).
_FLAT = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
        "p",
        "li",
        "dt",
        "dd",
        "td",
        "th",
        "tr",
        "option",
        "optgroup",
        "thead",
        "tbody",
        "tfoot",
        "colgroup",
        "caption",
        "rb",
        "rt",
        "rp",
        "html",
        "head",
        "body",
    ]
)
_TAG_NAME = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)")


def html_text(markup: str) -> str:
    """The text of an HTML document or fragment."""
    if _nesting(markup) > MAX_NESTING:
        return _stripped(markup)
    tree = LexborHTMLParser(markup)
    tree.strip_tags(list(_HIDDEN), recursive=True)
    root = tree.root
    if root is None:
        return ""
    for node in root.css(", ".join(sorted(_BLOCKS))):
        node.insert_after("\n")
    return root.text(separator="")


def _nesting(markup: str) -> int:
    """How deep the elements of ``markup`` nest, counted from its tags alone."""
    if markup.count("<") <= MAX_NESTING:
        return 0
    depth = deepest = 0
    for match in _TAG_NAME.finditer(markup):
        if match.group(2).lower() in _FLAT:
            continue
        if match.group(1):
            depth = max(depth - 1, 0)
        else:
            depth += 1
            deepest = max(deepest, depth)
    return deepest


_HIDDEN_START = re.compile(r"<(" + "|".join(_HIDDEN) + r")\b|<!--", re.IGNORECASE)
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)?[^<>]*>")


def _stripped(markup: str) -> str:
    """The text of ``markup`` by a linear scan: hidden elements and comments dropped
    (an unclosed one runs to the end, as in a browser), tags removed, a line break for
    each block tag, entities decoded."""
    lower = markup.lower()
    kept: list[str] = []
    position = 0
    for match in _HIDDEN_START.finditer(lower):
        if match.start() < position:
            continue
        kept.append(markup[position : match.start()])
        name = match.group(1)
        close = lower.find("-->" if name is None else "</" + name, match.end())
        if close < 0:
            position = len(markup)
            break
        end = close + 3 if name is None else lower.find(">", close) + 1
        position = end if end > 0 else len(markup)
    kept.append(markup[position:])
    text = _TAG.sub(_tag_replacement, "".join(kept))
    return html.unescape(text)


def _tag_replacement(match: re.Match[str]) -> str:
    name = match.group(2)
    return "\n" if name is not None and name.lower() in _BLOCKS else ""
