"""Acceptance: a process killed (SIGKILL) at random moments while recording never damages
the ledger.

A child process records without pause into one ledger: single entries (``record``), batches
(``record_many``, some files of ~200 KB so that a write takes a while, some binary), tool
invocations with their changes (``record_invocation``), and whole tool runs through
``PlanService.execute`` / ``run.call`` on a real workspace. Before each call it notes what
it is about to do in a progress file; only after the call returns does it note (and fsync)
what it committed: entry ids, seqs and content hashes, computed from the content it passed.

The test kills the child with SIGKILL at a random moment (the seed is printed), then opens
the ledger as the next process would and checks that

* ``Ledger.open`` succeeds (on SQLite also ``PRAGMA integrity_check`` and
  ``PRAGMA foreign_key_check``, through the plain ``sqlite3`` module);
* everything the child reported, and everything seen after earlier crashes, is still there,
  identical;
* every entry present, reported or not, is complete: its blobs are there and match their
  hashes and sizes, seqs are gapless, an invocation and its changes are all there or not at
  all, no blob is stored that no entry names (a half-written call would leave one);
* at most the one call in flight is unreported, and only if the child had begun it;
* the ledger stays usable: the test records one more entry, whose seq follows on.

The same ledger takes every kill (each child continues the same two changesets), so damage
would accumulate; at the end the tool plan is executed once more and applied to its
workspace, which must then hold exactly what the staged view showed.

A second test kills the first open of brand-new SQLite ledgers (migrations running inside
``Ledger.init`` / ``Ledger.open``): the next open must still give a usable ledger at head.

Children are forked from one helper process that has imported changeledger already, so
that a kill costs milliseconds instead of an interpreter start-up; each child still opens
the ledger itself. ``CHANGELEDGER_SOAK=1`` multiplies the kills;
``CHANGELEDGER_CRASH_SEED=N`` replays a seed.
"""

from __future__ import annotations

import json
import math
import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import URL

from changeledger.constants import LEDGER_DIR
from changeledger.domain.models import (
    ChangeEntry,
    ChangeOperation,
    FileChange,
    PlanState,
    ToolInvocation,
    sha256_hex,
)
from changeledger.services.execution import PlanService
from changeledger.services.plan_apply_service import PlanApplyService
from changeledger.storage.ledger import Ledger
from changeledger.storage.schema import HEAD_REVISION, check, current_revision
from changeledger.storage.tables import CHANGESETS
from changeledger.workspace.confine import Workspace
from changeledger.workspace.staged import StagedView

SOAK = os.environ.get("CHANGELEDGER_SOAK") == "1"
#: Kills of a recording child, per backend (the default run stays well under two minutes).
RECORD_KILLS = {"sqlite": 600 if SOAK else 90, "postgresql": 200 if SOAK else 40}
#: Kills of a first open (migrations) of a brand-new SQLite ledger.
MIGRATION_KILLS = 60 if SOAK else 16
#: Every stored blob is read back and checked after every kill, or (soak) every N kills and
#: at the end; new blobs always.
FULL_BLOB_CHECK_EVERY = 10 if SOAK else 1
#: Most entries one call of the child records (``record_many`` batches).
MAX_BATCH = 6

# -- the forking helper and the recording child ---------------------------------------------

