"""Redemption (SPEC §4): 商城, 兑换, 发放, 取消; stock and per-learner limits."""

from __future__ import annotations

import pytest

from bot.app import App
from bot.clock import ManualClock
from bot.config import ConfigError
from handlers.points import award
from storage import points as ledger
from tests.builders import local
from tests.chat import CATALOG, balance, bot, entries, make_settings, open_bot, say

__all__ = ["bot"]

AT = local(2026, 11, 3, 10)


async def _give(bot: App, member: str, amount: int) -> None:
    async with bot.db.unit_of_work() as uow:
        ctx = bot.pipeline.context(uow)
        award(
            ctx,
            cohort=bot.settings.cohort("c1"),
            member_id=member,
            reason=ledger.MANUAL,
            key=f"give:{member}:{amount}",
            points=amount,
            day=AT.date(),
        )


async def test_catalog_lists_active_items_with_stock_and_balance(bot: App) -> None:
    await _give(bot, "wmKid", 7)
    (out,) = await say(bot, "wmKid", "/商城", AT)
    assert "· A01 学习笔记本：10 积分，剩 100 件，每人限 100 件" in out
    assert "· B02 一对一答疑：5 积分，剩 1 件，每人限 1 件" in out
    assert "已下架" not in out
    assert out.endswith("你的积分：7")


async def test_redeem_debits_at_once_and_is_pending(bot: App) -> None:
    await _give(bot, "wmKid", 12)
    (out,) = await say(bot, "wmKid", "/兑换 a01", AT)
    assert out.startswith("✅ 兑换成功：学习笔记本（兑换号 1），扣除 10 积分，剩余 2 积分。")
    assert balance(bot, "wmKid") == 2
    with bot.db.session() as s:
        (row,) = ledger.pending(s, "c1")
    assert (row.member_id, row.sku, row.status) == ("wmKid", "A01", "pending")


async def test_redeem_refusals(bot: App) -> None:
    await _give(bot, "wmKid", 8)
    assert await say(bot, "wmKid", "/兑换 A01", AT) == [
        "积分不够哦：「学习笔记本」需要 10 积分，你现在有 8 积分。"
    ]
    assert await say(bot, "wmKid", "/兑换 OLD", AT) == ["「已下架」现在不在兑换时间内。"]
    assert await say(bot, "wmKid", "/兑换 ZZZ", AT) == [
        "没有编号为「ZZZ」的商品，发送「商城」查看。用法：兑换 <商品编号>"
    ]
    assert await say(bot, "wmKid", "/兑换", AT) == ["请写商品编号。用法：兑换 <商品编号>"]
    assert balance(bot, "wmKid") == 8


async def test_per_learner_limit_and_stock(bot: App) -> None:
    await _give(bot, "wmKid", 20)
    await _give(bot, "wmAmy", 20)
    await say(bot, "wmKid", "/兑换 C03", AT)
    await say(bot, "wmKid", "/兑换 C03", AT)
    assert await say(bot, "wmKid", "/兑换 C03", AT) == [
        "「往期课程」每人限兑 2 件，你已经兑换过了。"
    ]
    (ok,) = await say(bot, "wmKid", "/兑换 B02", AT)
    assert ok.startswith("✅")
    assert await say(bot, "wmAmy", "/兑换 B02", AT) == ["「一对一答疑」已经兑完了。"]
    assert balance(bot, "wmKid") == 20 - 1 - 1 - 5
    assert balance(bot, "wmAmy") == 20


async def test_fulfil_by_leader(bot: App) -> None:
    await _give(bot, "wmKid", 10)
    await say(bot, "wmKid", "/兑换 A01", AT)
    assert await say(bot, "leader1", "/发放 1", AT) == [
        "已发放：小明 的「学习笔记本」（兑换号 1）。"
    ]
    assert await say(bot, "leader1", "/发放 1", AT) == ["兑换号 1 已经处理过了（已发放）。"]
    assert await say(bot, "leader1", "/取消 1", AT) == ["兑换号 1 已经处理过了（已发放）。"]
    assert balance(bot, "wmKid") == 0


async def test_teacher_cancels_with_refund_and_stock_back(bot: App) -> None:
    await _give(bot, "wmKid", 10)
    await _give(bot, "wmAmy", 10)
    await say(bot, "wmKid", "/兑换 B02", AT)
    (out,) = await say(bot, "teacher1", "/取消 #1", AT)
    assert out == "已取消 小明 的「一对一答疑」（兑换号 1），退回 5 积分。"
    assert balance(bot, "wmKid") == 10
    assert entries(bot, "wmKid")[-2:] == [("redeem", -5), ("refund", 5)]
    (ok,) = await say(bot, "wmAmy", "/兑换 B02", AT)  # the stock came back
    assert ok.startswith("✅")
    with bot.db.session() as s:
        assert ledger.taken(s, "B02") == 1


async def test_learner_cannot_fulfil_or_cancel(bot: App) -> None:
    await _give(bot, "wmKid", 10)
    await say(bot, "wmKid", "/兑换 A01", AT)
    assert await say(bot, "wmKid", "/取消 1", AT) == ["抱歉，「取消」仅限班长使用。"]
    assert await say(bot, "wmAmy", "/发放 1", AT) == ["抱歉，「发放」仅限班长使用。"]
    with bot.db.session() as s:
        assert len(ledger.pending(s, "c1")) == 1
    assert balance(bot, "wmKid") == 0


