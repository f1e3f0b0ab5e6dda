"""The flux pytest plugin: ``flux_engine``, ``fake_clock`` and ``flux_events`` fixtures.

Installed with flux (entry point ``pytest11``), so the fixtures are there in every test:

- ``fake_clock``: a :class:`~flux.testing.FakeClock`;
- ``flux_events``: an :class:`~flux.testing.EventRecorder` subscribed to ``flux_engine``;
- ``flux_engine``: an opened :class:`~flux.FluxEngine` on ``MemoryStorage`` with the fake clock;
  ``pytest --flux-sqlite`` puts it on a temporary SQLite file instead.

``flux_engine`` is an async fixture: it needs pytest-asyncio (``asyncio_mode = "auto"``, or
tests marked ``@pytest.mark.asyncio``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from flux.engine import FluxEngine
from flux.storage import MemoryStorage, SQLiteStorage, Storage
from flux.testing._clock import FakeClock
from flux.testing._recorder import EventRecorder

F = TypeVar("F", bound=Callable[..., Any])

try:
    import pytest_asyncio

    _fixture: Any = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - without pytest-asyncio, pytest says the test needs it
    _fixture = pytest.fixture


def _async_fixture(fn: F) -> F:
    result: F = _fixture(fn)
    return result


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--flux-sqlite``."""
    parser.getgroup("flux").addoption(
        "--flux-sqlite",
        action="store_true",
        default=False,
        help="run the flux_engine fixture on a temporary SQLite file instead of MemoryStorage",
    )


@pytest.fixture
def fake_clock() -> FakeClock:
    """A FakeClock starting at 2030-01-01 UTC; sleeps and retry delays take no time."""
    return FakeClock()


@pytest.fixture
def flux_events() -> EventRecorder:
    """An EventRecorder; ``flux_engine`` sends it every event."""
    return EventRecorder()


@_async_fixture
async def flux_engine(
    request: pytest.FixtureRequest, tmp_path: Path, fake_clock: FakeClock, flux_events: EventRecorder
) -> AsyncIterator[FluxEngine]:
    """An opened FluxEngine with ``fake_clock`` and ``flux_events``; closed after the test.

    Its storage is a MemoryStorage, or a SQLite file in the test's ``tmp_path`` (``flux.db``)
    with ``pytest --flux-sqlite``.
    """
    storage: Storage = (
        SQLiteStorage(tmp_path / "flux.db") if request.config.getoption("flux_sqlite") else MemoryStorage()
    )
    async with FluxEngine(storage, clock=fake_clock, on={"*": flux_events}) as engine:
        yield engine