#: Runs in a helper process: imports everything once, then forks one child per "spawn"
#: command and, on "reap", kills it with SIGKILL (unless told not to) and reports how it
#: ended. It reaps only after killing, so a pid it kills can never be a reused one.
HELPER = textwrap.dedent(
    r'''
    import json, os, random, re, signal, sys, time, traceback
    from pathlib import Path

    import alembic.command, alembic.config, alembic.script, alembic.runtime.migration
    from changeledger.domain.errors import ToolError
    from changeledger.domain.ids import new_id
    from changeledger.domain.models import (
        ChangeOperation, FileChange, PlanError, PlanState, ToolCall, sha256_hex,
    )
    from changeledger.services.execution import PlanService
    from changeledger.storage import schema
    from changeledger.storage.engine import WRITE_OPTION
    from changeledger.storage.ledger import Ledger
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    schema.known_revisions()  # parse the migration scripts once, here

    # Instrumentation only: note each write transaction's BEGIN and COMMIT, and each return
    # of a connection to the pool (after its COMMIT completed) in the progress file, so
    # that the test can tell where a kill landed.
    TX_FD = []

    def tx_listener(name):
        def listener(conn, *args):
            if TX_FD and conn.get_execution_options().get(WRITE_OPTION):
                os.write(TX_FD[0], (json.dumps({"tx": name}) + "\n").encode())
        return listener

    for name in ("begin", "commit", "rollback"):
        event.listen(Engine, name, tx_listener(name))

    def checkin_listener(dbapi_connection, record):
        if TX_FD:
            os.write(TX_FD[0], b'{"tx": "checkin"}\n')

    event.listen(Pool, "checkin", checkin_listener)

    def emit(message):
        os.write(1, (json.dumps(message) + "\n").encode())

    # ~200 KB contents, reused (deduplicated blobs) or extended (new blobs).
    BIG_BINARY = [random.Random(i).randbytes(200_000) for i in range(3)]
    BIG_TEXT = [
        "".join(f"big text {i}, line {n}: the quick brown fox {n * i % 97}\n"
                for n in range(4_000))
        for i in range(3)
    ]
    TOKEN = re.compile(r"@@tok-[0-9a-z-]+@@")

    def content(rng, tag):
        roll = rng.random()
        if roll < 0.06:
            data = rng.choice(BIG_BINARY)
            return data if rng.random() < 0.5 else data + tag.encode()
        if roll < 0.12:
            data = rng.choice(BIG_TEXT).encode()
            return data if rng.random() < 0.5 else data + tag.encode()
        if roll < 0.4:
            return rng.randbytes(rng.randint(0, 3000)) + b"\x00binary"
        return f"{tag}: ünïcode text\n".encode() * rng.randint(1, 60)

    def raw_change(rng, tag):
        op = rng.choice(list(ChangeOperation))
        path = f"raw/{tag}.dat"
        mode = rng.choice([None, 0o644, 0o755])
        if op is ChangeOperation.CREATE:
            return FileChange(path, op, after=content(rng, tag), mode=mode)
        if op is ChangeOperation.MODIFY:
            return FileChange(path, op, before=content(rng, tag + "b"),
                              after=content(rng, tag), mode=mode)
        if op is ChangeOperation.DELETE:
            return FileChange(path, op, before=content(rng, tag))
        return FileChange(path, op, old_path=f"raw/{tag}.old",
                          before=content(rng, tag + "b"), after=content(rng, tag))

    def digest(data):
        return None if data is None else sha256_hex(data)

    def expected_change(entry_id, changeset_id, seq, change, invocation_id, tool_name):
        return {
            "id": entry_id, "changeset_id": changeset_id, "seq": seq,
            "path": change.path, "old_path": change.old_path,
            "operation": change.operation.value, "mode": change.mode,
            "before_hash": digest(change.before), "after_hash": digest(change.after),
            "before_size": None if change.before is None else len(change.before),
            "after_size": None if change.after is None else len(change.after),
            "tool_invocation_id": invocation_id, "tool_name": tool_name,
        }

    def expected_entry(entry, change):
        return expected_change(entry.id, entry.changeset_id, entry.seq, change, None, None)

    def expected_invocation(inv):
        return {"id": inv.id, "changeset_id": inv.changeset_id, "seq": inv.seq,
                "change_ids": list(inv.change_ids), "status": inv.status.value,
                "tool_name": inv.tool_name}

    class Progress:
        def __init__(self, path):
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

        def note(self, record, sync=False):
            os.write(self.fd, (json.dumps(record) + "\n").encode())
            if sync:
                os.fsync(self.fd)

    def view_hash(view, path):
        return sha256_hex(view.read(path)) if view.exists(path) else None

    def tool_call(rng, view, tag):
        """(tool, args, path before, path after) for one built-in tool call."""
        files = [p for p in view.files() if p.endswith(".txt")]
        roll = rng.random()
        if not files or roll < 0.3:
            path = f"gen/{tag}.txt"
            if files and roll < 0.1:
                path = rng.choice(files)  # overwrite
            if rng.random() < 0.1:
                text = rng.choice(BIG_TEXT) + f"@@tok-{tag}@@\n"
            else:
                text = f"generated {tag}\n@@tok-{tag}@@\n" + "body\n" * rng.randint(0, 40)
            return "write_file", {"path": path, "content": text}, path, path
        path = rng.choice(files)
        if roll < 0.6:
            found = TOKEN.search(view.read(path).decode())
            if found is not None:
                args = {"path": path, "old": found.group(0), "new": f"@@tok-{tag}@@"}
                return "edit_file", args, path, path
        if roll < 0.7 and len(files) > 8:
            return "delete_file", {"path": path}, path, path
        if roll < 0.9:
            dst = f"gen/m-{tag}.txt"
            return "move_file", {"src": path, "dst": dst}, path, dst
        args = {"path": path, "old": "text that is nowhere", "new": "x"}
        return "edit_file", args, path, path  # fails: recorded as an error invocation

    def record_loop(spec):
        progress = Progress(spec["progress"])
        TX_FD.append(progress.fd)
        rng = random.Random(spec["seed"])
        raw_cs, tool_plan = spec["raw_changeset"], spec["tool_plan"]
        with Ledger.open(spec["db"]) as ledger:
            service = PlanService(ledger.plans, ledger.changesets)
            if ledger.plans.get(tool_plan).state is PlanState.EXECUTING:
                # Killed inside a tool run: the next execute continues it (its lock is free).
                progress.note({"resumed": True}, sync=True)
            progress.note({"ready": True}, sync=True)
            emit({"event": "ready", "pid": os.getpid()})
            deadline = time.monotonic() + 60
            n = 0
            while time.monotonic() < deadline:
                n += 1
                tag = f"{spec['round']}-{n}"
                roll = rng.random()
                if roll < 0.65:
                    invocation = roll >= 0.4
                    count = 1 if roll < 0.2 else rng.randint(0 if invocation else 2, MAX_BATCH)
                    changes = [raw_change(rng, f"{tag}-{k}") for k in range(count)]
                    kind = "record" if roll < 0.2 else "record_many"
                    progress.note({"begin": n, "kind": "record_invocation" if invocation else kind,
                                   "changeset_id": raw_cs, "entries": count,
                                   "invocation": invocation})
                    invs = []
                    if invocation:
                        error = rng.random() < 0.15
                        call = ToolCall(
                            "agent_tool" if not error else "failing_tool",
                            arguments={"tag": tag, "note": "ünïcode"},
                            result={"changed": count},
                            status="error" if error else "ok",
                            error_type="Boom" if error else None,
                            error_message="it failed" if error else None,
                            provider_metadata={"model": "m-1", "tokens": n},
                            id=new_id() if rng.random() < 0.5 else None,
                        )
                        inv = ledger.changesets.record_invocation(raw_cs, call, changes)
                        invs.append(expected_invocation(inv))
                        # Entries are made in the order of the changes, seqs by the store.
                        exp = [
                            expected_change(cid, raw_cs, None, change, inv.id, call.tool_name)
                            for cid, change in zip(inv.change_ids, changes)
                        ]
                    elif kind == "record":
                        entry = ledger.changesets.record(raw_cs, changes[0])
                        exp = [expected_entry(entry, changes[0])]
                    else:
                        got = ledger.changesets.record_many(raw_cs, changes)
                        exp = [expected_entry(e, c) for e, c in zip(got, changes)]
                    progress.note({"done": n, "entries": exp, "invocations": invs}, sync=True)
                    continue
                progress.note({"begin": n, "kind": "execute-enter", "entries": 0,
                               "invocation": False})
                with service.execute(tool_plan) as run:
                    progress.note({"done": n, "entries": [], "invocations": []})
                    for _ in range(rng.randint(1, 6)):
                        n += 1
                        tag = f"{spec['round']}-{n}"
                        tool, args, before_path, after_path = tool_call(rng, run.view, tag)
                        before = view_hash(run.view, before_path)
                        progress.note({"begin": n, "kind": tool, "changeset_id":
                                       run.changeset.id, "entries": 1, "invocation": True})
                        try:
                            result = run.call(tool, args)
                            inv = result.invocation
                        except ToolError:
                            inv = run.invocations[-1]
                        after = view_hash(run.view, after_path)
                        exp = [
                            {"id": cid, "changeset_id": run.changeset.id, "path": after_path,
                             "before_hash": before, "after_hash": after,
                             "tool_invocation_id": inv.id, "tool_name": tool}
                            for cid in inv.change_ids
                        ]
                        progress.note({"done": n, "entries": exp,
                                       "invocations": [expected_invocation(inv)]}, sync=True)
                    n += 1
                    progress.note({"begin": n, "kind": "execute-exit", "entries": 0,
                                   "invocation": False})
                progress.note({"done": n, "entries": [], "invocations": []})

    def first_open(spec):
        TX_FD.append(Progress(spec["progress"]).fd)
        started = time.monotonic()
        if spec["init"]:
            Ledger.init(Path(spec["root"])).close()
        else:
            Ledger.open(spec["db"]).close()
        emit({"event": "opened", "pid": os.getpid(), "seconds": time.monotonic() - started})

    MAX_BATCH = int(sys.argv[1])
    live = set()
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "spawn":
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    spec = command["spec"]
                    (record_loop if spec["mode"] == "record" else first_open)(spec)
                except BaseException:
                    emit({"event": "failed", "pid": os.getpid(),
                          "error": traceback.format_exc()})
                    code = 1
                os._exit(code)
            live.add(pid)
            emit({"event": "forked", "pid": pid})
        elif command["op"] == "reap":
            pid = command["pid"]
            if command["kill"]:
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            live.discard(pid)
            emit({"event": "exit", "pid": pid, "status": status})
    for pid in live:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    '''
)


