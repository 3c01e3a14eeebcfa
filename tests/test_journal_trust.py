"""Apply journals are untrusted input (issue 9, item 1).

A journal is acted on only when this ledger wrote it (its ledger id) for an apply it records
as running (its apply id) of a plan that is ``applying`` in this very workspace; every path
in it is checked as a tool's path is. Anything else (a journal committed to a repository and
cloned, another ledger's, an unknown plan's, a corrupt one) is never rolled back or forward:
it is reported with its path and the way to remove it, and commands that do not apply in
that workspace keep working.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from changeledger.cli.main import cli
from changeledger.constants import JOURNAL_DIR, LEDGER_DIR
from changeledger.domain.errors import JournalError
from changeledger.domain.ids import new_id
from changeledger.domain.models import PlanState, sha256_hex
from changeledger.services.execution import PlanService
from changeledger.services.plan_apply_service import PlanApplyService
from changeledger.storage.ledger import Ledger
from changeledger.workspace.apply import (
    Journal,
    JournalStep,
    net_changes,
    pending_journals,
    plan_writes,
)
from changeledger.workspace.confine import Workspace
from trees import snapshot, tree_diff

ORIGINAL = b"original\n"
EVIL = b"written by a journal nobody should trust\n"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace with its embedded ledger and a file a journal could be aimed at."""
    monkeypatch.delenv("CHANGELEDGER_DB", raising=False)
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)
    (work / "src" / "app.py").write_bytes(ORIGINAL)
    (work / "keep.txt").write_bytes(ORIGINAL)
    Ledger.init(work).close()
    return work


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the workspace that nothing may ever touch."""
    place = tmp_path / "outside"
    place.mkdir()
    (place / "victim.txt").write_bytes(ORIGINAL)
    return place


@pytest.fixture
def ledger(root: Path) -> Iterator[Ledger]:
    with Ledger.open(root / LEDGER_DIR / "ledger.db") as opened:
        yield opened


def staged_plan(ledger: Ledger, root: Path) -> str:
    service = PlanService(ledger.plans, ledger.changesets)
    plan = service.create("edit", root)
    with service.execute(plan.id) as run:
        run.call("write_file", {"path": "src/app.py", "content": "changed\n"})
        run.call("write_file", {"path": "new.txt", "content": "new\n"})
    return plan.id


def begin(ledger: Ledger, root: Path, plan_id: str) -> tuple[str, Journal]:
    """What an apply does up to its journal: the ledger's record, and the journal it would
    write (the tests write it, or a hostile variant of it, themselves)."""
    changeset = ledger.changesets.get_for_plan(plan_id)
    assert changeset is not None
    workspace = Workspace(root)
    planned, conflicts = plan_writes(workspace, net_changes(changeset.entries))
    assert not conflicts
    record = ledger.changesets.begin_apply(
        plan_id,
        changeset_id=changeset.id,
        through_seq=len(changeset.entries),
        workspace=str(workspace.root),
        files=[],
    )
    token = "0123456789ab"  # noqa: S105 - a journal's token, not a password
    steps = []
    for index, item in enumerate(planned):
        change = item.change
        steps.append(
            JournalStep(
                path=change.path,
                before=change.before_hash,
                after=change.after_hash,
                mode=item.mode,
                backup=None if change.before_hash is None else f"originals/{index}",
                staged=None if change.after_hash is None else f"staged/{index}",
            )
        )
    journal = Journal(
        plan_id=plan_id,
        root=str(workspace.root),
        steps=steps,
        created_dirs=[],
        ledger_id=ledger.id,
        apply_id=record.id,
        token=token,
    )
    return record.id, journal


def write_journal(root: Path, name: str, record: Any, backups: dict[str, bytes]) -> Path:
    folder = root / LEDGER_DIR / JOURNAL_DIR / name
    (folder / "originals").mkdir(parents=True)
    (folder / "staged").mkdir()
    for rel, content in backups.items():
        (folder / rel).write_bytes(content)
    text = record if isinstance(record, str) else json.dumps(record)
    (folder / "journal.json").write_text(text)
    return folder


def hostile(journal: Journal) -> dict[str, Any]:
    """The journal as its JSON record."""
    record = json.loads(journal.to_json())
    return dict(record)


def app_index(journal: Journal) -> int:
    return next(i for i, s in enumerate(journal.steps) if s.path == "src/app.py")


def app_backup(journal: Journal, content: bytes) -> dict[str, bytes]:
    """The journal's backup of src/app.py, holding ``content``."""
    return {f"originals/{app_index(journal)}": content}


