"""The one way flux reads a duration: seconds (an int or a float) or a ``timedelta``.

Every duration a user gives (timeouts, delays, sleeps, deadlines, leases, TTLs, intervals) goes
through :func:`to_seconds` where it is given, so NaN, infinity, negatives and values so large
that ``now + value`` would overflow a ``datetime`` are refused at once, with a message naming
the argument and the largest value allowed, instead of failing later inside a run. The caller
picks the error type of its layer (``InvalidStepError`` in the builder, ``ValueError``
elsewhere). This module imports nothing from flux.
"""

from __future__ import annotations

import math
from datetime import timedelta

MAX_SECONDS = 100 * 365 * 24 * 3600
"""The longest duration flux accepts: 100 years (3,153,600,000 seconds). Far enough for any
timer, short enough that adding it to any time before the year 9900 fits a ``datetime``."""

_LIMIT = f"at most {MAX_SECONDS} seconds (100 years)"


def to_seconds(
    value: float | timedelta,
    name: str,
    *,
    error: type[Exception] = ValueError,
    zero: bool = False,
) -> float:
    """``value`` (seconds or a timedelta) as float seconds, checked.

    Args:
        value: an ``int``, a ``float`` or a ``timedelta`` (``bool`` is refused).
        name: the argument's name, for the message (``"timeout"``, ``"lease"``...).
        error: the exception type to raise (the caller's layer decides).
        zero: whether 0 is allowed (a delay may be 0; a timeout may not).

    Raises:
        error: ``value`` is not a number or timedelta, is NaN, infinite, negative (or zero
            when ``zero`` is False), or longer than :data:`MAX_SECONDS`.

    >>> to_seconds(timedelta(minutes=2), "timeout")
    120.0
    """
    kind = "a non-negative" if zero else "a positive"
    wanted = f"{name} must be {kind}, finite number of seconds or a timedelta, {_LIMIT}; got {value!r}"
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int) and not isinstance(value, bool):
        if value > MAX_SECONDS:  # compared as an int: float(10**400) would overflow
            raise error(wanted)
        seconds = float(value)
    elif isinstance(value, float):
        seconds = value
    else:
        raise error(wanted)
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not zero) or seconds > MAX_SECONDS:
        raise error(wanted)
    return seconds


def to_timedelta(
    value: float | timedelta, name: str, *, error: type[Exception] = ValueError, zero: bool = False
) -> timedelta:
    """:func:`to_seconds`, as a ``timedelta``."""
    if isinstance(value, timedelta):
        to_seconds(value, name, error=error, zero=zero)
        return value
    return timedelta(seconds=to_seconds(value, name, error=error, zero=zero))


def to_count(value: int, name: str, *, minimum: int, error: type[Exception] = ValueError) -> int:
    """``value`` checked as a whole number of at least ``minimum`` (``bool``, floats, NaN and
    infinity refused): attempt and retry counts.

    >>> to_count(2.5, "max_attempts", minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: max_attempts must be an int >= 1 (not a bool or float); got 2.5
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise error(f"{name} must be an int >= {minimum} (not a bool or float); got {value!r}")
    return value
