"""``PlanApplyService``: applying a plan to its workspace, cancelling it, and cleaning up.

Apply (see docs/apply.md), under the apply lock of the workspace's directory tree and the
plan's execution lock (so no run of the plan records meanwhile):

1. snapshot the plan's changeset and compute the net change per path;
2. check every path against the workspace (``workspace.apply.plan_writes``): a mismatch is
   a ``ConflictError`` listing each path, and nothing is written;
3. begin the apply in the ledger: in one transaction the plan moves to ``applying`` only if
   its changeset still holds exactly the snapshot, and the apply is recorded with every
   path it writes or skips (contents and modes before and after);
4. ``workspace.apply.Applier`` writes all of it or none of it under a journal;
5. finish: the plan becomes ``applied`` (or ``apply_failed`` after a rollback, its staged
   work kept so that it can be applied again once the cause is fixed).

Cancel ends in ``cleanup_changeset``, which logs what it removed; the plan row stays.
"""

from __future__ import annotations

import contextlib
import fnmatch
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from changeledger.domain.errors import (
    ApplyError,
    ChangeLedgerError,
    ConflictError,
    JournalError,
    NotFoundError,
    StateTransitionError,
)
from changeledger.domain.ids import check_id
from changeledger.domain.models import (
    ApplyAction,
    ApplyFile,
    ApplyRecord,
    ApplyState,
    CleanupResult,
    Plan,
    PlanError,
    PlanState,
)
from changeledger.domain.paths import normalize_path
from changeledger.domain.redact import default_redactor
from changeledger.domain.store import ChangeSetStore, PlanStore
from changeledger.logs import get_logger
from changeledger.workspace.apply import (
    Applier,
    Conflict,
    Journal,
    NetChange,
    PlannedChange,
    discard_journal,
    forget,
    journal_folder,
    net_changes,
    pending_journals,
    plan_writes,
    prepare_journal,
    read_journal,
    rollback,
)
from changeledger.workspace.confine import Workspace
from changeledger.workspace.locks import execution_lock, workspace_lock

log = get_logger("changeledger.apply")

_NOTHING_WRITTEN = "apply was interrupted; no file of it is in the workspace"


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
    #: The ledger's record of this apply (``None`` for a dry run).
    record: ApplyRecord | None = None
    #: What each written path gets: the planned change with its modes.
    planned: tuple[PlannedChange, ...] = ()