class Helper:
    """The forking helper process, with line-oriented events read under a timeout."""

    def __init__(self, log: Path) -> None:
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HELPER, str(MAX_BATCH)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.proc.stdout is not None
        self._out = self.proc.stdout.fileno()
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._out, selectors.EVENT_READ)

    def _send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()

    def event(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                raise AssertionError(f"no event from the helper within {timeout}s")
            chunk = os.read(self._out, 65536)
            if not chunk:
                raise AssertionError(f"the helper exited: {self.stderr()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        event: dict[str, Any] = json.loads(line)
        if event["event"] == "failed":
            raise AssertionError(f"child {event['pid']} failed:\n{event['error']}")
        return event

    def spawn(self, spec: dict[str, Any]) -> int:
        self._send({"op": "spawn", "spec": spec})
        event = self.event()
        assert event["event"] == "forked", event
        pid: int = event["pid"]
        return pid

    def wait_for(self, name: str, pid: int) -> dict[str, Any]:
        event = self.event()
        assert event == {**event, "event": name, "pid": pid}, (name, event)
        return event

    def reap(self, pid: int, *, kill: bool) -> int:
        """Kill the child (SIGKILL) unless ``kill`` is false; return its wait status."""
        self._send({"op": "reap", "pid": pid, "kill": kill})
        while True:
            event = self.event()
            if event["event"] == "exit" and event["pid"] == pid:
                status: int = event["status"]
                return status

    def stderr(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-4000:]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._selector.close()
        self._log.close()


@pytest.fixture
def helper(tmp_path: Path) -> Iterator[Helper]:
    started = Helper(tmp_path / "helper.log")
    try:
        yield started
    finally:
        started.close()


def killed(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def seed_from_env() -> int:
    given = os.environ.get("CHANGELEDGER_CRASH_SEED")
    return int(given) if given else random.SystemRandom().randrange(2**32)


def db_arg(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def sqlite_checks(path: str) -> None:
    """The file is a sound SQLite database, foreign keys included (plain ``sqlite3``)."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


# -- what the child said, and what the ledger holds ------------------------------------------


def read_progress(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a progress file (a kill may cut the last one short)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1] if b"\n" in data else b""
    return [json.loads(line) for line in complete.splitlines()]


#: An entry's recorded fields that never change once it is committed.
ENTRY_FIELDS = (
    "changeset_id",
    "seq",
    "path",
    "old_path",
    "operation",
    "before_hash",
    "after_hash",
    "before_size",
    "after_size",
    "binary",
    "mode",
    "tool_invocation_id",
    "tool_name",
    "created_at",
)
INVOCATION_FIELDS = (
    "changeset_id",
    "seq",
    "tool_name",
    "status",
    "change_ids",
    "arguments",
    "result",
    "started_at",
    "finished_at",
)


def entry_fields(entry: ChangeEntry) -> dict[str, object]:
    return {name: getattr(entry, name) for name in ENTRY_FIELDS}


def invocation_fields(invocation: ToolInvocation) -> dict[str, object]:
    return {name: getattr(invocation, name) for name in INVOCATION_FIELDS}


def matches(actual: object, expected: dict[str, Any]) -> list[str]:
    """Fields of ``expected`` (other than ``id``, and ``None`` seqs) that ``actual`` lacks."""
    problems = []
    for name, want in expected.items():
        if name == "id" or (name == "seq" and want is None):
            continue
        got = getattr(actual, name)
        if name == "change_ids":
            got = list(got)
        elif name in ("operation", "status"):
            got = got.value
        if got != want:
            problems.append(f"{name}: {got!r} != {want!r}")
    return problems


@dataclass
class Figures:
    kills: int = 0
    during_open: int = 0
    between_calls: int = 0
    in_call_rolled_back: int = 0
    in_call_committed_unreported: int = 0
    in_call_kinds: dict[str, int] = field(default_factory=dict)
    in_write_transaction: int = 0
    in_commit: int = 0
    plan_left_executing: int = 0


@dataclass
class Known:
    """Everything seen committed so far: it must stay, identical, after every crash."""

    entries: dict[str, dict[str, object]] = field(default_factory=dict)
    invocations: dict[str, dict[str, object]] = field(default_factory=dict)
    #: Blobs read back and checked since the last full check.
    blobs: set[str] = field(default_factory=set)


@dataclass
class Snapshot:
    """The entries and invocations of the test's two changesets, by id."""

    entries: dict[str, ChangeEntry]
    invocations: dict[str, ToolInvocation]


def load(ledger: Ledger, changeset_ids: tuple[str, str], context: str) -> Snapshot:
    """Both changesets, checking gapless seqs and the counters that hand them out."""
    with ledger.engine.connect() as conn:
        counters = {
            row.id: (row.entry_count, row.invocation_count)
            for row in conn.execute(select(CHANGESETS))
        }
    assert set(counters) == set(changeset_ids), context
    snapshot = Snapshot({}, {})
    for cs_id in changeset_ids:
        changeset = ledger.changesets.get(cs_id)
        seqs = [e.seq for e in changeset.entries]
        assert seqs == list(range(1, len(seqs) + 1)), f"{context}: entry seqs {seqs[-5:]}"
        inv_seqs = [i.seq for i in changeset.invocations]
        assert inv_seqs == list(range(1, len(inv_seqs) + 1)), context
        assert counters[cs_id] == (len(seqs), len(inv_seqs)), (context, cs_id)
        snapshot.entries.update((e.id, e) for e in changeset.entries)
        snapshot.invocations.update((i.id, i) for i in changeset.invocations)
    return snapshot


def check_links(snapshot: Snapshot, context: str) -> None:
    """An invocation and its changes: all there or none, and naming each other."""
    entries, invocations = snapshot.entries, snapshot.invocations
    for invocation in invocations.values():
        own = {e.id for e in entries.values() if e.tool_invocation_id == invocation.id}
        assert own == set(invocation.change_ids), f"{context}: invocation {invocation.id}"
        assert {entries[c].changeset_id for c in own} <= {invocation.changeset_id}, context
    for entry in entries.values():
        if entry.tool_invocation_id is not None:
            assert entry.tool_invocation_id in invocations, f"{context}: entry {entry.id}"


def check_blobs(
    ledger: Ledger, snapshot: Snapshot, checked: set[str], *, full: bool, context: str
) -> None:
    """Stored blobs are exactly those the entries name, each whole and matching its hash
    (read back unless in ``checked`` and not ``full``; ``checked`` is updated)."""
    with ledger.engine.connect() as conn:
        stored = set(conn.scalars(text("SELECT hash FROM blobs")))
        total_entries = conn.scalar(text("SELECT count(*) FROM changeset_entries"))
    assert total_entries == len(snapshot.entries), context
    sizes: dict[str, int | None] = {}
    for entry in snapshot.entries.values():
        for digest, size in (
            (entry.before_hash, entry.before_size),
            (entry.after_hash, entry.after_size),
        ):
            if digest is not None:
                assert sizes.setdefault(digest, size) == size, context
    assert set(sizes) <= stored, f"{context}: blobs missing: {set(sizes) - stored}"
    assert stored <= set(sizes), f"{context}: blobs no entry names: {stored - set(sizes)}"
    if full:
        checked.clear()
    for digest, content in ledger.changesets.read_blobs(stored - checked).items():
        assert sha256_hex(content) == digest, context
        assert len(content) == sizes[digest], context
    checked.update(stored)


def check_reported(
    snapshot: Snapshot, known: Known, progress: list[dict[str, Any]], context: str
) -> set[str]:
    """What was seen before and what the child reported is there, unchanged; the ids of
    everything the child reported."""
    entries, invocations = snapshot.entries, snapshot.invocations
    for entry_id, fields in known.entries.items():
        assert entry_id in entries, f"{context}: committed entry {entry_id} is gone"
        assert entry_fields(entries[entry_id]) == fields, f"{context}: {entry_id} changed"
    for inv_id, fields in known.invocations.items():
        assert inv_id in invocations, f"{context}: committed invocation {inv_id} is gone"
        assert invocation_fields(invocations[inv_id]) == fields, context
    reported: set[str] = set()
    for line in progress:
        if "done" not in line:
            continue
        for expected in line["entries"]:
            entry = entries.get(expected["id"])
            assert entry is not None, f"{context}: reported entry {expected} is missing"
            assert not matches(entry, expected), (context, matches(entry, expected))
            reported.add(expected["id"])
        for expected in line["invocations"]:
            invocation = invocations.get(expected["id"])
            assert invocation is not None, f"{context}: reported {expected} is missing"
            assert not matches(invocation, expected), (context, matches(invocation, expected))
            assert len(invocation.change_ids) == len(line["entries"]), context
            reported.add(expected["id"])
    return reported


def check_unreported(
    snapshot: Snapshot,
    seen: set[str],
    progress: list[dict[str, Any]],
    context: str,
) -> tuple[dict[str, Any] | None, bool]:
    """At most the one call in flight is unreported, and only if the child had begun it.

    Returns the call in flight (if any) and whether it had committed.
    """
    extra_entries = [e for e in snapshot.entries.values() if e.id not in seen]
    extra_invocations = [i for i in snapshot.invocations.values() if i.id not in seen]
    done = {line["done"] for line in progress if "done" in line}
    begun = [line for line in progress if "begin" in line and line["begin"] not in done]
    assert len(begun) <= 1, context
    in_flight = begun[0] if begun else None
    if not extra_entries and not extra_invocations:
        return in_flight, False
    assert in_flight is not None, (
        f"{context}: unreported rows but no call in flight: "
        f"{[e.id for e in extra_entries]} {[i.id for i in extra_invocations]}"
    )
    calls = {e.tool_invocation_id or f"plain {e.changeset_id}" for e in extra_entries}
    calls |= {i.id for i in extra_invocations}
    assert len(calls) == 1, f"{context}: more than one unreported call: {calls}"
    assert len(extra_entries) <= in_flight["entries"], (context, in_flight)
    if in_flight["kind"] in ("record", "record_many", "record_invocation"):
        assert len(extra_entries) == in_flight["entries"], (context, in_flight)
    assert len(extra_invocations) == int(in_flight["invocation"]), (context, in_flight)
    for entry in extra_entries:
        assert entry.changeset_id == in_flight["changeset_id"], context
        older = [
            e.seq
            for e in snapshot.entries.values()
            if e.changeset_id == entry.changeset_id and e.id in seen
        ]
        assert entry.seq > max(older, default=0), f"{context}: not the newest"
    return in_flight, True


def transaction_state(progress: list[dict[str, Any]]) -> str:
    """Where the child was when killed: ``"in transaction"`` (after a write transaction's
    BEGIN, before its COMMIT was issued), ``"committing"`` (COMMIT issued, its connection
    not yet back in the pool) or ``"idle"``."""
    states = {"begin": "in transaction", "commit": "committing"}
    state = "idle"
    for line in progress:
        if "tx" in line:
            state = states.get(line["tx"], "idle")
    return state


def count_kill(
    figures: Figures,
    progress: list[dict[str, Any]],
    in_flight: dict[str, Any] | None,
    committed: bool,
    context: str,
) -> None:
    state = transaction_state(progress)
    # A call's rows are visible only if its COMMIT was issued before the kill.
    assert not (committed and state == "in transaction"), f"{context}: rows visible"
    figures.kills += 1
    figures.in_write_transaction += state == "in transaction"
    figures.in_commit += state == "committing"
    figures.plan_left_executing += sum(1 for line in progress if "resumed" in line)
    if not any("ready" in line for line in progress):
        figures.during_open += 1
    elif in_flight is None:
        figures.between_calls += 1
    else:
        kind = str(in_flight["kind"])
        figures.in_call_kinds[kind] = figures.in_call_kinds.get(kind, 0) + 1
        if committed:
            figures.in_call_committed_unreported += 1
        else:
            figures.in_call_rolled_back += 1


def verify(
    db: str,
    *,
    raw_cs: str,
    tool_plan: str,
    tool_cs: str,
    known: Known,
    progress: list[dict[str, Any]],
    figures: Figures,
    context: str,
    full: bool = True,
) -> None:
    """Every check after one crash (see the module docstring); then record one more entry."""
    with Ledger.open(db) as ledger:  # must succeed, whatever the kill interrupted
        if ledger.backend == "sqlite":
            database = ledger.engine.url.database
            assert database is not None
            sqlite_checks(database)
        plan = ledger.plans.get(tool_plan)
        assert plan.current_changeset_id == tool_cs, context
        assert plan.state in (PlanState.EXECUTING, PlanState.EXECUTED, PlanState.FAILED), context
        assert ledger.plans.get(ledger.changesets.get(raw_cs).plan_id).state is PlanState.CREATED

        snapshot = load(ledger, (raw_cs, tool_cs), context)
        check_links(snapshot, context)
        check_blobs(ledger, snapshot, known.blobs, full=full, context=context)
        reported = check_reported(snapshot, known, progress, context)
        seen = reported | set(known.entries) | set(known.invocations)
        in_flight, committed = check_unreported(snapshot, seen, progress, context)
        count_kill(figures, progress, in_flight, committed, context)

        known.entries = {e.id: entry_fields(e) for e in snapshot.entries.values()}
        known.invocations = {i.id: invocation_fields(i) for i in snapshot.invocations.values()}

        # Still usable: one more entry continues the changeset, gaplessly.
        last = max(
            (e.seq for e in snapshot.entries.values() if e.changeset_id == raw_cs), default=0
        )
        content = f"after kill: {context}\n".encode()
        change = FileChange(f"parent/{last}.txt", ChangeOperation.CREATE, after=content)
        added = ledger.changesets.record(raw_cs, change)
        assert added.seq == last + 1, context
        assert ledger.changesets.read_blob(sha256_hex(content)) == content
        assert ledger.changesets.get(raw_cs).entries[-1] == added
        known.entries[added.id] = entry_fields(added)


# -- the workspace of the tool plan ----------------------------------------------------------


def build_workspace(root: Path) -> None:
    for index in range(12):
        path = root / f"src/m{index % 3}/file{index}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {index}\n@@tok-init-{index}@@\nend\n", encoding="utf-8")
    (root / "assets").mkdir()
    (root / "assets/logo.bin").write_bytes(bytes(range(256)) * 4)


def tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and LEDGER_DIR not in path.relative_to(root).parts
    }


def kill_delay(rng: random.Random) -> tuple[bool, float]:
    """(wait for the child to be ready first?, seconds to wait before the kill).

    Some kills land while the child opens the ledger; the rest after it started recording,
    log-uniformly from a fifth of a millisecond to most of a second.
    """
    if rng.random() < 0.1:
        return False, rng.uniform(0.0, 0.04)
    return True, math.exp(rng.uniform(math.log(0.0002), math.log(0.8)))


def test_sigkill_while_recording_never_damages_the_ledger(
    db_url: URL, tmp_path: Path, helper: Helper
) -> None:
    started = time.monotonic()
    db = db_arg(db_url)
    backend = db_url.get_backend_name()
    seed = seed_from_env()
    print(f"\n{backend}: seed {seed} (CHANGELEDGER_CRASH_SEED={seed} replays the kill times)")
    rng = random.Random(seed)  # noqa: S311 - reproducible kill times, not crypto
    root = tmp_path / "workspace"
    build_workspace(root)
    pristine = tree(root)

    with Ledger.open(db) as ledger:
        raw_cs = ledger.changesets.start(ledger.plans.create("raw records", "/agents/raw").id).id
        service = PlanService(ledger.plans, ledger.changesets)
        tool_plan = service.create("tool runs", root).id
        with service.execute(tool_plan):
            pass  # starts the changeset every later run continues
        tool_cs = ledger.plans.get(tool_plan).current_changeset_id
        assert tool_cs is not None

    known = Known()
    figures = Figures()
    kills = RECORD_KILLS[backend]
    for round_no in range(kills):
        progress_path = tmp_path / f"progress-{round_no}.jsonl"
        wait_ready, delay = kill_delay(rng)
        when = f"{'after ready + ' if wait_ready else ''}{delay * 1000:.1f} ms"
        context = f"seed {seed}, kill {round_no} ({when})"
        spec = {
            "mode": "record",
            "db": db,
            "progress": str(progress_path),
            "seed": rng.randrange(2**32),
            "round": round_no,
            "raw_changeset": raw_cs,
            "tool_plan": tool_plan,
        }
        pid = helper.spawn(spec)
        if wait_ready:
            helper.wait_for("ready", pid)
        time.sleep(delay)
        status = helper.reap(pid, kill=True)
        assert killed(status), f"{context}: the child ended with status {status}"
        verify(
            db,
            raw_cs=raw_cs,
            tool_plan=tool_plan,
            tool_cs=tool_cs,
            known=known,
            progress=read_progress(progress_path),
            figures=figures,
            context=context,
            full=(round_no + 1) % FULL_BLOB_CHECK_EVERY == 0 or round_no + 1 == kills,
        )

    # After every kill: the tool plan still runs, and applies exactly what its view shows.
    with Ledger.open(db) as ledger:
        service = PlanService(ledger.plans, ledger.changesets)
        with service.execute(tool_plan) as run:  # continues a run a kill left executing
            run.call("write_file", {"path": "final.txt", "content": "the end\n"})
        assert ledger.plans.get(tool_plan).state is PlanState.EXECUTED
        changeset = ledger.changesets.get(tool_cs)
        assert [e.seq for e in changeset.entries] == list(range(1, len(changeset.entries) + 1))
        view = StagedView.from_entries(
            Workspace(root), changeset.entries, ledger.changesets.read_blob
        )
        staged = {path: view.read(path) for path in view.files()}
        assert tree(root) == pristine, "recording never writes the workspace"
        PlanApplyService(ledger.plans, ledger.changesets).apply(tool_plan)
        assert ledger.plans.get(tool_plan).state is PlanState.APPLIED
        with ledger.engine.connect() as conn:
            total = conn.scalar(text("SELECT count(*) FROM changeset_entries"))
            calls = conn.scalar(text("SELECT count(*) FROM tool_invocations"))
    assert tree(root) == staged
    assert figures.in_call_rolled_back + figures.in_call_committed_unreported > 0
    assert figures.between_calls + figures.during_open > 0
    assert figures.in_write_transaction >= figures.kills // 10
    print(
        f"{backend}: {figures.kills} kills in {time.monotonic() - started:.1f}s; "
        f"{total} entries and {calls} invocations committed in total; "
        f"kills during the child's open: {figures.during_open}, between calls: "
        f"{figures.between_calls}, inside a call: "
        f"{figures.in_call_rolled_back + figures.in_call_committed_unreported} "
        f"({figures.in_call_rolled_back} left nothing, {figures.in_call_committed_unreported} "
        f"committed but not yet reported; by call {dict(sorted(figures.in_call_kinds.items()))}); "
        f"{figures.in_write_transaction} kills landed inside a write transaction (after BEGIN, "
        f"before COMMIT), {figures.in_commit} inside COMMIT; tool plan left 'executing' "
        f"by {figures.plan_left_executing} kills, each continued by the next run"
    )


# -- kills during the first open (migrations) ----------------------------------------------


def schema_state(path: Path) -> str:
    """What a killed first open left, read with plain ``sqlite3`` before the next open."""
    if not path.exists():
        return "no file"
    conn = sqlite3.connect(path)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if not tables - {"sqlite_sequence"}:
            return "empty"
        if "alembic_version" in tables:
            versions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
            if versions == [HEAD_REVISION]:
                return "at head"
        return f"partial: {sorted(tables)}"
    finally:
        conn.close()


def migration_phase(events: list[str]) -> str:
    """Where a kill of a first open landed, from its transaction events."""
    if "begin" not in events:
        return "before the migration"
    if "commit" not in events:
        return "inside the migration transaction"
    if "checkin" not in events[events.index("commit") :]:
        return "inside its COMMIT"
    return "after its COMMIT"


def test_sigkill_during_the_first_open_of_a_new_ledger(tmp_path: Path, helper: Helper) -> None:
    started = time.monotonic()
    seed = seed_from_env()
    print(f"\nmigrations: seed {seed}")
    rng = random.Random(seed)  # noqa: S311 - reproducible kill times, not crypto

    def spawn(name: str, *, init: bool) -> tuple[int, Path, Path]:
        root = tmp_path / name
        root.mkdir()
        path = root / LEDGER_DIR / "ledger.db" if init else root / "nested" / "ledger.db"
        progress = tmp_path / f"{name}.jsonl"
        spec = {
            "mode": "open",
            "init": init,
            "root": str(root),
            "db": str(path),
            "progress": str(progress),
        }
        return helper.spawn(spec), path, progress

    # Calibrate: how long a first open takes in a child, migrations included.
    durations = []
    for index in range(3):
        pid, path, progress = spawn(f"calibrate-{index}", init=bool(index % 2))
        durations.append(float(helper.wait_for("opened", pid)["seconds"]))
        assert helper.reap(pid, kill=False) == 0
        assert schema_state(path) == "at head"
        # The migrations are one write transaction, the only one of a first open.
        transactions = [line for line in read_progress(progress) if line["tx"] != "checkin"]
        assert transactions == [{"tx": "begin"}, {"tx": "commit"}]
    window = min(durations)

    outcomes: dict[str, int] = {}
    kills = 0
    attempt = 0
    while kills < MIGRATION_KILLS:
        attempt += 1
        assert attempt <= MIGRATION_KILLS * 4, f"seed {seed}: the kills keep missing the open"
        init = attempt % 2 == 0
        pid, path, progress = spawn(f"kill-{attempt}", init=init)
        delay = rng.uniform(0.0, window)
        time.sleep(delay)
        status = helper.reap(pid, kill=True)
        context = f"seed {seed}, attempt {attempt}, kill after {delay * 1000:.1f} ms"
        if status == 0:
            continue  # the open finished first: not a kill
        assert killed(status), f"{context}: status {status}"
        kills += 1
        state = schema_state(path)
        assert not state.startswith("partial"), f"{context}: {state}"
        phase = migration_phase([line["tx"] for line in read_progress(progress)])
        if phase == "after its COMMIT":
            assert state == "at head", f"{context}: {phase}, yet {state}"
        elif phase != "inside its COMMIT":
            assert state in ("no file", "empty"), f"{context}: {phase}, yet {state}"
        outcome = f"{phase}: {state}"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

        with Ledger.open(path) as ledger:  # must succeed and bring the ledger to head
            assert current_revision(ledger.engine) == HEAD_REVISION, context
            assert check(ledger.engine) == [], context
            changeset = ledger.changesets.start(ledger.plans.create("after", "/w").id)
            entry = ledger.changesets.record(
                changeset.id, FileChange("a.txt", ChangeOperation.CREATE, after=b"usable\n")
            )
            assert entry.seq == 1
            assert ledger.changesets.get(changeset.id).entries == (entry,)
            assert ledger.changesets.read_blob(entry.after_hash or "") == b"usable\n"
        sqlite_checks(str(path))
    print(
        f"migrations: {kills} kills of a first open (sqlite; an open takes "
        f"{window * 1000:.0f} ms, {attempt - kills} finished before their kill) in "
        f"{time.monotonic() - started:.1f}s; left before the next open: {outcomes}"
    )
