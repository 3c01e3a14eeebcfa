"""``PlanApplyService``: applying a plan to its workspace, cancelling it, and cleaning up.

Apply (see docs/apply.md): the net change per path is computed from the plan's changeset;
every path's current content is checked against the staged base before anything is
written (a mismatch is a ``ConflictError`` listing each path, and nothing is written);
then ``workspace.apply.Applier`` writes all of it or none of it under a journal. A failed
apply leaves the workspace as it was, the plan ``apply_failed`` with the error, and — unless
``keep_artifacts`` — its changeset cleaned up. Cancel cleans up too. Both end in
``cleanup_changeset``, which logs what it removed; the plan row stays.
"""

from __future__ import annotations

import contextlib
import fnmatch
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from changeledger.domain.errors import ApplyError, ChangeLedgerError, ConflictError
from changeledger.domain.ids import check_id
from changeledger.domain.models import CleanupResult, Plan, PlanError, PlanState
from changeledger.domain.store import ChangeSetStore, PlanStore
from changeledger.logs import get_logger
from changeledger.workspace.apply import (
    Applier,
    Conflict,
    NetChange,
    check_preconditions,
    net_changes,
    pending_journals,
    rollback,
)
from changeledger.workspace.confine import Workspace
from changeledger.workspace.locks import workspace_lock

log = get_logger("changeledger.apply")


