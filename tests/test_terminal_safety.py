"""Terminal safety: what agents put in titles, paths, arguments, command output and files
cannot act on the terminal of the person reviewing it, nor fake a line of the output.

Every plain and rich output shows a control character (ESC, CR, BEL, backspace, DEL, C0
and C1), a bidi override or isolate, an invisible format character or a line separator as
a visible escape, and ``"`` and ``\\`` escaped so that the escapes are unambiguous;
readable UTF-8 (é, 日本, 👩‍💻) stays as it is. A ``key: value`` line stays one line, and
rich output never reads user text as markup. JSON and YAML keep the exact data. Patches
quote names exactly as git does, and ``git apply`` takes them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from changeledger.cli.main import cli
from changeledger.cli.output import one_line
from changeledger.constants import ENV_DB
from changeledger.render.diff import patch_text
from changeledger.render.formats import to_yaml
from changeledger.render.terminal import escape, escape_content, git_quote, json_safe
from changeledger.services.review import FileDiff, text_hunks

#: The Unicode categories a terminal acts on or that hide themselves. The zero-width
#: (non-)joiners are format characters too, but scripts and emoji need them.
UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}
JOINERS = {"\u200c", "\u200d"}

#: Everything hostile at once: markup, emoji codes, quotes, a backslash, escape sequences
#: that retitle the window, erase a line and move up a line, CR, backspace, VT, FF, DEL,
#: C1 controls (NEL, CSI), bidi override and isolates, zero-width space, line and
#: paragraph separators, BOM, a tag character, and a line break followed by a fake line.
HOSTILE = (
    '[bold]B[/bold] :warning: é 日本 👩\u200d💻 "q" back\\slash '
    "\x1b]0;pwned\x07\x1b[2K\x1b[1A\r\x08\x0b\x0c\x7f\x85\x9b"
    "\u202e\u2066\u2069\u200b\u2028\u2029\ufeff\U000e0041\nstate: applied"
)
#: ``HOSTILE`` as every plain and rich output shows it.
ESCAPED = (
    '[bold]B[/bold] :warning: é 日本 👩\u200d💻 \\"q\\" back\\\\slash '
    "\\x1b]0;pwned\\x07\\x1b[2K\\x1b[1A\\r\\x08\\x0b\\x0c\\x7f\\u0085\\u009b"
    "\\u202e\\u2066\\u2069\\u200b\\u2028\\u2029\\ufeff\\U000e0041\\nstate: applied"
)
#: A file name with the hostile characters a file system takes (no "/", no NUL).
NAME = 'n\x1b]0;x\x07\u202e\t"q"\n\x85é 日本.txt'
NAME_ESCAPED = 'n\\x1b]0;x\\x07\\u202e\\t\\"q\\"\\n\\u0085é 日本.txt'
#: What git writes for it with core.quotepath on (the default).
NAME_GIT = (
    '"n\\033]0;x\\a\\342\\200\\256\\t\\"q\\"\\n\\302\\205\\303\\251 '
    '\\346\\227\\245\\346\\234\\254.txt"'
)
#: ... and what plain output writes: git's quoting, readable UTF-8 kept.
NAME_READABLE = '"n\\033]0;x\\a\\342\\200\\256\\t\\"q\\"\\n\\302\\205é 日本.txt"'

SGR = re.compile("\x1b\\[[0-9;]*m")
LABEL_TAB = re.compile("(?m)^((?:---|\\+\\+\\+) .*)\t$")


def unsafe(text: str) -> list[str]:
    """The characters of ``text`` a terminal would act on, judged by ``unicodedata`` (not
    by the code under test); line ends are the output's own."""
    return [
        char
        for char in text
        if char != "\n" and char not in JOINERS and unicodedata.category(char) in UNSAFE_CATEGORIES
    ]


def unescape(text: str) -> str:
    """The inverse of ``escape``: proves that no two texts look the same once escaped."""

    def one(match: re.Match[str]) -> str:
        token = match.group(1)
        named = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
        if token in named:
            return named[token]
        code = int(token[1:], 16)
        if token[0] == "x" and code >= 0x80:
            return chr(0xDC00 + code)  # a byte that was not UTF-8
        return chr(code)

    return re.sub(r'\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|[ntr"\\])', one, text)


