"""Points (SPEC §4): the rules that pay (check-ins, and :func:`award` for the other modules),
the learner's ``积分`` and the leader's ``加分``/``扣分``.

Other handler modules pay through :func:`award` (self-introductions: the icebreaker module;
quiz answers: the games module) with an idempotency key derived from their update, so a redelivered
message never pays twice.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from bot.clock import learning_day
from bot.config import CohortSettings
from bot.context import Context
from bot.dispatcher import Router, in_cohort_group
from bot.updates import Event, Update
from handlers.commands import Call, CommandSet, Role, UsageError, reply
from storage import checkins, cohort_dates, roster, streaks
from storage import nudges as nudge_store
from storage import points as ledger
from storage.checkins import CheckIn
from storage.roster import Membership

router = Router("points")
commands = CommandSet("points")

#: What the ledger reasons are called in replies.
REASON_NAMES = {
    ledger.CHECKIN: "打卡",
    ledger.CHECKIN_UNDO: "撤回打卡",
    ledger.INTRO: "自我介绍",
    ledger.MILESTONE: "里程碑奖励",
    ledger.REVIEW: "点评同学",
    ledger.QUIZ: "答题",
    ledger.MANUAL: "班长调整",
    ledger.REDEEM: "兑换",
    ledger.REFUND: "兑换退回",
}


def today_of(ctx: Context, cohort: CohortSettings) -> date:
    """The cohort's learning day now (by the injected clock)."""
    return learning_day(ctx.clock.now(), cohort.timezone, cohort.day_start_hour)


def rule_points(ctx: Context, reason: str) -> int:
    """The configured points of a rule (``checkin``, ``intro``, ``review``, ``quiz``)."""
    rules = ctx.settings.points
    return {
        ledger.CHECKIN: rules.checkin,
        ledger.INTRO: rules.self_intro,
        ledger.REVIEW: rules.review,
        ledger.QUIZ: rules.quiz,
    }[reason]


def award(
    ctx: Context,
    *,
    cohort: CohortSettings,
    member_id: str,
    reason: str,
    key: str,
    points: int | None = None,
    day: date | None = None,
    actor: str = "bot",
    note: str = "",
) -> ledger.Posted:
    """Pay ``member_id`` for ``reason`` once per ``key``, within the reason's daily cap.

    ``points`` defaults to the configured value of the rule (``ledger.INTRO``, ``ledger.QUIZ``...);
    ``day`` to the current learning day. Call it from a handler, e.g. for a self-introduction:
    ``award(ctx, cohort=c, member_id=m, reason=ledger.INTRO, key=f"intro:{c.id}:{m}")``.
    """
    # The writer, not ctx.session: ledger rows never depend on the buffered hot-path writes, so
    # a check-in in a big import batch does not force the activity buffer out early.
    return ledger.post(
        ctx.uow.writer, **_award_args(ctx, cohort, member_id, reason, key, points, day, actor, note)
    )


def award_later(
    ctx: Context,
    *,
    cohort: CohortSettings,
    member_id: str,
    reason: str,
    key: str,
    points: int | None = None,
    day: date | None = None,
    actor: str = "bot",
    note: str = "",
) -> None:
    """:func:`award` for a caller that needs no answer: booked with the unit of work's other
    deferred posts (:func:`storage.points.post_later`), a few statements for a whole batch."""
    ledger.post_later(
        ctx.uow.writer, **_award_args(ctx, cohort, member_id, reason, key, points, day, actor, note)
    )


def _award_args(
    ctx: Context,
    cohort: CohortSettings,
    member_id: str,
    reason: str,
    key: str,
    points: int | None,
    day: date | None,
    actor: str,
    note: str,
) -> dict[str, Any]:
    """:func:`storage.points.post`'s arguments for an award."""
    amount = rule_points(ctx, reason) if points is None else points
    return {
        "cohort_id": cohort.id,
        "member_id": member_id,
        "delta": amount,
        "reason": reason,
        "key": key,
        "day": day or ctx.facts.day or today_of(ctx, cohort),
        "now": ctx.clock.now(),
        "actor": actor,
        "note": note,
        "daily_cap": ctx.settings.points.daily_caps.get(reason, 0),
    }


def cohort_of_member(ctx: Context, member_id: str) -> CohortSettings | None:
    """The cohort a command is about: the group's, or in a single chat, the cohort of the newest
    configured group the person belongs to."""
    if ctx.cohort is not None:
        return ctx.cohort
    rows = ctx.session.scalars(
        select(Membership).where(col(Membership.member_id) == member_id)
    ).all()
    for row in sorted(rows, key=lambda m: m.joined_at or ctx.clock.now(), reverse=True):
        cohort = ctx.settings.cohort_of(row.chat_id)
        if cohort is not None:
            return cohort
    return None


