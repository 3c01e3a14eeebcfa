"""Quickstart: record an agent's tool calls in a durable ledger, then read them back
from a second process, as a reviewer would after a restart.

    python examples/quickstart.py [--db URL]

Without --db it copies examples/workspace/ to a temporary directory, creates the embedded
SQLite ledger there (.changeledger/ledger.db) and uses it. The workspace files are only
read: every change is recorded in the ledger, none is written to the workspace.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from changeledger import ChangeOperation, FileChange, Ledger, PlanState, ToolCall

HERE = Path(__file__).resolve().parent

READER = """
import json, sys
from changeledger import Ledger
with Ledger.open(sys.argv[1], create=False) as ledger:
    plan = ledger.plans.get(sys.argv[2])
    changeset = ledger.changesets.get_for_plan(plan.id)
    summary = ledger.changesets.summarize(changeset.id)
    print(json.dumps({
        "plan": plan.title,
        "state": plan.state.value,
        "entries": [[e.seq, e.operation.value, e.path, e.tool_name] for e in changeset.entries],
        "invocations": [[i.seq, i.tool_name, i.status.value] for i in changeset.invocations],
        "summary": {"files_changed": summary.files_changed, "tool_calls": summary.tool_calls},
        "hello_txt": ledger.changesets.read_blob(changeset.entries[0].after_hash).decode(),
    }))
"""


def record(db: str, workspace: Path) -> str:
    """What an agent run does: tool calls whose changes go to the ledger, not the disk."""
    with Ledger.open(db) as ledger:
        plan = ledger.plans.create("Rename greeting", str(workspace))
        changeset = ledger.changesets.start(plan.id)
        ledger.plans.transition(plan.id, PlanState.EXECUTING)
        app = (workspace / "src/app.py").read_bytes()
        calls = [
            (
                ToolCall("write_file", {"path": "hello.txt", "content": "hi\n"}),
                [FileChange("hello.txt", ChangeOperation.CREATE, after=b"hi\n")],
            ),
            (
                ToolCall("edit_file", {"path": "src/app.py", "old": "hello", "new": "hi"}),
                [
                    FileChange(
                        "src/app.py",
                        ChangeOperation.MODIFY,
                        before=app,
                        after=app.replace(b"hello", b"hi"),
                    )
                ],
            ),
            (
                ToolCall("delete_file", {"path": "old.txt"}),
                [
                    FileChange(
                        "old.txt", ChangeOperation.DELETE, before=(workspace / "old.txt").read_bytes()
                    )
                ],
            ),
        ]
        for call, changes in calls:
            invocation = ledger.changesets.record_invocation(changeset.id, call, changes)
            print(f"recorded {invocation.tool_name:<12} -> {len(invocation.change_ids)} change(s)")
        ledger.plans.transition(plan.id, PlanState.EXECUTED)
        return plan.id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="a SQLAlchemy URL (default: embedded SQLite)")
    args = parser.parse_args()
    workspace = Path(tempfile.mkdtemp(prefix="changeledger-quickstart-")) / "workspace"
    shutil.copytree(HERE / "workspace", workspace)
    changeledger = [sys.executable, "-m", "changeledger"]
    db = args.db or str(workspace / ".changeledger" / "ledger.db")
    init = [*changeledger, *(["--db", args.db] if args.db else []), "init"]
    subprocess.run([*init, "--workspace", str(workspace)], check=True)
    before = {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()}
    plan_id = record(db, workspace)

    # A new process, as a reviewer after a restart, sees everything that was recorded.
    seen = json.loads(
        subprocess.run(
            [sys.executable, "-c", READER, db, plan_id], check=True, capture_output=True, text=True
        ).stdout
    )
    print(json.dumps(seen, indent=2))
    untouched = all(
        p.read_bytes() == content for p, content in before.items() if ".changeledger" not in p.parts
    )
    assert seen["hello_txt"] == "hi\n" and len(seen["entries"]) == 3, seen
    assert untouched and not (workspace / "hello.txt").exists(), "the workspace was written"
    print(f"ok: 3 tool calls recorded in {db}; the workspace is unchanged")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
