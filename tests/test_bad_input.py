"""Bad input of every kind: each is refused with a clear FluxError subclass, and nothing is half-stored."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

import attrs
import pytest

from flux import (
    FluxEngine,
    FluxError,
    InvalidInputError,
    InvalidNameError,
    InvalidRunStateError,
    InvalidStepError,
    PlanError,
    RunError,
    RunNotFoundError,
    SerializationError,
    StepContext,
    create_workflow,
)
from flux.testing import EventRecorder, FakeClock


class Tier(enum.Enum):
    BASIC = "basic"
    GOLD = "gold"


@dataclass
class Order:
    order_id: str
    quantity: int
    placed_at: datetime
    tier: Tier = Tier.BASIC
    tags: list[str] = field(default_factory=list)


@attrs.frozen
class Customer:
    name: str
    tier: Tier
    since: datetime


class Ticket(TypedDict):
    code: str
    seats: int
    tier: Tier
    at: datetime


ARTICLE: dict[type[Any], str] = {Order: "an", Customer: "a", Ticket: "a"}
GOOD_CUSTOMER = Customer(name="Ada", tier=Tier.GOLD, since=datetime(2030, 1, 1, tzinfo=UTC))
WHEN = "2030-01-02T03:04:05+00:00"
GOOD: dict[type[Any], dict[str, Any]] = {
    Order: {"order_id": "A1", "quantity": 2, "placed_at": WHEN},
    Customer: {"name": "Ada", "tier": "gold", "since": WHEN},
    Ticket: {"code": "T1", "seats": 2, "tier": "gold", "at": WHEN},
}
FIRST_STR = {Order: "order_id", Customer: "name", Ticket: "code"}
DATE_FIELD = {Order: "placed_at", Customer: "since", Ticket: "at"}


@pytest.fixture
async def engine() -> Any:
    async with FluxEngine(clock=FakeClock(), default_retries=2) as engine:
        yield engine


def noop(ctx: StepContext[Any]) -> None:
    return None


async def assert_refused_and_nothing_stored(
    engine: FluxEngine, workflow: Any, value: Any
) -> InvalidInputError:
    calls: list[str] = []
    recorder = EventRecorder()
    unsubscribe = engine.on("*", recorder)
    try:
        with pytest.raises(InvalidInputError) as info:
            await engine.execute(workflow.step("probe", lambda ctx: calls.append("ran")), value)
    finally:
        unsubscribe()
    assert calls == []
    assert recorder.events == []
    assert await engine.list() == []
    assert isinstance(info.value, RunError) and isinstance(info.value, FluxError)
    return info.value


# --- input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [Order, Customer, Ticket], ids=lambda k: k.__name__)
@pytest.mark.parametrize(
    "value",
    [42, "A1", ["A1", 2], None, b"A1", 3.5, object()],
    ids=["int", "str", "list", "none", "bytes", "float", "object"],
)
async def test_input_of_the_wrong_type(engine: FluxEngine, kind: type[Any], value: Any) -> None:
    """Tried: an int, a str, a list, None, bytes, a float and a bare object for each input type."""
    error = await assert_refused_and_nothing_stored(engine, create_workflow("w").input(kind), value)
    assert f"expected {ARTICLE[kind]} {kind.__name__} or a dict of its fields" in str(error)


@pytest.mark.parametrize("kind", [Order, Customer], ids=lambda k: k.__name__)
async def test_a_typed_value_without_input_type_suggests_input(engine: FluxEngine, kind: type[Any]) -> None:
    """Tried: a dataclass and an attrs instance given to a workflow that has no ``.input(T)``."""
    value = Order("A1", 2, datetime(2030, 1, 1, tzinfo=UTC)) if kind is Order else GOOD_CUSTOMER
    error = await assert_refused_and_nothing_stored(engine, create_workflow("w"), value)
    name, article = kind.__name__, ARTICLE[kind]
    assert f"got {article} {name}, but the workflow declares no input type" in str(error)
    assert f"Declare it with create_workflow('w').input({name}) and handlers get {article} {name}" in str(
        error
    )


async def test_a_typed_dict_without_input_type_suggests_input(engine: FluxEngine) -> None:
    """Tried: a Ticket TypedDict holding an enum and a datetime, given to a workflow without ``.input(T)``."""
    ticket: Ticket = {"code": "T1", "seats": 2, "tier": Tier.GOLD, "at": datetime(2030, 1, 1, tzinfo=UTC)}
    error = await assert_refused_and_nothing_stored(engine, create_workflow("w"), ticket)
    assert "the input['tier'] is a Tier object" in str(error)
    assert "If this dict is a TypedDict, declare it with .input(T)" in str(error)


async def test_an_instance_of_another_class(engine: FluxEngine) -> None:
    """Tried: a Customer where an Order is expected."""
    other = Customer(name="Ada", tier=Tier.GOLD, since=datetime(2030, 1, 1, tzinfo=UTC))
    error = await assert_refused_and_nothing_stored(engine, create_workflow("w").input(Order), other)
    assert "got Customer" in str(error)


@pytest.mark.parametrize("kind", [Order, Customer, Ticket], ids=lambda k: k.__name__)
async def test_dict_with_a_missing_field(engine: FluxEngine, kind: type[Any]) -> None:
    """Tried: each input type's valid dict without its date field."""
    value = {k: v for k, v in GOOD[kind].items() if k != DATE_FIELD[kind]}
    error = await assert_refused_and_nothing_stored(engine, create_workflow("w").input(kind), value)
    assert f"required field missing @ input.{DATE_FIELD[kind]}" in str(error)
    assert f"Pass {ARTICLE[kind]} {kind.__name__} or a dict with its fields" in str(error)


