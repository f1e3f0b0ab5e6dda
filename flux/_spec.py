"""One step of a plan: :class:`StepSpec`, its checks, and its part of the fingerprint.

The lowest floor of the plan: :mod:`flux.constructs`, the plan's shape and its drawing build on
it, and :mod:`flux.plan` puts them together into a :class:`~flux.Workflow`. Pure: no I/O.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, Literal, Protocol

import attrs

from flux._duration import to_seconds
from flux.errors import InvalidNameError, InvalidStepError
from flux.retry import RetryPolicy

StepKind = Literal["step", "commit", "wait", "sleep", "parallel", "map", "branch", "child"]
DEFAULT_MAX_VISITS = 100
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


def callable_name(fn: object) -> str:
    """A readable name for a function (its qualified name) or another callable (its type)."""
    return getattr(fn, "__qualname__", None) or type(fn).__name__


@attrs.frozen(kw_only=True)
class Chain:
    """A named sequence of steps run in order: one branch of a group, one case of a branch."""

    name: str
    steps: tuple[StepSpec, ...]

    def shape(self) -> list[Any]:
        """The chain's part of the plan fingerprint (names, kinds, nested structure)."""
        return [self.name, [step_shape(spec) for spec in self.steps]]

    def describe(self) -> dict[str, Any]:
        """A JSON-able description of the chain and its steps."""
        return {"name": self.name, "steps": [spec.describe() for spec in self.steps]}


class ConstructParts(Protocol):
    """What a construct step's parts give the plan: nested chains, fingerprint part, description.

    The classes in :mod:`flux.constructs` implement it.
    """

    def chains(self) -> tuple[tuple[str, Chain], ...]:
        """``(label, chain)`` for each nested chain."""
        ...

    def shape(self) -> dict[str, Any]:
        """The construct's part of the plan fingerprint."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-able description."""
        ...


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
            f"{what} {callable_name(fn)}{signature} cannot be called as fn({params}): flux passes "
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
    construct: ConstructParts | None = None
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
            "handler": callable_name(self.handler),
            "retries": self.retries,
            "timeout": self.timeout,
            "retry_policy": None if self.retry is None else self.retry.max_attempts,
            "conditional": self.when is not None,
            "compensate": None if self.compensate is None else callable_name(self.compensate),
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
    for option, name, zero in (
        ("timeout", "timeout", False),
        ("wait_timeout", "wait timeout", False),
        ("duration", "sleep duration", True),
    ):
        value = getattr(spec, option)
        if value is not None:
            to_seconds(value, f"{where}: {name}", error=InvalidStepError, zero=zero)
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
