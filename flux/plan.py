"""The immutable plan a builder compiles to, and its validation.

A :class:`Workflow` is a frozen list of :class:`StepSpec`. Its ``fingerprint`` hashes the step
names, kinds and order, and the structure of constructs (branches, cases, dependencies, failure
routes), not their code; a run stores it, so flux can tell when a stored run meets a changed plan.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import attrs

from flux._duration import to_seconds
from flux._mermaid import draw
from flux._shape import PlanShape, shape_of
from flux._spec import StepSpec, check_name, is_async_callable, step_shape, validate_step
from flux.errors import DuplicateStepError, EmptyWorkflowError, InvalidStepError, UnknownStepError
from flux.serde import InputCodec

__all__ = ["StepSpec", "Workflow", "fingerprint_of", "is_async_callable"]

InputT = TypeVar("InputT")


def fingerprint_of(name: str, steps: tuple[StepSpec, ...]) -> str:
    """A stable hash of the workflow name and its step names, kinds, order and structure."""
    shape = [name, [step_shape(s) for s in steps]]
    digest = hashlib.sha256(json.dumps(shape, separators=(",", ":")).encode()).hexdigest()
    return digest[:16]


@attrs.frozen(kw_only=True)
class Workflow(Generic[InputT]):
    """A validated, immutable plan. Build one with ``create_workflow(name)...build()``."""

    name: str
    steps: tuple[StepSpec, ...]
    input_type: type[InputT] | None = None
    validators: tuple[Callable[[InputT], Any], ...] = attrs.field(default=(), eq=False)
    deadline: float | None = None
    fingerprint: str = attrs.field(init=False)
    codec: InputCodec[InputT] = attrs.field(init=False, eq=False, repr=False)
    _index: Mapping[str, int] = attrs.field(init=False, eq=False, repr=False)
    _shape: PlanShape = attrs.field(init=False, eq=False, repr=False)

    @fingerprint.default
    def _fingerprint(self) -> str:
        return fingerprint_of(self.name, self.steps)

    @codec.default
    def _codec(self) -> InputCodec[InputT]:
        return InputCodec(self.input_type, self.name)

    @_index.default
    def _build_index(self) -> Mapping[str, int]:
        return {spec.name: i for i, spec in enumerate(self.steps)}

    def __attrs_post_init__(self) -> None:
        check_name(self.name, "workflow")
        if not self.steps:
            raise EmptyWorkflowError(
                f"workflow {self.name!r} has no steps; add one with .step(name, handler)"
            )
        if len(self._index) != len(self.steps):
            names = [spec.name for spec in self.steps]
            dupes = sorted({name for name in names if names.count(name) > 1})
            raise DuplicateStepError(
                f"workflow {self.name!r} has more than one step named {', '.join(map(repr, dupes))}; "
                "step names must be unique"
            )
        for spec in self.steps:
            validate_step(spec)
        object.__setattr__(self, "_shape", shape_of(self.name, self.steps))
        if self.deadline is not None:
            to_seconds(self.deadline, f"workflow {self.name!r}: deadline", error=InvalidStepError)

    @property
    def signals(self) -> frozenset[str]:
        """The signal names the plan's wait steps take (nested ones included)."""
        return frozenset(spec.signal for spec in self._shape.specs.values() if spec.signal is not None)

    @property
    def plain(self) -> bool:
        """True for a straight chain of steps, commits, waits, sleeps and child steps."""
        return self._shape.plain

    @property
    def shape(self) -> PlanShape:
        """The plan's structure: every step by name, its chains, dependencies and routes."""
        return self._shape

    def find(self, name: str) -> StepSpec | None:
        """The step called ``name`` anywhere in the plan (nested ones included), or None."""
        return self._shape.specs.get(name)

    @property
    def step_names(self) -> tuple[str, ...]:
        """Step names in plan order."""
        return tuple(spec.name for spec in self.steps)

    def index_of(self, step: str | int) -> int:
        """The position of a step given by name or index; raises UnknownStepError."""
        if isinstance(step, int) and not isinstance(step, bool):
            if 0 <= step < len(self.steps):
                return step
            raise UnknownStepError(
                f"step index {step} is out of range for workflow {self.name!r} "
                f"(it has {len(self.steps)} steps, 0 to {len(self.steps) - 1})"
            )
        try:
            return self._index[str(step)]
        except KeyError:
            raise UnknownStepError(
                f"workflow {self.name!r} has no step {step!r}; its steps are: {', '.join(self.step_names)}"
            ) from None

    def describe(self) -> dict[str, Any]:
        """A JSON-able description of the plan."""
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "input": self.codec.type_name,
            "deadline": self.deadline,
            "graph": self._shape.deps is not None,
            "steps": [spec.describe() for spec in self.steps],
        }

    def to_mermaid(self) -> str:
        """The plan as a Mermaid flowchart.

        Commit steps are drawn as double boxes, waits for signals as hexagons, sleeps as
        rounded boxes; parallel groups and branch cases as subgraphs, branch decisions as
        diamonds, maps as parallelograms, child workflows as flags, dependencies as
        edges, ``on_failure`` routes as dotted edges labelled ``on failure``.
        """
        return draw(self.steps, self._shape)
