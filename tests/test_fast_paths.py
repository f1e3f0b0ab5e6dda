"""The engine's hot-path shortcuts give the same results as the plain ways they replace.

Records built by ``step_visit``/``revise``/``checkpointed`` equal the constructor's; data
checked and copied in one walk (``copy_checked``) equals ``copy_json`` and refuses what
``check_json`` refuses; runs driven in the caller's task still cancel; the engine's log
subscribers build no event while logging is off.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from flux import FluxEngine, SerializationError, StepContext, create_workflow
from flux.records import RunRecord, StepRecord, checkpointed, revise, step_visit
from flux.serde import check_json, copy_checked, copy_json
from flux.status import RunStatus, StepStatus
from flux.storage import MemoryStorage

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_step_visit_equals_the_constructor() -> None:
    fast = step_visit(
        3, "s", StepStatus.COMPLETED, 2, NOW, NOW, {"x": 1}, {"k": [1]}, ("gone",), True, {"a": 1}
    )
    slow = StepRecord(
        seq=3,
        step="s",
        status=StepStatus.COMPLETED,
        attempts=2,
        started_at=NOW,
        finished_at=NOW,
        output={"x": 1},
        data_set={"k": [1]},
        data_unset=("gone",),
        condition=True,
        actions={"a": 1},
    )
    assert fast == slow
    assert repr(fast) == repr(slow)
    assert set(vars(fast)) == {field.name for field in attrs.fields(StepRecord)}


def test_records_stay_frozen() -> None:
    record = step_visit(0, "s", StepStatus.RUNNING, 1, NOW)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        record.status = StepStatus.FAILED  # type: ignore[misc]


def test_revise_equals_attrs_evolve_and_refuses_unknown_fields() -> None:
    record = step_visit(0, "s", StepStatus.RUNNING, 1, NOW)
    assert revise(record, status=StepStatus.FAILED, attempts=2) == attrs.evolve(
        record, status=StepStatus.FAILED, attempts=2
    )
    assert record.status == StepStatus.RUNNING  # the original is unchanged
    with pytest.raises(TypeError, match="StepRecord has no field stauts"):
        revise(record, stauts=StepStatus.FAILED)


def _run() -> RunRecord:
    return RunRecord(
        id="r",
        workflow="w",
        fingerprint="f",
        status=RunStatus.RUNNING,
        created_at=NOW,
        updated_at=NOW,
        labels={"team": "a"},
    )


def test_checkpointed_renews_the_lease_and_applies_changes() -> None:
    run, later = _run(), NOW + timedelta(seconds=5)
    lease = later + timedelta(seconds=30)
    assert checkpointed(run, later, lease, {}) == attrs.evolve(run, updated_at=later, lease_expires_at=lease)
    changed = checkpointed(run, later, lease, {"status": RunStatus.SUSPENDED, "lease_expires_at": None})
    assert changed == attrs.evolve(run, updated_at=later, status=RunStatus.SUSPENDED, lease_expires_at=None)
    assert revise(run, labels={"team": "b"}).labels == {"team": "b"}  # through the converter
    with pytest.raises(TypeError, match="RunRecord has no field"):
        checkpointed(run, later, lease, {"nope": 1})


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "text",
        "caf\u00e9",
        3,
        2.5,
        True,
        [1, "a", None, [2.0, {"x": False}]],
        {"a": {"b": [1, 2, {"c": "d"}]}, "e": None, "f": True},
        (1, 2),  # valid, not plain: copied the JSON way (a list)
        {"k": ("t", 1)},
        [Colour.RED.value],
    ],
)
def test_copy_checked_equals_copy_json(value: Any) -> None:
    copy = copy_checked(value, lambda: check_json(value, "value"))
    assert copy == copy_json(value)
    if isinstance(value, dict | list):
        assert copy is not value


@pytest.mark.parametrize(
    ("value", "wrong"),
    [
        ({"k": {1, 2}}, "a set"),  # not JSON
        ({"k": float("nan")}, "NaN"),  # not storable
        ({"k": "\ud800"}, "lone surrogate"),
        ({1: "a"}, "key"),
        ([datetime(2030, 1, 1)], "a datetime"),
    ],
)
def test_copy_checked_refuses_what_check_json_refuses(value: Any, wrong: str) -> None:
    """Bad inputs tried: a set, NaN, a lone surrogate, a non-str key, a datetime."""
    with pytest.raises(SerializationError, match=wrong):
        copy_checked(value, lambda: check_json(value, "value"))


async def test_a_bad_data_value_names_its_key_and_step() -> None:
    async def write(ctx: StepContext[Any]) -> None:
        ctx.data["fine"] = 1
        ctx.data["when"] = {"at": datetime(2030, 1, 1)}

    async with FluxEngine(storage=MemoryStorage()) as engine:
        result = await engine.execute(create_workflow("bad").step("write", write, retries=1))
    assert result.status == "failed"
    assert result.error is not None
    assert "ctx.data['when'] (set by step 'write')['at'] is a datetime" in result.error.message


async def test_the_next_step_starts_when_the_previous_one_completed() -> None:
    async def noop(ctx: StepContext[Any]) -> None:
        return None

    async with FluxEngine(storage=MemoryStorage()) as engine:
        result = await engine.execute(create_workflow("handoff").step("a", noop).step("b", noop))
    first, second = result.history
    assert second.started_at == first.finished_at


async def test_a_run_driven_in_the_callers_task_is_cancelled_by_another_task() -> None:
    started = asyncio.Event()

    async def slow(ctx: StepContext[Any]) -> None:
        started.set()
        await asyncio.Event().wait()  # until cancelled

    async with FluxEngine(storage=MemoryStorage()) as engine:
        execution = asyncio.ensure_future(
            engine.execute(create_workflow("slow").step("slow", slow), run_id="slow-run")
        )
        await started.wait()
        cancelled = await engine.cancel("slow-run", reason="enough")
        result = await execution
    assert cancelled.status == result.status == "cancelled"
    assert result.error is not None and result.error.message == "enough"
    assert not execution.cancelled()  # the caller's task goes on: only the run was cancelled


async def test_a_contextvar_set_by_an_async_step_is_seen_after_execute() -> None:
    """Documented in docs/concepts/steps.md: runs are driven in the calling task."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def sets(ctx: StepContext[Any]) -> None:
        var.set("set by the step")

    async with FluxEngine(storage=MemoryStorage()) as engine:
        await engine.execute(create_workflow("ctxvar").step("sets", sets))
    assert var.get() == "set by the step"


async def test_log_events_are_built_only_while_logging_is_on(caplog: pytest.LogCaptureFixture) -> None:
    async def noop(ctx: StepContext[Any]) -> None:
        return None

    async with FluxEngine(storage=MemoryStorage()) as engine:
        bus = engine._bus
        with caplog.at_level(logging.WARNING, logger="flux.engine"):
            assert not bus.wants("workflow_start")
            await engine.execute(create_workflow("quiet").step("a", noop))
        assert not [r for r in caplog.records if r.name == "flux.engine"]
        with caplog.at_level(logging.INFO, logger="flux.engine"):
            assert bus.wants("workflow_start")
            result = await engine.execute(create_workflow("loud").step("a", noop))
        messages = [r.getMessage() for r in caplog.records if r.name == "flux.engine"]
    assert f"run {result.id} of loud started" in messages
    assert any(m.startswith(f"run {result.id} of loud completed") for m in messages)
