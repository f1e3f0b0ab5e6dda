"""Run labels: given to execute/start, stored, returned, filterable, copied to child runs."""

from __future__ import annotations

from typing import Any

import pytest

from flux import FluxEngine, InvalidInputError, StepContext, create_workflow


async def _child_of(ctx: StepContext[Any]) -> str:
    result = await ctx.run_child(create_workflow("child").step("c", lambda ctx: "ok"), None)
    return result.id


FLOW = create_workflow("labelled").step("one", lambda ctx: 1).build()
PARENT = create_workflow("parent").step("spawn", _child_of).build()


async def test_labels_are_returned_stored_and_filterable(engine: FluxEngine) -> None:
    """execute and start store labels; get, list(labels=...) and result.labels show them."""
    done = await engine.execute(FLOW, labels={"tenant": "acme", "source": "api"})
    assert done.labels == {"tenant": "acme", "source": "api"}
    pending = await engine.start(FLOW, labels={"tenant": "other"})
    plain = await engine.execute(FLOW)

    assert (await engine.get(done.id)).labels == {"tenant": "acme", "source": "api"}
    assert (await engine.get(plain.id)).labels == {}
    assert [r.id for r in await engine.list(labels={"tenant": "acme"})] == [done.id]
    assert [r.id for r in await engine.list(labels={"tenant": "other"})] == [pending]
    assert [r.id for r in await engine.list(labels={"tenant": "acme", "source": "cli"})] == []
    assert len(await engine.list()) == 3


async def test_child_runs_and_replays_carry_their_parents_labels(engine: FluxEngine) -> None:
    """A child run started by ctx.run_child and a replay of a run get the run's labels."""
    parent = await engine.execute(PARENT, labels={"tenant": "acme"})
    child = await engine.get(parent.outputs["spawn"])
    assert child.labels == {"tenant": "acme"}
    replayed = await engine.replay(parent.id)
    assert replayed.labels == {"tenant": "acme"}


@pytest.mark.parametrize(
    "labels",
    [
        ["tenant"],  # not a mapping
        {"": "x"},  # empty key
        {"has space": "x"},
        {"k=v": "x"},  # '=' would break flux list --label k=v
        {"tenant": 3},  # value not a str
        {"tenant": "x" * 257},
        {f"k{i}": "v" for i in range(65)},
    ],
)
async def test_bad_labels_are_refused_before_anything_is_stored(engine: FluxEngine, labels: Any) -> None:
    """Each bad label set raises InvalidInputError naming the rule; no run is stored."""
    with pytest.raises(InvalidInputError, match="label"):
        await engine.execute(FLOW, labels=labels)
    with pytest.raises(InvalidInputError, match="label"):
        await engine.start(FLOW, labels=labels)
    assert await engine.list() == []
