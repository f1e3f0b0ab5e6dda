"""Where a chain or a dependency plan stands, read from recorded visits. Pure functions.

Records are matched to the plan by name (step names are unique across the plan), never by
position or completion order. A construct's nested visits belong to its latest visit: only
records with a ``seq`` above that visit's count, so a revisited group starts afresh.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from flux._shape import TOP, ChainInfo
from flux.engine import _keys
from flux.records import ErrorInfo, StepRecord
from flux.status import StepStatus

if TYPE_CHECKING:
    from flux._shape import PlanShape
    from flux.plan import Workflow

OPEN = (StepStatus.PENDING, StepStatus.RUNNING, StepStatus.SUSPENDED)
DONE = (StepStatus.COMPLETED, StepStatus.SKIPPED)


@attrs.frozen
class Position:
    """Where a chain continues: the step at ``index`` (its open visit ``record``, if any).

    ``failure`` is the error routed to the step there (``on_failure``); ``last`` the latest
    visit of the chain before it, which gives the chain's output when nothing is left to run.
    """

    index: int
    record: StepRecord | None = None
    failure: ErrorInfo | None = None
    last: StepRecord | None = None


def chain_position(info: ChainInfo, latest: Mapping[str, StepRecord], base: int) -> Position:
    """Where ``info`` continues, given each step's latest visit, counting visits after ``base``."""
    last: StepRecord | None = None
    for spec in info.steps:
        record = latest.get(spec.name)
        if record is not None and record.seq > base and (last is None or record.seq > last.seq):
            last = record
    if last is None:
        return Position(info.next_after(0))
    at = info.index[last.step]
    if last.status in OPEN:
        failure = last.actions.get(_keys.FAILURE)
        return Position(at, last, None if failure is None else ErrorInfo.from_json(failure))
    if last.status == StepStatus.FAILED:
        target = info.steps[at].on_failure
        if target is not None:
            return Position(info.index[target], failure=last.error)
        return Position(at)  # a failed run resumed: the step runs again
    goto = last.actions.get(_keys.GOTO)
    if isinstance(goto, str) and goto in info.index:
        return Position(info.index[goto], last=last)
    return Position(info.next_after(at + 1), last=last)


def satisfied(shape: PlanShape, latest: Mapping[str, StepRecord], rerun: Collection[str]) -> set[str]:
    """The top-level steps of a dependency plan that are done: completed or skipped, or failed
    and stood in for by their completed recovery step. Steps in ``rerun`` never are."""
    top = shape.chain(TOP)
    done: set[str] = set()
    for spec in top.steps:
        record = latest.get(spec.name)
        if record is None or spec.name in rerun:
            continue
        if record.status in DONE:
            done.add(spec.name)
        elif record.status == StepStatus.FAILED and spec.on_failure is not None:
            stand_in = latest.get(spec.on_failure)
            if stand_in is not None and stand_in.status in DONE and stand_in.seq > record.seq:
                done.add(spec.name)
    return done


def flow_resume_point(workflow: Workflow[Any], records: Sequence[StepRecord]) -> int:
    """The top-level index a resumed run continues at, for plans beyond a straight chain and
    chains whose history holds a ``goto``. ``len(workflow.steps)`` when nothing is left."""
    latest = {record.step: record for record in records}
    shape = workflow.shape
    top = shape.chain(TOP)
    if shape.deps is None:
        return chain_position(top, latest, -1).index
    done = satisfied(shape, latest, ())
    for index, spec in enumerate(top.steps):
        if spec.name not in done and spec.name not in top.handlers:
            return index
    return len(top.steps)


def jumped(records: Sequence[StepRecord]) -> bool:
    """True when a recorded visit ended with a ``goto``."""
    return any(_keys.GOTO in record.actions for record in records)