async def test_unknown_redemption_number(bot: App) -> None:
    assert await say(bot, "leader1", "/发放 99", AT) == ["没有找到兑换号 99。"]
    assert await say(bot, "leader1", "/发放 abc", AT) == ["请写兑换号。用法：发放 <兑换号>"]


async def test_staff_decide_only_for_their_own_cohort(bot: App) -> None:
    from tests.conftest import GROUP_NY

    async with bot.db.unit_of_work() as uow:
        ctx = bot.pipeline.context(uow)
        award(
            ctx,
            cohort=bot.settings.cohort("ny"),
            member_id="wmAmy",
            reason=ledger.MANUAL,
            key="ny-give",
            points=10,
            day=AT.date(),
        )
    (ok,) = await say(bot, "wmAmy", "/兑换 A01", AT, chat=GROUP_NY)
    assert ok.startswith("✅ 兑换成功：学习笔记本（兑换号 1）")
    # leader1 leads a group of cohort c1 only: not in single chat, not from its group.
    assert await say(bot, "leader1", "发放 1", AT, chat="") == ["没有找到兑换号 1。"]
    assert await say(bot, "leader1", "/发放 1", AT) == ["没有找到兑换号 1。"]
    await _give(bot, "wmKid", 10)
    await say(bot, "wmKid", "/兑换 A01", AT)
    assert await say(bot, "leader1", "发放 2", AT, chat="") == [
        "已发放：小明 的「学习笔记本」（兑换号 2）。",
        "🎁 你兑换的「学习笔记本」（兑换号 2）已发放，请查收～",
    ]


async def test_learner_hears_of_a_decision_taken_in_a_single_chat(bot: App) -> None:
    from bot.outbound import Channel
    from tests.chat import sent
    from tests.conftest import GROUP_A

    await _give(bot, "wmKid", 20)
    await say(bot, "wmKid", "/兑换 A01", AT)
    await say(bot, "wmKid", "兑换 A01", AT, chat="")
    await say(bot, "teacher1", "发放 1", AT, chat="")
    await say(bot, "teacher1", "取消 2", AT, chat="")
    notices = [(m.channel, m.to, m.text) for m in sent(bot) if m.channel is not Channel.REPLY]
    assert notices == [
        (Channel.GROUP, GROUP_A, "🎁 你兑换的「学习笔记本」（兑换号 1）已发放，请查收～"),
        (Channel.PRIVATE, "wmKid", "你兑换的「学习笔记本」（兑换号 2）已取消，10 积分已退回。"),
    ]


async def test_hostile_arguments_get_a_polite_answer_and_change_nothing(bot: App) -> None:
    await _give(bot, "wmKid", 10)
    assert await say(bot, "leader1", "/发放 99999999999999", AT) == [
        "请写兑换号。用法：发放 <兑换号>"
    ]
    assert await say(bot, "wmKid", "/兑换 A01'; DROP TABLE points_entry;--", AT) == [
        "没有编号为「A01';」的商品，发送「商城」查看。用法：兑换 <商品编号>"
    ]
    (out,) = await say(bot, "leader1", "/加分 @小明 99999999999999999999 {name}{0}", AT)
    assert out == "一次最多 1000 分。用法：加分 @某人 <分数> <原因>"
    assert balance(bot, "wmKid") == 10


async def test_an_item_for_one_cohort_is_hidden_and_refused_elsewhere(
    database_url: str, clock: ManualClock
) -> None:
    """`cohorts = [...]` on an item: only those cohorts see it in 商城 and may redeem it."""
    catalog = [
        *CATALOG,
        {"sku": "NY1", "name": "纽约营周边", "cost": 1, "stock": 5, "cohorts": ["ny"]},
    ]
    app = open_bot(make_settings(database_url, shop={"items": catalog}), clock)
    try:
        await _give(app, "wmKid", 5)
        (shop,) = await say(app, "wmKid", "/商城", AT)
        assert "NY1" not in shop and "A01 学习笔记本" in shop
        assert await say(app, "wmKid", "/兑换 NY1", AT) == [
            "「纽约营周边」不在你所在训练营的商城里，发送「商城」查看可兑换的奖励。"
        ]
        assert balance(app, "wmKid") == 5
        with app.db.session() as s:
            assert ledger.taken(s, "NY1") == 0
        from tests.conftest import GROUP_NY

        (shop_ny,) = await say(app, "wmAmy", "/商城", AT, chat=GROUP_NY)
        assert "NY1 纽约营周边" in shop_ny
    finally:
        app.close()


def test_an_item_for_an_unknown_cohort_is_a_config_error(database_url: str) -> None:
    catalog = [{"sku": "X1", "name": "某营周边", "cost": 1, "stock": 1, "cohorts": ["nope"]}]
    with pytest.raises(ConfigError, match=r"shop\.items\[0\]\.cohorts: no cohort has id 'nope'"):
        make_settings(database_url, shop={"items": catalog})
