"""Review: real diffs from stored contents, renames followed, streaming for big plans."""

from __future__ import annotations

import json
import sqlite3
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from changeledger import (
    ChangeOperation,
    FileChange,
    Ledger,
    MissingArtifactError,
    PlanApplyService,
    PlanService,
)
from changeledger.cli.main import cli
from changeledger.domain.models import sha256_hex, utcnow
from changeledger.render import Envelope, render, render_to
from changeledger.render.diff import git_blob_id, patch_text
from changeledger.services.review import NO_NEWLINE, ReviewService, net_files, text_hunks


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open(tmp_path / "ledger.db") as opened:
        yield opened


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "a.txt").write_text("one\ntwo\nthree\n")
    (root / "b.txt").write_text("bee\n")
    return root


def test_hunks_count_lines_like_git() -> None:
    hunks, insertions, deletions = text_hunks(b"one\ntwo\nthree\n", b"one\nTWO\nthree\nfour\n")
    assert (insertions, deletions) == (2, 1)
    [hunk] = hunks
    assert (hunk.old_start, hunk.old_lines, hunk.new_start, hunk.new_lines) == (1, 3, 1, 4)
    assert hunk.lines == (" one", "-two", "+TWO", " three", "+four")
    assert hunk.header() == "@@ -1,3 +1,4 @@"


def test_a_missing_final_newline_is_marked() -> None:
    hunks, insertions, deletions = text_hunks(b"x\ny", b"x\nz")
    assert (insertions, deletions) == (1, 1)
    assert hunks[0].lines == (" x", "-y", NO_NEWLINE, "+z", NO_NEWLINE)


def test_creating_and_emptying_files() -> None:
    created, insertions, _ = text_hunks(b"", b"new\n")
    assert insertions == 1
    assert created[0].header() == "@@ -0,0 +1 @@"
    emptied, _, deletions = text_hunks(b"gone\n", b"")
    assert deletions == 1
    assert emptied[0].header() == "@@ -1 +0,0 @@"
    assert text_hunks(b"same\n", b"same\n") == ((), 0, 0)


def test_far_apart_changes_are_separate_hunks() -> None:
    before = b"".join(b"%d\n" % i for i in range(30))
    after = before.replace(b"2\n", b"two\n", 1).replace(b"27\n", b"twenty-seven\n")
    hunks, _, _ = text_hunks(before, after)
    assert [h.header() for h in hunks] == ["@@ -1,6 +1,6 @@", "@@ -25,6 +25,6 @@"]


def _entries(ledger: Ledger, workspace: Path, changes: list[FileChange]) -> tuple[str, str]:
    plan = ledger.plans.create("review", str(workspace))
    changeset = ledger.changesets.start(plan.id)
    ledger.changesets.record_many(changeset.id, changes)
    return plan.id, changeset.id


def test_net_diff_follows_renames_and_drops_no_ops(ledger: Ledger, workspace: Path) -> None:
    plan_id, _ = _entries(
        ledger,
        workspace,
        [
            FileChange(
                "c.txt",
                ChangeOperation.RENAME,
                b"one\ntwo\nthree\n",
                b"one\ntwo\nthree\n",
                old_path="a.txt",
            ),
            FileChange("c.txt", ChangeOperation.MODIFY, b"one\ntwo\nthree\n", b"one\n2\nthree\n"),
            FileChange(
                "d.txt",
                ChangeOperation.RENAME,
                b"one\n2\nthree\n",
                b"one\n2\nthree\n",
                old_path="c.txt",
            ),
            FileChange("tmp.txt", ChangeOperation.CREATE, after=b"scratch\n"),
            FileChange("tmp.txt", ChangeOperation.DELETE, before=b"scratch\n"),
            FileChange("b.txt", ChangeOperation.MODIFY, b"bee\n", b"B\n"),
            FileChange("b.txt", ChangeOperation.MODIFY, b"B\n", b"bee\n"),
        ],
    )
    review = ReviewService(ledger.plans, ledger.changesets)
    _, changeset = review.changeset(plan_id)
    assert changeset is not None
    files = list(review.diffs(changeset))
    assert [(f.operation, f.old_path, f.path, f.insertions, f.deletions) for f in files] == [
        ("rename", "a.txt", "d.txt", 1, 1)
    ]
    entries = list(review.diffs(changeset, per_entry=True))
    assert [(f.seq, f.operation, f.path) for f in entries] == [
        (1, "rename", "c.txt"),
        (2, "modify", "c.txt"),
        (3, "rename", "d.txt"),
        (4, "create", "tmp.txt"),
        (5, "delete", "tmp.txt"),
        (6, "modify", "b.txt"),
        (7, "modify", "b.txt"),
    ]
    assert [f.path for f in review.diffs(changeset, paths=["*.txt"], per_entry=True)] == [
        f.path for f in entries
    ]
    assert [f.path for f in review.diffs(changeset, paths=["a.txt"])] == ["d.txt"]
    assert len(net_files(changeset.entries)) == 1


