"""What a step handler receives: :class:`StepContext`."""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

import attrs

from flux.errors import InvalidStepError, SerializationError
from flux.records import EMPTY, JSON, ErrorInfo
from flux.result import RunResult
from flux.serde import copy_json, valid_text

InputT = TypeVar("InputT")
T = TypeVar("T")

_MUTABLE = (dict, list)
_logger = logging.getLogger("flux.step")


class RunData(dict[str, JSON]):
    """``ctx.data``: a dict shared by all steps of a run, JSON values only.

    It remembers which top-level keys a step set, removed, or read as a mutable container
    (a dict or list the step may have changed in place): only those are written at the
    step's checkpoint.
    """

    __slots__ = ("_removed", "_touched")

    def __init__(self, initial: Mapping[str, JSON] | None = None) -> None:
        super().__init__(initial or {})
        self._touched: set[str] = set()
        self._removed: set[str] = set()

    def _touch(self, key: str) -> None:
        self._touched.add(key)
        self._removed.discard(key)

    def __iter__(self) -> Iterator[str]:
        # Defined so that dict(data), {**data}, data.copy() and data | {} read every value
        # through __getitem__: a dict or list reached through such a copy counts as touched,
        # and what the step then changes in place is recorded like any other change.
        return super().__iter__()

    def __getitem__(self, key: str) -> JSON:
        value = super().__getitem__(key)
        if isinstance(value, _MUTABLE):
            self._touched.add(key)
        return value

    def get(self, key: str, default: Any = None) -> JSON:
        value = super().get(key, default)
        if isinstance(value, _MUTABLE) and key in self:
            self._touched.add(key)
        return value

    def __setitem__(self, key: str, value: JSON) -> None:
        if not (type(key) is str and key.isascii()) and not (isinstance(key, str) and valid_text(key)):
            raise SerializationError(
                f"ctx.data keys must be str (JSON object keys) of valid Unicode text, got {key!r}"
            )
        dict.__setitem__(self, key, value)
        self._touched.add(key)  # _touch, inlined: every data write comes here
        if self._removed:
            self._removed.discard(key)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._touched.discard(key)
        self._removed.add(key)

    def pop(self, key: str, *default: Any) -> JSON:
        had = key in self
        value = super().pop(key, *default)
        if had:
            self._touched.discard(key)
            self._removed.add(key)
        return value

    def popitem(self) -> tuple[str, JSON]:
        key, value = super().popitem()
        self._touched.discard(key)
        self._removed.add(key)
        return key, value

    def setdefault(self, key: str, default: JSON = None) -> JSON:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: JSON) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> RunData:  # type: ignore[override,misc]
        self.update(other)
        return self

    def clear(self) -> None:
        self._removed.update(self.keys())
        self._touched.clear()
        super().clear()

    def values(self) -> Any:
        self._touched.update(k for k, v in super().items() if isinstance(v, _MUTABLE))
        return super().values()

    def items(self) -> Any:
        self._touched.update(k for k, v in super().items() if isinstance(v, _MUTABLE))
        return super().items()

    def take_changes(self) -> tuple[Mapping[str, JSON], tuple[str, ...]]:
        """The keys set (with their values) and removed since the last call; resets tracking."""
        touched, removed = self._touched, self._removed
        if not touched and not removed:
            return EMPTY, ()
        changed = {key: dict.__getitem__(self, key) for key in touched if key in self}
        touched.clear()
        if not removed:
            return changed, ()
        self._removed = set()
        return changed, tuple(sorted(removed))

    def apply(self, changed: Mapping[str, JSON], removed: Iterable[str]) -> None:
        """Apply recorded changes without tracking them as new ones."""
        for key, value in changed.items():
            dict.__setitem__(self, key, value)
        for key in removed:
            dict.pop(self, key, None)

    def load(self, values: Iterable[tuple[str, JSON]]) -> None:
        """Replace the contents without recording changes (used when a run is restored)."""
        super().clear()
        for key, value in values:
            dict.__setitem__(self, key, value)
        self._touched = set()
        self._removed = set()

    def snapshot(self) -> dict[str, JSON]:
        """A plain dict of the contents, nothing tracked (values shared, not copied)."""
        return dict(dict.items(self))


class DataCopy(RunData):
    """``ctx.data`` of a step that runs beside others: its own copy of the run's data.

    A dict or list is deep-copied the first time the step reads it, so what the step changes
    in place stays in its copy until the step completes (and its changes are merged).
    """

    __slots__ = ("_own",)

    def __init__(self, source: RunData) -> None:
        super().__init__(source.snapshot())
        self._own: set[str] = set()

    def _mine(self, key: str, value: JSON) -> JSON:
        if key not in self._own:
            self._own.add(key)
            value = copy_json(value)
            dict.__setitem__(self, key, value)
        return value

    def __getitem__(self, key: str) -> JSON:
        value = dict.__getitem__(self, key)
        if isinstance(value, _MUTABLE):
            self._touched.add(key)
            value = self._mine(key, value)
        return value

    def get(self, key: str, default: Any = None) -> JSON:
        if key not in self:
            return default
        return self[key]

    def __setitem__(self, key: str, value: JSON) -> None:
        super().__setitem__(key, value)
        self._own.add(key)

    def values(self) -> Any:
        return [self[key] for key in self]

    def items(self) -> Any:
        return [(key, self[key]) for key in self]