@dataclass(frozen=True)
class RecoveryReport:
    """What recovery found in the workspaces it looked at.

    ``rolled_back``: plans whose interrupted apply was undone (now ``apply_failed``);
    ``finished``: journals of applies the ledger had already recorded as done, removed;
    ``busy``: journals left for later (another apply runs, or the rollback is blocked);
    ``notices``: one line per journal left alone or blocked, saying why and what to do;
    ``blocked``: plan ids whose journal could not be acted on, with that line.
    """

    rolled_back: tuple[str, ...] = ()
    finished: tuple[str, ...] = ()
    busy: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()
    blocked: tuple[tuple[str, str], ...] = ()

    def merged(self, other: RecoveryReport) -> RecoveryReport:
        return RecoveryReport(
            rolled_back=self.rolled_back + other.rolled_back,
            finished=self.finished + other.finished,
            busy=self.busy + other.busy,
            notices=self.notices + other.notices,
            blocked=self.blocked + other.blocked,
        )


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
        ``keep_artifacts`` is accepted for compatibility: a failed apply always keeps the
        plan's staged work now.
        """
        del keep_artifacts
        started = time.perf_counter()
        plan = self.plans.get(plan_id)
        workspace = Workspace(plan.workspace)
        self._refuse_blocked(plan, workspace, self.recover(workspace))
        plan = self.plans.get(plan.id)  # recovery may have ended an interrupted apply
        if not dry_run:
            plan.state.check_transition(PlanState.APPLYING)
        with contextlib.ExitStack() as stack:
            if not dry_run:
                self._lock(stack, plan, workspace)
                plan = self.plans.get(plan.id)  # as it is now that nothing else runs it
                plan.state.check_transition(PlanState.APPLYING)
            work = self._prepare(plan, workspace, only)
            if dry_run:
                return work.report(started, dry_run=True)
            if work.conflicts:
                raise ConflictError(
                    f"the workspace changed since plan {plan.id} was staged; nothing was "
                    f"written. {len(work.conflicts)} conflicting path(s): "
                    + "; ".join(c.describe() for c in work.conflicts)
                )
            contents = self.changesets.read_blobs(
                c.after_hash for c in work.selected if c.after_hash is not None
            )
            record = self._begin(work)
            applier = Applier(
                workspace, plan.id, ledger_id=self.changesets.ledger_id, apply_id=record.id
            )
            record = self._write(work, record, applier, contents)
        log.info(
            "plan.applied", plan_id=plan.id, files=len(work.selected), skipped=len(work.skipped)
        )
        return work.report(started, record=record, fsync_ms=applier.fsync_seconds * 1000)

    def _prepare(self, plan: Plan, workspace: Workspace, only: Sequence[str]) -> _Work:
        """The plan's net change, checked against the workspace."""
        changeset = self.changesets.get_for_plan(plan.id, invocations=False)
        entries = changeset.entries if changeset else ()
        changes = net_changes(entries)
        for change in changes:  # stored by an older version, or edited: check again
            normalize_path(change.path)
        selected = [c for c in changes if _matches(c.path, only)]
        planned, conflicts = plan_writes(
            workspace, selected, sensitive=default_redactor().is_sensitive_file
        )
        return _Work(
            plan=plan,
            workspace=workspace,
            changeset_id=changeset.id if changeset else None,
            through_seq=max((e.seq for e in entries), default=0),
            selected=tuple(selected),
            skipped=tuple(c for c in changes if not _matches(c.path, only)),
            planned=tuple(planned),
            conflicts=tuple(conflicts),
        )

    def _begin(self, work: _Work) -> ApplyRecord:
        """The journal's folder first (a workspace that cannot hold one refuses with
        nothing changed), then the ledger's ``applying`` with the snapshot check."""
        plan = work.plan
        try:
            prepare_journal(work.workspace, plan.id)
        except ApplyError as exc:
            exc.message += f"; nothing was written and plan {plan.id} is still {plan.state}"
            raise
        try:
            return self.changesets.begin_apply(
                plan.id,
                changeset_id=work.changeset_id,
                through_seq=work.through_seq,
                workspace=str(work.workspace.root),
                files=_apply_files(work.planned, work.skipped),
            )
        except BaseException:
            discard_journal(work.workspace, plan.id)
            raise

    def _write(
        self, work: _Work, record: ApplyRecord, applier: Applier, contents: dict[str, bytes]
    ) -> ApplyRecord:
        """Write the workspace, then record it applied; or restore it and record why not."""
        plan_id = work.plan.id
        try:
            applier.apply(work.planned, contents)  # rolls itself back before raising
        except ApplyError as exc:
            if exc.restored:
                self._fail(record.id, exc)
            # Otherwise the plan stays "applying" with its journal: every open of the
            # ledger retries the rollback until the workspace is restored.
            raise
        except BaseException as exc:
            self._fail(record.id, exc)
            raise
        try:
            record = self.changesets.finish_apply(record.id, applied=True)
        except BaseException as exc:
            if self._state_of(plan_id) is not PlanState.APPLIED:
                # The ledger cannot say "applied", so the workspace must not be.
                journal = read_journal(work.workspace, plan_id)
                if journal is not None:
                    rollback(work.workspace, journal)
                self._fail(record.id, exc)
                raise ApplyError(
                    f"apply of plan {plan_id} could not be recorded ({exc}); the "
                    "workspace was restored"
                ) from exc
        applier.finish()
        return record

    def _lock(self, stack: contextlib.ExitStack[bool | None], plan: Plan, root: Workspace) -> None:
        """Take the tree's apply lock (waiting for another apply), then the plan's
        execution lock (refusing if a run of the plan is recording right now)."""
        try:
            stack.enter_context(workspace_lock(root))
        except OSError as exc:  # a read-only or full workspace: nothing was tried yet
            raise ApplyError(
                f"cannot lock {root.root} for apply: {exc.strerror or exc}; nothing "
                f"was written and plan {plan.id} is still {plan.state.value}"
            ) from exc
        held = stack.enter_context(execution_lock(root, plan.id))
        if held is False:
            raise StateTransitionError(
                f"plan {plan.id} is being executed by another process; apply it when that "
                "run has finished"
            )

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

    # -- recovery ----------------------------------------------------------------------------

    def recover(self, workspace: Workspace) -> RecoveryReport:
        """Finish what crashed applies left in ``workspace``; trust no journal blindly.

        A journal is acted on only when this ledger wrote it (its ledger id) for an apply
        it records as running (its apply id) of a plan ``applying`` in this workspace: it
        is then rolled back, every path in it checked first. A journal of an apply the
        ledger records as finished is only removed. Any other (another ledger's, an
        unknown plan's, one committed to a repository and cloned, a corrupt one) is left
        alone and reported once, with the way to remove it. A journal whose apply is still
        running in another process is left alone too.
        """
        try:
            names = pending_journals(workspace)
        except JournalError as exc:
            return RecoveryReport(notices=(exc.message,), blocked=(("*", exc.message),))
        stuck = self._stuck(workspace, names)
        if not names and not stuck:
            return RecoveryReport()
        report = _Recovery()
        with contextlib.ExitStack() as stack:
            try:
                acquired = stack.enter_context(workspace_lock(workspace, blocking=False))
            except OSError as exc:
                log.warning("apply.recover_later", workspace=str(workspace.root), error=str(exc))
                acquired = False
            if not acquired:
                return RecoveryReport(busy=tuple(names + stuck))
            # Look again under the lock: an apply that held it a moment ago may have
            # finished since, and its plan is then applied, not stuck.
            try:
                names = pending_journals(workspace)
            except JournalError as exc:
                return RecoveryReport(notices=(exc.message,), blocked=(("*", exc.message),))
            for plan_id in self._stuck(workspace, names):
                # Died after the ledger said "applying" and before the journal: no file
                # was written.
                self._interrupted(plan_id, _NOTHING_WRITTEN)
                report.rolled_back.append(plan_id)
            for name in names:
                self._recover_journal(workspace, name, report)
        return report.freeze()

    def recover_all(self, also: Sequence[str] = ()) -> RecoveryReport:
        """``recover`` every workspace with a plan the ledger still shows as applying, and
        the workspaces in ``also`` (the embedded ledger's own, where a journal may outlive
        an apply the ledger already records as done)."""
        total = RecoveryReport()
        roots = {p.workspace for p in self.plans.list(PlanState.APPLYING)} | set(also)
        for root in sorted(roots):
            try:
                workspace = Workspace(root)
            except ChangeLedgerError:
                continue  # not on this machine: the machine that has it recovers it
            total = total.merged(self.recover(workspace))
        return total

    def _recover_journal(self, workspace: Workspace, name: str, report: _Recovery) -> None:
        where = f"{workspace.root}/{journal_folder(name)}"
        plan = self._plan(name)
        ours = (
            plan is not None
            and plan.state is PlanState.APPLYING
            and plan.workspace == str(workspace.root)
        )
        try:
            journal = read_journal(workspace, name)
        except JournalError as exc:
            if ours and plan is not None:
                report.block(plan.id, exc.message)
            else:
                self._leave(report, where, exc.message)
            return
        if journal is None:  # killed before its record was written: nothing was touched
            if ours and plan is not None:
                discard_journal(workspace, name)
                self._interrupted(plan.id, _NOTHING_WRITTEN)
                report.rolled_back.append(plan.id)
            elif plan is not None:  # one of this ledger's plans: an apply that never began
                discard_journal(workspace, name)
                report.finished.append(plan.id)
            else:
                self._leave(report, where, "an empty journal folder of no apply running here")
            return
        verdict = self._trust(journal, plan, workspace)
        if verdict == "finished":
            forget(workspace, journal)
            report.finished.append(journal.plan_id)
        elif verdict == "roll back":
            self._roll_back(workspace, journal, report)
        else:
            self._leave(report, where, verdict)

    def _trust(self, journal: Journal, plan: Plan | None, workspace: Workspace) -> str:
        """ "roll back", "finished", or why the journal is left alone."""
        if journal.format != 1 and journal.ledger_id != self.changesets.ledger_id:
            return "an apply journal written by another ledger"
        if plan is None:
            return f"an apply journal of plan {journal.plan_id}, which this ledger does not have"
        if journal.format == 1:
            return self._trust_legacy(journal, plan, workspace)
        try:
            record = self.changesets.get_apply(str(journal.apply_id))
        except NotFoundError:
            record = None
        if record is None or record.plan_id != plan.id:
            return f"an apply journal of an apply this ledger never began (plan {plan.id})"
        if record.state is not ApplyState.RUNNING:
            return "finished"
        # A running apply of this very workspace; a copy of the project (the ledger and
        # its journal copied along) sees its plan's workspace elsewhere and leaves it.
        return (
            "roll back"
            if plan.workspace == str(workspace.root)
            else f"an apply journal of plan {plan.id}, whose workspace is {plan.workspace}"
        )

    def _trust_legacy(self, journal: Journal, plan: Plan, workspace: Workspace) -> str:
        """A journal from before ledger ids: the ledger's word and the root decide."""
        if plan.state is PlanState.APPLIED:
            return "finished"
        if (
            plan.state is PlanState.APPLYING
            and plan.workspace == str(workspace.root) == journal.root
            and self._running(plan.id) is None
        ):
            return "roll back"
        return f"an old apply journal of plan {plan.id}, which is {plan.state.value}"

    def _roll_back(self, workspace: Workspace, journal: Journal, report: _Recovery) -> None:
        try:
            rollback(workspace, journal)
        except ApplyError as exc:  # still cannot (read-only, immutable, blocked): later
            log.warning("apply.recover_later", plan_id=journal.plan_id, error=exc.message)
            report.block(journal.plan_id, exc.message)
            return
        report.rolled_back.append(journal.plan_id)
        self._interrupted(
            journal.plan_id,
            "apply was interrupted; the workspace was rolled back",
            recovered=True,
        )
        log.warning("apply.recovered", plan_id=journal.plan_id, workspace=str(workspace.root))

    def _leave(self, report: _Recovery, where: str, why: str) -> None:
        """Report a journal that is never acted on: once per journal."""
        line = (
            f"left alone: {where} is {why}; nothing was rolled back or forward. If no apply "
            f"is running there, remove it: rm -r {where}"
            if not why.startswith("apply journal ")
            else f"left alone: {why}"
        )
        report.notices.append(line)

    def _stuck(self, workspace: Workspace, journals: Sequence[str]) -> list[str]:
        """Plans the ledger shows applying in ``workspace`` without a journal there."""
        return [
            p.id
            for p in self.plans.list(PlanState.APPLYING)
            if p.workspace == str(workspace.root) and p.id not in journals
        ]

    def _interrupted(self, plan_id: str, message: str, *, recovered: bool = False) -> None:
        error = PlanError(message=message, details={"recovered": True} if recovered else {})
        running = self._running(plan_id)
        if running is not None:
            self.changesets.finish_apply(running.id, applied=False, error=error)
        else:  # an apply begun by a version that kept no apply records
            self.plans.transition(plan_id, PlanState.APPLY_FAILED, error=error)

    def _running(self, plan_id: str) -> ApplyRecord | None:
        running = [
            a for a in self.changesets.applies_for_plan(plan_id) if a.state is ApplyState.RUNNING
        ]
        return running[-1] if running else None

    def _refuse_blocked(self, plan: Plan, workspace: Workspace, report: RecoveryReport) -> None:
        """An apply in a workspace whose journals cannot be read, or of a plan whose last
        apply could not be rolled back yet, stops here with what blocks it."""
        for plan_id, message in report.blocked:
            if plan_id in ("*", plan.id):
                raise JournalError(message, path=f"{workspace.root}/{journal_folder(plan_id)}")
        if plan.id in report.busy:
            raise ApplyError(
                f"plan {plan.id} has an apply journal in {workspace.root} that another "
                "process is handling; try again when it has finished"
            )

    def _plan(self, name: str) -> Plan | None:
        try:
            return self.plans.get(check_id(name, "plan_id"))
        except ChangeLedgerError:
            return None

    def _state_of(self, plan_id: str) -> PlanState | None:
        try:
            return self.plans.get(plan_id).state
        except ChangeLedgerError:
            return None

    def _fail(self, apply_id: str, exc: BaseException) -> None:
        """After a failed apply (workspace already restored): record it. Errors here are
        logged, not raised, so that the apply's own error reaches the user. The staged
        work stays: the plan can be applied again once the cause is fixed."""
        message = exc.message if isinstance(exc, ChangeLedgerError) else str(exc)
        error = PlanError(message=message, details={"error_type": type(exc).__name__})
        try:
            self.changesets.finish_apply(apply_id, applied=False, error=error)
        except ChangeLedgerError as follow_up:
            log.warning("apply.fail_record", apply_id=apply_id, error=str(follow_up))


