"""What mypy infers for flux's generic builder, pinned by running mypy (one run, several cases).

``tests/typing_cases/*.py`` hold cases that must type-check cleanly (``assert_type``). The
snippet below holds cases whose mypy output is the point (``reveal_type`` notes and errors):
it lives in a temporary file so that ``mypy flux tests`` stays clean. Each expectation is a
trailing comment: ``# reveal: <text in the revealed type>`` or ``# error: <error code>``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parent.parent
CASES = sorted((Path(__file__).parent / "typing_cases").glob("*.py"))

SNIPPET = """
from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import attrs

from flux import FluxEngine, StepContext, create_workflow


@dataclass
class Order:
    order_id: str
    amount: float


@attrs.frozen
class Customer:
    name: str


class Ticket(TypedDict):
    code: str


def fetch(ctx: StepContext[Order]) -> str:
    return ctx.input.order_id


orders = (
    create_workflow("orders")
    .input(Order)
    .validate(lambda order: reveal_type(order))  # reveal: Order
    .step("fetch", fetch)
    .step("lambda", lambda ctx: reveal_type(ctx.input))  # reveal: Order
    .step("when", fetch, when=lambda ctx: reveal_type(ctx.input).amount > 1)  # reveal: Order
    .step("undo", fetch, compensate=lambda ctx: reveal_type(ctx))  # reveal: StepContext[reveal_cases.Order]
    .commit("ship", lambda ctx: reveal_type(ctx.input))  # reveal: Order
)
reveal_type(orders)  # reveal: WorkflowBuilder[reveal_cases.Order]
reveal_type(orders.build())  # reveal: Workflow[reveal_cases.Order]
create_workflow("c").input(Customer).step("x", lambda ctx: reveal_type(ctx.input))  # reveal: Customer
create_workflow("t").input(Ticket).step("x", lambda ctx: reveal_type(ctx.input))  # reveal: Ticket

create_workflow("o").input(Order).step("x", lambda ctx: ctx.input.nonexistent)  # error: attr-defined
create_workflow("o").input(Order).commit("x", lambda ctx: ctx.input.amount.upper())  # error: attr-defined
create_workflow("c").input(Customer).step("x", lambda ctx: ctx.input.order_id)  # error: attr-defined
create_workflow("t").input(Ticket).step("x", lambda ctx: ctx.input["nope"])  # error: typeddict-item
create_workflow("t").input(Ticket).step("x", fetch)  # error: arg-type
create_workflow("o").input(Order).validate(lambda order: order.code)  # error: attr-defined
create_workflow("o").step("x", fetch).commit("y", fetch, compensate=fetch)  # error: arg-type


async def run(engine: FluxEngine) -> None:
    await engine.execute(orders, Customer("x"))  # error: misc
    await engine.execute(orders, 42)  # error: misc
"""

EXPECTATION = re.compile(r"#\s*(reveal|error):\s*(.+?)\s*$")
MESSAGE = re.compile(r"^(?P<path>.+?):(?P<line>\d+): (?P<severity>error|note): (?P<text>.*)$")


def expectations(source: str) -> dict[int, tuple[str, str]]:
    found = {}
    for number, line in enumerate(source.splitlines(), start=1):
        match = EXPECTATION.search(line)
        if match:
            found[number] = (match.group(1), match.group(2))
    return found


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[re.Match[str]], int]:
    """One mypy run over the case files and the snippet."""
    folder = tmp_path_factory.mktemp("typing")
    snippet = folder / "reveal_cases.py"
    snippet.write_text(SNIPPET)
    stdout, stderr, status = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--strict",
            "--cache-dir",
            str(folder / "cache"),
            "--show-error-codes",
            "--no-error-summary",
            "--no-pretty",
            *map(str, CASES),
            str(snippet),
        ]
    )
    assert not stderr, stderr
    messages = [m for m in map(MESSAGE.match, stdout.splitlines()) if m]
    return snippet, messages, status


def test_case_files_type_check_cleanly(mypy_output: tuple[Path, list[re.Match[str]], int]) -> None:
    _, messages, _ = mypy_output
    assert CASES, "tests/typing_cases/*.py holds the clean cases"
    cases = {path.resolve() for path in CASES}
    # errors inside flux itself are for `mypy flux tests` to report, not this test
    assert [m.group(0) for m in messages if Path(m.group("path")).resolve() in cases] == []


def test_ctx_input_is_inferred_and_misuse_is_an_error(
    mypy_output: tuple[Path, list[re.Match[str]], int],
) -> None:
    snippet, messages, status = mypy_output
    wanted = expectations(SNIPPET)
    got: dict[int, list[tuple[str, str]]] = {}
    for m in messages:
        if Path(m.group("path")).resolve() == snippet.resolve():
            got.setdefault(int(m.group("line")), []).append((m.group("severity"), m.group("text")))

    problems = []
    for line, (kind, expected) in sorted(wanted.items()):
        seen = got.pop(line, [])
        if kind == "reveal":
            ok = any(sev == "note" and "Revealed type is" in text and expected in text for sev, text in seen)
        else:
            ok = any(sev == "error" and text.endswith(f"[{expected}]") for sev, text in seen)
        if not ok:
            problems.append(f"line {line}: expected {kind} {expected!r}, mypy said {seen}")
    problems += [f"line {line}: unexpected {seen}" for line, seen in sorted(got.items())]
    assert problems == []
    assert status == 1  # the snippet's errors, and only those
