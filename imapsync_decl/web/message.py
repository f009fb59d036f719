"""A message for the web pages: its HTML body sanitized, its attachments, safe file names.

The headers and the text come from ``store.search.extract.readable`` (what ``archive
show`` prints); this module adds what only a browser shows: the HTML body, passed
through nh3 (the ammonia sanitizer: an allow-list of tags and attributes, every
script, style sheet, event handler, form and frame dropped), and the attachments.
Remote content (images, links) is blocked unless asked for: without it every image
that is not inline data loses its source and every link its target. The page shows
the result only inside a sandboxed frame whose own policy forbids script, so even a
flaw of the sanitizer runs nothing.

The walk is bounded like extraction (``MAX_PARTS`` parts, ``MAX_DEPTH`` levels) and
never raises on broken mail: what cannot be read is left out.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from dataclasses import dataclass
from email.message import EmailMessage, Message

import nh3

from imapsync_decl.store.search.extract import MAX_DEPTH, MAX_PART_TEXT, MAX_PARTS

TAGS = frozenset(
    {
        "a", "abbr", "address", "b", "bdi", "bdo", "blockquote", "br", "caption", "center",
        "cite", "code", "col", "colgroup", "dd", "del", "details", "dfn", "div", "dl", "dt",
        "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd",
        "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span", "strike",
        "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead",
        "tr", "tt", "u", "ul", "var",
    }
)  # fmt: skip
ATTRIBUTES = {
    "*": {"align", "valign", "dir", "lang", "title", "width", "height"},
    "a": {"href"},
    "img": {"src", "alt"},
    "font": {"color", "face", "size"},
    "table": {"border", "cellpadding", "cellspacing", "bgcolor"},
    "td": {"colspan", "rowspan", "bgcolor"},
    "th": {"colspan", "rowspan", "bgcolor"},
    "col": {"span"},
    "colgroup": {"span"},
}
REMOTE_SCHEMES = ("http://", "https://")
_DATA_IMAGE = re.compile(r"data:image/(png|gif|jpeg|webp);base64,", re.IGNORECASE)
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f"\\/;:*?<>|]+')


@dataclass(frozen=True)
class Attachment:
    number: int  # its place among the attachments, from 1: the download URL names it
    name: str
    content_type: str
    size: int


@dataclass(frozen=True)
class Parts:
    """The HTML body (None without one) and the attachments of a message."""

    html: str | None
    attachments: tuple[Attachment, ...]
    has_remote: bool  # the HTML names remote images or links


def sanitize(html: str, *, remote: bool) -> tuple[str, bool]:
    """``html`` sanitized; with ``remote`` False, remote images and links taken out.
    The second value says whether anything remote was there."""
    found = False

    def keep(tag: str, attribute: str, value: str) -> str | None:
        nonlocal found
        if attribute not in ("src", "href"):
            return value
        lowered = value.strip().lower()
        if tag == "img" and attribute == "src":
            if _DATA_IMAGE.match(lowered):
                return value
            if lowered.startswith(REMOTE_SCHEMES):
                found = True
                return value if remote else None
            return None  # cid: and everything else: not shown
        if tag == "a" and attribute == "href":
            if lowered.startswith((*REMOTE_SCHEMES, "mailto:")):
                found = True
                return value if remote else None
            return None
        return None

    cleaned = nh3.clean(
        html,
        tags=set(TAGS),
        clean_content_tags={"script", "style", "title", "head", "noscript", "template"},
        attributes={k: set(v) for k, v in ATTRIBUTES.items()},
        attribute_filter=keep,
        url_schemes={"http", "https", "mailto", "data"},
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    )
    return cleaned, found


def parts(raw: bytes, *, remote: bool = False) -> Parts:
    """The sanitized HTML body and the attachments of ``raw``; never raises."""
    try:
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    except Exception:
        return Parts(None, (), False)
    html: str | None = None
    attachments: list[Attachment] = []
    for part in _leaves(message):
        try:
            content_type = part.get_content_type()
            if _is_attachment(part):
                payload = part.get_payload(decode=True)
                size = len(payload) if isinstance(payload, bytes) else 0
                attachments.append(
                    Attachment(len(attachments) + 1, file_name(part), content_type, size)
                )
            elif content_type == "text/html" and html is None:
                html = _text(part)
        except Exception:  # noqa: S112 - a part the email package cannot decode is left out
            continue
    if html is None:
        return Parts(None, tuple(attachments), False)
    cleaned, found = sanitize(html, remote=remote)
    return Parts(cleaned, tuple(attachments), found)


def attachment(raw: bytes, number: int) -> tuple[Attachment, bytes] | None:
    """Attachment ``number`` (from 1) of ``raw`` with its decoded bytes, or None."""
    try:
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    except Exception:
        return None
    seen = 0
    for part in _leaves(message):
        try:
            if not _is_attachment(part):
                continue
            seen += 1
            if seen == number:
                payload = part.get_payload(decode=True)
                data = payload if isinstance(payload, bytes) else b""
                found = Attachment(number, file_name(part), part.get_content_type(), len(data))
                return found, data
        except Exception:  # noqa: S112 - likewise
            continue
    return None


def file_name(part: Message) -> str:
    """The attachment's file name, made safe for a download (no path, no control or
    quote characters), or ``attachment``."""
    try:
        name = part.get_filename() or ""
    except Exception:
        name = ""
    name = _UNSAFE_NAME.sub("_", str(name)).strip(" ._")
    return name[:150] or "attachment"


def _leaves(message: Message) -> list[Message]:
    found: list[Message] = []

    def walk(part: Message, depth: int) -> None:
        if len(found) >= MAX_PARTS or depth > MAX_DEPTH:
            return
        if part.is_multipart():
            payload = part.get_payload()
            for child in payload if isinstance(payload, list) else []:
                if isinstance(child, Message):
                    walk(child, depth + 1)
        else:
            found.append(part)

    walk(message, 0)
    return found


def _is_attachment(part: Message) -> bool:
    disposition = str(part.get("content-disposition", "")).split(";")[0].strip().lower()
    if disposition == "attachment":
        return True
    content_type = part.get_content_type()
    if content_type in ("text/plain", "text/html"):
        return False
    return bool(part.get_filename()) or not content_type.startswith("text/")


def _text(part: Message) -> str:
    if isinstance(part, EmailMessage):
        content = part.get_content()
        if isinstance(content, str):
            return content[:MAX_PART_TEXT]
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    return data[:MAX_PART_TEXT].decode(part.get_content_charset() or "utf-8", "replace")
