"""Budget periods: UTC calendar days and months. Pure functions, no I/O.

A period starts at 00:00 UTC (of the day, or of the first day of the month) and ends when the next one starts,
whatever the local time zone of the process: two processes in different zones share one period.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Final, Literal

__all__ = ["PERIODS", "Period", "period_id", "period_kind", "period_start", "resets_at"]

Period = Literal["day", "month", "total"]
PERIODS: Final = ("day", "month", "total")


def period_start(period: Period, now: datetime) -> date | None:
    """The UTC day the period containing `now` started (`None` for `total`, which has no start)."""
    day = now.astimezone(UTC).date()
    if period == "day":
        return day
    if period == "month":
        return day.replace(day=1)
    return None


def period_id(period: Period, now: datetime) -> str:
    """A name of the period containing `now`: `2025-06-01` (day), `2025-06` (month) or `total`."""
    start = period_start(period, now)
    if start is None:
        return "total"
    return start.isoformat() if period == "day" else start.isoformat()[:7]


def period_kind(pid: str) -> Period:
    """The kind of a period from its id (`period_id`): `2025-06-01` is a day, `2025-06` a month."""
    if pid == "total":
        return "total"
    return "month" if len(pid) == 7 else "day"


def resets_at(period: Period, now: datetime) -> datetime | None:
    """When the period containing `now` ends (UTC midnight, or the first of the next month); `None` for `total`."""
    start = period_start(period, now)
    if start is None:
        return None
    end = start + timedelta(days=1) if period == "day" else (start + timedelta(days=32)).replace(day=1)
    return datetime(end.year, end.month, end.day, tzinfo=UTC)