def cli_run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("changeledger")
    return subprocess.run(
        [str(script), *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "CHANGELEDGER_DB": ""},
    )


# -- journals that are not this ledger's --------------------------------------------------------


def legacy(journal: Journal) -> dict[str, Any]:
    """The journal as version 1 wrote it (no ledger or apply id)."""
    return {
        "plan_id": journal.plan_id,
        "root": journal.root,
        "created_dirs": journal.created_dirs,
        "keep_artifacts": False,
        "steps": [
            {
                "path": s.path,
                "before": s.before,
                "after": s.after,
                "mode": s.mode,
                "backup": s.backup,
                "staged": s.staged,
                "beside": None,
            }
            for s in journal.steps
        ],
    }


@pytest.mark.parametrize("version", [1, 2])
def test_a_journal_cloned_with_a_repository_is_never_rolled_back(
    root: Path, tmp_path: Path, version: int
) -> None:
    """Another clone's ledger wrote it (its id is not ours); its plan is unknown here. The
    journal would "restore" src/app.py to other content and remove new files: nothing of
    it happens, it is reported once per command with the way to remove it."""
    other = tmp_path / "other"
    (other / "src").mkdir(parents=True)
    (other / "src" / "app.py").write_bytes(ORIGINAL)
    with Ledger.open(other / "ledger.db") as foreign:
        plan_id = staged_plan(foreign, other)
        _, journal = begin(foreign, other, plan_id)
    journal.root = str(root)
    record = hostile(journal) if version == 2 else legacy(journal)
    folder = write_journal(root, plan_id, record, app_backup(journal, EVIL))
    (root / "new.txt").write_bytes(b"new\n")  # as if that apply had created it here
    before = snapshot(root)

    done = cli_run(root, "plan", "list", "--format", "json")

    assert done.returncode == 0, done.stderr
    assert not tree_diff(snapshot(root), before)
    assert (folder / "journal.json").is_file(), "a foreign journal is never removed"
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, done.stderr
    assert str(folder) in warnings[0]
    assert ("another ledger" if version == 2 else "does not have") in warnings[0]
    assert f"rm -r {folder}" in warnings[0]


@pytest.mark.parametrize("why", ["unknown plan", "plan not applying", "apply never begun"])
def test_a_journal_this_ledger_did_not_begin_is_left_alone(
    root: Path, ledger: Ledger, why: str
) -> None:
    plan_id = staged_plan(ledger, root)
    if why == "plan not applying":
        _, journal = begin(ledger, root, plan_id)
        ledger.changesets.finish_apply(journal.apply_id or "", applied=False)  # apply_failed
        journal.apply_id = new_id()
    elif why == "apply never begun":
        _, journal = begin(ledger, root, plan_id)
        journal.apply_id = new_id()  # not the apply the ledger records as running
    else:
        _, journal = begin(ledger, root, plan_id)
        ledger.changesets.finish_apply(journal.apply_id or "", applied=False)
        journal.plan_id = new_id()
    folder = write_journal(root, journal.plan_id, hostile(journal), app_backup(journal, EVIL))
    before = snapshot(root)

    report = PlanApplyService(ledger.plans, ledger.changesets).recover(Workspace(root))

    assert not tree_diff(snapshot(root), before)
    assert folder.is_dir()
    assert report.rolled_back == ()
    assert len(report.notices) == 1
    assert str(folder) in report.notices[0]
    assert "rm -r" in report.notices[0]


def test_a_leftover_journal_of_an_applied_plan_is_only_removed(root: Path, ledger: Ledger) -> None:
    plan_id = staged_plan(ledger, root)
    record_id, journal = begin(ledger, root, plan_id)
    ledger.changesets.finish_apply(record_id, applied=True)
    folder = write_journal(root, plan_id, hostile(journal), app_backup(journal, EVIL))
    before = snapshot(root)

    report = PlanApplyService(ledger.plans, ledger.changesets).recover(Workspace(root))

    assert report.finished == (plan_id,)
    assert not folder.exists()
    assert not tree_diff(snapshot(root), before), "the journal's backups were not used"
    assert ledger.plans.get(plan_id).state is PlanState.APPLIED


def test_a_journal_of_this_ledger_is_rolled_back(root: Path, ledger: Ledger) -> None:
    """The control: the same journal, written by this ledger for its running apply, is
    acted on (its backup is put back and the created file removed)."""
    plan_id = staged_plan(ledger, root)
    _, journal = begin(ledger, root, plan_id)
    folder = write_journal(root, plan_id, hostile(journal), app_backup(journal, ORIGINAL))
    (root / "src" / "app.py").write_bytes(b"changed\n")
    (root / "new.txt").write_bytes(b"new\n")

    report = PlanApplyService(ledger.plans, ledger.changesets).recover(Workspace(root))

    assert report.rolled_back == (plan_id,)
    assert (root / "src" / "app.py").read_bytes() == ORIGINAL
    assert not (root / "new.txt").exists()
    assert not folder.exists()
    assert ledger.plans.get(plan_id).state is PlanState.APPLY_FAILED
    assert ledger.changesets.get_for_plan(plan_id) is not None, "staged work kept"


