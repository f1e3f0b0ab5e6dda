"""A run's step visits drawn as bars on one time axis (attempts, waits, retries, errors)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

from flux.records import StepRecord
from flux.status import StepStatus


def timeline_html(records: Sequence[StepRecord], start: datetime | None, end: datetime) -> str:
    """One row per visit: its name, a bar from its start to its finish (or ``end`` while it is
    unfinished), and what happened (attempts, retries, what it waits for, its error)."""
    if not records:
        return "<div class='timeline muted'>No steps yet.</div>"
    origin = start or min(r.started_at or end for r in records)
    span = max((end - origin).total_seconds(), 1e-3)
    rows = []
    for record in records:
        begin = record.started_at or origin
        finish = record.finished_at or end
        left = max(0.0, (begin - origin).total_seconds() / span * 100)
        width = max(0.4, (finish - begin).total_seconds() / span * 100)
        width = min(width, 100 - left) if left < 100 else 0.4
        waiting = " waiting" if record.status == StepStatus.SUSPENDED else ""
        rows.append(
            f"<div class=tl-row data-step='{escape(record.step, quote=True)}' "
            f"data-status='{record.status.value}'>"
            f"<div class=tl-name title='{escape(record.step, quote=True)}'>{escape(record.step)}</div>"
            f"<div class=tl-track><div class='tl-bar s-{record.status.value}{waiting}' "
            f"style='left:{left:.2f}%;width:{width:.2f}%' title='{escape(record.status.value)}'></div></div>"
            f"<div class=tl-info>{escape(_info(record))}</div>{_error(record)}</div>"
        )
    axis = (
        f"<div class='tl-row tl-info'><div></div><div>{origin:%H:%M:%S} → {end:%H:%M:%S} "
        f"({span:.2f}s)</div><div></div></div>"
    )
    return f"<div class=timeline id=timeline>{''.join(rows)}{axis}</div>"


def logs_html(records: Sequence[StepRecord]) -> str:
    """The ``ctx.log`` lines kept with each visit, as one table (empty when none were kept)."""
    rows = [
        f"<tr class='log-{escape(line.level, quote=True)}'><td>{escape(record.step)} #{record.seq}</td>"
        f"<td>{line.time:%H:%M:%S}</td><td>{escape(line.level)}</td><td>{escape(line.message)}</td></tr>"
        for record in records
        for line in record.logs
    ]
    if not rows:
        return ""
    head = "<tr><th>Step</th><th>Time</th><th>Level</th><th>Message</th></tr>"
    return f"<h2>Logs</h2><table id=run-logs>{head}{''.join(rows)}</table>"


def _info(record: StepRecord) -> str:
    parts = [record.status.value.replace("_", " ")]
    if record.attempts > 1:
        parts.append(f"{record.attempts} attempts ({record.attempts - 1} retried)")
    if record.waiting_for:
        waiting = record.status == StepStatus.SUSPENDED
        parts.append(f"{'waiting' if waiting else 'waited'} for {record.waiting_for}")
    elif record.wake_at is not None and record.status == StepStatus.SUSPENDED:
        parts.append(f"until {record.wake_at:%H:%M:%S}")
    if record.duration is not None:
        parts.append(f"{record.duration:.3f}s")
    return " · ".join(parts)


def _error(record: StepRecord) -> str:
    if record.error is None:
        return ""
    return f"<div class=tl-error>{escape(record.error.type)}: {escape(record.error.message)}</div>"
