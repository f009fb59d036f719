"""Deterministic mail for the search benchmark: varied RFC 5322 messages from fixed seeds.

Every message is a pure function of its number. Senders come from a few hundred
people at a few hundred domains, picked with a skewed (Zipf-like) popularity, so
that some send thousands of messages and most a handful. Words come from a
vocabulary with a long tail: a core of English, German and French words (with
diacritics), then thousands of generated words that each occur in few messages.
A few messages carry Japanese or Chinese text; some are HTML only, some
multipart/alternative, some multipart/mixed with attachments (``Angebot-2024.pdf``,
RFC 2231 names with umlauts). Dates are spread over three years (2023 to 2025).

``RARE_WORD`` is put into exactly the messages whose number is ``RARE_OFFSET``
modulo ``RARE_EVERY``: five messages in 100,000.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import email.utils
import quopri
import random
import urllib.parse
from dataclasses import dataclass

RARE_WORD = "Quittungsbelegnummer"
RARE_EVERY = 20_000
RARE_OFFSET = 1_234

START = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
SPAN_SECONDS = 3 * 365 * 86400

USERS = ("alice", "bob", "carol", "dieter", "elodie", "frank", "greta", "hiro")
FOLDERS = ("INBOX", "Sent", "Archive/2024", "Projekte/Übersicht", "Kunden")

_CORE = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "this",
    "from",
    "at",
    "be",
    "are",
    "was",
    "it",
    "an",
    "or",
    "have",
    "not",
    "we",
    "you",
    "please",
    "attached",
    "find",
    "regards",
    "thanks",
    "meeting",
    "invoice",
    "delivery",
    "schedule",
    "report",
    "budget",
    "quarter",
    "review",
    "contract",
    "proposal",
    "server",
    "backup",
    "release",
    "migration",
    "ticket",
    "customer",
    "support",
    "account",
    "mailbox",
    "archive",
    "offer",
    "order",
    "payment",
    "shipment",
    "deadline",
    "agenda",
    "minutes",
    "draft",
    "approval",
    "signature",
    "project",
    "team",
    "office",
    "travel",
    "hotel",
    "flight",
    "conference",
    "workshop",
    "der",
    "die",
    "das",
    "und",
    "ist",
    "nicht",
    "mit",
    "für",
    "auf",
    "über",
    "während",
    "später",
    "natürlich",
    "müssen",
    "können",
    "Angebot",
    "Rechnung",
    "Lieferung",
    "Besprechung",
    "Termin",
    "Übersicht",
    "Größe",
    "Grüße",
    "Projekt",
    "Kunde",
    "Straße",
    "Änderung",
    "Prüfung",
    "Vertrag",
    "Zahlung",
    "Bestellung",
    "Unterlagen",
    "Frist",
    "Anlage",
    "Kündigung",
    "le",
    "la",
    "les",
    "et",
    "est",
    "pour",
    "dans",
    "avec",
    "une",
    "des",
    "sur",
    "pas",
    "très",
    "déjà",
    "été",
    "réunion",
    "facture",
    "livraison",
    "échéance",
    "société",
    "garçon",
    "élève",
    "français",
    "problème",
    "reçu",
    "prévu",
    "numéro",
    "à",
    "où",
    "ça",
]

_CJK_SENTENCES = (
    "東京都の会議は来週の月曜日に予定されています。",
    "請求書を添付しましたのでご確認ください。",
    "新しいプロジェクトの見積書をお送りします。",
    "我们下周在北京开会讨论合同。",
    "请查收附件中的发票和报价单。",
    "サーバーの移行作業は金曜日の夜に行います。",
)

_FIRST = [
    "Anna",
    "Bernd",
    "Claire",
    "Dörte",
    "Émile",
    "François",
    "Günther",
    "Hélène",
    "Ingrid",
    "Jürgen",
    "Karin",
    "Léa",
    "Marc",
    "Nadine",
    "Olaf",
    "Pierre",
    "Renée",
    "Sören",
    "Thérèse",
    "Ute",
    "Valérie",
    "Wolfgang",
    "Yvonne",
    "Zoë",
    "Björn",
    "Ömer",
    "John",
    "Mary",
    "Peter",
    "Susan",
    "David",
    "Linda",
    "James",
    "Sarah",
    "Tom",
    "Emma",
]
_LAST = [
    "Müller",
    "Schmidt",
    "Schäfer",
    "Weiß",
    "Köhler",
    "Groß",
    "Dupont",
    "Lefèvre",
    "Durand",
    "Bérard",
    "Girard",
    "Moreau",
    "Fischer",
    "Wagner",
    "Becker",
    "Hoffmann",
    "Schröder",
    "Neumann",
    "Smith",
    "Jones",
    "Brown",
    "Taylor",
    "Wilson",
    "Clark",
]
_CJK_PEOPLE = ("田中 太郎", "佐藤 花子", "王 伟", "李 娜", "鈴木 一郎")
_TLDS = ("de", "fr", "com", "org", "net", "ch", "at", "eu", "jp", "cn")
_ATTACHMENTS = (
    "Angebot-2024.pdf",
    "Rechnung_{n:05d}.pdf",
    "Übersicht Q{q}.xlsx",
    "Protokoll-Besprechung.docx",
    "contrat_signé.pdf",
    "scan{n:04d}.jpg",
    "Lieferschein {n}.pdf",
    "報告書.pdf",
)


def _ascii_slug(text: str) -> str:
    table = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "é": "e", "è": "e"})
    plain = text.lower().translate(table)
    return "".join(ch for ch in plain if ch.isascii() and ch.isalnum())


@dataclass(frozen=True)
class Person:
    name: str
    address: str


def _tail_words(rng: random.Random, count: int) -> list[str]:
    """Generated words of two to four syllables, distinct, for the vocabulary's long tail."""
    onsets = [
        "b",
        "br",
        "ch",
        "d",
        "f",
        "g",
        "gr",
        "h",
        "k",
        "kl",
        "l",
        "m",
        "n",
        "p",
        "pf",
        "r",
        "s",
        "sch",
        "st",
        "t",
        "tr",
        "v",
        "w",
        "z",
    ]
    vowels = ["a", "e", "i", "o", "u", "ä", "ö", "ü", "ei", "au", "ie", "é"]
    codas = ["", "n", "r", "s", "t", "ng", "ck", "ld", "rt"]
    seen: set[str] = set(w.lower() for w in _CORE)
    words: list[str] = []
    while len(words) < count:
        word = "".join(
            rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
            for _ in range(rng.randint(2, 4))
        )
        if word not in seen and word != RARE_WORD.lower():
            seen.add(word)
            words.append(word)
    return words


