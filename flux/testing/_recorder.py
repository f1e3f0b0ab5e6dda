"""EventRecorder: collects an engine's events for assertions."""

from __future__ import annotations

from typing import Any

from flux.events import Event


class EventRecorder:
    """Subscribe it to everything (``engine.on("*", recorder)``) and assert on what it saw.

    >>> recorder = EventRecorder()
    >>> recorder.names
    []
    """

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    @property
    def names(self) -> list[str]:
        """Event names in the order they arrived."""
        return [event.name for event in self.events]

    def of(self, name: str) -> list[Any]:
        """The events called ``name``, in order."""
        return [event for event in self.events if event.name == name]

    def steps(self, name: str) -> list[str]:
        """The ``step`` of each event called ``name`` (``"step_start"`` gives the start order)."""
        return [getattr(event, "step", "") for event in self.of(name)]

    def clear(self) -> None:
        """Forget what was recorded."""
        self.events.clear()
