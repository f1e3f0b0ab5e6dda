"""Reserved keys of a step record's ``actions``: what flux records about its own decisions.

``ctx.action`` names starting with ``flux:`` are reserved for these.
"""

from __future__ import annotations

GOTO = "flux:goto"
"""The step a visit's handler jumped to with ``flux.goto``."""
FAILURE = "flux:failure"
"""On a recovery step's visit: the error (as JSON) of the step whose failure was routed to it."""
ITEMS = "flux:items"
"""On a map visit: the items ``over`` returned, recorded once."""
KEY = "flux:key"
"""On a branch visit: the key ``on`` returned."""
CASE = "flux:case"
"""On a branch visit: the label of the chain it runs (a case key or ``default``)."""
KIND = "flux:kind"
"""On a construct's visit: its kind (``parallel``, ``map``, ``branch``), for tools reading history."""
CHILD = "flux:child"
"""On a visit that started child runs: ``flux:child`` (first), ``flux:child.2``... -> child run id."""
WAITING_CHILD = "flux:waiting-child"
"""On a visit suspended until a child run ends: that child's run id."""
COMPENSATION = "flux:compensation-attempt"
"""On a visit being compensated: the number of the compensation's latest attempt."""