@dataclass(frozen=True)
class ApplyReport:
    """What an apply wrote (or, for a dry run, would write)."""

    plan_id: str
    changeset_id: str | None
    dry_run: bool
    files: tuple[NetChange, ...]
    skipped: tuple[NetChange, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    duration_ms: float = 0.0
    fsync_ms: float = 0.0
    cleanup: CleanupResult | None = None


@dataclass(frozen=True)
class RecoveryReport:
    """Interrupted applies found and rolled back when a workspace was opened."""

    rolled_back: tuple[str, ...] = ()
    finished: tuple[str, ...] = ()
    busy: tuple[str, ...] = field(default_factory=tuple)


class PlanApplyService:
    def __init__(self, plans: PlanStore, changesets: ChangeSetStore) -> None:
        self.plans = plans
        self.changesets = changesets

    def apply(
        self,
        plan_id: str,
        *,
        dry_run: bool = False,
        only: Sequence[str] = (),
        keep_artifacts: bool = False,
    ) -> ApplyReport:
        """Apply the plan's net change to its workspace; see the module docstring.

        ``only`` restricts the apply to paths matching any of the globs; the others are
        reported as skipped and stay recorded. ``dry_run`` checks and reports only.
        """
        started = time.perf_counter()
        plan = self.plans.get(plan_id)
        if not dry_run:
            plan.state.check_transition(PlanState.APPLYING)
        workspace = Workspace(plan.workspace)
        self.recover(workspace)
        changeset = self.changesets.get_for_plan(plan.id)
        changes = net_changes(changeset.entries) if changeset else []
        selected = [c for c in changes if _matches(c.path, only)]
        skipped = tuple(c for c in changes if not _matches(c.path, only))
        changeset_id = changeset.id if changeset else None
        if dry_run:
            return ApplyReport(
                plan_id=plan.id,
                changeset_id=changeset_id,
                dry_run=True,
                files=tuple(selected),
                skipped=skipped,
                conflicts=tuple(check_preconditions(workspace, selected)),
                duration_ms=(time.perf_counter() - started) * 1000,
            )
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(workspace_lock(workspace))
            except OSError as exc:  # a read-only or full workspace: nothing was tried yet
                raise ApplyError(
                    f"cannot lock {workspace.root} for apply: {exc.strerror or exc}; nothing "
                    f"was written and plan {plan.id} is still {plan.state.value}"
                ) from exc
            conflicts = check_preconditions(workspace, selected)
            if conflicts:
                raise ConflictError(
                    f"the workspace changed since plan {plan.id} was staged; nothing was "
                    f"written. {len(conflicts)} conflicting path(s): "
                    + "; ".join(c.describe() for c in conflicts)
                )
            contents = self.changesets.read_blobs(
                c.after_hash for c in selected if c.after_hash is not None
            )
            self.plans.transition(plan.id, PlanState.APPLYING)
            applier = Applier(workspace, plan.id, keep_artifacts=keep_artifacts)
            try:
                applier.apply(selected, contents)  # rolls itself back before raising
            except ApplyError as exc:
                if exc.restored:
                    self._fail(plan.id, exc, keep_artifacts=keep_artifacts)
                # Otherwise the plan stays "applying" with its journal and changeset: every
                # open of the ledger retries the rollback until the workspace is restored.
                raise
            except BaseException as exc:
                self._fail(plan.id, exc, keep_artifacts=keep_artifacts)
                raise
            try:
                self.plans.transition(plan.id, PlanState.APPLIED)
            except BaseException as exc:
                if self._state_of(plan.id) is not PlanState.APPLIED:
                    # The ledger cannot say "applied", so the workspace must not be.
                    rollback(workspace, plan.id)
                    self._fail(plan.id, exc, keep_artifacts=keep_artifacts)
                    raise ApplyError(
                        f"apply of plan {plan.id} could not be recorded ({exc}); the "
                        "workspace was restored"
                    ) from exc
            applier.finish()
        report = ApplyReport(
            plan_id=plan.id,
            changeset_id=changeset_id,
            dry_run=False,
            files=tuple(selected),
            skipped=skipped,
            duration_ms=(time.perf_counter() - started) * 1000,
            fsync_ms=applier.fsync_seconds * 1000,
        )
        log.info("plan.applied", plan_id=plan.id, files=len(selected), skipped=len(skipped))
        return report

    def cancel(self, plan_id: str, reason: str | None = None) -> tuple[Plan, CleanupResult]:
        """Cancel the plan (its state must allow it) and clean up its changeset."""
        plan = self.plans.get(plan_id)
        error = PlanError(message=f"cancelled: {reason}") if reason else None
        plan = self.plans.transition(plan.id, PlanState.CANCELLED, error=error)
        return plan, self.cleanup_changeset(plan.id)

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

    def recover(self, workspace: Workspace) -> RecoveryReport:
        """Roll back every apply in ``workspace`` that a crashed process left half done.

        An apply whose plan the ledger already records as ``applied`` only loses its
        journal; one still ``applying`` is rolled back and becomes ``apply_failed``. A
        journal whose apply is still running in another process is left alone.
        """
        rolled_back: list[str] = []
        finished: list[str] = []
        busy: list[str] = []
        journals, stuck = self._unfinished(workspace)
        if not journals and not stuck:
            return RecoveryReport()
        with contextlib.ExitStack() as stack:
            try:
                acquired = stack.enter_context(workspace_lock(workspace, blocking=False))
            except OSError as exc:
                log.warning("apply.recover_later", workspace=str(workspace.root), error=str(exc))
                acquired = False
            if not acquired:
                return RecoveryReport(busy=tuple(journals + stuck))
            # Look again under the lock: an apply that held it a moment ago may have
            # finished since, and its plan is then applied, not stuck.
            journals, stuck = self._unfinished(workspace)
            for plan_id in stuck:
                # Died after the ledger said "applying" and before the journal: no file
                # was written.
                self.plans.transition(
                    plan_id,
                    PlanState.APPLY_FAILED,
                    error=PlanError(
                        message="apply was interrupted; no file of it is in the workspace"
                    ),
                )
                rolled_back.append(plan_id)
            for plan_id in journals:
                state = self._state_of(plan_id)
                if state is PlanState.APPLIED:
                    Applier(workspace, plan_id).finish()
                    finished.append(plan_id)
                    continue
                try:
                    record = rollback(workspace, plan_id) or {}
                except ApplyError as exc:  # still cannot (read-only, immutable): later
                    log.warning("apply.recover_later", plan_id=plan_id, error=exc.message)
                    busy.append(plan_id)
                    continue
                rolled_back.append(plan_id)
                if state is PlanState.APPLYING:
                    self.plans.transition(
                        plan_id,
                        PlanState.APPLY_FAILED,
                        error=PlanError(
                            message="apply was interrupted; the workspace was rolled back",
                            details={"recovered": True},
                        ),
                    )
                    if not record.get("keep_artifacts", False):
                        self.cleanup_changeset(plan_id)
                log.warning("apply.recovered", plan_id=plan_id, workspace=str(workspace.root))
        return RecoveryReport(
            rolled_back=tuple(rolled_back), finished=tuple(finished), busy=tuple(busy)
        )

    def recover_all(self, also: Sequence[str] = ()) -> RecoveryReport:
        """``recover`` every workspace with a plan the ledger still shows as applying, and
        the workspaces in ``also`` (the embedded ledger's own, where a journal may outlive
        an apply the ledger already records as done)."""
        rolled_back: list[str] = []
        busy: list[str] = []
        roots = {p.workspace for p in self.plans.list(PlanState.APPLYING)} | set(also)
        for root in sorted(roots):
            try:
                workspace = Workspace(root)
            except ChangeLedgerError:
                continue  # not on this machine: the machine that has it recovers it
            report = self.recover(workspace)
            rolled_back.extend(report.rolled_back)
            busy.extend(report.busy)
        return RecoveryReport(rolled_back=tuple(rolled_back), busy=tuple(busy))

    def _unfinished(self, workspace: Workspace) -> tuple[list[str], list[str]]:
        """Plans with a journal left in ``workspace``, and plans the ledger shows applying
        there without one."""
        journals = pending_journals(workspace)
        stuck = [
            p.id
            for p in self.plans.list(PlanState.APPLYING)
            if p.workspace == str(workspace.root) and p.id not in journals
        ]
        return journals, stuck

    def _state_of(self, plan_id: str) -> PlanState | None:
        try:
            return self.plans.get(plan_id).state
        except ChangeLedgerError:
            return None

    def _fail(self, plan_id: str, exc: BaseException, *, keep_artifacts: bool) -> None:
        """After a failed apply (workspace already restored): record it, maybe clean up.

        Errors here are logged, not raised, so that the apply's own error reaches the user.
        """
        error = PlanError(message=str(exc), details={"error_type": type(exc).__name__})
        try:
            self.plans.transition(plan_id, PlanState.APPLY_FAILED, error=error)
            if not keep_artifacts:
                self.cleanup_changeset(plan_id)
        except ChangeLedgerError as follow_up:
            log.warning("apply.fail_record", plan_id=plan_id, error=str(follow_up))


def _matches(path: str, globs: Sequence[str]) -> bool:
    return not globs or any(fnmatch.fnmatchcase(path, g) for g in globs)
