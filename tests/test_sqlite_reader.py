"""The stdlib-sqlite3 reader behind the review commands' fast start.

It must answer exactly what the SQLAlchemy stores answer, on the same file, and step aside
(``open_reader`` returns ``None``) whenever the general path has something to write or say
first: migrations, recovery of an interrupted apply, a file that is not a ledger.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from changeledger import (
    ChangeOperation,
    FileChange,
    InvocationStatus,
    Ledger,
    PlanApplyService,
    PlanService,
    ToolCall,
)
from changeledger.constants import ENV_DB, JOURNAL_DIR, LEDGER_DIR
from changeledger.domain.errors import (
    ChangeLedgerError,
    MissingArtifactError,
    NotFoundError,
    ValidationError,
)
from changeledger.domain.ids import new_id
from changeledger.domain.models import FileKind, PlanState, sha256_hex
from changeledger.domain.store import ChangeSetReader, PlanReader
from changeledger.services.review import ReviewService
from changeledger.storage.locate import sqlite_file
from changeledger.storage.sqlite_reader import SqliteLedgerReader, open_reader


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(ENV_DB, raising=False)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "a.txt").write_text("one\ntwo\nthree\n")
    (workspace / "b.txt").write_text("bee\n")
    (workspace / "old.txt").write_text("moved\n")
    Ledger.init(workspace).close()
    return workspace


@pytest.fixture
def db(root: Path) -> Path:
    return root / LEDGER_DIR / "ledger.db"


@pytest.fixture
def plans(root: Path, db: Path) -> dict[str, str]:
    """Plans in several states: executed with every kind of change, cancelled, applied,
    one with a failed tool call, one never started."""
    made: dict[str, str] = {}
    with Ledger.open(db) as ledger:
        service = PlanService(ledger.plans, ledger.changesets)
        rich = ledger.plans.create("every change", str(root), description="d", metadata={"k": 1})
        changeset = ledger.changesets.start(rich.id)
        call_id = new_id()
        ledger.changesets.record_invocation(
            changeset.id,
            ToolCall(
                "edit", {"path": "a.txt"}, result={"ok": True}, resource_refs=["a.txt"], id=call_id
            ),
            [
                FileChange("a.txt", ChangeOperation.MODIFY, b"one\ntwo\nthree\n", b"one\n2\n"),
                FileChange("img.bin", ChangeOperation.CREATE, after=b"\x89PNG\x00" * 40),
                FileChange("new.txt", ChangeOperation.CREATE, after=b"x\n" * 100, mode=0o755),
            ],
        )
        ledger.changesets.record_invocation(
            changeset.id,
            ToolCall(
                "broken",
                {"why": "test"},
                status=InvocationStatus.ERROR,
                error_type="ToolFailure",
                error_message="no such thing",
            ),
        )
        ledger.changesets.record_many(
            changeset.id,
            [
                FileChange("b.txt", ChangeOperation.DELETE, before=b"bee\n"),
                FileChange(
                    "moved.txt", ChangeOperation.RENAME, b"moved\n", b"moved\n", old_path="old.txt"
                ),
                FileChange(
                    "run.sh",
                    ChangeOperation.MODIFY,
                    b"#!/bin/sh\n",
                    b"#!/bin/sh\n",
                    mode=0o700,
                    before_mode=0o644,
                ),
                FileChange(
                    "key.txt", ChangeOperation.MODIFY, b"k\n", b"K\n", mode=0o600, before_mode=0o640
                ),
                FileChange(
                    "latest", ChangeOperation.CREATE, after=b"new.txt", kind=FileKind.SYMLINK
                ),
                FileChange(
                    "venv/python",
                    ChangeOperation.CREATE,
                    after=b"/usr/bin/python3",
                    kind=FileKind.SYMLINK,
                ),
                FileChange(
                    "was-link",
                    ChangeOperation.MODIFY,
                    b"target",
                    b"a file now\n",
                    kind=FileKind.FILE,
                    before_kind=FileKind.SYMLINK,
                ),
            ],
        )
        ledger.plans.transition(rich.id, PlanState.EXECUTING)
        ledger.plans.transition(rich.id, PlanState.EXECUTED)
        made["rich"] = rich.id
        made["empty"] = ledger.plans.create("nothing yet", str(root)).id
        for name in ("cancelled", "applied"):
            plan = service.create(name, root)
            with service.execute(plan.id) as run:
                run.call("write_file", {"path": f"{name}.txt", "content": f"{name}\n"})
            made[name] = plan.id
        apply = PlanApplyService(ledger.plans, ledger.changesets)
        apply.cancel(made["cancelled"])
        apply.apply(made["applied"])
    return made


@pytest.fixture
def reader(db: Path, plans: dict[str, str]) -> Iterator[SqliteLedgerReader]:
    opened = open_reader(db)
    assert opened is not None
    with opened:
        yield opened


def _outcome(call: Callable[[], Any]) -> Any:
    """What a call returns, or the type and message of the error it raises."""
    try:
        result = call()
    except ChangeLedgerError as exc:
        return ("raised", type(exc).__name__, exc.message)
    if isinstance(result, Iterator):
        return [dataclasses.astuple(d) for d in result]
    return result


def test_it_implements_the_read_protocols(reader: SqliteLedgerReader) -> None:
    assert isinstance(reader.plans, PlanReader)
    assert isinstance(reader.changesets, ChangeSetReader)


def test_every_review_answers_as_the_sqlalchemy_stores_do(
    db: Path, plans: dict[str, str], reader: SqliteLedgerReader
) -> None:
    with Ledger.open(db) as ledger:
        slow = ReviewService(ledger.plans, ledger.changesets)
        fast = ReviewService(reader.plans, reader.changesets)
        unknown = new_id()
        for plan_id in (*plans.values(), unknown, "", "not-an-id"):

            def calls(review: ReviewService, plan_id: str = plan_id) -> list[Callable[[], Any]]:
                def diffs(**options: Any) -> Callable[[], Any]:
                    def run() -> Any:
                        _, changeset = review.changeset(plan_id)
                        if changeset is None:
                            return "no changeset"
                        return review.diffs(changeset, keep_content=True, **options)

                    return run

                return [
                    lambda: review.status(plan_id),
                    lambda: review.artifacts(plan_id),
                    lambda: review.invocations(plan_id),
                    lambda: review.invocations(plan_id, errors=True),
                    lambda: review.changeset(plan_id, invocations=True),
                    diffs(),
                    diffs(per_entry=True),
                    diffs(paths=["*.txt"]),
                ]

            for expected, actual in zip(calls(slow), calls(fast), strict=True):
                assert _outcome(actual) == _outcome(expected), plan_id
        for state in (None, PlanState.APPLIED, PlanState.CREATED):
            assert reader.plans.list(state) == ledger.plans.list(state)
        sleeping: Any = "sleeping"
        with pytest.raises(ValidationError, match="unknown plan state"):
            reader.plans.list(sleeping)


def test_permission_bits_read_back_the_same(
    db: Path, plans: dict[str, str], reader: SqliteLedgerReader
) -> None:
    """Both readers give every file's bits before and after (what review shows)."""
    with Ledger.open(db) as ledger:
        answers = []
        for review in (
            ReviewService(ledger.plans, ledger.changesets),
            ReviewService(reader.plans, reader.changesets),
        ):
            _, changeset = review.changeset(plans["rich"])
            assert changeset is not None
            answers.append(
                (
                    {d.path: d.modes() for d in review.diffs(changeset)},
                    [(d.path, d.modes()) for d in review.diffs(changeset, per_entry=True)],
                    review.artifacts(plans["rich"])["artifacts"],
                )
            )
    assert answers[0] == answers[1]
    net, entries, artifacts = answers[1]
    assert net["run.sh"] == (0o644, 0o700)
    assert net["key.txt"] == (0o640, 0o600)
    assert net["new.txt"] == (None, 0o755)
    assert ("run.sh", (0o644, 0o700)) in entries
    rows = {row["path"]: row for row in artifacts}
    assert (rows["run.sh"]["old_mode"], rows["run.sh"]["new_mode"]) == ("0644", "0700")
    assert (rows["new.txt"]["old_mode"], rows["new.txt"]["new_mode"]) == (None, "0755")