def test_binary_files_carry_sizes_and_hashes_not_hunks(ledger: Ledger, workspace: Path) -> None:
    plan_id, _ = _entries(
        ledger, workspace, [FileChange("img.png", ChangeOperation.CREATE, after=b"\x89PNG\x00\x01")]
    )
    review = ReviewService(ledger.plans, ledger.changesets)
    _, changeset = review.changeset(plan_id)
    assert changeset is not None
    [diff] = review.diffs(changeset, keep_content=True)
    assert (diff.binary, diff.hunks, diff.after_size) == (True, (), 6)
    patch = patch_text(diff)
    assert "GIT binary patch\nliteral 6\n" in patch
    png_id = git_blob_id(b"\x89PNG\x00\x01")
    assert f"index {'0' * 40}..{png_id}" in patch


def test_a_missing_blob_is_named(ledger: Ledger, workspace: Path) -> None:
    plan_id, _ = _entries(
        ledger, workspace, [FileChange("a.txt", ChangeOperation.MODIFY, b"one\n", b"uno\n")]
    )
    database = ledger.engine.url.database
    assert database is not None
    raw = sqlite3.connect(database)
    with raw:  # a damaged ledger: the content of the change is gone
        raw.execute("PRAGMA foreign_keys=OFF")
        raw.execute("DELETE FROM blobs WHERE hash = ?", (sha256_hex(b"uno\n"),))
    raw.close()
    review = ReviewService(ledger.plans, ledger.changesets)
    with pytest.raises(MissingArtifactError, match=r"blob [0-9a-f]{64} of a\.txt \(entry 1\)"):
        review.changeset(plan_id)
    with pytest.raises(MissingArtifactError, match=r"after content of a\.txt"):
        review.status(plan_id)


def test_status_of_a_cancelled_plan_still_answers(ledger: Ledger, workspace: Path) -> None:
    plans = PlanService(ledger.plans, ledger.changesets)
    plan = plans.create("short-lived", workspace)
    with plans.execute(plan.id) as run:
        run.call("write_file", {"path": "n.txt", "content": "n\n"})
    PlanApplyService(ledger.plans, ledger.changesets).cancel(plan.id)
    status = ReviewService(ledger.plans, ledger.changesets).status(plan.id)
    assert status["state"] == "cancelled"
    assert status["execution"] is None
    assert str(status["artifacts"]).startswith("cleaned up: changeset")
    with pytest.raises(MissingArtifactError, match="was cleaned up"):
        ReviewService(ledger.plans, ledger.changesets).changeset(plan.id)


def test_a_10000_entry_diff_streams_in_bounded_memory(ledger: Ledger, workspace: Path) -> None:
    body = b"".join(b"line %d of a generated source file\n" % i for i in range(60))
    changes = [
        FileChange(
            f"gen/{i // 100}/f{i}.py",
            ChangeOperation.CREATE,
            after=body + b"# %d\n" % i,
        )
        for i in range(10_000)
    ]
    plan_id, _ = _entries(ledger, workspace, changes)
    review = ReviewService(ledger.plans, ledger.changesets)
    _, changeset = review.changeset(plan_id)
    assert changeset is not None
    envelope = Envelope(
        command="plan diff",
        status="ok",
        exit_code=0,
        data={"plan_id": plan_id, "changeset_id": changeset.id, "files": review.diffs(changeset)},
        started=utcnow(),
        duration_ms=0.0,
    )
    written = 0
    tail: list[str] = []

    def write(text: str) -> None:
        nonlocal written
        written += len(text)
        tail[:] = [text]

    tracemalloc.start()
    render_to(envelope, "plain", write)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert written > 10_000 * len(body)  # every file's diff went out
    assert tail == [" 10000 files changed, 610000 insertions(+)\n"]
    assert peak < 40 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_plain_diff_of_a_small_plan_reads_like_git(ledger: Ledger, workspace: Path) -> None:
    plan_id, _ = _entries(
        ledger, workspace, [FileChange("a.txt", ChangeOperation.MODIFY, b"one\n", b"uno\n")]
    )
    review = ReviewService(ledger.plans, ledger.changesets)
    _, changeset = review.changeset(plan_id)
    assert changeset is not None
    envelope = Envelope(
        command="plan diff",
        status="ok",
        exit_code=0,
        data={
            "plan_id": plan_id,
            "changeset_id": changeset.id,
            "files": review.diffs(changeset, keep_content=True),
        },
        started=utcnow(),
        duration_ms=0.0,
    )
    one, uno = git_blob_id(b"one\n")[:7], git_blob_id(b"uno\n")[:7]
    assert render(envelope, "plain") == (
        "diff --git a/a.txt b/a.txt\n"
        f"index {one}..{uno} 100644\n"
        "--- a/a.txt\n"
        "+++ b/a.txt\n"
        "@@ -1 +1 @@\n"
        "-one\n"
        "+uno\n"
        " 1 file changed, 1 insertion(+), 1 deletion(-)\n"
    )


