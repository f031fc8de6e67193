"""The scheduler (SPEC §13, STYLE habit 7): one APScheduler ``AsyncIOScheduler`` owned by the app.

Every run goes through :meth:`CohortScheduler.run_due`, which asks the injected clock for now,
works out which daily-job occurrences and timers are due, and runs each one exactly once: the run
is claimed in ``job_run`` by ``(job id, scheduled time)`` as the first statement of its own
transaction (see :mod:`storage.schedule`). Production lets APScheduler call it (a cron trigger per
daily job, plus a short interval tick for timers, postponed work and catch-up after a restart);
tests and the demo advance a :class:`~bot.clock.ManualClock` and call :meth:`run_due` or
:meth:`run_until` themselves, never sleeping and never using APScheduler's timer.

Nothing lives only in APScheduler's memory: daily jobs are rebuilt from the config at start, timers
are rows, and a run that was due while the process was down is caught up (coalesced to the latest
occurrence) within the misfire grace. Group-posting work due in quiet hours waits until they end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select, tuple_
from sqlmodel import col

from bot import metrics
from bot.clock import ManualClock, SystemClock, learning_day
from bot.config import CohortSettings
from bot.jobs import DailyJob, JobFn, QuietHours, Run, group_context
from storage import cohort_dates, schedule
from storage.uow import UnitOfWork

if TYPE_CHECKING:
    from bot.app import App

log = logging.getLogger(__name__)


TICK_JOB_ID = "scheduler.tick"


@dataclass(frozen=True)
class _Due:
    job_id: str
    scheduled_for: datetime
    fn: JobFn
    run: Run
    timer_id: int | None = None


class CohortScheduler:
    """Runs :class:`~bot.jobs.DailyJob` occurrences and timers, exactly once, by the app's clock.

    ``jobs`` default to :func:`bot.app.build_jobs`, ``timers`` (timer kind -> function) to
    :func:`bot.app.timer_kinds`.
    """

    def __init__(
        self,
        app: App,
        jobs: Sequence[DailyJob] | None = None,
        timers: Mapping[str, JobFn] | None = None,
    ) -> None:
        from bot.app import build_jobs, timer_kinds

        self.app = app
        self.settings = app.settings
        rhythm = app.settings.rhythm
        self.jobs = list(build_jobs(app.settings) if jobs is None else jobs)
        ids = [j.id for j in self.jobs]
        if len(ids) != len(set(ids)):
            raise ValueError("two daily jobs share an id")
        self.by_id = {j.id: j for j in self.jobs}
        self.timers = dict(timer_kinds() if timers is None else timers)
        self.quiet = QuietHours(rhythm.quiet_start, rhythm.quiet_end)
        self.grace = timedelta(minutes=rhythm.misfire_grace_minutes)
        self._aps: AsyncIOScheduler | None = None

    # --- lifecycle (production) -------------------------------------------------------------

    def start(self) -> None:
        """Start APScheduler on the running event loop: a cron trigger per daily job and a tick.

        Triggers only call :meth:`run_due`; the claims decide what actually runs."""
        rhythm = self.settings.rhythm
        aps = AsyncIOScheduler(
            timezone=self.settings.timezone,
            job_defaults={
                "coalesce": True,
                "misfire_grace_time": int(self.grace.total_seconds()),
                "max_instances": 1,
            },
        )
        for job in self.jobs:
            aps.add_job(
                self._fire,
                CronTrigger(
                    hour=job.at.hour, minute=job.at.minute, second=job.at.second, timezone=job.tz
                ),
                args=[job.id],
                id=job.id,
                name=job.id,
                replace_existing=True,
            )
        # The tick runs timers and postponed work, and catches up at once after a restart. Its
        # first run is "now" by APScheduler's own time, the system clock (the injected clock only
        # decides what a firing finds due): an injected clock years behind made APScheduler count
        # every missed 30 s tick since then before starting, 40 s for a test clock of 2014.
        aps.add_job(
            self._fire,
            IntervalTrigger(seconds=rhythm.tick_seconds, timezone=self.settings.timezone),
            args=[None],
            id=TICK_JOB_ID,
            name=TICK_JOB_ID,
            next_run_time=SystemClock().now(),
            replace_existing=True,
        )
        aps.start()
        self._aps = aps

    def shutdown(self) -> None:
        """Stop the triggers (a run in progress finishes its transaction on its own)."""
        if self._aps is not None:
            self._aps.shutdown(wait=False)
            self._aps = None

    @property
    def running(self) -> bool:
        return self._aps is not None and bool(self._aps.running)

    def aps_job_ids(self) -> list[str]:
        """The ids APScheduler holds (for tests and the operator)."""
        return [] if self._aps is None else sorted(j.id for j in self._aps.get_jobs())

    async def _fire(self, job_id: str | None) -> None:
        try:
            await self.run_due(only=job_id)
        except Exception:
            log.exception("scheduler run for %s failed", job_id or "tick")

    # --- what is due ------------------------------------------------------------------------

    def _group_tz(self, chat_id: str | None) -> Any:
        if chat_id is None:
            return None
        cohort = self.settings.cohort_of(chat_id)
        return cohort.timezone if cohort else self.settings.timezone

    def _quiet_now(self, now: datetime, quiet: bool, tz: Any) -> bool:
        return quiet and tz is not None and self.quiet.contains(now, tz)

    def _moved(self, uow: UnitOfWork) -> dict[str, CohortSettings]:
        """The cohorts whose dates a leader moved (开营/结营), with the moved dates."""
        return cohort_dates.overridden(uow.writer, self.settings.cohorts)

    @staticmethod
    def _on(job: DailyJob, moved: Mapping[str, CohortSettings]) -> Callable[[date], bool]:
        return job.on_for(moved.get(job.cohort_id)) if job.cohort_id else job.on

    def _daily_due(
        self, job: DailyJob, now: datetime, on: Callable[[date], bool]
    ) -> datetime | None:
        """The occurrence of ``job`` to run at ``now`` (the latest one: coalescing), if any."""
        latest = None
        # Only occurrences that can still be within the grace (after a quiet-hours wait of up
        # to a day) matter: the latest older one is dropped anyway.
        for nominal in job.occurrences(now, before=self.grace.days + 2, after=0, on=on):
            if nominal <= now:
                latest = nominal
        if latest is None:
            return None
        effective = self.quiet.postpone(latest, job.tz) if job.quiet else latest
        if effective > now or now - effective > self.grace:
            return None
        if self._quiet_now(now, job.quiet, job.tz):
            return None
        return latest

    async def due(self, now: datetime, only: str | None = None) -> list[_Due]:
        """The runs due at ``now`` that nobody has claimed yet, oldest first."""
        found: list[_Due] = []
        async with self.app.db.unit_of_work() as uow:
            moved = self._moved(uow)
            for job in self.jobs:
                if only is not None and job.id != only:
                    continue
                nominal = self._daily_due(job, now, self._on(job, moved))
                if nominal is not None:
                    run = _occurrence(job, nominal)
                    found.append(_Due(job.id, nominal, job.fn, run))
            timers = schedule.pending_timers(uow.writer, now) if only is None else []
            for timer in timers:
                tz = self._group_tz(timer.chat_id)
                if self._quiet_now(now, True, tz):
                    continue
                fn = self.timers.get(timer.kind)
                if fn is None:
                    log.error("timer %s has unknown kind %r; left pending", timer.name, timer.kind)
                    continue
                cohort = self.settings.cohort_of(timer.chat_id) if timer.chat_id else None
                local = timer.due_at.astimezone(tz or self.settings.timezone).date()
                run = Run(
                    f"timer:{timer.name}",
                    timer.due_at,
                    local,
                    timer.chat_id,
                    cohort.id if cohort else None,
                    payload=timer.data,
                )
                found.append(_Due(run.job_id, timer.due_at, fn, run, timer.id))
            if not found:
                return []
            keys = [(d.job_id, d.scheduled_for) for d in found]
            table = schedule.JobRun
            claimed = {
                (r[0], r[1].astimezone(UTC))
                for r in uow.writer.execute(
                    select(col(table.job_id), col(table.scheduled_for)).where(
                        tuple_(col(table.job_id), col(table.scheduled_for)).in_(keys)
                    )
                ).all()
            }
        for d in found:
            if (d.job_id, d.scheduled_for) in claimed and d.timer_id is not None:
                # Claimed by another replica that has not marked it done: mark it here.
                async with self.app.db.unit_of_work() as uow:
                    schedule.finish_timer(uow.writer, d.timer_id, now)
        return sorted(
            (d for d in found if (d.job_id, d.scheduled_for) not in claimed),
            key=lambda d: (d.scheduled_for, d.job_id),
        )

    async def next_fire_time(self, after: datetime) -> datetime | None:
        """The earliest moment after ``after`` at which something becomes due (quiet hours
        applied), or None when nothing is scheduled."""
        best: datetime | None = None

        def consider(moment: datetime) -> None:
            nonlocal best
            if moment > after and (best is None or moment < best):
                best = moment

        async with self.app.db.unit_of_work() as uow:
            moved = self._moved(uow)
            timers = schedule.pending_timers(uow.writer)
        for job in self.jobs:
            for nominal in job.occurrences(after, before=1, after=8, on=self._on(job, moved)):
                consider(self.quiet.postpone(nominal, job.tz) if job.quiet else nominal)
        for timer in timers:
            tz = self._group_tz(timer.chat_id)
            moment = max(timer.due_at, after)
            consider(self.quiet.postpone(moment, tz) if tz is not None else moment)
        return best

    # --- running ------------------------------------------------------------------------------

    async def run_due(self, now: datetime | None = None, only: str | None = None) -> int:
        """Run every run due at ``now`` (default: the clock's now); return how many ran here.

        Each run is claimed first, in its own transaction; a run another replica claimed is
        skipped. A failing run is logged (like a failing handler), recorded with its error on its
        claim, and not retried."""
        now = now or self.app.clock.now()
        ran = 0
        for d in await self.due(now, only):
            if await self._run(d, now):
                ran += 1
        return ran

    async def run_until(self, clock: ManualClock, until: datetime) -> int:
        """Advance ``clock`` to ``until``, stopping at every moment something is due and running
        it (tests, demo). Returns how many runs happened."""
        ran = await self.run_due(clock.now())
        while True:
            nxt = await self.next_fire_time(clock.now())
            if nxt is None or nxt > until:
                clock.set(until)
                return ran + await self.run_due(until)
            clock.set(nxt)
            ran += await self.run_due(nxt)

    async def run_job(self, job_id: str, scheduled_for: datetime) -> bool:
        """Run one daily-job occurrence now (claimed like any other run); False if claimed
        already."""
        job = self.by_id[job_id]
        run = _occurrence(job, scheduled_for)
        return await self._run(_Due(job.id, scheduled_for, job.fn, run), self.app.clock.now())

    async def _run(self, d: _Due, now: datetime) -> bool:
        pipeline = self.app.pipeline
        try:
            async with self.app.db.unit_of_work() as uow:
                if not schedule.claim(uow.writer, d.job_id, d.scheduled_for, now):
                    metrics.JOB_RUNS.inc(job=d.job_id.split(":")[0], outcome="skipped")
                    return False
                ctx = pipeline.context(uow)
                group_context(ctx, self.settings, d.run.chat_id)
                if ctx.cohort is None and d.run.cohort_id is not None:
                    ctx.cohort = self.settings.cohort(d.run.cohort_id)
                if ctx.cohort is not None:
                    # Day numbers and the last day follow 开营/结营, as in the pipeline.
                    ctx.cohort = cohort_dates.effective(uow.writer, ctx.cohort)
                    ctx.facts.day = learning_day(
                        d.scheduled_for, ctx.cohort.timezone, ctx.cohort.day_start_hour
                    )
                await d.fn(ctx, d.run)
                if d.timer_id is not None:
                    schedule.finish_timer(uow.writer, d.timer_id, now)
            metrics.JOB_RUNS.inc(job=d.job_id.split(":")[0], outcome="ok")
            return True
        except Exception as exc:
            # The same treatment as a failing handler in the pipeline: log it with the traceback,
            # keep the error with the run, and carry on with the next one.
            log.exception("job %s scheduled for %s failed", d.job_id, d.scheduled_for.isoformat())
            metrics.JOB_RUNS.inc(job=d.job_id.split(":")[0], outcome="error")
            try:
                async with self.app.db.unit_of_work() as uow:
                    schedule.claim(
                        uow.writer, d.job_id, d.scheduled_for, now, f"{type(exc).__name__}: {exc}"
                    )
                    if d.timer_id is not None:
                        schedule.finish_timer(uow.writer, d.timer_id, now)
            except Exception:
                log.exception("could not record the failure of job %s", d.job_id)
            return False


def _occurrence(job: DailyJob, scheduled_for: datetime) -> Run:
    """The run of ``job`` for the (UTC) moment ``scheduled_for``."""
    return Run(
        job.id,
        scheduled_for,
        scheduled_for.astimezone(job.tz).date(),
        job.chat_id,
        job.cohort_id,
        job.target,
    )
