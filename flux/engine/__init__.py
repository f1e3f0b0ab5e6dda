"""The engine: drives runs through their plans."""

from flux.engine._engine import FluxEngine
from flux.engine._logbook import LogLimits

__all__ = ["FluxEngine", "LogLimits"]
