"""The scheduler (SPEC §13): exactly-once claims across replicas, quiet hours, catch-up after a
restart, coalescing, and the APScheduler lifecycle. The clock is advanced; nothing sleeps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.app import App
from bot.clock import ManualClock
from bot.config import Settings
from bot.context import Context
from bot.jobs import DailyJob, QuietHours, Run, per_cohort, per_group, per_teacher
from bot.outbound import Channel, Outbound, RecordingSender
from bot.scheduler import TICK_JOB_ID, CohortScheduler
from storage import schedule
from tests.conftest import GROUP_A

SH = ZoneInfo("Asia/Shanghai")


def local(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=SH)


async def post_hello(ctx: Context, run: Run) -> None:
    assert run.chat_id is not None and ctx.group is not None
    await ctx.send(
        Outbound(
            channel=Channel.GROUP,
            to=run.chat_id,
            text=f"hello {run.local_date}",
            key=f"{run.job_id}@{run.scheduled_for.isoformat()}",
        )
    )


def hello_job(at: time, chat_id: str = GROUP_A) -> DailyJob:
    return DailyJob(f"test.hello:{chat_id}", at, SH, post_hello, chat_id=chat_id, cohort_id="c1")


def sent(app: App) -> list[Outbound]:
    assert isinstance(app.sender, RecordingSender)
    return app.sender.sent


def _run_in_thread(scheduler: CohortScheduler, now: datetime) -> int:
    return asyncio.run(scheduler.run_due(now))


async def test_two_instances_send_exactly_once(settings: Settings, clock: ManualClock) -> None:
    """Two replicas (separate engines, same database) both find the job due: one message."""
    apps = [App.open(settings, clock=clock, sender=RecordingSender()) for _ in range(2)]
    try:
        schedulers = [CohortScheduler(a, jobs=[hello_job(time(9, 0))], timers={}) for a in apps]
        due = local(2026, 11, 2, 9, 0)
        clock.set(due + timedelta(seconds=5))
        for _ in range(3):  # three rounds of both at once: still one message in total
            counts = await asyncio.gather(
                *(asyncio.to_thread(_run_in_thread, s, clock.now()) for s in schedulers)
            )
            assert sum(counts) <= 1
        messages = sent(apps[0]) + sent(apps[1])
        assert [m.to for m in messages] == [GROUP_A]
        with apps[0].db.unit_of_work_sync() as uow:
            runs = schedule.runs(uow.session, "test.hello")
        assert [(r.job_id, r.scheduled_for) for r in runs] == [
            (f"test.hello:{GROUP_A}", due.astimezone(UTC))
        ]
    finally:
        for a in apps:
            a.close()


async def test_quiet_hours_postpone_a_job_due_at_23(app: App, clock: ManualClock) -> None:
    scheduler = CohortScheduler(app, jobs=[hello_job(time(23, 0))], timers={})
    clock.set(local(2026, 11, 2, 22, 0))
    assert await scheduler.next_fire_time(clock.now()) == local(2026, 11, 3, 7, 30)
    clock.set(local(2026, 11, 2, 23, 0))
    assert await scheduler.run_due() == 0
    clock.set(local(2026, 11, 3, 7, 29))
    assert await scheduler.run_due() == 0
    assert sent(app) == []
    clock.set(local(2026, 11, 3, 7, 30))
    assert await scheduler.run_due() == 1
    assert [m.text for m in sent(app)] == ["hello 2026-11-02"]
    assert await scheduler.run_due() == 0


async def test_run_until_stops_at_each_due_moment(app: App, clock: ManualClock) -> None:
    moments: list[datetime] = []

    async def record(ctx: Context, run: Run) -> None:
        moments.append(ctx.clock.now())

    jobs = [
        DailyJob("a", time(8, 0), SH, record, chat_id=GROUP_A),
        DailyJob("b", time(23, 15), SH, record, chat_id=GROUP_A),  # quiet: waits to 07:30
        DailyJob("private", time(23, 15), SH, record, quiet=False),  # not a group post
    ]
    scheduler = CohortScheduler(app, jobs=jobs, timers={})
    clock.set(local(2026, 11, 1, 15, 0))  # earlier occurrences are beyond the misfire grace
    await scheduler.run_until(clock, local(2026, 11, 3, 12, 0))
    assert moments == [
        local(2026, 11, 1, 23, 15),
        local(2026, 11, 2, 7, 30),
        local(2026, 11, 2, 8, 0),
        local(2026, 11, 2, 23, 15),
        local(2026, 11, 3, 7, 30),
        local(2026, 11, 3, 8, 0),
    ]
    assert clock.now() == local(2026, 11, 3, 12, 0)


async def test_missed_runs_coalesce_and_respect_the_grace(app: App, clock: ManualClock) -> None:
    scheduler = CohortScheduler(app, jobs=[hello_job(time(9, 0))], timers={})
    # Down for three days: only the latest occurrence runs, once.
    clock.set(local(2026, 11, 5, 10, 0))
    assert await scheduler.run_due() == 1
    assert [m.text for m in sent(app)] == ["hello 2026-11-05"]
    # Beyond the misfire grace (6 h by default) the occurrence is dropped.
    clock.set(local(2026, 11, 6, 15, 1))
    assert await scheduler.run_due() == 0


async def test_timer_survives_a_restart(settings: Settings, clock: ManualClock) -> None:
    """A timer written before a restart (e.g. a game's reveal) runs on the new instance."""
    seen: list[tuple[str, dict[str, object]]] = []

    async def fire(ctx: Context, run: Run) -> None:
        seen.append((run.job_id, run.payload))

    first = App.open(settings, clock=clock, sender=RecordingSender())
    clock.set(local(2026, 11, 2, 15, 0))
    with first.db.unit_of_work_sync() as uow:
        schedule.add_timer(
            uow.session,
            "x1",
            "test.fire",
            clock.now() + timedelta(hours=1),
            clock.now(),
            GROUP_A,
            {"n": 1},
        )
    first.close()
    clock.advance(timedelta(hours=3))  # down while it was due
    second = App.open(settings, clock=clock, sender=RecordingSender())
    try:
        scheduler = CohortScheduler(second, jobs=[], timers={"test.fire": fire})
        assert await scheduler.run_due() == 1
        assert await scheduler.run_due() == 0
        assert seen == [("timer:x1", {"n": 1})]
    finally:
        second.close()


async def test_a_failing_job_is_logged_recorded_and_not_retried(
    app: App, clock: ManualClock, caplog: object
) -> None:
    calls = 0

    async def boom(ctx: Context, run: Run) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("kaput")

    scheduler = CohortScheduler(
        app, jobs=[DailyJob("boom", time(9), SH, boom), hello_job(time(9))], timers={}
    )
    clock.set(local(2026, 11, 2, 9, 0))
    assert await scheduler.run_due() == 1  # the other job still ran
    assert await scheduler.run_due() == 0
    assert calls == 1
    with app.db.unit_of_work_sync() as uow:
        runs = {r.job_id: r.error for r in schedule.runs(uow.session)}
    assert runs["boom"] == "RuntimeError: kaput"
    assert runs[f"test.hello:{GROUP_A}"] is None


async def test_start_registers_every_job_with_apscheduler(app: App, clock: ManualClock) -> None:
    scheduler = CohortScheduler(app)
    scheduler.start()
    try:
        assert scheduler.running
        ids = scheduler.aps_job_ids()
        assert TICK_JOB_ID in ids
        assert f"rhythm.morning:{GROUP_A}" in ids
        assert f"rhythm.evening:{GROUP_A}" in ids
        assert len(ids) == len(scheduler.jobs) + 1
    finally:
        scheduler.shutdown()
    assert not scheduler.running


async def test_apscheduler_triggers_call_the_claimed_run(app: App, clock: ManualClock) -> None:
    """What a cron trigger calls is the same claimed run: firing it twice posts once."""
    scheduler = CohortScheduler(app, jobs=[hello_job(time(9, 0))], timers={})
    scheduler.start()
    try:
        assert scheduler._aps is not None
        job = scheduler._aps.get_job(f"test.hello:{GROUP_A}")
        trigger = str(job.trigger)
        assert "hour='9'" in trigger and "minute='0'" in trigger
        clock.set(local(2026, 11, 2, 9, 0, 1))
        await job.func(*job.args)
        await job.func(*job.args)
        tick = scheduler._aps.get_job(TICK_JOB_ID)
        await tick.func(*tick.args)
    finally:
        scheduler.shutdown()
    assert [m.text for m in sent(app)] == ["hello 2026-11-02"]


def test_job_helpers_make_one_job_per_target(settings: Settings) -> None:
    async def fn(ctx: Context, run: Run) -> None:
        return None

    assert [j.id for j in per_cohort(settings, "streak", time(21), fn)] == [
        "streak:c1",
        "streak:ny",
    ]
    teachers = per_teacher(settings, "digest", time(21, 30), fn)
    assert [(j.id, j.target, j.quiet) for j in teachers] == [
        ("digest:c1:teacher1", "teacher1", False)
    ]
    groups = per_group(settings, "g", time(9), fn)
    assert len(groups) == 3 and all(j.quiet for j in groups)
    # Cohort days only: the day before the start has no occurrence.
    job = groups[0]
    assert not job.on(datetime(2026, 11, 1).date()) and job.on(datetime(2026, 11, 2).date())


def test_quiet_hours_arithmetic() -> None:
    q = QuietHours(time(22, 30), time(7, 30))
    assert q.contains(local(2026, 11, 2, 22, 30), SH)
    assert q.contains(local(2026, 11, 3, 3, 0), SH)
    assert not q.contains(local(2026, 11, 3, 7, 30), SH)
    assert q.postpone(local(2026, 11, 2, 23, 0), SH) == local(2026, 11, 3, 7, 30)
    assert q.postpone(local(2026, 11, 3, 1, 0), SH) == local(2026, 11, 3, 7, 30)
    assert q.postpone(local(2026, 11, 3, 12, 0), SH) == local(2026, 11, 3, 12, 0)
