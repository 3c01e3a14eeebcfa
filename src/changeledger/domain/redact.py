"""Secrets kept out of the ledger, the logs and rendered diffs.

A ``Redactor`` rewrites what a tool call says before it is written: the values of arguments
whose names say they hold a secret (``password``, ``api_key``, ``access_token``...), text
that looks like a credential wherever it appears (cloud and service tokens, bearer tokens,
private keys and their bodies, ``TOKEN=...`` lines and ``NAME=value`` pairs inside lines,
passwords in URLs), secrets on command lines (``--password x``, ``mysql -px``, ``curl -u
user:x``) and everything but the paths of a call that reads or writes a sensitive file
(``.env``, keys, credential stores), whether it names the file, reaches it through a symlink
or patches it. Long result text is cut only after all that, so that no secret escapes by
being cut in half. Users add argument names, patterns and file globs: in code, or through
the environment for the command line::

    CHANGELEDGER_REDACT_KEYS="session_id,otp"              # comma-separated names
    CHANGELEDGER_REDACT_PATTERNS="corp-[0-9a-f]{32}"       # one regular expression per line
    CHANGELEDGER_SENSITIVE_FILES="*.tfvars,secrets/*"      # comma-separated globs

File contents are not rewritten: the ledger must hold what apply will write. Rendered diffs
mask the lines of sensitive files instead, unless the reader asks to see them.
"""

from __future__ import annotations

import codecs
import fnmatch
import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from changeledger.domain.errors import ValidationError
from changeledger.domain.models import JSONValue, PlanError, ToolCall
from changeledger.domain.redact_command import (
    mask_assignments,
    mask_options,
    mask_value,
)
from changeledger.domain.redact_keys import mask_key_bodies

MASK = "[REDACTED]"
ENV_KEYS = "CHANGELEDGER_REDACT_KEYS"
ENV_PATTERNS = "CHANGELEDGER_REDACT_PATTERNS"
ENV_SENSITIVE_FILES = "CHANGELEDGER_SENSITIVE_FILES"

#: Text longer than this in a recorded result is cut (the caller still gets all of it).
RESULT_TEXT_LIMIT = 16 * 1024

#: A key whose name, lower-cased without ``_``, ``-``, ``.`` or spaces, ends with one of these
#: holds a secret: ``password``, ``db_password``, ``accessToken``, ``X-Api-Key``. Token
#: *counts* (``max_tokens``, ``input_tokens``) do not end with one and are kept.
SECRET_KEY_SUFFIXES = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "accountkey",
    "secretkey",
    "privatekey",
    "signingkey",
    "credential",
    "credentials",
    "authorization",
    "cookie",
    "sessionid",
)
#: Command-line options whose value is a secret besides those: ``-storepass``, ``-passin``,
#: ``--auth``, ``--creds``, ``--oauth2-bearer``.
SECRET_OPTION_SUFFIXES = ("pass", "passin", "passout", "auth", "creds", "bearer")
#: Lower-case fragments that every secret name above contains: text is searched for them
#: to find ``NAME=value`` pairs inside lines.
_NAME_WORDS = ("pass", "secret", "token", "key", "credential", "auth", "cookie", "session")
_OPTION_WORDS = ("creds", "bearer")
#: Text up to this size (messages, titles, reasons, most arguments) is also read for
#: command-line options (``curl -u user:x``); reading all of a large file that way costs
#: more than every other rule together.
_MESSAGE_SIZE = 4096
#: Argument names whose value is a command line (a string) or an argv (a list).
COMMAND_KEYS = frozenset({"argv", "command", "commands", "cmd", "script", "shell"})

#: Files whose content is a secret as a whole.
SENSITIVE_FILES = (
    ".env",
    ".env.*",
    "*.env",
    ".envrc",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.ppk",
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    ".netrc",
    ".npmrc",
    ".pypirc",
    ".pgpass",
    ".git-credentials",
    "credentials",
    "credentials.json",
    "secrets.yaml",
    "secrets.yml",
    "secrets.json",
    "*.tfvars",
)

#: Argument names that name the file a call reads or writes.
PATH_KEYS = frozenset({"path", "src", "dst", "file", "filename", "target", "source"})

