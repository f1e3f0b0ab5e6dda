"""Common shapes of workflows, as small helpers over flux's constructs.

Each helper returns a builder, so it composes with the rest of a chain::

    from flux import create_workflow
    from flux.patterns import fan_out_fan_in, retry_with_fallback

    flow = fan_out_fan_in(
        create_workflow("quote").step("load", load),
        "prices",
        {"acme": price_acme, "globex": price_globex},
        merge=cheapest,
    )
    flow = retry_with_fallback(flow, "book", book_primary, book_backup, retries=3)

- :func:`pipeline`: steps one after the other.
- :func:`fan_out_fan_in`: several steps side by side (a parallel group), then one that merges.
- :func:`conditional`: one of several steps, chosen by a key (a branch).
- :func:`retry_with_fallback`: a step retried, then a fallback step if it still fails.
- :func:`batch_process`: a function over a list of items in batches (a map).
- :func:`result_of`: read the result a helper's step left, whichever way it went.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from flux.builder import WorkflowBuilder, create_workflow

if TYPE_CHECKING:
    from flux.context import StepContext
    from flux.records import JSON

__all__ = [
    "Handler",
    "StepLike",
    "batch_process",
    "conditional",
    "fan_out_fan_in",
    "pipeline",
    "result_of",
    "retry_with_fallback",
]

InputT = TypeVar("InputT")
Handler = Callable[..., Any]
StepLike = Handler | tuple[str, Handler]


def pipeline(name: str, *steps: StepLike, retries: int | None = None) -> WorkflowBuilder[Any]:
    """A workflow running ``steps`` one after the other.

    Each step is ``(name, handler)`` or a function (named after it).

    >>> def fetch(ctx): return 1
    >>> def store(ctx): return ctx.outputs["fetch"] + 1
    >>> pipeline("etl", fetch, store).build().step_names
    ('fetch', 'store')
    """
    builder = create_workflow(name)
    for step in steps:
        step_name, handler = _named(step)
        builder = builder.step(step_name, handler, retries=retries)
    return builder


def fan_out_fan_in(
    builder: WorkflowBuilder[InputT],
    name: str,
    branches: Mapping[str, Handler],
    *,
    merge: Callable[[StepContext[InputT], dict[str, JSON]], Any],
    fail_fast: bool = True,
    concurrency: int | None = None,
) -> WorkflowBuilder[InputT]:
    """Run each of ``branches`` side by side, then ``merge(ctx, {branch: output})``.

    Adds a parallel group ``name`` whose branches are one step each (named after the
    branch) and a step ``<name>-merge`` whose output is what ``merge`` returns.
    """
    chains = [create_workflow(branch).step(branch, handler) for branch, handler in branches.items()]
    group = builder.parallel(name, *chains, fail_fast=fail_fast, concurrency=concurrency)

    def merged(ctx: StepContext[InputT]) -> Any:
        return merge(ctx, dict(ctx.outputs[name]))

    return group.step(f"{name}-merge", merged)


def conditional(
    builder: WorkflowBuilder[InputT],
    name: str,
    *,
    on: Callable[[StepContext[InputT]], Any],
    cases: Mapping[str, Handler],
    default: Handler | None = None,
) -> WorkflowBuilder[InputT]:
    """Run the one step of ``cases`` whose key ``on(ctx)`` returns (``default`` otherwise).

    The case steps are named ``<name>-<key>`` (``<name>-default``); the key is recorded, so a
    resumed run takes the same case.
    """
    chains = {key: create_workflow(key).step(f"{name}-{key}", handler) for key, handler in cases.items()}
    fallback = None if default is None else create_workflow("default").step(f"{name}-default", default)
    return builder.branch(name, on=on, cases=chains, default=fallback)


def retry_with_fallback(
    builder: WorkflowBuilder[InputT],
    name: str,
    primary: Handler,
    fallback: Handler,
    *,
    retries: int = 3,
    timeout: float | None = None,
) -> WorkflowBuilder[InputT]:
    """Try ``primary`` with ``retries``; if it still fails, run ``fallback`` instead.

    Adds the step ``name`` routing its failure to ``<name>-fallback`` (which sees the error as
    ``ctx.failure``). Read the result with :func:`result_of` ``(ctx, name)``.
    """
    backup = f"{name}-fallback"
    return builder.step(name, primary, retries=retries, timeout=timeout, on_failure=backup).step(
        backup, fallback, timeout=timeout
    )


def result_of(ctx: StepContext[Any], name: str) -> JSON:
    """The output of step ``name`` of :func:`retry_with_fallback`, or of its fallback."""
    outputs = ctx.outputs
    return outputs[name] if name in outputs else outputs.get(f"{name}-fallback")


def batch_process(
    builder: WorkflowBuilder[InputT],
    name: str,
    fn: Callable[[StepContext[InputT], Any], Any],
    *,
    over: Callable[[StepContext[InputT]], Iterable[Any]],
    batch_size: int = 100,
    concurrency: int = 4,
    retries: int | None = None,
) -> WorkflowBuilder[InputT]:
    """Call ``fn(ctx, item)`` for every item of ``over(ctx)``, ``batch_size`` items per
    recorded visit and ``concurrency`` batches at once; the output lists the results in order."""
    return builder.map(name, fn, over=over, batch_size=batch_size, concurrency=concurrency, retries=retries)


def _named(step: StepLike) -> tuple[str, Handler]:
    if isinstance(step, tuple):
        return step
    name = getattr(step, "__name__", None)
    if not isinstance(name, str) or name == "<lambda>":
        raise TypeError(f"give the step {step!r} a name: pipeline(..., ('name', handler))")
    return name.replace("_", "-"), step
