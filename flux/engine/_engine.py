"""FluxEngine: runs workflows, stores their runs and tells subscribers what happens."""

from __future__ import annotations

import asyncio
import builtins
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import attrs

from flux.builder import WorkflowBuilder
from flux.clock import Clock, SystemClock
from flux.engine._driver import EngineContext, RunDriver
from flux.engine._ownership import new_owner_id, owner_is_dead
from flux.engine._plans import WorkflowRegistry, latest_visits, resume_point
from flux.errors import InvalidInputError, InvalidRunStateError, RunNotFoundError
from flux.events import (
    Event,
    EventBus,
    RollbackComplete,
    RollbackStart,
    SignalReceived,
    StepCompensate,
    StepComplete,
    StepError,
    StepRetry,
    StepSkip,
    StepStart,
    StepSuspend,
    Unsubscribe,
    WorkflowCancel,
    WorkflowComplete,
    WorkflowError,
    WorkflowResume,
    WorkflowStart,
    WorkflowSuspend,
)
from flux.plan import StepSpec, Workflow
from flux.records import RunFilter, RunRecord
from flux.result import RunResult
from flux.retry import RetryPolicy
from flux.status import RunStatus
from flux.storage.memory import MemoryStorage
from flux.storage.protocol import Storage

logger = logging.getLogger("flux.engine")

InputT = TypeVar("InputT")
WorkflowLike = Workflow[InputT] | WorkflowBuilder[InputT]
_RECOVERABLE = (RunStatus.RUNNING, RunStatus.PENDING, RunStatus.ROLLING_BACK)