#: (kind, pattern): text that is a credential wherever it appears. A pattern with a group
#: masks only that group (the label before it stays readable). Each one starts with literal
#: text and no ``\b``, so that the regex engine can skip ahead through large file contents;
#: that a match starts a word is checked when it is replaced (``_ANYWHERE`` lists the kinds
#: that need not). A look-behind right after the literal checks what comes before it, and
#: those characters (``_LOOK_BEHIND``) belong to the credential. ``_ON_LOWER`` patterns are
#: matched against the text lower-cased.
TOKEN_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "private-key",
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
        r"(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    ),
    ("private-key", r"Private-Lines:[ \t]*[0-9]+\r?\n((?:[A-Za-z0-9+/=]+(?:\r?\n|\Z))+)"),
    ("aws-access-key-id", r"(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA|A3T[A-Z0-9])[0-9A-Z]{16}\b"),
    ("github-token", r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b"),
    ("gitlab-token", r"gl(?:pat|dt|ft|soat|rt|cbt|imt|ptt|agent|oas)-[A-Za-z0-9_\-]{20,}"),
    ("gitlab-token", r"GR1348941[A-Za-z0-9_\-]{20,}"),
    ("slack-token", r"xox[abposr]-[A-Za-z0-9-]{10,}"),
    ("slack-webhook", r"hooks\.slack\.com/(?:services|workflows|triggers)/([A-Za-z0-9_/]{20,})"),
    ("discord-webhook", r"discord(?:app)?\.com/api/webhooks/[0-9]+/([A-Za-z0-9_\-]{20,})"),
    (
        "discord-token",
        r"\.(?:(?<=[MNO][A-Za-z0-9_\-]{23}\.)|(?<=[MNO][A-Za-z0-9_\-]{24}\.)"
        r"|(?<=[MNO][A-Za-z0-9_\-]{25}\.))[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,}",
    ),
    ("google-api-key", r"AIza[0-9A-Za-z_\-]{35}"),
    ("google-oauth", r"GOCSPX-[A-Za-z0-9_\-]{20,}"),
    ("google-oauth", r"ya29\.[0-9A-Za-z_\-]{20,}"),
    ("api-key", r"sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{20,}"),
    ("stripe-key", r"k_(?<=[rsp]k_)(?:live|test)_[0-9A-Za-z]{16,}"),
    ("stripe-webhook-secret", r"whsec_[A-Za-z0-9]{24,}"),
    ("azure-storage-key", r"AccountKey=([A-Za-z0-9+/]{86}==)"),
    ("azure-storage-key", r"SharedAccessKey=([A-Za-z0-9+/]{42,44}=?)"),
    ("azure-sas", r"sig=(?<=[?&]sig=)([A-Za-z0-9%+/=]{20,})"),
    ("twilio-api-key", r"SK[0-9a-fA-F]{32}\b"),
    ("mailchimp-key", r"-us(?<=[0-9a-f]{32}-us)[0-9]{1,2}\b"),
    ("npm-token", r"npm_[A-Za-z0-9]{36}\b"),
    ("pypi-token", r"pypi-AgE[A-Za-z0-9_\-]{50,}"),
    ("sendgrid-key", r"SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}"),
    ("square-token", r"sq0(?:atp|csp)-[0-9A-Za-z_\-]{22,}"),
    ("telegram-bot-token", r":(?<=[0-9]{8}:)([A-Za-z0-9_\-]{35})(?![A-Za-z0-9_\-])"),
    ("huggingface-token", r"hf_[A-Za-z0-9]{34,}\b"),
    ("digitalocean-token", r"do[opr]_v1_[a-f0-9]{64}"),
    ("shopify-token", r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}"),
    ("databricks-token", r"dapi[a-f0-9]{32}\b"),
    ("artifactory-key", r"AKC[A-Za-z0-9]{10,}\b"),
    ("jwt", r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ("bearer-token", r"bearer[ \t]+([a-z0-9\-._~+/]{16,}=*)"),
    ("bearer-token", r"token[ \t]+([a-z0-9\-._~+/]{16,}=*)"),
    ("basic-auth", r"basic[ \t]+([a-z0-9+/]{12,}=*)"),
    ("url-password", r"://[^\s:/@]+:([^\s@/]+)@"),
)
#: Built-in kinds whose match need not start a word (``xAKIA...`` is not a key).
_ANYWHERE = frozenset(
    {
        "private-key",
        "slack-webhook",
        "discord-webhook",
        "azure-storage-key",
        "azure-sas",
        "telegram-bot-token",
        "url-password",
    }
)
#: Characters before the match that its look-behind checked and that belong to the token
#: (-1: the run of token characters before it, 24 to 26 of them).
_LOOK_BEHIND = {"stripe-key": 1, "mailchimp-key": 32, "discord-token": -1}
#: Kinds matched against the text lower-cased (``Bearer``, ``BEARER``): a literal start
#: is much faster to scan for than a case-insensitive one.
_ON_LOWER = frozenset({"bearer-token", "basic-auth"})
_DISCORD_HEAD = re.compile(r"[A-Za-z0-9_\-]{24,26}$")

#: Every built-in token (and key body) has a run of 12 of these characters, ``-----`` or
#: ``://`` (a password in a URL may be short).
_LONG_RUN = re.compile(r"[A-Za-z0-9_\-+/=.%]{12}")


def _may_hold_token(text: str) -> bool:
    return "-----" in text or "://" in text or _LONG_RUN.search(text) is not None


#: ``NAME=value`` / ``NAME: value`` lines (shell, dotenv, YAML, INI) whose NAME holds a secret.
_ASSIGNMENT = re.compile(
    r"(?im)^([ \t]*(?:export[ \t]+)?[\"']?([A-Za-z0-9_.\-]+)[\"']?[ \t]*([=:])[ \t]*)(\S.*)$"
)
#: Diff and patch header lines that name files: unified and context diffs with or without
#: timestamps, git's extended headers, ``Index:`` lines. Literal-led by the line end.
_PATCH_MARKERS = ("--- ", "+++ ", "*** ", "diff ", "Index: ", "rename ", "copy ", "Binary ")
_PATCH_HEADER = re.compile(
    r"(?:^|(?<=\n))(?:---|\+\+\+|\*\*\*|diff|Index:|rename (?:from|to)|copy (?:from|to)"
    r"|Binary files|Only in)[ \t]([^\n]*)"
)
#: The words of a header line: C-quoted paths (git quotes unusual names) or plain ones.
_HEADER_WORD = re.compile(r'"(?:[^"\\]|\\.)*"|[^\s"]+')
_KEY_NOISE = re.compile(r"[\s_.\-]")
_CHUNKS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z0-9]+(?![a-z])")


