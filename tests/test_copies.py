"""How stored data is copied: structurally, scalars shared, the same result as a JSON round trip."""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from flux.records import StepRecord
from flux.serde import copy_json, dumps
from flux.status import StepStatus
from flux.storage._sqlite_rows import micros, step_params
from flux.storage._sqlite_schema import STEP_COLUMNS, Statements


class Colour(enum.StrEnum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 3


VALUES: list[Any] = [
    None,
    True,
    7,
    2.5,
    "text",
    [],
    {},
    {"a": [1, {"b": [2.0, None, "x"]}], "c": {"d": {}}},
    [[1, 2], [3, [4, {"e": False}]]],
    {"tuple": (1, 2), "enum": Colour.RED, "int-enum": Size.BIG},
    (1, [2]),
    {1: "non-str key"},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_copy_equals_what_a_json_round_trip_gives(value: Any) -> None:
    copy = copy_json(value)
    expected = json.loads(json.dumps(value))
    assert copy == expected
    assert json.dumps(copy) == json.dumps(expected)  # same types too (a tuple comes back a list)


def test_containers_are_new_and_scalars_shared() -> None:
    text = "a string long enough not to be interned " * 3
    inner = {"deep": [1, 2]}
    value: dict[str, Any] = {"list": [inner], "text": text}
    copy = copy_json(value)
    assert copy is not value
    assert copy["list"] is not value["list"]
    assert copy["list"][0] is not inner
    assert copy["list"][0]["deep"] is not inner["deep"]
    assert copy["text"] is text
    inner["deep"].append(3)
    value["list"].append("more")
    assert copy == {"list": [{"deep": [1, 2]}], "text": text}


def test_dumps_is_compact_and_refuses_what_json_cannot_hold() -> None:
    assert dumps({"a": [1, 2.5, None, True, "é"], "b": Colour.RED}) == '{"a":[1,2.5,null,true,"é"],"b":"red"}'
    with pytest.raises(ValueError):
        dumps({"x": float("nan")})
    with pytest.raises(TypeError):
        dumps({"x": object()})
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(RecursionError):
        dumps(looped)


def test_none_parameters_become_literal_nulls() -> None:
    sql = Statements("flux_")
    statement = "UPDATE t SET a = ?, b = ? WHERE id = ? AND owner IS ?"
    assert sql.bind(statement, (1, "x", "id", "me")) == (statement, (1, "x", "id", "me"))
    assert sql.bind(statement, (None, "x", "id", None)) == (
        "UPDATE t SET a = NULL, b = ? WHERE id = ? AND owner IS NULL",
        ("x", "id"),
    )
    with pytest.raises(ValueError, match="takes 4 parameters, got 3"):
        sql.bind(statement, (None, 1, 2))


def test_several_step_records_share_one_upsert() -> None:
    sql = Statements("flux_")
    every = (1 << len(STEP_COLUMNS)) - 1
    one, three = sql.upsert_steps((every,)), sql.upsert_steps((every,) * 3)
    assert one == sql["step_upsert"]
    assert three.count("?") == 3 * one.count("?")
    assert three.endswith(one[one.index(" ON CONFLICT") :])


def test_a_step_record_binds_only_the_columns_it_has() -> None:
    sql = Statements("flux_")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    record = StepRecord(seq=3, step="charge", status=StepStatus.RUNNING, attempts=1, started_at=at)
    shape, values = step_params("run-1", record)
    assert values == ("run-1", 3, "charge", "running", 1, micros(at))
    statement = sql.upsert_steps((shape,))
    assert statement.count("?") == len(values)
    assert statement.count("NULL") == len(STEP_COLUMNS) - len(values)
