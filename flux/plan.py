"""The immutable plan a builder compiles to, and its validation.

A :class:`Workflow` is a frozen list of :class:`StepSpec`. Its ``fingerprint`` hashes the step
names, kinds and order, and the structure of constructs (branches, cases, dependencies, failure
routes), not their code; a run stores it, so flux can tell when a stored run meets a changed plan.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import attrs

from flux.errors import (
    DuplicateStepError,
    EmptyWorkflowError,
    InvalidNameError,
    InvalidStepError,
    UnknownStepError,
)
from flux.retry import RetryPolicy
from flux.serde import InputCodec

if TYPE_CHECKING:
    from flux._shape import PlanShape
    from flux.constructs import Construct

InputT = TypeVar("InputT")
StepKind = Literal["step", "commit", "wait", "sleep", "parallel", "map", "branch", "child"]
DEFAULT_MAX_VISITS = 100

_SHAPES = {"step": '["{}"]', "commit": '[["{}"]]', "wait": '{{{{"{}"}}}}', "sleep": '(["{}"])'}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\- ]{0,127}$")


def check_name(name: object, what: str) -> str:
    """Return ``name`` if it is a valid workflow or step name, else raise InvalidNameError."""
    if not isinstance(name, str) or not _NAME.match(name) or name != name.strip():
        raise InvalidNameError(
            f"invalid {what} name {name!r}: use 1 to 128 characters from letters, digits, "
            "'_', '-', '.', ':' and inner spaces, starting with a letter or digit"
        )
    return name


def is_async_callable(fn: object) -> bool:
    """True for ``async def`` functions and objects whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - we want the attribute itself
    )


def _callable_name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


_ARITY = {1: ("ctx", "the StepContext"), 2: ("ctx, item", "the StepContext and the item")}


def check_arity(fn: Callable[..., Any], count: int, what: str) -> None:
    """Refuse a callable that cannot be called with ``count`` positional arguments.

    flux calls handlers, ``when`` predicates and compensations as ``fn(ctx)``, and map functions
    as ``fn(ctx, item)``. A callable whose signature Python cannot read passes.

    Raises:
        InvalidStepError: naming ``what``, the signature found and the one to write.
    """
    try:
        signature = inspect.signature(fn).replace(return_annotation=inspect.Signature.empty)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*range(count))
    except TypeError:
        params, passed = _ARITY[count]
        name = getattr(fn, "__name__", "")
        example = f"def {name}({params}): ..." if name.isidentifier() else f"lambda {params}: ..."
        raise InvalidStepError(
            f"{what} {_callable_name(fn)}{signature} cannot be called as fn({params}): flux passes "
            f"{passed} positionally. Write it as {example}"
        ) from None


@attrs.frozen(kw_only=True)
class StepSpec:
    """One step of a plan.

    ``retries`` and ``timeout`` are None when the step leaves them to the engine's defaults.
    Wait steps (``kind="wait"``) name their ``signal`` and ``wait_timeout``; sleep steps
    (``kind="sleep"``) have a ``duration`` in seconds or an ``until(ctx) -> datetime``.
    ``after`` lists the steps a step of a dependency plan waits for (None: the step before it);
    ``on_failure`` names the step a failure is routed to; ``goto`` declares the steps its
    handler may jump to (None: any step of its chain); ``max_visits`` bounds how often the
    step may be reached (``goto`` loops); ``construct`` holds the parts of a parallel group,
    map, branch or child step.
    """

    name: str
    handler: Callable[..., Any] = attrs.field(eq=False)
    kind: StepKind = "step"
    retries: int | None = None
    timeout: float | None = None
    retry: RetryPolicy | None = None
    when: Callable[..., Any] | None = attrs.field(default=None, eq=False)
    compensate: Callable[..., Any] | None = attrs.field(default=None, eq=False)
    signal: str | None = None
    wait_timeout: float | None = None
    duration: float | None = None
    until: Callable[..., Any] | None = attrs.field(default=None, eq=False)
    after: tuple[str, ...] | None = None
    on_failure: str | None = None
    goto: tuple[str, ...] | None = None
    max_visits: int = DEFAULT_MAX_VISITS
    construct: Construct | None = None
    is_async: bool = attrs.field(eq=False)

    @is_async.default
    def _detect_async(self) -> bool:
        return is_async_callable(self.handler)

    @property
    def commit(self) -> bool:
        """True for commit steps (irreversible side effects; called again on replay)."""
        return self.kind == "commit"

    def describe(self) -> dict[str, Any]:
        """A JSON-able description of the step."""
        return {
            "name": self.name,
            "kind": self.kind,
            "handler": _callable_name(self.handler),
            "retries": self.retries,
            "timeout": self.timeout,
            "retry_policy": None if self.retry is None else self.retry.max_attempts,
            "conditional": self.when is not None,
            "compensate": None if self.compensate is None else _callable_name(self.compensate),
            "signal": self.signal,
            "wait_timeout": self.wait_timeout,
            "duration": self.duration,
            "after": None if self.after is None else list(self.after),
            "on_failure": self.on_failure,
            "goto": None if self.goto is None else list(self.goto),
            "max_visits": self.max_visits,
            **({} if self.construct is None else self.construct.describe()),
        }


