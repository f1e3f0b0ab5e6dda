"""Seeing runs from outside: OpenTelemetry traces and NDJSON event files.

``OpenTelemetry`` needs the ``otel`` extra (``pip install 'flux-workflow[otel]'``); it is
imported on first use, so the NDJSON helpers work without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flux.observe._ndjson import NDJSONSink, event_from_json, event_to_json, read_trace

if TYPE_CHECKING:
    from flux.observe._otel import OpenTelemetry, trace_labels

__all__ = ["NDJSONSink", "OpenTelemetry", "event_from_json", "event_to_json", "read_trace", "trace_labels"]


def __getattr__(name: str) -> Any:
    if name in ("OpenTelemetry", "trace_labels"):
        from flux.observe import _otel

        return getattr(_otel, name)
    raise AttributeError(f"module 'flux.observe' has no attribute {name!r}")
