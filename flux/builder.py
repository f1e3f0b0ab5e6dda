"""The chainable builder: ``create_workflow(name).input(T).step(...).commit(...).build()``.

Each method returns a new builder and leaves the old one as it was, so a builder can be shared
and extended safely. Steps are checked as they are added; the plan as a whole on ``build()``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from flux.errors import DuplicateStepError, InvalidStepError
from flux.plan import StepSpec, Workflow, check_name, validate_step
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
    ) -> WorkflowBuilder[InputT]:
        """Append a step.

        Args:
            name: unique within the workflow.
            handler: sync or async callable taking a ``StepContext``; its non-None return
                value is the step's output.
            retries: retries after the first attempt (overrides the policy's attempt count).
            timeout: seconds each attempt may take.
            when: predicate on the context; false skips the step (evaluated once, recorded).
            retry: the backoff policy (else the engine's).
            compensate: undoes the step if a later step fails for good.
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
    ) -> WorkflowBuilder[InputT]:
        """Append a commit step: an irreversible side effect (send, charge, publish).

        Commit steps take no ``compensate`` and are called again by ``engine.replay``.
        """
        return self._add(
            kind="commit",
            name=name,
            handler=handler,
            retries=retries,
            timeout=timeout,
            when=when,
            retry=retry,
        )

    def wait_for_signal(
        self, name: str, signal: str | None = None, timeout: float | timedelta | None = None
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
            wait_timeout=None if timeout is None else _seconds(timeout),
        )

    def sleep(self, name: str, duration: float | timedelta) -> WorkflowBuilder[InputT]:
        """Append a durable timer: the run waits ``duration`` (seconds or a timedelta)."""
        return self._add(kind="sleep", name=name, handler=_no_handler, duration=_seconds(duration))

    def sleep_until(
        self, name: str, until: Callable[[StepContext[InputT]], datetime]
    ) -> WorkflowBuilder[InputT]:
        """Append a durable timer that waits until ``until(ctx)`` (an aware datetime)."""
        return self._add(kind="sleep", name=name, handler=_no_handler, until=until)

    def deadline(self, seconds: float | timedelta) -> WorkflowBuilder[InputT]:
        """Cancel runs still unfinished ``seconds`` after they were created (even suspended ones)."""
        return attrs.evolve(self, deadline=_seconds(seconds))

    def _add(self, *, name: str, handler: Any, **options: Any) -> WorkflowBuilder[InputT]:
        check_name(name, "step")
        if any(spec.name == name for spec in self._steps):
            raise DuplicateStepError(
                f"workflow {self.name!r} already has a step named {name!r}; step names must be unique"
            )
        if options.get("timeout") is not None:
            options["timeout"] = float(options["timeout"])
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


def _no_handler(ctx: Any) -> None:
    """Wait and sleep steps have no code of their own."""


def _seconds(value: float | timedelta) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidStepError(f"expected seconds (a number) or a timedelta, got {value!r}")
    return float(value)
