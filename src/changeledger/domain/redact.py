"""Secrets kept out of the ledger, the logs and rendered diffs.

A ``Redactor`` rewrites what a tool call says before it is written: the values of arguments
whose names say they hold a secret (``password``, ``api_key``, ``access_token``...), text
that looks like a credential wherever it appears (cloud keys, bearer tokens, private keys,
``TOKEN=...`` lines, passwords in URLs), and everything but the path of a call that reads or
writes a sensitive file (``.env``, keys, credential stores). Users add argument names,
patterns and file globs: in code, or through the environment for the command line::

    CHANGELEDGER_REDACT_KEYS="session_id,otp"              # comma-separated names
    CHANGELEDGER_REDACT_PATTERNS="corp-[0-9a-f]{32}"       # one regular expression per line
    CHANGELEDGER_SENSITIVE_FILES="*.tfvars,secrets/*"      # comma-separated globs

File contents are not rewritten: the ledger must hold what apply will write. Rendered diffs
mask the lines of sensitive files instead, unless the reader asks to see them.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from changeledger.domain.errors import ValidationError
from changeledger.domain.models import PlanError, ToolCall

MASK = "[REDACTED]"
ENV_KEYS = "CHANGELEDGER_REDACT_KEYS"
ENV_PATTERNS = "CHANGELEDGER_REDACT_PATTERNS"
ENV_SENSITIVE_FILES = "CHANGELEDGER_SENSITIVE_FILES"

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
    "secretkey",
    "privatekey",
    "signingkey",
    "credential",
    "credentials",
    "authorization",
    "cookie",
    "sessionid",
)

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
#: that a match starts a word is checked when it is replaced (``_WORD_START``).
TOKEN_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "private-key",
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
        r"(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    ),
    ("aws-access-key-id", r"(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA)[0-9A-Z]{16}\b"),
    ("github-token", r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b"),
    ("gitlab-token", r"glpat-[A-Za-z0-9_\-]{20,}"),
    ("slack-token", r"xox[abposr]-[A-Za-z0-9-]{10,}"),
    ("google-api-key", r"AIza[0-9A-Za-z_\-]{35}"),
    ("api-key", r"sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{20,}"),
    ("stripe-key", r"[rsp]k_(?:live|test)_[0-9A-Za-z]{16,}"),
    ("jwt", r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ("bearer-token", r"(?i:bearer|token)[ \t]+([A-Za-z0-9\-._~+/]{16,}=*)"),
    ("basic-auth", r"(?i:basic)[ \t]+([A-Za-z0-9+/]{12,}=*)"),
    ("url-password", r"://[^\s:/@]+:([^\s@/]+)@"),
)
#: Built-in kinds whose match must start a word (``xAKIA...`` is not a key).
_WORD_START = frozenset(
    {
        "aws-access-key-id",
        "github-token",
        "gitlab-token",
        "slack-token",
        "google-api-key",
        "api-key",
        "stripe-key",
        "jwt",
        "bearer-token",
        "basic-auth",
    }
)

#: ``NAME=value`` / ``NAME: value`` lines (shell, dotenv, YAML, INI) whose NAME holds a secret.
_ASSIGNMENT = re.compile(
    r"(?im)^([ \t]*(?:export[ \t]+)?[\"']?([A-Za-z0-9_.\-]+)[\"']?[ \t]*[=:][ \t]*)(\S.*)$"
)
#: The file names in the ``---``/``+++`` lines of a unified diff (an apply_patch argument).
_PATCH_PATHS = re.compile(r"(?m)^(?:---|\+\+\+)[ \t]+(?:[ab]/)?([^\t\n]+?)[ \t]*$")
_KEY_NOISE = re.compile(r"[\s_.\-]")


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
    _tokens: tuple[tuple[str, re.Pattern[str]], ...] = field(init=False, repr=False, compare=False)
    _files: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tokens: list[tuple[str, re.Pattern[str]]] = []
        custom = [("custom", p) for p in self.patterns]
        for kind, pattern in (*TOKEN_PATTERNS, *custom):
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
            tokens.append((kind, compiled))
        # One pass per pattern: an alternation of them all would scan every position of
        # a large text with each of them (ten times slower than these literal-led passes).
        object.__setattr__(self, "_tokens", tuple(tokens))
        object.__setattr__(self, "_keys", frozenset(_normal(k) for k in self.keys if k.strip()))
        globs = (*SENSITIVE_FILES, *self.sensitive_files)
        # One regular expression for every glob: a diff asks about every file it shows.
        files = "|".join(f"(?:{fnmatch.translate(glob)})" for glob in globs)
        object.__setattr__(self, "_files", re.compile(files))

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

    def is_sensitive_file(self, path: str) -> bool:
        """Whether the workspace file at ``path`` holds secrets as a whole."""
        name = path.rstrip("/").rsplit("/", 1)[-1]
        return bool(self._files.match(name) or self._files.match(path))

    # -- values -------------------------------------------------------------------------

    def text(self, value: str) -> str:
        """``value`` with every credential in it masked."""
        for kind, pattern in self._tokens:
            value = pattern.sub(functools.partial(_mask_token, kind), value)
        return _ASSIGNMENT.sub(self._mask_assignment, value)

    def value(self, value: Any) -> Any:
        """A JSON value with secrets masked: by key name in mappings, by pattern in text."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {
                key: MASK if self.is_secret_key(str(key)) and item is not None else self.value(item)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value

    def call(self, arguments: Mapping[str, Any], result: Any) -> tuple[dict[str, Any], Any]:
        """A tool call's arguments and result as they may be written.

        A call that names a sensitive file (as a path argument, or in the headers of a
        patch) keeps only its paths: the content it wrote or read is the secret.
        """
        sensitive = any(
            self.is_sensitive_file(item)
            if key in PATH_KEYS
            else any(self.is_sensitive_file(p) for p in _PATCH_PATHS.findall(item))
            for key, item in arguments.items()
            if isinstance(item, str)
        )
        if not sensitive:
            return self.value(dict(arguments)), self.value(result)
        return _mask_all(arguments), _mask_all(result)

    def tool_call(self, call: ToolCall) -> ToolCall:
        """``call`` as it may be written: arguments, result, error and metadata redacted."""
        arguments, result = self.call(call.arguments, call.result)
        return replace(
            call,
            arguments=arguments,
            result=result,
            error_message=None if call.error_message is None else self.text(call.error_message),
            provider_metadata=self.value(dict(call.provider_metadata)),
        )

    def plan_error(self, error: PlanError) -> PlanError:
        """A plan's error as it may be written."""
        return replace(
            error, message=self.text(error.message), details=self.value(dict(error.details))
        )

    def _mask_assignment(self, match: re.Match[str]) -> str:
        if not self.is_secret_key(match.group(2)) or match.group(3).startswith("[REDACTED"):
            return match.group(0)
        return f"{match.group(1)}{MASK}"


def _mask_token(kind: str, match: re.Match[str]) -> str:
    """The match with its secret (its group, or all of it) replaced by a marker."""
    start = match.start()
    if kind in _WORD_START and start > 0:
        before = match.string[start - 1]
        if before.isalnum() or before == "_":
            return match.group(0)  # inside a longer word: not a token
    secret_start, secret_end = match.span(1) if match.re.groups else match.span()
    whole = match.group(0)
    return f"{whole[: secret_start - start]}[REDACTED:{kind}]{whole[secret_end - start :]}"


def _mask_all(value: Any) -> Any:
    """Every text in ``value`` masked, but for the paths it names."""
    if isinstance(value, str):
        return f"{MASK} ({len(value)} characters of a sensitive file)" if value else value
    if isinstance(value, Mapping):
        return {key: item if key in PATH_KEYS else _mask_all(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_all(item) for item in value]
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
    """The rules in force for this process (built-in and from the environment), built once."""
    global _default  # noqa: PLW0603 - one cache per process
    if _default is None:
        _default = Redactor.from_env()
    return _default


_default: Redactor | None = None
