"""The command framework: recognition, permissions, help, usage, @-mentions, idempotent replies."""

from __future__ import annotations

import pytest

from bot.app import App
from bot.config import Settings
from bot.context import Context
from bot.dispatcher import Dispatcher
from bot.outbound import Channel, RecordingSender
from bot.updates import Door, Update, UpdateKind
from handlers import activity, checkins
from handlers.commands import Call, CommandSet, Role, UsageError, build_router, reply
from storage import roster
from tests.builders import local
from tests.conftest import GROUP_A

calls: list[Call] = []
demo = CommandSet("test")


@demo.command(
    "加分", "addpoints", role=Role.LEADER, usage="加分 @某人 <分数> <原因>", summary="给学员加分"
)
async def add_points(update: Update, ctx: Context, call: Call) -> None:
    if len(call.mentions) != 1 or len(call.words) < 2 or not call.words[0].isdigit():
        raise UsageError("参数不对")
    calls.append(call)
    await reply(update, ctx, "好的")


@demo.command("兑换", "redeem", usage="兑换 <商品编号>", summary="兑换商品")
async def redeem(update: Update, ctx: Context, call: Call) -> None:
    calls.append(call)


@pytest.fixture
def bot(app: App) -> App:
    calls.clear()
    dispatcher = Dispatcher()
    dispatcher.include(activity.router, checkins.router, build_router(checkins.commands, demo))
    app.dispatcher = dispatcher
    app.pipeline.dispatcher = dispatcher
    with app.db.unit_of_work_sync() as uow:
        roster.ensure_members(
            uow.session,
            [("wmKid", "小明", "external"), ("wmAmy", "Amy Li", "external")],
            app.clock.now(),
        )
        roster.ensure_memberships(uow.session, [(GROUP_A, "wmKid"), (GROUP_A, "wmAmy")])
    return app


_n = 0


async def say(
    app: App,
    sender: str,
    text: str,
    chat: str = GROUP_A,
    mentioned: bool = False,
    msgid: str | None = None,
) -> list[str]:
    global _n
    _n += 1
    update = Update(
        door=Door.AIBOT,
        kind=UpdateKind.MESSAGE,
        message_id=msgid or f"c{_n}",
        chat_id=chat,
        sender_id=sender,
        sent_at=local(2026, 11, 3, 20),
        text=text,
        mentioned_bot=mentioned,
    )
    sender_obj = app.sender
    assert isinstance(sender_obj, RecordingSender)
    before = len(sender_obj.sent)
    await app.pipeline.ingest([(update, "{}")])
    return [m.text for m in sender_obj.sent[before:]]


async def test_learner_is_refused_a_leader_command_and_nothing_runs(bot: App) -> None:
    out = await say(bot, "wmKid", "/加分 @小明 5 表现好")
    assert out == ["抱歉，「加分」仅限班长使用。"]
    assert calls == []


async def test_leader_command_with_mentions_resolved_by_name(bot: App) -> None:
    out = await say(bot, "leader1", "@小助手 加分 @小明 5 表现好", mentioned=True)
    assert out == ["好的"]
    assert calls[0].mentions == ("wmKid",)
    assert calls[0].words == ("5", "表现好")
    assert calls[0].role is Role.LEADER


async def test_wrong_arguments_get_one_line_usage(bot: App) -> None:
    out = await say(bot, "leader1", "/加分 小明 很多")
    assert out == ["参数不对。用法：加分 @某人 <分数> <原因>"]


async def test_unknown_command_gets_help_for_the_callers_role(bot: App) -> None:
    (learner,) = await say(bot, "wmKid", "/变魔术")
    assert learner.startswith("没有找到这个指令")
    assert "兑换 <商品编号>" in learner
    assert "加分" not in learner
    (leader,) = await say(bot, "leader1", "/帮助")
    assert "加分 @某人" in leader


async def test_plain_group_chat_is_not_a_command(bot: App) -> None:
    assert await say(bot, "wmKid", "兑换 A01") == []
    assert calls == []


async def test_prefix_and_alias_matching(bot: App) -> None:
    await say(bot, "wmKid", "/兑换A01")
    await say(bot, "wmKid", "/REDEEM  B02")
    assert [c.args for c in calls] == ["A01", "B02"]
    assert await say(bot, "wmKid", "/redeemx") != []  # no boundary: unknown, help
    assert len(calls) == 2


async def test_single_chat_needs_no_prefix(bot: App) -> None:
    await say(bot, "wmKid", "兑换 A01", chat="")
    assert [c.chat_id for c in calls] == [""]


async def test_redelivered_command_replies_once(bot: App) -> None:
    first = await say(bot, "leader1", "/加分 @小明 5 很好", msgid="same")
    again = await say(bot, "leader1", "/加分 @小明 5 很好", msgid="same")
    assert (first, again, len(calls)) == (["好的"], [], 1)


async def test_checkin_command_confirms_with_streak(bot: App) -> None:
    (first,) = await say(bot, "wmKid", "/打卡 今天学了函数")
    (second,) = await say(bot, "wmKid", "/打卡 再来一次")
    assert first == "✅ 打卡成功！第 2 天，已连续打卡 1 天。"
    assert second == "今天已经打过卡啦，已连续打卡 1 天，明天继续～"
    sent = bot.sender.sent  # type: ignore[attr-defined]
    assert sent[-1].channel is Channel.REPLY
    assert sent[-1].mentions == ("wmKid",)


async def test_commands_are_counted(bot: App) -> None:
    await say(bot, "wmKid", "/帮助")
    from storage import activity as activity_store

    with bot.db.session() as s:
        row = activity_store.day_of(s, GROUP_A, "wmKid", local(2026, 11, 3).date())
    assert row is not None
    assert (row.commands, row.messages) == (1, 1)


def test_role_of_single_chat_is_the_highest_role(settings: Settings) -> None:
    from handlers.commands import role_of

    assert role_of(settings, "", "teacher1") is Role.TEACHER
    assert role_of(settings, "", "leader1") is Role.LEADER
    assert role_of(settings, GROUP_A, "nobody") is Role.LEARNER


def test_a_command_word_declared_twice_is_refused() -> None:
    twice = CommandSet("twice")

    @twice.command("兑换", summary="x")
    async def again(update: Update, ctx: Context, call: Call) -> None:
        return None

    with pytest.raises(ValueError, match="declared twice"):
        build_router(demo, twice)
