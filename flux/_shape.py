"""The structure of a plan beyond a straight line: chains, dependencies, failure routes.

:func:`shape_of` walks every step, nested ones included, checks what only the whole plan can
tell (names unique across branches, known dependency and ``on_failure`` targets, no cycles, no
step waiting on one that may never run) and returns the lookups the engine schedules with.
Pure: no I/O, no event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from flux.errors import (
    DependencyCycleError,
    DuplicateStepError,
    InvalidStepError,
    UnknownStepError,
    UnreachableStepError,
)

if TYPE_CHECKING:
    from flux._spec import StepSpec

ChainKey = tuple[str, ...]
"""Where a chain sits: ``()`` for the top level, ``(construct, label)`` for a nested chain
(and longer for chains nested deeper)."""

TOP: ChainKey = ()
_PLAIN_KINDS = frozenset({"step", "commit", "wait", "sleep", "child"})


@attrs.frozen(kw_only=True)
class ChainInfo:
    """One chain: its steps in order, their positions, and its recovery (``on_failure``) steps."""

    key: ChainKey
    steps: tuple[StepSpec, ...]
    index: Mapping[str, int]
    handlers: frozenset[str]
    """Steps some step of this chain routes its failure to: only reached that way."""

    def next_after(self, position: int) -> int:
        """The first position at or after ``position`` that is not a recovery step."""
        while position < len(self.steps) and self.steps[position].name in self.handlers:
            position += 1
        return position


@attrs.frozen(kw_only=True)
class PlanShape:
    """Lookups over every step of a plan, nested ones included."""

    specs: Mapping[str, StepSpec]
    chain_of: Mapping[str, ChainKey]
    chains: Mapping[ChainKey, ChainInfo]
    members: Mapping[str, frozenset[str]]
    """For each construct: the names of every step nested in it, at any depth."""
    deps: Mapping[str, tuple[str, ...]] | None
    """A dependency plan's top-level steps and what each waits for; None for a chain."""
    dependents: Mapping[str, tuple[str, ...]]
    plain: bool
    """True when the plan is a straight chain of steps, commits, waits, sleeps and child steps."""

    def chain(self, key: ChainKey = TOP) -> ChainInfo:
        """The chain at ``key``."""
        return self.chains[key]

    def descendants(self, name: str) -> set[str]:
        """The top-level steps that wait, directly or not, for ``name`` (dependency plans)."""
        found: set[str] = set()
        todo = [name]
        while todo:
            for child in self.dependents.get(todo.pop(), ()):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        return found


def shape_of(workflow: str, steps: Sequence[StepSpec]) -> PlanShape:
    """Check the plan's structure and return its lookups.

    Raises:
        DuplicateStepError, UnknownStepError, DependencyCycleError, UnreachableStepError,
        InvalidStepError: each with a message that says what to change.
    """
    walker = _Walker(workflow)
    walker.walk(TOP, tuple(steps), "the top level")
    walker.check_routes()
    top = walker.chains[TOP]
    deps = _dependencies(workflow, top, walker.specs) if any(s.after is not None for s in steps) else None
    dependents: dict[str, list[str]] = {}
    for name, needs in (deps or {}).items():
        for need in needs:
            dependents.setdefault(need, []).append(name)
    plain = deps is None and all(spec.kind in _PLAIN_KINDS and spec.on_failure is None for spec in steps)
    return PlanShape(
        specs=walker.specs,
        chain_of=walker.chain_of,
        chains=walker.chains,
        members={name: frozenset(names) for name, names in walker.members.items()},
        deps=deps,
        dependents={name: tuple(names) for name, names in dependents.items()},
        plain=plain,
    )


