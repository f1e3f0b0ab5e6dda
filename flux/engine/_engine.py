"""FluxEngine: runs workflows, stores their runs and tells subscribers what happens."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from flux._duration import to_count, to_seconds, to_timedelta
from flux.builder import WorkflowBuilder, as_workflow
from flux.clock import Clock, SystemClock
from flux.engine import _logs
from flux.engine._children import ChildHost, Children
from flux.engine._control import ControlOps
from flux.engine._driver import EngineContext, RunDriver
from flux.engine._durability import DurabilityOps, recoverable
from flux.engine._logbook import LogLimits
from flux.engine._ownership import new_owner_id
from flux.engine._plans import WorkflowRegistry, check_input, run_header, waits_on_time
from flux.engine._threads import StepThreads
from flux.engine._work import TimeWaits, WorkSource
from flux.errors import (
    InvalidInputError,
    InvalidRunStateError,
    LeaseLostError,
)
from flux.events import EventBus, EventSource
from flux.labels import check_labels
from flux.plan import StepSpec, Workflow
from flux.records import RunRecord
from flux.result import RunResult
from flux.retry import RetryPolicy
from flux.status import RunStatus
from flux.storage.memory import MemoryStorage
from flux.storage.protocol import Storage
from flux.wake import Waker, WakerSource

if TYPE_CHECKING:
    from flux.schedule import Schedule
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

    Durations are seconds or ``timedelta`` values; NaN, infinity, negatives, zero (except for
    ``durable_after``) and more than 100 years raise ``ValueError`` naming the argument, as
    does a ``default_retries`` that is not an int >= 0.
        durable_after: retry delays and sleeps longer than this many seconds are stored as due
            times (the run suspends and a worker wakes it) instead of waiting in memory.
        poll_interval: seconds between looks at storage for work from other processes.
        log_limits: how much of ``ctx.log`` each step visit keeps in its record (default
            ``LogLimits(lines=100, line_bytes=2048)``).
        waker: carries wake-ups (new runs, signals, cancellations, due times) between
            processes, so their workers need not wait for the next poll: a
            :class:`flux.wake.RedisWaker`, say. Default: the storage's own (LISTEN/NOTIFY with
            PostgresStorage), else none.

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
        log_limits: LogLimits | None = None,
        waker: Waker | None = None,
    ) -> None:
        to_count(default_retries, "default_retries", minimum=0)
        default_timeout = to_seconds(default_timeout, "default_timeout")
        lease_time = to_timedelta(lease, "lease")
        durable_after = to_seconds(durable_after, "durable_after", zero=True)
        poll_interval = to_seconds(poll_interval, "poll_interval")
        self.storage: Storage = storage if storage is not None else MemoryStorage()
        self.clock: Clock = clock or SystemClock()
        self.owner = new_owner_id()
        self._bus = EventBus()
        self._registry = WorkflowRegistry()
        self._default_policy = retry_policy or RetryPolicy().with_retries(default_retries)
        self._retry_policy = retry_policy
        self._policies: dict[StepSpec, RetryPolicy] = {}
        self._executor: StepThreads | None = None
        self._started = False
        self._active: dict[str, RunDriver] = {}
        self._reserved: set[str] = set()
        """Runs this engine drives or has claimed to drive: nothing else here may drive them."""
        self._kept: dict[str, asyncio.Event] = {}
        """Runs an ``execute`` keeps while they wait on time; set the event to wake it early."""
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        """The task driving each run in ``_active`` (the caller's own: runs get no task of
        their own, ``cancel`` cancels this one and the run catches it)."""
        self._endings: dict[str, list[asyncio.Future[RunResult | None]]] = {}
        """Who waits for a drive here to end (``_running``), by run id."""
        self._finished: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self.poll_interval = poll_interval
        # The class, not the instance, must offer waker(): a wrapper that forwards any
        # attribute (a test's storage proxy) is no waker source.
        if waker is None and isinstance(self.storage, WakerSource) and hasattr(type(self.storage), "waker"):
            waker = self.storage.waker()
        self.waker = waker
        self._heartbeat: asyncio.Task[None] | None = None
        _logs.attach(self._bus)
        self._env = EngineContext(
            storage=self.storage,
            clock=self.clock,
            bus=self._bus,
            default_timeout=default_timeout,
            policies=self._policy_for,
            executor=self._get_executor,
            owner=self.owner,
            lease=lease_time,
            durable_after=durable_after,
            poll_interval=poll_interval,
            log_limits=log_limits or LogLimits(),
        )
        children = Children(
            ChildHost(
                env=self._env,
                register=self.register,
                drive=self._drive,
                running=self._running,
                labels=self._labels_of,
                resume=self.resume,
                cancel=self.cancel,
                ended=self._ended,
                notify=self.notify,
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
            driving=self._driving,
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
            if self.waker is not None:
                await self.waker.open(self.notify)

    async def close(self) -> None:
        """Stop heartbeats, close storage and let go of abandoned step threads."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._started:
            if self.waker is not None:
                await self.waker.close()
            await self.storage.close()
            self._started = False

    # --- configuration --------------------------------------------------------------------

    def register(self, workflow: Workflow[Any] | WorkflowBuilder[Any]) -> Workflow[Any]:
        """Make a workflow version known, so stored runs of it can be resumed here."""
        plan = as_workflow(workflow)
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
            self._executor = StepThreads(max_workers=32, name="flux-step")
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
        labels: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run ``workflow`` on ``input`` until it ends or waits for something from outside the
        process (a signal, a child run driven elsewhere), and return the result.

        Waits on time (a long retry delay, a sleep) are stored as due times, so another process
        can take the run over if this one dies, but this call keeps the run and continues it
        when due.

        A failing step does not raise: the result's ``status`` and ``error`` say what happened.
        With ``idempotency_key``, a key already used for this workflow within
        ``idempotency_ttl`` returns that run (``result.created`` is False) instead of a new one.
        ``deadline`` (seconds, default the workflow's ``.deadline``) cancels the run if it is
        not finished by then. ``labels`` (str to str, see :func:`flux.labels.check_labels`) are
        stored with the run, returned on ``result.labels`` and copied to its child runs.

        Raises:
            InvalidInputError: ``input`` does not fit the workflow's input type or validators,
                or ``labels`` are not valid, or ``run_id`` is not a non-empty str of at most
                200 printable characters without ``/`` or ``#`` (nothing is stored then).
            InvalidRunStateError: ``run_id`` is already used by a stored run.
            ValueError: ``deadline`` or ``idempotency_ttl`` is not a valid duration.
        """
        plan, typed, header = await self._new_run(
            workflow, input, run_id, deadline, RunStatus.RUNNING, labels
        )
        if run_id is not None or idempotency_key is not None:
            # A generated id never collides: its run is created by its first checkpoint.
            existing = await self._create(header, idempotency_key, idempotency_ttl)
            if existing is not None:
                return RunResult.from_record(await self._load(existing), created=False)
        result = await self._drive(RunDriver(self._env, plan, header, [], typed), 0)
        return await self._keep_waiting(plan, result)

    async def start(
        self,
        workflow: WorkflowLike[InputT],
        input: InputT | Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | timedelta = DEFAULT_IDEMPOTENCY_TTL,
        deadline: float | timedelta | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Store a new ``pending`` run for a worker to drive, and return its id at once.

        Same arguments and errors as :meth:`execute`; a reused idempotency key returns the
        existing run's id. Wait for the end with :meth:`wait_result`.
        """
        _, _, header = await self._new_run(workflow, input, run_id, deadline, RunStatus.PENDING, labels)
        pending = attrs.evolve(header, owner=None, lease_expires_at=None, wake_at=header.created_at)
        existing = await self._create(pending, idempotency_key, idempotency_ttl)
        if existing is not None:
            return existing
        self.notify("run", header.id)
        return header.id

    async def _new_run(
        self,
        workflow: WorkflowLike[Any],
        input: Any,
        run_id: str | None,
        deadline: float | timedelta | None,
        status: RunStatus,
        labels: Mapping[str, str] | None,
    ) -> tuple[Workflow[Any], Any, RunRecord]:
        if run_id is not None:
            _check_run_id(run_id)
        await self.start_engine()
        plan = self.register(workflow)
        typed, raw = check_input(plan, input)
        checked = check_labels(labels)
        header = run_header(
            plan,
            run_id=run_id or os.urandom(16).hex(),
            raw_input=raw,
            now=self.clock.now(),
            owner=self.owner,
            lease=self._env.lease,
            status=status,
            deadline=to_seconds(deadline, "deadline") if deadline is not None else plan.deadline,
            labels=checked,
        )
        return plan, typed, header

    async def _create(self, header: RunRecord, key: str | None, ttl: float | timedelta) -> str | None:
        """Store a new run (and bind ``key``) in one storage operation; the id of the run
        already bound to ``key``, or None when ``header`` was stored."""
        expires = None
        if key is not None:
            if not isinstance(key, str) or not key:
                raise InvalidInputError(f"idempotency_key must be a non-empty str, got {key!r}")
            expires = header.created_at + to_timedelta(ttl, "idempotency_ttl")
        try:
            return await self.storage.create(header, key=key, key_expires_at=expires)
        except InvalidRunStateError:
            raise InvalidRunStateError(
                f"run id {header.id!r} is already used; pick another id, or continue that run "
                "with engine.resume(run_id)",
                run_id=header.id,
            ) from None

    def _driving(self, run_id: str) -> bool:
        """True while this engine drives the run, has claimed it, or keeps it in ``execute``."""
        return run_id in self._reserved or run_id in self._kept

    async def _release(self, run_id: str) -> None:
        """Give up this engine's claim on a run it will not drive."""
        self._reserved.discard(run_id)
        await self.storage.release(run_id, self.owner)

    async def _drive(self, driver: RunDriver, start: int, resumed_from: str | None = None) -> RunResult:
        run_id = driver.header.id
        self._reserved.add(run_id)
        try:
            return await self._drive_reserved(driver, start, resumed_from)
        finally:
            self._reserved.discard(run_id)

    async def _drive_reserved(self, driver: RunDriver, start: int, resumed_from: str | None) -> RunResult:
        # The run is driven in the caller's task: a task of its own would cost two trips
        # through the event loop per run. ``cancel`` cancels this task; the run catches that
        # (it holds the request) and ends cancelled.
        run_id = driver.header.id
        task = asyncio.current_task()
        self._active[run_id] = driver
        if task is not None:
            self._tasks[run_id] = task
        self._ensure_heartbeat()
        result: RunResult | None = None
        try:
            result = await driver.run(start, resumed_from=resumed_from)
        except LeaseLostError as exc:
            _logs.lease_lost(run_id, driver.header.workflow, exc)
            raise
        except asyncio.CancelledError as exc:
            if task is not None and task.cancelling():
                raise  # the caller is being cancelled, not the run: it stays stored as it is
            result = await self._escaped(driver.header, exc)  # a step or subscriber raised it
        except Exception as exc:
            result = await self._escaped(driver.header, exc)
        finally:
            self._active.pop(run_id, None)
            self._tasks.pop(run_id, None)
            for ending in self._endings.pop(run_id, ()):
                if not ending.done():
                    ending.set_result(result)
        self.notify("due" if result.status == RunStatus.SUSPENDED else None, run_id)
        return result

    def _running(self, run_id: str) -> asyncio.Future[RunResult | None] | None:
        """The end of the drive of ``run_id`` going on here (None: none): its result, or None
        when it ended by an exception."""
        if run_id not in self._active:
            return None
        ending: asyncio.Future[RunResult | None] = asyncio.get_running_loop().create_future()
        self._endings.setdefault(run_id, []).append(ending)
        return ending

    def _labels_of(self, run_id: str) -> Mapping[str, str]:
        driver = self._active.get(run_id)
        return driver.header.labels if driver is not None else {}

    def _ended(self, run_id: str) -> None:
        """A run driven here ended: wake whoever waits for its result, and the workers."""
        done = self._finished.pop(run_id, None)
        if done is not None:
            done.set()
        self.notify()

    async def _keep_waiting(self, plan: Workflow[Any], result: RunResult) -> RunResult:
        """``execute``: keep a run that suspended to wait on time and continue it when due, in
        this process, until it ends or waits for something from outside (a signal, a child
        run). The wait is stored (a due time), so another process takes the run over if this
        one dies; meanwhile this engine's own workers leave it alone."""
        run_id = result.id
        while result.status == RunStatus.SUSPENDED:
            woken = self._kept[run_id] = asyncio.Event()  # before looking: a cancel sets it
            try:
                run = await self._load(run_id)
                due = waits_on_time(run)
                if due is None:
                    return result  # it waits for something from outside the process
                if not run.cancel_requested:
                    await _sleep_until(self.clock, due, woken)
                    run = await self._load(run_id)
            finally:
                del self._kept[run_id]
            if run.cancel_requested and not run.status.finished:
                request = run.cancel_requested
                reason, compensate = (
                    str(request.get("reason") or "cancelled"),
                    bool(request.get("compensate")),
                )
                return await self.cancel(run_id, reason, compensate=compensate)
            if run.status != RunStatus.SUSPENDED:
                return RunResult.from_record(run)  # it ended, or another process took it on
            if not recoverable(run, self.clock.now()):
                result = RunResult.from_record(run)  # not due (resumed here meanwhile): wait on
                continue
            claimed = await self._claim(run)
            if claimed is None:
                return RunResult.from_record(run)  # another process drives it now
            result = await self._resume_claimed(plan, claimed, None)
        return result

    def notify(self, reason: str | None = None, run_id: str | None = None) -> None:
        """Wake this engine's workers: new work may be due (called on start, signal, time moves).

        With a ``reason`` (``run``, ``signal``, ``cancel``, ``due``) the waker also tells the
        workers of other processes about ``run_id``.
        """
        self._wake.set()
        if reason is not None and run_id is not None and self.waker is not None:
            self.waker.publish(reason, run_id)

    def worker(
        self, *, concurrency: int = 10, grace_period: float = 30.0, schedules: Iterable[Schedule] = ()
    ) -> Worker:
        """A :class:`Worker` driving this engine's pending, due and orphaned runs, and firing
        ``schedules`` (cron :class:`~flux.Schedule` objects)."""
        from flux.worker import Worker

        return Worker(self, concurrency=concurrency, grace_period=grace_period, schedules=schedules)

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
                    lease = self.clock.now() + self._env.lease
                    await self.storage.renew(self.owner, lease, list(self._active))
                    await self.check_cancel_requests()
                except Exception:
                    logger.exception("lease heartbeat failed; will try again")


MAX_RUN_ID = 200
"""The longest run id a caller may choose (flux derives longer ids for child runs)."""


def _check_run_id(run_id: object) -> None:
    """Refuse a run id that is not a short, printable str free of child-id characters."""
    if (
        not isinstance(run_id, str)
        or not 0 < len(run_id) <= MAX_RUN_ID
        or not run_id.isprintable()
        or "/" in run_id
        or "#" in run_id
    ):
        raise InvalidInputError(
            f"run_id must be a non-empty str of at most {MAX_RUN_ID} printable characters "
            f"without '/' or '#' (flux uses those in child run ids), got {run_id!r}; pass "
            "run_id=None for a generated id"
        )


async def _sleep_until(clock: Clock, due: datetime, woken: asyncio.Event) -> None:
    """Sleep on ``clock`` until ``due``, or until ``woken`` is set."""
    sleeper = asyncio.ensure_future(clock.sleep(max(0.0, (due - clock.now()).total_seconds())))
    waker = asyncio.ensure_future(woken.wait())
    try:
        await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        waker.cancel()
