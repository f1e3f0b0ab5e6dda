"""WorkflowTest: what ``run_workflow`` returns, with assertions that explain their failures."""

from __future__ import annotations

import difflib
import pprint
from collections.abc import Sequence
from typing import Any

from flux.events import EVENT_TYPES
from flux.plan import Workflow
from flux.records import JSON
from flux.result import RunResult
from flux.status import RunStatus
from flux.testing._clock import FakeClock
from flux.testing._mocks import CallJournal, StepCall
from flux.testing._recorder import EventRecorder

_FAILED = (RunStatus.FAILED, RunStatus.ROLLED_BACK)


def _diff(expected: object, actual: object) -> str:
    """A unified diff of two values' pretty-printed forms."""
    lines = difflib.unified_diff(
        pprint.pformat(expected, sort_dicts=True).splitlines(),
        pprint.pformat(actual, sort_dicts=True).splitlines(),
        "expected",
        "actual",
        lineterm="",
    )
    return "\n".join(lines)


class WorkflowTest:
    """The outcome of :func:`~flux.testing.run_workflow`: the result, the events, the calls.

    Attributes:
        result: the run's :class:`~flux.RunResult`.
        events: an :class:`EventRecorder` that saw every event of the run.
        clock: the :class:`FakeClock` the run used.
        workflow: the plan that ran (with mocks and spies in place).
    """

    def __init__(
        self,
        *,
        result: RunResult,
        events: EventRecorder,
        clock: FakeClock,
        workflow: Workflow[Any],
        journal: CallJournal,
    ) -> None:
        self.result = result
        self.events = events
        self.clock = clock
        self.workflow = workflow
        self._journal = journal

    def __repr__(self) -> str:
        return f"<WorkflowTest {self.result.workflow!r} {self.result.status.value}>"

    def calls(self, step: str) -> list[StepCall]:
        """The calls of ``step``'s handler, in order (each with attempt, input and data snapshot).

        Raises:
            ValueError: the plan has no step called ``step``, or it has no handler (a wait,
                sleep, parallel, map, branch or child step).
        """
        kind = self._check_step(step)
        if kind not in ("step", "commit"):
            raise ValueError(
                f"step {step!r} is a {kind} step: it has no handler whose calls could be counted; "
                "assert on test.result.history or test.events instead"
            )
        return list(self._journal.calls.get(step, ()))

    # --- assertions -----------------------------------------------------------------------

    def assert_status(self, status: str | RunStatus) -> None:
        """Assert the run ended (or stopped) with ``status``."""
        expected = RunStatus(status)
        if self.result.status != expected:
            raise AssertionError(f"expected the run to be {expected.value}, but it is {self._state()}")

    def assert_completed(self) -> None:
        """Assert the run completed."""
        if self.result.status != RunStatus.COMPLETED:
            raise AssertionError(f"expected the run to complete, but it is {self._state()}")

    def assert_failed(self, step: str | None = None, error: str | type[BaseException] | None = None) -> None:
        """Assert the run failed (``failed``, or ``rolled_back`` after compensation).

        ``step`` is the step that failed for good; ``error`` an exception class (matched by
        name) or text found in ``"<type>: <message>"`` of the recorded error.
        """
        info = self.result.error
        if self.result.status not in _FAILED or info is None:
            raise AssertionError(f"expected the run to fail, but it is {self._state()}")
        if step is not None:
            self._check_step(step)
            if info.step != step:
                raise AssertionError(
                    f"expected step {step!r} to fail, but the run failed in step {info.step!r}: "
                    f"{info.type}: {info.message}"
                )
        if error is None:
            return
        text = f"{info.type}: {info.message}"
        if isinstance(error, type):
            if info.type != error.__name__:
                raise AssertionError(f"expected a {error.__name__}, but the run failed with {text}")
        elif error not in text:
            raise AssertionError(f"expected an error containing {error!r}, but the run failed with {text}")

    def assert_step_called(self, step: str, times: int | None = None) -> None:
        """Assert ``step``'s handler was called (exactly ``times`` times, when given)."""
        count = len(self.calls(step))
        if times is None and count == 0:
            raise AssertionError(
                f"expected step {step!r} to be called, but it never was; {self._steps_called()}"
            )
        if times is not None and count != times:
            raise AssertionError(
                f"expected step {step!r} to be called {times} time(s), but it was called {count} time(s); "
                f"attempts: {[call.attempt for call in self.calls(step)]}"
            )

    def assert_step_not_called(self, step: str) -> None:
        """Assert ``step``'s handler was never called."""
        count = len(self.calls(step))
        if count:
            raise AssertionError(
                f"expected step {step!r} not to be called, but it was called {count} time(s)"
            )

    def assert_data(self, **expected: JSON) -> None:
        """Assert ``ctx.data`` holds these keys with these values (other keys are ignored)."""
        data = self.result.data
        actual = {key: data[key] for key in expected if key in data}
        if actual != expected:
            missing = sorted(set(expected) - set(data))
            note = f" (missing: {', '.join(missing)})" if missing else ""
            raise AssertionError(f"ctx.data does not match{note}:\n{_diff(expected, actual)}")

    def assert_output(self, step: str, expected: JSON) -> None:
        """Assert ``step``'s recorded output equals ``expected``."""
        self._check_step(step)
        outputs = self.result.outputs
        if step not in outputs:
            raise AssertionError(
                f"step {step!r} has no output (it returned None or did not complete); "
                f"outputs: {sorted(outputs)}"
            )
        if outputs[step] != expected:
            raise AssertionError(f"output of step {step!r} does not match:\n{_diff(expected, outputs[step])}")

    def assert_events(self, expected: Sequence[str | tuple[str, str]]) -> None:
        """Assert these events happened in this order (others may come between).

        An item is an event name (``"step_retry"``) or a ``(name, step)`` pair
        (``("step_complete", "charge")``).

        Raises:
            ValueError: an item names no event (the message lists the names).
        """
        for item in expected:
            name = item if isinstance(item, str) else item[0]
            if name not in EVENT_TYPES:
                known = ", ".join(sorted(EVENT_TYPES))
                raise ValueError(f"assert_events: {name!r} is not an event name; use one of: {known}")
        seen = [(event.name, getattr(event, "step", None)) for event in self.events.events]
        position = 0
        for index, item in enumerate(expected):
            name, step = (item, None) if isinstance(item, str) else item
            while position < len(seen) and not (
                seen[position][0] == name and (step is None or seen[position][1] == step)
            ):
                position += 1
            if position == len(seen):
                shown = "\n".join(
                    f"  {event_name}" + (f" ({event_step})" if event_step else "")
                    for event_name, event_step in seen
                )
                raise AssertionError(
                    f"event {item!r} (item {index} of {list(expected)!r}) did not happen after the "
                    f"items before it. The events, in order:\n{shown}"
                )
            position += 1

    # --- helpers --------------------------------------------------------------------------

    def _check_step(self, step: str) -> str:
        """The kind of ``step``; ValueError when the plan has no such step."""
        spec = self.workflow.find(step)
        if spec is None:
            known = ", ".join(sorted(self.workflow.shape.specs))
            raise ValueError(f"workflow {self.workflow.name!r} has no step {step!r}; its steps: {known}")
        return spec.kind

    def _steps_called(self) -> str:
        called = sorted(self._journal.calls)
        return f"steps called: {', '.join(called)}" if called else "no handler was called"

    def _state(self) -> str:
        result = self.result
        text = result.status.value
        if result.error is not None:
            where = f" in step {result.error.step!r}" if result.error.step else ""
            text += f"{where}: {result.error.type}: {result.error.message}"
        waiting = [r for r in result.history if r.waiting_for and r.status.value == "suspended"]
        if result.status == RunStatus.SUSPENDED and waiting:
            names = ", ".join(repr(r.waiting_for) for r in waiting)
            text += f", waiting for signal {names} (pass it in signals={{...}})"
        return text