def _compile(pattern: str) -> re.Pattern[str]:
    """A redaction pattern: a regular expression with at most one group."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValidationError(
            f"redaction pattern {pattern!r} is not a regular expression: {exc}",
            field="patterns",
        ) from exc
    if compiled.groups > 1:
        raise ValidationError(
            f"redaction pattern {pattern!r} may have at most one group", field="patterns"
        )
    return compiled


@functools.cache
def _builtin_tokens() -> tuple[tuple[str, re.Pattern[str]], ...]:
    return tuple((kind, _compile(pattern)) for kind, pattern in TOKEN_PATTERNS)


def _lower(text: str) -> str:
    """``text`` lower-cased, each character staying one (``İ`` lower-cases to two)."""
    if text.isascii():
        return text.lower()
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _normal(name: str) -> str:
    return _KEY_NOISE.sub("", name).lower()


@dataclass(frozen=True)
class Redactor:
    """What to keep out of the ledger. ``Redactor()`` holds the built-in rules only;
    ``Redactor.from_env()`` adds the user's from the environment."""

    keys: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    sensitive_files: tuple[str, ...] = ()
    _keys: frozenset[str] = field(init=False, repr=False, compare=False)
    _words: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _custom: tuple[tuple[str, re.Pattern[str]], ...] = field(init=False, repr=False, compare=False)
    _files: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The user's patterns are checked now (a bad one is an error at once); the
        # built-in ones are compiled on first use, so a command that only asks which
        # files are sensitive (a review) does not pay for them.
        object.__setattr__(self, "_custom", tuple(("custom", _compile(p)) for p in self.patterns))
        keys = [k for k in self.keys if k.strip()]
        object.__setattr__(self, "_keys", frozenset(_normal(k) for k in keys))
        # A user's name is found in text by its longest word: "session_ref" by "session".
        own = [max(_CHUNKS.findall(k) or [k], key=len).lower() for k in keys]
        words = dict.fromkeys((*_NAME_WORDS, *_OPTION_WORDS, *own))
        object.__setattr__(self, "_words", tuple(words))
        globs = (*SENSITIVE_FILES, *self.sensitive_files)
        # One regular expression for every glob: a diff asks about every file it shows.
        files = "|".join(f"(?:{fnmatch.translate(glob)})" for glob in globs)
        object.__setattr__(self, "_files", re.compile(files))

    @property
    def _tokens(self) -> tuple[tuple[str, re.Pattern[str]], ...]:
        # One pass per pattern: an alternation of them all would scan every position of
        # a large text with each of them (ten times slower than these literal-led passes).
        return (*_builtin_tokens(), *self._custom)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Redactor:
        """The built-in rules plus ``CHANGELEDGER_REDACT_KEYS``, ``..._PATTERNS`` and
        ``CHANGELEDGER_SENSITIVE_FILES``."""
        env = os.environ if environ is None else environ
        return cls(
            keys=_split(env.get(ENV_KEYS, ""), ","),
            patterns=_split(env.get(ENV_PATTERNS, ""), "\n"),
            sensitive_files=_split(env.get(ENV_SENSITIVE_FILES, ""), ","),
        )

    # -- names and files ----------------------------------------------------------------

    def is_secret_key(self, name: str) -> bool:
        """Whether an argument named ``name`` holds a secret."""
        normal = _normal(name)
        return normal in self._keys or normal.endswith(SECRET_KEY_SUFFIXES)

    def is_secret_option(self, option: str) -> bool:
        """Whether the command-line option ``option`` (``--password``, ``-storepass``)
        takes a secret. Single-letter options depend on the program: see
        ``domain.redact_command``."""
        name = option.lstrip("-")
        if len(name) < 2:
            return False
        return self.is_secret_key(name) or _normal(name).endswith(SECRET_OPTION_SUFFIXES)

    def is_sensitive_file(self, path: str) -> bool:
        """Whether the workspace file at ``path`` holds secrets as a whole."""
        name = path.rstrip("/").rsplit("/", 1)[-1]
        return bool(self._files.match(name) or self._files.match(path))

    # -- values -------------------------------------------------------------------------

    def text(self, value: str) -> str:
        """``value`` with every credential in it masked."""
        if len(value) <= _MESSAGE_SIZE:
            # A message, a title or a reason may quote a command: its options count.
            value, _ = mask_options(value, self.is_secret_option, set())
        value = self._tokens_masked(value)
        if self._keys:  # the user's names, however their words are separated in the text
            value = _ASSIGNMENT.sub(self._mask_assignment, value)
        return mask_assignments(value, self._words, self._is_secret_name, command=False)

    def command(self, value: str) -> str:
        """A command line with its secrets masked and the rest kept readable:
        ``FOO=1 API_TOKEN=[REDACTED] make``, ``mysql --password [REDACTED] db``."""
        value, _ = mask_options(value, self.is_secret_option, set())
        return self._command_text(value)

    def argv(self, items: Iterable[Any]) -> list[Any]:
        """An argv (or a list of command lines) with its secrets masked: an option and
        its value may be separate elements (``["mysql", "--password", "x"]``)."""
        programs: set[str] = set()
        pending: str | None = None
        out: list[Any] = []
        for item in items:
            if not isinstance(item, str):
                out.append(self.value(item, command=True))
                pending = None
                continue
            if pending is not None and not item.startswith("-"):
                out.append(mask_value(item, pending))
                pending = None
                continue
            masked, pending = mask_options(item, self.is_secret_option, programs)
            out.append(self._command_text(masked))
        return out

    def value(self, value: Any, *, command: bool = False) -> Any:
        """A JSON value with secrets masked: by key name in mappings, by pattern in text.
        Under a key that names a command (``argv``, ``command``, ``cmd``, ``script``),
        text is read as a command line."""
        if isinstance(value, str):
            return self.command(value) if command else self.text(value)
        if isinstance(value, Mapping):
            return {
                key: MASK
                if self.is_secret_key(str(key)) and item is not None
                else self.value(item, command=_normal(str(key)) in COMMAND_KEYS)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            if command:
                return self.argv(value)
            return [self.value(item) for item in value]
        return value

    def call(
        self, arguments: Mapping[str, Any], result: Any, resources: Iterable[str] = ()
    ) -> tuple[dict[str, Any], Any]:
        """A tool call's arguments and result as they may be written.

        A call that touches a sensitive file keeps only its paths: the content it wrote or
        read is the secret. It touches one when a path argument names it, a patch header
        names it, or ``resources`` (the files the call read or wrote, symlinks resolved:
        ``ToolCall.resource_refs``) hold it.
        """
        if not self._touches_sensitive_file(arguments, resources):
            return self.value(dict(arguments)), self.value(result)
        return _mask_all(arguments), _mask_all(result)

    def tool_call(self, call: ToolCall) -> ToolCall:
        """``call`` as it may be written: arguments, result, error and metadata redacted,
        and then long result text cut (cut first, a secret could lose the part that makes
        it recognisable)."""
        resources = tuple(call.resource_refs)
        arguments, result = self.call(call.arguments, call.result, resources)
        message = call.error_message
        return replace(
            call,
            arguments=arguments,
            result=cut_long_text(result),
            error_message=None
            if message is None
            else self.error_message(message, call.arguments, resources),
            provider_metadata=self.value(dict(call.provider_metadata)),
        )

    def error_message(
        self,
        message: str,
        arguments: Mapping[str, Any] | None = None,
        resources: Iterable[str] = (),
    ) -> str:
        """The error of a call with ``arguments`` as it may be shown: secrets masked, and
        when the call touches a sensitive file, everything it quotes but the paths (it
        may quote the file's lines: ``unexpected line in hunk: '...'``)."""
        message = self.text(message)
        arguments = arguments or {}
        resources = tuple(resources)
        if self._touches_sensitive_file(arguments, resources):
            message = _mask_quoted(message, self._paths(arguments, resources))
        return message

    def plan_error(self, error: PlanError) -> PlanError:
        """A plan's error as it may be written."""
        return replace(
            error, message=self.text(error.message), details=self.value(dict(error.details))
        )

    # -- helpers ------------------------------------------------------------------------

    def _tokens_masked(self, value: str) -> str:
        if not self.patterns and not _may_hold_token(value):
            return value  # most values are short words: none can hold a built-in token
        lower = _lower(value)
        for kind, pattern in self._tokens:
            masked = _mask_tokens(kind, pattern, value, lower)
            if masked is not value:
                value, lower = masked, _lower(masked)
        return mask_key_bodies(value)

    def _command_text(self, value: str) -> str:
        value = self._tokens_masked(value)
        value = mask_assignments(value, self._words, self._is_secret_name, command=True)
        if self._keys:  # the user's names: "name: value" lines (YAML in a here-document)
            value = _ASSIGNMENT.sub(self._mask_colon_line, value)
        return value

    def _is_secret_name(self, name: str) -> bool:
        return self.is_secret_option(name) if name.startswith("-") else self.is_secret_key(name)

    def _touches_sensitive_file(
        self, arguments: Mapping[str, Any], resources: Iterable[str]
    ) -> bool:
        return any(self.is_sensitive_file(p) for p in self._paths(arguments, resources))

    def _paths(self, arguments: Mapping[str, Any], resources: Iterable[str]) -> set[str]:
        """Every path a call names: path arguments, patch headers and its resources."""
        paths = {str(r) for r in resources}
        for key, item in arguments.items():
            if not isinstance(item, str):
                continue
            if key in PATH_KEYS:
                paths.add(item)
            else:
                paths.update(patch_paths(item))
        return paths

    def _mask_assignment(self, match: re.Match[str]) -> str:
        if not self.is_secret_key(match.group(2)) or match.group(4).startswith("[REDACTED"):
            return match.group(0)
        return f"{match.group(1)}{MASK}"

    def _mask_colon_line(self, match: re.Match[str]) -> str:
        return match.group(0) if match.group(3) == "=" else self._mask_assignment(match)


def patch_paths(text: str) -> list[str]:
    """Every path-like word of the file header lines of a patch or diff in ``text``:
    ``--- .env<TAB>2024-01-01 ...``, ``diff --git "a/.env" b/.env``, ``rename from``,
    ``Index:``, ``*** .env`` (a context diff); ``a/`` and ``b/`` prefixes dropped."""
    if not any(marker in text for marker in _PATCH_MARKERS):
        return []
    found = []
    for line in _PATCH_HEADER.finditer(text):
        for word in _HEADER_WORD.findall(line.group(1).rstrip("\r")):
            path = _unquoted(word) if word.startswith('"') else word
            found.append(path)
            if path[:2] in ("a/", "b/"):
                found.append(path[2:])
    return found


def _unquoted(word: str) -> str:
    """A C-quoted path as git writes it (``"a/caf\\303\\251"``) as text."""
    inner = word[1:-1] if len(word) > 1 and word.endswith('"') else word[1:]
    try:
        raw = codecs.escape_decode(inner.encode("utf-8"))[0]
        return raw.decode("utf-8", "replace")
    except (ValueError, UnicodeError):
        return inner


def _mask_tokens(kind: str, pattern: re.Pattern[str], text: str, lower: str) -> str:
    """``text`` with every match of ``pattern`` (in ``lower``, the text lower-cased, for
    ``_ON_LOWER`` kinds) masked: its group, or all of it with what its look-behind saw."""
    out: list[str] = []
    position = 0
    builtin = kind != "custom"
    back = _LOOK_BEHIND.get(kind, 0) if builtin else 0
    for match in pattern.finditer(lower if builtin and kind in _ON_LOWER else text):
        start = match.start() - back
        if back < 0:
            head = _DISCORD_HEAD.search(text, max(match.start() - 26, 0), match.start())
            start = match.start() if head is None else head.start()
        if start < position:
            continue
        if builtin and kind not in _ANYWHERE and start > 0:
            before = text[start - 1]
            if before.isalnum() or before == "_":
                continue  # inside a longer word: not a token
        secret_start, secret_end = match.span(1) if pattern.groups else (start, match.end())
        out.append(text[position:secret_start])
        out.append(f"[REDACTED:{kind}]")
        position = secret_end
    if not out:
        return text
    out.append(text[position:])
    return "".join(out)


def _mask_all(value: Any) -> Any:
    """Every text in ``value`` masked, but for the paths it names."""
    if isinstance(value, str):
        return f"{MASK} ({len(value)} characters of a sensitive file)" if value else value
    if isinstance(value, Mapping):
        return {key: item if key in PATH_KEYS else _mask_all(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_all(item) for item in value]
    return value


#: A quoted piece of an error message: ``'...'`` or ``"..."`` on one line.
_QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")


def _mask_quoted(message: str, keep: set[str]) -> str:
    """``message`` with what it quotes masked, unless it is one of the paths in ``keep``."""

    def masked(match: re.Match[str]) -> str:
        quoted = match.group()
        return quoted if quoted[1:-1] in keep else f"{quoted[0]}{MASK}{quoted[0]}"

    return _QUOTED.sub(masked, message)


def cut_long_text(value: JSONValue) -> JSONValue:
    """``value`` as it is kept in the ledger: text longer than ``RESULT_TEXT_LIMIT`` is cut
    with a marker. Cut only what has been redacted."""
    if isinstance(value, str) and len(value) > RESULT_TEXT_LIMIT:
        cut = len(value) - RESULT_TEXT_LIMIT
        return value[:RESULT_TEXT_LIMIT] + f"…[{cut} more characters not recorded]"
    if isinstance(value, Mapping):
        return {str(k): cut_long_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [cut_long_text(v) for v in value]
    return value


def _split(text: str, separator: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(separator) if part.strip())


def mask_line(line: str) -> str:
    """A line of a sensitive file as a diff shows it: ``NAME=`` kept, the value masked."""
    match = _ASSIGNMENT.match(line)
    if match:
        return f"{match.group(1)}{MASK}"
    return MASK if line.strip() else line


def default_redactor() -> Redactor:
    """The rules in force for this process (built-in and from the environment), built once.

    Rules in the environment that are not valid leave the built-in ones in force here:
    this redactor masks log lines and error messages, which must never fail (opening a
    ledger reports the invalid rule).
    """
    global _default  # noqa: PLW0603 - one cache per process
    if _default is None:
        try:
            _default = Redactor.from_env()
        except ValidationError:
            _default = Redactor()
    return _default


_default: Redactor | None = None
