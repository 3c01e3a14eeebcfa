"""The command line as a user runs it: exit codes, exact error lines, output formats."""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy.engine import URL

from changeledger import __version__
from changeledger.cli.main import cli
from changeledger.storage.schema import HEAD_REVISION

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.delenv("CHANGELEDGER_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def test_init_creates_the_ledger_and_reports_it(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["init", "--format", "json"])
    assert result.exit_code == 0, result.output
    envelope = json.loads(result.stdout)
    assert envelope["command"] == "init"
    assert envelope["status"] == "ok"
    assert envelope["exit_code"] == 0
    assert envelope["data"]["revision"] == HEAD_REVISION
    assert envelope["data"]["created"] is True
    assert envelope["data"]["workspace"] == str(tmp_path.resolve())
    assert set(envelope["timing"]) == {"started", "duration_ms"}
    assert (tmp_path / ".changeledger" / "ledger.db").is_file()


def test_init_on_a_file_is_invalid_input(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    result = runner.invoke(cli, ["init", "--workspace", "afile"])
    assert result.exit_code == 2
    assert "afile" in result.stderr


def test_db_current_in_every_format(runner: CliRunner) -> None:
    assert runner.invoke(cli, ["init"]).exit_code == 0
    plain = runner.invoke(cli, ["db", "current", "--format", "plain"])
    assert plain.exit_code == 0
    assert plain.stdout.splitlines() == [
        f"revision: {HEAD_REVISION}",
        f"head: {HEAD_REVISION}",
        "up_to_date: yes",
    ]
    as_json = json.loads(runner.invoke(cli, ["db", "current", "--format", "json"]).stdout)
    as_yaml = yaml.safe_load(runner.invoke(cli, ["db", "current", "--format", "yaml"]).stdout)
    assert (
        as_json["data"]
        == as_yaml["data"]
        == {
            "revision": HEAD_REVISION,
            "head": HEAD_REVISION,
            "up_to_date": True,
        }
    )
    rich = runner.invoke(cli, ["db", "current", "--format", "rich"])
    assert rich.exit_code == 0
    assert "db current" in rich.stdout
    assert HEAD_REVISION in rich.stdout


def test_missing_ledger_is_exit_3_with_one_line(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["db", "current"])
    assert result.exit_code == 3
    assert result.stderr == (
        f"error: no ledger found in {tmp_path} or any parent directory; run 'changeledger "
        "init' in the workspace root, or pass --db / set CHANGELEDGER_DB\n"
    )
    assert result.stdout == ""


def test_missing_sqlite_file_given_by_db_is_not_created(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "nope" / "ledger.db"
    result = runner.invoke(cli, ["--db", str(target), "db", "current"])
    assert result.exit_code == 3
    assert result.stderr.startswith(f"error: no ledger at {target}")
    assert not target.parent.exists()


def test_error_envelope_in_json(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--db", "mysql://u@h/d", "db", "current", "--format", "json"])
    assert result.exit_code == 2
    envelope = json.loads(result.stdout)
    assert envelope["status"] == "error"
    assert envelope["exit_code"] == 2
    assert envelope["error"]["type"] == "ValidationError"
    assert "supports sqlite and postgresql" in envelope["error"]["message"]


def test_db_check_fails_until_upgraded(runner: CliRunner) -> None:
    assert runner.invoke(cli, ["init"]).exit_code == 0
    assert runner.invoke(cli, ["db", "check"]).exit_code == 0
    down = runner.invoke(cli, ["db", "downgrade", "base", "--format", "json"])
    assert json.loads(down.stdout)["data"] == {"from": HEAD_REVISION, "to": None}
    failed = runner.invoke(cli, ["db", "check"])
    assert failed.exit_code == 1
    assert failed.stderr == (
        f"error: the ledger is at schema revision none, head is {HEAD_REVISION}; "
        "run 'changeledger db upgrade'\n"
    )
    up = runner.invoke(cli, ["db", "upgrade", "--format", "json"])
    assert json.loads(up.stdout)["data"] == {"from": None, "to": HEAD_REVISION}
    assert runner.invoke(cli, ["db", "check"]).exit_code == 0


@pytest.mark.parametrize(
    "args",
    [("db", "check"), ("db", "upgrade"), ("db", "downgrade", "base")],
    ids=" ".join,
)
def test_a_ledger_newer_than_this_changeledger_advises_upgrading_it(
    runner: CliRunner, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Migrated by a later release: 'db upgrade' cannot help, a newer changeledger can."""
    assert runner.invoke(cli, ["init"]).exit_code == 0
    db = tmp_path / ".changeledger" / "ledger.db"
    with closing(sqlite3.connect(db)) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
        raw.commit()
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: the ledger is at schema revision 9999_from_the_future, newer than this "
        f"changeledger {__version__} knows (its head is {HEAD_REVISION}); upgrade "
        "changeledger (pip install -U changeledger)\n"
    )
    with closing(sqlite3.connect(db)) as raw:  # and nothing was changed
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("9999_from_the_future",)
        ]
    current = runner.invoke(cli, ["db", "current", "--format", "json"])
    assert json.loads(current.stdout)["data"]["up_to_date"] is False


def test_unknown_revision_is_not_found(runner: CliRunner) -> None:
    assert runner.invoke(cli, ["init"]).exit_code == 0
    result = runner.invoke(cli, ["db", "upgrade", "nosuchrev"])
    assert result.exit_code == 3
    assert "nosuchrev" in result.stderr
    assert "Traceback" not in result.output


def test_postgresql_ledger_by_url(runner: CliRunner, pg_url: URL) -> None:
    url = pg_url.render_as_string(hide_password=False)
    init = runner.invoke(cli, ["--db", url, "init", "--format", "json"])
    assert init.exit_code == 0, init.output
    assert json.loads(init.stdout)["data"]["backend"] == "postgresql"
    check = runner.invoke(cli, ["--db", url, "db", "check", "--format", "json"])
    assert check.exit_code == 0, check.output
    assert json.loads(check.stdout)["data"]["ok"] is True


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        full = f"{prefix}{name}"
        if isinstance(command, click.Group):
            found.extend(_commands(command, f"{full} "))
        else:
            found.append((full, command))
    return found


@pytest.mark.parametrize(("name", "command"), _commands(cli))
def test_every_command_and_option_is_documented(name: str, command: click.Command) -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert re.search(rf"`(changeledger )?{re.escape(name)}\b", text), f"{name} not in cli.md"
    for param in command.params:
        if isinstance(param, click.Option):
            longest = max(param.opts, key=len)
            assert longest in text, f"{name} {longest} not documented in cli.md"


def test_every_global_option_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for param in cli.params:
        if isinstance(param, click.Option):
            assert max(param.opts, key=len) in text


def test_usage_errors_follow_the_error_contract(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["plan", "list", "--state", "bogus", "--format", "json"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: Invalid value for '--state'")
    envelope = json.loads(result.stdout)
    assert (envelope["status"], envelope["exit_code"], envelope["error"]["type"]) == (
        "error",
        2,
        "UsageError",
    )
    missing = runner.invoke(cli, ["plan", "create"], prog_name="changeledger")
    assert missing.exit_code == 2
    assert missing.stderr == (
        "error: Missing argument 'TITLE'. (see 'changeledger plan create --help')\n"
    )
    assert runner.invoke(cli, ["--help"]).exit_code == 0