class Corpus:
    """The people and the vocabulary, built once from a fixed seed."""

    def __init__(self, seed: str = "search-bench", senders: int = 600, tail: int = 30_000):
        rng = random.Random(seed)
        domains = [
            f"{_ascii_slug(rng.choice(_LAST))}-{rng.choice(('gmbh', 'sarl', 'ltd', 'ag', 'kg'))}"
            f"{n}.{rng.choice(_TLDS)}"
            for n in range(300)
        ]
        people: list[Person] = []
        for n in range(senders):
            if n % 40 == 7:
                name = _CJK_PEOPLE[n % len(_CJK_PEOPLE)]
                local = f"user{n}"
            else:
                first, last = rng.choice(_FIRST), rng.choice(_LAST)
                name = f"{first} {last}"
                local = f"{_ascii_slug(first)}.{_ascii_slug(last)}{n}"
            people.append(Person(name, f"{local}@{domains[n % len(domains)]}"))
        self.people = people
        self.words = [*_CORE, *_tail_words(rng, tail)]
        # Zipf weights over words and people: a few frequent, a long rare tail.
        self._word_cum = _cumulative([1.0 / (rank + 1) ** 1.07 for rank in range(len(self.words))])
        self._people_cum = _cumulative([1.0 / (rank + 1) ** 0.8 for rank in range(senders)])
        self.users = [Person(u.capitalize(), f"{u}@example.org") for u in USERS]

    def sender(self, rng: random.Random) -> Person:
        return self.people[_pick(rng, self._people_cum)]

    def text(self, rng: random.Random, words: int) -> list[str]:
        """Sentences of about ``words`` words."""
        picked = [self.words[_pick(rng, self._word_cum)] for _ in range(words)]
        sentences: list[str] = []
        while picked:
            length = rng.randint(6, 16)
            part, picked = picked[:length], picked[length:]
            sentence = " ".join(part)
            sentences.append(sentence[0].upper() + sentence[1:] + ".")
        return sentences


