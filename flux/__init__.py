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
from flux.control import Goto, goto
from flux.engine import FluxEngine, LogLimits
from flux.errors import (
    ChildWorkflowError,
    DependencyCycleError,
    DuplicateStepError,
    EmptyWorkflowError,
    FluxError,
    InvalidInputError,
    InvalidNameError,
    InvalidRunStateError,
    InvalidStepError,
    LeaseLostError,
    MaxVisitsError,
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
    UnknownSignalError,
    UnknownStepError,
    UnreachableStepError,
    WaitTimeoutError,
    WorkflowNotRegisteredError,
)
from flux.events import Event
from flux.metrics import RunMetrics, StepMetrics, run_metrics
from flux.plan import StepSpec, Workflow
from flux.records import ErrorInfo, LogLine, RunFilter, RunRecord, StepRecord
from flux.result import Recovery, RunResult
from flux.retry import RetryPolicy, is_retryable_error, with_retry
from flux.schedule import Schedule
from flux.status import RunStatus, StepStatus
from flux.storage import MemoryStorage, Storage
from flux.waiting import WaitRequest, wait
from flux.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "ChildWorkflowError",
    "Clock",
    "DependencyCycleError",
    "DuplicateStepError",
    "EmptyWorkflowError",
    "ErrorInfo",
    "Event",
    "FluxEngine",
    "FluxError",
    "Goto",
    "InvalidInputError",
    "InvalidNameError",
    "InvalidRunStateError",
    "InvalidStepError",
    "LeaseLostError",
    "LogLimits",
    "LogLine",
    "MaxVisitsError",
    "MemoryStorage",
    "NonRetryableError",
    "PlanError",
    "PlanMismatchError",
    "Recovery",
    "RetryAfter",
    "RetryPolicy",
    "RunData",
    "RunError",
    "RunFilter",
    "RunMetrics",
    "RunNotFoundError",
    "RunRecord",
    "RunResult",
    "RunStatus",
    "Schedule",
    "SchemaVersionError",
    "SerializationError",
    "StepContext",
    "StepError",
    "StepMetrics",
    "StepRecord",
    "StepSpec",
    "StepStatus",
    "StepTimeoutError",
    "Storage",
    "StorageCorruptedError",
    "StorageError",
    "SystemClock",
    "UnknownSignalError",
    "UnknownStepError",
    "UnreachableStepError",
    "WaitRequest",
    "WaitTimeoutError",
    "Worker",
    "Workflow",
    "WorkflowBuilder",
    "WorkflowNotRegisteredError",
    "__version__",
    "create_workflow",
    "goto",
    "is_retryable_error",
    "run_metrics",
    "wait",
    "with_retry",
]
