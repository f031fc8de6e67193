"""A simulated first week of one group (SPEC §6, §13): the clock is advanced day by day, due jobs
fire, and the test checks which posts went out and when; then the same week with restarts in the
middle (a game's reveal pending, a post waiting out the quiet hours) loses nothing."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from bot.app import App, build_jobs
from bot.clock import ManualClock
from bot.config import Settings
from bot.scheduler import CohortScheduler
from handlers import rhythm
from storage import rhythm as store
from storage import roster
from tests.builders import local
from tests.conftest import GROUP_A
from tests.rhythm_helpers import Rewards, TimedSender, kind_of, say

START = date(2026, 11, 2)  # a Monday; 晒卡日 (default Saturday) is day 6


def open_app(settings: Settings, clock: ManualClock, rewards: Rewards) -> tuple[App, TimedSender]:
    sender = TimedSender(clock)
    app = App.open(settings, clock=clock, sender=sender)
    app.pipeline.rewards = rewards
    return app, sender


def group_a_scheduler(app: App) -> CohortScheduler:
    return CohortScheduler(app, jobs=[j for j in build_jobs(app.settings) if j.chat_id == GROUP_A])


def expected_timeline() -> list[tuple[str, datetime]]:
    out: list[tuple[str, datetime]] = []
    for n in range(1, 8):
        d = START + timedelta(days=n - 1)
        y, m, dd = d.year, d.month, d.day
        out.append(("morning", local(y, m, dd, 7, 45)))
        if n == 1:
            out.append(("kickoff", local(y, m, dd, 8, 0)))
        if n == 7:
            # 小明's seventh daily check-in (09:05) reaches the 7-day milestone (issue 4).
            out.append(("milestone", local(y, m, dd, 9, 5)))
        if d.isoweekday() == 6:
            out.append(("showcase", local(y, m, dd, 10, 0)))
        out.append(("topic", local(y, m, dd, 12, 30)))
        out.append(("game", local(y, m, dd, 15, 0)))
        if n == 1:
            out.append(("game-won", local(y, m, dd, 15, 5)))
        out.append(("reveal", local(y, m, dd, 16, 0)))
        if n == 1:
            out.append(("recap", local(y, m, dd, 20, 30)))
        out.append(("evening", local(y, m, dd, 21, 30)))
    return out


async def live_week(
    settings: Settings, clock: ManualClock, restart_at: tuple[datetime, ...] = ()
) -> tuple[list[tuple[str, datetime]], list[str], Rewards, list[str]]:
    """Run days 1-7; return (kind, local time) of every post, the texts, the rewards and who
    each day's topic invited."""
    rewards = Rewards()
    app, sender = open_app(settings, clock, rewards)
    senders = [sender]
    with app.db.unit_of_work_sync() as uow:
        roster.ensure_members(
            uow.session,
            [
                ("wmKid", "小明", "external"),
                ("wmAmy", "Amy", "external"),
                ("wmQ", "小静", "external"),
                ("wmZ", "小周", "external"),  # never says a word
            ],
            clock.now(),
        )
        for m in ("wmKid", "wmAmy", "wmQ", "wmZ"):
            roster.record_join(uow.session, GROUP_A, m, clock.now())
    scheduler = group_a_scheduler(app)
    pending_restarts = sorted(restart_at)

    async def until(moment: datetime) -> None:
        nonlocal app, scheduler
        while pending_restarts and pending_restarts[0] <= moment:
            await scheduler.run_until(clock, pending_restarts.pop(0))
            app.close()  # the process stops; a new one starts on the same database
            app, new_sender = open_app(settings, clock, rewards)
            senders.append(new_sender)
            scheduler = group_a_scheduler(app)
        await scheduler.run_until(clock, moment)

    try:
        for n in range(1, 8):
            d = START + timedelta(days=n - 1)
            y, m, dd = d.year, d.month, d.day
            await until(local(y, m, dd, 9, 5))
            await say(app, "wmKid", f"#打卡 第{n}天 今天学完了第{n}课", clock.now())
            if n % 2:
                await say(app, "wmAmy", f"#打卡 第{n}天 笔记已整理", clock.now())
            if n == 1:
                await until(local(y, m, dd, 13, 0))
                first = await say(app, "wmKid", "我一般早上六点起来学习，效率最高", clock.now())
                await say(app, "wmAmy", "早起学习真厉害，我是晚上效率高", clock.now(), quoted=first)
                await say(app, "wmQ", "早起学习我也试过，坚持不下来", clock.now(), quoted=first)
                await until(local(y, m, dd, 15, 5))
                with app.db.unit_of_work_sync() as uow:
                    game = store.open_game(uow.session, GROUP_A)
                    assert game is not None
                    answer = game.answer_list[0]
                # Full-width, with punctuation: still right. The second right answer wins nothing.
                wide = "".join(
                    chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in answer
                )
                await say(app, "wmAmy", f" {wide}！", clock.now())
                await say(app, "wmKid", answer, clock.now())
            await until(local(y, m, dd, 23, 59))
    finally:
        app.close()
    timeline = []
    texts = []
    invited = []
    for s in senders:
        for msg, at in zip(s.sent, s.times, strict=True):
            assert msg.to == GROUP_A
            timeline.append((kind_of(msg), at.astimezone(local(2026, 1, 1).tzinfo)))
            texts.append(msg.text)
            if kind_of(msg) == "topic":
                invited.append(",".join(msg.mentions))
    return timeline, texts, rewards, invited


