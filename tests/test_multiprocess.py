"""Acceptance: what one process records, another process reads back identical; writers share.

Each test runs child Python processes that open the ledger by URL, as separate agents would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from changeledger.domain.models import ChangeOperation, sha256_hex
from changeledger.storage.ledger import Ledger

TEXT = "Grüße, world\n".encode()
BINARY = bytes(range(256)) + b"\x00\x00PNG"

RECORDER = textwrap.dedent(
    """
    import json, sys
    from datetime import UTC, datetime, timedelta
    from changeledger.domain.models import ChangeOperation, FileChange, ToolCall
    from changeledger.storage.ledger import Ledger

    spec = json.loads(sys.argv[1])
    text, binary = bytes.fromhex(spec["text"]), bytes.fromhex(spec["binary"])
    started = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    with Ledger.open(spec["url"]) as ledger:
        plan = ledger.plans.create("from a child process", "/work/app")
        cs = ledger.changesets.start(plan.id)
        ledger.changesets.record(cs.id, FileChange("README.md", ChangeOperation.CREATE, after=text))
        call = ToolCall(
            "write_file",
            arguments={"path": "assets/logo.png", "note": "ünïcode"},
            result={"written": len(binary)},
            started_at=started,
            finished_at=started + timedelta(milliseconds=250),
            provider_metadata={"model": "m-1"},
        )
        inv = ledger.changesets.record_invocation(
            cs.id,
            call,
            [
                FileChange("assets/logo.png", ChangeOperation.CREATE, after=binary),
                FileChange("README.md", ChangeOperation.MODIFY, before=text, after=text + b"!"),
            ],
        )
        loaded = ledger.changesets.get(cs.id)
        print(json.dumps({
            "plan_id": plan.id,
            "changeset_id": cs.id,
            "entries": [
                {
                    "id": e.id, "seq": e.seq, "path": e.path, "operation": e.operation.value,
                    "before_hash": e.before_hash, "after_hash": e.after_hash,
                    "before_size": e.before_size, "after_size": e.after_size,
                    "binary": e.binary, "tool_invocation_id": e.tool_invocation_id,
                    "tool_name": e.tool_name, "created_at": e.created_at.isoformat(),
                }
                for e in loaded.entries
            ],
            "invocation": {
                "id": inv.id, "seq": inv.seq, "tool_name": inv.tool_name,
                "arguments": inv.arguments, "result": inv.result, "status": inv.status.value,
                "change_ids": list(inv.change_ids), "started_at": inv.started_at.isoformat(),
                "finished_at": inv.finished_at.isoformat(), "duration_ms": inv.duration_ms,
                "provider_metadata": inv.provider_metadata,
            },
        }))
    """
)

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from changeledger.domain.models import ChangeOperation, FileChange
    from changeledger.storage.ledger import Ledger

    url, changeset_id, worker, sync = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    with Ledger.open(url) as ledger:
        (sync / f"ready-{worker}").touch()
        deadline = time.monotonic() + 60
        while not (sync / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        for i in range(50):
            content = f"{worker}:{i}".encode()
            change = FileChange(f"w{worker}/f{i}", ChangeOperation.CREATE, after=content)
            ledger.changesets.record(changeset_id, change)
    """
)


def url_text(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def run_child(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_what_a_process_records_another_reads_back_identical(db_url: URL) -> None:
    spec = {"url": url_text(db_url), "text": TEXT.hex(), "binary": BINARY.hex()}
    printed: dict[str, Any] = json.loads(run_child(RECORDER, json.dumps(spec)))

    with Ledger.open(db_url) as ledger:
        plan = ledger.plans.get(printed["plan_id"])
        assert plan.title == "from a child process"
        assert plan.current_changeset_id == printed["changeset_id"]
        changeset = ledger.changesets.get(printed["changeset_id"])
        assert ledger.changesets.get_for_plan(plan.id) == changeset

        seen = [
            {
                "id": e.id,
                "seq": e.seq,
                "path": e.path,
                "operation": e.operation.value,
                "before_hash": e.before_hash,
                "after_hash": e.after_hash,
                "before_size": e.before_size,
                "after_size": e.after_size,
                "binary": e.binary,
                "tool_invocation_id": e.tool_invocation_id,
                "tool_name": e.tool_name,
                "created_at": e.created_at.isoformat(),
            }
            for e in changeset.entries
        ]
        assert seen == printed["entries"]
        assert [e.seq for e in changeset.entries] == [1, 2, 3]
        assert [e.operation for e in changeset.entries] == [
            ChangeOperation.CREATE,
            ChangeOperation.CREATE,
            ChangeOperation.MODIFY,
        ]

        (inv,) = changeset.invocations
        expected = printed["invocation"]
        assert {
            "id": inv.id,
            "seq": inv.seq,
            "tool_name": inv.tool_name,
            "arguments": inv.arguments,
            "result": inv.result,
            "status": inv.status.value,
            "change_ids": list(inv.change_ids),
            "started_at": inv.started_at.isoformat(),
            "finished_at": inv.finished_at.isoformat(),
            "duration_ms": inv.duration_ms,
            "provider_metadata": inv.provider_metadata,
        } == expected
        assert expected["change_ids"] == [e["id"] for e in printed["entries"][1:]]
        assert expected["arguments"] == {"path": "assets/logo.png", "note": "ünïcode"}

        contents = {TEXT, BINARY, TEXT + b"!"}
        hashes = {h for e in printed["entries"] for h in (e["before_hash"], e["after_hash"]) if h}
        assert hashes == {sha256_hex(c) for c in contents}
        for content in contents:
            assert ledger.changesets.read_blob(sha256_hex(content)) == content


def test_concurrent_writers_get_gapless_unique_seqs(db_url: URL, tmp_path: Path) -> None:
    with Ledger.open(db_url) as ledger:
        changeset = ledger.changesets.start(ledger.plans.create("shared", "/w").id)
    sync = tmp_path / "sync"
    sync.mkdir()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url_text(db_url), changeset.id, str(n), str(sync)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(sync.glob("ready-*"))) < 4 and time.monotonic() < deadline:
            assert all(w.poll() is None for w in workers), "a writer exited early"
            time.sleep(0.01)
        (sync / "go").touch()  # all four start writing at once
        for worker in workers:
            _, stderr = worker.communicate(timeout=120)
            assert worker.returncode == 0, stderr
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    with Ledger.open(db_url) as ledger:
        entries = ledger.changesets.get(changeset.id).entries
        assert [e.seq for e in entries] == list(range(1, 201))
        assert len({e.id for e in entries}) == 200
        for n in range(4):
            own = [e.path for e in entries if e.path.startswith(f"w{n}/")]
            assert own == [f"w{n}/f{i}" for i in range(50)]  # each writer's order is kept
        assert ledger.changesets.summarize(changeset.id).entries == 200
        assert ledger.changesets.read_blob(sha256_hex(b"3:49")) == b"3:49"