def _cumulative(weights: list[float]) -> list[float]:
    total = 0.0
    out = []
    for weight in weights:
        total += weight
        out.append(total)
    return [value / total for value in out]


def _pick(rng: random.Random, cumulative: list[float]) -> int:
    return min(bisect.bisect_left(cumulative, rng.random()), len(cumulative) - 1)


@dataclass(frozen=True)
class Generated:
    """One message and where it is archived."""

    number: int
    raw: bytes
    internal_date: dt.datetime
    placements: tuple[tuple[str, str], ...]  # (user, folder)
    flags: tuple[str, ...]


def _encoded(text: str, charset: str = "utf-8") -> str:
    if text.isascii():
        return text
    if charset == "utf-8":
        return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="
    # "Q" encoding (RFC 2047 4.2), in encoded words of at most 75 characters, folded.
    words: list[str] = []
    current = ""
    for char in text:
        piece = "".join(
            "_"
            if byte == 0x20
            else chr(byte)
            if chr(byte).isascii() and chr(byte).isalnum()
            else f"={byte:02X}"
            for byte in char.encode(charset)
        )
        if len(current) + len(piece) > 75 - len(charset) - 7:
            words.append(current)
            current = ""
        current += piece
    words.append(current)
    return "\r\n ".join(f"=?{charset}?q?{word}?=" for word in words)


def _address(person: Person, charset: str = "utf-8") -> str:
    return f"{_encoded(person.name, charset)} <{person.address}>"


def _charset_for(text: str, rng: random.Random) -> str:
    try:
        text.encode("iso-8859-1")
    except UnicodeEncodeError:
        return "utf-8"
    return "iso-8859-1" if rng.random() < 0.3 else "utf-8"


def _text_part(body: str, charset: str) -> list[str]:
    if charset == "utf-8":
        encoded = base64.encodebytes(body.encode()).decode().replace("\n", "\r\n")
        return [
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: base64",
            "",
            encoded.rstrip("\r\n"),
        ]
    data = quopri.encodestring(body.replace("\r\n", "\n").encode(charset)).decode()
    return [
        f"Content-Type: text/plain; charset={charset}",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        data.replace("\n", "\r\n").rstrip("\r\n"),
    ]


def _html_part(paragraphs: list[str]) -> list[str]:
    html = (
        "<html><head><style>p { margin: 0 }</style></head><body>"
        + "".join(f"<p>{p}</p>" for p in paragraphs)
        + "<div class=footer><a href='https://example.org/unsubscribe'>Abmelden</a></div>"
        "</body></html>"
    )
    data = quopri.encodestring(html.encode()).decode().replace("\n", "\r\n")
    return [
        "Content-Type: text/html; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        data.rstrip("\r\n"),
    ]


def _attachment_part(rng: random.Random, number: int) -> list[str]:
    template = rng.choice(_ATTACHMENTS)
    name = template.format(n=number % 10_000, q=number % 4 + 1)
    if name.isascii():
        disposition = f'attachment; filename="{name}"'
    else:
        disposition = "attachment; filename*=utf-8''" + urllib.parse.quote(name)
    payload = base64.encodebytes(rng.randbytes(rng.randint(1_000, 12_000))).decode()
    return [
        "Content-Type: application/octet-stream",
        "Content-Transfer-Encoding: base64",
        f"Content-Disposition: {disposition}",
        "",
        payload.replace("\n", "\r\n").rstrip("\r\n"),
    ]


def _multipart(kind: str, boundary: str, parts: list[list[str]]) -> list[str]:
    lines = [f'Content-Type: multipart/{kind}; boundary="{boundary}"', "", "This is MIME."]
    for part in parts:
        lines += [f"--{boundary}", *part]
    lines.append(f"--{boundary}--")
    return lines