class FluxEngine:
    """Runs workflows step by step, checkpointing each step through ``storage``.

    Args:
        storage: where runs are kept; None means a fresh :class:`MemoryStorage`.
        default_retries: retries per step when neither the step nor a policy says otherwise.
        default_timeout: seconds per attempt when the step sets no ``timeout``.
        retry_policy: the backoff policy of steps that have no ``retry=``.
        on: subscribers to attach at once, ``{"step_complete": fn, ...}``.
        clock: the time source (``flux.testing.FakeClock`` in tests).
        workflows: workflows to register, so runs stored by other processes can be resumed.
        lease: seconds a run's claim lasts without a checkpoint or heartbeat.

    Use it as ``async with FluxEngine(...) as engine:`` so storage is opened and closed.
    """

    def __init__(
        self,
        storage: Storage | None = None,
        *,
        default_retries: int = 3,
        default_timeout: float = 30.0,
        retry_policy: RetryPolicy | None = None,
        on: Mapping[str, Callable[[Any], Any]] | None = None,
        clock: Clock | None = None,
        workflows: Iterable[Workflow[Any] | WorkflowBuilder[Any]] = (),
        lease: float = 30.0,
    ) -> None:
        if default_retries < 0:
            raise ValueError(f"default_retries must be >= 0, got {default_retries}")
        if not default_timeout > 0:
            raise ValueError(f"default_timeout must be a positive number of seconds, got {default_timeout}")
        if not lease > 0:
            raise ValueError(f"lease must be a positive number of seconds, got {lease}")
        self.storage: Storage = storage if storage is not None else MemoryStorage()
        self.clock: Clock = clock or SystemClock()
        self.owner = new_owner_id()
        self._bus = EventBus()
        self._registry = WorkflowRegistry()
        self._default_policy = (retry_policy or RetryPolicy()).with_retries(default_retries)
        self._retry_policy = retry_policy
        self._policies: dict[StepSpec, RetryPolicy] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._started = False
        self._active: dict[str, RunDriver] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._env = EngineContext(
            storage=self.storage,
            clock=self.clock,
            bus=self._bus,
            default_timeout=float(default_timeout),
            policies=self._policy_for,
            executor=self._get_executor,
            owner=self.owner,
            lease=timedelta(seconds=lease),
        )
        for name, fn in (on or {}).items():
            self.on(name, fn)
        for workflow in workflows:
            self.register(workflow)

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> FluxEngine:
        await self.start_engine()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start_engine(self) -> None:
        """Open storage (``init``). ``async with`` and the first call that needs it do this."""
        if not self._started:
            await self.storage.init()
            self._started = True

    async def close(self) -> None:
        """Stop heartbeats, close storage and let go of abandoned step threads."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._started:
            await self.storage.close()
            self._started = False

    # --- configuration --------------------------------------------------------------------

    @overload
    def on(self, event: Literal["workflow_start"], fn: Callable[[WorkflowStart], Any]) -> Unsubscribe: ...
    @overload
    def on(
        self, event: Literal["workflow_complete"], fn: Callable[[WorkflowComplete], Any]
    ) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["workflow_error"], fn: Callable[[WorkflowError], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["workflow_suspend"], fn: Callable[[WorkflowSuspend], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["workflow_resume"], fn: Callable[[WorkflowResume], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["workflow_cancel"], fn: Callable[[WorkflowCancel], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["rollback_start"], fn: Callable[[RollbackStart], Any]) -> Unsubscribe: ...
    @overload
    def on(
        self, event: Literal["rollback_complete"], fn: Callable[[RollbackComplete], Any]
    ) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["step_start"], fn: Callable[[StepStart], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["step_complete"], fn: Callable[[StepComplete], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["step_error"], fn: Callable[[StepError], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["step_retry"], fn: Callable[[StepRetry], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["step_skip"], fn: Callable[[StepSkip], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["step_suspend"], fn: Callable[[StepSuspend], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["step_compensate"], fn: Callable[[StepCompensate], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["signal_received"], fn: Callable[[SignalReceived], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: str, fn: Callable[[Event], Any]) -> Unsubscribe: ...
    def on(self, event: str, fn: Callable[[Any], Any]) -> Unsubscribe:
        """Subscribe ``fn`` (sync or async) to an event name, or ``"*"`` for all.

        Returns a function that unsubscribes. Raises ``ValueError`` for an unknown name.
        """
        return self._bus.on(event, fn)

    def register(self, workflow: Workflow[Any] | WorkflowBuilder[Any]) -> Workflow[Any]:
        """Make a workflow version known, so stored runs of it can be resumed here."""
        plan = _as_plan(workflow)
        self._registry.add(plan)
        return plan

    def _policy_for(self, spec: StepSpec) -> RetryPolicy:
        policy = self._policies.get(spec)
        if policy is None:
            policy = spec.retry or self._default_policy
            if spec.retries is not None:
                policy = policy.with_retries(spec.retries)
            self._policies[spec] = policy
        return policy

    def _get_executor(self) -> Executor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="flux-step")
        return self._executor

    # --- running --------------------------------------------------------------------------

    async def execute(
        self,
        workflow: WorkflowLike[InputT],
        input: InputT | Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
    ) -> RunResult:
        """Run ``workflow`` on ``input`` to its end and return the result.

        A failing step does not raise: the result's ``status`` and ``error`` say what happened.

        Raises:
            InvalidInputError: ``input`` does not fit the workflow's input type or validators
                (nothing is stored then).
            InvalidRunStateError: ``run_id`` is already used by a stored run.
        """
        await self.start_engine()
        plan = self.register(workflow)
        typed, raw = plan.codec.accept(input)
        _check_validators(plan, typed)
        if run_id is not None and await self.storage.load(run_id) is not None:
            raise InvalidRunStateError(
                f"run id {run_id!r} is already used; pick another id, or continue that run with "
                "engine.resume(run_id)",
                run_id=run_id,
            )
        now = self.clock.now()
        header = RunRecord(
            id=run_id or uuid.uuid4().hex,
            workflow=plan.name,
            fingerprint=plan.fingerprint,
            status=RunStatus.RUNNING,
            input=raw,
            created_at=now,
            updated_at=now,
            owner=self.owner,
            lease_expires_at=now + self._env.lease,
        )
        return await self._drive(RunDriver(self._env, plan, header, [], typed), 0)

    async def _drive(
        self,
        driver: RunDriver,
        start: int,
        resumed_from: str | None = None,
    ) -> RunResult:
        run_id = driver.header.id
        self._active[run_id] = driver
        self._ensure_heartbeat()
        try:
            return await driver.run(start, resumed_from=resumed_from)
        finally:
            self._active.pop(run_id, None)

    async def get(self, run_id: str) -> RunResult:
        """The stored state of a run. Raises :class:`RunNotFoundError` for an unknown id."""
        return RunResult.from_record(await self._load(run_id))

    async def list(
        self,
        name: str | None = None,
        status: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[RunResult]:
        """Stored runs, newest first, filtered by workflow name and status (one or several)."""
        await self.start_engine()
        runs = await self.storage.list(RunFilter(workflow=name, status=status, limit=limit, offset=offset))
        return [RunResult.from_record(run) for run in runs]

    async def _load(self, run_id: str) -> RunRecord:
        await self.start_engine()
        run = await self.storage.load(run_id)
        if run is None:
            raise RunNotFoundError(
                f"no run with id {run_id!r} is stored; check the id (engine.list() shows runs)",
                run_id=run_id,
            )
        return run

    # --- durability -----------------------------------------------------------------------

    async def resume(self, run_id: str, *, from_step: str | int | None = None) -> RunResult:
        """Continue a run that stopped: after a crash, a failure or a suspension.

        Without ``from_step`` completed steps are skipped and the step that was in flight runs
        again. With ``from_step`` (a name or an index) the run continues from that step, in any
        state, completed included; earlier steps keep their recorded outputs and data.

        Raises:
            RunNotFoundError, UnknownStepError, WorkflowNotRegisteredError, PlanMismatchError,
            InvalidRunStateError (the run is cancelled, or another live process drives it).
        """
        run = await self._load(run_id)
        plan = self._registry.for_run(run)
        start = plan.index_of(from_step) if from_step is not None else None
        if run.status == RunStatus.CANCELLED:
            raise InvalidRunStateError(f"run {run_id} was cancelled; it cannot be resumed", run_id=run_id)
        if start is None and run.status == RunStatus.COMPLETED:
            return RunResult.from_record(run)
        claimed = await self._claim(run)
        if claimed is None:
            raise InvalidRunStateError(
                f"run {run_id} is being driven by {run.owner} (lease until "
                f"{run.lease_expires_at}); wait for it to finish or for its lease to expire",
                run_id=run_id,
            )
        return await self._resume_claimed(plan, claimed, start)

    async def retry_step(self, run_id: str, step_name: str) -> RunResult:
        """Continue a failed (or rolled back) run from ``step_name``.

        Raises:
            InvalidRunStateError: the run did not fail.
        """
        run = await self._load(run_id)
        if run.status not in (RunStatus.FAILED, RunStatus.ROLLED_BACK):
            raise InvalidRunStateError(
                f"run {run_id} is {run.status.value}, not failed; retry_step continues failed "
                "runs (use resume(run_id, from_step=...) to re-run steps of other runs)",
                run_id=run_id,
            )
        return await self.resume(run_id, from_step=step_name)

    async def replay(self, run_id: str) -> RunResult:
        """Execute a finished run again, as a new run, from its recorded history.

        Ordinary steps are not called: their recorded outputs and data changes are applied
        again. Commit steps are called again. Steps the original never finished run normally.
        """
        run = await self._load(run_id)
        if not run.status.finished:
            raise InvalidRunStateError(
                f"run {run_id} is {run.status.value}; only finished runs can be replayed",
                run_id=run_id,
            )
        plan = self._registry.for_run(run)
        now = self.clock.now()
        header = RunRecord(
            id=uuid.uuid4().hex,
            workflow=plan.name,
            fingerprint=plan.fingerprint,
            status=RunStatus.RUNNING,
            input=run.input,
            created_at=now,
            updated_at=now,
            owner=self.owner,
            lease_expires_at=now + self._env.lease,
        )
        driver = RunDriver(self._env, plan, header, [], plan.codec.restore(run.input))
        driver.recorded = latest_visits(run.steps)
        return await self._drive(driver, 0)

    async def recover(self) -> builtins.list[RunResult]:
        """Resume every run a dead process left in flight; returns the resumed runs' results.

        A run whose owner process on this host is gone is taken over at once; one owned on
        another host once its lease expires. Safe to call when nothing is stranded and from
        several processes at once (each run is claimed by exactly one).
        """
        await self.start_engine()
        stranded = await self.storage.list(RunFilter(status=_RECOVERABLE))
        jobs = []
        for run in stranded:
            if run.id in self._active:
                continue
            try:
                plan = self._registry.for_run(run)
            except Exception as exc:
                logger.error("cannot recover run %s: %s", run.id, exc)
                continue
            claimed = await self._claim(run)
            if claimed is not None:
                jobs.append(self._resume_claimed(plan, claimed, None))
        return list(await asyncio.gather(*jobs))

    async def _claim(self, run: RunRecord) -> RunRecord | None:
        now = self.clock.now()
        takeover = run.owner if run.owner and owner_is_dead(run.owner) else None
        return await self.storage.claim(run.id, self.owner, now + self._env.lease, now=now, takeover=takeover)

    async def _resume_claimed(
        self,
        plan: Workflow[Any],
        run: RunRecord,
        start: int | None,
    ) -> RunResult:
        if run.status == RunStatus.ROLLING_BACK and start is None:
            header, start = run, len(plan.steps)  # the driver finishes the rollback
        else:
            header = attrs.evolve(run, status=RunStatus.RUNNING, error=None, finished_at=None)
            start = resume_point(plan, run.steps) if start is None else start
        driver = RunDriver(self._env, plan, header, list(run.steps), plan.codec.restore(run.input))
        from_step = plan.steps[start].name if start < len(plan.steps) else ""
        return await self._drive(driver, start, resumed_from=from_step)

    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        interval = self._env.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            if self._active:
                try:
                    await self.storage.renew(self.owner, self.clock.now() + self._env.lease)
                except Exception:
                    logger.exception("lease heartbeat failed; will try again")


def _as_plan(workflow: Workflow[Any] | WorkflowBuilder[Any]) -> Workflow[Any]:
    if isinstance(workflow, WorkflowBuilder):
        return workflow.build()
    if isinstance(workflow, Workflow):
        return workflow
    raise TypeError(f"expected a Workflow or a builder from create_workflow(), got {workflow!r}")


def _check_validators(plan: Workflow[Any], typed: Any) -> None:
    for check in plan.validators:
        name = getattr(check, "__qualname__", repr(check))
        try:
            ok = check(typed)
        except Exception as exc:
            raise InvalidInputError(
                f"input rejected by validator {name} of workflow {plan.name!r}: {exc}"
            ) from exc
        if ok is False:
            raise InvalidInputError(
                f"input rejected by validator {name} of workflow {plan.name!r}: it returned False "
                f"for {typed!r}"
            )
