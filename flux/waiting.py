"""``flux.wait``: a handler's way to suspend its run until a signal arrives."""

from __future__ import annotations

from datetime import timedelta

import attrs

from flux._duration import to_seconds
from flux._spec import check_name
from flux.control import Directive


@attrs.frozen(kw_only=True)
class WaitRequest(Directive):
    """Returned by a handler (``return flux.wait("approved")``) to wait for ``signal``.

    The run suspends; the signal's payload becomes the step's output. ``timeout`` in seconds.
    """

    signal: str
    timeout: float | None = None


def wait(signal: str, timeout: float | timedelta | None = None) -> WaitRequest:
    """Suspend the calling step's run until ``signal`` arrives (return this from a handler).

    >>> wait("approved", timeout=60)
    WaitRequest(signal='approved', timeout=60.0)
    """
    check_name(signal, "signal")
    seconds = None if timeout is None else to_seconds(timeout, "wait timeout")
    return WaitRequest(signal=signal, timeout=seconds)
