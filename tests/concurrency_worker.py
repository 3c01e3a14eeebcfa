"""A child process for tests/test_concurrency.py: one agent recording or applying.

Run as ``python tests/concurrency_worker.py SPEC_JSON``. The child opens the ledger, says
it is ready (a file in the sync directory), waits for ``go`` there, and then either records
its share of entries (``mode: record``) or applies a plan (``mode: apply``, through the
library or by becoming ``changeledger plan apply``). What it did is printed as JSON.

The schedule and contents are functions of (worker, index), so the parent test can
compute what every child must have recorded without trusting the children's reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from changeledger.domain.errors import ChangeLedgerError
from changeledger.domain.models import ChangeOperation, FileChange, ToolCall
from changeledger.services.plan_apply_service import PlanApplyService
from changeledger.storage.ledger import Ledger

#: Kinds of recording call, in the order a worker cycles through them, with how many
#: entries each records (``invocation-empty`` is a tool call that changed nothing).
KINDS: tuple[tuple[str, int], ...] = (
    ("record", 1),
    ("record-many", 5),
    ("invocation", 2),
    ("invocation-empty", 0),
)
#: Content every worker writes now and then: the same blob stored by many writers at once.
COMMON = tuple(f"common blob {k}\n".encode() * 8 for k in range(5))


@dataclass(frozen=True)
class Op:
    """One recording call: its index in the worker's run, kind, target and entry indexes."""

    index: int
    kind: str
    shared: bool
    items: tuple[int, ...]


def schedule(entries: int) -> Iterator[Op]:
    """The calls a worker makes to record ``entries`` entries; two in three hit the shared
    changeset, the others the worker's own."""
    next_item = 0
    index = 0
    while next_item < entries:
        kind, size = KINDS[index % len(KINDS)]
        size = min(size, entries - next_item)
        yield Op(index, kind, index % 3 != 2, tuple(range(next_item, next_item + size)))
        next_item += size
        index += 1


def entry_path(worker: int, item: int) -> str:
    return f"w{worker:02d}/f{item:05d}.txt"


def parse_path(path: str) -> tuple[int, int]:
    """``(worker, item)`` back from ``entry_path``."""
    folder, name = path.split("/")
    return int(folder[1:]), int(name[1:6])


def after_content(worker: int, item: int) -> bytes:
    if item % 10 == 0:
        return COMMON[(item // 10) % len(COMMON)]
    return f"{worker}:{item}\n".encode() * (1 + item % 40)


def before_content(item: int) -> bytes | None:
    """The content a modify replaces (one item in three is a modify), else None."""
    return f"base {item % 4}\n".encode() if item % 3 == 1 else None


def file_change(worker: int, item: int) -> FileChange:
    before = before_content(item)
    operation = ChangeOperation.CREATE if before is None else ChangeOperation.MODIFY
    return FileChange(
        entry_path(worker, item), operation, before=before, after=after_content(worker, item)
    )


def wait_for_go(sync: Path, name: str) -> None:
    (sync / f"ready-{name}").touch()
    deadline = time.monotonic() + 120
    while not (sync / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"worker {name}: no 'go' within 120 s")
        time.sleep(0.005)


def record(spec: dict[str, Any]) -> None:
    worker: int = spec["worker"]
    shared: str = spec["shared"]
    own: str = spec["own"]
    done: list[dict[str, Any]] = []
    with Ledger.open(spec["url"]) as ledger:
        store = ledger.changesets
        wait_for_go(Path(spec["sync"]), str(worker))
        started = time.perf_counter()
        for op in schedule(spec["entries"]):
            target = shared if op.shared else own
            changes = [file_change(worker, item) for item in op.items]
            invocation: tuple[str, int] | None = None
            # [entry id, seq]; a tool invocation reports its entries' ids only.
            entries: list[tuple[str, int | None]]
            if op.kind == "record":
                recorded = store.record(target, changes[0])
                entries = [(recorded.id, recorded.seq)]
            elif op.kind == "record-many":
                entries = [(e.id, e.seq) for e in store.record_many(target, changes)]
            else:
                call = ToolCall(
                    "write_file" if changes else "read_file",
                    arguments={"worker": worker, "op": op.index},
                    result={"written": len(changes)},
                )
                made = store.record_invocation(target, call, changes)
                invocation = (made.id, made.seq)
                entries = [(entry_id, None) for entry_id in made.change_ids]
            done.append(
                {"op": op.index, "changeset": target, "entries": entries, "invocation": invocation}
            )
        seconds = time.perf_counter() - started
    print(json.dumps({"worker": worker, "seconds": seconds, "ops": done}))


def apply(spec: dict[str, Any]) -> None:
    name: str = spec["name"]
    plan_id: str = spec["plan_id"]
    if spec["via"] == "cli":
        wait_for_go(Path(spec["sync"]), name)
        command = [sys.executable, "-m", "changeledger", "--db", spec["url"], "plan", "apply"]
        cli = subprocess.run([*command, plan_id, "--format", "json"], check=False)
        raise SystemExit(cli.returncode)
    with Ledger.open(spec["url"]) as ledger:
        service = PlanApplyService(ledger.plans, ledger.changesets)
        wait_for_go(Path(spec["sync"]), name)
        started = time.time()
        outcome, message, code = "applied", "", 0
        try:
            service.apply(plan_id)
        except ChangeLedgerError as exc:
            outcome, message, code = type(exc).__name__, str(exc), exc.exit_code
        ended = time.time()
    report = {"outcome": outcome, "message": message, "started": started, "ended": ended}
    print(json.dumps(report))
    raise SystemExit(code)


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    if spec["mode"] == "record":
        record(spec)
    else:
        apply(spec)


if __name__ == "__main__":
    main()
