"""``flux.goto``: a handler's way to jump to another step of its chain.

A handler that returns ``flux.goto("review")`` ends its visit (completed, its data changes kept)
and the run continues at the step called ``review``, forwards or backwards. Every visit of a
step is recorded on its own, so a state machine that goes round a loop shows each turn in the
history; ``max_visits`` (default 100 per step) stops a loop that never ends.
"""

from __future__ import annotations

import attrs

from flux._spec import check_name


class Directive:
    """Base of the values a handler returns to steer its run rather than to produce an output."""

    __slots__ = ()


@attrs.frozen(kw_only=True)
class Goto(Directive):
    """Returned by a handler (``return flux.goto("step")``) to continue the run at ``step``.

    The target must be a step of the same chain: the workflow's top level, or the same branch
    of a parallel group or case of a branch. A target flux cannot find fails the step with
    ``UnknownStepError``.
    """

    step: str


def goto(step: str) -> Goto:
    """Continue the run at ``step`` once this handler returns (return the value it gives).

    >>> goto("review")
    Goto(step='review')
    """
    return Goto(step=check_name(step, "goto target"))
