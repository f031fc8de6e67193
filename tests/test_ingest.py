"""Counters, check-ins, streaks and recalls through the real pipeline, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.app import App
from bot.config import CohortSettings, parse_settings
from handlers.checkins import detect
from storage import activity, checkins, messages, roster
from storage.checkins import CheckIn
from storage.inbox import RawEvent
from tests.builders import NY, archive_recall, archive_text, local, pair
from tests.conftest import GROUP_A, GROUP_B, GROUP_NY, base_config


async def ingest(app: App, *items: dict[str, Any]) -> Any:
    return await app.pipeline.ingest([pair(i) for i in items])


def counter(app: App, chat: str, member: str, day: date) -> activity.DailyCounter | None:
    with app.db.session() as s:
        return activity.day_of(s, chat, member, day)


def checkin_days(app: App, cohort: str, member: str) -> list[date]:
    with app.db.session() as s:
        return [c.day for c in checkins.of_member(s, cohort, member)]


async def test_message_counts_meaningful_chars_and_day(app: App) -> None:
    await ingest(
        app,
        archive_text(GROUP_A, "wmU1", "今天学了列表推导式😀", local(2026, 11, 3, 10), name="小鱼"),
        archive_text(GROUP_A, "wmU1", "哈哈哈哈哈哈", local(2026, 11, 3, 11)),
    )
    row = counter(app, GROUP_A, "wmU1", date(2026, 11, 3))
    assert row is not None
    assert (row.messages, row.chars, row.checkins) == (2, 9 + 1, 0)
    assert row.first_at == local(2026, 11, 3, 10) and row.last_at == local(2026, 11, 3, 11)
    with app.db.session() as s:
        membership = roster.get_membership(s, GROUP_A, "wmU1")
        assert membership is not None and membership.days_active == 1
        assert not membership.never_spoken
        assert roster.names(s, ["wmU1"]) == {"wmU1": "小鱼"}


async def test_checkin_at_0130_counts_for_previous_learning_day(app: App) -> None:
    await ingest(app, archive_text(GROUP_A, "wmU1", "#打卡 Day3", local(2026, 11, 5, 1, 30)))
    assert checkin_days(app, "c1", "wmU1") == [date(2026, 11, 4)]
    assert counter(app, GROUP_A, "wmU1", date(2026, 11, 4)).checkins == 1  # type: ignore[union-attr]
    # 04:00 is the first minute of the new learning day.
    await ingest(app, archive_text(GROUP_A, "wmU1", "#打卡 Day4", local(2026, 11, 5, 4, 0)))
    assert checkin_days(app, "c1", "wmU1") == [date(2026, 11, 4), date(2026, 11, 5)]


async def test_learning_day_follows_the_cohort_timezone(app: App) -> None:
    # 20:00 on Nov 5 in New York is 09:00 on Nov 6 in Shanghai.
    at = local(2026, 11, 5, 20, tz=NY)
    await ingest(
        app,
        archive_text(GROUP_NY, "wmU2", "打卡 morning reading", at),
        archive_text(GROUP_A, "wmU2", "打卡 第5天", at),
    )
    assert checkin_days(app, "ny", "wmU2") == [date(2026, 11, 5)]
    assert checkin_days(app, "c1", "wmU2") == [date(2026, 11, 6)]


async def test_one_checkin_per_learning_day(app: App) -> None:
    await ingest(
        app,
        archive_text(GROUP_A, "wmU1", "#打卡 第1天", local(2026, 11, 2, 20)),
        archive_text(GROUP_A, "wmU1", "【打卡】补充内容", local(2026, 11, 2, 21)),
        archive_text(GROUP_B, "wmU1", "#打卡 在二班也发一次", local(2026, 11, 2, 22)),
    )
    assert checkin_days(app, "c1", "wmU1") == [date(2026, 11, 2)]
    a = counter(app, GROUP_A, "wmU1", date(2026, 11, 2))
    b = counter(app, GROUP_B, "wmU1", date(2026, 11, 2))
    assert a is not None and b is not None
    assert (a.messages, a.checkins, b.messages, b.checkins) == (2, 1, 1, 0)


async def test_plain_mention_of_daka_is_not_a_checkin(app: App) -> None:
    await ingest(app, archive_text(GROUP_A, "wmU1", "我今天忘了打卡怎么办", local(2026, 11, 2, 20)))
    assert checkin_days(app, "c1", "wmU1") == []


#: The default rules of cohort c1, for the detection tests that need no database.
C1: CohortSettings = parse_settings(base_config(), env={}).cohort("c1")


@pytest.mark.parametrize(
    "text",
    [
        "#打卡 Day3",
        "#打卡 Day3 今天学了列表推导式",
        "# 打卡 第3天",
        "【打卡】补充内容",
        "【打卡】今天有点难，明天再复习吗？",  # a tag opens the message: what follows may ask
        "打卡 今天学了字典",
        "打卡：今天学了字典",
        "/打卡 Day2",
        "打卡第5天",
        "打卡 morning reading",
        "第3天打卡：学了字典",
        "第3天打卡，今天学了怎么写函数",
        "Day 2 打卡",
        "day2打卡",
        "@小助手 打卡 Day3",
        "#打卡 今天学了怎么写函数",
        "打卡 今天学了怎么写函数？",
        # The check-in opens the message; a question after it does not undo it.
        "#打卡 今天学了怎么写函数？我还有点不懂",
        "#打卡 今天学了怎么写函数，有点不懂怎么办？",
        "第3天打卡：学了装饰器，有人能讲讲闭包吗？",
        # A negated 打卡 later on does not undo the check-in before it.
        "#打卡 第4天，昨天没打卡今天补上",
        "今天是第4天打卡，昨天忘了打卡",
        "坚持每天打卡第10天了",
    ],
)
def test_checkin_forms_are_detected(text: str) -> None:
    assert detect(C1, text, "text") == "checkin"


@pytest.mark.parametrize(
    "text",
    [
        # Questions about 打卡.
        "打卡是每天几点截止呀？",
        "请问Day 2的作业要在打卡的时候一起交吗",
        "打卡群里有人吗",
        "打卡是几点截止",
        "第3天怎么打卡",
        "Day 3 打卡要怎么交",
        "打卡第3天的作业在哪里交？",
        "第5天打卡几点截止呢～",
        "#打卡怎么算？",
        "打卡今天学了怎么写函数？",  # not set off by a space: a question wins (README)
        # Negated 打卡: the learner has not checked in.
        "第3天了还没打卡，今天太忙了",
        "我还没#打卡，晚点补",
        "我今天忘了打卡怎么办",
        "Day3 忘记打卡了",
        "第2天没有打卡",
        # Merely mentioning 打卡.
        "大家记得打卡哦",
    ],
)
def test_questions_and_negations_are_not_checkins(text: str) -> None:
    assert detect(C1, text, "text") is None


def test_a_cohorts_own_patterns_keep_the_question_and_negation_rules() -> None:
    config = base_config()
    config["cohorts"][0]["checkin_patterns"] = ["#打卡"]
    cohort = parse_settings(config, env={}).cohort("c1")
    assert detect(cohort, "#打卡 学了字典", "text") == "checkin"
    assert detect(cohort, "我还没#打卡，晚点补", "text") is None
    assert detect(cohort, "今天的#打卡几点截止呀？", "text") is None


def test_homework_needs_a_link_or_an_attachment() -> None:
    assert detect(C1, "作业3：https://gitee.com/u1/hw3", "text") == "homework"
    assert detect(C1, "交作业啦", "file") == "homework"
    assert detect(C1, "交作业啦", "text") is None


async def test_questions_and_negations_earn_no_checkin_through_the_pipeline(app: App) -> None:
    said = [
        "打卡是每天几点截止呀？",
        "第3天了还没打卡，今天太忙了",
        "请问Day 2的作业要在打卡的时候一起交吗",
        "打卡群里有人吗",
        "我还没#打卡，晚点补",
    ]
    at = local(2026, 11, 4, 20)
    await ingest(
        app,
        *(archive_text(GROUP_A, "wmU1", t, at + timedelta(minutes=i)) for i, t in enumerate(said)),
    )
    assert checkin_days(app, "c1", "wmU1") == []
    row = counter(app, GROUP_A, "wmU1", date(2026, 11, 4))
    assert row is not None and (row.messages, row.checkins) == (5, 0)
    # The same learner checking in afterwards still gets the day.
    await ingest(app, archive_text(GROUP_A, "wmU1", "#打卡 第3天 学了字典", local(2026, 11, 4, 21)))
    assert checkin_days(app, "c1", "wmU1") == [date(2026, 11, 4)]


async def test_checkins_outside_the_cohort_dates_are_just_messages(app: App) -> None:
    await ingest(
        app,
        archive_text(GROUP_A, "wmU1", "#打卡 预习", local(2026, 11, 1, 20)),  # day 0
        archive_text(GROUP_A, "wmU1", "#打卡 结营后", local(2026, 11, 23, 20)),  # day 22 of 21
    )
    assert checkin_days(app, "c1", "wmU1") == []
    assert counter(app, GROUP_A, "wmU1", date(2026, 11, 1)).messages == 1  # type: ignore[union-attr]


async def test_homework_by_link_and_by_image_after_announcement(app: App) -> None:
    await ingest(
        app,
        archive_text(GROUP_A, "wmU1", "作业3：https://gitee.com/u1/hw3", local(2026, 11, 4, 20)),
        archive_text(GROUP_A, "wmU2", "交作业啦", local(2026, 11, 4, 20, 0)),
        archive_text(GROUP_A, "wmU2", "", local(2026, 11, 4, 20, 5), msgtype="image"),
        archive_text(GROUP_A, "wmU3", "", local(2026, 11, 4, 20, 5), msgtype="image"),
    )
    assert checkin_days(app, "c1", "wmU1") == [date(2026, 11, 4)]
    assert checkin_days(app, "c1", "wmU2") == [date(2026, 11, 4)]
    assert checkin_days(app, "c1", "wmU3") == []  # an image alone is no homework
    u2 = counter(app, GROUP_A, "wmU2", date(2026, 11, 4))
    assert u2 is not None and (u2.homework, u2.checkins, u2.messages) == (1, 1, 2)


async def test_duplicate_delivery_counts_once(app: App) -> None:
    item = archive_text(GROUP_A, "wmU1", "#打卡 Day1", local(2026, 11, 2, 20), msgid="dup-1")
    first = await ingest(app, item, item)
    second = await ingest(app, item)
    assert (first.new, first.duplicates, second.new, second.duplicates) == (1, 1, 0, 1)
    row = counter(app, GROUP_A, "wmU1", date(2026, 11, 2))
    assert row is not None and (row.messages, row.checkins) == (1, 1)
    with app.db.session() as s:
        assert s.scalar(select(func.count()).select_from(RawEvent)) == 1


async def test_recall_stops_counting_and_undoes_the_checkin(app: App) -> None:
    checkin = archive_text(GROUP_A, "wmU1", "#打卡 第3天 学了字典", local(2026, 11, 4, 20))
    await ingest(app, checkin)
    await ingest(app, archive_recall(GROUP_A, "wmU1", checkin["msgid"], local(2026, 11, 4, 20, 1)))
    row = counter(app, GROUP_A, "wmU1", date(2026, 11, 4))
    assert row is not None and (row.messages, row.chars, row.checkins) == (0, 0, 0)
    assert checkin_days(app, "c1", "wmU1") == []
    with app.db.session() as s:
        membership = roster.get_membership(s, GROUP_A, "wmU1")
        assert membership is not None and membership.days_active == 0
        stored = messages.get(s, "archive", checkin["msgid"])
        assert stored is not None and stored.recalled


async def test_recalled_checkin_is_replaced_by_the_next_qualifying_message(app: App) -> None:
    first = archive_text(GROUP_A, "wmU1", "#打卡 第3天", local(2026, 11, 4, 20))
    second = archive_text(GROUP_A, "wmU1", "【打卡】第3天 更正版", local(2026, 11, 4, 20, 5))
    await ingest(app, first, second)
    await ingest(app, archive_recall(GROUP_A, "wmU1", first["msgid"], local(2026, 11, 4, 20, 6)))
    with app.db.session() as s:
        found = s.scalars(select(CheckIn)).all()
    assert [(c.day, c.message_key) for c in found] == [
        (date(2026, 11, 4), f"archive:{second['msgid']}")
    ]
    row = counter(app, GROUP_A, "wmU1", date(2026, 11, 4))
    assert row is not None and (row.messages, row.checkins) == (1, 1)


async def test_recall_by_someone_else_or_twice_changes_nothing(app: App) -> None:
    msg = archive_text(GROUP_A, "wmU1", "#打卡 第1天", local(2026, 11, 2, 20))
    await ingest(app, msg)
    await ingest(app, archive_recall(GROUP_A, "wmU9", msg["msgid"], local(2026, 11, 2, 20, 1)))
    assert checkin_days(app, "c1", "wmU1") == [date(2026, 11, 2)]
    recall = archive_recall(GROUP_A, "wmU1", msg["msgid"], local(2026, 11, 2, 20, 2))
    await ingest(app, recall)
    await ingest(app, {**recall, "msgid": "another-recall-id"})
    row = counter(app, GROUP_A, "wmU1", date(2026, 11, 2))
    assert row is not None and row.messages == 0  # not -1


async def test_streak_broken_and_rebuilt(app: App) -> None:
    start = local(2026, 11, 2, 20)
    for day in (0, 1, 2, 4, 5):  # misses day 4 (Nov 5)
        await ingest(
            app, archive_text(GROUP_A, "wmU1", f"#打卡 Day{day + 1}", start + timedelta(days=day))
        )
    days = checkin_days(app, "c1", "wmU1")
    on_day6 = checkins.streak_of(days, date(2026, 11, 7))
    assert (on_day6.current, on_day6.longest, on_day6.total) == (2, 3, 5)
    assert on_day6.checked_today and on_day6.breaks_after == date(2026, 11, 8)
    on_day7 = checkins.streak_of(days, date(2026, 11, 8))
    assert on_day7.current == 2 and on_day7.at_risk
    assert checkins.streak_of(days, date(2026, 11, 9)).current == 0


async def test_unconfigured_group_and_single_chat_are_stored_not_counted(app: App) -> None:
    result = await ingest(
        app,
        archive_text("wrSomeOtherGroup", "wmU1", "#打卡", local(2026, 11, 2, 20)),
        archive_text("", "wmU1", "#打卡", local(2026, 11, 2, 20)),
    )
    assert result.new == 2
    with app.db.session() as s:
        assert s.scalar(select(func.count()).select_from(activity.DailyCounter)) == 0
        assert s.scalar(select(func.count()).select_from(CheckIn)) == 0


async def test_days_active_counts_distinct_days_across_batches(app: App) -> None:
    for day, hour in ((2, 9), (2, 22), (3, 9), (3, 10), (5, 9)):
        await ingest(app, archive_text(GROUP_A, "wmU1", "大家好", local(2026, 11, day, hour)))
    await ingest(
        app, archive_text(GROUP_A, "wmU1", "补一条", local(2026, 11, 2, 12))
    )  # out of order
    with app.db.session() as s:
        membership = roster.get_membership(s, GROUP_A, "wmU1")
        assert membership is not None
        assert membership.days_active == 3
        assert membership.first_message_at == local(2026, 11, 2, 9)
        assert membership.last_seen_at == local(2026, 11, 5, 9)
