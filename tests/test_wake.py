"""Wake-ups and host names that need no server: FLUX_HOSTNAME, and a Redis that is not there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flux import FluxEngine, RunStatus, create_workflow
from flux.engine._ownership import host_name, new_owner_id, owner_is_dead
from flux.storage import SQLiteStorage
from flux.wake import RedisWaker


@pytest.fixture
def fresh_host_name() -> Iterator[None]:
    host_name.cache_clear()
    yield
    host_name.cache_clear()


def test_flux_hostname_names_the_host_of_owner_ids(
    monkeypatch: pytest.MonkeyPatch, fresh_host_name: None
) -> None:
    """Owner ids carry FLUX_HOSTNAME; an owner of another host is never declared dead here."""
    monkeypatch.setenv("FLUX_HOSTNAME", "far-a")
    assert new_owner_id().startswith("far-a/")
    assert owner_is_dead("far-b/1/1/x") is False


def test_a_slash_in_flux_hostname_is_refused(monkeypatch: pytest.MonkeyPatch, fresh_host_name: None) -> None:
    """Tried: ``a/b``; owner ids are ``/``-separated, so the error says what to use."""
    monkeypatch.setenv("FLUX_HOSTNAME", "a/b")
    with pytest.raises(ValueError, match="FLUX_HOSTNAME must not contain '/'"):
        host_name()


@pytest.mark.parametrize("url", ["localhost:6379", "", 42])
def test_redis_waker_refuses_a_url_without_a_scheme(url: object) -> None:
    """Tried: no scheme, empty, not a str."""
    with pytest.raises(ValueError, match="redis://"):
        RedisWaker(url)  # type: ignore[arg-type]


async def test_an_unreachable_redis_falls_back_to_polling(tmp_path: Path) -> None:
    """Redis on a closed port: the engine opens anyway and its worker finds the work by polling."""
    flow = create_workflow("polled").step("one", lambda ctx: 1)
    waker = RedisWaker("redis://127.0.0.1:1/0")
    engine = FluxEngine(storage=SQLiteStorage(tmp_path / "flux.db"), waker=waker, poll_interval=0.05)
    async with engine, engine.worker():
        run_id = await engine.start(flow)
        result = await engine.wait_result(run_id, timeout=30)
    assert result.status == RunStatus.COMPLETED