def effective_cohort(ctx: Context, cohort: CohortSettings) -> CohortSettings:
    """The cohort with 开营/结营 overrides applied."""
    return cohort_dates.effective(ctx.session, cohort)


# Check-in points.


@router.message(in_cohort_group, lambda u, c: c.facts.checkin_id is not None)
async def pay_checkin(update: Update, ctx: Context) -> None:
    """The day's check-in earns its points, once per message (booked with the batch's other
    deferred ledger posts: nothing here needs the outcome)."""
    assert ctx.cohort is not None and ctx.facts.day is not None
    award_later(
        ctx,
        cohort=ctx.cohort,
        member_id=update.sender_id,
        reason=ledger.CHECKIN,
        # The message, not the check-in id: SQLite reuses the id of a recalled (deleted) row.
        key=f"checkin:{ctx.cohort.id}:{update.door.namespace}:{update.message_id}",
        day=ctx.facts.day,
    )


@router.event(Event.RECALL, filters=(lambda u, c: c.facts.recalled is not None,))
async def reverse_recalled_checkin(update: Update, ctx: Context) -> None:
    """A recalled check-in gives its points back, unless another message of that day took its
    place (``handlers.checkins`` re-detects): the day's net check-in points return to zero."""
    recalled = ctx.facts.recalled
    assert recalled is not None
    cohort = ctx.settings.cohort_of(recalled.chat_id)
    if cohort is None:
        return
    member, day = recalled.sender_id, recalled.day
    still = ctx.session.scalar(
        select(col(CheckIn.id)).where(
            col(CheckIn.cohort_id) == cohort.id,
            col(CheckIn.member_id) == member,
            col(CheckIn.day) == day,
        )
    )
    if still is not None:
        return
    net = ledger.day_total(
        ctx.session, cohort.id, member, [ledger.CHECKIN, ledger.CHECKIN_UNDO], day
    )
    if net <= 0:
        return
    ledger.post(
        ctx.session,
        cohort_id=cohort.id,
        member_id=member,
        delta=-min(net, ledger.balance(ctx.session, cohort.id, member)),
        reason=ledger.CHECKIN_UNDO,
        key=f"checkin_undo:{update.door.namespace}:{update.message_id}",
        day=day,
        now=ctx.clock.now(),
        note="撤回了打卡消息",
    )


# Commands.


def makeup_limit(ctx: Context, cohort_id: str, member_id: str) -> int:
    """The learner's make-up cards in a cohort: ``[streaks] makeup_cards``, plus those of the
    offers sent to them whose tier grants some (the default 额外补卡券)."""
    grants = {t.id: t.makeup_cards for t in ctx.settings.nudges.offers if t.makeup_cards}
    extra = 0
    if grants:
        for offer in nudge_store.offers_of(ctx.session, member_id, cohort_id):
            if offer.status == nudge_store.OFFER_SENT:
                extra += grants.get(offer.tier, 0)
    return ctx.settings.streaks.makeup_cards + extra


def streak_rules_text(ctx: Context, cohort: CohortSettings, member_id: str, today: date) -> str:
    """Streak transparency (SPEC §3): which days counted and when the streak breaks, plus the
    make-up cards used."""
    days = [c.day for c in checkins.of_member(ctx.session, cohort.id, member_id)]
    end = cohort.end_date
    streak = checkins.cohort_streak(days, today, cohort)
    cards = streaks.used(ctx.session, cohort.id, member_id)
    limit = makeup_limit(ctx, cohort.id, member_id)
    lines = [f"连续打卡 {streak.current} 天（最长 {streak.longest} 天，累计 {streak.total} 天）"]
    if streak.run_days:
        shown = [d.strftime("%m-%d") for d in streak.run_days[-7:]]
        more = "…、" if len(streak.run_days) > 7 else ""
        lines.append(f"计入连续的日子：{more}{'、'.join(shown)}")
    if today < cohort.start_date:
        start = cohort.start_date.strftime("%m-%d")
        lines.append(f"训练营 {start} 开营，从那天起打卡计入连续")
    elif today > end:
        lines.append(f"训练营已于 {end.strftime('%m-%d')} 结营，打卡记录到此为止")
    elif today == end and streak.checked_today:
        if streak.current >= (end - cohort.start_date).days + 1:
            lines.append("今天是训练营最后一天，已打卡，全程连续打卡，坚持到了最后！")
        else:
            lines.append("今天是训练营最后一天，已打卡，为这期学习画上了句号！")
    elif streak.breaks_after is not None:
        when = streak.breaks_after.strftime("%m-%d")
        cut = f"{cohort.day_start_hour:02d}:00"
        if streak.checked_today:
            lines.append(f"今天已打卡；{when} 这一天（到次日 {cut}）不打卡连续就会中断")
        else:
            lines.append(f"今天（{when}）还没打卡，到次日 {cut} 前打卡可保持连续")
    else:
        lines.append("今天打卡就能开始新的连续记录")
    used_text = "、".join(c.day.strftime("%m-%d") for c in cards) or "未使用"
    lines.append(f"补卡：已用 {len(cards)}/{limit} 张（{used_text}）")
    return "\n".join(lines)