def _placements(rng: random.Random, number: int, recipient: int) -> tuple[tuple[str, str], ...]:
    user = USERS[recipient]
    folder = FOLDERS[rng.randrange(len(FOLDERS))]
    places = [(user, folder)]
    roll = rng.random()
    if roll < 0.04:  # the same message in a second folder of the same mailbox
        other = FOLDERS[(FOLDERS.index(folder) + 1) % len(FOLDERS)]
        places.append((user, other))
    elif roll < 0.08:  # the same message in another user's mailbox
        places.append((USERS[(recipient + 1 + number % 3) % len(USERS)], "INBOX"))
    return tuple(places)


def make_message(corpus: Corpus, number: int) -> Generated:
    """Message ``number``: its bytes, internal date, placements and flags."""
    rng = random.Random(f"search-bench/{number}")
    date = START + dt.timedelta(seconds=rng.randrange(SPAN_SECONDS))
    sender = corpus.sender(rng)
    recipient = rng.randrange(len(USERS))
    to = [corpus.users[recipient]]
    cc = [corpus.sender(rng) for _ in range(rng.choice((0, 0, 0, 1, 2)))]
    paragraphs = [" ".join(corpus.text(rng, rng.randint(15, 60))) for _ in range(rng.randint(1, 6))]
    subject_words = corpus.text(rng, rng.randint(3, 8))[0].rstrip(".")
    cjk = rng.random() < 0.03
    if cjk:
        sentence = _CJK_SENTENCES[number % len(_CJK_SENTENCES)]
        paragraphs.insert(0, sentence)
        subject_words = sentence[:12]
    if number % RARE_EVERY == RARE_OFFSET:
        paragraphs[-1] += f" Bitte die {RARE_WORD} angeben."
    greeting = rng.choice(("Hallo", "Bonjour", "Hello", "Liebe Grüße", "Cordialement"))
    paragraphs.append(f"{greeting}, {sender.name}")
    charset = _charset_for(subject_words + sender.name, rng)
    headers = [
        f"Return-Path: <{sender.address}>",
        "Received: from mx.example.org by imap.example.org; " + email.utils.format_datetime(date),
        f"From: {_address(sender, charset)}",
        f"To: {', '.join(_address(p) for p in to)}",
        *([f"Cc: {', '.join(_address(p) for p in cc)}"] if cc else []),
        f"Subject: {_encoded(subject_words, charset)}",
        f"Date: {email.utils.format_datetime(date)}",
        f"Message-ID: <sb.{number}.{rng.getrandbits(40):010x}@{sender.address.split('@')[1]}>",
        "MIME-Version: 1.0",
    ]
    if number % 97 == 3:
        headers.append(f"List-Id: Projekt {number % 7} <projekt{number % 7}.lists.example.org>")
    body_text = "\r\n\r\n".join(paragraphs)
    kind = rng.random()
    boundary = f"=_sb_{rng.getrandbits(48):012x}"
    if kind < 0.65:
        body = _text_part(body_text, _charset_for(body_text, rng))
    elif kind < 0.77:
        body = _html_part(paragraphs)
    elif kind < 0.90:
        body = _multipart(
            "alternative", boundary, [_text_part(body_text, "utf-8"), _html_part(paragraphs)]
        )
    else:
        inner = (
            _text_part(body_text, "utf-8")
            if rng.random() < 0.6
            else _multipart(
                "alternative",
                boundary + "_alt",
                [_text_part(body_text, "utf-8"), _html_part(paragraphs)],
            )
        )
        attachments = [_attachment_part(rng, number) for _ in range(rng.choice((1, 1, 2)))]
        body = _multipart("mixed", boundary, [inner, *attachments])
    raw = ("\r\n".join([*headers, *body]) + "\r\n").encode()
    flags = ("\\Seen",) if rng.random() < 0.8 else ()
    internal = date + dt.timedelta(seconds=rng.randint(1, 600))
    return Generated(number, raw, internal, _placements(rng, number, recipient), flags)