ActionRecorder = Callable[[int, str, str, JSON], Awaitable[None]]
"""Records an action's result: ``(visit seq, step, action name, result)``."""

LogSink = Callable[[int, int, str], None]
"""Keeps a line logged through ``ctx.log``: ``(visit seq, logging level, message)``."""


class StepLogger(logging.LoggerAdapter[logging.Logger]):
    """``ctx.log``: logs to ``flux.step`` with the run's fields, and hands each line to the
    engine, which keeps it with the step record whatever the logging configuration."""

    def __init__(self, extra: Mapping[str, object], sink: LogSink | None, seq: int) -> None:
        super().__init__(_logger, extra)
        self._sink = sink
        self._seq = seq

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self._sink is not None:
            try:
                text = str(msg) % args if args else str(msg)
            except (TypeError, ValueError):
                text = " ".join(map(str, (msg, *args)))
            if kwargs.get("exc_info"):
                error = sys.exc_info()[1]
                if error is not None:
                    text += f" ({type(error).__name__}: {error})"
            self._sink(self._seq, level, text)
        super().log(level, msg, *args, **kwargs)


@attrs.frozen(kw_only=True)
class ChildCall:
    """Which child run a ``ctx.run_child`` call asks for (see :data:`ChildRunner`).

    ``number`` counts the calls of one attempt (1 for the first child); ``record`` stores a
    value among the visit's actions, so a resumed parent finds the child's id again.
    """

    run_id: str
    step: str
    seq: int
    number: int
    record: ActionRecorder | None


ChildRunner = Callable[[ChildCall, Any, Any], Awaitable[RunResult]]
"""Starts or finds a child run: ``(call, workflow, input)``; given to :class:`StepContext`
by the engine, so that this module needs nothing from the engine."""


class Outputs(Mapping[str, JSON]):
    """``ctx.outputs``: read-only, and each step gets its own copies of the values it reads."""

    __slots__ = ("_copies", "_source")

    def __init__(self, source: Mapping[str, JSON]) -> None:
        self._source = source
        self._copies: dict[str, JSON] = {}

    def __getitem__(self, key: str) -> JSON:
        try:
            return self._copies[key]
        except KeyError:
            value = self._source[key]
            if isinstance(value, _MUTABLE):
                value = self._copies[key] = copy_json(value)
            return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._source)

    def __len__(self) -> int:
        return len(self._source)

    def __repr__(self) -> str:
        return f"Outputs({dict(self)!r})"


class RunScope:
    """What every :class:`StepContext` of one run shares: made once per run by the engine."""

    __slots__ = ("child_runner", "input", "log_sink", "outputs", "recorder", "run_id", "workflow")

    def __init__(
        self,
        input: Any,
        outputs: Mapping[str, JSON],
        run_id: str,
        workflow: str,
        recorder: ActionRecorder | None = None,
        child_runner: ChildRunner | None = None,
        log_sink: LogSink | None = None,
    ) -> None:
        self.input = input
        self.outputs = outputs
        """Read through each context's copies (:class:`Outputs`)."""
        self.run_id = run_id
        self.workflow = workflow
        self.recorder = recorder
        self.child_runner = child_runner
        self.log_sink = log_sink


_new = object.__new__