# -- the escaping functions ------------------------------------------------------------


def test_escape_keeps_readable_text() -> None:
    readable = "café naïve 日本語 שלום مرحبا 👩\u200d💻 ﷺ ½ → ✓ tab-free, no quotes"
    assert escape(readable) == readable
    assert escape_content(readable) == readable
    spaces = "no\u00a0break, ideographic\u3000space"  # unprintable to Python, not unsafe
    assert escape(spaces) == escape_content(spaces) == spaces
    assert git_quote(spaces, readable=True) == spaces


def test_escape_shows_the_hostile_text_as_one_readable_line() -> None:
    assert escape(HOSTILE) == ESCAPED
    assert unsafe(ESCAPED) == []
    assert unescape(ESCAPED) == HOSTILE


def test_every_unsafe_character_of_unicode_is_escaped_and_no_other() -> None:
    """Against the categories of the running Python's ``unicodedata``: the list in
    render.terminal may hold more (characters a later Unicode assigns), never fewer."""
    missed, needless = [], []
    for code in range(0x110000):
        char = chr(code)
        category = unicodedata.category(char)
        shown = escape(char)
        if category in UNSAFE_CATEGORIES and char not in JOINERS:
            if shown == char or unsafe(shown):
                missed.append(f"U+{code:04X}")
        elif shown != char and char not in '"\\' and category != "Cn":
            needless.append(f"U+{code:04X} {category}")
    assert missed == []
    assert needless == []


@given(st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF)))
def test_escape_is_safe_and_reversible(text: str) -> None:
    shown = escape(text)
    assert unsafe(shown) == []
    assert "\n" not in shown
    assert unescape(shown) == text


def test_surrogate_escaped_bytes_show_as_bytes() -> None:
    name = os.fsdecode(b"caf\xe9\x9b.txt")
    assert escape(name) == "caf\\xe9\\x9b.txt"
    # In a diff line, a Latin-1 byte stays (its file's own encoding); C1 bytes do not.
    assert escape_content(name) == "caf\udce9\\x9b.txt"


def test_escape_content_keeps_code_readable() -> None:
    assert escape_content('\tprintf("a\\n");\r') == '\tprintf("a\\n");\r'
    assert escape_content("a\rb\x1b[2Kc\x08\u202e\r") == "a\\rb\\x1b[2Kc\\x08\\u202e\r"
    assert escape_content("\x00\x7f\x85\u2028") == "\\x00\\x7f\\u0085\\u2028"


def test_the_error_line_escapes_and_stays_one_line() -> None:
    line = one_line(f"plan file /tmp/{HOSTILE} does not exist")
    assert "\n" not in line
    assert unsafe(line) == []
    assert "\\x1b]0;pwned\\x07" in line
    assert "\\u202e" in line
    # Quotes and backslashes of a message are left alone: messages repr() their values.
    assert one_line("path 'a\\\\b' has \"quotes\"") == "path 'a\\\\b' has \"quotes\""


def test_json_safe_is_the_same_data_without_raw_unsafe_characters() -> None:
    data = {"title": HOSTILE, "name": os.fsdecode(b"caf\xe9"), HOSTILE: [HOSTILE]}
    text = json_safe(json.dumps(data, ensure_ascii=False))
    assert unsafe(text) == []
    assert json.loads(text) == data
    text.encode("utf-8")  # valid UTF-8 even for a name that is not
    assert "é 日本 👩\u200d💻" in text


def test_yaml_writes_unsafe_characters_as_escapes_in_keys_and_values() -> None:
    data = {HOSTILE: [HOSTILE, {"k": "é 日本"}], "name": os.fsdecode(b"caf\xe9")}
    text = to_yaml(data)
    assert unsafe(text) == []
    assert yaml.safe_load(text) == data
    assert "é 日本" in text  # readable where nothing needs escaping


