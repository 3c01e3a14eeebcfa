"""``PlanApplyService``: applying a plan's changeset to its workspace, and cleaning up.

This module holds the cleanup path that cancel and a failed apply both end in.
"""

from __future__ import annotations

from changeledger.domain.ids import check_id
from changeledger.domain.models import CleanupResult
from changeledger.domain.store import ChangeSetStore, PlanStore
from changeledger.logs import get_logger

log = get_logger("changeledger.apply")


class PlanApplyService:
    def __init__(self, plans: PlanStore, changesets: ChangeSetStore) -> None:
        self.plans = plans
        self.changesets = changesets

    def cleanup_changeset(self, plan_id: str) -> CleanupResult:
        """Delete the plan's entries, invocations and unreferenced blobs; keep the plan row.

        Logs how many records were removed and returns the counts.
        """
        key = check_id(plan_id, "plan_id")
        result = self.changesets.delete_for_plan(key)
        log.info(
            "changeset.cleanup",
            plan_id=key,
            changesets=result.changesets,
            entries=result.entries,
            invocations=result.invocations,
            blobs=result.blobs,
            total=result.total,
        )
        return result
