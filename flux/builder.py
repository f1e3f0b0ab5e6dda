"""The chainable builder: ``create_workflow(name).input(T).step(...).commit(...).build()``.

Each method returns a new builder and leaves the old one as it was, so a builder can be shared
and extended safely. Steps are checked as they are added; the plan as a whole on ``build()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from flux.errors import DuplicateStepError, InvalidStepError
from flux.plan import StepKind, StepSpec, Workflow, check_name, validate_step
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
            name=self.name, steps=self._steps, input_type=kind, validators=self._validators
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
        return self._add("step", name, handler, retries, timeout, when, retry, compensate)

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
        return self._add("commit", name, handler, retries, timeout, when, retry, None)

    def _add(
        self,
        kind: StepKind,
        name: str,
        handler: Any,
        retries: int | None,
        timeout: float | None,
        when: Any,
        retry: RetryPolicy | None,
        compensate: Any,
    ) -> WorkflowBuilder[InputT]:
        check_name(name, "step")
        if any(spec.name == name for spec in self._steps):
            raise DuplicateStepError(
                f"workflow {self.name!r} already has a step named {name!r}; step names must be unique"
            )
        spec = validate_step(
            StepSpec(
                name=name,
                handler=handler,
                kind=kind,
                retries=retries,
                timeout=None if timeout is None else float(timeout),
                retry=retry,
                when=when,
                compensate=compensate,
            )
        )
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
