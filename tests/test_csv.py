"""Tests of the CSV source: splitting, header matching, errors with their lines, round trips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from csv_writer import format_csv
from hypothesis import given, settings
from hypothesis import strategies as st

from imapsync_decl.config.documents import WIRE_SAFE
from imapsync_decl.errors import Problem, Severity
from imapsync_decl.secrets import Secret
from imapsync_decl.sources.csv import (
    HEADER_SYNONYMS,
    QUOTES,
    SEPARATORS,
    CsvAccount,
    CsvResult,
    RawRecord,
    detect_separator,
    fold_header,
    load_csv,
    parse_csv,
    split_records,
)

PATH = "staff.csv"


def parse(text: str) -> CsvResult:
    return parse_csv(text.encode("utf-8"), PATH)


def errors(result: CsvResult) -> list[tuple[int | None, str]]:
    return [(p.line, p.message) for p in result.problems if p.severity is Severity.ERROR]


def warnings(result: CsvResult) -> list[tuple[int | None, str]]:
    return [(p.line, p.message) for p in result.problems if p.severity is Severity.WARNING]


def rows(result: CsvResult) -> list[tuple[int, str, str, str | None, str | None]]:
    return [
        (a.line, a.login, a.password.reveal(), a.email, a.archive_user) for a in result.accounts
    ]


# --------------------------------------------------------------------------- separators


@pytest.mark.parametrize("sep", [";", ",", "|", "\t"])
def test_each_separator_is_detected_and_used(sep: str) -> None:
    text = sep.join(["login", "password", "email"]) + "\n" + sep.join(["alice", "pw", "a@x"])
    result = parse(text + "\n")
    assert result.separator == sep
    assert result.ok
    assert rows(result) == [(2, "alice", "pw", "a@x", None)]


def test_separator_is_the_most_frequent_outside_quotes() -> None:
    # Inside the quoted header cell there are three commas; outside, two semicolons.
    text = 'login;password;"a,b,c,d"\nalice;pw;x\n'
    assert detect_separator(text) == ";"
    result = parse(text)
    assert result.separator == ";"
    assert warnings(result) == [(1, 'column "a,b,c,d" is not used')]
    assert rows(result) == [(2, "alice", "pw", None, None)]


def test_separator_tie_prefers_the_earlier_candidate() -> None:
    assert detect_separator("a;b,c\n") == ";"
    assert detect_separator("a|b\tc\n") == "|"
    assert detect_separator("a\tb,c\n") == ","


def test_header_without_separator_is_one_column() -> None:
    result = parse("login password\nalice pw\n")
    assert result.separator is None
    assert result.accounts == ()
    assert warnings(result) == [(1, 'column "login password" is not used')]
    messages = [m for _, m in errors(result)]
    assert [line for line, _ in errors(result)] == [1, 1]
    assert messages[0].startswith('missing column "login" (accepted names: IMAP-Benutzername, ')
    assert messages[1].startswith('missing column "password" (accepted names: IMAP-Kennwort, ')


# --------------------------------------------------------------------------- quoting


@pytest.mark.parametrize("quote", ['"', "'"])
def test_both_quote_characters_with_doubled_quotes(quote: str) -> None:
    q = quote
    text = f"{q}login{q};{q}password{q}\n{q}al{q}{q}ice{q};{q}{q}{q}pw{q}{q}{q}\n"
    result = parse(text)
    assert result.ok
    assert rows(result) == [(2, f"al{q}ice", f"{q}pw{q}", None, None)]


def test_the_other_quote_character_is_plain_data_inside_quotes() -> None:
    result = parse('login;password\n"it\'s";\'say "hi"\'\n')
    assert rows(result) == [(2, "it's", 'say "hi"', None, None)]


def test_separator_and_newline_inside_quotes_are_data() -> None:
    # Line breaks are data, though not in the columns that reach the server (see below).
    text = 'login,password,note\nalice,"a,b","x\nc\r\nd"\nbob,pw,\n'
    result = parse(text)
    assert result.ok
    assert rows(result) == [(2, "alice", "a,b", None, None), (5, "bob", "pw", None, None)]
    assert split_records(text, ",")[1].fields == ("alice", "a,b", "x\nc\r\nd")


def test_quote_inside_an_unquoted_field_is_data() -> None:
    result = parse("login;password\nO'Brien;a\"b\nx'y';z\"\n")
    assert result.ok
    assert rows(result) == [(2, "O'Brien", 'a"b', None, None), (3, "x'y'", 'z"', None, None)]


def test_empty_quoted_field() -> None:
    result = parse('login;password;email\nalice;pw;""\n')
    assert rows(result) == [(2, "alice", "pw", None, None)]


# --------------------------------------------------------------------------- encoding, lines


def test_bom_is_dropped_and_not_counted() -> None:
    data = b"\xef\xbb\xbflogin;password\nalice;pw\n;x\n"
    result = parse_csv(data, PATH)
    assert rows(result) == [(2, "alice", "pw", None, None)]
    assert errors(result) == [(3, 'column "login" is empty')]


def test_bom_in_the_middle_is_data() -> None:
    result = parse("login;password\n\ufeffalice;pw\n")
    assert rows(result) == [(2, "\ufeffalice", "pw", None, None)]


def test_crlf_line_endings() -> None:
    result = parse("login;password;email\r\nalice;pw;a@x\r\nbob;pw2;\r\n")
    assert result.ok
    assert rows(result) == [(2, "alice", "pw", "a@x", None), (3, "bob", "pw2", None, None)]


def test_empty_lines_are_skipped_but_counted() -> None:
    text = "\n\r\nlogin;password\n\nalice;pw\r\n\r\n\nbob;pw\n\n"
    result = parse(text)
    assert result.ok
    assert rows(result) == [(5, "alice", "pw", None, None), (8, "bob", "pw", None, None)]


def test_lone_carriage_return_outside_quotes_is_an_error() -> None:
    result = parse("login;password\nalice;p\rw\nbob;pw\n")
    assert errors(result) == [
        (2, "carriage return without line feed in field 2 (lines must end with LF or CRLF)")
    ]
    assert rows(result) == [(3, "bob", "pw", None, None)]


def test_invalid_utf8_names_the_line_and_stops() -> None:
    data = b"\xef\xbb\xbflogin;password\n'multi\nline';pw\nm\xfcller;pw\n;\n"
    result = parse_csv(data, PATH)
    assert errors(result) == [(4, "not valid UTF-8 (save the file as UTF-8)")]
    assert result.problems == (
        Problem(PATH, 4, None, None, "not valid UTF-8 (save the file as UTF-8)"),
    )
    assert result.accounts == ()
    assert result.separator is None


def test_invalid_utf8_on_the_first_line() -> None:
    result = parse_csv(b"\xfflogin;password\n", PATH)
    assert errors(result) == [(1, "not valid UTF-8 (save the file as UTF-8)")]


# --------------------------------------------------------------------------- header


def test_german_headers() -> None:
    text = (
        "IMAP-Benutzername;IMAP-Kennwort;E-Mail-Adresse;MailStore-Benutzername\n"
        "mueller;geheim;mueller@example.org;Müller\n"
    )
    result = parse(text)
    assert result.ok
    assert result.problems == ()
    assert rows(result) == [(2, "mueller", "geheim", "mueller@example.org", "Müller")]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("IMAP user,Passwort,E-Mail", ("alice", "pw", "a@x", None)),
        ("login,PASSWORD,email,Archivbenutzer", ("alice", "pw", "a@x", "a@x")),
        ("imap_user_name,imap-password,e_mail,archive-user", ("alice", "pw", "a@x", "a@x")),
        ("User Name,Kennwort,Mail,MailStore User", ("alice", "pw", "a@x", "a@x")),
    ],
)
def test_header_variants(header: str, expected: tuple[str, str, str, str | None]) -> None:
    n = header.count(",") + 1
    values = ["alice", "pw", "a@x", "a@x"][:n]
    result = parse(header + "\n" + ",".join(values) + "\n")
    assert result.problems == ()
    assert rows(result) == [(2, *expected)]


def test_columns_may_come_in_any_order() -> None:
    result = parse("E-Mail;Passwort;Benutzer\na@x;pw;alice\n")
    assert rows(result) == [(2, "alice", "pw", "a@x", None)]


def test_unknown_column_is_a_warning() -> None:
    result = parse("login;Comment;password;\nalice;likes cats;pw;\n")
    assert result.ok
    assert warnings(result) == [
        (1, 'column "Comment" is not used'),
        (1, "column 4 has no name and is not used"),
    ]
    assert rows(result) == [(2, "alice", "pw", None, None)]


def test_two_columns_for_one_key_is_an_error() -> None:
    result = parse("login;password;user\nalice;pw;bob\n")
    assert errors(result) == [(1, 'columns "login" and "user" are both the login column')]
    assert result.accounts == ()


def test_missing_required_column_on_the_header_line() -> None:
    result = parse("\n\nlogin;email\nalice;a@x\n")
    assert not result.ok
    ((line, message),) = errors(result)
    assert line == 3
    assert message.startswith('missing column "password" (accepted names: IMAP-Kennwort, ')
    assert "Passwort" in message
    assert result.accounts == ()


def test_header_errors_do_not_hide_row_errors() -> None:
    result = parse("login;email\nalice;a@x\nalice;b@x;x\n;c@x\n")
    assert [line for line, _ in errors(result)] == [1, 3, 4]
    assert errors(result)[1:] == [(3, "expected 2 fields, found 3"), (4, 'column "login" is empty')]


def test_empty_file_is_an_error() -> None:
    for data in (b"", b"\xef\xbb\xbf", b"\n\r\n\n"):
        result = parse_csv(data, PATH)
        assert errors(result) == [(None, "the file is empty (a header row is required)")]


def test_header_only_is_a_warning() -> None:
    result = parse("login;password\n\n")
    assert result.ok
    assert result.accounts == ()
    assert warnings(result) == [(1, "no data rows after the header")]


def test_malformed_header_stops() -> None:
    result = parse("'login'x;password\nalice;pw\n")
    assert [line for line, _ in errors(result)] == [1]
    assert errors(result)[0][1].startswith(
        "header row: unexpected character after closing quote in field 1"
    )
    assert result.accounts == ()


def test_header_synonyms_cover_the_published_spellings() -> None:
    required = {
        "login": [
            "IMAP-Benutzername",
            "IMAP username",
            "IMAP user name",
            "IMAP user",
            "IMAP login",
            "login",
            "user",
            "username",
            "user name",
            "Benutzername",
            "Benutzer",
        ],
        "password": [
            "IMAP-Kennwort",
            "IMAP password",
            "password",
            "Passwort",
            "Kennwort",
            "IMAP-Passwort",
            "pass",
        ],
        "email": ["E-Mail-Adresse", "e-mail address", "email address", "email", "e-mail", "mail"],
        "archive_user": [
            "MailStore-Benutzername",
            "MailStore user name",
            "MailStore user",
            "archive user",
            "archive user name",
            "Archiv-Benutzer",
            "Archivbenutzer",
        ],
    }
    assert set(HEADER_SYNONYMS) == set(required)
    for key, spellings in required.items():
        folded = {fold_header(s) for s in HEADER_SYNONYMS[key]}
        assert fold_header(key) in folded
        for spelling in spellings:
            assert fold_header(spelling) in folded, (key, spelling)


def test_no_folded_header_spelling_names_two_columns() -> None:
    seen: dict[str, str] = {}
    for key, spellings in HEADER_SYNONYMS.items():
        for spelling in spellings:
            folded = fold_header(spelling)
            assert seen.setdefault(folded, key) == key, (spelling, key, seen[folded])


def test_fold_header() -> None:
    assert fold_header(" E-Mail_Adresse ") == "emailadresse"
    assert fold_header("IMAP-Benutzername") == fold_header("imap benutzer_name")


# --------------------------------------------------------------------------- rows


def test_fields_are_not_trimmed() -> None:
    result = parse("login ; password ;archive user\n alice ;  pw  ; Alice \n")
    assert result.ok
    assert rows(result) == [(2, " alice ", "  pw  ", None, " Alice ")]


def test_empty_optional_fields_are_none() -> None:
    result = parse("login;password;email;archive_user\nalice;pw;;\nbob;pw;b@x;Bob\n")
    assert rows(result) == [
        (2, "alice", "pw", None, None),
        (3, "bob", "pw", "b@x", "Bob"),
    ]


def test_each_row_error_with_its_line() -> None:
    text = (
        "login;password;email\n"  # 1
        'multi;"line\n'  # 2
        'pass\nword";m@x\n'  # 3-4
        "few;fields\n"  # 5
        "too;many;fields;here\n"  # 6
        ";pw;x@y\n"  # 7
        "carol;;\n"  # 8
        "'dave'!;pw;\n"  # 9
        "MULTI;pw;\n"  # 10
        "\n"  # 11
        "erin;pw;e@x\n"  # 12
        "'frank;pw;\n"  # 13
        "grace;pw;\n"  # 14
    )
    result = parse(text)
    assert result.separator == ";"
    assert errors(result) == [
        (2, WIRE_SAFE.message),  # the password's line breaks
        (5, "expected 3 fields, found 2"),
        (6, "expected 3 fields, found 4"),
        (7, 'column "login" is empty'),
        (8, 'column "password" is empty'),
        (
            9,
            "unexpected character after closing quote in field 1 (a field that starts "
            "with ' or \" is quoted: quote the whole field and double the quote character "
            "inside it)",
        ),
        (10, 'duplicate login "MULTI" (first on line 2)'),
        (
            13,
            "field 1 starts with the quote ' and never closes (a field that starts "
            "with ' or \" is quoted: quote the whole field and double the quote character "
            "inside it)",
        ),
    ]
    assert rows(result) == [(12, "erin", "pw", "e@x", None)]
    assert all(p.col is None and p.path == PATH for p in result.problems)
    assert [p.field for p in result.problems] == ["password"] + [None] * 7
    assert str(result.problems[1]) == "staff.csv:5: expected 3 fields, found 2"


def test_empty_login_and_password_both_reported() -> None:
    result = parse("login;password\n;\n")
    assert errors(result) == [(2, 'column "login" is empty'), (2, 'column "password" is empty')]


def test_duplicate_login_is_case_insensitive_and_names_both_lines() -> None:
    text = "login;password\nStraße;pw\nalice;pw\n\nSTRASSE;pw2\nALICE;pw3\nalice;pw4\n"
    result = parse(text)
    assert errors(result) == [
        (5, 'duplicate login "STRASSE" (first on line 2)'),
        (6, 'duplicate login "ALICE" (first on line 3)'),
        (7, 'duplicate login "alice" (first on line 3)'),
    ]
    assert rows(result) == [(2, "Straße", "pw", None, None), (3, "alice", "pw", None, None)]


def test_errors_never_show_a_password() -> None:
    secret = "Tr0ub4dor&3"
    text = (
        "login;password;email\n"
        f"alice;{secret};a@x\n"
        f"ALICE;{secret};a@x\n"  # duplicate login
        f"bob;{secret};b@x;extra\n"  # too many fields
        f"carol;'{secret}'{secret};\n"  # text after closing quote
        f"dave;{secret}\r{secret};\n"  # lone CR
        f";{secret};\n"  # empty login
        f"erin;'{secret}\n"  # unterminated quote
    )
    result = parse(text)
    assert len(errors(result)) == 6
    for problem in result.problems:
        assert secret not in problem.message
        assert secret not in str(problem)
    assert secret not in repr(result)
    assert secret not in str(result.accounts)


def test_ok_only_counts_errors() -> None:
    warning = Problem(PATH, 1, None, None, "w", Severity.WARNING)
    error = Problem(PATH, 2, None, None, "e")
    assert CsvResult((), (warning,), ";").ok
    assert not CsvResult((), (warning, error), ";").ok


def test_account_fields() -> None:
    result = parse("login;password;email;archive_user\nalice;pw;a@x;Alice\n")
    assert result.accounts == (CsvAccount(2, "alice", Secret("pw"), "a@x", "Alice"),)


# --------------------------------------------------------------------------- files


def write(tmp_path: Path, text: str, mode: int) -> Path:
    file = tmp_path / "accounts.csv"
    file.write_text(text, encoding="utf-8")
    os.chmod(file, mode)
    return file


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_group_or_world_readable_file_gets_a_warning(tmp_path: Path, mode: int) -> None:
    file = write(tmp_path, "login;password\nalice;pw\n", mode)
    result = load_csv(file, "profiles.d/accounts.csv")
    assert result.ok
    assert warnings(result) == [
        (None, f"file is readable by group/others (mode {mode:04o}); chmod 600 it")
    ]
    assert result.problems[0].path == "profiles.d/accounts.csv"
    assert rows(result) == [(2, "alice", "pw", None, None)]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_private_file_gets_no_warning(tmp_path: Path) -> None:
    file = write(tmp_path, "login;password\nalice;pw\n", 0o600)
    result = load_csv(file, "accounts.csv")
    assert result.problems == ()
    assert result.separator == ";"
    assert rows(result) == [(2, "alice", "pw", None, None)]


def test_parse_csv_gives_no_permission_warning() -> None:
    assert parse("login;password\nalice;pw\n").problems == ()


def test_missing_file_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    result = load_csv(tmp_path / "nope.csv", "nope.csv")
    assert not result.ok
    assert result.accounts == ()
    ((problem),) = result.problems
    assert problem.path == "nope.csv"
    assert problem.line is None
    assert problem.is_error
    assert problem.message.startswith("cannot read the CSV file: ")


def test_directory_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    result = load_csv(tmp_path, "dir")
    assert not result.ok
    assert [p.line for p in result.problems] == [None]


def test_file_problems_use_the_display_path(tmp_path: Path) -> None:
    file = write(tmp_path, "login;password\nalice;\n", 0o600)
    result = load_csv(file, "shown/name.csv")
    assert [str(p) for p in result.problems] == ['shown/name.csv:2: column "password" is empty']


# --------------------------------------------------------------------------- splitting, writing


def test_split_records_lines_and_empty_lines() -> None:
    text = 'a;"b\nc"\n\n""\nx;\r\n'
    assert split_records(text, ";") == [
        RawRecord(1, ("a", "b\nc")),
        RawRecord(4, ("",)),
        RawRecord(5, ("x", "")),
    ]


def test_split_records_rejects_unknown_separator() -> None:
    with pytest.raises(ValueError, match="separator"):
        split_records("a b", " ")


def test_format_csv_quoting_rule() -> None:
    out = format_csv(
        [
            ["plain", "O'Brien", "a;b", "", " sp "],
            ["x\ny", "c\rd", 'q"', "\ufeffbom", "a,b|c\td"],
            [""],
        ],
        ";",
        "'",
    )
    assert out == (
        "plain;'O''Brien';'a;b';; sp \r\n'x\ny';'c\rd';'q\"';'\ufeffbom';a,b|c\td\r\n''\r\n"
    )


def test_format_csv_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="separator"):
        format_csv([["a"]], ":", '"')
    with pytest.raises(ValueError, match="quote"):
        format_csv([["a"]], ";", "`")
    with pytest.raises(ValueError, match="at least one field"):
        format_csv([[]], ";", '"')


# --------------------------------------------------------------------------- properties

separators = st.sampled_from(SEPARATORS)
quotes = st.sampled_from(QUOTES)
records = st.lists(st.lists(st.text(), min_size=1, max_size=5), max_size=8)


@given(records, separators, quotes)
def test_split_records_reads_back_what_format_csv_writes(
    data: list[list[str]], sep: str, quote: str
) -> None:
    text = format_csv(data, sep, quote)
    parsed = split_records(text, sep)
    assert [list(r.fields) for r in parsed] == data
    assert all(r.error is None for r in parsed)
    # Each record starts one line after the newlines written before it.
    expected_lines = []
    line = 1
    for row in data:
        expected_lines.append(line)
        line += format_csv([row], sep, quote).count("\n")
    assert [r.line for r in parsed] == expected_lines


wire_safe = st.text(alphabet=st.characters(codec="utf-8", blacklist_characters="\r\n\x00"))
nonempty = wire_safe.filter(bool)
emails = st.one_of(st.just(""), st.from_regex(r"\A[a-z0-9.'\"@]{1,10}@[a-z0-9.-]{1,10}\Z"))
accounts = st.lists(
    st.tuples(nonempty, nonempty, emails, wire_safe),
    max_size=6,
    unique_by=lambda row: row[0].casefold(),
)


@given(accounts, separators, quotes, st.booleans())
def test_parse_csv_reads_back_what_format_csv_writes(
    data: list[tuple[str, str, str, str]], sep: str, quote: str, bom: bool
) -> None:
    header = ["login", "password", "email", "archive_user"]
    text = format_csv([header, *data], sep, quote)
    raw = text.encode("utf-8")
    result = parse_csv(b"\xef\xbb\xbf" + raw if bom else raw, PATH)
    assert result.separator == sep
    assert errors(result) == []
    expected_warnings = [] if data else [(1, "no data rows after the header")]
    assert warnings(result) == expected_warnings
    got = [(a.login, a.password.reveal(), a.email, a.archive_user) for a in result.accounts]
    assert got == [(lo, pw, em or None, au or None) for lo, pw, em, au in data]
    assert [a.line for a in result.accounts] == [
        1 + format_csv([header, *data[:i]], sep, quote).count("\n") for i in range(len(data))
    ]


def check_result(result: CsvResult, line_count: int) -> None:
    assert isinstance(result, CsvResult)
    for problem in result.problems:
        assert isinstance(problem, Problem)
        assert problem.path == PATH
        assert problem.line is None or 1 <= problem.line <= line_count
    # A record with an error gives no account.
    error_lines = {p.line for p in result.problems if p.is_error}
    assert not any(a.line in error_lines for a in result.accounts)
    for account in result.accounts:
        assert account.login
        assert account.password


@given(st.binary())
def test_parse_csv_never_raises_on_bytes(data: bytes) -> None:
    check_result(parse_csv(data, PATH), data.count(b"\n") + 1)


@given(st.text())
def test_parse_csv_never_raises_on_text(text: str) -> None:
    check_result(parse(text), text.count("\n") + 1)


csvish = st.text(alphabet=st.sampled_from(list("ab;,|\t'\"\r\n \ufeff")), max_size=60)


@settings(max_examples=300)
@given(st.sampled_from(["login;password;email\n", "user,pass\n", "login|password|x\n", ""]), csvish)
def test_parse_csv_never_raises_on_csv_like_text(header: str, body: str) -> None:
    text = header + body
    check_result(parse(text), text.count("\n") + 1)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("x;'a,b,c'\n", ";"),
        ("'a;b;c',x,y\n", ","),
        ('"a|b""|c"\tx\n', "\t"),
        ("O'Brien,x;y;z\n", ";"),
        ("\r\n\nlogin|password\nx,y,z,w\n", "|"),
        ("'never closed;a;b\n", None),
        ("login\nx;y\n", None),
        ("", None),
    ],
)
def test_detect_separator(header: str, expected: str | None) -> None:
    assert detect_separator(header) == expected


# --------------------------------------------------------------------------- what reaches IMAP


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ('"alice\r\nZ9 DELETE INBOX";pw;;', "login"),
        ('"alice\nx";pw;;', "login"),
        ("alice;pw\x00x;;", "password"),
        ('alice;"pw\r";;', "password"),
        ('alice;pw;"a@x\r\nZ9 LOGOUT";', "email"),
        ('alice;pw;;"Alice\nB"', "archive_user"),
    ],
)
def test_line_breaks_and_nul_in_values_that_reach_imap_are_errors(row: str, field: str) -> None:
    result = parse("login;password;email;archive_user\n" + row + "\nbob;pw;;\n")
    (problem,) = [p for p in result.problems if p.is_error]
    assert str(problem) == f"staff.csv:2: {field}: {WIRE_SAFE.message}"
    assert "pw" not in problem.message
    assert [r[1:] for r in rows(result)] == [("bob", "pw", None, None)]


@pytest.mark.parametrize("email", ["x y@@", "alice", "a@b@", " a@x ", "a@"])
def test_an_email_that_is_none_is_an_error(email: str) -> None:
    result = parse(f"login;password;email\nalice;pw;{email}\nbob;pw;b@x\n")
    assert errors(result) == [(2, "not an e-mail address")]
    assert [p.field for p in result.problems] == ["email"]
    assert rows(result) == [(3, "bob", "pw", "b@x", None)]
