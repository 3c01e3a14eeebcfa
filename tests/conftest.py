"""Fixtures for the storage tests, on top of the ``ledger`` fixture of the root conftest.

``ledger`` runs each test once on a SQLite file and once on the PostgreSQL server.
"""

from __future__ import annotations

import pytest

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