async def test_simulated_week(settings: Settings, clock: ManualClock) -> None:
    timeline, texts, rewards, invited = await live_week(settings, clock)
    assert timeline == expected_timeline()
    by_kind: dict[str, list[str]] = {}
    for (kind, _), text in zip(timeline, texts, strict=True):
        by_kind.setdefault(kind, []).append(text)
    # Evening wrap: today's check-in count (小明 daily, Amy on odd days).
    counts = [2 if n % 2 else 1 for n in range(1, 8)]
    for text, count in zip(by_kind["evening"], counts, strict=True):
        assert f"已有 {count} 位伙伴完成打卡" in text
    assert "今天是第 1 天（11月2日）" in by_kind["morning"][0]
    assert "开营" in by_kind["kickoff"][0] and "【最喜欢吃的食物】" in by_kind["kickoff"][0]
    # Seven different topics (no repeat within the pool).
    assert len(set(by_kind["topic"])) == 7
    # Never-spoken members are invited by name, each at most once per 3 days; 小静 spoke on
    # day 1 and is not invited again.
    assert invited == ["wmQ,wmZ", "", "", "wmZ", "", "", "wmZ"]
    assert "@小静 @小周 也欢迎你们来聊两句" in by_kind["topic"][0]
    # Game day 1: Amy answered first (full-width); rewarded once through the seam.
    assert "@Amy 答对啦" in by_kind["game-won"][0]
    assert [r for r in rewards.calls if r[2] == rhythm.RULE_QUIZ_FIRST] == [
        ("c1", "wmAmy", "quiz_first_correct", rewards.calls[0][3])
    ]
    assert "最先答对的是 Amy" in by_kind["reveal"][0]
    assert all("这次没人答对" in t for t in by_kind["reveal"][1:])
    # Recap of day 1's discussion: the most-replied message, quoted.
    assert "小明：「我一般早上六点起来学习，效率最高」（2 条回应）" in by_kind["recap"][0]
    assert "晒卡日" in by_kind["showcase"][0]


async def test_restart_in_the_middle_of_the_week_loses_no_job(
    settings: Settings, clock: ManualClock
) -> None:
    restarts = (
        local(2026, 11, 4, 15, 30),  # day 3: the game is open, its reveal due at 16:00
        local(2026, 11, 5, 12, 29),  # day 4: just before the topic
        local(2026, 11, 6, 3, 0),  # day 5, in the quiet hours
    )
    timeline, _, rewards, _ = await live_week(settings, clock, restarts)
    assert timeline == expected_timeline()
    assert len([r for r in rewards.calls if r[2] == rhythm.RULE_QUIZ_FIRST]) == 1


async def test_the_last_evening_wrap_says_goodbye_not_see_you_tomorrow(
    settings: Settings, clock: ManualClock
) -> None:
    # c1 runs 21 days (11-02..11-22): day 20's wrap says 明天见, day 21's is the farewell.
    app, sender = open_app(settings, clock, Rewards())
    try:
        jobs = [j for j in build_jobs(app.settings) if j.id.startswith("rhythm.evening")]
        scheduler = CohortScheduler(app, jobs=[j for j in jobs if j.chat_id == GROUP_A])
        clock.set(local(2026, 11, 21, 9))
        await say(app, "wmKid", "#打卡 第20天", clock.now())
        await scheduler.run_until(clock, local(2026, 11, 22, 9))
        await say(app, "wmKid", "#打卡 第21天", clock.now())
        await say(app, "wmAmy", "#打卡 第21天", clock.now())
        await scheduler.run_until(clock, local(2026, 11, 24, 9))
    finally:
        app.close()
    wraps = [m.text for m in sender.sent if kind_of(m) == "evening"]
    assert len(wraps) == 2  # nothing after the end
    assert "第 20 天的学习告一段落" in wraps[0] and "明天见" in wraps[0]
    assert wraps[1].startswith("🌙 第 21 天，也是《Python 21天入门》的最后一天。")
    assert "今天群里有 2 位伙伴完成打卡，21 天一路走来" in wraps[1] and "明天见" not in wraps[1]


async def test_the_rhythm_follows_dates_a_leader_moved(
    settings: Settings, clock: ManualClock
) -> None:
    """开营 moved the start three days later: the kick-off, the day numbers and the last day move
    with it. Then 结营 on the new day 3 ends the rhythm that evening (the config says 21 days)."""
    app, sender = open_app(settings, clock, Rewards())
    try:
        scheduler = group_a_scheduler(app)
        clock.set(local(2026, 11, 1, 10))
        await say(app, "leader1", "/开营 2026-11-05", clock.now())
        await scheduler.run_until(clock, local(2026, 11, 7, 12))
        await say(app, "leader1", "/结营", clock.now())
        await scheduler.run_until(clock, local(2026, 11, 10, 12))
    finally:
        app.close()
    tz = local(2026, 1, 1).tzinfo
    posts = [
        (kind_of(m), at.astimezone(tz).date().day, m.text)
        for m, at in zip(sender.sent, sender.times, strict=True)
        if m.to == GROUP_A
    ]
    kickoffs = [day for kind, day, _ in posts if kind == "kickoff"]
    mornings = {day: text for kind, day, text in posts if kind == "morning"}
    evenings = {day: text for kind, day, text in posts if kind == "evening"}
    assert kickoffs == [5]  # not on the configured 11-02
    assert sorted(mornings) == [5, 6, 7] and "今天是第 1 天（11月5日）" in mornings[5]
    assert sorted(evenings) == [5, 6, 7]
    assert "明天见" in evenings[6] and "也是《Python 21天入门》的最后一天" in evenings[7]
    assert not [p for p in posts if p[1] > 7 and p[0] != "reply"]  # nothing after the end
