"""NDJSONSink: every event as one JSON line in a file; read_trace reads them back."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import attrs

from flux.events import EVENT_TYPES, Event
from flux.records import JSON, ErrorInfo


def event_to_json(event: Event) -> dict[str, JSON]:
    """``{"event": <name>, <field>: <value>...}``: times in ISO 8601, errors as ``ErrorInfo.to_json``."""
    line: dict[str, JSON] = {"event": event.name}
    for field in attrs.fields(type(event)):
        value = getattr(event, field.name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, ErrorInfo):
            value = value.to_json()
        elif isinstance(value, tuple):
            value = list(value)
        line[field.name] = value
    return line


def event_from_json(line: dict[str, Any]) -> Event:
    """The inverse of :func:`event_to_json`.

    Raises:
        ValueError: the line names no known event.
    """
    fields = dict(line)
    name = fields.pop("event", None)
    cls = EVENT_TYPES.get(str(name))
    if cls is None:
        raise ValueError(
            f"not a flux event line (event={name!r}); known events: {', '.join(sorted(EVENT_TYPES))}"
        )
    fields["timestamp"] = datetime.fromisoformat(fields["timestamp"])
    if fields.get("error") is not None:
        fields["error"] = ErrorInfo.from_json(fields["error"])
    if isinstance(fields.get("steps"), list):
        fields["steps"] = tuple(fields["steps"])
    return cls(**fields)


class NDJSONSink:
    """An event subscriber that appends each event to ``path`` as one JSON line, flushed at once.

    Subscribe it to every event: ``engine.on("*", NDJSONSink("trace.ndjson"))``. The file is
    opened on the first event (appending) and closed by :meth:`close` or ``with``. A trace of
    runs that a crash interrupted is complete up to the last event before the crash.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None

    def __call__(self, event: Event) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps(event_to_json(event), ensure_ascii=False, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file (the next event opens it again)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> NDJSONSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_trace(path: str | os.PathLike[str]) -> list[Event]:
    """The events an :class:`NDJSONSink` wrote to ``path``, in order, as event objects.

    A last line cut short by a crash is left out.

    Raises:
        ValueError: a line (other than a cut-off last one) is not a flux event; the message
            names the line number.
    """
    events: list[Event] = []
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            events.append(event_from_json(json.loads(text)))
        except (ValueError, TypeError, KeyError) as exc:
            if number == len(lines):
                break  # the writer died mid-line
            raise ValueError(f"{path}: line {number} is not a flux event: {exc}") from None
    return events
