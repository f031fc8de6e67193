"""Leaderboards (SPEC §4): total, week (resets Monday in the cohort's timezone), streaks,
reviewers; ties go to whoever got there first. Also 统计, 开营/结营 and the points export."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from pathlib import Path

from bot.app import App
from bot.cli import main
from bot.clock import ManualClock
from bot.exports import write_points_csv
from handlers.leaderboards import week_of
from handlers.points import award
from storage import checkins, cohort_dates
from storage import points as ledger
from tests.builders import NY, local
from tests.chat import bot, make_settings, open_bot, say
from tests.conftest import GROUP_NY

__all__ = ["bot"]


async def _give(
    bot: App, member: str, amount: int, day: date, key: str, cohort: str = "c1"
) -> None:
    async with bot.db.unit_of_work() as uow:
        ctx = bot.pipeline.context(uow)
        award(
            ctx,
            cohort=bot.settings.cohort(cohort),
            member_id=member,
            reason=ledger.MANUAL,
            key=key,
            points=amount,
            day=day,
        )


async def test_total_board_ties_go_to_who_got_there_first(bot: App) -> None:
    day = local(2026, 11, 3).date()
    await _give(bot, "wmAmy", 10, day, "a1")
    await _give(bot, "wmBob", 20, day, "b1")
    await _give(bot, "wmKid", 5, day, "k1")
    await _give(bot, "wmKid", 5, day, "k2")  # Kid reaches 10 after Amy did
    await _give(bot, "wmCat", 4, day, "c1")
    (out,) = await say(bot, "wmCat", "/排行", local(2026, 11, 3, 20))
    assert out.splitlines() == [
        "🏆 积分总榜（累计获得，兑换不扣）",
        "1. 小波 20分",
        "2. Amy 10分",
        "3. 小明 10分",
        "4. 小猫 4分",
    ]


async def test_spending_does_not_move_the_board(bot: App) -> None:
    day = local(2026, 11, 3).date()
    await _give(bot, "wmAmy", 10, day, "a1")
    await _give(bot, "wmKid", 12, day, "k1")
    await say(bot, "wmKid", "/兑换 A01", local(2026, 11, 3, 20))
    (out,) = await say(bot, "wmKid", "/排行 总", local(2026, 11, 3, 20))
    assert out.splitlines()[1:] == ["1. 小明 12分", "2. Amy 10分"]
    # "排行榜" is what people type too: the same board, not "没有「榜」榜".
    assert await say(bot, "wmKid", "/排行榜", local(2026, 11, 3, 20)) == [out]
    (week,) = await say(bot, "wmKid", "/排行榜 周", local(2026, 11, 3, 20))
    assert week.splitlines()[0] == "🏆 本周积分榜（11-02～11-08）"


async def test_week_board_resets_on_monday_learning_day(bot: App) -> None:
    # 2026-11-09 is a Monday. Points of Sunday the 8th stay in last week.
    await _give(bot, "wmAmy", 10, local(2026, 11, 8).date(), "a-sun")
    await _give(bot, "wmKid", 3, local(2026, 11, 9).date(), "k-mon")
    (sunday,) = await say(bot, "wmKid", "/排行 周", local(2026, 11, 9, 3, 59))
    assert sunday.splitlines() == ["🏆 本周积分榜（11-02～11-08）", "1. Amy 10分"]
    (out,) = await say(bot, "wmKid", "/排行 周", local(2026, 11, 9, 4, 0))
    assert out.splitlines() == ["🏆 本周积分榜（11-09～11-15）", "1. 小明 3分"]


async def test_a_monday_0130_checkin_counts_for_the_week_before(bot: App) -> None:
    await say(bot, "wmKid", "#打卡", local(2026, 11, 9, 1, 30))  # learning day: Sunday the 8th
    (out,) = await say(bot, "wmKid", "/排行 周", local(2026, 11, 9, 10))
    assert out.splitlines()[1:] == ["还没有人上榜，快来争第一！"]
    with bot.db.session() as s:
        (entry,) = ledger.entries_of_cohort(s, "c1")
    assert entry.day == date(2026, 11, 8)


async def test_week_follows_the_cohorts_timezone(database_url: str, clock: ManualClock) -> None:
    app = open_bot(make_settings(database_url), clock)
    try:
        # Monday 10:00 in Shanghai is still Sunday evening in New York: last week there.
        sunday_ny = datetime(2026, 11, 8, 21, 0, tzinfo=NY)
        await say(app, "wmKid", "#打卡", sunday_ny, chat=GROUP_NY)
        (out,) = await say(
            app, "wmKid", "/排行 周", sunday_ny + timedelta(minutes=1), chat=GROUP_NY
        )
        assert out.splitlines()[0] == "🏆 本周积分榜（11-02～11-08）"
        assert out.splitlines()[1] == "1. 小明 2分"
        monday_ny = datetime(2026, 11, 9, 5, 0, tzinfo=NY)
        (out,) = await say(app, "wmKid", "/排行 周", monday_ny, chat=GROUP_NY)
        assert out.splitlines() == ["🏆 本周积分榜（11-09～11-15）", "还没有人上榜，快来争第一！"]
    finally:
        app.close()


def test_week_of() -> None:
    assert week_of(date(2026, 11, 9)) == (date(2026, 11, 9), date(2026, 11, 15))
    assert week_of(date(2026, 11, 15)) == (date(2026, 11, 9), date(2026, 11, 15))


async def test_streak_board_ties(bot: App) -> None:
    for d in (3, 4, 5):
        await say(bot, "wmAmy", "#打卡", local(2026, 11, d, 9))
        await say(bot, "wmKid", "#打卡", local(2026, 11, d, 10))
    for d in (4, 5):
        await say(bot, "wmBob", "#打卡", local(2026, 11, d, 8))
    await say(bot, "wmCat", "#打卡", local(2026, 11, 2, 8))  # broken: not on the board
    (out,) = await say(bot, "wmBob", "/排行 连续", local(2026, 11, 5, 20))
    assert out.splitlines() == ["🏆 连续打卡榜", "1. Amy 3天", "2. 小明 3天", "3. 小波 2天"]


async def test_reviewer_board_and_unknown_board(bot: App) -> None:
    from tests.test_reviews import REVIEWS

    at = local(2026, 11, 4, 9)
    for who in ("wmAmy", "wmBob", "wmCat"):
        await say(bot, who, "#打卡", at, msgid=f"ck-{who}")
    await say(bot, "wmBob", REVIEWS[1], at + timedelta(hours=1), quoted="ck-wmAmy")
    await say(bot, "wmKid", REVIEWS[0], at + timedelta(hours=2), quoted="ck-wmAmy")
    await say(bot, "wmKid", REVIEWS[2], at + timedelta(hours=3), quoted="ck-wmCat")
    await say(bot, "wmAmy", REVIEWS[3], at + timedelta(hours=4), quoted="ck-wmBob")
    (out,) = await say(bot, "wmKid", "/排行 点评", at + timedelta(hours=5))
    assert out.splitlines() == ["🏆 点评榜", "1. 小明 2条", "2. 小波 1条", "3. Amy 1条"]
    assert await say(bot, "wmKid", "/排行 月", at) == ["没有「月」榜。用法：排行 [周/总/连续/点评]"]


async def test_stats_for_leaders_only(bot: App) -> None:
    for d in (3, 4):
        await say(bot, "wmKid", "#打卡 学习", local(2026, 11, d, 9))
        await say(bot, "wmAmy", "大家好", local(2026, 11, d, 9))
    assert await say(bot, "wmKid", "/统计", local(2026, 11, 4, 20)) == [
        "抱歉，「统计」仅限班长使用。"
    ]
    (out,) = await say(bot, "leader1", "/统计 2", local(2026, 11, 4, 20))
    lines = out.splitlines()
    assert lines[0] == "📊 一班 最近 2 天（共 5 名学员）"  # not the leader, not the teacher
    assert lines[1] == "11-03 发言 2 人/2 条，打卡 1，有效点评 0"
    assert lines[2] == "11-04 发言 3 人/4 条，打卡 1，有效点评 0"
    assert lines[3] == "2 天内没发言：3 人"
    assert await say(bot, "leader1", "/统计 abc", local(2026, 11, 4, 20)) == [
        "天数写 1 到 90。用法：统计 [天数]"
    ]


async def test_open_and_close_the_cohort(bot: App) -> None:
    assert await say(bot, "wmKid", "/开营 2026-11-05", local(2026, 11, 3, 9)) == [
        "抱歉，「开营」仅限班长使用。"
    ]
    (out,) = await say(bot, "leader1", "/开营 2026-11-05", local(2026, 11, 3, 9))
    assert out == "已设置《Python 21天入门》开营日期 2026-11-05，共 21 天，到 2026-11-25。"
    assert await say(bot, "wmAmy", "/结营", local(2026, 11, 20, 9)) == [
        "抱歉，「结营」仅限班长使用。"
    ]
    (out,) = await say(bot, "teacher1", "/结营", local(2026, 11, 20, 9))
    assert out.startswith("《Python 21天入门》已结营：2026-11-05 至 2026-11-20")
    with bot.db.session() as s:
        cohort = cohort_dates.effective(s, bot.settings.cohort("c1"))
    assert (cohort.start_date, cohort.end_date) == (date(2026, 11, 5), date(2026, 11, 20))
    assert bot.settings.cohort("c1").start_date == date(2026, 11, 2)  # the config stays
    assert await say(bot, "leader1", "/开营 明天", local(2026, 11, 20, 9)) == [
        "「明天」不是日期（YYYY-MM-DD）。用法：开营 YYYY-MM-DD"
    ]


async def test_export_points_csv(bot: App, tmp_path: Path) -> None:
    day = local(2026, 11, 3).date()
    await _give(bot, "wmAmy", 10, day, "a1")
    await _give(bot, "wmKid", 12, day, "k1")
    await say(bot, "wmKid", "/兑换 A01", local(2026, 11, 3, 20))
    out = io.StringIO()
    with bot.db.session() as s:
        assert write_points_csv(s, "c1", out) == 2
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == [
        "member_id",
        "name",
        "balance",
        "earned",
        "spent",
        "entries",
        "last_entry_at",
    ]
    assert [r[:6] for r in rows[1:]] == [
        ["wmAmy", "Amy", "10", "10", "0", "1"],
        ["wmKid", "小明", "2", "12", "10", "2"],
    ]
    # Through the CLI, on the same database.
    config = tmp_path / "c.toml"
    config.write_text(_toml(bot), encoding="utf-8")
    target = tmp_path / "points.csv"
    assert (
        main(["--config", str(config), "export", "points", "--cohort", "c1", "--csv", str(target)])
        == 0
    )
    assert target.read_text("utf-8-sig").splitlines()[1].startswith("wmAmy,Amy,10,10,0,1,")
    assert main(["--config", str(config), "export", "points", "--cohort", "zz"]) == 2


def _toml(bot: App) -> str:
    url = bot.settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    return (
        f'[database]\nurl = "{url}"\n'
        '[[cohorts]]\nid = "c1"\ncourse = "x"\nstart_date = "2026-11-02"\nlength_days = 21\n'
    )


async def test_a_new_start_date_moves_the_checkin_window(bot: App) -> None:
    await say(bot, "leader1", "/开营 2026-11-05", local(2026, 11, 3, 9))
    assert await say(bot, "wmKid", "/打卡 第一天", local(2026, 11, 4, 9)) == [
        "训练营 11-05 开营，从那天起打卡才计入，到时见～"
    ]
    (out,) = await say(bot, "wmKid", "/打卡 第一天", local(2026, 11, 5, 9))
    assert out == "✅ 打卡成功！第 1 天，已连续打卡 1 天。"
    await say(bot, "teacher1", "/结营", local(2026, 11, 6, 9))
    assert await say(bot, "wmKid", "/打卡 又一天", local(2026, 11, 7, 9)) == [
        "训练营已于 11-06 结营，打卡不再计入，记录保持在结营那天。"
    ]


async def test_a_teachers_checkin_is_not_a_learners(bot: App) -> None:
    # teacher1 shows the group how to check in: no check-in, no points, not on the boards.
    assert await say(bot, "teacher1", "/打卡 示范一下", local(2026, 11, 3, 9)) == [
        "老师的打卡不计入学员的打卡、连续天数和积分。"
    ]
    await say(bot, "teacher1", "#打卡 今天的示范", local(2026, 11, 3, 9, 5))
    await say(bot, "wmKid", "#打卡 第2天", local(2026, 11, 3, 10))
    for board in ("/排行", "/排行 连续"):
        (out,) = await say(bot, "wmKid", board, local(2026, 11, 3, 20))
        assert "李老师" not in out and "1. 小明" in out, out
    with bot.db.session() as session:
        assert checkins.days_of(session, "c1", "teacher1") == []


async def test_a_question_to_the_checkin_command_is_not_told_it_checked_in(bot: App) -> None:
    assert await say(bot, "wmKid", "/打卡是几点截止？", local(2026, 11, 3, 9)) == [
        "这条没有记为打卡（像是在提问）。打卡请写：打卡 今天学了什么"
    ]
    (done,) = await say(bot, "wmKid", "/打卡 第2天 学了字典", local(2026, 11, 3, 10))
    assert done.startswith("✅ 打卡成功")
    (again,) = await say(bot, "wmKid", "/打卡 再来一次", local(2026, 11, 3, 11))
    assert again.startswith("今天已经打过卡啦")


async def test_an_empty_board_after_the_end_does_not_invite_competition(bot: App) -> None:
    # c1 ended on 11-22; the week of 11-23 has no points and can have none.
    (out,) = await say(bot, "wmKid", "/排行 周", local(2026, 11, 24, 10))
    assert out.splitlines() == ["🏆 本周积分榜（11-23～11-29）", "这期已经结营，没有人上榜。"]


async def test_help_in_single_chat_marks_the_group_only_commands(bot: App) -> None:
    (group,) = await say(bot, "leader1", "/帮助", local(2026, 11, 3, 9))
    assert "（群里使用）" not in group
    (single,) = await say(bot, "leader1", "帮助", local(2026, 11, 3, 9), chat="")
    lines = {line.split(" —— ")[0]: line for line in single.splitlines()}
    assert lines["· 加分 @某人 <分数> <原因>"].endswith("（群里使用）")
    assert lines["· 潜水 [天数]"].endswith("查看潜水名单和流失风险")  # works in single chat