@pytest.mark.parametrize("kind", [Order, Customer, Ticket], ids=lambda k: k.__name__)
async def test_dict_with_an_extra_field(engine: FluxEngine, kind: type[Any]) -> None:
    """Tried: each input type's valid dict plus a field the type does not have (a typo)."""
    value = {**GOOD[kind], "quantiy": 3}
    error = await assert_refused_and_nothing_stored(engine, create_workflow("w").input(kind), value)
    assert "extra fields found (quantiy)" in str(error)


@pytest.mark.parametrize("kind", [Order, Customer, Ticket], ids=lambda k: k.__name__)
@pytest.mark.parametrize(
    ("field_of", "bad", "message"),
    [
        (FIRST_STR, 7, "expected str"),
        (FIRST_STR, None, "expected str"),
        (DATE_FIELD, "yesterday", "expected datetime"),
        (DATE_FIELD, 1_700_000_000, "expected datetime"),
    ],
    ids=["int-for-str", "none-for-str", "text-for-datetime", "number-for-datetime"],
)
async def test_dict_with_a_wrongly_typed_field(
    engine: FluxEngine, kind: type[Any], field_of: dict[type[Any], str], bad: Any, message: str
) -> None:
    """Tried: an int and None for a str field; free text and a number for a datetime field."""
    name = field_of[kind]
    value = {**GOOD[kind], name: bad}
    error = await assert_refused_and_nothing_stored(engine, create_workflow("w").input(kind), value)
    assert f"{message} @ input.{name}" in str(error)


@pytest.mark.parametrize(
    ("kind", "value", "where"),
    [
        (Order, {**GOOD[Order], "tier": "platinum"}, "input.tier"),
        (Order, {**GOOD[Order], "quantity": True}, "input.quantity"),
        (Order, {**GOOD[Order], "quantity": "2"}, "input.quantity"),
        (Order, {**GOOD[Order], "tags": "vip"}, "input.tags"),
        (Order, {**GOOD[Order], "tags": [1]}, "input.tags"),
        (Ticket, {**GOOD[Ticket], "seats": 2.5}, "input.seats"),
    ],
    ids=[
        "unknown-enum",
        "bool-for-int",
        "str-for-int",
        "str-for-list",
        "int-in-list-of-str",
        "float-for-int",
    ],
)
async def test_more_wrongly_typed_fields(engine: FluxEngine, kind: type[Any], value: Any, where: str) -> None:
    """Tried: an unknown enum value, a bool and a str for an int, a str for a list, an int
    inside a list of str, a float for an int."""
    error = await assert_refused_and_nothing_stored(engine, create_workflow("w").input(kind), value)
    assert where in str(error)


@pytest.mark.parametrize(
    "order",
    [
        Order(order_id=7, quantity=2, placed_at=datetime(2030, 1, 1, tzinfo=UTC)),  # type: ignore[arg-type]
        Order(order_id="A1", quantity=2, placed_at="2030-01-01"),  # type: ignore[arg-type]
        Order(order_id="A1", quantity=2, placed_at=datetime(2030, 1, 1), tier="gold"),  # type: ignore[arg-type]
        Order(order_id="A1", quantity=2, placed_at=datetime(2030, 1, 1), tags=[{1, 2}]),  # type: ignore[list-item]
    ],
    ids=["int-order-id", "str-date", "str-enum", "set-in-tags"],
)
async def test_an_instance_holding_wrongly_typed_fields(engine: FluxEngine, order: Order) -> None:
    """Tried: Order instances whose fields hold an int for a str, a str for a datetime and
    for an enum, and a set inside a list. Such a run could never be resumed from storage."""
    await assert_refused_and_nothing_stored(engine, create_workflow("w").input(Order), order)


