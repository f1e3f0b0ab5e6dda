"""The chainable builder: ``create_workflow(name).input(T).step(...).commit(...).build()``.

Each method returns a new builder and leaves the old one as it was, so a builder can be shared
and extended safely. Steps are checked as they are added; the plan as a whole on ``build()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from flux._builder_constructs import (
    branch_options,
    child_options,
    map_options,
    parallel_options,
    routing_options,
)
from flux._duration import to_seconds
from flux._spec import StepSpec, check_name, validate_step
from flux.errors import DuplicateStepError, InvalidStepError
from flux.plan import Workflow
from flux.retry import RetryPolicy

if TYPE_CHECKING:
    from flux.context import StepContext

InputT = TypeVar("InputT")
NewInputT = TypeVar("NewInputT")

Handler = Callable[["StepContext[InputT]"], Any]
"""A step handler: a sync or async callable taking a StepContext."""


@attrs.frozen(kw_only=True)
class WorkflowBuilder(Generic[InputT]):
    """Collects steps; :meth:`build` turns them into an immutable :class:`Workflow`."""

    name: str = attrs.field(validator=lambda _, __, value: check_name(value, "workflow"))
    _steps: tuple[StepSpec, ...] = ()
    _input_type: type[Any] | None = None
    _validators: tuple[Callable[[Any], Any], ...] = ()
    _deadline: float | None = None

    @property
    def step_count(self) -> int:
        """How many steps the builder holds."""
        return len(self._steps)

    def input(self, kind: type[NewInputT]) -> WorkflowBuilder[NewInputT]:
        """Declare the input type (a dataclass, an attrs class or a TypedDict).

        ``ctx.input`` is then a ``kind`` in every handler, for the type checker and at run
        time; ``execute`` accepts a ``kind`` or a dict of its fields.
        """
        if not isinstance(kind, type):
            raise InvalidStepError(f".input() takes a class (dataclass, attrs, TypedDict), got {kind!r}")
        return WorkflowBuilder(
            name=self.name,
            steps=self._steps,
            input_type=kind,
            validators=self._validators,
            deadline=self._deadline,
        )

    def validate(self, check: Callable[[InputT], Any]) -> WorkflowBuilder[InputT]:
        """Add an input check: it may return False or raise to reject the input.

        A rejected input makes ``execute`` raise ``InvalidInputError`` before anything is stored.
        """
        if not callable(check):
            raise InvalidStepError(f".validate() takes a callable, got {check!r}")
        return attrs.evolve(self, validators=(*self._validators, check))

    def step(
        self,
        name: str,
        handler: Handler[InputT],
        *,
        retries: int | None = None,
        timeout: float | None = None,
        when: Callable[[StepContext[InputT]], Any] | None = None,
        retry: RetryPolicy | None = None,
        compensate: Handler[InputT] | None = None,
        after: Iterable[str] | None = None,
        on_failure: str | None = None,
        max_visits: int | None = None,
        goto: Iterable[str] | None = None,
    ) -> WorkflowBuilder[InputT]:
        """Append a step.

        Args:
            name: unique within the workflow (branches included).
            handler: sync or async callable taking a ``StepContext``; its non-None return
                value is the step's output. It may return ``flux.goto(step)`` to continue at
                another step of its chain, or ``flux.wait(signal)`` to suspend.
            retries: retries after the first attempt (overrides the policy's attempt count).
            timeout: seconds each attempt may take.
            when: predicate on the context; false skips the step (evaluated once, recorded).
            retry: the backoff policy (else the engine's).
            compensate: undoes the step if a later step fails for good.
            after: the steps this one waits for; using it anywhere makes the plan a dependency
                graph, where a step without ``after`` waits for the step before it and
                ``after=[]`` starts at once.
            on_failure: a step of the same chain to continue at when this one fails for good
                (it sees the error as ``ctx.failure``) instead of failing the run.
            max_visits: how often the step may be reached in one run (default 100).
            goto: the steps the handler may jump to with ``flux.goto`` (checked when the plan
                is built, drawn by ``to_mermaid``); None lets it jump to any step of its chain.
        """
        return self._add(
            kind="step",
            name=name,
            handler=handler,
            retries=retries,
            timeout=timeout,
            when=when,
            retry=retry,
            compensate=compensate,
            **routing_options(after, on_failure, max_visits, goto),
        )

    def commit(
        self,
        name: str,
        handler: Handler[InputT],
        *,
        retries: int | None = None,
        timeout: float | None = None,
        when: Callable[[StepContext[InputT]], Any] | None = None,
        retry: RetryPolicy | None = None,
        after: Iterable[str] | None = None,
        on_failure: str | None = None,
        max_visits: int | None = None,
        goto: Iterable[str] | None = None,
        compensate: None = None,
    ) -> WorkflowBuilder[InputT]:
        """Append a commit step: an irreversible side effect (send, charge, publish).

        Commit steps are called again by ``engine.replay``. ``after``, ``on_failure``,
        ``max_visits`` and ``goto`` as for :meth:`step`.

        Raises:
            InvalidStepError: given ``compensate=``: a commit step cannot be undone (use
                :meth:`step` for an effect that can), or any mistake :meth:`step` refuses.
        """
        return self._add(
            kind="commit",
            name=name,
            handler=handler,
            retries=retries,
            timeout=timeout,
            when=when,
            retry=retry,
            compensate=compensate,
            **routing_options(after, on_failure, max_visits, goto),
        )

    def wait_for_signal(
        self,
        name: str,
        signal: str | None = None,
        timeout: float | timedelta | None = None,
        *,
        after: Iterable[str] | None = None,
    ) -> WorkflowBuilder[InputT]:
        """Append a step that suspends the run until ``signal`` (default: the step name) arrives.

        The signal's payload becomes the step's output. With ``timeout`` (seconds or a
        timedelta) the step fails with ``WaitTimeoutError`` if no signal came in time.
        """
        return self._add(
            kind="wait",
            name=name,
            handler=_no_handler,
            signal=signal or name,
            wait_timeout=None if timeout is None else _seconds(timeout, f"step {name!r}: timeout"),
            **routing_options(after, None, None),
        )

    def sleep(
        self, name: str, duration: float | timedelta, *, after: Iterable[str] | None = None
    ) -> WorkflowBuilder[InputT]:
        """Append a durable timer: the run waits ``duration`` (seconds or a timedelta)."""
        return self._add(
            kind="sleep",
            name=name,
            handler=_no_handler,
            duration=_seconds(duration, f"step {name!r}: sleep duration", zero=True),
            **routing_options(after, None, None),
        )

    def sleep_until(
        self, name: str, until: Callable[[StepContext[InputT]], datetime]
    ) -> WorkflowBuilder[InputT]:
        """Append a durable timer that waits until ``until(ctx)`` (an aware datetime)."""
        return self._add(kind="sleep", name=name, handler=_no_handler, until=until)

    def parallel(
        self,
        name: str,
        *branches: WorkflowBuilder[Any] | Workflow[Any],
        fail_fast: bool = True,
        concurrency: int | None = None,
        after: Iterable[str] | None = None,
        on_failure: str | None = None,
        max_visits: int | None = None,
    ) -> WorkflowBuilder[InputT]:
        """Append a parallel group: the branches run at the same time, each its steps in order.

        Each branch is a chain: ``create_workflow("branch-name").step(...)...``. Branch names
        are unique within the group, step names across the whole plan; each branch step's
        output is in ``ctx.outputs`` under its own name, and the group's output is
        ``{branch: output of its last step}``. The group finishes when every branch has.
        When a branch fails for good, ``fail_fast`` cancels the others at once; without it
        they finish first, then the group fails. ``concurrency`` caps the branches running at
        once (default: all).

        >>> from flux import create_workflow
        >>> wf = create_workflow("w").parallel(
        ...     "fetch",
        ...     create_workflow("a").step("fetch-a", lambda ctx: 1),
        ...     create_workflow("b").step("fetch-b", lambda ctx: 2),
        ... ).build()
        >>> wf.step_names
        ('fetch',)
        """
        return self._add(
            name=name,
            handler=_no_handler,
            **parallel_options(name, branches, fail_fast, concurrency),
            **routing_options(after, on_failure, max_visits),
        )

    def map(
        self,
        name: str,
        fn: Callable[[StepContext[InputT], Any], Any],
        *,
        over: Callable[[StepContext[InputT]], Any],
        concurrency: int | None = 10,
        batch_size: int | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        after: Iterable[str] | None = None,
        on_failure: str | None = None,
        max_visits: int | None = None,
    ) -> WorkflowBuilder[InputT]:
        """Append a dynamic map: ``fn(ctx, item)`` (sync or async) for each item of ``over(ctx)``.

        ``over`` is evaluated once and its list recorded, so a resumed run maps the same
        items. Each item (or each batch of ``batch_size`` items) is a recorded visit of its
        own, named ``name[i]`` (``name[i:j]`` for a batch), with the step's ``retries``,
        ``timeout`` and ``retry`` policy; finished items are never run again. At most
        ``concurrency`` items run at once (None: all). The step's output is the list of
        results in input order.
        """
        return self._add(
            name=name,
            handler=_no_handler,
            retries=retries,
            timeout=timeout,
            retry=retry,
            **map_options(name, fn, over, concurrency, batch_size),
            **routing_options(after, on_failure, max_visits),
        )

    def branch(
        self,
        name: str,
        *,
        on: Callable[[StepContext[InputT]], Any],
        cases: Mapping[str, WorkflowBuilder[Any] | Workflow[Any]],
        default: WorkflowBuilder[Any] | Workflow[Any] | None = None,
        after: Iterable[str] | None = None,
        on_failure: str | None = None,
        max_visits: int | None = None,
    ) -> WorkflowBuilder[InputT]:
        """Append a branch: run the chain of ``cases`` whose key ``on(ctx)`` returns.

        The key is evaluated once and recorded, so a resumed run takes the same branch. A key
        with no case runs ``default``; without a default the step fails with a ``KeyError``.
        The step's output is the key.
        """
        return self._add(
            name=name,
            handler=_no_handler,
            **branch_options(name, on, cases, default),
            **routing_options(after, on_failure, max_visits),
        )

    def child(
        self,
        name: str,
        workflow: WorkflowBuilder[Any] | Workflow[Any],
        *,
        input: Callable[[StepContext[InputT]], Any] | None = None,
        timeout: float | None = None,
        after: Iterable[str] | None = None,
        on_failure: str | None = None,
        max_visits: int | None = None,
    ) -> WorkflowBuilder[InputT]:
        """Append a child-workflow step: run ``workflow`` on ``input(ctx)`` as a durable child run.

        The child is a run of its own in storage, with an id derived from this run and step,
        so a resumed parent finds the same child. The parent waits (suspended, if the child
        suspends) until the child ends. The step's output is ``{"run_id", "status",
        "outputs"}`` of the child; a child that does not complete fails the step with
        ``ChildWorkflowError``. ``timeout`` bounds how long the child is driven inline.
        """
        return self._add(
            name=name,
            timeout=timeout,
            **child_options(name, workflow, input),
            **routing_options(after, on_failure, max_visits),
        )

    def deadline(self, seconds: float | timedelta) -> WorkflowBuilder[InputT]:
        """Cancel runs still unfinished ``seconds`` after they were created (even suspended ones)."""
        return attrs.evolve(self, deadline=_seconds(seconds, f"workflow {self.name!r}: deadline"))

    def _add(self, *, name: str, handler: Any, **options: Any) -> WorkflowBuilder[InputT]:
        check_name(name, "step")
        if any(spec.name == name for spec in self._steps):
            raise DuplicateStepError(
                f"workflow {self.name!r} already has a step named {name!r}; step names must be unique"
            )
        timeout = options.get("timeout")
        if timeout is not None:
            options["timeout"] = _seconds(timeout, f"step {name!r}: timeout")
        spec = validate_step(StepSpec(name=name, handler=handler, **options))
        return attrs.evolve(self, steps=(*self._steps, spec))

    def build(self) -> Workflow[InputT]:
        """Validate the whole plan and return it, frozen.

        Raises:
            PlanError: a subclass saying what is wrong and how to fix it.
        """
        return Workflow(
            name=self.name,
            steps=self._steps,
            input_type=self._input_type,
            validators=self._validators,
            deadline=self._deadline,
        )

    def describe(self) -> dict[str, Any]:
        """``build().describe()``."""
        return self.build().describe()


def create_workflow(name: str) -> WorkflowBuilder[Any]:
    """Start a workflow definition.

    >>> wf = create_workflow("hello").step("greet", lambda ctx: "hi").build()
    >>> wf.step_names
    ('greet',)
    """
    return WorkflowBuilder(name=name)


def as_workflow(workflow: Workflow[Any] | WorkflowBuilder[Any]) -> Workflow[Any]:
    """``workflow`` built if it is a builder, as it is if it is a :class:`Workflow`.

    Raises:
        TypeError: it is neither.
    """
    if isinstance(workflow, WorkflowBuilder):
        return workflow.build()
    if isinstance(workflow, Workflow):
        return workflow
    raise TypeError(f"expected a Workflow or a builder from create_workflow(), got {workflow!r}")


def _no_handler(ctx: Any) -> None:
    """Wait and sleep steps have no code of their own."""


def _seconds(value: float | timedelta, name: str, *, zero: bool = False) -> float:
    return to_seconds(value, name, error=InvalidStepError, zero=zero)