def test_summaries_blobs_and_errors_match(
    db: Path, plans: dict[str, str], reader: SqliteLedgerReader
) -> None:
    with Ledger.open(db) as ledger:
        slow, fast = ledger.changesets, reader.changesets
        rich = ledger.plans.get(plans["rich"]).current_changeset_id
        cancelled = ledger.plans.get(plans["cancelled"]).current_changeset_id
        assert rich is not None
        assert cancelled is not None
        assert fast.summarize(rich) == slow.summarize(rich)
        assert fast.summarize(rich).tool_errors == 1
        assert fast.get(rich) == slow.get(rich)
        present = sha256_hex(b"x\n" * 100)
        gone = sha256_hex(b"never stored")
        unknown = new_id()
        assert fast.read_blob(present) == slow.read_blob(present) == b"x\n" * 100
        assert fast.read_blobs([present]) == slow.read_blobs([present])
        assert fast.missing_blobs([gone, present]) == slow.missing_blobs([gone, present]) == [gone]
        calls: list[Callable[[ChangeSetReader], Any]] = [
            lambda store: store.summarize(cancelled),
            lambda store: store.get(cancelled),
            lambda store: store.get(unknown),
            lambda store: store.read_blob(gone),
            lambda store: store.read_blobs([gone, present]),
            lambda store: store.read_blob("abc"),
            lambda store: store.get_for_plan(unknown),
        ]
        for call in calls:
            assert _outcome(partial(call, fast)) == _outcome(partial(call, slow))
        with pytest.raises(MissingArtifactError, match="was cleaned up at"):
            fast.get(cancelled)
        with pytest.raises(NotFoundError):
            fast.get(new_id())


