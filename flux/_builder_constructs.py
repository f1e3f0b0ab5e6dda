"""Turn the arguments of ``.parallel``, ``.map``, ``.branch`` and ``.child`` into step options.

Each function checks its arguments and returns the keyword options of a :class:`StepSpec`,
with a message that says how to fix a mistake.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from flux._spec import check_arity
from flux.constructs import DEFAULT_CASE, BranchSpec, Chain, ChildSpec, MapSpec, ParallelSpec
from flux.errors import InvalidStepError
from flux.plan import Workflow


@runtime_checkable
class _Buildable(Protocol):
    """A builder (``create_workflow(name).step(...)``), seen from below: it builds a plan."""

    def build(self) -> Workflow[Any]: ...


def _as_plan(value: object, what: str) -> Workflow[Any]:
    plan = value.build() if isinstance(value, _Buildable) else value
    if isinstance(plan, Workflow):
        return plan
    raise InvalidStepError(f"{what} must be a chain made with create_workflow(name).step(...), got {value!r}")


def as_chain(value: object, what: str) -> Chain:
    """A branch or case given as a builder (or a built Workflow), as a :class:`Chain`."""
    plan = _as_plan(value, what)
    if plan.shape.deps is not None:
        raise InvalidStepError(f"{what} {plan.name!r} uses after=; the steps of a branch run in order")
    return Chain(name=plan.name, steps=plan.steps)


def _positive(value: object, what: str, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidStepError(f"{where}: {what} must be an int >= 1 or None, got {value!r}")
    return value


def _callable(value: object, what: str, where: str, arity: int = 1) -> Callable[..., Any]:
    if not callable(value):
        raise InvalidStepError(f"{where}: {what} must be callable, got {value!r}")
    check_arity(value, arity, f"{where}: {what}")
    return value


def parallel_options(name: str, branches: Iterable[object], fail_fast: bool, concurrency: int | None) -> Any:
    """Options of a parallel group step."""
    where = f"parallel group {name!r}"
    chains = tuple(as_chain(branch, f"{where}: a branch") for branch in branches)
    if not chains:
        raise InvalidStepError(
            f"{where} has no branches; pass chains made with create_workflow(name).step(...)"
        )
    construct = ParallelSpec(
        branches=chains,
        fail_fast=bool(fail_fast),
        concurrency=_positive(concurrency, "concurrency", where),
    )
    return {"kind": "parallel", "construct": construct}


def map_options(
    name: str, fn: object, over: object, concurrency: int | None, batch_size: int | None
) -> dict[str, Any]:
    """Options of a map step."""
    where = f"map step {name!r}"
    construct = MapSpec(
        fn=_callable(fn, "the item function", where, arity=2),
        over=_callable(over, "over=", where),
        concurrency=_positive(concurrency, "concurrency", where),
        batch_size=_positive(batch_size, "batch_size", where),
    )
    return {"kind": "map", "construct": construct}


def branch_options(
    name: str, on: object, cases: Mapping[str, object], default: object | None
) -> dict[str, Any]:
    """Options of a branch step."""
    where = f"branch step {name!r}"
    if not isinstance(cases, Mapping) or not cases:
        raise InvalidStepError(f"{where}: cases= takes a non-empty dict {{key: chain}}, got {cases!r}")
    for key in cases:
        if not isinstance(key, str):
            raise InvalidStepError(f"{where}: case keys must be str (they are recorded as JSON), got {key!r}")
    if DEFAULT_CASE in cases and default is not None:
        raise InvalidStepError(
            f"{where}: a case named {DEFAULT_CASE!r} and a default= chain would share one label; "
            "rename the case"
        )
    construct = BranchSpec(
        on=_callable(on, "on=", where),
        cases=tuple((key, as_chain(chain, f"{where}: case {key!r}")) for key, chain in cases.items()),
        default=None if default is None else as_chain(default, f"{where}: default"),
    )
    return {"kind": "branch", "construct": construct}


class ChildHandler:
    """The handler of a ``.child`` step: start the child run, wait for it, return its outputs."""

    def __init__(self, workflow: Workflow[Any], input: Callable[..., Any] | None) -> None:
        self.workflow = workflow
        self.input = input
        self.__qualname__ = f"child:{workflow.name}"

    async def __call__(self, ctx: Any) -> dict[str, Any]:
        payload = None
        if self.input is not None:
            payload = self.input(ctx)
            if inspect.isawaitable(payload):
                payload = await payload
        result = await ctx.run_child(self.workflow, payload)
        return {"run_id": result.id, "status": str(result.status), "outputs": result.outputs}


def child_options(name: str, workflow: object, input: object | None) -> dict[str, Any]:
    """Options of a child-workflow step."""
    where = f"child step {name!r}"
    plan = _as_plan(workflow, f"{where}: the workflow")
    input_fn = None if input is None else _callable(input, "input=", where)
    construct = ChildSpec(workflow=plan, workflow_name=plan.name, input=input_fn)
    return {"kind": "child", "construct": construct, "handler": ChildHandler(plan, input_fn)}


def routing_options(
    after: Iterable[str] | None,
    on_failure: str | None,
    max_visits: int | None,
    goto: Iterable[str] | None = None,
) -> dict[str, Any]:
    """``after``, ``on_failure``, ``max_visits`` and ``goto`` as step options (unset ones left out)."""
    options: dict[str, Any] = {}
    for option, names in (("after", after), ("goto", goto)):
        if names is None:
            continue
        if isinstance(names, str):
            raise InvalidStepError(
                f"{option}= takes a list of step names, got the string {names!r}; use [{names!r}]"
            )
        options[option] = tuple(names)
    if on_failure is not None:
        options["on_failure"] = on_failure
    if max_visits is not None:
        options["max_visits"] = max_visits
    return options