def validate_step(spec: StepSpec) -> StepSpec:
    """Check one step on its own; raises an InvalidStepError saying how to fix it."""
    where = f"step {spec.name!r}"
    if not callable(spec.handler):
        raise InvalidStepError(
            f"{where}: the handler must be a function taking a StepContext, got {spec.handler!r}"
        )
    retries = spec.retries
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
        raise InvalidStepError(f"{where}: retries must be an int >= 0, got {retries!r}")
    timeout = spec.timeout
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf
    ):
        raise InvalidStepError(
            f"{where}: timeout must be a positive, finite number of seconds, got {timeout!r}"
        )
    if spec.retry is not None and not isinstance(spec.retry, RetryPolicy):
        raise InvalidStepError(f"{where}: retry= takes a RetryPolicy, got {spec.retry!r}")
    check_arity(spec.handler, 1, f"{where}: the handler")
    if spec.commit and spec.compensate is not None:
        raise InvalidStepError(
            f"{where}: a commit step cannot take compensate=; commit steps are irreversible. "
            "Use .step(...) if the effect can be undone."
        )
    for option in ("when", "compensate"):
        value = getattr(spec, option)
        if value is not None and not callable(value):
            raise InvalidStepError(f"{where}: {option}= must be callable, got {value!r}")
        if value is not None:
            check_arity(value, 1, f"{where}: {option}=")
    if spec.wait_timeout is not None and not spec.wait_timeout > 0:
        raise InvalidStepError(
            f"{where}: a wait timeout must be a positive number of seconds, got {spec.wait_timeout!r}"
        )
    if spec.duration is not None and not spec.duration >= 0:
        raise InvalidStepError(f"{where}: a sleep duration must be >= 0 seconds, got {spec.duration!r}")
    if spec.until is not None and not callable(spec.until):
        raise InvalidStepError(f"{where}: sleep_until takes a function ctx -> datetime, got {spec.until!r}")
    if spec.signal is not None:
        check_name(spec.signal, "signal")
    _validate_routing(spec, where)
    return spec


def _validate_routing(spec: StepSpec, where: str) -> None:
    visits = spec.max_visits
    if isinstance(visits, bool) or not isinstance(visits, int) or visits < 1:
        raise InvalidStepError(f"{where}: max_visits must be an int >= 1, got {visits!r}")
    if spec.on_failure is not None:
        check_name(spec.on_failure, "on_failure target")
    for option in ("after", "goto"):
        names = getattr(spec, option)
        if names is None:
            continue
        if isinstance(names, str) or not isinstance(names, tuple):
            raise InvalidStepError(f"{where}: {option}= takes a list of step names, got {names!r}")
        for name in names:
            check_name(name, f"{option}= target")


def step_shape(spec: StepSpec) -> list[Any]:
    """A step's part of the fingerprint: ``[name, kind]`` plus its structure, if it has any."""
    shape: list[Any] = [spec.name, spec.kind]
    extra: dict[str, Any] = {}
    if spec.after is not None:
        extra["after"] = list(spec.after)
    if spec.on_failure is not None:
        extra["on_failure"] = spec.on_failure
    if spec.goto is not None:
        extra["goto"] = list(spec.goto)
    if spec.construct is not None:
        extra.update(spec.construct.shape())
    if extra:
        shape.append(extra)
    return shape


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
        from flux._shape import shape_of

        object.__setattr__(self, "_shape", shape_of(self.name, self.steps))
        if self.deadline is not None and not self.deadline > 0:
            raise InvalidStepError(
                f"workflow {self.name!r}: deadline must be a positive number of seconds, "
                f"got {self.deadline!r}"
            )

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
        if not self.plain or any(spec.kind == "child" for spec in self.steps):
            from flux._mermaid import draw

            return draw(self)
        lines = ["flowchart TD", "    start((start))"]
        previous = "start"
        for i, spec in enumerate(self.steps):
            node = f"s{i}"
            label = spec.name.replace('"', "'")
            shape = _SHAPES[spec.kind].format(label)
            lines.append(f"    {node}{shape}")
            edge = " -. when .-> " if spec.when is not None else " --> "
            lines.append(f"    {previous}{edge}{node}")
            previous = node
        lines.append("    done((end))")
        lines.append(f"    {previous} --> done")
        return "\n".join(lines)
