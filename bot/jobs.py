"""What a scheduled job is (SPEC §13): daily jobs at a local time, one-off timers, quiet hours.

A :class:`DailyJob` runs once per matching local day at a local time; a timer (a row in
``storage.schedule``) runs once at a moment. Both receive the same :class:`~bot.context.Context`
as handlers, plus a :class:`Run` saying which occurrence this is. Registering another daily job
is one line in :func:`bot.app.build_jobs`, e.g.::

    jobs += per_cohort(settings, "streak.remind", time(21, 0), streaks.remind)
    jobs += per_teacher(settings, "digest", time(21, 30), digest.send)

This module holds only the definitions and the calendar arithmetic; :mod:`bot.scheduler` runs them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from bot.config import CohortSettings, GroupSettings, Settings
from bot.context import Context


@dataclass(frozen=True)
class Run:
    """One occurrence of a job: which job, for which (nominal, UTC) moment and local date."""

    job_id: str
    scheduled_for: datetime
    local_date: date
    chat_id: str | None = None
    cohort_id: str | None = None
    target: str | None = None  # e.g. the teacher a per-teacher job is for
    payload: dict[str, Any] = field(default_factory=dict)  # a timer's stored payload


JobFn = Callable[[Context, Run], Awaitable[None]]
#: A date filter made from a cohort's settings (see :func:`cohort_days`).
CohortFilter = Callable[[CohortSettings], Callable[[date], bool]]


@dataclass(frozen=True)
class DailyJob:
    """A job that runs at local time ``at`` (in ``tz``) on every local date ``on(date)`` accepts.

    ``chat_id`` set: it posts to that group, gets ``ctx.group``/``ctx.cohort``, and waits out the
    quiet hours. ``quiet=False`` for jobs that never post in groups (private digests).

    ``days``, for a job on a cohort's days, is the filter ``on`` was made with: the scheduler
    makes it again from the cohort's effective dates when a leader has moved them (开营/结营), so
    the group's rhythm starts, counts its days and stops with the cohort (:meth:`on_for`)."""

    id: str
    at: time
    tz: tzinfo
    fn: JobFn
    on: Callable[[date], bool] = lambda _d: True
    chat_id: str | None = None
    cohort_id: str | None = None
    target: str | None = None
    quiet: bool = True
    days: CohortFilter | None = None

    def on_for(self, cohort: CohortSettings | None) -> Callable[[date], bool]:
        """The date filter for ``cohort``'s dates (``on`` without one or without ``days``)."""
        return self.on if cohort is None or self.days is None else self.days(cohort)

    def nominal(self, day: date) -> datetime:
        """The UTC moment of the occurrence on local date ``day``."""
        return datetime.combine(day, self.at, tzinfo=self.tz).astimezone(UTC)

    def occurrences(
        self,
        around: datetime,
        before: int = 8,
        after: int = 8,
        on: Callable[[date], bool] | None = None,
    ) -> Iterator[datetime]:
        """Nominal moments on local dates from ``before`` days before ``around`` to ``after``
        days after it, oldest first (on the dates ``on``, default :attr:`on`, accepts)."""
        accepts = on or self.on
        local = around.astimezone(self.tz).date()
        for offset in range(-before, after + 1):
            day = local + timedelta(days=offset)
            if accepts(day):
                yield self.nominal(day)


def cohort_days(cohort: CohortSettings, *days: int) -> Callable[[date], bool]:
    """A date filter: the cohort's learning days (all of them, or only the given day numbers)."""
    wanted = set(days)

    def on(day: date) -> bool:
        n = cohort.cohort_day(day)
        return 1 <= n <= cohort.length_days and (not wanted or n in wanted)

    return on


def cohort_job(
    cohort: CohortSettings,
    job_id: str,
    at: time,
    fn: JobFn,
    *,
    chat_id: str | None = None,
    target: str | None = None,
    quiet: bool = True,
    days: CohortFilter = cohort_days,
) -> DailyJob:
    """A job on ``cohort``'s days (``days``: all its learning days by default), in its timezone;
    the scheduler follows the cohort's dates when a leader moves them."""
    return DailyJob(
        job_id,
        at,
        cohort.timezone,
        fn,
        days(cohort),
        chat_id,
        cohort.id,
        target=target,
        quiet=quiet,
        days=days,
    )


def per_group(
    settings: Settings,
    name: str,
    at: time,
    fn: JobFn,
    on: CohortFilter = cohort_days,
) -> list[DailyJob]:
    """One job per configured group, ``id = f"{name}:{chat_id}"``, on the cohort's days."""
    return [
        cohort_job(c, f"{name}:{g.chat_id}", at, fn, chat_id=g.chat_id, days=on)
        for c in settings.cohorts
        for g in c.groups
    ]


def per_cohort(
    settings: Settings, name: str, at: time, fn: JobFn, quiet: bool = False
) -> list[DailyJob]:
    """One job per cohort on its learning days, ``id = f"{name}:{cohort_id}"`` (not a group post
    unless ``quiet``; the function finds the groups it needs in ``settings``)."""
    return [cohort_job(c, f"{name}:{c.id}", at, fn, quiet=quiet) for c in settings.cohorts]


def per_teacher(settings: Settings, name: str, at: time, fn: JobFn) -> list[DailyJob]:
    """One job per teacher of each cohort, ``id = f"{name}:{cohort_id}:{teacher}"``;
    ``run.target`` is the teacher's user id. Private sends: quiet hours do not apply."""
    return [
        cohort_job(c, f"{name}:{c.id}:{t}", at, fn, target=t, quiet=False)
        for c in settings.cohorts
        for t in sorted({t for g in c.groups for t in g.teachers})
    ]


@dataclass(frozen=True)
class QuietHours:
    """The local hours in which nothing is posted to groups (SPEC §6), e.g. 22:30-07:30."""

    start: time
    end: time

    def contains(self, moment: datetime, tz: tzinfo) -> bool:
        """Whether ``moment`` falls in the quiet hours, in local time ``tz``."""
        if self.start == self.end:
            return False
        t = moment.astimezone(tz).time()
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def postpone(self, moment: datetime, tz: tzinfo) -> datetime:
        """``moment`` itself, or the end of the quiet hours it falls in (UTC)."""
        if not self.contains(moment, tz):
            return moment
        local = moment.astimezone(tz)
        day = local.date() if local.time() < self.end else local.date() + timedelta(days=1)
        return datetime.combine(day, self.end, tzinfo=tz).astimezone(UTC)


def quiet_hours(settings: Settings) -> QuietHours:
    """The configured quiet hours (``[rhythm].quiet_start`` / ``quiet_end``)."""
    return QuietHours(settings.rhythm.quiet_start, settings.rhythm.quiet_end)


def quiet_now(ctx: Context, cohort: CohortSettings | None = None) -> bool:
    """Whether it is quiet hours now in ``cohort`` (default: the context's; False without one):
    handlers that post to a group on their own initiative check this (answers to commands need
    not)."""
    cohort = cohort or ctx.cohort
    if cohort is None:
        return False
    return quiet_hours(ctx.settings).contains(ctx.clock.now(), cohort.timezone)


def group_context(ctx: Context, settings: Settings, chat_id: str | None) -> GroupSettings | None:
    """Point ``ctx`` at a group (and its cohort); returns the group, None if unknown."""
    if chat_id is None:
        return None
    group = settings.group(chat_id)
    if group is not None:
        ctx.group = group
        ctx.cohort = settings.cohort(group.cohort_id)
    return group
