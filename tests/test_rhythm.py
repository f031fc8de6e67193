"""The group's rhythm piece by piece (SPEC §6): answer normalization, recap keywords, batched
welcomes, self-introductions, 破冰/公告 and quiet hours, the agenda config, and the word files."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

import scripts_library.rhythm as words
from bot.app import App
from bot.clock import ManualClock
from bot.config import ConfigError, Settings, parse_settings
from bot.scheduler import CohortScheduler
from handlers import rhythm
from handlers.rhythm import is_correct, is_self_intro, normalize_answer, top_keywords
from storage import roster
from tests.builders import local
from tests.conftest import GROUP_A, base_config
from tests.rhythm_helpers import Rewards, TimedSender, join, kind_of, say

# --- pure functions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("said", "answers", "right"),
    [
        ("BUG", ["bug"], True),
        ("Ｂｕｇ！", ["bug"], True),  # full-width letters and punctuation
        (" b u g ", ["bug"], True),  # spaces
        ("@小助手 bug", ["bug"], True),  # a leading @-mention
        ("木星。", ["木星"], True),
        ("答案是木星吧", ["木星"], True),  # a short sentence containing the answer
        ("１１", ["11"], True),  # full-width digits
        ("择其善者，而从之！", ["择其善者而从之"], True),
        ("《论语》", ["论语"], True),
        ("火星", ["木星"], False),
        ("水", ["水"], True),
        ("喝水", ["水"], False),  # one-character answers must match exactly
        (
            "我觉得这道题的答案可能是木星但是不确定",
            ["木星"],
            False,
        ),  # a long message is not an answer
        ("", ["水"], False),
        ("！！！", ["水"], False),
    ],
)
def test_answer_normalization(said: str, answers: list[str], right: bool) -> None:
    assert is_correct(said, answers) is right


def test_normalize_answer() -> None:
    assert normalize_answer("  Ｈｅｌｌｏ，　Ｗｏｒｌｄ！ ") == "helloworld"
    assert normalize_answer("“温故知新”") == "温故知新"


DISCUSSION = [
    "今天的列表推导式我终于看懂了，列表推导式写起来真简洁",
    "大家觉得装饰器难不难？我觉得装饰器比列表推导式难多了",
    "装饰器其实就是一个函数包着另一个函数，大家觉得呢",
    "大家有没有好的练习题推荐？想多练练装饰器和生成器",
    "生成器用 yield 返回值，真的很省内存",
    "哈哈哈，我还在和缩进错误作斗争呢，大家加油",
    "缩进错误真的是新手必经之路，大家都一样",
    "我们一起加油，其实多写几遍就好了，大家说是不是",
]


def test_recap_keywords_of_a_fixed_discussion() -> None:
    top = top_keywords(DISCUSSION, 5)
    assert len(top) == 5
    for expected in ("装饰", "推导", "生成器", "缩进"):
        assert expected in top
    stop = words.stopwords()
    assert not [w for w in top if w in stop]
    for common in ("大家", "觉得", "加油", "我们", "其实", "真的"):
        assert common in stop and common not in top


def test_self_intro_detection() -> None:
    fields = ("昵称", "最喜欢吃的食物", "空闲时喜欢做什么")
    assert is_self_intro("【昵称】：小明\n【最喜欢吃的食物】：火锅", fields)
    assert is_self_intro("我来做个自我介绍：我是小明", fields)
    assert not is_self_intro("我的昵称是小明", fields)  # one field is not an introduction
    assert not is_self_intro("今天学完了", fields)


# --- the word files -----------------------------------------------------------------------


def test_every_text_renders_with_its_fields() -> None:
    for name, template in words.names().items():
        fields = dict.fromkeys(words.fields_of(template), "样例")
        out = words.text(name, **fields)
        assert "{" not in out and "}" not in out, name
    with pytest.raises(KeyError):
        words.text("announcement", txt="typo")


def test_pools_are_big_enough_and_well_formed() -> None:
    topics = words.topics()
    riddles = words.riddles()
    assert len(topics) >= 30 and len(riddles) >= 30
    assert len({t.id for t in topics}) == len(topics)
    assert len({r.id for r in riddles}) == len(riddles)
    kinds = set(words.game_order())
    assert kinds == {"riddle", "quiz", "guess"}
    for r in riddles:
        assert r.kind in kinds and r.answers and r.question
        assert all(normalize_answer(a) for a in r.answers), r.id
        assert is_correct(r.answers[0], r.answers)
    for kind in kinds:
        assert words.game_title(kind)


# --- config -------------------------------------------------------------------------------


def test_rhythm_config_defaults_and_agenda() -> None:
    settings = parse_settings(
        base_config(
            rhythm={
                "quiet_start": "23:00",
                "agenda": [{"cohort": "c1", "day": 2, "lesson": "列表", "deadlines": ["作业一"]}],
            }
        ),
        env={},
    )
    r = settings.rhythm
    assert r.quiet_start.hour == 23 and r.quiet_end.hour == 7 and r.quiet_end.minute == 30
    assert r.agenda_for("c1", 2) is not None and r.agenda_for("c1", 3) is None
    with pytest.raises(ConfigError, match=r"rhythm.topic_time: '25:00' is not a time"):
        parse_settings(base_config(rhythm={"topic_time": "25:00"}), env={})
    with pytest.raises(ConfigError, match=r"rhythm.agenda\[0\].cohort: no cohort 'zz'"):
        parse_settings(
            base_config(rhythm={"agenda": [{"cohort": "zz", "day": 1, "lesson": "x"}]}), env={}
        )
    with pytest.raises(ConfigError, match=r"rhythm.quiet_hours: unknown key"):
        parse_settings(base_config(rhythm={"quiet_hours": "x"}), env={})


# --- through the pipeline and the scheduler -----------------------------------------------


@pytest.fixture
def bot(settings: Settings, clock: ManualClock) -> Iterator[tuple[App, TimedSender, Rewards]]:
    sender = TimedSender(clock)
    app = App.open(settings, clock=clock, sender=sender)
    rewards = Rewards()
    app.pipeline.rewards = rewards
    with app.db.unit_of_work_sync() as uow:
        roster.ensure_members(
            uow.session,
            [
                ("wmKid", "小明", "external"),
                ("wmAmy", "Amy", "external"),
                ("wmNew", "新同学", "external"),
            ],
            clock.now(),
        )
    try:
        yield app, sender, rewards
    finally:
        app.close()


async def test_welcome_is_batched_per_minute(
    bot: tuple[App, TimedSender, Rewards], clock: ManualClock
) -> None:
    app, sender, _ = bot
    scheduler = CohortScheduler(app, jobs=[])
    clock.set(local(2026, 11, 2, 10, 0))
    await join(app, ["wmKid"], clock.now())
    clock.set(local(2026, 11, 2, 10, 0) + timedelta(seconds=40))
    await join(app, ["wmAmy", "wmNew"], clock.now())
    assert sender.sent == []
    await scheduler.run_until(clock, local(2026, 11, 2, 10, 5))
    (welcome,) = sender.sent
    assert sender.times == [local(2026, 11, 2, 10, 1)]
    assert welcome.mentions == ("wmKid", "wmAmy", "wmNew")
    assert welcome.text.startswith("@小明 @Amy @新同学 欢迎加入「一班」")
    assert "【昵称】：\n【最喜欢吃的食物】：\n【空闲时喜欢做什么】：" in welcome.text
    assert "#打卡" in welcome.text
    # A later join opens a new batch.
    await join(app, ["wmLate"], clock.now())
    await scheduler.run_until(clock, local(2026, 11, 2, 10, 10))
    assert [m.mentions for m in sender.sent[1:]] == [("wmLate",)]
    assert sender.times[1] == local(2026, 11, 2, 10, 6)


async def test_join_in_quiet_hours_is_welcomed_when_they_end_even_after_a_restart(
    bot: tuple[App, TimedSender, Rewards], settings: Settings, clock: ManualClock
) -> None:
    app, sender, _ = bot
    clock.set(local(2026, 11, 2, 23, 10))
    await join(app, ["wmNew"], clock.now())
    await CohortScheduler(app, jobs=[]).run_until(clock, local(2026, 11, 3, 2, 0))
    assert sender.sent == []
    app.close()
    second_sender = TimedSender(clock)
    second = App.open(settings, clock=clock, sender=second_sender)
    try:
        await CohortScheduler(second, jobs=[]).run_until(clock, local(2026, 11, 3, 9, 0))
        assert [m.mentions for m in second_sender.sent] == [("wmNew",)]
        assert second_sender.times == [local(2026, 11, 3, 7, 30)]
    finally:
        second.close()


async def test_a_newcomer_who_introduced_themselves_overnight_is_not_asked_to(
    bot: tuple[App, TimedSender, Rewards], clock: ManualClock
) -> None:
    app, sender, _ = bot
    clock.set(local(2026, 11, 2, 23, 10))
    await join(app, ["wmNew"], clock.now())
    clock.set(local(2026, 11, 2, 23, 20))
    await say(app, "wmNew", "大家好，我来做个自我介绍：我是新同学，喜欢吃火锅", clock.now())
    await CohortScheduler(app, jobs=[]).run_until(clock, local(2026, 11, 3, 9, 0))
    (welcome,) = [m for m in sender.sent if m.mentions == ("wmNew",)]
    assert "谢谢你的自我介绍" in welcome.text and "【昵称】" not in welcome.text


async def test_replayed_old_joins_are_not_welcomed(
    bot: tuple[App, TimedSender, Rewards], clock: ManualClock
) -> None:
    app, sender, _ = bot
    clock.set(local(2026, 11, 5, 10, 0))
    await join(app, ["wmNew"], local(2026, 11, 2, 10, 0))  # an archive import of last week
    await CohortScheduler(app, jobs=[]).run_until(clock, local(2026, 11, 5, 12, 0))
    assert sender.sent == []


async def test_self_introduction_is_recorded_and_rewarded_once(
    bot: tuple[App, TimedSender, Rewards], clock: ManualClock
) -> None:
    app, _, rewards = bot
    clock.set(local(2026, 11, 2, 10, 0))
    await join(app, ["wmKid"], clock.now())
    intro = "【昵称】：小明\n【最喜欢吃的食物】：火锅\n【空闲时喜欢做什么】：爬山"
    await say(app, "wmKid", intro, clock.now())
    await say(app, "wmKid", "补充一下自我介绍：我在杭州", clock.now())
    assert rewards.calls == [("c1", "wmKid", rhythm.RULE_SELF_INTRO, f"intro:{GROUP_A}:wmKid")]
    with app.db.unit_of_work_sync() as uow:
        membership = roster.get_membership(uow.session, GROUP_A, "wmKid")
        assert membership is not None and membership.intro_done_at == clock.now()


async def test_leader_icebreaker_and_announcement(
    bot: tuple[App, TimedSender, Rewards], clock: ManualClock
) -> None:
    app, sender, _ = bot
    clock.set(local(2026, 11, 3, 20, 0))
    await join(app, ["wmNew"], local(2026, 11, 3, 20, 0))
    sender.sent.clear()
    sender.times.clear()
    await say(app, "wmKid", "/破冰 周末去哪儿", clock.now())
    assert [m.text for m in sender.sent] == ["抱歉，「破冰」仅限班长使用。"]
    await say(app, "leader1", "/破冰 周末大家都去哪儿玩？", clock.now())
    ice = sender.sent[-1]
    assert kind_of(ice) == "icebreaker" and "周末大家都去哪儿玩？" in ice.text
    assert ice.mentions == ("wmNew",) and "@新同学" in ice.text
    await say(app, "leader1", "/公告", clock.now())
    assert sender.sent[-1].text == "请写上公告内容。用法：公告 <文本>"
    await say(app, "leader1", "/公告 明晚八点直播答疑", clock.now())
    assert sender.sent[-1].text == "📢 公告\n明晚八点直播答疑"


async def test_announcement_in_quiet_hours_waits_until_they_end(
    bot: tuple[App, TimedSender, Rewards], clock: ManualClock
) -> None:
    app, sender, _ = bot
    clock.set(local(2026, 11, 3, 23, 0))
    await say(app, "leader1", "/公告 明早交作业", clock.now())
    assert [m.text for m in sender.sent] == ["现在是安静时段，将在 07:30 发出。"]
    await CohortScheduler(app, jobs=[]).run_until(clock, local(2026, 11, 4, 9, 0))
    assert sender.sent[-1].text == "📢 公告\n明早交作业"
    assert sender.times[-1] == local(2026, 11, 4, 7, 30)


async def test_morning_agenda_from_config(settings: Settings, clock: ManualClock) -> None:
    config = base_config(
        database={"url": settings.database_url},
        rhythm={
            "agenda": [
                {
                    "cohort": "c1",
                    "day": 2,
                    "lesson": "第2课 列表与循环",
                    "deadlines": ["作业1 今晚22点"],
                }
            ]
        },
    )
    configured = parse_settings(config, env={})
    sender = TimedSender(clock)
    app = App.open(configured, clock=clock, sender=sender)
    try:
        scheduler = CohortScheduler(
            app, jobs=[j for j in rhythm.jobs(configured) if j.id == f"rhythm.morning:{GROUP_A}"]
        )
        clock.set(local(2026, 11, 2, 7, 0))
        await scheduler.run_until(clock, local(2026, 11, 3, 9, 0))
        day1, day2 = (m.text for m in sender.sent)
        assert "按课表完成第 1 天的课程" in day1 and "今天没有截止事项" in day1
        assert "第 2 天（11月3日）" in day2
        assert "📖 今日学习：第2课 列表与循环" in day2 and "⏰ 今日截止：作业1 今晚22点" in day2
        assert sender.times == [local(2026, 11, 2, 7, 45), local(2026, 11, 3, 7, 45)]
    finally:
        app.close()


async def test_topics_do_not_repeat_until_the_pool_is_used_up(
    bot: tuple[App, TimedSender, Rewards], clock: ManualClock
) -> None:
    from storage import rhythm as store

    app, _, _ = bot
    pool = [t.id for t in words.topics()]
    with app.db.unit_of_work_sync() as uow:
        picks = [
            store.next_from_pool(uow.session, GROUP_A, "topic", pool, clock.now()) for _ in pool
        ]
        assert sorted(picks) == sorted(pool)  # every topic once
        again = store.next_from_pool(uow.session, GROUP_A, "topic", pool, clock.now())
        assert again in pool and store.use_count(uow.session, GROUP_A, "topic") == len(pool) + 1


async def test_first_correct_answer_in_one_batch_wins_once(
    bot: tuple[App, TimedSender, Rewards], clock: ManualClock
) -> None:
    from bot.updates import Door, Update, UpdateKind
    from storage import rhythm as store

    app, sender, rewards = bot
    scheduler = CohortScheduler(
        app, jobs=[j for j in rhythm.jobs(app.settings) if j.id == f"rhythm.game:{GROUP_A}"]
    )
    await scheduler.run_until(clock, local(2026, 11, 2, 15, 1))
    with app.db.unit_of_work_sync() as uow:
        game = store.open_game(uow.session, GROUP_A)
        assert game is not None and game.kind == "riddle"  # day 1: 脑筋急转弯
        answer = game.answer_list[0]

    def msg(n: int, sender_id: str, text: str) -> tuple[Update, str]:
        at = clock.now() + timedelta(seconds=n)
        update = Update(Door.AIBOT, UpdateKind.MESSAGE, f"b{n}", GROUP_A, sender_id, at, text=text)
        return update, "{}"

    await app.pipeline.ingest(
        [msg(1, "wmKid", "不知道"), msg(2, "wmKid", f"{answer}！"), msg(3, "wmAmy", answer)]
    )
    assert [(r[1], r[2]) for r in rewards.calls] == [("wmKid", rhythm.RULE_QUIZ_FIRST)]
    await scheduler.run_until(clock, local(2026, 11, 2, 17, 0))
    kinds = [kind_of(m) for m in sender.sent]
    assert kinds == ["game", "game-won", "reveal"]
    assert f"答案揭晓：{answer}" in sender.sent[-1].text and "小明" in sender.sent[-1].text
    assert sender.times[-1] == local(2026, 11, 2, 16, 0)
