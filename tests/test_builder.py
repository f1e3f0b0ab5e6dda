"""The builder and the immutable plan it compiles to: chaining, validation, describe, fingerprint."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux import (
    DuplicateStepError,
    EmptyWorkflowError,
    FluxError,
    InvalidNameError,
    InvalidStepError,
    PlanError,
    RetryPolicy,
    StepContext,
    StepSpec,
    UnknownStepError,
    Workflow,
    WorkflowBuilder,
    create_workflow,
)


def noop(ctx: StepContext[Any]) -> None:
    return None


async def anoop(ctx: StepContext[Any]) -> None:
    return None


def undo(ctx: StepContext[Any]) -> None:
    return None


@dataclass
class Order:
    order_id: str


# --- chaining -----------------------------------------------------------------------------


def test_every_method_returns_a_new_builder_and_leaves_the_old_one_alone() -> None:
    base = create_workflow("orders")
    typed = base.input(Order)
    checked = typed.validate(lambda order: bool(order.order_id))
    one = checked.step("fetch", noop)
    two = one.commit("ship", noop)

    assert isinstance(base, WorkflowBuilder)
    assert len({id(b) for b in (base, typed, checked, one, two)}) == 5
    assert [b.step_count for b in (base, typed, checked, one, two)] == [0, 0, 0, 1, 2]
    assert {b.name for b in (base, typed, checked, one, two)} == {"orders"}
    # branching off a shared prefix does not leak steps between branches
    left = one.step("left", noop).build()
    right = one.step("right", noop).build()
    assert left.step_names == ("fetch", "left")
    assert right.step_names == ("fetch", "right")
    assert one.build().step_names == ("fetch",)
    # the plain builder has no input type; the typed one keeps its type down the chain
    assert base.step("x", noop).build().input_type is None
    assert two.build().input_type is Order


def test_builder_is_frozen() -> None:
    builder = create_workflow("orders").step("fetch", noop)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        builder.name = "other"  # type: ignore[misc]


def test_build_gives_a_frozen_workflow_with_step_specs() -> None:
    policy = RetryPolicy(max_attempts=2)
    wf = (
        create_workflow("orders")
        .input(Order)
        .step("fetch", noop, retries=2, timeout=5, compensate=undo)
        .step("charge", anoop, retry=policy, when=lambda ctx: True)
        .commit("ship", noop, retries=0, timeout=1.5)
        .build()
    )
    assert isinstance(wf, Workflow)
    assert wf.name == "orders"
    assert wf.step_names == ("fetch", "charge", "ship")
    fetch, charge, ship = wf.steps
    assert all(isinstance(spec, StepSpec) for spec in wf.steps)
    assert (fetch.name, fetch.commit, fetch.retries, fetch.timeout) == ("fetch", False, 2, 5.0)
    assert isinstance(fetch.timeout, float)
    assert fetch.compensate is undo and not fetch.is_async
    assert (charge.retries, charge.timeout, charge.retry) == (None, None, policy)
    assert charge.is_async and charge.when is not None
    assert (ship.commit, ship.retries, ship.timeout) == (True, 0, 1.5)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        wf.name = "x"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fetch.retries = 9  # type: ignore[misc]
    assert isinstance(wf.steps, tuple)


def test_async_callable_objects_are_detected() -> None:
    class Handler:
        async def __call__(self, ctx: StepContext[Any]) -> None:
            return None

    (spec,) = create_workflow("w").step("s", Handler()).build().steps
    assert spec.is_async


# --- describe, mermaid --------------------------------------------------------------------


def test_describe_is_json_and_names_each_step() -> None:
    builder = (
        create_workflow("orders")
        .input(Order)
        .step("fetch", noop, retries=2, timeout=5, compensate=undo)
        .step("vip", noop, when=lambda ctx: True, retry=RetryPolicy.PATIENT)
        .commit("ship", noop)
    )
    description = builder.describe()
    assert description == builder.build().describe()
    assert json.loads(json.dumps(description)) == description
    assert description["name"] == "orders"
    assert description["input"] == "Order"
    assert description["fingerprint"] == builder.build().fingerprint
    fetch, vip, ship = description["steps"]
    assert fetch["name"] == "fetch" and fetch["kind"] == "step"
    assert (fetch["retries"], fetch["timeout"], fetch["handler"], fetch["compensate"]) == (
        2,
        5.0,
        "noop",
        "undo",
    )
    assert vip["conditional"] is True and vip["retry_policy"] == 10
    assert ship["kind"] == "commit" and ship["conditional"] is False


def test_to_mermaid_draws_every_step_in_order() -> None:
    wf = (
        create_workflow("orders")
        .step("fetch", noop)
        .step("vip", noop, when=lambda ctx: False)
        .commit("ship", noop)
        .build()
    )
    lines = wf.to_mermaid().splitlines()
    assert lines[0] == "flowchart TD"
    assert '    s0["fetch"]' in lines
    assert '    s2[["ship"]]' in lines  # commit steps are double boxes
    assert "    start --> s0" in lines
    assert "    s0 -. when .-> s1" in lines  # conditional steps get a dotted edge
    assert "    s1 --> s2" in lines
    assert lines[-1] == "    s2 --> done"


def test_index_of_takes_a_name_or_an_index() -> None:
    wf = create_workflow("w").step("a", noop).step("b", noop).build()
    assert (wf.index_of("b"), wf.index_of(0)) == (1, 0)
    with pytest.raises(UnknownStepError, match="its steps are: a, b"):
        wf.index_of("c")
    with pytest.raises(UnknownStepError, match="out of range"):
        wf.index_of(2)


# --- validation ---------------------------------------------------------------------------


def test_empty_workflow() -> None:
    with pytest.raises(EmptyWorkflowError, match=r"add one with \.step\(name, handler\)"):
        create_workflow("empty").build()
    with pytest.raises(EmptyWorkflowError):
        create_workflow("empty").input(Order).describe()


def test_duplicate_step_names() -> None:
    builder = create_workflow("orders").step("fetch", noop)
    with pytest.raises(DuplicateStepError, match="step names must be unique"):
        builder.step("fetch", noop)
    with pytest.raises(DuplicateStepError, match="'fetch'"):
        builder.commit("fetch", noop)
    spec = StepSpec(name="a", handler=noop)
    with pytest.raises(DuplicateStepError, match="more than one step named 'a'"):
        Workflow(name="direct", steps=(spec, spec))


@pytest.mark.parametrize(
    "name",
    ["", " fetch", "fetch ", "-fetch", "fetch/1", "fe\ntch", "a" * 129, "naïve", "étape", 42, None],
    ids=repr,
)
def test_invalid_names(name: Any) -> None:
    """Tried: empty, leading/trailing space, leading '-', '/', a newline, 129 chars,
    non-ASCII letters, and names that are not strings."""
    with pytest.raises(InvalidNameError, match="use 1 to 128 characters") as info:
        create_workflow(name)
    assert isinstance(info.value, PlanError)
    with pytest.raises(InvalidNameError, match="invalid step name"):
        create_workflow("ok").step(name, noop)
    with pytest.raises(InvalidNameError, match="invalid step name"):
        create_workflow("ok").commit(name, noop)


@pytest.mark.parametrize("name", ["a", "fetch-order", "v1.2", "ns:step", "Step 2", "x_y", "9" * 128])
def test_valid_names(name: str) -> None:
    assert create_workflow(name).step(name, noop).build().step_names == (name,)


def test_commit_steps_cannot_compensate() -> None:
    """``commit(..., compensate=fn)`` says why and what to use instead; a hand-made plan is refused too."""
    with pytest.raises(InvalidStepError, match=r"step 'ship': a commit step cannot take compensate=.*\.step"):
        create_workflow("w").commit("ship", noop, compensate=undo)  # type: ignore[arg-type]
    bad = StepSpec(name="ship", handler=noop, kind="commit", compensate=undo)
    with pytest.raises(InvalidStepError, match=r"cannot take compensate=.*Use \.step\(\.\.\.\)"):
        Workflow(name="w", steps=(bad,))


@pytest.mark.parametrize("timeout", [0, -1, -0.5, float("nan"), float("inf"), "10", True], ids=repr)
def test_bad_timeouts(timeout: Any) -> None:
    """Tried: zero, negative, NaN, infinity, a string and a bool."""
    with pytest.raises(InvalidStepError, match="timeout must be a positive") as info:
        create_workflow("w").step("s", noop, timeout=timeout)
    assert isinstance(info.value, FluxError)
    with pytest.raises(InvalidStepError, match="timeout must be a positive"):
        create_workflow("w").commit("s", noop, timeout=timeout)


@pytest.mark.parametrize("retries", [-1, -100, 1.5, "3", True, None.__class__], ids=repr)
def test_bad_retries(retries: Any) -> None:
    """Tried: negative ints, a float, a string, a bool and a class."""
    with pytest.raises(InvalidStepError, match="retries must be an int >= 0"):
        create_workflow("w").step("s", noop, retries=retries)
    with pytest.raises(InvalidStepError, match="retries must be an int >= 0"):
        create_workflow("w").commit("s", noop, retries=retries)


@pytest.mark.parametrize("handler", [None, 42, "noop", ["noop"]], ids=repr)
def test_non_callable_handler(handler: Any) -> None:
    with pytest.raises(InvalidStepError, match="the handler must be a function taking a StepContext"):
        create_workflow("w").step("s", handler)
    with pytest.raises(InvalidStepError, match="the handler must be a function"):
        create_workflow("w").commit("s", handler)


def test_non_callable_options() -> None:
    with pytest.raises(InvalidStepError, match="when= must be callable"):
        create_workflow("w").step("s", noop, when=True)  # type: ignore[arg-type]
    with pytest.raises(InvalidStepError, match="compensate= must be callable"):
        create_workflow("w").step("s", noop, compensate="undo")  # type: ignore[arg-type]
    with pytest.raises(InvalidStepError, match="retry= takes a RetryPolicy"):
        create_workflow("w").step("s", noop, retry=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidStepError, match=r"\.validate\(\) takes a callable"):
        create_workflow("w").validate(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidStepError, match=r"\.input\(\) takes a class"):
        create_workflow("w").input(Order(order_id="1"))  # type: ignore[arg-type]


def test_validation_errors_are_plan_errors_and_value_errors() -> None:
    for exc in (EmptyWorkflowError, DuplicateStepError, InvalidNameError, InvalidStepError):
        assert issubclass(exc, PlanError)
        assert issubclass(exc, FluxError)
        assert issubclass(exc, ValueError)


# --- fingerprint --------------------------------------------------------------------------


def test_fingerprint_is_pinned() -> None:
    """A change here strands every stored run: change the hashing only on purpose."""
    wf = create_workflow("order-process").step("fetch", noop).step("charge", noop).commit("ship", noop)
    assert wf.build().fingerprint == "6a72007ce793ae7f"


names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,15}", fullmatch=True)
kinds = st.sampled_from(["step", "commit"])
plans = st.lists(st.tuples(names, kinds), min_size=1, max_size=8, unique_by=lambda item: item[0])


def build(name: str, plan: list[tuple[str, str]], **options: Any) -> Workflow[Any]:
    builder = create_workflow(name)
    for step, kind in plan:
        add = builder.commit if kind == "commit" else builder.step
        builder = add(step, options.get("handler", noop), retries=options.get("retries"))
    return builder.build()


@given(names, plans, st.integers(0, 9))
def test_fingerprint_ignores_code_and_options(name: str, plan: list[tuple[str, str]], retries: int) -> None:
    first = build(name, plan)
    second = build(name, plan, handler=anoop, retries=retries)
    assert first.fingerprint == second.fingerprint
    assert len(first.fingerprint) == 16
    assert all(c in "0123456789abcdef" for c in first.fingerprint)


@given(names, plans, st.randoms(use_true_random=False))
def test_fingerprint_changes_with_order(name: str, plan: list[tuple[str, str]], rnd: Any) -> None:
    shuffled = plan[:]
    rnd.shuffle(shuffled)
    same = [step for step, _ in shuffled] == [step for step, _ in plan]
    assert (build(name, shuffled).fingerprint == build(name, plan).fingerprint) is same


@given(names, plans, st.data())
def test_fingerprint_changes_with_kind_names_and_length(
    name: str, plan: list[tuple[str, str]], data: st.DataObject
) -> None:
    base = build(name, plan).fingerprint
    index = data.draw(st.integers(0, len(plan) - 1))
    step, kind = plan[index]
    flipped = [*plan[:index], (step, "step" if kind == "commit" else "commit"), *plan[index + 1 :]]
    assert build(name, flipped).fingerprint != base
    renamed = [*plan[:index], (step + "-v2", kind), *plan[index + 1 :]]
    if len({s for s, _ in renamed}) == len(renamed):
        assert build(name, renamed).fingerprint != base
    if len(plan) > 1:
        assert build(name, plan[:-1]).fingerprint != base
    assert build(name + "-other", plan).fingerprint != base


def _no_args() -> None:
    return None


def _two_required(ctx: StepContext[Any], order: Any) -> None:
    return None


def _keyword_only(*, ctx: StepContext[Any]) -> None:
    return None


class _Handler:
    def __call__(self) -> None:
        return None


def _extra_with_default(ctx: StepContext[Any], verbose: bool = False) -> None:
    return None


def _variadic(*args: Any) -> None:
    return None


@pytest.mark.parametrize(
    "handler",
    [_no_args, _two_required, _keyword_only, _Handler(), lambda: None],
    ids=["no-args", "two-required", "keyword-only", "callable-object", "lambda-no-args"],
)
def test_a_handler_that_cannot_take_the_context_is_refused_when_built(handler: Any) -> None:
    with pytest.raises(InvalidStepError, match=r"step 's': the handler .* cannot be called as fn\(ctx\)"):
        create_workflow("w").step("s", handler)
    bad = StepSpec(name="s", handler=handler)  # a plan made by hand is checked by build() too
    with pytest.raises(InvalidStepError, match="cannot be called as fn"):
        Workflow(name="w", steps=(bad,))


def test_the_message_shows_the_signature_to_write() -> None:
    with pytest.raises(InvalidStepError, match=r"_no_args\(\) cannot .* Write it as def _no_args\(ctx\)"):
        create_workflow("w").step("s", _no_args)  # type: ignore[arg-type]  # mypy sees it too
    anonymous: Any = lambda: None  # noqa: E731
    with pytest.raises(InvalidStepError, match=r"<lambda>\(\) cannot .* Write it as lambda ctx: \.\.\."):
        create_workflow("w").step("s", anonymous)


@pytest.mark.parametrize("option", ["when", "compensate"])
def test_predicates_and_compensations_must_take_the_context(option: str) -> None:
    with pytest.raises(InvalidStepError, match=rf"step 's': {option}= .*_no_args\(\) cannot be called"):
        create_workflow("w").step("s", noop, **{option: _no_args})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "handler", [_extra_with_default, _variadic, len, print], ids=["default", "variadic", "len", "print"]
)
def test_handlers_that_can_take_the_context_are_accepted(handler: Any) -> None:
    assert create_workflow("w").step("s", handler).build().step_names == ("s",)


def test_a_map_function_must_take_the_context_and_the_item() -> None:
    items = create_workflow("w").step("list", lambda ctx: [1, 2])
    with pytest.raises(InvalidStepError, match=r"map step 'm': the item function .* fn\(ctx, item\)"):
        items.map("m", noop, over=lambda ctx: ctx.outputs["list"])  # type: ignore[arg-type]
    with pytest.raises(InvalidStepError, match=r"map step 'm': over= .*_no_args\(\) cannot be called"):
        items.map("m", lambda ctx, item: item, over=_no_args)  # type: ignore[arg-type]
    built = items.map("m", lambda ctx, item: item, over=lambda ctx: ctx.outputs["list"]).build()
    assert built.step_names == ("list", "m")
