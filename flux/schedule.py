"""Cron schedules: start a workflow at the times a cron expression names.

A :class:`Schedule` is a plain value; a worker given ``schedules=[...]`` fires it. The slot
maths here is pure (no engine, no I/O): :func:`due_slots` says which slots are due between
the last one fired and now, and which of them fire under the schedule's ``catch_up`` rule.

croniter is imported only when a schedule is built, so ``import flux`` works without the
``server`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from flux.builder import as_workflow
from flux.plan import Workflow

CatchUp = Literal["none", "latest", "all"]
"""What a schedule does about slots missed while no worker ran."""

MISFIRE_GRACE = timedelta(seconds=60)
"""A slot seen later than this after its time was missed (downtime), not merely late."""

SCHEDULE_LABEL = "flux.schedule"
"""The label naming the schedule that started a run."""

SLOT_LABEL = "flux.slot"
"""The label holding the slot time (ISO 8601, UTC) a scheduled run was started for."""

_MAX_SLOTS = 10_000


def _croniter() -> Any:
    try:
        from croniter import croniter
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("flux.Schedule needs croniter: pip install 'flux-workflow[server]'") from exc
    return croniter


def _check_cron(instance: Schedule, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _croniter().is_valid(value):
        raise ValueError(
            f"schedule {instance.name!r}: cron={value!r} is not a cron expression; use five fields "
            "'minute hour day month weekday', e.g. '*/5 * * * *' (every five minutes)"
        )


def _check_timezone(instance: Schedule, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(
            f"schedule {instance.name!r}: timezone={value!r} is not a known IANA time zone; "
            "use a name such as 'UTC' or 'Europe/Paris'"
        ) from None


def _check_catch_up(instance: Schedule, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ("none", "latest", "all"):
        raise ValueError(f"schedule {instance.name!r}: catch_up={value!r}; use 'none', 'latest' or 'all'")


def _check_name(instance: Schedule, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"a schedule needs a non-empty name, got {value!r}")


@attrs.frozen
class Schedule:
    """Start ``workflow`` at every time ``cron`` names.

    Args:
        name: the schedule's name, unique among schedules; with the slot time it makes the
            idempotency key of each run, so a slot fires once however many workers run it.
        workflow: the workflow (or builder) to start.
        cron: five-field cron expression (``"*/5 * * * *"``), read in ``timezone``.
        timezone: IANA time zone of the cron fields (default UTC).
        input: the input of every run (JSON, or a value of the workflow's input type).
        catch_up: slots missed while no worker ran (downtime): ``"none"`` skips them,
            ``"latest"`` (default) starts one run for the newest of them, ``"all"`` starts one
            run per slot, oldest first. A schedule that never fired has missed nothing.
        overlap: False skips a slot while the schedule's previous run is unfinished.

    Raises:
        ValueError: a bad cron expression, time zone, catch_up or name (the message says
            which and what to use).

    >>> from flux import create_workflow
    >>> flow = create_workflow("report").step("send", lambda ctx: None)
    >>> Schedule("nightly", flow, cron="0 2 * * *").cron
    '0 2 * * *'
    """

    name: str = attrs.field(validator=_check_name)
    workflow: Workflow[Any] = attrs.field(converter=as_workflow)
    cron: str = attrs.field(kw_only=True, validator=_check_cron)
    timezone: str = attrs.field(default="UTC", kw_only=True, validator=_check_timezone)
    input: Any = attrs.field(default=None, kw_only=True)
    catch_up: CatchUp = attrs.field(default="latest", kw_only=True, validator=_check_catch_up)
    overlap: bool = attrs.field(default=True, kw_only=True)

    def slots_after(self, start: datetime, end: datetime) -> list[datetime]:
        """Slot times (UTC) in ``(start, end]``, oldest first (at most 10,000)."""
        iterator = _croniter()(self.cron, start.astimezone(ZoneInfo(self.timezone)))
        slots: list[datetime] = []
        while len(slots) < _MAX_SLOTS:
            slot = iterator.get_next(datetime).astimezone(UTC)
            if slot > end:
                break
            slots.append(slot)
        return slots

    def key(self, slot: datetime) -> str:
        """The idempotency key of the run for ``slot``: the schedule name and the slot time."""
        return f"schedule:{self.name}:{slot_text(slot)}"

    def labels(self, slot: datetime) -> Mapping[str, str]:
        """The labels of the run for ``slot``."""
        return {SCHEDULE_LABEL: self.name, SLOT_LABEL: slot_text(slot)}


def slot_text(slot: datetime) -> str:
    """A slot time as ISO 8601 in UTC (``2030-01-01T00:05:00+00:00``)."""
    return slot.astimezone(UTC).isoformat()


def due_slots(schedule: Schedule, last: datetime, now: datetime) -> list[datetime]:
    """The slots to fire now: those in ``(last, now]`` that ``schedule.catch_up`` keeps.

    The newest due slot is on time when it is at most :data:`MISFIRE_GRACE` old; every other
    due slot was missed. ``"all"`` fires every due slot, ``"latest"`` the newest one, ``"none"``
    only an on-time one.
    """
    slots = schedule.slots_after(last, now)
    if not slots:
        return []
    if schedule.catch_up == "all":
        return slots
    newest = slots[-1]
    if schedule.catch_up == "latest" or now - newest <= MISFIRE_GRACE:
        return [newest]
    return []
