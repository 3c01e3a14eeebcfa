"""Unified diffs from git and diff -u apply to content exactly, or are refused clearly."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from changeledger.domain.errors import ValidationError
from changeledger.workspace.patch import apply_hunks, parse_patch


def _git(cwd: Path, *args: str) -> str:
    # Bytes, decoded by hand: text mode would turn the CRLF lines of the patch into LF.
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    ).stdout.decode("utf-8")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q", ".")
    (tmp_path / "f.txt").write_text("a\nb\nc\nd\ne\nf\ng\nh\n")
    (tmp_path / "nonl.txt").write_bytes(b"x\ny")
    (tmp_path / "gone.txt").write_text("bye\n")
    (tmp_path / "crlf.txt").write_bytes(b"one\r\ntwo\r\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "base")
    return tmp_path


def test_a_git_diff_reproduces_every_new_file_exactly(repo: Path) -> None:
    (repo / "f.txt").write_text("a\nB\nc\nd\ne\nf\ng\nH\nI\n")
    (repo / "nonl.txt").write_bytes(b"x\nz")
    (repo / "gone.txt").unlink()
    (repo / "new.txt").write_text("fresh\n")
    (repo / "crlf.txt").write_bytes(b"one\r\nTWO\r\n")
    _git(repo, "add", "-A")
    patches = {(p.old_path, p.new_path): p for p in parse_patch(_git(repo, "diff", "--cached"))}
    assert set(patches) == {
        ("f.txt", "f.txt"),
        ("nonl.txt", "nonl.txt"),
        ("gone.txt", None),
        (None, "new.txt"),
        ("crlf.txt", "crlf.txt"),
    }
    for (old, new), patch in patches.items():
        original = (
            b""
            if old is None
            else subprocess.run(
                ["git", "show", f"HEAD:{old}"], cwd=repo, capture_output=True, check=True
            ).stdout
        )
        result = apply_hunks(original, patch.hunks, new or old or "")
        expected = b"" if new is None else (repo / new).read_bytes()
        assert result == expected, (old, new)


def test_a_rename_header_is_parsed_as_a_rename(repo: Path) -> None:
    _git(repo, "mv", "f.txt", "moved.txt")
    text = _git(repo, "diff", "--cached", "-M")
    [patch] = parse_patch(text)
    assert (patch.old_path, patch.new_path, patch.is_rename, patch.hunks) == (
        "f.txt",
        "moved.txt",
        True,
        [],
    )


def test_only_newline_ends_a_patch_line() -> None:
    patch = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\x0cb\n+a\u2028b\n"
    [file_patch] = parse_patch(patch)
    assert apply_hunks(b"a\x0cb\n", file_patch.hunks, "x") == "a\u2028b\n".encode()


def test_a_hunk_may_sit_a_few_lines_from_its_header() -> None:
    patch = "--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n c\n-d\n+D\n"
    [file_patch] = parse_patch(patch)
    assert apply_hunks(b"a\nb\nc\nd\n", file_patch.hunks, "x") == b"a\nb\nc\nD\n"


def test_a_hunk_that_does_not_match_is_refused_naming_the_file() -> None:
    [file_patch] = parse_patch("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-nope\n+yes\n")
    with pytest.raises(ValidationError, match=r"hunk 1 for 'x' does not match"):
        apply_hunks(b"something else\n", file_patch.hunks, "x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "non-empty unified diff"),
        ("just words\n", "holds no file changes"),
        ("--- a/x\n@@ -1 +1 @@\n", "without a '\\+\\+\\+' line"),
        ("--- /dev/null\n+++ /dev/null\n@@ -0,0 +1 @@\n+x\n", "both sides are /dev/null"),
        ("--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n a\n", "shorter than its header"),
        ("--- a/x\n+++ b/x\n@@ -1 +1 @@\n?odd\n", "unexpected line in hunk"),
        ("--- a/x\n+++ b/x\n", "has no hunks"),
        ("diff --git a/b b/b\nBinary files a/b and b/b differ\n", "binary patches"),
    ],
)
def test_malformed_patches_are_validation_errors(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        parse_patch(text)
    assert caught.value.field == "patch"


def test_a_malformed_hunk_line_is_named_by_number_not_echoed() -> None:
    # The bad line (or any other) may hold a secret: the message gives its number only.
    text = "--- a/.env\n+++ b/.env\n@@ -1 +1,2 @@\n-A=1\n+KEY=sk-live-0123\n?PASSWORD=hunter2\n"
    with pytest.raises(ValidationError) as caught:
        parse_patch(text)
    assert caught.value.message == (
        "patch line 6: unexpected line in hunk: hunk lines start with ' ', '-' or '+'"
    )


@pytest.mark.parametrize("number", ["1" * 13, "9" * 5000])
def test_absurd_hunk_header_numbers_are_refused(number: str) -> None:
    # 5,000 digits used to escape as Python's int() digit-limit ValueError.
    text = f"--- a/x\n+++ b/x\n@@ -{number} +1 @@\n-a\n+b\n"
    with pytest.raises(
        ValidationError, match="patch line 3: hunk header line numbers are too large"
    ):
        parse_patch(text)


@pytest.mark.parametrize("where", ["+\ud800\n", "--- a/\udcff\n"])
def test_text_that_is_not_unicode_is_refused_naming_its_line(where: str) -> None:
    # A lone surrogate (JSON's "\ud800") used to escape as a UnicodeEncodeError.
    lines = ["--- a/x\n", "+++ b/x\n", "@@ -1 +1 @@\n", "-a\n", "+b\n"]
    line = 4 if where.startswith("+") else 0
    lines[line] = where
    with pytest.raises(ValidationError, match=rf"^patch line {line + 1}: not valid Unicode text$"):
        parse_patch("".join(lines))
