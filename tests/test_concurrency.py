"""Reliability under concurrency: many agents record into one ledger; plans race to apply.

Every writer is its own OS process (``tests/concurrency_worker.py``) that opens the ledger
by URL, as separate agents on separate machines would. All of them wait at a barrier (a
``go`` file) and then start at once. Each test prints one line of figures (``pytest -s``).

``CHANGELEDGER_SOAK=1`` runs the same tests with ten times the work.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

import concurrency_worker as cw
from changeledger.domain.models import PlanState, SpecChangeSet, sha256_hex
from changeledger.services.execution import PlanService
from changeledger.services.plan_apply_service import PlanApplyService
from changeledger.storage.engine import sqlite_url
from changeledger.storage.ledger import Ledger
from changeledger.workspace.apply import pending_journals
from changeledger.workspace.confine import Workspace

SOAK = os.environ.get("CHANGELEDGER_SOAK") == "1"
SCALE = 10 if SOAK else 1
WORKER = Path(__file__).with_name("concurrency_worker.py")
TIMEOUT = 300 * SCALE


def url_text(url: URL) -> str:
    return url.render_as_string(hide_password=False)


# -- running children at once --------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    name: str
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return f"{self.name}: exit {self.returncode}\n{self.stdout[-2000:]}\n{self.stderr[-4000:]}"


def run_at_once(specs: list[dict[str, Any]], work: Path) -> tuple[list[Finished], float]:
    """Start one child per spec, release them together, wait; return them and the wall
    time from the release to the last exit."""
    sync = work / "sync"
    sync.mkdir(parents=True)
    children: list[tuple[str, subprocess.Popen[bytes], Path, Path]] = []
    try:
        for spec in specs:
            name = str(spec.get("name", spec.get("worker")))
            out, err = work / f"{name}.out", work / f"{name}.err"
            with out.open("wb") as stdout, err.open("wb") as stderr:
                child = subprocess.Popen(
                    [sys.executable, str(WORKER), json.dumps({**spec, "sync": str(sync)})],
                    stdout=stdout,
                    stderr=stderr,
                )
            children.append((name, child, out, err))
        deadline = time.monotonic() + 120
        while len(list(sync.glob("ready-*"))) < len(children):
            for name, child, _, err in children:
                assert child.poll() is None, f"{name} exited early:\n{err.read_text()}"
            assert time.monotonic() < deadline, "the children did not get ready in 120 s"
            time.sleep(0.01)
        (sync / "go").touch()
        released = time.perf_counter()
        for _, child, _, _ in children:
            child.wait(timeout=TIMEOUT)
        wall = time.perf_counter() - released
    finally:
        for _, child, _, _ in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    finished = [
        Finished(name, child.returncode, out.read_text(), err.read_text())
        for name, child, out, err in children
    ]
    return finished, wall


def retries_in(stderr: str) -> int:
    return sum("storage.retry" in line for line in stderr.splitlines())


# -- many writers into one ledger ----------------------------------------------------------


@dataclass(frozen=True)
class RecordRun:
    shared: str
    own: list[str]
    reports: list[dict[str, Any]]
    wall: float
    retries: int
    stderr: list[str]


def record_concurrently(url: URL, writers: int, entries: int, work: Path) -> RecordRun:
    with Ledger.open(url) as ledger:
        plan = ledger.plans.create(f"{writers} writers x {entries} entries", "/w")
        shared = ledger.changesets.start(plan.id).id
        own = [
            ledger.changesets.start(ledger.plans.create(f"writer {n}", "/w").id).id
            for n in range(writers)
        ]
    specs: list[dict[str, Any]] = [
        {
            "mode": "record",
            "url": url_text(url),
            "worker": n,
            "shared": shared,
            "own": own[n],
            "entries": entries,
        }
        for n in range(writers)
    ]
    finished, wall = run_at_once(specs, work)
    for child in finished:
        assert child.returncode == 0, child.describe()
    reports = [json.loads(child.stdout) for child in finished]
    return RecordRun(
        shared=shared,
        own=own,
        reports=reports,
        wall=wall,
        retries=sum(retries_in(c.stderr) for c in finished),
        stderr=[c.stderr for c in finished],
    )


def check_changeset(
    changeset: SpecChangeSet, expected: dict[int, list[cw.Op]], reported: dict[str, Any]
) -> None:
    """Seqs gapless and unique, each writer's order kept, hashes and invocations right.

    ``expected`` maps each writer to the calls it made into this changeset; ``reported``
    maps entry and invocation ids the children got back to (changeset, seq) and is
    consumed: what is left afterwards was reported but not found.
    """
    entries, invocations = changeset.entries, changeset.invocations
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert len({e.id for e in entries}) == len(entries)
    assert [i.seq for i in invocations] == list(range(1, len(invocations) + 1))
    assert len({i.id for i in invocations}) == len(invocations)

    by_id = {e.id: e for e in entries}
    for entry in entries:
        worker, item = cw.parse_path(entry.path)
        assert entry.changeset_id == changeset.id
        assert entry.after_hash == sha256_hex(cw.after_content(worker, item))
        before = cw.before_content(item)
        assert entry.before_hash == (None if before is None else sha256_hex(before))
        assert entry.operation.value == ("create" if before is None else "modify")
        where, seq = reported.pop(entry.id)
        assert where == changeset.id
        assert seq in (None, entry.seq)  # entries of an invocation come back without a seq

    for worker, ops in expected.items():
        mine = [cw.parse_path(e.path)[1] for e in entries if cw.parse_path(e.path)[0] == worker]
        assert mine == [item for op in ops for item in op.items], f"writer {worker} order"
        calls = [op for op in ops if op.kind.startswith("invocation")]
        seen = [i for i in invocations if i.arguments.get("worker") == worker]
        assert [i.arguments["op"] for i in seen] == [op.index for op in calls]
        for invocation, op in zip(seen, calls, strict=True):
            where, seq = reported.pop(invocation.id)
            assert (where, seq) == (changeset.id, invocation.seq)
            made = [by_id[change_id] for change_id in invocation.change_ids]
            assert [cw.parse_path(e.path) for e in made] == [(worker, i) for i in op.items]
            assert all(e.tool_invocation_id == invocation.id for e in made)
            assert all(e.tool_name == invocation.tool_name for e in made)
    linked = {e.id for e in entries if e.tool_invocation_id is not None}
    assert linked == {c for i in invocations for c in i.change_ids}


def check_recorded(url: URL, run: RecordRun, writers: int, entries: int) -> tuple[int, int]:
    """Everything every writer recorded is there, once, in order; return the counts of
    entries and invocations."""
    plan = {n: list(cw.schedule(entries)) for n in range(writers)}
    reported: dict[str, Any] = {}
    assert sorted(r["worker"] for r in run.reports) == list(range(writers))
    for report in run.reports:
        for op in report["ops"]:
            for entry_id, seq in op["entries"]:
                reported[entry_id] = (op["changeset"], seq)
            if op["invocation"] is not None:
                reported[op["invocation"][0]] = (op["changeset"], op["invocation"][1])
    total_entries = total_invocations = 0
    with Ledger.open(url) as ledger:
        shared = ledger.changesets.get(run.shared)
        check_changeset(
            shared, {n: [op for op in ops if op.shared] for n, ops in plan.items()}, reported
        )
        loaded = [shared]
        for n, changeset_id in enumerate(run.own):
            own = ledger.changesets.get(changeset_id)
            check_changeset(own, {n: [op for op in plan[n] if not op.shared]}, reported)
            loaded.append(own)
        assert reported == {}, f"{len(reported)} reported ids are not in the ledger"

        summary = ledger.changesets.summarize(run.shared)
        assert summary.entries == len(shared.entries)
        assert summary.tool_calls == len(shared.invocations)
        for changeset in loaded:
            total_entries += len(changeset.entries)
            total_invocations += len(changeset.invocations)
            digests = {d for e in changeset.entries for d in (e.before_hash, e.after_hash) if d}
            contents = ledger.changesets.read_blobs(digests)
            for entry in changeset.entries:
                worker, item = cw.parse_path(entry.path)
                assert entry.after_hash is not None
                assert contents[entry.after_hash] == cw.after_content(worker, item)
                if entry.before_hash is not None:
                    assert contents[entry.before_hash] == cw.before_content(item)
    assert total_entries == writers * entries
    calls_per_writer = sum(op.kind.startswith("invocation") for op in cw.schedule(entries))
    assert total_invocations == writers * calls_per_writer
    assert len(shared.entries) > writers * entries // 2  # contended by every writer
    assert {cw.parse_path(e.path)[0] for e in shared.entries} == set(range(writers))
    return total_entries, total_invocations


def figure(label: str, writers: int, run: RecordRun, entries: int, invocations: int) -> None:
    print(
        f"\n[concurrency] {label}: {writers} writer processes, {entries} entries + "
        f"{invocations} invocations (shared changeset + one each) in {run.wall:.2f} s "
        f"wall = {entries / run.wall:.0f} entries/s; slowest writer "
        f"{max(r['seconds'] for r in run.reports):.2f} s; retries {run.retries}"
    )


def test_sqlite_8_processes_record_into_one_ledger_file(sqlite_db: URL, tmp_path: Path) -> None:
    writers, entries = 8, 500 * SCALE
    run = record_concurrently(sqlite_db, writers, entries, tmp_path)
    # busy_timeout (10 s) queues the writers: no writer may even need a retry, let alone
    # see "database is locked" or any other message.
    assert run.stderr == [""] * writers, "\n".join(run.stderr)
    total, invocations = check_recorded(sqlite_db, run, writers, entries)
    figure("sqlite", writers, run, total, invocations)


@pytest.mark.postgres
def test_postgresql_16_processes_record_into_one_database(pg_url: URL, tmp_path: Path) -> None:
    writers, entries = 16, 500 * SCALE
    run = record_concurrently(pg_url, writers, entries, tmp_path)
    for stderr in run.stderr:  # deadlocks and serialization failures may be retried, no more
        unexpected = [line for line in stderr.splitlines() if "storage.retry" not in line]
        assert unexpected == [], stderr
    total, invocations = check_recorded(pg_url, run, writers, entries)
    figure("postgresql", writers, run, total, invocations)


# -- plans racing to apply -----------------------------------------------------------------


def workspace_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".changeledger" not in p.relative_to(root).parts
    }


def stage_write(ledger: Ledger, root: Path, path: str, content: str) -> str:
    """A plan staged (``executed``) that writes ``content`` to ``path``; return its id."""
    service = PlanService(ledger.plans, ledger.changesets)
    plan = service.create(f"write {path}", root)
    with service.execute(plan.id) as run:
        run.call("write_file", {"path": path, "content": content})
    return plan.id


BASE = {"shared.txt": b"base\n", "a.txt": b"a\n", "b.txt": b"b\n"}


def new_workspace(root: Path, server: URL | None) -> URL:
    """A workspace with ``BASE`` and its ledger: embedded SQLite, or ``server``."""
    root.mkdir(parents=True)
    for path, content in BASE.items():
        (root / path).write_bytes(content)
    if server is not None:
        return server
    Ledger.init(root).close()
    return sqlite_url(root / ".changeledger" / "ledger.db")


@dataclass(frozen=True)
class Race:
    plan_ids: list[str]
    contents: list[bytes]
    finished: list[Finished]
    wall: float


def race(server: URL | None, work: Path, edits: list[tuple[str, str]], via: str) -> Race:
    """Stage one plan per edit from the same base, then apply them all at once."""
    root = work / "ws"
    url = new_workspace(root, server)
    with Ledger.open(url) as ledger:
        plan_ids = [stage_write(ledger, root, path, content) for path, content in edits]
    specs: list[dict[str, Any]] = [
        {"mode": "apply", "name": f"p{k}", "url": url_text(url), "plan_id": plan_id, "via": via}
        for k, plan_id in enumerate(plan_ids)
    ]
    finished, wall = run_at_once(specs, work)
    return Race(plan_ids, [c.encode() for _, c in edits], finished, wall)


def check_loser_output(child: Finished, via: str) -> None:
    assert "Traceback" not in child.stderr, child.describe()
    if via == "cli":
        envelope = json.loads(child.stdout)
        assert (envelope["status"], envelope["exit_code"]) == ("error", 4), child.describe()
    else:
        assert json.loads(child.stdout)["outcome"] == "ConflictError", child.describe()
        assert child.stderr == "", child.describe()


def overlapped(run: Race) -> bool:
    """Whether the two library applies were running at the same moment (CLI: unknown)."""
    reports = [json.loads(c.stdout) for c in run.finished]
    if not all("started" in r for r in reports):
        return False
    starts = [float(r["started"]) for r in reports]
    ends = [float(r["ended"]) for r in reports]
    return max(starts) < min(ends)


def one_file_races(
    server: URL | None, work: Path, rounds: int
) -> Iterator[tuple[int, float, bool]]:
    """Two plans that both modify shared.txt race ``rounds`` times; yield (winner, wall,
    whether the two applies overlapped in time)."""
    for number in range(rounds):
        via = "cli" if number % 3 == 2 else "library"
        edits = [("shared.txt", f"plan {name}, round {number}\n" * 40) for name in "AB"]
        run = race(server, work / f"same-{number}", edits, via)
        root = work / f"same-{number}" / "ws"
        codes = [c.returncode for c in run.finished]
        details = "\n".join(c.describe() for c in run.finished)
        assert sorted(codes) == [0, 4], f"round {number} via {via}: {details}"
        won, lost = codes.index(0), codes.index(4)
        check_loser_output(run.finished[lost], via)
        assert "Traceback" not in run.finished[won].stderr, details
        # The winner's content, whole: never the loser's, never a mix, nothing left over.
        assert workspace_files(root) == {**BASE, "shared.txt": run.contents[won]}
        assert pending_journals(Workspace(root)) == []
        url = server or sqlite_url(root / ".changeledger" / "ledger.db")
        with Ledger.open(url) as ledger:
            assert ledger.plans.get(run.plan_ids[won]).state is PlanState.APPLIED
            loser = ledger.plans.get(run.plan_ids[lost])
            # Refused before it started: still executed, no error, its changes kept.
            assert (loser.state, loser.error) == (PlanState.EXECUTED, None)
            changeset = ledger.changesets.get_for_plan(loser.id)
            assert changeset is not None
            assert [e.path for e in changeset.entries] == ["shared.txt"]
            assert changeset.entries[0].before_hash == sha256_hex(BASE["shared.txt"])
            check = PlanApplyService(ledger.plans, ledger.changesets).apply(loser.id, dry_run=True)
            assert [(c.path, c.actual) for c in check.conflicts] == [
                ("shared.txt", sha256_hex(run.contents[won]))
            ]
        yield won, run.wall, overlapped(run)


def two_file_races(server: URL | None, work: Path, rounds: int) -> Iterator[float]:
    """Two plans that modify different files race ``rounds`` times: both must apply."""
    for number in range(rounds):
        via = "cli" if number % 2 else "library"
        edits = [(f"{name}.txt", f"plan {name}, round {number}\n") for name in "ab"]
        run = race(server, work / f"apart-{number}", edits, via)
        root = work / f"apart-{number}" / "ws"
        details = "\n".join(c.describe() for c in run.finished)
        assert [c.returncode for c in run.finished] == [0, 0], details
        assert all("Traceback" not in c.stderr for c in run.finished), details
        assert workspace_files(root) == {
            **BASE,
            "a.txt": run.contents[0],
            "b.txt": run.contents[1],
        }
        assert pending_journals(Workspace(root)) == []
        url = server or sqlite_url(root / ".changeledger" / "ledger.db")
        with Ledger.open(url) as ledger:
            states = [ledger.plans.get(plan_id).state for plan_id in run.plan_ids]
        assert states == [PlanState.APPLIED, PlanState.APPLIED]
        yield run.wall


def check_races(label: str, server: URL | None, work: Path, same: int, apart: int) -> None:
    started = time.perf_counter()
    outcomes = list(one_file_races(server, work, same))
    walls = [wall for _, wall, _ in outcomes] + list(two_file_races(server, work, apart))
    wins = Counter(won for won, _, _ in outcomes)
    overlaps = sum(overlap for _, _, overlap in outcomes)
    # Released together, the two applies must really have run at the same time (the CLI
    # rounds cannot tell; every library round should).
    assert overlaps >= 1, "no round had the two applies running at the same time"
    print(
        f"\n[concurrency] apply race {label}: {same} rounds of 2 processes applying plans "
        f"that modify the same file: {same} x one applied + one ConflictError (first plan "
        f"won {wins[0]}, second {wins[1]}; applies overlapped in time in {overlaps}); "
        f"{apart} rounds on different files: both applied; race wall mean "
        f"{sum(walls) / len(walls):.2f} s, max {max(walls):.2f} s; "
        f"total {time.perf_counter() - started:.1f} s"
    )


def test_sqlite_plans_racing_to_apply(tmp_path: Path) -> None:
    check_races("sqlite", None, tmp_path, same=10 * SCALE, apart=3 * SCALE)


@pytest.mark.postgres
def test_postgresql_plans_racing_to_apply(pg_url: URL, tmp_path: Path) -> None:
    check_races("postgresql", pg_url, tmp_path, same=3 * SCALE, apart=2 * SCALE)


# -- a run of a plan racing its apply --------------------------------------------------------

RUN_STEPS = 12


def run_file(work: Path, number: int) -> Path:
    """A plan file that adds ``RUN_STEPS`` more changes to the plan it continues."""
    steps = [
        {"tool": "write_file", "args": {"path": f"run/{number}/f{k}.txt", "content": f"{k}\n"}}
        for k in range(RUN_STEPS)
    ]
    steps.append({"tool": "write_file", "args": {"path": "shared.txt", "content": "run\n"}})
    path = work / f"run-{number}.json"
    path.write_text(json.dumps({"steps": steps}))
    return path


def on_disk(root: Path, changeset: SpecChangeSet) -> bool:
    """Whether every recorded change of ``changeset`` is what the workspace holds."""
    from changeledger.workspace.apply import net_changes

    for change in net_changes(changeset.entries):
        path = root / change.path
        actual = sha256_hex(path.read_bytes()) if path.is_file() else None
        if actual != change.after_hash:
            return False
    return True


def check_run_racing_apply(label: str, server: URL | None, work: Path, rounds: int) -> None:
    """``plan run FILE --plan X`` and ``plan apply X`` started together, ``rounds`` times:
    every time the plan is either applied with everything it recorded on disk, or not
    applied and still applicable (and then applies with everything)."""
    script = Path(sys.executable).with_name("changeledger")
    outcomes: Counter[str] = Counter()
    rng = random.Random(9)  # noqa: S311 - timing, not secrets
    started = time.perf_counter()
    for number in range(rounds):
        root = work / f"race-{number}" / "ws"
        url = new_workspace(root, server)
        with Ledger.open(url) as ledger:
            plan_id = stage_write(ledger, root, "first.txt", "first\n")
        db = ["--db", url_text(url)]
        env = {**os.environ, "CHANGELEDGER_DB": ""}
        commands = [
            [str(script), *db, "plan", "run", str(run_file(work, number)), "--plan", plan_id],
            [str(script), *db, "plan", "apply", plan_id],
        ]
        # Either one gets a head start of up to half a second (a CLI start and a run of
        # the plan take about that), so every interleaving comes up.
        if number % 2:
            commands.reverse()
        children = []
        for command in commands:
            children.append(
                subprocess.Popen(
                    command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
            )
            if len(children) == 1:
                time.sleep(rng.uniform(0, 0.5))
        results: dict[str, tuple[int, str]] = {}
        for command, child in zip(commands, children, strict=True):
            _, stderr = child.communicate(timeout=TIMEOUT)
            results[command[4]] = (child.returncode, stderr.decode())
        for name, (code, text) in results.items():
            assert code in (0, 5), f"round {number}: {name} exited {code}: {text}"
            assert "Traceback" not in text, text
        assert pending_journals(Workspace(root)) == []
        with Ledger.open(url) as ledger:
            state = ledger.plans.get(plan_id).state
            changeset = ledger.changesets.get_for_plan(plan_id)
            assert changeset is not None
            if state is PlanState.APPLIED:
                outcome = "applied, run first" if results["run"][0] == 0 else "applied first"
                assert on_disk(root, changeset), f"round {number}: a recorded change is lost"
            else:
                outcome = "apply refused"
                assert state is PlanState.EXECUTED, f"round {number}: {state}"
                assert results["apply"][0] == 5, results["apply"]
                assert (root / "shared.txt").read_bytes() == BASE["shared.txt"]
                PlanApplyService(ledger.plans, ledger.changesets).apply(plan_id)
                assert on_disk(root, ledger.changesets.get_for_plan(plan_id) or changeset)
            [record] = [
                a for a in ledger.changesets.applies_for_plan(plan_id) if a.state.value == "applied"
            ]
            assert record.through_seq == len(changeset.entries), "the apply saw every entry"
        outcomes[outcome] += 1
    print(
        f"\n[concurrency] plan run racing plan apply ({label}): {rounds} rounds, "
        f"{dict(outcomes)}; {time.perf_counter() - started:.1f} s"
    )
    assert len(outcomes) >= 2, f"the race always went one way: {dict(outcomes)}"


def test_sqlite_run_racing_apply_never_loses_an_update(tmp_path: Path) -> None:
    check_run_racing_apply("sqlite", None, tmp_path, rounds=50 * SCALE)


@pytest.mark.postgres
def test_postgresql_run_racing_apply_never_loses_an_update(pg_url: URL, tmp_path: Path) -> None:
    check_run_racing_apply("postgresql", pg_url, tmp_path, rounds=10 * SCALE)
