"""The injected clock: the only place business code learns what time it is.

Production uses :class:`SystemClock`; tests and the demo use :class:`ManualClock` and advance it,
so a 28-day cohort replays in seconds and no test sleeps.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Protocol


class Clock(Protocol):
    """Something that says what time it is now (always timezone-aware, UTC)."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        """Jump to ``moment`` (aware). Going backwards is refused: time in the bot never rewinds."""
        if moment.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        moment = moment.astimezone(UTC)
        if moment < self._now:
            raise ValueError(f"clock cannot go back from {self._now} to {moment}")
        self._now = moment

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by ``delta`` and return the new now."""
        self.set(self._now + delta)
        return self._now


def learning_day(moment: datetime, tz: tzinfo, day_start_hour: int) -> date:
    """The learning day a moment belongs to.

    A learning day starts at ``day_start_hour`` local time (default 04:00), so a check-in at 01:30
    counts for the day before.
    """
    if moment.tzinfo is None:
        raise ValueError("learning_day needs an aware datetime")
    return (moment.astimezone(tz) - timedelta(hours=day_start_hour)).date()


def day_start(day: date, tz: tzinfo, day_start_hour: int) -> datetime:
    """The aware moment (UTC) at which learning day ``day`` begins."""
    local = datetime(day.year, day.month, day.day, day_start_hour, tzinfo=tz)
    return local.astimezone(UTC)
