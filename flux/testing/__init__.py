"""Test helpers: a fake clock, an event recorder and the storage conformance suite."""

from flux.testing._clock import FakeClock
from flux.testing._recorder import EventRecorder

__all__ = ["EventRecorder", "FakeClock"]