MODE_CHANGES = [
    FileChange("conf.txt", ChangeOperation.MODIFY, b"a\n", b"b\n", mode=0o600, before_mode=0o640),
    FileChange("key.txt", ChangeOperation.MODIFY, b"k\n", b"k\n", mode=0o600, before_mode=0o644),
    FileChange("run.sh", ChangeOperation.MODIFY, b"x\n", b"x\n", mode=0o755, before_mode=0o644),
    FileChange("new.txt", ChangeOperation.CREATE, after=b"n\n", mode=0o600),
    FileChange("gone.txt", ChangeOperation.DELETE, before=b"g\n", mode=0o640, before_mode=0o640),
]


def _cli(db: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--db", str(db), *args])
    assert result.exit_code == 0, (args, result.stderr)
    assert result.stderr == ""
    return result.stdout


def test_review_shows_every_change_of_permission_bits(
    ledger: Ledger, workspace: Path, tmp_path: Path
) -> None:
    """Full bits before and after in every format, not only the executable bit git keeps."""
    plan_id, _ = _entries(ledger, workspace, MODE_CHANGES)
    db = tmp_path / "ledger.db"
    a, b = git_blob_id(b"a\n")[:7], git_blob_id(b"b\n")[:7]
    n, g = git_blob_id(b"n\n")[:7], git_blob_id(b"g\n")[:7]
    assert _cli(db, "plan", "diff", plan_id, "--format", "plain") == (
        "# mode change 0640 => 0600 conf.txt\n"
        "diff --git a/conf.txt b/conf.txt\n"
        f"index {a}..{b} 100644\n"
        "--- a/conf.txt\n"
        "+++ b/conf.txt\n"
        "@@ -1 +1 @@\n"
        "-a\n"
        "+b\n"
        "diff --git a/gone.txt b/gone.txt\n"
        "deleted file mode 100644\n"
        f"index {g}..0000000\n"
        "--- a/gone.txt\n"
        "+++ /dev/null\n"
        "@@ -1 +0,0 @@\n"
        "-g\n"
        "# mode change 0644 => 0600 key.txt\n"
        "# create mode 0600 new.txt\n"
        "diff --git a/new.txt b/new.txt\n"
        "new file mode 100644\n"
        f"index 0000000..{n}\n"
        "--- /dev/null\n"
        "+++ b/new.txt\n"
        "@@ -0,0 +1 @@\n"
        "+n\n"
        "# mode change 0644 => 0755 run.sh\n"
        "diff --git a/run.sh b/run.sh\n"
        "old mode 100644\n"
        "new mode 100755\n"
        " 5 files changed, 2 insertions(+), 2 deletions(-)\n"
    )
    assert _cli(db, "plan", "diff", plan_id, "--stat").splitlines()[-5:] == [
        " 5 files changed, 2 insertions(+), 2 deletions(-)",
        " mode change 0640 => 0600 conf.txt",
        " mode change 0644 => 0600 key.txt",
        " create mode 0600 new.txt",
        " mode change 0644 => 0755 run.sh",
    ]
    expected = {
        "conf.txt": ("0640", "0600"),
        "gone.txt": ("0640", None),
        "key.txt": ("0644", "0600"),
        "new.txt": (None, "0600"),
        "run.sh": ("0644", "0755"),
    }
    for fmt in ("json", "yaml"):
        for command, key in (("diff", "files"), ("artifacts", "artifacts")):
            out = _cli(db, "plan", command, plan_id, "--format", fmt)
            data = (json.loads(out) if fmt == "json" else yaml.safe_load(out))["data"]
            assert {f["path"]: (f["old_mode"], f["new_mode"]) for f in data[key]} == expected
    artifacts = _cli(db, "plan", "artifacts", plan_id, "--format", "plain")
    assert "artifacts.0.old_mode: 0640\nartifacts.0.new_mode: 0600\n" in artifacts
    assert "artifacts.3.old_mode: -\nartifacts.3.new_mode: 0600\n" in artifacts
    for command in ("diff", "artifacts"):
        shown = _cli(db, "plan", command, plan_id, "--format", "rich")
        for cell in ("0640 -> 0600", "0644 -> 0600", "0644 -> 0755"):
            assert f" {cell} " in shown, (command, cell)
