"""The flux error tree.

Every error flux raises is a :class:`FluxError`. The middle layers tell what went wrong:
:class:`PlanError` (a workflow definition is invalid), :class:`RunError` (a run could not be
started, resumed or found) and :class:`StorageError` (the storage backend refused or failed).
Messages say what was wrong and what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from flux._duration import to_seconds

if TYPE_CHECKING:
    from flux.records import ErrorInfo


class FluxError(Exception):
    """Base class of every error raised by flux."""


# --- plan errors -------------------------------------------------------------------------


class PlanError(FluxError, ValueError):
    """A workflow definition is invalid; raised by the builder and by ``build()``."""


class EmptyWorkflowError(PlanError):
    """A workflow has no steps."""


class DuplicateStepError(PlanError):
    """Two steps share one name."""


class InvalidNameError(PlanError):
    """A workflow or step name is empty or uses characters flux does not allow."""


class InvalidStepError(PlanError):
    """A step's handler or options are invalid (non-callable handler, bad timeout or retries...)."""


class UnknownStepError(PlanError):
    """A step name given to the engine or the builder does not exist in the plan."""


class DependencyCycleError(PlanError):
    """Steps of a dependency plan wait for each other in a circle; ``cycle`` names them in order."""

    def __init__(self, message: str, *, cycle: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.cycle = tuple(cycle)


class UnreachableStepError(PlanError):
    """A step of a dependency plan waits for a step that runs only when another one fails."""


class MaxVisitsError(PlanError):
    """A step was reached more often than its ``max_visits`` (a ``goto`` loop that never ends).

    Raised while the run runs: it is recorded as the failure of the visit it refused.
    """


# --- run errors --------------------------------------------------------------------------


class RunError(FluxError):
    """A run could not be started, resumed, found or continued."""

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class InvalidInputError(RunError, ValueError):
    """The input given to ``execute`` does not match the workflow's input type or validators."""


class RunNotFoundError(RunError, LookupError):
    """No run with the given id is stored."""


class InvalidRunStateError(RunError):
    """The run's status does not allow the requested operation."""


class PlanMismatchError(RunError):
    """A stored run was started by a plan that no registered workflow version matches."""

    def __init__(self, message: str, *, run_id: str | None = None, differences: Sequence[str] = ()):
        super().__init__(message, run_id=run_id)
        self.differences = tuple(differences)


class UnknownSignalError(RunError, ValueError):
    """A signal names nothing the run will ever wait for."""


class WorkflowNotRegisteredError(RunError):
    """A stored run names a workflow that this engine does not know."""


# --- step failures (recorded as a step's error, not raised by execute) --------------------


class StepError(FluxError):
    """Base of errors flux itself records as a step's failure."""

    def __init__(self, message: str, *, step: str | None = None, attempt: int | None = None):
        super().__init__(message)
        self.step = step
        self.attempt = attempt


class StepTimeoutError(StepError, TimeoutError):
    """One attempt of a step ran longer than its ``timeout``."""


class WaitTimeoutError(StepError, TimeoutError):
    """A wait for a signal reached its ``timeout`` before the signal arrived."""


class SerializationError(StepError, TypeError):
    """A value that must be stored (an output, a data value, an input) is not JSON."""


class NonRetryableError(FluxError):
    """Raise this from a handler to fail the step at once, without further retries."""


class ChildWorkflowError(NonRetryableError):
    """A child run started by ``ctx.run_child`` (or a ``.child`` step) did not complete.

    Attributes:
        run_id: the child run's id.
        status: how the child ended (``failed``, ``rolled_back`` or ``cancelled``).
        error: the child's recorded :class:`~flux.ErrorInfo` (None if it recorded none).

    It is not retried: the step would only meet the same finished child again.
    """

    def __init__(self, message: str, *, run_id: str, status: str, error: ErrorInfo | None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.status = status
        self.error = error


class RetryAfter(FluxError):
    """Raise this from a handler to ask for a retry after ``delay`` seconds.

    The delay replaces the policy's backoff for that attempt; the attempt still counts
    against the step's retry budget.
    """

    def __init__(self, delay: float | timedelta, message: str = "") -> None:
        seconds = to_seconds(delay, "RetryAfter delay", zero=True)
        super().__init__(message or f"retry requested after {seconds:g}s")
        self.delay = seconds


# --- storage errors ----------------------------------------------------------------------


class StorageError(FluxError):
    """The storage backend failed or refused an operation."""


class StorageCorruptedError(StorageError):
    """Stored data could not be read back (a corrupted JSON column, a foreign file...)."""


class SchemaVersionError(StorageError):
    """The database was written by a newer flux than this one."""


class LeaseLostError(RunError):
    """Another process took over a run this process was driving; this process stops driving it."""