# -- every path in a journal is checked --------------------------------------------------------

HOSTILE_STEPS: list[tuple[str, str, Any]] = [
    ("absolute path", "path", "{outside}/victim.txt"),
    ("climbing path", "path", "../outside/victim.txt"),
    ("path into .git", "path", ".git/config"),
    ("path into .changeledger", "path", ".changeledger/ledger.db"),
    ("climbing backup", "backup", "../../../../outside/victim.txt"),
    ("absolute backup", "backup", "{outside}/victim.txt"),
    ("another step's backup", "backup", "originals/{other}"),
    ("climbing staged", "staged", "../../../outside/victim.txt"),
    ("absolute beside", "beside_old", "{outside}/.changeledger-0123456789ab-{index}.old.tmp"),
    ("climbing beside", "beside_new", "../outside/.changeledger-0123456789ab-{index}.new.tmp"),
    ("beside not a temporary", "beside_old", "src/keep.txt"),
    ("beside far away", "beside_old", "other/.changeledger-0123456789ab-{index}.old.tmp"),
    ("mode with setuid", "mode", 0o4755),
    ("digest not hex", "before", "../../etc/passwd"),
]


@pytest.mark.parametrize(
    ("case", "key", "value"), HOSTILE_STEPS, ids=[c for c, _, _ in HOSTILE_STEPS]
)
def test_a_journal_naming_an_unsafe_path_is_refused_whole(
    *, root: Path, ledger: Ledger, outside: Path, case: str, key: str, value: Any
) -> None:
    plan_id = staged_plan(ledger, root)
    _, journal = begin(ledger, root, plan_id)
    record = hostile(journal)
    index = app_index(journal)
    if isinstance(value, str):
        value = value.format(outside=outside, index=index, other=1 - index)
    record["steps"][index][key] = value
    folder = write_journal(root, plan_id, record, app_backup(journal, EVIL))
    before, outside_before = snapshot(root), snapshot(outside)

    report = PlanApplyService(ledger.plans, ledger.changesets).recover(Workspace(root))

    assert not tree_diff(snapshot(root), before), case
    assert not tree_diff(snapshot(outside), outside_before), case
    assert folder.is_dir()
    assert report.rolled_back == ()
    assert report.blocked
    assert report.blocked[0][0] == plan_id
    assert "not one changeledger wrote" in report.notices[0]
    with pytest.raises(JournalError, match=r"journal\.json"):
        PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)


def test_created_dirs_outside_the_workspace_refuse_the_journal(
    root: Path, ledger: Ledger, outside: Path
) -> None:
    plan_id = staged_plan(ledger, root)
    _, journal = begin(ledger, root, plan_id)
    record = hostile(journal)
    record["created_dirs"] = ["../outside"]
    write_journal(root, plan_id, record, {})
    outside_before = snapshot(outside)
    PlanApplyService(ledger.plans, ledger.changesets).recover(Workspace(root))
    assert (outside / "victim.txt").is_file()
    assert not tree_diff(snapshot(outside), outside_before)


# -- corrupt and unreadable journals ------------------------------------------------------------

CORRUPT: list[tuple[str, Any]] = [
    ("not json", "{not json"),
    ("truncated", '{"format": 2, "plan_id": '),
    ("a list", "[]"),
    ("wrong plan", None),
    ("unknown format", None),
    ("steps not a list", None),
    ("symlink", None),
    ("directory", None),
]