@pytest.mark.parametrize(
    "value",
    [{1, 2}, object(), float("nan"), float("inf"), {"a": {1: "x"}}, {"at": datetime(2030, 1, 1)}, b"raw"],
    ids=["set", "object", "nan", "inf", "int-key", "datetime", "bytes"],
)
async def test_untyped_input_must_be_json(engine: FluxEngine, value: Any) -> None:
    """Tried (no .input type): a set, an object, NaN, infinity, a dict with an int key, a
    datetime inside a dict, bytes."""
    error = await assert_refused_and_nothing_stored(engine, create_workflow("w"), value)
    assert "cannot be stored" in str(error)


async def test_a_validator_returning_false(engine: FluxEngine) -> None:
    """Tried: a validator returning False for a quantity of 0."""

    def positive(order: Order) -> bool:
        return order.quantity > 0

    wf = create_workflow("w").input(Order).validate(positive)
    error = await assert_refused_and_nothing_stored(engine, wf, {**GOOD[Order], "quantity": 0})
    assert "rejected by validator" in str(error) and "positive" in str(error)
    assert "returned False" in str(error)
    result = await engine.execute(wf.step("ok", noop), GOOD[Order])
    assert result.status == "completed"


async def test_a_raising_validator(engine: FluxEngine) -> None:
    """Tried: a validator raising ValueError, then one raising KeyError."""

    def known_customer(order: Order) -> None:
        if not order.order_id.startswith("A"):
            raise ValueError("unknown order prefix")

    def lookup(order: Order) -> None:
        raise KeyError(order.order_id)

    wf = create_workflow("w").input(Order).validate(known_customer)
    error = await assert_refused_and_nothing_stored(engine, wf, {**GOOD[Order], "order_id": "Z9"})
    assert "unknown order prefix" in str(error)
    assert isinstance(error.__cause__, ValueError)
    wf2 = create_workflow("w").input(Order).validate(known_customer).validate(lookup)
    error = await assert_refused_and_nothing_stored(engine, wf2, GOOD[Order])
    assert "lookup" in str(error)


# --- values a step tries to store -----------------------------------------------------------


class Money:
    def __init__(self, cents: int) -> None:
        self.cents = cents


@pytest.mark.parametrize(
    ("output", "what"),
    [
        ({1, 2}, "a set object"),
        (Money(5), "a Money object"),
        (float("nan"), "the float nan"),
        (float("-inf"), "the float -inf"),
        ({"total": float("nan")}, "['total'] is the float nan"),
        ({"items": [1, {2}]}, "['items'][1] is a set object"),
        ({1: "one"}, "the non-string key 1"),
        ({"when": datetime(2030, 1, 1, tzinfo=UTC)}, "['when'] is a datetime object"),
        (b"bytes", "a bytes object"),
    ],
    ids=["set", "object", "nan", "inf", "nested-nan", "nested-set", "int-key", "datetime", "bytes"],
)
async def test_a_handler_returning_a_non_json_value(engine: FluxEngine, output: Any, what: str) -> None:
    """Tried: a set, an object, NaN, -inf, NaN and a set nested in dicts and lists, an int key,
    a datetime and bytes as a step's return value."""
    attempts: list[int] = []

    def produce(ctx: StepContext[Any]) -> Any:
        attempts.append(ctx.attempt)
        ctx.data["touched"] = True
        return output

    result = await engine.execute(create_workflow("w").step("ok", lambda ctx: 1).step("produce", produce))
    assert result.status == "failed"
    assert attempts == [1]  # retrying cannot fix it
    assert result.error is not None
    assert result.error.type == "SerializationError"
    assert result.error.step == "produce"
    assert "the output of step 'produce'" in result.error.message
    assert what in result.error.message
    assert "flux keeps only JSON values" in result.error.message
    assert result.outputs == {"ok": 1}
    assert result.data == {}  # the step's data changes went with it
    assert await engine.get(result.id) == result