@commands.command("积分", "points", usage="积分", summary="查看积分余额、最近记录和连续打卡规则")
async def show_points(update: Update, ctx: Context, call: Call) -> None:
    """积分: balance, the last entries, the streak rules and make-up cards."""
    cohort = cohort_of_member(ctx, update.sender_id)
    if cohort is None:
        await reply(update, ctx, "你还不在任何训练营群里哦。")
        return
    cohort = effective_cohort(ctx, cohort)
    member = update.sender_id
    balance = ledger.balance(ctx.session, cohort.id, member)
    lines = [f"你的积分：{balance}"]
    entries = ledger.recent(ctx.session, cohort.id, member, 5)
    if entries:
        lines.append("最近记录：")
        for e in entries:
            sign = f"+{e.delta}" if e.delta > 0 else str(e.delta)
            what = REASON_NAMES.get(e.reason, e.reason)
            note = f"（{e.note}）" if e.note else ""
            lines.append(f"· {e.day.strftime('%m-%d')} {what} {sign}{note}")
    lines.append(streak_rules_text(ctx, cohort, member, today_of(ctx, cohort)))
    await reply(update, ctx, "\n".join(lines))


def _amount(call: Call) -> tuple[str, int, str]:
    if len(call.mentions) != 1:
        if call.unresolved:
            raise UsageError(f"群里没有找到 @{call.unresolved[0]}")
        raise UsageError("请 @ 一位同学")
    if len(call.words) < 2 or not call.words[0].isdigit():
        raise UsageError("请写分数和原因")
    amount = int(call.words[0])
    if amount <= 0:
        raise UsageError("分数要大于 0")
    return call.mentions[0], amount, " ".join(call.words[1:])[:100]


async def _manual(update: Update, ctx: Context, call: Call, sign: int) -> None:
    cohort = ctx.cohort
    assert cohort is not None  # group_only
    member, amount, why = _amount(call)
    if amount > ctx.settings.points.manual_max:
        raise UsageError(f"一次最多 {ctx.settings.points.manual_max} 分")
    posted = ledger.post(
        ctx.session,
        cohort_id=cohort.id,
        member_id=member,
        delta=sign * amount,
        reason=ledger.MANUAL,
        key=f"manual:{update.door.namespace}:{update.message_id}:{member}",
        day=ctx.facts.day or today_of(ctx, cohort),
        now=ctx.clock.now(),
        actor=update.sender_id,
        note=why,
    )
    name = roster.names(ctx.session, [member])[member]
    if posted.reason == "insufficient":
        await reply(update, ctx, f"{name} 只有 {posted.balance} 积分，扣不了 {amount} 分。")
        return
    verb = "加" if sign > 0 else "扣"
    await reply(
        update,
        ctx,
        f"已为 {name} {verb} {amount} 分（{why}），当前 {posted.balance} 分。",
        mentions=[member],
    )


@commands.command(
    "加分",
    "addpoints",
    role=Role.LEADER,
    usage="加分 @某人 <分数> <原因>",
    summary="给学员加分（记录在账）",
    group_only=True,
)
async def add_points(update: Update, ctx: Context, call: Call) -> None:
    """加分 @人 N 原因 (leaders), logged with the actor."""
    await _manual(update, ctx, call, 1)


@commands.command(
    "扣分",
    "deductpoints",
    role=Role.LEADER,
    usage="扣分 @某人 <分数> <原因>",
    summary="给学员扣分（记录在账）",
    group_only=True,
)
async def deduct_points(update: Update, ctx: Context, call: Call) -> None:
    """扣分 @人 N 原因 (leaders); refused when the balance is too small."""
    await _manual(update, ctx, call, -1)


#: The rhythm module's rule names (:class:`bot.context.Rewards`) to ledger reasons.
_RHYTHM_RULES = {"self_intro": ledger.INTRO, "quiz_first_correct": ledger.QUIZ}


async def ledger_rewards(ctx: Context, cohort_id: str, member_id: str, rule: str, key: str) -> None:
    """The :class:`bot.context.Rewards` seam paid through the ledger (self-introductions, the first
    correct game answer), once per ``key`` and within the reason's daily cap."""
    cohort = ctx.cohort
    if cohort is None or cohort.id != cohort_id:
        cohort = ctx.settings.cohort(cohort_id)
    award(ctx, cohort=cohort, member_id=member_id, reason=_RHYTHM_RULES.get(rule, rule), key=key)
