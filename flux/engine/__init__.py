"""The engine: drives runs through their plans."""

from flux.engine._engine import FluxEngine

__all__ = ["FluxEngine"]