@pytest.mark.parametrize(
    ("write", "fragments"),
    [
        (
            lambda data: data.__setitem__("tags", {"a", "b"}),
            ["ctx.data['tags'] (set by step 'write') is a set"],
        ),
        (
            lambda data: data.__setitem__("money", Money(1)),
            ["ctx.data['money'] (set by step 'write') is a Money"],
        ),
        (lambda data: data.__setitem__("ratio", math.nan), ["ctx.data['ratio']", "is the float nan"]),
        (
            lambda data: data.__setitem__("nested", {"a": [{1: "x"}]}),
            ["['nested']", "['a'][0] is the non-string key 1"],
        ),
        (
            lambda data: data.update(at=datetime(2030, 1, 1)),
            ["ctx.data['at'] (set by step 'write') is a datetime"],
        ),
        (lambda data: data.setdefault("s", {1}), ["ctx.data['s']", "is a set"]),
        (lambda data: data["items"].append({1}), ["ctx.data['items']", "[1] is a set"]),
    ],
    ids=["set", "object", "nan", "nested-int-key", "update-datetime", "setdefault-set", "in-place-append"],
)
async def test_non_json_data(engine: FluxEngine, write: Any, fragments: list[str]) -> None:
    """Tried: a set, an object, NaN, a nested int key, a datetime through update(), a set through
    setdefault(), and a set appended in place to an existing list."""

    def writer(ctx: StepContext[Any]) -> None:
        ctx.data["fine"] = "yes"
        write(ctx.data)

    wf = create_workflow("w").step("init", lambda ctx: ctx.data.update(items=[0])).step("write", writer)
    result = await engine.execute(wf)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "SerializationError"
    for fragment in fragments:
        assert fragment in result.error.message
    assert result.history[1].attempts == 1
    assert result.data == {"items": [0]}  # nothing of the failed step is kept
    assert await engine.get(result.id) == result


@pytest.mark.parametrize(
    "write",
    [
        lambda data: data.__setitem__(1, "x"),
        lambda data: data.update({("a", "b"): 1}),
        lambda data: data.setdefault(None, 1),
    ],
    ids=["int", "tuple", "none"],
)
async def test_non_str_data_keys(engine: FluxEngine, write: Any) -> None:
    """Tried: an int key by assignment, a tuple key through update(), a None key through setdefault()."""
    raised: list[BaseException] = []

    def writer(ctx: StepContext[Any]) -> None:
        try:
            write(ctx.data)
        except Exception as exc:
            raised.append(exc)
            raise

    result = await engine.execute(create_workflow("w").step("write", writer))
    (exc,) = raised
    assert isinstance(exc, SerializationError) and isinstance(exc, TypeError)
    assert "ctx.data keys must be str" in str(exc)
    assert result.status == "failed"
    assert result.error is not None and result.error.type == "SerializationError"
    assert result.data == {}


# --- ids, definitions -----------------------------------------------------------------------


async def test_unknown_run_ids(engine: FluxEngine) -> None:
    """Tried: get, resume, retry_step and replay with an id nothing was stored under."""
    for call in (
        engine.get("nope"),
        engine.resume("nope"),
        engine.retry_step("nope", "a"),
        engine.replay("nope"),
    ):
        with pytest.raises(RunNotFoundError, match="no run with id 'nope'") as info:
            await call
        assert info.value.run_id == "nope"
        assert isinstance(info.value, LookupError)
        assert "engine.list()" in str(info.value)


async def test_a_reused_run_id(engine: FluxEngine) -> None:
    """Tried: a second execute with the run id of a stored run."""
    first = await engine.execute(create_workflow("w").step("a", lambda ctx: 1), run_id="r1")
    with pytest.raises(InvalidRunStateError, match="already used") as info:
        await engine.execute(create_workflow("w").step("a", lambda ctx: 2), run_id="r1")
    assert isinstance(info.value, FluxError)
    assert await engine.get("r1") == first
    assert len(await engine.list()) == 1


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: create_workflow("w").step("a", None), InvalidStepError),  # type: ignore[arg-type]
        (lambda: create_workflow("w").step("a", "noop"), InvalidStepError),  # type: ignore[arg-type]
        (lambda: create_workflow("w").step("a", noop, retries=-1), InvalidStepError),
        (lambda: create_workflow("w").step("a", noop, retries=2.5), InvalidStepError),  # type: ignore[arg-type]
        (lambda: create_workflow("w").step("a", noop, timeout=0), InvalidStepError),
        (lambda: create_workflow("w").step("a", noop, timeout=-3), InvalidStepError),
        (lambda: create_workflow("w").step("a", noop, timeout="30"), InvalidStepError),  # type: ignore[arg-type]
        (lambda: create_workflow("w").step("", noop), InvalidNameError),
        (lambda: create_workflow("w").step("a/b", noop), InvalidNameError),
        (lambda: create_workflow(""), InvalidNameError),
        (lambda: create_workflow("w").build(), PlanError),
    ],
    ids=[
        "none-handler",
        "str-handler",
        "negative-retries",
        "float-retries",
        "zero-timeout",
        "negative-timeout",
        "str-timeout",
        "empty-step-name",
        "slash-in-name",
        "empty-workflow-name",
        "no-steps",
    ],
)
def test_bad_definitions(build: Any, error: type[PlanError]) -> None:
    """Tried: None and a str as handlers, retries of -1 and 2.5, timeouts of 0, -3 and "30",
    empty and slashed names, and a workflow with no steps (more in test_builder.py)."""
    with pytest.raises(error) as info:
        build()
    assert isinstance(info.value, PlanError)
    assert isinstance(info.value, FluxError)


