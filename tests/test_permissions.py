"""Modes and permissions (issue 9, items 4, 9, 10 and 16).

- ``.changeledger`` or a ledger file that is a symlink is refused by ``init`` and every
  open (exit 2); nothing is written where it points.
- The ledger file is 0600 however it is created; ``.changeledger/`` 0700 with its
  ``.gitignore``; journal folders 0700; a directory changeledger did not create keeps its
  bits; deleted content is zeroed in the file (``secure_delete``).
- Apply honours the umask for what it creates, creates sensitive files 0600, keeps the
  workspace's mode of a file the plan does not chmod, refuses (exit 4) when the plan
  changes a mode the workspace changed since staging, and never writes setuid, setgid or
  sticky bits; tools refuse them (exit 2).
- ``--db`` naming a directory is exit 2; a ledger of another user is a clear permission
  error (exit 1), never an internal error.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from changeledger.cli.main import cli
from changeledger.constants import JOURNAL_DIR, LEDGER_DIR, LEDGER_FILE
from changeledger.domain.errors import ConflictError, ToolError, ValidationError
from changeledger.domain.models import ChangeOperation, FileChange, PlanState
from changeledger.services.execution import PlanService
from changeledger.services.plan_apply_service import PlanApplyService
from changeledger.storage.ledger import Ledger
from changeledger.workspace.apply import CRASH_ENV
from changeledger.workspace.tools import BUILTINS, ToolContext


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def cli_run(
    cwd: Path, *args: str, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("changeledger")
    env = {k: v for k, v in os.environ.items() if k != "CHANGELEDGER_DB"}
    return subprocess.run(
        [*prefix, str(script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


# -- item 4: symlinked ledgers ------------------------------------------------------------------


def test_a_symlinked_ledger_directory_is_refused(tmp_path: Path) -> None:
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    with Ledger.open(elsewhere / LEDGER_FILE):
        pass  # a ledger where the link points: it must not be used through the link
    (work / LEDGER_DIR).symlink_to(elsewhere)
    before = {p.name: (p.read_bytes(), mode_of(p)) for p in elsewhere.iterdir()}

    for args in (("init",), ("plan", "list"), ("plan", "create", "t"), ("db", "check")):
        done = cli_run(work, *args)
        assert done.returncode == 2, (args, done.stderr)
        [line] = done.stderr.splitlines()
        assert "is a symlink" in line, args
    after = {p.name: (p.read_bytes(), mode_of(p)) for p in elsewhere.iterdir()}
    assert after == before, "nothing was written or chmodded where the link points"


def test_a_symlinked_ledger_file_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    target = tmp_path / "somewhere.db"
    target.write_bytes(b"")
    (work / LEDGER_DIR).mkdir()
    (work / LEDGER_DIR / LEDGER_FILE).symlink_to(target)
    for args in (
        ("init",),
        ("plan", "list"),
        ("--db", str(work / LEDGER_DIR / LEDGER_FILE), "plan", "list"),
    ):
        done = cli_run(work, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "is a symlink" in done.stderr
    assert target.read_bytes() == b""
    with pytest.raises(ValidationError, match="symlink"):
        Ledger.open(work / LEDGER_DIR / LEDGER_FILE)


def test_a_dangling_ledger_symlink_is_refused_not_created(tmp_path: Path) -> None:
    (tmp_path / LEDGER_DIR).mkdir()
    (tmp_path / LEDGER_DIR / LEDGER_FILE).symlink_to(tmp_path / "made-by-nobody.db")
    assert cli_run(tmp_path, "init").returncode == 2
    assert not (tmp_path / "made-by-nobody.db").exists()


# -- item 10: what changeledger creates -----------------------------------------------------------


@pytest.mark.usefixtures("umask")
def test_every_way_of_creating_a_ledger_makes_it_owner_only(tmp_path: Path) -> None:
    os.umask(0)  # the most permissive umask: the modes below are changeledger's own
    work = tmp_path / "work"
    work.mkdir()
    assert cli_run(work, "init").returncode == 0
    assert mode_of(work / LEDGER_DIR) == 0o700
    assert (work / LEDGER_DIR / ".gitignore").read_text().splitlines()[-1] == "*"
    assert mode_of(work / LEDGER_DIR / LEDGER_FILE) == 0o600
    assert cli_run(work, "plan", "create", "t").returncode == 0  # writes: -wal, -shm
    for suffix in ("-wal", "-shm"):
        extra = work / LEDGER_DIR / f"{LEDGER_FILE}{suffix}"
        if extra.exists():
            assert mode_of(extra) == 0o600, suffix

    by_flag = tmp_path / "new-dir" / "by-flag.db"
    assert cli_run(work, "--db", str(by_flag), "init").returncode == 0
    assert mode_of(by_flag) == 0o600
    assert mode_of(by_flag.parent) == 0o700

    with Ledger.open(tmp_path / "by-library.db"):
        pass
    assert mode_of(tmp_path / "by-library.db") == 0o600


def test_a_directory_changeledger_did_not_create_keeps_its_bits(tmp_path: Path) -> None:
    (tmp_path / LEDGER_DIR).mkdir()
    (tmp_path / LEDGER_DIR).chmod(0o755)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    assert cli_run(tmp_path, "init").returncode == 0
    assert cli_run(tmp_path, "--db", str(shared / "l.db"), "init").returncode == 0
    assert mode_of(tmp_path / LEDGER_DIR) == 0o755
    assert mode_of(shared) == 0o775


def test_deleted_content_does_not_stay_readable_in_the_ledger_file(tmp_path: Path) -> None:
    marker = os.urandom(32 * 1024)  # incompressible: stored as it is
    db = tmp_path / "ledger.db"
    with Ledger.open(db) as ledger:
        plan = ledger.plans.create("secret", str(tmp_path))
        changeset = ledger.changesets.start(plan.id)
        ledger.changesets.record(
            changeset.id, FileChange("key.bin", ChangeOperation.CREATE, after=marker)
        )
        PlanApplyService(ledger.plans, ledger.changesets).cancel(plan.id)
    with sqlite3.connect(db) as raw:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    found = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.db*"))
    assert marker[:64] not in found


# -- items 9 and 10: what apply writes -------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open(tmp_path / "ledger.db") as opened:
        yield opened


@pytest.fixture
def root(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


def write_mode(ctx: ToolContext, path: str, content: str, mode: int) -> dict[str, str]:
    ctx.write(path, content, mode)
    return {"path": path}


def run(ledger: Ledger, root: Path, *calls: tuple[str, dict[str, object]]) -> str:
    registry = BUILTINS.copy()
    registry.register("write_mode")(write_mode)
    service = PlanService(ledger.plans, ledger.changesets, registry)
    plan = service.create("modes", root)
    with service.execute(plan.id) as execution:
        for tool, args in calls:
            execution.call(tool, args)
    return plan.id


def apply(ledger: Ledger, plan_id: str) -> None:
    PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)


@pytest.mark.usefixtures("umask")
def test_what_apply_creates_honours_the_umask(ledger: Ledger, root: Path) -> None:
    plan_id = run(
        ledger,
        root,
        ("write_file", {"path": "new/dir/file.txt", "content": "x\n"}),
        ("write_mode", {"path": "tool.sh", "content": "#!/bin/sh\n", "mode": 0o755}),
    )
    apply(ledger, plan_id)
    assert mode_of(root / "new/dir/file.txt") == 0o640
    assert mode_of(root / "new") == 0o750
    assert mode_of(root / "new/dir") == 0o750
    assert mode_of(root / "tool.sh") == 0o750


@pytest.mark.parametrize("path", [".env", "config/.env.production", "certs/server.key", "id_rsa"])
def test_sensitive_files_are_created_owner_only(ledger: Ledger, root: Path, path: str) -> None:
    plan_id = run(ledger, root, ("write_file", {"path": path, "content": "TOKEN=x\n"}))
    apply(ledger, plan_id)
    assert mode_of(root / path) == 0o600


def test_a_file_the_plan_does_not_chmod_keeps_the_workspace_mode(
    ledger: Ledger, root: Path
) -> None:
    (root / "notes.txt").write_text("a\n")
    plan_id = run(ledger, root, ("write_file", {"path": "notes.txt", "content": "b\n"}))
    (root / "notes.txt").chmod(0o600)  # the user, after staging
    apply(ledger, plan_id)
    assert (root / "notes.txt").read_text() == "b\n"
    assert mode_of(root / "notes.txt") == 0o600


def test_a_mode_changed_since_staging_conflicts_when_the_plan_changes_it(
    ledger: Ledger, root: Path
) -> None:
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o644)
    plan_id = run(
        ledger, root, ("write_mode", {"path": "run.sh", "content": "#!/bin/sh\n", "mode": 0o755})
    )
    (root / "run.sh").chmod(0o600)
    with pytest.raises(ConflictError, match="mode changed since staging") as caught:
        apply(ledger, plan_id)
    assert caught.value.exit_code == 4
    assert mode_of(root / "run.sh") == 0o600
    assert ledger.plans.get(plan_id).state is PlanState.EXECUTED


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o1777, 0o6711])
def test_tools_refuse_setuid_setgid_and_sticky_bits(ledger: Ledger, root: Path, mode: int) -> None:
    with pytest.raises(ToolError, match="setuid, setgid or sticky"):
        run(ledger, root, ("write_mode", {"path": "x", "content": "x", "mode": mode}))
    plan = ledger.plans.list()[-1]
    changeset = ledger.changesets.get_for_plan(plan.id)
    assert changeset is not None
    assert changeset.entries == ()
    with pytest.raises(ValidationError, match=r"setuid|setgid|sticky") as caught:
        ledger.changesets.record(
            changeset.id, FileChange("y", ChangeOperation.CREATE, after=b"y", mode=mode)
        )
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o1755])
def test_special_bits_of_a_workspace_file_never_reach_what_apply_writes(
    ledger: Ledger, root: Path, mode: int
) -> None:
    tool = root / "bin-tool"
    tool.write_text("#!/bin/sh\necho old\n")
    tool.chmod(mode)
    plan_id = run(ledger, root, ("edit_file", {"path": "bin-tool", "old": "old", "new": "new"}))
    [entry] = ledger.entries.get_entries_for_plan(plan_id)
    assert entry.before_mode == mode
    assert entry.mode == 0o755
    apply(ledger, plan_id)
    assert mode_of(tool) == 0o755
    assert "new" in tool.read_text()


def test_journal_folders_are_owner_only(ledger: Ledger, root: Path, tmp_path: Path) -> None:
    (root / "a.txt").write_text("a\n")
    plan_id = run(ledger, root, ("write_file", {"path": "a.txt", "content": "b\n"}))
    ledger.close()
    child = (
        "import sys\n"
        "from changeledger.services.plan_apply_service import PlanApplyService\n"
        "from changeledger.storage.ledger import Ledger\n"
        "with Ledger.open(sys.argv[1]) as ledger:\n"
        "    PlanApplyService(ledger.plans, ledger.changesets).apply(sys.argv[2])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child, str(tmp_path / "ledger.db"), plan_id],
        env={**os.environ, CRASH_ENV: "1"},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -9
    folder = root / LEDGER_DIR / JOURNAL_DIR / plan_id
    assert mode_of(root / LEDGER_DIR) == 0o700
    for path in (folder, folder / "originals", folder / "staged"):
        assert mode_of(path) == 0o700, path
    assert mode_of(folder / "journal.json") == 0o600


# -- item 16 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("init",),
        ("plan", "list"),
        ("plan", "status", "01HZZZZZZZZZZZZZZZZZZZZZZ1"),
        ("db", "check"),
    ],
)
def test_db_naming_a_directory_is_exit_2_saying_so(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, ["--db", str(tmp_path), *args, "--format", "json"])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert "is a directory" in line
    assert json.loads(result.stdout)["status"] == "error"


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root")
@pytest.mark.parametrize("locked", ["directory", "file"])
@pytest.mark.parametrize(
    "args", [("plan", "list"), ("init",), ("plan", "create", "t"), ("db", "check")]
)
def test_a_ledger_of_another_user_is_a_clear_permission_error(
    tmp_path: Path, locked: str, args: tuple[str, ...]
) -> None:
    """Run as a user without root's privileges (a new user namespace) on a ledger owned by
    ``nobody``: one error line saying whose it is, exit 1, never "internal error"."""
    work = tmp_path / "work"
    work.mkdir()
    assert cli_run(work, "init").returncode == 0
    nobody = 65534
    os.chown(work / LEDGER_DIR / LEDGER_FILE, nobody, nobody)
    if locked == "directory":
        os.chown(work / LEDGER_DIR, nobody, nobody)
    else:
        (work / LEDGER_DIR).chmod(0o755)
    tmp_path.chmod(0o755)
    done = cli_run(work, *args, prefix=("unshare", "-U"))
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.splitlines()
    assert "permission denied" in line
    assert "nobody" in line
    assert "internal error" not in line


def test_a_path_too_long_for_the_os_is_exit_2_with_a_short_message(tmp_path: Path) -> None:
    """Within the 4,096 bytes a path may have, but past PATH_MAX once the workspace root
    is in front of it (the directories exist, made by descriptor)."""
    root = tmp_path / ("r" * 200) / ("s" * 200)
    root.mkdir(parents=True)
    segment = "d" * 200
    fd = os.open(root, os.O_RDONLY)
    for _ in range(19):
        os.mkdir(segment, dir_fd=fd)
        child = os.open(segment, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    rel = "/".join([segment] * 19) + "/f.txt"
    assert len(os.fsencode(root)) + len(rel) > 4096 > len(rel)
    assert cli_run(root, "init").returncode == 0
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps({"title": "t", "steps": [{"tool": "read_file", "args": {"path": rel}}]})
    )
    done = cli_run(root, "plan", "run", str(plan))
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert "too long for the file system" in line
    assert len(line) < 400, line  # the plan file, the step, the path cut to 120


def test_lock_files_never_follow_a_symlink_out(ledger: Ledger, root: Path, tmp_path: Path) -> None:
    (root / "a.txt").write_text("a\n")
    plan_id = run(ledger, root, ("write_file", {"path": "a.txt", "content": "b\n"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    exec_dir = root / LEDGER_DIR / "exec"
    if exec_dir.exists():
        exec_dir.rmdir()
    exec_dir.symlink_to(elsewhere)
    with pytest.raises(ValidationError, match="is a symlink"):
        apply(ledger, plan_id)
    assert list(elsewhere.iterdir()) == []
    assert (root / "a.txt").read_text() == "a\n"
