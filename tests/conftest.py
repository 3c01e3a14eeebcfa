"""Fixtures for the storage tests, on top of the ``ledger`` fixture of the root conftest.

``ledger`` runs each test once on a SQLite file and once on the PostgreSQL server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from changeledger import logs
from changeledger.domain.models import Plan, SpecChangeSet
from changeledger.storage.ledger import Ledger


@pytest.fixture
def plan(ledger: Ledger) -> Plan:
    """A plan in state ``created`` in the test's ledger."""
    return ledger.plans.create("Rename greeting", workspace="/src/app")


@pytest.fixture
def changeset(ledger: Ledger, plan: Plan) -> SpecChangeSet:
    """An empty changeset, started for ``plan``."""
    return ledger.changesets.start(plan.id)


@pytest.fixture
def captured_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog event the library emits during the test, at every level."""
    # The library configures structlog on its first log call unless it is configured
    # already; keep it from replacing the capturing processors in the middle of a test.
    monkeypatch.setattr(logs, "_configured", True, raising=False)
    saved = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    try:
        with capture_logs() as entries:
            yield entries
    finally:
        structlog.configure(**saved)