class StepContext(Generic[InputT]):
    """What a handler receives.

    Attributes:
        input: the run's input, typed by ``.input(T)``.
        data: a dict shared by all steps (JSON values only); changes are recorded per step.
        outputs: read-only: each finished step's output, by step name.
        run_id: the run's id.
        workflow: the workflow's name.
        step: this step's name.
        attempt: 1 for the first attempt, 2 for the first retry...
        idempotency_key: stable for this run and step across attempts and resumes; hand it to
            external APIs so a repeated call has no second effect.
        failure: in a step that a failure was routed to (``on_failure``), that failure.
    """

    __slots__ = (
        "_actions",
        "_children",
        "_log",
        "_outputs",
        "_scope",
        "_seq",
        "_used",
        "attempt",
        "data",
        "failure",
        "step",
    )

    def __init__(
        self,
        *,
        input: InputT,
        data: RunData,
        outputs: Mapping[str, JSON],
        run_id: str,
        workflow: str,
        step: str,
        attempt: int,
        actions: Mapping[str, JSON] = EMPTY,
        recorder: ActionRecorder | None = None,
        seq: int = 0,
        failure: ErrorInfo | None = None,
        child_runner: ChildRunner | None = None,
        log_sink: LogSink | None = None,
    ) -> None:
        scope = RunScope(input, outputs, run_id, workflow, recorder, child_runner, log_sink)
        self._start(scope, step, seq, attempt, data, actions, failure)

    @classmethod
    def of(
        cls,
        scope: RunScope,
        step: str,
        seq: int,
        attempt: int,
        data: RunData,
        actions: Mapping[str, JSON],
        failure: ErrorInfo | None,
    ) -> StepContext[Any]:
        """The context of one attempt of visit ``seq`` of a run (``scope``): what the engine
        calls, once per attempt, instead of the keyword constructor."""
        context: StepContext[Any] = _new(cls)
        context._start(scope, step, seq, attempt, data, actions, failure)
        return context

    def _start(
        self,
        scope: RunScope,
        step: str,
        seq: int,
        attempt: int,
        data: RunData,
        actions: Mapping[str, JSON],
        failure: ErrorInfo | None,
    ) -> None:
        self._scope = scope
        self.data = data
        self.step = step
        self.attempt = attempt
        self.failure = failure
        self._seq = seq
        self._actions = actions
        self._outputs: Outputs | None = None  # made on first use
        self._children = 0
        self._used: set[str] | None = None  # action names this attempt has used
        self._log: StepLogger | None = None

    @property
    def input(self) -> InputT:
        """The run's input, typed by ``.input(T)``."""
        value: InputT = self._scope.input
        return value

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self._scope.run_id

    @property
    def workflow(self) -> str:
        """The workflow's name."""
        return self._scope.workflow

    @property
    def outputs(self) -> Mapping[str, JSON]:
        """Each finished step's output, by step name (read-only; lists and dicts are this
        step's own copies, so changing them changes nothing else)."""
        view = self._outputs
        if view is None:
            view = self._outputs = Outputs(self._scope.outputs)
        return view

    async def run_child(self, workflow: Any, input: Any = None) -> RunResult:
        """Run ``workflow`` on ``input`` as a durable child run and return its result.

        The child is a run of its own in storage, linked to this step's visit: when this run
        is resumed (or the step retried), the same child is found again, never a second one.
        If the child suspends (a signal, a timer), this run suspends too and the step runs
        again once the child has ended; a worker wakes this run when that happens. Cancelling
        this run cancels the child.

        Raises:
            ChildWorkflowError: the child ended failed, rolled back or cancelled (it carries
                the child's ``ErrorInfo``); not retried.
            InvalidInputError: ``input`` does not fit the child workflow's input type.
            RuntimeError: the step is not run by a FluxEngine.

        ``workflow`` is a ``Workflow`` or a builder from ``create_workflow()``.
        """
        scope = self._scope
        if scope.child_runner is None:
            raise RuntimeError("ctx.run_child works only in a step run by a FluxEngine")
        self._children += 1
        call = ChildCall(
            run_id=scope.run_id, step=self.step, seq=self._seq, number=self._children, record=scope.recorder
        )
        return await scope.child_runner(call, workflow, input)

    @property
    def idempotency_key(self) -> str:
        """``"<run_id>:<step>"``: the same for every attempt of this step in this run."""
        return f"{self.run_id}:{self.step}"

    @property
    def log(self) -> StepLogger:
        """A logger whose records carry the run id, workflow, step and attempt.

        Its lines are also kept with the step record (``result.history[i].logs``), bounded
        per visit, whether or not logging is configured.
        """
        if self._log is None:
            extra = {
                "run_id": self.run_id,
                "workflow": self.workflow,
                "step": self.step,
                "attempt": self.attempt,
            }
            self._log = StepLogger(extra, self._scope.log_sink, self._seq)
        return self._log

    @overload
    async def action(self, name: str, fn: Callable[[], Awaitable[T]]) -> T: ...
    @overload
    async def action(self, name: str, fn: Callable[[], T]) -> T: ...
    async def action(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` once per run and step, recording its (JSON) result.

        When the step runs again (a retry, or a resume after a crash), a finished action
        returns its recorded result instead of calling ``fn`` again. Use it for the
        expensive or effectful parts of a step.

        Raises:
            InvalidStepError: ``name`` is not a non-empty str, starts with ``flux:`` (reserved
                for what flux records), or was used already by this attempt (the second
                function would never run).
        """
        if not isinstance(name, str) or not name or name.startswith("flux:"):
            raise InvalidStepError(
                f"step {self.step!r}: ctx.action name must be a non-empty str not starting with "
                f"'flux:' (reserved for flux), got {name!r}"
            )
        if self._used is None:
            self._used = set()
        elif name in self._used:
            raise InvalidStepError(
                f"step {self.step!r}: ctx.action name {name!r} is used twice in one attempt; the "
                "second function would never run. Give each action its own name."
            )
        self._used.add(name)
        if name in self._actions:
            return self._actions[name]
        result = fn()
        if inspect.isawaitable(result):
            result = await result
        recorder = self._scope.recorder
        if recorder is not None:
            await recorder(self._seq, self.step, name, result)
        self._actions = {**self._actions, name: result}
        return result

    def __repr__(self) -> str:
        return f"<StepContext run={self.run_id} step={self.step!r} attempt={self.attempt}>"
