"""Mocks and spies for ``run_workflow``: a copy of a plan whose handlers report their calls.

Every handler of a ``step`` or ``commit`` step is wrapped in a spy that records the context it
was called with (:class:`StepCall`); a mocked step's handler is replaced first. The copy keeps
the plan's name, steps and structure, so the run is the run of the real plan with other code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from flux.constructs import BranchSpec, Chain, ParallelSpec
from flux.plan import StepSpec, Workflow, is_async_callable
from flux.records import JSON
from flux.serde import copy_json

_HANDLED = ("step", "commit")


@attrs.frozen(kw_only=True)
class StepCall:
    """One call of a step's handler, as ``WorkflowTest.calls(step)`` returns it.

    Attributes:
        step: the step's name.
        attempt: 1 for the first attempt, 2 for the first retry...
        input: ``ctx.input`` (the typed input).
        data: a copy of ``ctx.data`` as the handler received it.
        run_id: the run's id.
    """

    step: str
    attempt: int
    input: Any
    data: dict[str, JSON]
    run_id: str


class CallJournal:
    """The calls the spies saw, and how many sync handlers are running in their threads now."""

    def __init__(self) -> None:
        self.calls: dict[str, list[StepCall]] = {}
        self.progress = 0
        """Grows whenever a handler starts or returns: the run is moving."""
        self.sync_running = 0
        self.async_running = 0
        self._lock = threading.Lock()

    def record(self, ctx: Any) -> None:
        data = {key: dict.__getitem__(ctx.data, key) for key in dict.keys(ctx.data)}
        call = StepCall(
            step=ctx.step, attempt=ctx.attempt, input=ctx.input, data=copy_json(data), run_id=ctx.run_id
        )
        with self._lock:
            self.calls.setdefault(ctx.step, []).append(call)
            self.progress += 1

    def _sync(self, delta: int) -> None:
        with self._lock:
            self.sync_running += delta
            self.progress += 1

    def spy(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` wrapped so that each call is recorded; async stays async, sync stays sync."""
        if is_async_callable(fn):

            async def async_spy(ctx: Any) -> Any:
                self.record(ctx)
                self.async_running += 1
                try:
                    return await fn(ctx)
                finally:
                    self.async_running -= 1
                    self.progress += 1

            return async_spy

        def sync_spy(ctx: Any) -> Any:
            self._sync(+1)
            try:
                self.record(ctx)
                return fn(ctx)
            finally:
                self._sync(-1)

        return sync_spy


def mock_handler(step: str, mock: object) -> Callable[..., Any]:
    """The handler standing in for ``step``: a callable as it is, an exception raised, a value returned.

    Raises:
        TypeError: ``mock`` is an exception class (an instance is needed).
    """
    if isinstance(mock, type) and issubclass(mock, BaseException):
        raise TypeError(
            f"mocks[{step!r}] is the exception class {mock.__name__}; pass an instance, "
            f"{mock.__name__}('...'), to make the step raise it"
        )
    if isinstance(mock, BaseException):
        error = mock

        async def raises(ctx: Any) -> Any:
            raise error.with_traceback(None)

        return raises
    if callable(mock):
        return mock
    value = copy_json(mock)

    async def returns(ctx: Any) -> Any:
        return copy_json(value)

    return returns


def instrument(workflow: Workflow[Any], mocks: Mapping[str, object], journal: CallJournal) -> Workflow[Any]:
    """A copy of ``workflow`` with ``mocks`` in place and every handler spied on.

    Raises:
        ValueError: a mocked step is not in the plan, or is a wait, sleep or construct step.
    """
    for name in mocks:
        spec = workflow.find(name)
        if spec is None:
            known = ", ".join(sorted(workflow.shape.specs))
            raise ValueError(
                f"mocks names step {name!r}, which workflow {workflow.name!r} lacks; its steps: {known}"
            )
        if spec.kind not in (*_HANDLED, "child"):
            raise ValueError(
                f"mocks[{name!r}]: step {name!r} is a {spec.kind} step, which has no handler to replace; "
                + (
                    "send its signal with signals= instead"
                    if spec.kind == "wait"
                    else "mock the steps inside it"
                )
            )
    steps = _rewrite(workflow.steps, mocks, journal)
    return Workflow(
        name=workflow.name,
        steps=steps,
        input_type=workflow.input_type,
        validators=workflow.validators,
        deadline=workflow.deadline,
    )


def _rewrite(
    steps: tuple[StepSpec, ...], mocks: Mapping[str, object], journal: CallJournal
) -> tuple[StepSpec, ...]:
    return tuple(_rewrite_one(spec, mocks, journal) for spec in steps)


def _rewrite_one(spec: StepSpec, mocks: Mapping[str, object], journal: CallJournal) -> StepSpec:
    if spec.name in mocks:
        handler = journal.spy(mock_handler(spec.name, mocks[spec.name]))
        kind = "step" if spec.kind == "child" else spec.kind
        return attrs.evolve(
            spec, handler=handler, kind=kind, construct=None, is_async=is_async_callable(handler)
        )
    if spec.kind in _HANDLED:
        handler = journal.spy(spec.handler)
        return attrs.evolve(spec, handler=handler, is_async=is_async_callable(handler))
    construct = spec.construct
    if isinstance(construct, ParallelSpec):
        branches = tuple(_chain(chain, mocks, journal) for chain in construct.branches)
        return attrs.evolve(spec, construct=attrs.evolve(construct, branches=branches))
    if isinstance(construct, BranchSpec):
        cases = tuple((label, _chain(chain, mocks, journal)) for label, chain in construct.cases)
        default = None if construct.default is None else _chain(construct.default, mocks, journal)
        return attrs.evolve(spec, construct=attrs.evolve(construct, cases=cases, default=default))
    return spec


def _chain(chain: Chain, mocks: Mapping[str, object], journal: CallJournal) -> Chain:
    return attrs.evolve(chain, steps=_rewrite(chain.steps, mocks, journal))