def test_it_reads_one_snapshot(db: Path, plans: dict[str, str]) -> None:
    """A plan recorded while a review command runs does not appear halfway through it."""
    reader = open_reader(db)
    assert reader is not None
    with reader:
        before = reader.plans.list()
        with Ledger.open(db) as ledger:
            ledger.plans.create("recorded meanwhile", "/elsewhere")
        assert reader.plans.list() == before
    again = open_reader(db)
    assert again is not None
    with again:
        assert len(again.plans.list()) == len(before) + 1


def test_a_damaged_blob_is_reported_not_returned(db: Path, plans: dict[str, str]) -> None:
    digest = sha256_hex(b"x\n" * 100)
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE blobs SET data = ? WHERE hash = ?", (b"garbage", digest))
    raw.close()
    reader = open_reader(db)
    assert reader is not None
    with reader, pytest.raises(ChangeLedgerError, match=f"blob {digest} is damaged"):
        reader.changesets.read_blob(digest)


# -- when the general path must open the ledger instead -----------------------------------


def test_it_steps_aside_for_an_older_schema(db: Path, plans: dict[str, str]) -> None:
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '0001'")
    raw.close()
    assert open_reader(db) is None


def test_it_steps_aside_while_an_apply_waits_for_recovery(
    db: Path, root: Path, plans: dict[str, str]
) -> None:
    journal = root / LEDGER_DIR / JOURNAL_DIR / plans["rich"]
    journal.mkdir(parents=True)
    assert open_reader(db) is None
    journal.rmdir()
    assert open_reader(db) is not None
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE plans SET state = 'applying' WHERE id = ?", (plans["rich"],))
    raw.close()
    assert open_reader(db) is None


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not a database at all" * 100, None],
    ids=["empty file", "foreign bytes", "sqlite without a ledger"],
)
def test_it_steps_aside_for_a_file_that_is_not_a_ledger(
    tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "other.db"
    if content is None:
        with sqlite3.connect(path) as raw:
            raw.execute("CREATE TABLE notes (body TEXT)")
        raw.close()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    assert open_reader(path) is None
    assert path.read_bytes() == before
    assert open_reader(tmp_path / "absent.db") is None
    assert not (tmp_path / "absent.db").exists()


def test_which_file_a_db_value_names(
    tmp_path: Path, db: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(root / "..")
    assert sqlite_file(str(db)) == db
    assert sqlite_file(f"ws/{LEDGER_DIR}/ledger.db") == tmp_path / "ws" / LEDGER_DIR / "ledger.db"
    assert sqlite_file(f"sqlite:///{db}") == db
    assert sqlite_file(f"sqlite+pysqlite:///{db}") == db
    for other in (
        f"sqlite:///{db}?mode=ro",
        "postgresql://postgres@127.0.0.1/x",
        "sqlite://",
        str(tmp_path / "absent.db"),
        "   ",
    ):
        assert sqlite_file(other) is None, other
    assert sqlite_file(None) is None  # nothing above tmp_path
    assert sqlite_file(None, cwd=root / LEDGER_DIR) == db
    monkeypatch.setenv(ENV_DB, str(db))
    assert sqlite_file(None) == db
    assert sqlite_file("postgresql://postgres@127.0.0.1/x") is None


def test_the_review_commands_do_not_import_sqlalchemy(
    root: Path, plans: dict[str, str], tmp_path: Path
) -> None:
    """What makes ``plan status`` start fast; a new import would quietly undo it."""
    probe = (
        "import sys\n"
        "from changeledger.cli.main import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy')\n"
        "    print('LOADED', len(loaded), loaded[:3], file=sys.stderr)\n"
        "    raise\n"
    )
    env = {k: v for k, v in os.environ.items() if k != ENV_DB}
    for code, command in (
        (0, ["plan", "status", plans["rich"]]),
        (0, ["plan", "diff", plans["rich"], "--format", "json"]),
        (0, ["plan", "diff", plans["rich"], "--format", "patch"]),
        (0, ["plan", "artifacts", plans["rich"]]),
        (0, ["plan", "invocations", plans["rich"], "--format", "yaml"]),
        (3, ["plan", "status", new_id()]),
        (3, ["plan", "diff", plans["cancelled"]]),
    ):
        done = subprocess.run(
            [sys.executable, "-c", probe, *command],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == code, done.stderr
        assert "LOADED 0 []" in done.stderr, (command, done.stderr)
    # With a ledger to recover, the general path runs (and SQLAlchemy with it): an apply
    # killed after the ledger said "applying", before its journal was written.
    with sqlite3.connect(root / LEDGER_DIR / "ledger.db") as raw:
        raw.execute("UPDATE plans SET state = 'applying' WHERE id = ?", (plans["rich"],))
    raw.close()
    (root / LEDGER_DIR / JOURNAL_DIR / plans["rich"]).mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-c", probe, "plan", "status", plans["rich"]],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED 0" not in done.stderr
    assert not any((root / LEDGER_DIR / JOURNAL_DIR).iterdir())  # recovered
