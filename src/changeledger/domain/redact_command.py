"""Secrets inside a line: ``NAME=value`` and ``NAME: value`` anywhere, and command lines.

``mask_assignments`` masks the value after a name that holds a secret wherever the pair
stands: ``FOO=1 API_TOKEN=x make``, ``curl -H "X-Api-Key: x"``, ``--password=x``,
``{"token": "x"}``, an error that quotes ``'DB_PASSWORD=x'``. Only the value goes: the
rest of the line stays readable. Names are found by searching the text for the words that
secret names contain (``pass``, ``token``, ``key``...), which is much faster on large texts
than a pattern tried at every position.

``mask_options`` masks what only the command line says: the value of an option given as
the next word (``--password x``, ``-storepass x``) and the options of programs that take a
password in a short option (``mysql -px``, ``curl -u user:x``, ``sshpass -p x``,
``redis-cli -a x``, ``docker login -p x``). A program's options count only after its name
in the same simple command (``;``, ``&&``, ``|`` and line ends separate them), so
``docker run -u 1000:1000`` and ``mkdir -p dir`` keep their values.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Set
from string import ascii_letters, digits

MASK = "[REDACTED]"

_NAME_CHARACTERS = ascii_letters + digits + "_.-"
_NAME_RUN = re.compile(r"[A-Za-z0-9_.\-]+")
#: A name is looked for this far back from the secret word in it.
_LONGEST_NAME = 256
_QUOTES = "\"'"
#: What ends an unquoted value: blanks, quotes and shell or code punctuation.
_VALUE_END = re.compile(r"[\s\"'`,;&|<>()\[\]{}]|$")
#: Words that name the scheme of the credential that follows (``Bearer x``, ``token x``).
_SCHEMES = frozenset({"bearer", "basic", "token", "digest", "negotiate", "bot", "apikey"})
#: A shell variable, not a secret: ``TOKEN=$GITHUB_TOKEN make`` keeps it.
_REFERENCE = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")
#: What may stand before a name at the start of a line for it to be a line's assignment.
_LINE_LEAD = re.compile(r"[ \t]*(?:[Ee][Xx][Pp][Oo][Rr][Tt][ \t]+)?")
_LINE = "line"


def mask_assignments(
    text: str, words: tuple[str, ...], is_secret: Callable[[str], bool], *, command: bool
) -> str:
    """``text`` with the value after every secret ``NAME=`` or ``NAME:`` masked.

    ``words`` are lower-case fragments every secret name contains; ``is_secret`` decides.
    A pair that starts a line (dotenv, YAML, INI, ``export NAME=``) is masked to the end
    of the line, except ``NAME=value`` in a ``command``: there the value ends the word
    (``API_TOKEN=x make``), as the shell reads it.
    """
    lower = text.lower() if text.isascii() else text.encode("ascii", "replace").decode().lower()
    hits = sorted({i for word in words for i in _find_all(lower, word)})
    spans: list[tuple[int, int]] = []
    done = 0
    for hit in hits:
        if hit < done:
            continue
        start, end = _name_around(text, hit)
        done = end
        if not is_secret(text[start:end].rstrip(".-")):
            continue
        span = _value_span(text, start, end, command=command)
        if span is not None:
            spans.append(span)
            done = span[1]
    return _replace(text, spans)


def _find_all(text: str, word: str) -> list[int]:
    found = []
    index = text.find(word)
    while index != -1:
        found.append(index)
        index = text.find(word, index + len(word))
    return found


def _name_around(text: str, index: int) -> tuple[int, int]:
    before = text[max(index - _LONGEST_NAME, 0) : index]
    start = index - (len(before) - len(before.rstrip(_NAME_CHARACTERS)))
    match = _NAME_RUN.match(text, index)
    return start, index if match is None else match.end()


def _value_span(text: str, start: int, end: int, *, command: bool) -> tuple[int, int] | None:
    """The span of the value assigned to the name at ``start:end``, if it is assigned."""
    found = _value_start(text, start, end, command=command)
    if found is None:
        return None
    value, quote = found
    if quote == _LINE:
        line_end = text.find("\n", value)
        line_end = len(text) if line_end == -1 else line_end
        return value, line_end - 1 if text[line_end - 1] == "\r" else line_end
    if text[value] in _QUOTES:
        close = _closing_quote(text, value)
        return (value + 1, close) if close > value + 1 else None
    if quote:
        # "X-Api-Key: x" or 'TOKEN=x' inside quotes: the value runs to the closing quote.
        close = text.find(quote, value)
        line_end = text.find("\n", value)
        if close > value and (line_end == -1 or close < line_end):
            return value, close
    value_end = _token_end(text, value)
    if command and _REFERENCE.fullmatch(text, value, value_end):
        return None
    if text[value:value_end].lower() in _SCHEMES:
        after = _skip_blanks(text, value_end)
        if value_end < after < len(text):
            value_end = max(value_end, _token_end(text, after))  # Authorization: Bearer x
    return (value, value_end) if value_end > value else None


def _value_start(text: str, start: int, end: int, *, command: bool) -> tuple[int, str] | None:
    """Where the value after the name at ``start:end`` starts, and the quote the pair is
    inside of (``'TOKEN=x'``), when the name is followed by ``=``, ``=>`` or ``:``."""
    quote = text[start - 1] if start > 0 and text[start - 1] in _QUOTES else ""
    position = end
    if quote and text.startswith(quote, position):
        position += 1  # "name": value
        quote = ""
    position = _skip_blanks(text, position)
    if text.startswith(("==", ":=", "::", "://"), position):
        return None  # a comparison, a walrus, a scope, a URL: not an assignment
    separator = text[position : position + 2] if text.startswith("=>", position) else ""
    separator = separator or text[position : position + 1]
    if separator not in ("=", "=>", ":"):
        return None
    value = _skip_blanks(text, position + len(separator))
    if value >= len(text) or text[value] in "\r\n" or text.startswith("[REDACTED", value):
        return None
    if (separator == ":" or not command) and _starts_line(text, start - len(quote)):
        return value, _LINE  # a dotenv, YAML or INI line: its value runs to the line's end
    return value, quote


def _skip_blanks(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t":
        position += 1
    return position


def _starts_line(text: str, position: int) -> bool:
    line_start = text.rfind("\n", 0, position) + 1
    lead = _LINE_LEAD.match(text, line_start, position)
    return lead is not None and lead.end() == position


def _closing_quote(text: str, position: int) -> int:
    """The closing quote of the string opened at ``position``, on the same line (its end
    if it is not closed there)."""
    quote = text[position]
    index = position + 1
    while index < len(text) and text[index] not in (quote, "\n"):
        index += 2 if text[index] == "\\" and quote == '"' else 1
    return min(index, len(text))


def _token_end(text: str, position: int) -> int:
    match = _VALUE_END.search(text, position)
    return len(text) if match is None else match.start()


# -- command lines ---------------------------------------------------------------------------

_MYSQL = frozenset(
    {
        "mysql",
        "mysqldump",
        "mysqladmin",
        "mysqlimport",
        "mysqlcheck",
        "mysqlshow",
        "mysqlpump",
        "mysqlslap",
        "mysqlbinlog",
        "mariadb",
        "mariadb-dump",
        "mariadb-admin",
        "mariadb-import",
        "mariadb-check",
    }
)
#: Programs whose ``-p`` takes a password, next to it or as the next word.
_PASSWORD_P = frozenset({"sshpass", "mongo", "mongosh", "mongodump", "mongorestore", "mongoexport"})
#: Programs with a ``login`` subcommand whose ``-p`` is the password.
_LOGIN = frozenset({"docker", "podman", "nerdctl", "buildah", "skopeo", "helm", "oras"})
#: Options whose value is ``user:password`` (curl).
_CURL_USER = frozenset({"-u", "-U", "--user", "--proxy-user"})

#: An option: a word that starts with ``-`` (quotes only separate words here); the
#: operators that end a simple command; the names of the programs above.
_OPTION = re.compile(r"-(?<![^\s\"'`;&|()<>]-)[^\s\"'`;&|()<>]*")
_SEPARATOR = re.compile(r"[;&|()`\n]")
_PROGRAM = re.compile(
    r"(?<![^\s\"'`;&|()<>/])(?:"
    + "|".join(re.escape(name) for name in sorted({*_MYSQL, *_PASSWORD_P, *_LOGIN}, key=len)[::-1])
    + r"|curl|login|redis-cli)(?![^\s\"'`;&|()<>])"
)

#: What a pending option waits for: any value, or ``user:password`` (mask the password).
VALUE = "value"
CREDENTIALS = "credentials"


def mask_options(
    text: str, is_secret_option: Callable[[str], bool], programs: set[str]
) -> tuple[str, str | None]:
    """``text`` (a command line) with option values that are secrets masked.

    ``programs`` holds the program names seen so far in the simple command (an argv's
    earlier elements) and is updated. Returns the masked text and what the next argv
    element is, if the text ends with an option that takes it (``--password``).
    """
    spans: list[tuple[int, int]] = []
    skip_to = 0
    pending: str | None = None
    commands = _Commands(text, programs)
    for match in _OPTION.finditer(text):
        if match.start() < skip_to:
            continue
        kind, attached = _option_kind(match.group(), is_secret_option, commands.at(match.start()))
        if attached is not None:
            spans.extend(_masked(match.start() + attached, match.end(), kind, text))
        elif kind is not None:
            value = _next_value(text, match.end())
            if value is None:
                if not text[match.end() :].strip():
                    pending = kind  # the value is the next argv element
                continue
            spans.extend(_masked(value[0], value[1], kind, text))
            skip_to = value[1] + 1
    after = commands.at(len(text))
    programs.clear()
    programs.update(after)
    return _replace(text, spans), pending


class _Commands:
    """The programs named in the simple command around a position of a command line (read
    only when an option asks: most lines have no option that depends on its program)."""

    def __init__(self, text: str, inherited: Set[str]) -> None:
        self.text = text
        self.inherited = frozenset(inherited)
        self._separators: list[int] | None = None

    def at(self, position: int) -> frozenset[str]:
        if self._separators is None:
            self._separators = [m.start() for m in _SEPARATOR.finditer(self.text)]
        index = bisect.bisect_left(self._separators, position)
        start = self._separators[index - 1] + 1 if index else 0
        named = {
            m.group().rsplit("/", 1)[-1].lower()
            for m in _PROGRAM.finditer(self.text, start, position)
        }
        return frozenset(named | self.inherited) if not index else frozenset(named)


def mask_value(value: str, kind: str) -> str:
    """An argv element that is the value of the option before it."""
    return _replace(value, _masked(0, len(value), kind, value))


def _option_kind(
    word: str, is_secret_option: Callable[[str], bool], programs: Set[str]
) -> tuple[str | None, int | None]:
    """(what ``word`` takes, where its value starts inside it if attached)."""
    if not word.startswith("-") or word == "-":
        return None, None
    name, equals, _ = word.partition("=")
    if "curl" in programs and name in _CURL_USER:
        return CREDENTIALS, (len(name) + 1 if equals else None)
    if equals:
        return None, None  # --password=x: mask_assignments masks it
    if is_secret_option(word):
        return VALUE, None
    if word.startswith("--"):
        return None, None
    return _short_option_kind(word[:2], len(word) > 2, programs)


def _short_option_kind(
    option: str, attached: bool, programs: Set[str]
) -> tuple[str | None, int | None]:
    """What the single-letter ``option`` of the programs seen takes (``-pSECRET``)."""
    at = 2 if attached else None
    takes_p = bool(programs & _PASSWORD_P) or ("login" in programs and bool(programs & _LOGIN))
    if option in ("-u", "-U") and "curl" in programs and attached:
        return CREDENTIALS, 2  # -uuser:password
    if option == "-p" and (takes_p or (attached and programs & _MYSQL)):
        return VALUE, at  # mysql -p x would be the database: only -px is its password
    if option == "-a" and "redis-cli" in programs:
        return VALUE, at
    return None, None


def _next_value(text: str, position: int) -> tuple[int, int] | None:
    """The span of the word after ``position`` (inside its quotes), unless it is an
    option or the command ends first."""
    start = _skip_blanks(text, position)
    if start >= len(text) or text[start] in "\r\n;&|()<>`-":
        return None
    if text[start] in _QUOTES:
        close = _closing_quote(text, start)
        return (start + 1, close) if close > start + 1 else None
    end = start
    while end < len(text) and not text[end].isspace() and text[end] not in "\"'`;&|()<>":
        end += 1
    return (start, end) if end > start else None


def _masked(start: int, end: int, kind: str | None, text: str) -> list[tuple[int, int]]:
    """The span to mask of a value: all of it, or the password of ``user:password`` (the
    user when there is no password: ``-u sk_live_x:``)."""
    if start >= end:
        return []
    if kind != CREDENTIALS:
        return [(start, end)]
    colon = text.find(":", start, end)
    if colon == -1:
        return []  # no password given: curl asks for it
    if colon + 1 < end:
        return [(colon + 1, end)]
    return [(start, colon)]


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return text
    out = []
    position = 0
    for start, end in sorted(spans):
        if start < position:
            continue
        out.append(text[position:start])
        out.append(MASK)
        position = end
    out.append(text[position:])
    return "".join(out)
