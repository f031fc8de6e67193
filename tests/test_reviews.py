"""Peer reviews (SPEC §4.1): the three ways to review, and every anti-cheat rule."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from bot.app import App
from handlers import mentions
from handlers.reviews import is_padding, similarity, tokens_of
from handlers.text import meaningful_chars
from storage import activity, roster
from storage import reviews as review_store
from tests.builders import local
from tests.chat import balance, bot, say
from tests.conftest import GROUP_A

__all__ = ["bot"]

DAY = local(2026, 11, 4, 20)

REVIEWS = [
    "你今天的作业把列表推导式讲得特别清楚，尤其是先写普通循环再改写成推导式的对比，让我一下子明白了两者的区别。"
    "建议下次可以再补充一个带条件过滤的例子，这样读者会更容易举一反三，继续加油！",
    "看完你整理的字典笔记很受启发，键值对的增删改查都配了小例子，排版也干净利落。"
    "我觉得如果能把常见的报错情况和排查思路也写进去会更实用，比如取不存在的键时怎么处理，期待你的更新。",
    "你分享的函数参数总结太及时了，位置参数、默认参数和可变参数的区别讲到了点子上。"
    "我之前一直搞混星号参数的用法，看了你画的示意图终于理解了，明天我也试着按你的方法画一张图来复习。",
    "今天的打卡内容看得出你花了不少心思，文件读写的三个步骤写得有条理，代码注释也很贴心。"
    "唯一的小建议是记得用上下文管理器自动关闭文件，这样更安全，另外异常处理部分可以再展开讲讲。",
    "你对循环和条件语句的练习做得很扎实，每道题都写了自己的思路和踩过的坑，这种复盘习惯特别值得学习。"
    "第三题如果改用字典来存储计数结果，代码会短很多，可以对比一下两种写法的运行速度，互相进步！",
]


def test_fixture_reviews_are_long_enough_and_distinct() -> None:
    assert all(meaningful_chars(r) >= 80 for r in REVIEWS)
    toks = [set(tokens_of(r)) for r in REVIEWS]
    assert max(similarity(a, b) for i, a in enumerate(toks) for b in toks[i + 1 :]) < 0.6


def test_padding_detection() -> None:
    filler = "好好学习天天向上" * 12
    assert is_padding(filler, tokens_of(filler), 0.3)
    assert not is_padding(REVIEWS[0], tokens_of(REVIEWS[0]), 0.3)


async def _checkins(bot: App, at: datetime = DAY - timedelta(hours=12)) -> None:
    for i, who in enumerate(("wmAmy", "wmBob", "wmCat", "wmDan", "wmKid")):
        await say(bot, who, f"#打卡 今天的作业 {who}", at + timedelta(minutes=i), msgid=f"ck-{who}")


def _counter(bot: App, member: str) -> tuple[int, int]:
    with bot.db.session() as s:
        row = activity.day_of(s, GROUP_A, member, DAY.date())
    return (row.reviews_given, row.reviews_received) if row else (0, 0)


async def test_quoting_a_peers_checkin_with_80_chars_earns_points(bot: App) -> None:
    await _checkins(bot)
    out = await say(bot, "wmKid", REVIEWS[0], DAY, quoted="ck-wmAmy")
    assert out == ["👍 点评有效，+10积分！认真的点评是最好的陪伴。"]
    assert balance(bot, "wmKid") == 2 + 10
    assert _counter(bot, "wmKid") == (1, 0)
    assert _counter(bot, "wmAmy") == (0, 1)


async def test_mentioning_a_peer_who_checked_in_yesterday_counts(bot: App) -> None:
    await _checkins(bot, DAY - timedelta(days=1))
    out = await say(bot, "wmKid", "@Amy " + REVIEWS[1], DAY)
    assert out == ["👍 点评有效，+10积分！认真的点评是最好的陪伴。"]


async def test_a_checkin_two_days_old_is_not_reviewed(bot: App) -> None:
    await _checkins(bot, DAY - timedelta(days=2))
    assert await say(bot, "wmKid", "@Amy " + REVIEWS[1], DAY) == []


async def test_review_command(bot: App) -> None:
    await _checkins(bot)
    out = await say(bot, "wmKid", "/点评 @小波 " + REVIEWS[2], DAY)
    assert out == ["👍 点评有效，+10积分！认真的点评是最好的陪伴。"]
    with bot.db.session() as s:
        (row,) = review_store.rewarded_on(s, "c1", "wmKid", DAY.date())
    assert row.reviewee_id == "wmBob"


async def test_review_command_needs_a_mention(bot: App) -> None:
    (out,) = await say(bot, "wmKid", "/点评 写得真好", DAY)
    assert out == "请 @ 一位同学。用法：点评 @某人 <点评内容>"


async def test_review_delivered_twice_pays_once(bot: App) -> None:
    await _checkins(bot)
    first = await say(bot, "wmKid", REVIEWS[0], DAY, quoted="ck-wmAmy", msgid="rv")
    again = await say(bot, "wmKid", REVIEWS[0], DAY, quoted="ck-wmAmy", msgid="rv")
    assert (len(first), again) == (1, [])
    assert balance(bot, "wmKid") == 12
    assert _counter(bot, "wmAmy") == (0, 1)


async def test_self_review_is_refused(bot: App) -> None:
    await _checkins(bot)
    out = await say(bot, "wmKid", "/点评 @小明 " + REVIEWS[0], DAY)
    assert out == ["不能点评自己哦，这条不计积分。"]
    assert balance(bot, "wmKid") == 2


async def test_quoting_ones_own_checkin_to_add_to_it_is_chat(bot: App) -> None:
    await _checkins(bot)
    assert await say(bot, "wmKid", REVIEWS[0], DAY, quoted="ck-wmKid") == []
    assert _counter(bot, "wmKid") == (0, 0)
    with bot.db.session() as s:
        assert review_store.rejected_on(s, "c1", "wmKid", DAY.date(), "self") == 0


async def test_too_short_is_refused_but_the_peer_still_counts_it(bot: App) -> None:
    await _checkins(bot)
    text = "写得很好，列表推导式的例子非常清楚，期待你明天继续分享更多的学习心得和代码"
    out = await say(bot, "wmKid", text, DAY, quoted="ck-wmAmy")
    n = meaningful_chars(text)
    assert out == [f"点评需至少80个有效字（这条{n}字），这条不计积分。"]
    assert balance(bot, "wmKid") == 2
    assert _counter(bot, "wmAmy") == (0, 1)
    assert _counter(bot, "wmKid") == (0, 0)


async def test_a_short_implicit_review_is_told_the_rule_once_a_day(bot: App) -> None:
    # A quote-reply of 20-79 characters is a review that is too short. The first one of the
    # day is told why; later ones still count for the peer but the group does not hear the rule
    # again. The explicit 点评 is always answered, and the next day the rule is told once more.
    await _checkins(bot)
    first = "写得很好，列表推导式的例子非常清楚，期待你明天继续分享更多的学习心得和代码"
    again = "同感，这个对比讲得真清楚，我之前一直没想明白，今天看完终于懂了，谢谢分享"
    assert len(await say(bot, "wmKid", first, DAY, quoted="ck-wmAmy")) == 1
    assert await say(bot, "wmKid", again, DAY + timedelta(minutes=5), quoted="ck-wmAmy") == []
    assert _counter(bot, "wmAmy") == (0, 2)
    explicit = await say(bot, "wmKid", "/点评 @Amy " + again, DAY + timedelta(minutes=9))
    assert explicit == [f"点评需至少80个有效字（这条{meaningful_chars(again)}字），这条不计积分。"]
    await say(bot, "wmAmy", "#打卡", DAY + timedelta(days=1), msgid="ck-wmAmy-2")
    told = await say(bot, "wmKid", first, DAY + timedelta(days=1, minutes=5), quoted="ck-wmAmy-2")
    assert len(told) == 1
    assert "点评需至少80个有效字" in told[0]


async def test_short_chat_mentioning_a_peer_is_just_chat(bot: App) -> None:
    await _checkins(bot)
    assert await say(bot, "wmKid", "@Amy 加油！", DAY) == []


async def test_padding_is_refused(bot: App) -> None:
    await _checkins(bot)
    out = await say(bot, "wmKid", "/点评 @Amy " + "好好学习天天向上" * 12, DAY)
    assert out == ["点评里重复和凑字的内容太多，这条不计积分。"]
    emoji = "/点评 @Amy 写得好" + "👍🎉  ！！" * 80
    assert await say(bot, "wmKid", emoji, DAY) == [
        f"点评需至少80个有效字（这条{meaningful_chars(emoji[8:])}字），这条不计积分。"
    ]


async def test_same_peer_counts_once_a_day(bot: App) -> None:
    await _checkins(bot)
    await say(bot, "wmKid", REVIEWS[0], DAY, quoted="ck-wmAmy")
    out = await say(bot, "wmKid", "/点评 @Amy " + REVIEWS[1], DAY)
    assert out == ["今天已经点评过Amy了，同一位同学每天只计一次积分。"]
    assert balance(bot, "wmKid") == 12
    assert _counter(bot, "wmAmy") == (0, 2)


async def test_near_duplicate_of_a_recent_review_is_refused(bot: App) -> None:
    await _checkins(bot)
    await say(bot, "wmKid", REVIEWS[0], DAY, quoted="ck-wmAmy")
    tweaked = REVIEWS[0].replace("继续加油", "一起加油").replace("特别", "非常")
    out = await say(bot, "wmKid", tweaked, DAY, quoted="ck-wmBob")
    assert out == ["这条和你最近的点评太相似了，换个角度写写吧，这条不计积分。"]
    assert balance(bot, "wmKid") == 12


async def test_daily_cap_of_three_rewarded_reviews(bot: App) -> None:
    await _checkins(bot)
    for peer, text in zip(("Amy", "小波", "小猫"), REVIEWS, strict=False):
        await say(bot, "wmKid", f"/点评 @{peer} {text}", DAY)
    out = await say(bot, "wmKid", "/点评 @大丹 " + REVIEWS[3], DAY)
    assert out == ["今天的点评积分已满3条，继续点评依然很棒，明天再来拿积分～"]
    assert balance(bot, "wmKid") == 2 + 30
    assert _counter(bot, "wmKid") == (3, 0)
    assert _counter(bot, "wmDan") == (0, 1)
    # The next learning day the cap starts again.
    nxt = DAY + timedelta(days=1)
    await say(bot, "wmDan", "#打卡 第四天", nxt - timedelta(hours=3), msgid="dan2")
    out = await say(bot, "wmKid", REVIEWS[4], nxt, quoted="dan2")
    assert out == ["👍 点评有效，+10积分！认真的点评是最好的陪伴。"]


@pytest.mark.parametrize("teacher", ["teacher1"])
async def test_reviewing_a_teacher_earns_nothing(bot: App, teacher: str) -> None:
    out = await say(bot, "wmKid", "/点评 @李老师 " + REVIEWS[0], DAY)
    assert out == ["只能点评训练营的同学哦，这条不计积分。"]


async def test_recalled_review_gives_its_points_back(bot: App) -> None:
    from tests.builders import archive_recall, archive_text, pair

    await _checkins(bot)
    item = archive_text(GROUP_A, "wmKid", "@Amy " + REVIEWS[0], DAY, msgid="rv-archive")
    await bot.pipeline.ingest([pair(item)])
    assert balance(bot, "wmKid") == 12
    assert _counter(bot, "wmAmy") == (0, 1)
    recall = archive_recall(GROUP_A, "wmKid", "rv-archive", DAY + timedelta(minutes=1))
    await bot.pipeline.ingest([pair(recall)])
    assert balance(bot, "wmKid") == 2
    assert _counter(bot, "wmAmy") == (0, 0)
    assert _counter(bot, "wmKid") == (0, 0)
    (mine,) = await say(bot, "wmAmy", "/我的", DAY + timedelta(minutes=1))
    assert "收到点评 0 条" in mine
    # Posting it again (say, with a typo fixed) is a fresh review, not a near-duplicate.
    out = await say(bot, "wmKid", "@Amy " + REVIEWS[0], DAY + timedelta(minutes=2))
    assert out == ["👍 点评有效，+10积分！认真的点评是最好的陪伴。"]
    assert balance(bot, "wmKid") == 12


async def test_a_teachers_comment_counts_for_the_learner_and_pays_nobody(bot: App) -> None:
    await _checkins(bot)
    assert await say(bot, "teacher1", REVIEWS[0], DAY, quoted="ck-wmAmy") == []
    assert _counter(bot, "wmAmy") == (0, 1)
    assert balance(bot, "teacher1") == 0


async def test_a_name_with_a_space_is_recognised_in_both_kinds_of_review(bot: App) -> None:
    """`@Coco Li` names Coco Li, not an unknown "Coco" (the longest known name wins)."""
    with bot.db.unit_of_work_sync() as uow:
        roster.ensure_members(uow.session, [("wmCoco", "Coco Li", "external")], DAY)
        roster.ensure_memberships(uow.session, [(GROUP_A, "wmCoco")])
        roster.ensure_members(uow.session, [("wmCo", "Coco", "external")], DAY)
        roster.ensure_memberships(uow.session, [(GROUP_A, "wmCo")])
    await say(bot, "wmCoco", "#打卡 今天的作业", DAY - timedelta(hours=12), msgid="ck-coco")
    out = await say(bot, "wmKid", "@Coco Li " + REVIEWS[3], DAY)
    assert out == ["👍 点评有效，+10积分！认真的点评是最好的陪伴。"]
    out = await say(bot, "wmBob", "/点评 @Coco Li " + REVIEWS[4], DAY)
    assert out == ["👍 点评有效，+10积分！认真的点评是最好的陪伴。"]
    with bot.db.session() as s:
        (kid,) = review_store.rewarded_on(s, "c1", "wmKid", DAY.date())
        (bob,) = review_store.rewarded_on(s, "c1", "wmBob", DAY.date())
    assert kid.reviewee_id == bob.reviewee_id == "wmCoco"


def test_mentions_resolve_the_longest_name_at_a_boundary() -> None:
    members = [("wmCo", "Coco"), ("wmCoco", "Coco Li"), ("wmKid", "小明"), ("wmKid2", "小明")]
    found = mentions.resolve("@Coco Li 写得好，@Coco， @小明 @Coconut @ 和 ＠wmKid2", members)
    assert found.ids == ("wmCoco", "wmCo", "wmKid", "wmKid2")
    assert found.unresolved == ("Coconut",)
    assert found.rest == "写得好，， @ 和"
    # A name glued to the following text is not a mention of that name.
    assert mentions.resolve("@小明写得好", members).unresolved == ("小明写得好",)
