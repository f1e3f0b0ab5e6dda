"""flux: durable workflows for Python.

Chain a few functions into a workflow; flux runs it with retries, timeouts, conditions and
compensation, checkpoints every step, and resumes runs after a crash.

>>> from flux import create_workflow
>>> create_workflow("hello").step("greet", lambda ctx: "hi").build().step_names
('greet',)
"""

from flux.builder import WorkflowBuilder, create_workflow
from flux.clock import Clock, SystemClock
from flux.context import RunData, StepContext
from flux.engine import FluxEngine
from flux.errors import (
    DuplicateStepError,
    EmptyWorkflowError,
    FluxError,
    InvalidInputError,
    InvalidNameError,
    InvalidRunStateError,
    InvalidStepError,
    LeaseLostError,
    NonRetryableError,
    PlanError,
    PlanMismatchError,
    RetryAfter,
    RunError,
    RunNotFoundError,
    SchemaVersionError,
    SerializationError,
    StepError,
    StepTimeoutError,
    StorageCorruptedError,
    StorageError,
    UnknownStepError,
    WorkflowNotRegisteredError,
)
from flux.events import Event
from flux.plan import StepSpec, Workflow
from flux.records import ErrorInfo, RunFilter, RunRecord, StepRecord
from flux.result import RunResult
from flux.retry import RetryPolicy, is_retryable_error, with_retry
from flux.status import RunStatus, StepStatus
from flux.storage import MemoryStorage, Storage

__version__ = "0.1.0"

__all__ = [
    "Clock",
    "DuplicateStepError",
    "EmptyWorkflowError",
    "ErrorInfo",
    "Event",
    "FluxEngine",
    "FluxError",
    "InvalidInputError",
    "InvalidNameError",
    "InvalidRunStateError",
    "InvalidStepError",
    "LeaseLostError",
    "MemoryStorage",
    "NonRetryableError",
    "PlanError",
    "PlanMismatchError",
    "RetryAfter",
    "RetryPolicy",
    "RunData",
    "RunError",
    "RunFilter",
    "RunNotFoundError",
    "RunRecord",
    "RunResult",
    "RunStatus",
    "SchemaVersionError",
    "SerializationError",
    "StepContext",
    "StepError",
    "StepRecord",
    "StepSpec",
    "StepStatus",
    "StepTimeoutError",
    "Storage",
    "StorageCorruptedError",
    "StorageError",
    "SystemClock",
    "UnknownStepError",
    "Workflow",
    "WorkflowBuilder",
    "WorkflowNotRegisteredError",
    "__version__",
    "create_workflow",
    "is_retryable_error",
    "with_retry",
]
