"""Redemption (SPEC §4): the catalog (``商城``), ``兑换 <sku>`` which reserves points at once by a
ledger debit and leaves a ``pending`` redemption, and the staff's ``发放``/``取消`` (a cancel
refunds the points and returns the stock).

:func:`redeem` is the whole redemption in one transaction and is safe under concurrency on both
backends: the member's ledger lock (:func:`storage.points.lock_member`) serialises one learner's
redemptions, so the per-learner limit and the balance are checked with nothing in between; the
stock moves by a conditional update, so two learners cannot both take the last one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.orm import Session

from bot import metrics
from bot.config import CatalogItem, CohortSettings
from bot.context import Context
from bot.outbound import Channel, Outbound
from bot.updates import Update
from handlers.commands import Call, CommandSet, Role, UsageError, reply, role_of
from handlers.points import cohort_of_member, today_of
from storage import points as ledger
from storage import roster

commands = CommandSet("shop")

REDEMPTIONS = metrics.counter(
    "cohortbot_redemptions_total", "兑换 attempts, by outcome", ("outcome",)
)


@dataclass(frozen=True)
class Outcome:
    """What :func:`redeem` did; ``why`` names the refusal."""

    ok: bool
    why: str = ""  # "duplicate", "not_offered", "inactive", "limit", "stock", "insufficient"
    redemption: ledger.Redemption | None = None
    balance: int = 0


def redeem(
    session: Session,
    *,
    cohort: CohortSettings,
    member_id: str,
    chat_id: str,
    item: CatalogItem,
    key: str,
    day: date,
    now: datetime,
) -> Outcome:
    """Reserve ``item`` for the member: debit its cost, take one of its stock, and record a
    pending redemption; nothing at all when any check fails."""
    balance = ledger.lock_member(session, cohort.id, member_id)
    done = ledger.redemption_by_key(session, key)
    if done is not None:
        return Outcome(True, "duplicate", done, balance)
    if not item.offered_to(cohort.id):
        return Outcome(False, "not_offered", balance=balance)
    if not item.active_on(day):
        return Outcome(False, "inactive", balance=balance)
    if ledger.held_by(session, cohort.id, member_id, item.sku) >= item.per_learner:
        return Outcome(False, "limit", balance=balance)
    if balance < item.cost:
        return Outcome(False, "insufficient", balance=balance)
    if not ledger.take_stock(session, item.sku, item.stock):
        return Outcome(False, "stock", balance=balance)
    posted = ledger.post(
        session,
        cohort_id=cohort.id,
        member_id=member_id,
        delta=-item.cost,
        reason=ledger.REDEEM,
        key=key,
        day=day,
        now=now,
        actor=member_id,
        note=item.name,
    )
    if not posted.new:  # cannot happen under the lock; never keep stock without the debit
        ledger.return_stock(session, item.sku)
        return Outcome(False, posted.reason or "insufficient", balance=posted.balance)
    row = ledger.add_redemption(
        session,
        cohort_id=cohort.id,
        member_id=member_id,
        chat_id=chat_id,
        sku=item.sku,
        name=item.name,
        cost=item.cost,
        key=key,
        now=now,
    )
    return Outcome(True, "", row, posted.balance)


def cancel(
    session: Session, redemption_id: int, actor: str, day: date, now: datetime
) -> ledger.Redemption | None:
    """Cancel a pending redemption: refund entry, stock back. None when it was not pending."""
    row = ledger.get_redemption(session, redemption_id)
    if row is None or row.id is None:
        return None
    if not ledger.decide(session, row.id, ledger.CANCELLED, actor, now):
        return None
    ledger.post(
        session,
        cohort_id=row.cohort_id,
        member_id=row.member_id,
        delta=row.cost,
        reason=ledger.REFUND,
        key=f"refund:{row.id}",
        day=day,
        now=now,
        actor=actor,
        note=row.name,
    )
    ledger.return_stock(session, row.sku)
    session.refresh(row)
    return row


@commands.command("商城", "shop", usage="商城", summary="查看可兑换的奖励")
async def show_catalog(update: Update, ctx: Context, call: Call) -> None:
    """商城: the active items with their cost and what is left."""
    cohort = cohort_of_member(ctx, update.sender_id)
    today = today_of(ctx, cohort) if cohort else ctx.clock.now().date()
    items = [
        i
        for i in ctx.settings.catalog
        if i.active_on(today) and (cohort is None or i.offered_to(cohort.id))
    ]
    if not items:
        await reply(update, ctx, "商城暂时没有可兑换的奖励。")
        return
    lines = ["🎁 积分商城（发送「兑换 编号」兑换）："]
    for item in items:
        left = max(item.stock - ledger.taken(ctx.session, item.sku), 0)
        stock = f"剩 {left} 件" if left else "已兑完"
        lines.append(
            f"· {item.sku} {item.name}：{item.cost} 积分，{stock}，每人限 {item.per_learner} 件"
        )
    if cohort is not None:
        lines.append(f"你的积分：{ledger.balance(ctx.session, cohort.id, update.sender_id)}")
    await reply(update, ctx, "\n".join(lines))


_WHY = {
    "not_offered": "「{name}」不在你所在训练营的商城里，发送「商城」查看可兑换的奖励。",
    "inactive": "「{name}」现在不在兑换时间内。",
    "limit": "「{name}」每人限兑 {limit} 件，你已经兑换过了。",
    "stock": "「{name}」已经兑完了。",
    "insufficient": "积分不够哦：「{name}」需要 {cost} 积分，你现在有 {balance} 积分。",
}


@commands.command("兑换", "redeem", usage="兑换 <商品编号>", summary="用积分兑换奖励")
async def redeem_command(update: Update, ctx: Context, call: Call) -> None:
    """兑换 <sku>: reserve the item at once; the answer gives the 兑换号."""
    if not call.words:
        raise UsageError("请写商品编号")
    item = ctx.settings.catalog_item(call.words[0])
    if item is None:
        raise UsageError(f"没有编号为「{call.words[0]}」的商品，发送「商城」查看")
    cohort = cohort_of_member(ctx, update.sender_id)
    if cohort is None:
        await reply(update, ctx, "你还不在任何训练营群里哦。")
        return
    outcome = redeem(
        ctx.session,
        cohort=cohort,
        member_id=update.sender_id,
        chat_id=update.chat_id,
        item=item,
        key=f"redeem:{update.door.namespace}:{update.message_id}",
        day=ctx.facts.day or today_of(ctx, cohort),
        now=ctx.clock.now(),
    )
    REDEMPTIONS.inc(outcome=outcome.why or "ok")
    if not outcome.ok:
        text = _WHY[outcome.why].format(
            name=item.name, limit=item.per_learner, cost=item.cost, balance=outcome.balance
        )
        await reply(update, ctx, text)
        return
    assert outcome.redemption is not None
    await reply(
        update,
        ctx,
        f"✅ 兑换成功：{item.name}（兑换号 {outcome.redemption.id}），扣除 {item.cost} 积分，"
        f"剩余 {outcome.balance} 积分。老师发放后会通知你。",
        mentions=[update.sender_id],
    )


_ID = re.compile(r"^[#＃Rr]?(\d{1,9})$")  # 32-bit ids on PostgreSQL


def _redemption_id(call: Call) -> int:
    m = _ID.match(call.words[0]) if call.words else None
    if m is None:
        raise UsageError("请写兑换号")
    return int(m.group(1))


def _may_decide(ctx: Context, update: Update, row: ledger.Redemption) -> bool:
    """Staff decide only for their own cohort's redemptions (in a group: that group's cohort; in
    a single chat: a cohort where they lead or teach a group)."""
    if update.chat_id:
        group = ctx.settings.group(update.chat_id)
        return group is not None and group.cohort_id == row.cohort_id
    groups = ctx.settings.cohort(row.cohort_id).groups
    return any(role_of(ctx.settings, g.chat_id, update.sender_id) >= Role.LEADER for g in groups)


@commands.command(
    "发放", "fulfil", role=Role.LEADER, usage="发放 <兑换号>", summary="标记兑换已发放"
)
async def fulfil(update: Update, ctx: Context, call: Call) -> None:
    """发放 <兑换号> (teachers, leaders): mark a pending redemption fulfilled."""
    rid = _redemption_id(call)
    row = ledger.get_redemption(ctx.session, rid)
    if row is None or not _may_decide(ctx, update, row):
        await reply(update, ctx, f"没有找到兑换号 {rid}。")
        return
    if not ledger.decide(ctx.session, rid, ledger.FULFILLED, update.sender_id, ctx.clock.now()):
        await reply(update, ctx, f"兑换号 {rid} 已经处理过了（{_status(row.status)}）。")
        return
    name = roster.names(ctx.session, [row.member_id])[row.member_id]
    await reply(
        update, ctx, f"已发放：{name} 的「{row.name}」（兑换号 {rid}）。", mentions=[row.member_id]
    )
    await _tell_learner(
        ctx,
        update,
        row,
        ledger.FULFILLED,
        f"🎁 你兑换的「{row.name}」（兑换号 {rid}）已发放，请查收～",
    )


@commands.command(
    "取消", "cancel", role=Role.LEADER, usage="取消 <兑换号>", summary="取消兑换并退回积分"
)
async def cancel_command(update: Update, ctx: Context, call: Call) -> None:
    """取消 <兑换号> (teachers, leaders): refund and return the stock."""
    rid = _redemption_id(call)
    row = ledger.get_redemption(ctx.session, rid)
    if row is None or not _may_decide(ctx, update, row):
        await reply(update, ctx, f"没有找到兑换号 {rid}。")
        return
    cohort = ctx.settings.cohort(row.cohort_id)
    done = cancel(ctx.session, rid, update.sender_id, today_of(ctx, cohort), ctx.clock.now())
    if done is None:
        await reply(update, ctx, f"兑换号 {rid} 已经处理过了（{_status(row.status)}）。")
        return
    name = roster.names(ctx.session, [done.member_id])[done.member_id]
    await reply(
        update,
        ctx,
        f"已取消 {name} 的「{done.name}」（兑换号 {rid}），退回 {done.cost} 积分。",
        mentions=[done.member_id],
    )
    await _tell_learner(
        ctx,
        update,
        done,
        ledger.CANCELLED,
        f"你兑换的「{done.name}」（兑换号 {rid}）已取消，{done.cost} 积分已退回。",
    )


async def _tell_learner(
    ctx: Context, update: Update, row: ledger.Redemption, status: str, text: str
) -> None:
    """Let the learner know when staff decided somewhere they cannot see (a single chat, another
    group): in the group they redeemed in, @-mentioning them, or privately."""
    if update.chat_id and update.chat_id == row.chat_id:
        return  # the reply in that group already @-mentions them
    key = f"redemption:{row.id}:{status}"
    if row.chat_id:
        message = Outbound(
            channel=Channel.GROUP, to=row.chat_id, text=text, mentions=(row.member_id,), key=key
        )
    else:
        message = Outbound(channel=Channel.PRIVATE, to=row.member_id, text=text, key=key)
    await ctx.send(message)


def _status(status: str) -> str:
    return {ledger.PENDING: "待发放", ledger.FULFILLED: "已发放", ledger.CANCELLED: "已取消"}.get(
        status, status
    )
