"""Test helpers: a fake clock, an event recorder and the storage conformance suite.

``StorageConformance`` needs pytest (and pytest-asyncio); it is imported on first use, so the
other helpers work without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flux.testing._clock import FakeClock
from flux.testing._recorder import EventRecorder

if TYPE_CHECKING:
    from flux.testing._conformance import StorageConformance

__all__ = ["EventRecorder", "FakeClock", "StorageConformance"]


def __getattr__(name: str) -> Any:
    if name == "StorageConformance":
        from flux.testing._conformance import StorageConformance

        return StorageConformance
    raise AttributeError(f"module 'flux.testing' has no attribute {name!r}")
