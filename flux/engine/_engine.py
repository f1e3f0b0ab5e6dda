"""FluxEngine: runs workflows, stores their runs and tells subscribers what happens."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from flux.builder import WorkflowBuilder
from flux.clock import Clock, SystemClock
from flux.engine._children import ChildHost, Children
from flux.engine._control import ControlOps
from flux.engine._driver import EngineContext, RunDriver
from flux.engine._durability import DurabilityOps
from flux.engine._ownership import new_owner_id
from flux.engine._plans import WorkflowRegistry, check_input, run_header
from flux.engine._work import TimeWaits, WorkSource
from flux.errors import (
    InvalidInputError,
    InvalidRunStateError,
    RunNotFoundError,
)
from flux.events import EventBus, EventSource
from flux.plan import StepSpec, Workflow
from flux.records import RunFilter, RunRecord
from flux.result import RunResult
from flux.retry import RetryPolicy
from flux.status import RunStatus
from flux.storage.memory import MemoryStorage
from flux.storage.protocol import Storage

if TYPE_CHECKING:
    from flux.worker import Worker

logger = logging.getLogger("flux.engine")

InputT = TypeVar("InputT")
WorkflowLike = Workflow[InputT] | WorkflowBuilder[InputT]
DEFAULT_IDEMPOTENCY_TTL = timedelta(hours=24)


class FluxEngine(EventSource, DurabilityOps, ControlOps):
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
        durable_after: retry delays and sleeps longer than this many seconds are stored as due
            times (the run suspends and a worker wakes it) instead of waiting in memory.
        poll_interval: seconds between looks at storage for work from other processes.

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
        durable_after: float = 5.0,
        poll_interval: float = 0.25,
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
        self._default_policy = retry_policy or RetryPolicy().with_retries(default_retries)
        self._retry_policy = retry_policy
        self._policies: dict[StepSpec, RetryPolicy] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._started = False
        self._active: dict[str, RunDriver] = {}
        self._tasks: dict[str, asyncio.Task[RunResult]] = {}
        self._finished: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self.poll_interval = poll_interval
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
            durable_after=durable_after,
            poll_interval=poll_interval,
        )
        children = Children(
            ChildHost(
                env=self._env,
                register=self.register,
                drive=self._drive,
                running=self._running,
                resume=self.resume,
                cancel=self.cancel,
                ended=self._ended,
            )
        )
        self._env.hooks = children
        self._env.children = children.run_child
        self._waits = TimeWaits(self.clock)
        self.work = WorkSource(
            clock=self.clock,
            waits=self._waits,
            wake=self._wake,
            poll_interval=poll_interval,
            driving=self._active.__contains__,
            plan_for=self._registry.for_run,
            claim=self._claim,
            drive=self._resume_claimed,
            release=self._release,
        )
        """The engine as workers see it (an internal interface: :class:`~flux.Worker` uses it)."""
        subscribe = getattr(self.clock, "subscribe", None)
        if callable(subscribe):  # a FakeClock wakes workers when the test moves time
            subscribe(self.notify)
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
        idempotency_key: str | None = None,
        idempotency_ttl: float | timedelta = DEFAULT_IDEMPOTENCY_TTL,
        deadline: float | timedelta | None = None,
    ) -> RunResult:
        """Run ``workflow`` on ``input`` until it ends or suspends, and return the result.

        A failing step does not raise: the result's ``status`` and ``error`` say what happened.
        With ``idempotency_key``, a key already used for this workflow within
        ``idempotency_ttl`` returns that run (``result.created`` is False) instead of a new one.
        ``deadline`` (seconds, default the workflow's ``.deadline``) cancels the run if it is
        not finished by then.

        Raises:
            InvalidInputError: ``input`` does not fit the workflow's input type or validators
                (nothing is stored then).
            InvalidRunStateError: ``run_id`` is already used by a stored run.
        """
        plan, typed, header = await self._new_run(workflow, input, run_id, deadline, RunStatus.RUNNING)
        existing = await self._reserve(plan, idempotency_key, idempotency_ttl, header)
        if existing is not None:
            return RunResult.from_record(await self._load(existing), created=False)
        return await self._drive(RunDriver(self._env, plan, header, [], typed), 0)

    async def start(
        self,
        workflow: WorkflowLike[InputT],
        input: InputT | Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | timedelta = DEFAULT_IDEMPOTENCY_TTL,
        deadline: float | timedelta | None = None,
    ) -> str:
        """Store a new ``pending`` run for a worker to drive, and return its id at once.

        Same arguments and errors as :meth:`execute`; a reused idempotency key returns the
        existing run's id. Wait for the end with :meth:`wait_result`.
        """
        plan, _, header = await self._new_run(workflow, input, run_id, deadline, RunStatus.PENDING)
        existing = await self._reserve(plan, idempotency_key, idempotency_ttl, header)
        if existing is not None:
            return existing
        await self.storage.save(
            attrs.evolve(header, owner=None, lease_expires_at=None, wake_at=header.created_at)
        )
        self.notify()
        return header.id

    async def _new_run(
        self,
        workflow: WorkflowLike[Any],
        input: Any,
        run_id: str | None,
        deadline: float | timedelta | None,
        status: RunStatus,
    ) -> tuple[Workflow[Any], Any, RunRecord]:
        await self.start_engine()
        plan = self.register(workflow)
        typed, raw = check_input(plan, input)
        if run_id is not None and await self.storage.load(run_id) is not None:
            raise InvalidRunStateError(
                f"run id {run_id!r} is already used; pick another id, or continue that run with "
                "engine.resume(run_id)",
                run_id=run_id,
            )
        header = run_header(
            plan,
            run_id=run_id or uuid.uuid4().hex,
            raw_input=raw,
            now=self.clock.now(),
            owner=self.owner,
            lease=self._env.lease,
            status=status,
            deadline=_seconds(deadline) if deadline is not None else plan.deadline,
        )
        return plan, typed, header

    async def _reserve(
        self, plan: Workflow[Any], key: str | None, ttl: float | timedelta, header: RunRecord
    ) -> str | None:
        if key is None:
            return None
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"idempotency_key must be a non-empty str, got {key!r}")
        now = self.clock.now()
        expires = now + timedelta(seconds=_seconds(ttl))
        # Store the run (not yet due) before binding the key: a concurrent caller with the same
        # key then finds a stored run behind the binding and returns it instead of a second run.
        await self.storage.save(attrs.evolve(header, wake_at=None))
        existing = await self.storage.reserve_key(plan.name, key, header.id, expires, now)
        if existing is not None:
            await self.storage.delete(header.id)
        return existing

    async def _drive(self, driver: RunDriver, start: int, resumed_from: str | None = None) -> RunResult:
        run_id = driver.header.id
        task = asyncio.get_running_loop().create_task(driver.run(start, resumed_from=resumed_from))
        self._active[run_id] = driver
        self._tasks[run_id] = task
        self._ensure_heartbeat()
        try:
            result = await task
        finally:
            self._active.pop(run_id, None)
            self._tasks.pop(run_id, None)
        self.notify()
        return result

    def _running(self, run_id: str) -> asyncio.Task[RunResult] | None:
        return self._tasks.get(run_id) if run_id in self._active else None

    async def _release(self, run_id: str) -> None:
        await self.storage.release(run_id, self.owner)

    def _ended(self, run_id: str) -> None:
        """A run driven here ended: wake whoever waits for its result, and the workers."""
        done = self._finished.pop(run_id, None)
        if done is not None:
            done.set()
        self.notify()

    def notify(self) -> None:
        """Wake this engine's workers: new work may be due (called on start, signal, time moves)."""
        self._wake.set()

    async def wait_result(self, run_id: str, timeout: float | None = None) -> RunResult:
        """Wait until the run has finished (completed, failed, rolled back or cancelled).

        Runs driven in this process are noticed at once; runs driven elsewhere within
        ``poll_interval``. Raises ``TimeoutError`` after ``timeout`` seconds and
        :class:`RunNotFoundError` for an unknown id. Both times are measured on the engine's
        clock (a ``FakeClock`` moves them in tests).
        """
        run = await self._load(run_id)  # a finished run is returned even with timeout=0
        if run.status.finished:
            return RunResult.from_record(run)
        async with self.clock.timeout(timeout):
            while True:
                run = await self._load(run_id)
                if run.status.finished:
                    return RunResult.from_record(run)
                done = self._finished.setdefault(run_id, asyncio.Event())
                await self._waits.wait(done, self.poll_interval)

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

    def worker(self, *, concurrency: int = 10, grace_period: float = 30.0) -> Worker:
        """A :class:`Worker` driving this engine's pending, due and orphaned runs."""
        from flux.worker import Worker

        return Worker(self, concurrency=concurrency, grace_period=grace_period)

    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        interval = self._env.lease.total_seconds() / 3
        never = asyncio.Event()
        while True:
            await self._waits.wait(never, interval)  # on the engine's clock
            if self._active:
                try:
                    await self.storage.renew(self.owner, self.clock.now() + self._env.lease)
                    await self.check_cancel_requests()
                except Exception:
                    logger.exception("lease heartbeat failed; will try again")


def _as_plan(workflow: Workflow[Any] | WorkflowBuilder[Any]) -> Workflow[Any]:
    if isinstance(workflow, WorkflowBuilder):
        return workflow.build()
    if isinstance(workflow, Workflow):
        return workflow
    raise TypeError(f"expected a Workflow or a builder from create_workflow(), got {workflow!r}")


def _seconds(value: float | timedelta) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not seconds > 0:
        raise ValueError(f"expected a positive duration in seconds, got {value!r}")
    return seconds