@pytest.mark.parametrize(("case", "text"), CORRUPT, ids=[c for c, _ in CORRUPT])
def test_a_corrupt_journal_is_one_error_line_and_other_commands_still_work(
    root: Path, ledger: Ledger, outside: Path, case: str, text: Any
) -> None:
    plan_id = staged_plan(ledger, root)
    _, journal = begin(ledger, root, plan_id)
    record: Any = hostile(journal)
    if case == "wrong plan":
        record["plan_id"] = new_id()
    elif case == "unknown format":
        record["format"] = 99
    elif case == "steps not a list":
        record["steps"] = {"path": "x"}
    elif text is not None:
        record = text
    folder = write_journal(root, plan_id, record, {})
    journal_file = folder / "journal.json"
    if case == "symlink":
        journal_file.unlink()
        journal_file.symlink_to(outside / "victim.txt")
    elif case == "directory":
        journal_file.unlink()
        journal_file.mkdir()
    ledger.close()
    before = snapshot(root)

    listed = cli_run(root, "plan", "list", "--format", "json")
    applied = cli_run(root, "plan", "apply", plan_id)

    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["status"] == "ok"
    assert applied.returncode == 1, applied.stderr
    errors = [line for line in applied.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, applied.stderr
    assert "internal error" not in applied.stderr
    assert "Traceback" not in applied.stderr
    assert str(folder) in errors[0]
    assert not tree_diff(snapshot(root), before)
    assert (outside / "victim.txt").read_bytes() == ORIGINAL


def test_a_journal_folder_that_is_a_symlink_out_is_not_followed(
    root: Path, ledger: Ledger, outside: Path
) -> None:
    """``.changeledger/journal`` pointing outside: nothing there is read or removed."""
    plan_id = staged_plan(ledger, root)
    _, journal = begin(ledger, root, plan_id)
    fake = outside / plan_id
    (fake / "originals").mkdir(parents=True)
    (fake / "journal.json").write_text(json.dumps(hostile(journal)))
    (root / LEDGER_DIR / JOURNAL_DIR).symlink_to(outside)
    outside_before = snapshot(outside)

    report = PlanApplyService(ledger.plans, ledger.changesets).recover(Workspace(root))

    assert report.rolled_back == ()
    assert report.notices
    assert "cannot be read" in report.notices[0]
    assert not tree_diff(snapshot(outside), outside_before)
    with pytest.raises(JournalError):
        pending_journals(Workspace(root))


def test_a_journal_of_another_ledger_with_the_same_plan_id_is_left_alone(
    root: Path, tmp_path: Path
) -> None:
    """``--db`` elsewhere: a second ledger on the same workspace never acts on the first
    ledger's journal, even for a plan id it happens to know."""
    with Ledger.open(root / LEDGER_DIR / "ledger.db") as first:
        plan_id = staged_plan(first, root)
        _, journal = begin(first, root, plan_id)
    write_journal(root, plan_id, hostile(journal), app_backup(journal, EVIL))
    with Ledger.open(tmp_path / "second.db") as second:
        assert second.id != journal.ledger_id
        report = PlanApplyService(second.plans, second.changesets).recover(Workspace(root))
    assert report.rolled_back == ()
    assert (root / "src" / "app.py").read_bytes() == ORIGINAL


def test_journal_digests_are_what_recovery_compares(root: Path, ledger: Ledger) -> None:
    """A file the plan created is removed on rollback only if it holds the journal's
    content: a user's file at that path with other content stays."""
    plan_id = staged_plan(ledger, root)
    _, journal = begin(ledger, root, plan_id)
    write_journal(root, plan_id, hostile(journal), app_backup(journal, ORIGINAL))
    (root / "new.txt").write_bytes(b"the user's own file\n")
    assert sha256_hex(b"new\n") in json.dumps(hostile(journal))
    PlanApplyService(ledger.plans, ledger.changesets).recover(Workspace(root))
    assert (root / "new.txt").read_bytes() == b"the user's own file\n"


def test_a_journal_folder_named_like_no_plan_is_reported_and_left(root: Path) -> None:
    folder = root / LEDGER_DIR / JOURNAL_DIR / "not-a-plan"
    folder.mkdir(parents=True)
    (folder / "journal.json").write_text('{"format": 2}')
    result = CliRunner().invoke(
        cli, ["--db", str(root / LEDGER_DIR / "ledger.db"), "plan", "list", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "ok"
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert str(folder) in warning
    assert folder.is_dir()


def test_a_backup_swapped_for_a_symlink_is_never_put_back(
    root: Path, ledger: Ledger, outside: Path
) -> None:
    """This ledger's own journal, whose backup of src/app.py was replaced by a symlink to
    a file outside: the rollback must not plant that symlink in the workspace."""
    plan_id = staged_plan(ledger, root)
    _, journal = begin(ledger, root, plan_id)
    folder = write_journal(root, plan_id, hostile(journal), {})
    (folder / f"originals/{app_index(journal)}").symlink_to(outside / "victim.txt")
    (root / "src" / "app.py").write_bytes(b"changed\n")

    report = PlanApplyService(ledger.plans, ledger.changesets).recover(Workspace(root))

    assert not (root / "src" / "app.py").is_symlink()
    assert report.blocked
    assert "not a regular file" in report.notices[0]
    assert (outside / "victim.txt").read_bytes() == ORIGINAL
