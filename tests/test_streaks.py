"""Make-up cards (补卡), 我的, and the streak-at-risk reminder job (SPEC §3)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlmodel import col

from bot.app import App
from bot.cards.member import card_data
from bot.clock import ManualClock
from bot.outbound import Channel
from bot.radar import evaluate
from bot.report import activity_report, group_report
from handlers.digest import teacher_digest_job
from handlers.streaks import parse_day, reminder_schedule, streak_reminder_job
from storage import checkins, roster
from storage import nudges as nudge_store
from storage.activity import DailyCounter
from storage.cohort_dates import effective
from tests.builders import local
from tests.chat import bot, make_settings, open_bot, say, sent
from tests.conftest import GROUP_A

__all__ = ["bot"]


async def _checkin(bot: App, member: str, day: int, hour: int = 9) -> None:
    await say(bot, member, "#打卡", local(2026, 11, day, hour), msgid=f"{member}-{day}")


def _days(bot: App, member: str) -> list[int]:
    with bot.db.session() as s:
        return [c.day.day for c in checkins.of_member(s, "c1", member)]


def _radar_streak(bot: App, member: str, day: int) -> int:
    with bot.db.session() as session:
        radar = evaluate(
            session,
            bot.settings,
            bot.settings.cohort("c1"),
            [GROUP_A],
            local(2026, 11, day).date(),
            persist=False,
        )
        session.commit()
    (found,) = [m for m in radar[GROUP_A].members if m.member_id == member]
    return found.streak


def _counted(bot: App, member: str) -> list[int]:
    with bot.db.session() as session:
        return list(
            session.scalars(
                select(col(DailyCounter.checkins)).where(
                    col(DailyCounter.chat_id) == GROUP_A, col(DailyCounter.member_id) == member
                )
            ).all()
        )


def test_parse_day() -> None:
    today = local(2026, 11, 6).date()
    assert parse_day("2026-11-03", today) == local(2026, 11, 3).date()
    assert parse_day("11-03", today) == local(2026, 11, 3).date()
    assert parse_day("11月3日", today) == local(2026, 11, 3).date()
    assert parse_day("昨天", today) == local(2026, 11, 5).date()
    # Without a year, the nearest such date: a future day stays in the future (and is refused
    # as one), a date just over New Year is last year's.
    assert parse_day("11-09", today) == local(2026, 11, 9).date()
    assert parse_day("12-30", today) == local(2026, 12, 30).date()
    assert parse_day("12-30", local(2027, 1, 2).date()) == local(2026, 12, 30).date()
    assert parse_day("1月2日", local(2026, 12, 30).date()) == local(2027, 1, 2).date()
    assert parse_day("13-45", today) is None
    assert parse_day("明天吧", today) is None


async def test_makeup_fills_the_latest_missed_day_and_restores_the_streak(bot: App) -> None:
    await _checkin(bot, "wmKid", 2)
    await _checkin(bot, "wmKid", 3)
    await _checkin(bot, "wmKid", 5)  # missed the 4th
    assert _radar_streak(bot, "wmKid", 5) == 1  # seals the radar's rollup of 11-02..11-04
    (out,) = await say(bot, "wmKid", "/补卡", local(2026, 11, 5, 10))
    assert out == "已为你补卡 11-04（补卡已用 1/2 张），当前连续打卡 4 天。"
    assert _days(bot, "wmKid") == [2, 3, 4, 5]
    (mine,) = await say(bot, "wmKid", "/我的", local(2026, 11, 5, 11))
    assert "补卡：已用 1/2 张（11-04）" in mine
    assert "连续打卡 4 天" in mine
    assert "第 4/21 天" in mine
    # The radar, the digest and the report read the day's counters: they see the filled day,
    # also when the radar had already sealed it (the check before the make-up card, above).
    assert _radar_streak(bot, "wmKid", 5) == 4
    assert _counted(bot, "wmKid") == [1, 1, 1, 1]


async def test_makeup_with_a_date_and_the_limit(bot: App) -> None:
    await _checkin(bot, "wmKid", 6)
    assert (await say(bot, "wmKid", "/补卡 11-02", local(2026, 11, 6, 10)))[0].startswith(
        "已为你补卡 11-02（补卡已用 1/2 张）"
    )
    assert (await say(bot, "wmKid", "/补卡 11-03", local(2026, 11, 6, 10)))[0].startswith(
        "已为你补卡 11-03（补卡已用 2/2 张）"
    )
    assert await say(bot, "wmKid", "/补卡 11-04", local(2026, 11, 6, 10)) == [
        "你的 2 张补卡已经用完了。"
    ]
    (points,) = await say(bot, "wmKid", "/积分", local(2026, 11, 6, 10))
    assert "补卡：已用 2/2 张（11-02、11-03）" in points


async def test_makeup_refusals(bot: App) -> None:
    at = local(2026, 11, 6, 10)
    await _checkin(bot, "wmKid", 5)
    assert await say(bot, "wmKid", "/补卡 11-06", at) == [
        "补卡只能补过去漏打的日子，今天请直接打卡哦。"
    ]
    assert await say(bot, "wmKid", "/补卡 2026-11-09", at) == [
        "补卡只能补过去漏打的日子，今天请直接打卡哦。"
    ]
    assert await say(bot, "wmKid", "/补卡 11-09", at) == [
        "补卡只能补过去漏打的日子，今天请直接打卡哦。"
    ]
    assert await say(bot, "wmKid", "/补卡 11-01", at) == ["11-01 不在训练营日期内，不能补卡。"]
    assert await say(bot, "wmKid", "/补卡 11-05", at) == ["你在 11-05 已经打过卡了，不需要补卡。"]
    assert await say(bot, "wmKid", "/补卡 某天", at) == [
        "「某天」不是日期。用法：补卡 [日期] 或 补卡 @某人 [日期]"
    ]
    assert _days(bot, "wmKid") == [5]


async def test_leader_uses_a_card_for_a_learner_and_a_learner_cannot(bot: App) -> None:
    at = local(2026, 11, 4, 10)
    assert await say(bot, "wmAmy", "/补卡 @小明 11-03", at) == ["抱歉，为他人补卡仅限班长使用。"]
    (out,) = await say(bot, "leader1", "/补卡 @小明 11-03", at)
    assert out.startswith("已为小明补卡 11-03（补卡已用 1/2 张）")
    assert _days(bot, "wmKid") == [3]
    assert _days(bot, "wmAmy") == []


async def test_makeup_card_can_complete_a_milestone(bot: App) -> None:
    for d in (2, 3, 4, 6, 7, 8):
        await _checkin(bot, "wmKid", d)
    await say(bot, "wmKid", "/补卡 11-05", local(2026, 11, 8, 10))
    congrats = [m for m in sent(bot) if m.channel is Channel.GROUP]
    assert [m.key for m in congrats] == ["milestone:c1:wmKid:7"]


async def test_makeup_after_the_end_measures_the_streak_at_the_end(bot: App) -> None:
    # c1 ends 11-22. A card used on 11-25 for the missed 11-19 joins 11-16..11-22 into 7 days:
    # the reply and the milestone check measure the streak as it stood at the end, not today.
    for d in (16, 17, 18, 20, 21, 22):
        await _checkin(bot, "wmKid", d)
    out, congrats = await say(bot, "wmKid", "/补卡 11-19", local(2026, 11, 25, 10))
    assert out == "已为你补卡 11-19（补卡已用 1/2 张），结营时连续打卡 7 天。"
    assert "7天" in congrats
    keys = [m.key for m in sent(bot) if m.channel is Channel.GROUP and m.key]
    assert [k for k in keys if k.startswith("milestone:")] == ["milestone:c1:wmKid:7"]


async def test_reminder_goes_to_streaks_of_three_not_checked_in_today(bot: App) -> None:
    for d in (3, 4, 5):
        await _checkin(bot, "wmKid", d)  # streak 3, not yet today (6th): reminded
        await _checkin(bot, "wmAmy", d)  # streak 3 but checks in today: not reminded
    for d in (4, 5):
        await _checkin(bot, "wmBob", d)  # streak 2: not reminded
    for d in (2, 3, 4):
        await _checkin(bot, "wmCat", d)  # streak broken yesterday: not reminded
    await _checkin(bot, "wmAmy", 6)
    clock = bot.clock
    assert isinstance(clock, ManualClock)
    clock.set(local(2026, 11, 6, 20, 30))
    before = len(sent(bot))
    assert await streak_reminder_job(bot) == 1
    assert await streak_reminder_job(bot) == 1  # a re-run (second replica) sends nothing new
    new = sent(bot)[before:]
    assert len(new) == 1
    (msg,) = new
    assert (msg.channel, msg.to, msg.mentions) == (Channel.GROUP, GROUP_A, ("wmKid",))
    assert msg.key == "streak-reminder:wrTestGroupA:2026-11-06"
    assert "@小明" in msg.text


async def test_private_reminders(database_url: str, clock: ManualClock) -> None:
    app = open_bot(make_settings(database_url, streaks={"reminder_channel": "private"}), clock)
    try:
        for d in (3, 4, 5):
            await _checkin(app, "wmKid", d)
            await _checkin(app, "wmDan", d)
        with app.db.unit_of_work_sync() as uow:  # wmDan left the group: no reminder
            roster.record_leave(uow.session, GROUP_A, "wmDan", clock.now())
        clock.set(local(2026, 11, 6, 20, 30))
        before = len(sent(app))
        assert await streak_reminder_job(app, "c1") == 1
        (msg,) = sent(app)[before:]
        assert (msg.channel, msg.to) == (Channel.PRIVATE, "wmKid")
        assert "3" in msg.text
    finally:
        app.close()


async def test_no_reminder_outside_the_cohort_dates(bot: App) -> None:
    clock = bot.clock
    assert isinstance(clock, ManualClock)
    clock.set(datetime(2026, 12, 25, 12, tzinfo=UTC))
    assert await streak_reminder_job(bot) == 0


def test_reminder_schedule_is_per_cohort_timezone(bot: App) -> None:
    assert reminder_schedule(bot.settings) == [
        ("c1", 20, 30, "Asia/Shanghai"),
        ("ny", 20, 30, "America/New_York"),
    ]


async def test_progress_card_seam(bot: App) -> None:
    from bot.outbound import Kind

    bot.pipeline.card_maker = lambda ctx, kind, fields: {"fake": f"{kind}:{fields['day']}"}
    out = await say(bot, "wmKid", "/我的", local(2026, 11, 3, 10))
    assert out[0].startswith("小明 的学习进度")
    (image,) = [m for m in sent(bot) if m.kind is Kind.IMAGE]
    assert image.card == {"fake": "progress:2"} and image.image is None


async def test_streak_rules_before_the_start_on_the_last_day_and_after_the_end(bot: App) -> None:
    # c1 runs 11-02..11-22: before it no check-in counts, after it the streak stands.
    (before,) = await say(bot, "wmKid", "/我的", local(2026, 11, 1, 10))
    assert "训练营 11-02 开营，从那天起打卡计入连续" in before
    assert "今天打卡就能开始新的连续记录" not in before
    await _checkin(bot, "wmKid", 21)
    await _checkin(bot, "wmKid", 22)
    (last,) = await say(bot, "wmKid", "/我的", local(2026, 11, 22, 10))
    assert "连续打卡 2 天" in last
    assert "今天是训练营最后一天，已打卡，为这期学习画上了句号！" in last  # 2 days, not all 21
    assert "不打卡连续就会中断" not in last
    for day in (23, 26):
        (after,) = await say(bot, "wmKid", "/我的", local(2026, 11, day, 10))
        assert "连续打卡 2 天（最长 2 天，累计 2 天）" in after
        assert "训练营已于 11-22 结营，打卡记录到此为止" in after
        assert "还没打卡" not in after
        (board,) = await say(bot, "wmKid", "/排行 连续", local(2026, 11, day, 10))
        assert "1. 小明 2天" in board
    with bot.db.session() as session:
        card = card_data(
            session, bot.settings, bot.settings.cohort("c1"), "wmKid", local(2026, 11, 26).date()
        )
    assert (card.streak, card.total_checkins) == (2, 2)
    with bot.db.session() as session:
        table = group_report(
            session, bot.settings.cohort("c1"), GROUP_A, local(2026, 11, 26).date()
        )
    (row,) = [line.split() for line in table.splitlines() if line.startswith("小明")]
    assert row[3:7] == ["2", "0", "2", "2"]  # 打卡, 作业, 连续打卡, 最长连续
    with bot.db.session() as session:
        titles = [
            activity_report(session, bot.settings, {"c1": d, "ny": d}).splitlines()[0]
            for d in (
                local(2026, 10, 30).date(),
                local(2026, 11, 3).date(),
                local(2026, 11, 26).date(),
            )
        ]
    assert titles == [
        "【Python 21天入门｜一班】距开营还有 3 天（2026-10-30）",
        "【Python 21天入门｜一班】第 2 天（2026-11-03）",
        "【Python 21天入门｜一班】已于 2026-11-22 结营（2026-11-26）",
    ]


async def test_the_digest_uses_the_dates_a_leader_moved(bot: App) -> None:
    # 结营 on the configured day 8 of 21: that day is now the last, in 结营期 (was 进阶期).
    await _checkin(bot, "wmKid", 9)
    (done,) = await say(bot, "leader1", "/结营", local(2026, 11, 9, 10))
    assert "已结营" in done
    bot.clock.set(local(2026, 11, 9, 21, 40))  # type: ignore[attr-defined]
    assert await teacher_digest_job(bot, "teacher1") >= 1
    digest = next(m.text for m in sent(bot) if m.to == "teacher1")
    assert "第8天（结营期）" in digest, digest[:200]


async def test_the_lurker_list_counts_from_the_start_a_leader_moved(bot: App) -> None:
    # 开营 moved from 11-02 to 11-05: on 11-08 小波, who never spoke, has been quiet 4 days, not 7.
    await say(bot, "leader1", "/开营 2026-11-05", local(2026, 11, 1, 10))
    (out,) = await say(bot, "leader1", "/潜水 1", local(2026, 11, 8, 10))
    (line,) = [x for x in out.splitlines() if "小波" in x]
    assert "未发言4天" in line, out


async def test_checkins_before_a_start_moved_later_do_not_count(bot: App) -> None:
    # 小明 checks in on 11-02..11-04, then 开营 moves to 11-05: those days stay stored but no
    # streak, total, board or milestone counts them (11-08 is day 4, not a 7-day streak).
    for d in (2, 3, 4):
        await _checkin(bot, "wmKid", d)
    await say(bot, "leader1", "/开营 2026-11-05", local(2026, 11, 4, 12))
    (mine,) = await say(bot, "wmKid", "/我的", local(2026, 11, 4, 13))
    assert "连续打卡 0 天（最长 0 天，累计 0 天）" in mine
    assert "训练营 11-05 开营，从那天起打卡计入连续" in mine
    (first,) = await say(bot, "wmKid", "/打卡", local(2026, 11, 5, 9))
    assert first == "✅ 打卡成功！第 1 天，已连续打卡 1 天。"
    for d in (6, 7, 8):
        await _checkin(bot, "wmKid", d)
    assert not [m for m in sent(bot) if m.key.startswith("milestone:")]
    (board,) = await say(bot, "wmKid", "/排行 连续", local(2026, 11, 8, 10))
    assert "1. 小明 4天" in board
    assert _days(bot, "wmKid") == [2, 3, 4, 5, 6, 7, 8]
    with bot.db.session() as session:
        cohort = effective(session, bot.settings.cohort("c1"))
        card = card_data(session, bot.settings, cohort, "wmKid", local(2026, 11, 8).date())
        totals = checkins.totals_by_member(session, cohort)
    assert (card.streak, card.total_checkins, totals["wmKid"]) == (4, 4, 4)


async def test_a_sent_extra_makeup_card_offer_adds_a_card(bot: App) -> None:
    # The teacher approved 额外补卡券 and the bot told the learner so: the card must exist.
    await _checkin(bot, "wmKid", 8)
    with bot.db.session() as session:
        for status in (nudge_store.OFFER_SENT, nudge_store.PROPOSED):
            session.add(
                nudge_store.Offer(
                    cohort_id="c1", chat_id=GROUP_A, member_id="wmKid", tier="makeup_card",
                    level=2, status=status, proposed_at=local(2026, 11, 6, 21),
                )
            )  # fmt: skip
        session.commit()
    at = local(2026, 11, 8, 10)
    for d, used in ((2, 1), (3, 2), (4, 3)):
        (out,) = await say(bot, "wmKid", f"/补卡 11-0{d}", at)
        assert out.startswith(f"已为你补卡 11-0{d}（补卡已用 {used}/3 张）"), out
    assert await say(bot, "wmKid", "/补卡 11-05", at) == ["你的 3 张补卡已经用完了。"]
    (points,) = await say(bot, "wmKid", "/积分", at)
    assert "补卡：已用 3/3 张（11-02、11-03、11-04）" in points


async def test_the_last_day_praises_a_full_streak_only(bot: App) -> None:
    for d in range(2, 23):  # every day of c1, 11-02..11-22
        await _checkin(bot, "wmAmy", d)
    (mine,) = await say(bot, "wmAmy", "/我的", local(2026, 11, 22, 20))
    assert "今天是训练营最后一天，已打卡，全程连续打卡，坚持到了最后！" in mine


async def test_the_digest_averages_over_the_days_there_have_been(bot: App) -> None:
    # Day 1 has no earlier day to average over ("近7日日均 0.0 人（0%）" read as a collapse);
    # on day 3 the average is over two days.
    await _checkin(bot, "wmKid", 2)
    bot.clock.set(local(2026, 11, 2, 21, 40))  # type: ignore[attr-defined]
    await teacher_digest_job(bot, "teacher1")
    await _checkin(bot, "wmKid", 3)
    await _checkin(bot, "wmAmy", 3)
    bot.clock.set(local(2026, 11, 4, 21, 40))  # type: ignore[attr-defined]
    await teacher_digest_job(bot, "teacher1")
    first, third = [m.text for m in sent(bot) if m.to == "teacher1"]
    assert "· 开营首日，还没有往日数据" in first and "日日均" not in first
    assert "· 近2日日均 1.5 人" in third
