"""The lines handlers log through ``ctx.log``, kept per step visit, bounded.

The driver's ``_put`` attaches a visit's lines to its record, so they are written with the
record by the next checkpoint. A visit keeps at most ``LogLimits.lines`` lines of at most
``LogLimits.line_bytes`` bytes (UTF-8) each; a longer line is cut, and lines past the limit
are counted in one closing note line: the cut is always visible.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from datetime import datetime

import attrs

from flux.records import LogLine, StepRecord

_NOTE = "[flux: {} more lines not kept; at most {} lines are kept per step]"
_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error"}
_RECORD_FIELDS = tuple(field.name for field in attrs.fields(StepRecord) if field.name != "logs")
_NOTE_COUNT = re.compile(r"^\[flux: (\d+) more lines not kept")


@attrs.frozen(kw_only=True)
class LogLimits:
    """How much of ``ctx.log`` is kept per step visit: ``lines`` lines of ``line_bytes`` each."""

    lines: int = 100
    line_bytes: int = 2048

    def __attrs_post_init__(self) -> None:
        for name in ("lines", "line_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"LogLimits({name}=...) must be an int >= 0, got {value!r}")


class LogBook:
    """One run's kept log lines, by visit seq; starts from the lines its records hold."""

    def __init__(self, records: Iterable[StepRecord], limits: LogLimits, now: Callable[[], datetime]) -> None:
        self._limits = limits
        self._now = now
        self.visits: dict[int, list[LogLine]] = {}
        """The lines kept so far, by visit seq (only visits that logged are here)."""
        self._dropped: dict[int, int] = {}
        self._kept: dict[int, tuple[LogLine, ...]] = {}
        for record in records:
            if record.logs:
                self._restore(record.seq, record.logs)

    def _restore(self, seq: int, logs: tuple[LogLine, ...]) -> None:
        lines = list(logs)
        if len(lines) > self._limits.lines and lines:
            found = _NOTE_COUNT.match(lines[-1].message)
            self._dropped[seq] = int(found[1]) if found else 0
            lines.pop()
        self.visits[seq] = lines
        self._kept[seq] = logs

    def add(self, seq: int, level: int, message: str) -> None:
        """Keep one line of visit ``seq`` (the :data:`flux.context.LogSink` of its contexts)."""
        lines = self.visits.setdefault(seq, [])
        limits = self._limits
        if len(lines) >= limits.lines:
            self._dropped[seq] = self._dropped.get(seq, 0) + 1
        else:
            encoded = message.encode("utf-8", "replace")
            if len(encoded) > limits.line_bytes:
                kept = encoded[: limits.line_bytes].decode("utf-8", "ignore")
                message = f"{kept}… [flux: cut, {len(encoded)} bytes in all]"
            name = _LEVELS.get(level) or str(logging.getLevelName(level)).lower()
            lines.append(LogLine(level=name, time=self._now(), message=message))
        self._kept.pop(seq, None)

    def attach(self, record: StepRecord) -> StepRecord:
        """``record`` carrying the lines kept for its visit."""
        seq = record.seq
        if seq not in self.visits:
            return record
        kept = self._kept.get(seq)
        if kept is None:
            kept = tuple(self.visits[seq])
            dropped = self._dropped.get(seq, 0)
            if dropped:
                note = _NOTE.format(dropped, self._limits.lines)
                kept += (LogLine(level="warning", time=self._now(), message=note),)
            self._kept[seq] = kept
        if record.logs is kept:
            return record
        # Cheaper than attrs.evolve on the hot path of a step that logs.
        return StepRecord(**{name: getattr(record, name) for name in _RECORD_FIELDS}, logs=kept)
