"""Plans with constructs: build-time validation, describe(), fingerprint and to_mermaid()."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flux import (
    DependencyCycleError,
    DuplicateStepError,
    FluxEngine,
    InvalidStepError,
    PlanMismatchError,
    StepContext,
    UnknownStepError,
    UnreachableStepError,
    Workflow,
    WorkflowBuilder,
    create_workflow,
)


def noop(ctx: StepContext[Any]) -> None:
    return None


def item(ctx: StepContext[Any], value: Any) -> Any:
    return value


def items(ctx: StepContext[Any]) -> list[int]:
    return [1, 2]


def untyped(value: Any) -> Any:
    """Hand the builder a wrong argument without telling the type checker."""
    return value


def chain(name: str, *steps: str) -> WorkflowBuilder[Any]:
    builder = create_workflow(name)
    for step in steps:
        builder = builder.step(step, noop)
    return builder


def everything() -> Workflow[Any]:
    """One plan holding every construct."""
    return (
        create_workflow("everything")
        .step("fetch", noop)
        .parallel("enrich", chain("left", "l1", "l2"), chain("right", "r1"), concurrency=2)
        .map("resize", lambda ctx, item: item, over=lambda ctx: [1, 2], batch_size=2)
        .branch(
            "route", on=lambda ctx: "big", cases={"big": chain("big", "b1")}, default=chain("small", "s1")
        )
        .step("charge", noop, on_failure="manual")
        .child("audit", chain("audit-flow", "check"), input=lambda ctx: {"x": 1})
        .step("review", noop, goto=["fetch"], max_visits=3)
        .step("manual", noop)
        .build()
    )


# --- validation ---------------------------------------------------------------------------


def test_a_dependency_cycle_is_named() -> None:
    builder = (
        create_workflow("cyclic")
        .step("a", noop, after=[])
        .step("b", noop, after=["a", "d"])
        .step("c", noop, after=["b"])
        .step("d", noop, after=["c"])
    )
    with pytest.raises(
        DependencyCycleError, match=r"cycle: (b -> c -> d -> b|c -> d -> b -> c|d -> b -> c -> d)"
    ) as info:
        builder.build()
    assert set(info.value.cycle) == {"b", "c", "d"}
    assert "remove one of these dependencies" in str(info.value)


def test_a_step_waiting_for_itself_is_a_cycle() -> None:
    with pytest.raises(DependencyCycleError, match="a -> a"):
        create_workflow("w").step("a", noop, after=["a"]).build()


def test_an_unknown_dependency_lists_the_known_steps() -> None:
    builder = create_workflow("w").step("a", noop).step("b", noop, after=["nope"])
    with pytest.raises(UnknownStepError, match=r"waits for unknown step 'nope'.*top-level steps: a, b"):
        builder.build()


def test_a_dependency_on_a_nested_step_says_to_wait_for_the_construct() -> None:
    builder = create_workflow("w").parallel("g", chain("x", "x1")).step("after", noop, after=["x1"])
    with pytest.raises(UnknownStepError, match=r"nested in a construct.*wait for the construct"):
        builder.build()


def test_a_step_that_waits_for_a_recovery_step_is_unreachable() -> None:
    builder = (
        create_workflow("w")
        .step("a", noop, after=[], on_failure="a-fallback")
        .step("a-fallback", noop)
        .step("b", noop, after=["a-fallback"])
    )
    with pytest.raises(UnreachableStepError, match=r"runs only when 'a' fails.*wait for 'a' instead"):
        builder.build()


def test_step_names_are_unique_across_branches() -> None:
    builder = create_workflow("w").step("x1", noop).parallel("g", chain("a", "x1"), chain("b", "y"))
    with pytest.raises(
        DuplicateStepError, match=r"two steps named 'x1' \(in the top level and in branch 'a'"
    ):
        builder.build()
    across = create_workflow("w").parallel("g", chain("a", "same"), chain("b", "same"))
    with pytest.raises(DuplicateStepError, match="unique across the whole plan"):
        across.build()


def test_branch_names_are_unique_within_a_group() -> None:
    with pytest.raises(DuplicateStepError, match="two branches named 'a'"):
        create_workflow("w").parallel("g", chain("a", "a1"), chain("a", "a2")).build()


@pytest.mark.parametrize(
    ("builder", "error", "message"),
    [
        (
            lambda: create_workflow("w").step("a", noop, on_failure="zzz"),
            UnknownStepError,
            "on_failure='zzz' names no step of its own chain",
        ),
        (
            lambda: create_workflow("w").step("a", noop, on_failure="a"),
            InvalidStepError,
            "routes its failure to itself",
        ),
        (
            lambda: (
                create_workflow("w")
                .step("x", noop)
                .parallel("g", create_workflow("b").step("b1", noop, on_failure="x"))
            ),
            UnknownStepError,
            r"names no step of its own chain; failures are routed within one chain: none",
        ),
        (
            lambda: create_workflow("w").step("a", noop, goto=["nope"]),
            UnknownStepError,
            "goto target 'nope' is not a step of its own chain",
        ),
        (
            lambda: create_workflow("w").step("a", noop, after=[]).step("b", noop, goto=["a"]),
            InvalidStepError,
            "declares goto= in a dependency plan",
        ),
        (
            lambda: create_workflow("w").parallel(
                "g", create_workflow("b").step("b1", noop).step("b2", noop, after=["b1"])
            ),
            InvalidStepError,
            "uses after=; the steps of a branch run in order",
        ),
    ],
    ids=[
        "unknown-route",
        "self-route",
        "route-out-of-chain",
        "unknown-goto",
        "goto-in-graph",
        "after-in-branch",
    ],
)
def test_bad_routes_are_refused_at_build_time(builder: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        builder().build()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: create_workflow("w").step("a", noop, max_visits=0), "max_visits must be an int >= 1"),
        (lambda: create_workflow("w").step("a", noop, after="b"), "after= takes a list of step names"),
        (lambda: create_workflow("w").parallel("g"), "has no branches"),
        (
            lambda: create_workflow("w").parallel("g", untyped(noop)),
            "must be a chain made with create_workflow",
        ),
        (lambda: create_workflow("w").map("m", item, over=untyped([1, 2])), "over= must be callable"),
        (
            lambda: create_workflow("w").map("m", item, over=items, concurrency=0),
            "concurrency must be an int >= 1",
        ),
        (
            lambda: create_workflow("w").map("m", item, over=items, batch_size=-1),
            "batch_size must be an int >= 1",
        ),
        (lambda: create_workflow("w").branch("b", on=noop, cases={}), "non-empty dict"),
        (
            lambda: create_workflow("w").branch("b", on=noop, cases=untyped({1: chain("c", "c1")})),
            "case keys must be str",
        ),
        (
            lambda: create_workflow("w").branch(
                "b", on=noop, cases={"default": chain("c", "c1")}, default=chain("d", "d1")
            ),
            "would share one label",
        ),
        (
            lambda: create_workflow("w").child("c", untyped("not a workflow")),
            "must be a chain made with create_workflow",
        ),
    ],
    ids=[
        "max-visits",
        "after-string",
        "no-branches",
        "branch-not-chain",
        "over-not-callable",
        "map-concurrency",
        "batch-size",
        "no-cases",
        "case-key",
        "default-label",
        "child-not-workflow",
    ],
)
def test_bad_construct_arguments_say_how_to_fix_them(make: Any, message: str) -> None:
    with pytest.raises(InvalidStepError, match=message):
        make().build()


def test_a_recovery_step_of_a_dependency_plan_serves_one_step() -> None:
    builder = (
        create_workflow("w")
        .step("a", noop, after=[], on_failure="fix")
        .step("b", noop, after=[], on_failure="fix")
        .step("fix", noop)
    )
    with pytest.raises(InvalidStepError, match="both route their failure to 'fix'"):
        builder.build()


def test_a_step_without_after_waits_for_the_step_before_it_and_after_empty_is_a_root() -> None:
    plan = (
        create_workflow("w")
        .step("a", noop)
        .step("b", noop, after=[])
        .step("c", noop)
        .step("d", noop, after=["a", "c"])
        .step("fix", noop)
        .step("e", noop, on_failure="fix")
        .build()
    )
    deps = plan.shape.deps
    assert deps is not None
    assert dict(deps) == {"a": (), "b": (), "c": ("b",), "d": ("a", "c"), "fix": (), "e": ("d",)}
    assert not plan.plain


def test_plain_chains_stay_plain() -> None:
    plain = create_workflow("w").step("a", noop).commit("b", noop).sleep("c", 1).build()
    assert plain.plain
    assert not everything().plain


# --- describe, fingerprint, mermaid -------------------------------------------------------


def test_describe_covers_every_construct_and_is_json() -> None:
    description = everything().describe()
    assert json.loads(json.dumps(description)) == description
    steps = {step["name"]: step for step in description["steps"]}
    assert steps["enrich"]["kind"] == "parallel"
    assert [b["name"] for b in steps["enrich"]["branches"]] == ["left", "right"]
    assert [s["name"] for s in steps["enrich"]["branches"][0]["steps"]] == ["l1", "l2"]
    assert steps["enrich"]["concurrency"] == 2 and steps["enrich"]["fail_fast"] is True
    assert steps["resize"]["kind"] == "map" and steps["resize"]["batch_size"] == 2
    assert set(steps["route"]["cases"]) == {"big"} and steps["route"]["default"]["name"] == "small"
    assert steps["charge"]["on_failure"] == "manual"
    assert steps["audit"]["kind"] == "child" and steps["audit"]["workflow"] == "audit-flow"
    assert steps["review"]["goto"] == ["fetch"] and steps["review"]["max_visits"] == 3
    assert description["graph"] is False
    graph = create_workflow("g").step("a", noop).step("b", noop, after=["a"]).build().describe()
    assert graph["graph"] is True and graph["steps"][1]["after"] == ["a"]


def test_plain_fingerprints_are_unchanged() -> None:
    plain = create_workflow("orders").step("fetch", noop).commit("ship", noop).build()
    same = create_workflow("orders").step("fetch", noop, max_visits=5).commit("ship", noop).build()
    assert plain.fingerprint == same.fingerprint


@pytest.mark.parametrize(
    "changed",
    [
        lambda b: b.parallel("g", chain("a", "a1", "a2"), chain("b", "b1")),  # a step added to a branch
        lambda b: b.parallel("g", chain("a", "a1"), chain("c", "b1")),  # a branch renamed
        lambda b: b.parallel("g", chain("a", "a1")).step("b1", noop),  # a branch moved out
        lambda b: b.branch("g", on=noop, cases={"a": chain("a", "a1"), "b": chain("b", "b1")}),  # kind
    ],
    ids=["branch-step", "branch-name", "branch-removed", "kind"],
)
def test_the_fingerprint_covers_the_structure(changed: Any) -> None:
    base = create_workflow("w").parallel("g", chain("a", "a1"), chain("b", "b1")).build()
    assert changed(create_workflow("w")).build().fingerprint != base.fingerprint


def test_the_fingerprint_covers_dependencies_and_routes() -> None:
    def plan(**options: Any) -> str:
        return (
            create_workflow("w")
            .step("a", noop)
            .step("b", noop)
            .step("c", noop, **options)
            .build()
            .fingerprint
        )

    assert len({plan(), plan(after=["a"]), plan(after=["b"]), plan(on_failure="a"), plan(goto=["a"])}) == 5


def test_mermaid_draws_every_construct() -> None:
    lines = everything().to_mermaid().splitlines()
    text = "\n".join(lines)
    assert lines[0] == "flowchart TD"
    assert 'subgraph s1 ["parallel enrich"]' in text
    assert 'subgraph s1_left ["left"]' in text and 'subgraph s1_right ["right"]' in text
    assert '[/"map resize"/]' in text  # maps are parallelograms
    assert '{"route"}' in text  # branch decisions are diamonds
    assert '-- "big" -->' in text and '-- "default" -->' in text
    assert '>"audit: audit-flow"]' in text  # child workflows are flags
    assert "-. on failure .->" in text
    assert "-. goto .->" in text
    assert lines[-1].endswith("--> done")


def test_mermaid_draws_dependency_edges() -> None:
    plan = (
        create_workflow("g")
        .step("a", noop)
        .step("b", noop, after=["a"])
        .step("c", noop, after=["a"], on_failure="c-fix")
        .step("c-fix", noop)
        .step("d", noop, after=["b", "c"])
        .build()
    )
    lines = plan.to_mermaid().splitlines()
    for edge in (
        "start --> s0",
        "s0 --> s1",
        "s0 --> s2",
        "s1 --> s4",
        "s2 --> s4",
        "s3 --> s4",
        "s4 --> done",
    ):
        assert f"    {edge}" in lines
    assert "    s2 -. on failure .-> s3" in lines


async def test_a_run_meeting_a_changed_graph_is_refused_with_the_differences() -> None:
    def plan(*, wait_after: list[str]) -> Workflow[Any]:
        return (
            create_workflow("graph")
            .step("a", noop)
            .step("b", noop, after=["a"])
            .wait_for_signal("approve", after=wait_after)
            .build()
        )

    async with FluxEngine() as engine:
        suspended = await engine.execute(plan(wait_after=["b"]))
        assert suspended.status == "suspended"
        changed = FluxEngine(engine.storage, workflows=[plan(wait_after=["a"])])
        with pytest.raises(PlanMismatchError, match="different version of workflow 'graph'"):
            await changed.resume(suspended.id)