@dataclass(frozen=True)
class _Work:
    """An apply being prepared: what it writes, skips, and what stands in its way."""

    plan: Plan
    workspace: Workspace
    changeset_id: str | None
    through_seq: int
    selected: tuple[NetChange, ...]
    skipped: tuple[NetChange, ...]
    planned: tuple[PlannedChange, ...]
    conflicts: tuple[Conflict, ...]

    def report(
        self,
        started: float,
        *,
        dry_run: bool = False,
        record: ApplyRecord | None = None,
        fsync_ms: float = 0.0,
    ) -> ApplyReport:
        return ApplyReport(
            plan_id=self.plan.id,
            changeset_id=self.changeset_id,
            dry_run=dry_run,
            files=self.selected,
            skipped=self.skipped,
            conflicts=self.conflicts if dry_run else (),
            duration_ms=(time.perf_counter() - started) * 1000,
            fsync_ms=fsync_ms,
            record=record,
            planned=self.planned,
        )


@dataclass
class _Recovery:
    """A ``RecoveryReport`` being filled in."""

    rolled_back: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    blocked: list[tuple[str, str]] = field(default_factory=list)

    def block(self, plan_id: str, message: str) -> None:
        self.blocked.append((plan_id, message))
        self.notices.append(f"waiting: {message}")

    def freeze(self) -> RecoveryReport:
        return RecoveryReport(
            rolled_back=tuple(self.rolled_back),
            finished=tuple(self.finished),
            busy=tuple(plan_id for plan_id, _ in self.blocked),
            notices=tuple(self.notices),
            blocked=tuple(self.blocked),
        )


def _apply_files(planned: Sequence[PlannedChange], skipped: Sequence[NetChange]) -> list[ApplyFile]:
    files = [
        ApplyFile(
            path=item.path,
            operation=item.change.operation,
            action=ApplyAction.WRITE,
            before_hash=item.change.before_hash,
            after_hash=item.change.after_hash,
            before_mode=item.current_mode,
            after_mode=item.mode,
            before_kind=item.change.before_kind,
            after_kind=item.change.kind,
        )
        for item in planned
    ]
    files.extend(
        ApplyFile(
            path=change.path,
            operation=change.operation,
            action=ApplyAction.SKIP,
            before_hash=change.before_hash,
            after_hash=change.after_hash,
            before_mode=change.before_mode,
            after_mode=change.mode if change.after_hash is not None else None,
            before_kind=change.before_kind,
            after_kind=change.kind,
        )
        for change in skipped
    )
    return files


def _matches(path: str, globs: Sequence[str]) -> bool:
    return not globs or any(fnmatch.fnmatchcase(path, g) for g in globs)


__all__ = ["ApplyReport", "PlanApplyService", "RecoveryReport"]