class _Walker:
    def __init__(self, workflow: str) -> None:
        self.workflow = workflow
        self.specs: dict[str, StepSpec] = {}
        self.where: dict[str, str] = {}
        self.chain_of: dict[str, ChainKey] = {}
        self.chains: dict[ChainKey, ChainInfo] = {}
        self.members: dict[str, set[str]] = {}

    def walk(self, key: ChainKey, steps: tuple[StepSpec, ...], where: str) -> set[str]:
        names: set[str] = set()
        for spec in steps:
            if spec.name in self.specs:
                raise DuplicateStepError(
                    f"workflow {self.workflow!r} has two steps named {spec.name!r} (in "
                    f"{self.where[spec.name]} and in {where}); step names must be unique across the "
                    "whole plan, branches included"
                )
            if key != TOP and spec.after is not None:
                raise InvalidStepError(
                    f"step {spec.name!r} in {where} uses after=; steps of a branch run in order, "
                    "so after= is only for top-level steps"
                )
            self.specs[spec.name], self.where[spec.name], self.chain_of[spec.name] = spec, where, key
            names.add(spec.name)
            if spec.construct is not None:
                nested: set[str] = set()
                labels: set[str] = set()
                for label, chain in spec.construct.chains():
                    if label in labels:
                        raise DuplicateStepError(
                            f"{spec.kind} step {spec.name!r} has two branches named {label!r}; "
                            "branch names must be unique within their group"
                        )
                    labels.add(label)
                    nested |= self.walk(
                        (*key, spec.name, label), chain.steps, f"branch {label!r} of {spec.name!r}"
                    )
                self.members[spec.name] = nested
                names |= nested
        handlers = frozenset(spec.on_failure for spec in steps if spec.on_failure is not None)
        index = {spec.name: i for i, spec in enumerate(steps)}
        self.chains[key] = ChainInfo(key=key, steps=steps, index=index, handlers=handlers)
        return names

    def check_routes(self) -> None:
        for name, spec in self.specs.items():
            chain = self.chains[self.chain_of[name]]
            for jump in spec.goto or ():
                if jump not in chain.index:
                    where = f" (it is in {self.where[jump]})" if jump in self.specs else ""
                    raise UnknownStepError(
                        f"step {name!r}: goto target {jump!r} is not a step of its own chain{where}; "
                        f"goto jumps between steps of one chain: {', '.join(chain.index)}"
                    )
            target = spec.on_failure
            if target is None:
                continue
            if target == name:
                raise InvalidStepError(
                    f"step {name!r} routes its failure to itself; name another step in on_failure="
                )
            if target not in chain.index:
                where = f" (it is in {self.where[target]})" if target in self.specs else ""
                others = ", ".join(n for n in chain.index if n != name) or "none (add the recovery step)"
                raise UnknownStepError(
                    f"step {name!r}: on_failure={target!r} names no step of its own chain{where}; "
                    f"failures are routed within one chain: {others}"
                )


def _dependencies(workflow: str, top: ChainInfo, specs: Mapping[str, StepSpec]) -> dict[str, tuple[str, ...]]:
    """What each top-level step waits for: ``after=``, else the step before it (recovery steps
    aside). Recovery steps wait for nothing: the failure routed to them starts them."""
    deps: dict[str, tuple[str, ...]] = {}
    previous: str | None = None
    served: dict[str, str] = {}
    for spec in top.steps:
        if spec.goto:
            raise InvalidStepError(
                f"step {spec.name!r} declares goto= in a dependency plan; goto jumps along a chain, "
                "so a plan that uses after= cannot use it"
            )
        if spec.on_failure is not None:
            if spec.on_failure in served:
                raise InvalidStepError(
                    f"steps {served[spec.on_failure]!r} and {spec.name!r} both route their failure to "
                    f"{spec.on_failure!r}; in a dependency plan a recovery step stands in for one step, "
                    "so give each its own"
                )
            served[spec.on_failure] = spec.name
        if spec.name in top.handlers:
            if spec.after:
                raise InvalidStepError(
                    f"step {spec.name!r} is an on_failure target, so the failure routed to it starts "
                    "it; remove its after="
                )
            deps[spec.name] = ()
            continue
        if spec.after is None:
            deps[spec.name] = () if previous is None else (previous,)
        else:
            for need in spec.after:
                _check_dependency(workflow, spec.name, need, top, specs)
            deps[spec.name] = tuple(dict.fromkeys(spec.after))
        previous = spec.name
    _check_cycles(workflow, deps)
    return deps


def _check_dependency(
    workflow: str, name: str, need: str, top: ChainInfo, specs: Mapping[str, StepSpec]
) -> None:
    if need in top.handlers:
        routed = [s.name for s in top.steps if s.on_failure == need]
        raise UnreachableStepError(
            f"step {name!r} waits for {need!r}, which runs only when {routed[0]!r} fails, so "
            f"{name!r} could never start on the normal path; wait for {routed[0]!r} instead "
            f"({need!r} stands in for it when it fails)"
        )
    if need in top.index:
        return
    if need in specs:
        raise UnknownStepError(
            f"step {name!r} waits for {need!r}, which is nested in a construct; after= names "
            "top-level steps: wait for the construct (the parallel group, branch or map) instead"
        )
    raise UnknownStepError(
        f"step {name!r} waits for unknown step {need!r} in workflow {workflow!r}; "
        f"after= takes names of top-level steps: {', '.join(top.index)}"
    )


def _check_cycles(workflow: str, deps: Mapping[str, tuple[str, ...]]) -> None:
    """Raise DependencyCycleError naming the first cycle found (depth-first, in plan order)."""
    done: set[str] = set()
    for root in deps:
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root}
        stack = [iter(deps[root])]
        while stack:
            need = next(stack[-1], None)
            if need is None:
                stack.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            if need in on_path:
                cycle = [*path[path.index(need) :], need]
                cycle.reverse()  # reported in run order: each step waits for the one before it
                raise DependencyCycleError(
                    f"steps of workflow {workflow!r} wait for each other in a cycle: "
                    f"{' -> '.join(cycle)}; remove one of these dependencies",
                    cycle=cycle,
                )
            if need in done:
                continue
            path.append(need)
            on_path.add(need)
            stack.append(iter(deps[need]))
