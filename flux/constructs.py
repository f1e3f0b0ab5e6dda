"""What a construct step holds: parallel groups, dynamic maps, branches and child workflows.

A construct is a step of the plan like any other (it has a name, a kind and a record per
visit); :attr:`StepSpec.construct <flux.StepSpec>` carries its parts. Chains nested in a
construct (a parallel group's branches, a branch's cases) are tuples of step specs, built with
``create_workflow(chain_name).step(...)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import attrs

from flux._spec import Chain, callable_name, is_async_callable

__all__ = [
    "DEFAULT_CASE",
    "BranchSpec",
    "Chain",
    "ChildPlan",
    "ChildSpec",
    "Construct",
    "MapSpec",
    "ParallelSpec",
]


class ChildPlan(Protocol):
    """What a child step's description needs of the child's plan (a :class:`~flux.Workflow`)."""

    @property
    def name(self) -> str:
        """The child workflow's name."""
        ...

    @property
    def fingerprint(self) -> str:
        """The child plan's fingerprint."""
        ...


@attrs.frozen(kw_only=True)
class ParallelSpec:
    """``.parallel(name, *branches)``: branches run at the same time; each runs its steps in order.

    ``fail_fast`` cancels the other branches when one fails; otherwise they finish first.
    ``concurrency`` caps how many branches run at once (None: all of them).
    """

    branches: tuple[Chain, ...]
    fail_fast: bool = True
    concurrency: int | None = None

    def chains(self) -> tuple[tuple[str, Chain], ...]:
        """``(label, chain)`` for each nested chain."""
        return tuple((chain.name, chain) for chain in self.branches)

    def shape(self) -> dict[str, Any]:
        """The construct's part of the plan fingerprint."""
        return {"branches": [chain.shape() for chain in self.branches]}

    def describe(self) -> dict[str, Any]:
        """A JSON-able description."""
        return {
            "fail_fast": self.fail_fast,
            "concurrency": self.concurrency,
            "branches": [chain.describe() for chain in self.branches],
        }


@attrs.frozen(kw_only=True)
class MapSpec:
    """``.map(name, fn, over=...)``: ``fn(ctx, item)`` for each item of ``over(ctx)``.

    One record per item (or per batch of ``batch_size`` items), at most ``concurrency`` at once.
    """

    fn: Callable[..., Any] = attrs.field(eq=False)
    over: Callable[..., Any] = attrs.field(eq=False)
    concurrency: int | None = None
    batch_size: int | None = None
    is_async: bool = attrs.field(eq=False)

    @is_async.default
    def _detect_async(self) -> bool:
        return is_async_callable(self.fn)

    def chains(self) -> tuple[tuple[str, Chain], ...]:
        """A map holds no chains."""
        return ()

    def shape(self) -> dict[str, Any]:
        """The construct's part of the plan fingerprint."""
        return {"batch": self.batch_size}

    def describe(self) -> dict[str, Any]:
        """A JSON-able description."""
        return {
            "fn": callable_name(self.fn),
            "over": callable_name(self.over),
            "concurrency": self.concurrency,
            "batch_size": self.batch_size,
        }


DEFAULT_CASE = "default"
"""The label of a branch's ``default`` chain in records, history and drawings."""


@attrs.frozen(kw_only=True)
class BranchSpec:
    """``.branch(name, on=..., cases={...}, default=...)``: run the chain whose key ``on`` gives."""

    on: Callable[..., Any] = attrs.field(eq=False)
    cases: tuple[tuple[str, Chain], ...]
    default: Chain | None = None

    def chains(self) -> tuple[tuple[str, Chain], ...]:
        """``(label, chain)`` for each case, then the default."""
        default = () if self.default is None else ((DEFAULT_CASE, self.default),)
        return (*self.cases, *default)

    def choose(self, key: object) -> tuple[str | None, Chain | None]:
        """The case label and chain for ``key``: ``(None, default)`` when no case matches."""
        for label, chain in self.cases:
            if label == key:
                return label, chain
        return None, self.default

    def shape(self) -> dict[str, Any]:
        """The construct's part of the plan fingerprint."""
        cases = [[label, chain.shape()] for label, chain in self.cases]
        return {"cases": cases, "default": None if self.default is None else self.default.shape()}

    def describe(self) -> dict[str, Any]:
        """A JSON-able description."""
        return {
            "on": callable_name(self.on),
            "cases": {label: chain.describe() for label, chain in self.cases},
            "default": None if self.default is None else self.default.describe(),
        }


@attrs.frozen(kw_only=True)
class ChildSpec:
    """``.child(name, workflow, input=fn)``: run ``workflow`` as a durable child run."""

    workflow: ChildPlan = attrs.field(eq=False)
    workflow_name: str
    input: Callable[..., Any] | None = attrs.field(default=None, eq=False)

    def chains(self) -> tuple[tuple[str, Chain], ...]:
        """A child step holds no chains."""
        return ()

    def shape(self) -> dict[str, Any]:
        """The construct's part of the plan fingerprint."""
        return {"workflow": self.workflow_name}

    def describe(self) -> dict[str, Any]:
        """A JSON-able description."""
        return {
            "workflow": self.workflow_name,
            "workflow_fingerprint": self.workflow.fingerprint,
            "input": None if self.input is None else callable_name(self.input),
        }


Construct = ParallelSpec | MapSpec | BranchSpec | ChildSpec
"""The parts of a construct step."""
