"""Test helpers: ``run_workflow``, a fake clock, an event recorder and the storage conformance suite.

``StorageConformance`` needs pytest (and pytest-asyncio); it is imported on first use, so the
other helpers work without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flux.testing._clock import FakeClock
from flux.testing._compat import StrandedRun, check_compatible
from flux.testing._mocks import StepCall
from flux.testing._recorder import EventRecorder
from flux.testing._run import run_workflow, run_workflow_sync
from flux.testing._workflow_test import WorkflowTest

if TYPE_CHECKING:
    from flux.testing._conformance import StorageConformance

__all__ = [
    "EventRecorder",
    "FakeClock",
    "StepCall",
    "StorageConformance",
    "StrandedRun",
    "WorkflowTest",
    "check_compatible",
    "run_workflow",
    "run_workflow_sync",
]


def __getattr__(name: str) -> Any:
    if name == "StorageConformance":
        from flux.testing._conformance import StorageConformance

        return StorageConformance
    raise AttributeError(f"module 'flux.testing' has no attribute {name!r}")
