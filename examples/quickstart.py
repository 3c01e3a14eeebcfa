"""Quickstart: the main job, end to end, on the embedded SQLite ledger.

    python examples/quickstart.py

1. copies examples/workspace/ to a temporary directory and runs ``changeledger init`` there;
2. ``changeledger plan run examples/plan.yaml``: five tool calls, staged and recorded —
   the workspace is not touched;
3. a new process opens the ledger and reads back the plan, its changes and its audit trail,
   as a reviewer would after a restart;
4. ``changeledger plan apply --dry-run`` then ``plan apply``: the files change, all at once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

REVIEW = """
import json, sys
from changeledger import Ledger
with Ledger.open(sys.argv[1], create=False) as ledger:
    plan = ledger.plans.get(sys.argv[2])
    changeset = ledger.changesets.get_for_plan(plan.id)
    print(json.dumps({
        "state": plan.state.value,
        "changes": [f"{e.seq}. {e.operation.value:<6} {e.path}" for e in changeset.entries],
        "calls": [f"{i.seq}. {i.tool_name} ({i.status.value}, {i.duration_ms:.1f} ms)"
                  for i in changeset.invocations],
    }))
"""


def changeledger(workspace: Path, *args: str) -> dict[str, Any]:
    """Run the CLI in the workspace as a user would; return its JSON data."""
    command = [sys.executable, "-m", "changeledger", *args, "--format", "json"]
    done = subprocess.run(command, cwd=workspace, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"changeledger {' '.join(args)} failed: {done.stderr.strip()}")
    data: dict[str, Any] = json.loads(done.stdout)["data"]
    return data


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".changeledger" not in p.parts
    }


def main() -> int:
    workspace = Path(tempfile.mkdtemp(prefix="changeledger-quickstart-")) / "workspace"
    shutil.copytree(HERE / "workspace", workspace)
    ledger = changeledger(workspace, "init")["database"]
    print(f"ledger: {ledger}")

    before = tree(workspace)
    run = changeledger(workspace, "plan", "run", str(HERE / "plan.yaml"))
    plan_id = run["plan_id"]
    print(f"plan {plan_id}: {len(run['steps'])} tool calls, {run['changes']} changes staged")
    if tree(workspace) != before:
        raise SystemExit("the workspace changed before apply")

    review = subprocess.run(
        [sys.executable, "-c", REVIEW, str(workspace / ".changeledger" / "ledger.db"), plan_id],
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(review.stdout)
    print("reviewed from a new process:")
    for line in seen["calls"] + seen["changes"]:
        print(f"  {line}")

    dry = changeledger(workspace, "plan", "apply", plan_id, "--dry-run")
    print(f"dry run: {len(dry['files'])} files would change, {len(dry['conflicts'])} conflicts")
    applied = changeledger(workspace, "plan", "apply", plan_id)
    print(f"applied in {applied['duration_ms']:.0f} ms; plan is {applied['state']}")

    expected = {
        "docs/old-notes.txt": b"old notes\n(kept for the record)\n",
        "hello.txt": b"hi\n",
        "src/app.py": b"print('hi')\n",
    }
    if tree(workspace) != expected:
        raise SystemExit(f"unexpected workspace after apply: {sorted(tree(workspace))}")
    print(f"ok: the workspace in {workspace} now holds the plan's changes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
