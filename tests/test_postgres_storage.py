"""What is PostgresStorage's own (the conformance suite runs on it through conftest's
``storage`` fixture): schema and prefix checks, errors at open, faults mid-run."""

from __future__ import annotations