# --- run ids (issue 9, item 14) -------------------------------------------------------------


@pytest.mark.parametrize(
    "run_id",
    [123, "", "order-7/approve#1", "a/b", "a#1", "x" * 201, "tab\there", b"bytes", "\udcff"],
    ids=["int", "empty", "child-shaped", "slash", "hash", "too-long", "control-char", "bytes", "surrogate"],
)
@pytest.mark.parametrize("call", ["execute", "start"])
async def test_run_ids_are_checked_before_anything_is_stored(
    engine: FluxEngine, run_id: Any, call: str
) -> None:
    """Bad input: ``run_id=123`` (used to complete the run, then raise TypeError), ``""`` (used
    to become a random id), ``"order-7/approve#1"`` (shaped like a child id: its end used to
    signal the unrelated run ``order-7``), other ids with ``/`` or ``#``, 201 characters, a
    control character, bytes, a lone surrogate. InvalidInputError, and nothing is stored."""
    flow = create_workflow("w").step("a", lambda ctx: 1)
    with pytest.raises(InvalidInputError, match=r"run_id must be a non-empty str of at most 200"):
        if call == "execute":
            await engine.execute(flow, run_id=run_id)
        else:
            await engine.start(flow, run_id=run_id)
    assert await engine.list() == []


async def test_a_long_printable_run_id_is_accepted(engine: FluxEngine) -> None:
    result = await engine.execute(create_workflow("w").step("a", lambda ctx: 1), run_id="ü-" + "x" * 198)
    assert result.status == "completed"


# --- ctx.action names (issue 9, item 11) --------------------------------------------------------


async def test_an_action_name_used_twice_in_one_attempt_fails_the_step(engine: FluxEngine) -> None:
    """Bad input: ``ctx.action("pay", f)`` then ``ctx.action("pay", g)`` in one attempt. The
    second function used to be skipped silently (the first result returned); now the step
    fails with InvalidStepError, and ``g`` never runs."""
    calls: list[str] = []

    async def step(ctx: StepContext[Any]) -> None:
        await ctx.action("pay", lambda: calls.append("f"))
        await ctx.action("pay", lambda: calls.append("g"))

    result = await engine.execute(create_workflow("w").step("a", step))
    assert result.status == "failed"
    assert result.error is not None and result.error.type == "InvalidStepError"
    assert "'pay' is used twice in one attempt" in result.error.message
    assert calls == ["f"]


@pytest.mark.parametrize("name", ["flux:goto", "flux:anything", "", 7])
async def test_reserved_or_invalid_action_names_are_refused(engine: FluxEngine, name: Any) -> None:
    """Bad input: ``ctx.action`` names starting with ``flux:`` (reserved for what flux
    records), an empty name, a non-str. The step fails with InvalidStepError; nothing runs."""
    calls: list[str] = []

    async def step(ctx: StepContext[Any]) -> None:
        await ctx.action(name, lambda: calls.append("ran"))

    result = await engine.execute(create_workflow("w").step("a", step))
    assert result.error is not None and result.error.type == "InvalidStepError"
    assert "reserved for flux" in result.error.message
    assert calls == []


async def test_a_retried_attempt_still_reuses_its_recorded_action(engine: FluxEngine) -> None:
    """Not a duplicate: the same action name in the next attempt returns the recorded result."""
    calls: list[int] = []

    def pay(attempt: int) -> int:
        calls.append(attempt)
        return attempt

    async def step(ctx: StepContext[Any]) -> int:
        paid = await ctx.action("pay", lambda: pay(ctx.attempt))
        if ctx.attempt == 1:
            raise ConnectionError("flaky")
        return paid

    result = await engine.execute(create_workflow("w").step("a", step, retries=1))
    assert (result.status, result.outputs, calls) == ("completed", {"a": 1}, [1])