# -- git's quoting, checked against git itself -------------------------------------------

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}
#: Names git must quote (and some it must not), as bytes: a file system takes any but NUL
#: and "/".
GIT_NAMES = [
    b"plain.txt",
    b"with space.txt",
    b"tab\there",
    b"new\nline",
    b'dq"uote',
    b"back\\slash",
    b"caf\xc3\xa9",
    b"\xe6\x97\xa5\xe6\x9c\xac",
    b"esc\x1b[2K",
    b"bel\x07bs\x08vt\x0bff\x0ccr\r",
    b"del\x7f",
    b"ctl\x01\x1f",
    b"c1\xc2\x85\xc2\x9b",
    b"bidi\xe2\x80\xaegnp.exe",
    b"ls\xe2\x80\xa8ps\xe2\x80\xa9",
    b"latin1\xe9",
    b"\xff\xfe",
    b"#hash;semi'single",
]


def git(root: Path, *args: str) -> bytes:
    done = subprocess.run(["git", *args], cwd=root, env=GIT_ENV, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


@needs_git
def test_git_quote_is_what_git_writes(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    for name in GIT_NAMES:
        (root / os.fsdecode(name)).write_bytes(b"one\n")
    git(root, "add", "-A")
    names = [os.fsdecode(n) for n in GIT_NAMES]
    listed = git(root, "ls-files").decode("utf-8").splitlines()
    assert sorted(listed) == sorted(git_quote(n) for n in names)
    # core.quotepath=off keeps bytes above 0x7f; readable=True too, except those escape()
    # escapes (C1 controls, bidi, separators, bytes that are not UTF-8).
    off = git(root, "-c", "core.quotepath=off", "ls-files").decode("utf-8", "surrogateescape")
    plain = [n for n in names if escape(n, quotes=False) == n]
    assert {git_quote(n, readable=True) for n in plain} <= set(off.splitlines())
    for path in names:
        shown = git_quote(path, readable=True)
        assert unsafe(shown) == []
        assert "\n" not in shown


@needs_git
def test_patch_headers_are_what_git_diff_writes(tmp_path: Path) -> None:
    """A modified file's whole patch, for every hostile name, equals ``git diff``'s."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    for name in GIT_NAMES:
        (root / os.fsdecode(name)).write_bytes(b"one\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "one")
    for name in GIT_NAMES:
        (root / os.fsdecode(name)).write_bytes(b"two\n")
    expected = git(root, "diff", "--no-color", "--no-ext-diff")
    hunks, added, removed = text_hunks(b"one\n", b"two\n")
    ours = b"".join(
        patch_text(
            FileDiff(
                path=path,
                old_path=None,
                operation="modify",
                binary=False,
                before_hash="b" * 64,
                after_hash="a" * 64,
                before_size=4,
                after_size=4,
                mode=0o644,
                old_mode=0o644,
                insertions=added,
                deletions=removed,
                hunks=hunks,
                before=b"one\n",
                after=b"two\n",
            )
        ).encode("utf-8", "surrogateescape")
        for path in sorted((os.fsdecode(n) for n in GIT_NAMES), key=os.fsencode)
    )
    assert ours == expected


# -- through every command ------------------------------------------------------------


@dataclass
class Hostile:
    """A workspace named with hostile characters, its ledger, and plans whose titles,
    descriptions, paths, arguments, command output, errors and cancel reason are hostile."""

    root: Path
    executed: str
    failed: str
    cancelled: str

    def invoke(self, *args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env={ENV_DB: str(self.db)})

    @property
    def db(self) -> Path:
        return self.root / ".changeledger" / "ledger.db"


def _plan_id(result: Result) -> str:
    assert result.exit_code in (0, 1), (result.stdout, result.stderr)
    plan_id: str = json.loads(result.stdout)["data"]["plan_id"]
    return plan_id


def _run_file(root: Path, name: str, document: dict[str, Any], *options: str) -> Result:
    path = root.parent / f"{name}.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return CliRunner().invoke(
        cli,
        ["plan", "run", str(path), "--workspace", str(root), *options, "--format", "json"],
        env={ENV_DB: str(root / ".changeledger" / "ledger.db")},
    )


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Hostile:
    root = tmp_path_factory.mktemp("terminal") / "ws\x1b[2K\u202e"
    root.mkdir()
    (root / "a.txt").write_text("one\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o644)
    (root / "a.txt").chmod(0o644)
    init = CliRunner().invoke(cli, ["init", "--workspace", str(root)], env={ENV_DB: ""})
    assert init.exit_code == 0, init.output
    steps = [
        {"tool": "write_file", "args": {"path": NAME, "content": f"{HOSTILE}\n"}},
        {"tool": "edit_file", "args": {"path": "a.txt", "old": "one", "new": HOSTILE}},
    ]
    document = {"title": HOSTILE, "description": HOSTILE, "steps": steps}
    executed = _plan_id(_run_file(root, "executed", document))
    db = {ENV_DB: str(root / ".changeledger" / "ledger.db")}
    exec_ = CliRunner().invoke(
        cli,
        [
            "plan",
            "exec",
            executed,
            "--format",
            "json",
            "--",
            sys.executable,
            "-c",
            f"import os; print({HOSTILE!r}); os.chmod('a.txt', 0o600); os.chmod('run.sh', 0o755)",
        ],
        env=db,
    )
    assert exec_.exit_code == 0, exec_.output
    failing = {
        "title": HOSTILE,
        "steps": [
            *steps[:1],
            {"tool": "edit_file", "args": {"path": NAME, "old": "absent\x1b[2K", "new": "x"}},
        ],
    }
    failed = _plan_id(_run_file(root, "failed", failing))
    cancelled = _plan_id(_run_file(root, "cancelled", document))
    cancel = CliRunner().invoke(cli, ["plan", "cancel", cancelled, "--reason", HOSTILE], env=db)
    assert cancel.exit_code == 0, cancel.output
    return Hostile(root, executed, failed, cancelled)


def _commands(h: Hostile) -> list[tuple[str, ...]]:
    return [
        ("plan", "list"),
        ("plan", "status", h.executed),
        ("plan", "status", h.failed),
        ("plan", "status", h.cancelled),
        ("plan", "diff", h.executed),
        ("plan", "diff", h.executed, "--stat"),
        ("plan", "diff", h.executed, "--entries"),
        ("plan", "artifacts", h.executed),
        ("plan", "invocations", h.executed),
        ("plan", "invocations", h.failed),
        ("plan", "apply", h.executed, "--dry-run"),
        ("db", "current"),
    ]


@pytest.mark.parametrize("fmt", ["plain", "rich"])
def test_every_command_shows_hostile_text_escaped(hostile: Hostile, fmt: str) -> None:
    for args in _commands(hostile):
        result = hostile.invoke(*args, "--format", fmt)
        assert result.exit_code == 0, (args, result.stderr)
        out = result.stdout_bytes.decode("utf-8", "surrogateescape")
        if fmt == "rich":
            out = SGR.sub("", out)  # rich's own styles are the only escape sequences
        # git ends a ---/+++ name holding a space with a tab; the only tab allowed.
        out = LABEL_TAB.sub(r"\1", out)
        assert unsafe(out) == [], (args, sorted(set(unsafe(out))))
        assert "\nstate: applied" not in out, args
        assert result.stderr == ""


def test_plain_key_value_lines_stay_one_line_each(hostile: Hostile) -> None:
    key = re.compile(r"^[A-Za-z0-9_.]+: ")
    for args in _commands(hostile):
        if args[:2] == ("plan", "diff"):
            continue
        lines = hostile.invoke(*args, "--format", "plain").stdout.splitlines()
        assert all(key.match(line) for line in lines), (args, lines)
        keys = [line.split(": ", 1)[0] for line in lines]
        assert len(keys) == len(set(keys)), args
    listed = hostile.invoke("plan", "list", "--format", "plain").stdout.splitlines()
    assert f"plans.0.title: {ESCAPED}" in listed
    assert f"plans.0.description: {ESCAPED}" in listed
    assert f"plans.0.workspace: {escape(str(hostile.root))}" in listed
    status = hostile.invoke("plan", "status", hostile.cancelled, "--format", "plain").stdout
    assert f"error.message: cancelled: {ESCAPED}\n" in status


def test_plain_outputs_show_the_exact_escapes(hostile: Hostile) -> None:
    artifacts = hostile.invoke("plan", "artifacts", hostile.executed, "--format", "plain")
    assert f"artifacts.1.path: {NAME_ESCAPED}\n" in artifacts.stdout
    calls = hostile.invoke("plan", "invocations", hostile.executed, "--format", "plain").stdout
    assert f"invocations.0.arguments.content: {ESCAPED}\\n\n" in calls
    assert "\\nstate: applied\\n\n" in calls  # the exec output's tail, as one line
    diff = hostile.invoke("plan", "diff", hostile.executed, "--format", "plain").stdout
    assert f"diff --git {NAME_READABLE[0]}a/{NAME_READABLE[1:]} " in diff
    assert f"+{escape_content(HOSTILE.split(chr(10), maxsplit=1)[0])}\n" in diff
    assert "\n+state: applied\n" in diff  # a line break in the file is a line of the diff
    stat = hostile.invoke("plan", "diff", hostile.executed, "--stat").stdout
    assert f" {NAME_READABLE} " in stat
    entries = hostile.invoke("plan", "diff", hostile.executed, "--entries").stdout
    assert f"# entry 1: create {NAME_READABLE} (write_file)\n" in entries


@pytest.mark.parametrize("fmt", ["plain", "rich"])
def test_commands_that_change_things_show_hostile_text_escaped(tmp_path: Path, fmt: str) -> None:
    root = tmp_path / "ws\x1b[2K\u202e"
    root.mkdir()
    env = {ENV_DB: ""}
    shown: dict[str, str] = {}

    def run(name: str, *args: str, code: int = 0) -> str:
        result = CliRunner().invoke(cli, [*args, "--format", fmt], env=env)
        assert result.exit_code == code, (name, result.stdout, result.stderr)
        out = LABEL_TAB.sub(r"\1", SGR.sub("", result.stdout))
        assert unsafe(out) == [], (name, sorted(set(unsafe(out))))
        assert unsafe(result.stderr.removesuffix("\n")) == [], name
        shown[name] = out
        return out

    run("init", "init", "--workspace", str(root))
    env[ENV_DB] = str(root / ".changeledger" / "ledger.db")
    created = run(
        "create", "plan", "create", HOSTILE, "--description", HOSTILE, "--workspace", str(root)
    )
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(
        json.dumps(
            {
                "title": HOSTILE,
                "steps": [
                    {"tool": "write_file", "args": {"path": NAME, "content": f"{HOSTILE}\n"}}
                ],
            }
        )
    )
    ran = run("run", "plan", "run", str(plan_file), "--workspace", str(root))
    plan_id = next(
        line
        for line in json.loads(
            CliRunner().invoke(cli, ["plan", "list", "--format", "json"], env=env).stdout
        )["data"]["plans"]
        if line["state"] == "executed"
    )["plan_id"]
    executed = run(
        "exec", "plan", "exec", plan_id, "--", sys.executable, "-c", f"print({HOSTILE!r})"
    )
    applied = run("apply", "plan", "apply", plan_id)
    other = json.loads(
        CliRunner()
        .invoke(
            cli, ["plan", "create", "other", "--workspace", str(root), "--format", "json"], env=env
        )
        .stdout
    )["data"]["plan_id"]
    cancelled = run("cancel", "plan", "cancel", other, "--reason", HOSTILE)
    if fmt == "plain":
        assert f"workspace: {escape(str(root.resolve()))}\n" in shown["init"]
        assert f"title: {ESCAPED}\n" in created
        assert f"description: {ESCAPED}\n" in created
        assert "changes: 1\n" in ran
        assert f"output_tail: {ESCAPED}\\n\n" in executed
        assert f"files.0.path: {NAME_ESCAPED}\n" in applied
        assert f"reason: {ESCAPED}\n" in cancelled
    else:
        assert "[bold]B[/bold] :warning:" in created
    assert (root / NAME).read_bytes() == f"{HOSTILE}\n".encode()  # the data is untouched


@needs_git
def test_the_patch_quotes_as_git_does_and_git_applies_it(hostile: Hostile, tmp_path: Path) -> None:
    result = hostile.invoke("plan", "diff", hostile.executed, "--format", "patch")
    assert result.exit_code == 0, result.stderr
    patch = result.stdout_bytes
    text = patch.decode("utf-8")
    assert f"diff --git {NAME_GIT[0]}a/{NAME_GIT[1:]} {NAME_GIT[0]}b/{NAME_GIT[1:]}\n" in text
    assert f"+++ {NAME_GIT[0]}b/{NAME_GIT[1:]}\t\n" in text
    # the file's exact bytes, ESC and all (its line break starts a line of the hunk)
    assert ("\n+" + HOSTILE.replace("\n", "\n+")).encode() in patch
    assert "# mode change 0644 => 0600 a.txt\n" in text  # git cannot carry it: a note
    assert "diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n" in text
    copy = tmp_path / "copy"
    shutil.copytree(hostile.root, copy, ignore=shutil.ignore_patterns(".changeledger"))
    git(copy, "init", "-q")
    (tmp_path / "p.patch").write_bytes(patch)
    git(copy, "apply", "--whitespace=nowarn", str(tmp_path / "p.patch"))
    assert (copy / NAME).read_bytes() == f"{HOSTILE}\n".encode()
    assert (copy / "a.txt").read_bytes() == f"{HOSTILE}\n".encode()
    assert (copy / "run.sh").stat().st_mode & 0o111


def test_rich_never_reads_user_text_as_markup(hostile: Hostile) -> None:
    for args in (("plan", "list"), ("plan", "status", hostile.executed)):
        out = SGR.sub("", hostile.invoke(*args, "--format", "rich").stdout)
        assert "[bold]B[/bold] :warning:" in out, args
        assert "⚠" not in out


def test_the_error_line_of_a_failed_plan_is_escaped(hostile: Hostile) -> None:
    result = hostile.invoke("plan", "run", f"/nonexistent/{HOSTILE}.yaml")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert unsafe(result.stderr.removesuffix("\n")) == []
    assert "\\x1b]0;pwned\\x07\\x1b[2K\\x1b[1A" in result.stderr
    bad_id = hostile.invoke("plan", "status", "\x1b[2K\u202e")
    assert bad_id.exit_code == 2
    assert bad_id.stderr == (
        "error: plan_id '\\x1b[2K\\u202e' is not a valid id (expected a 26-character ULID)\n"
    )
    usage = hostile.invoke("plan", "list", "--state", "x\x1b[2K")
    assert usage.exit_code == 2
    assert unsafe(usage.stderr.removesuffix("\n")) == []


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_json_and_yaml_keep_the_exact_data(hostile: Hostile, fmt: str) -> None:
    for args in _commands(hostile):
        result = hostile.invoke(*args, "--format", fmt)
        assert result.exit_code == 0, (args, result.stderr)
        text = result.stdout_bytes.decode("utf-8")  # valid UTF-8
        assert unsafe(text.replace("\t", "")) == [], (args, sorted(set(unsafe(text))))
        document = json.loads(text) if fmt == "json" else yaml.safe_load(text)
        assert isinstance(document, dict)
    listed = hostile.invoke("plan", "list", "--format", fmt).stdout
    plans = (json.loads(listed) if fmt == "json" else yaml.safe_load(listed))["data"]["plans"]
    assert plans[0]["title"] == HOSTILE
    assert plans[0]["description"] == HOSTILE


@pytest.mark.parametrize(
    "title",
    [
        "---",
        "...",
        "a\n---\nb: c",
        "--- !!python/object:os.system",
        "#x",
        "key: value",
        "a\x85b",
        "x\u2028y",
        "- item",
        "? q",
        "&a *a",
        "'single' \"double\"",
        "  lead",
        "%YAML 1.1",
    ],
)
def test_yaml_titles_that_look_like_yaml_read_back(tmp_path: Path, title: str) -> None:
    env = {ENV_DB: str(tmp_path / "ledger.db")}
    runner = CliRunner()
    assert runner.invoke(cli, ["init"], env=env).exit_code == 0
    created = runner.invoke(
        cli,
        ["plan", "create", "--workspace", str(tmp_path), "--format", "yaml", "--", title],
        env=env,
    )
    assert created.exit_code == 0, created.output
    documents = list(yaml.safe_load_all(created.stdout))
    assert len(documents) == 1
    assert documents[0]["data"]["title"] == title.strip()
