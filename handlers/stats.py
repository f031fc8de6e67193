"""Group statistics for leaders (``统计 [天数]``, SPEC §11) and cohort dates (``开营``/``结营``).

Stats are read from the daily counters only (SPEC §2: no report rescans messages).

开营/结营 record a date override in ``cohort_dates``; the config stays the default. The pipeline
applies it to ``ctx.cohort`` for every update (:func:`storage.cohort_dates.effective`), and jobs and
single-chat commands apply it themselves.
"""

from __future__ import annotations

from datetime import date, timedelta

from bot.context import Context
from bot.updates import Update
from handlers.commands import Call, CommandSet, Role, UsageError, reply
from handlers.points import effective_cohort, today_of
from storage import activity, cohort_dates, roster

commands = CommandSet("stats")

MAX_DAYS = 90


@commands.command(
    "统计",
    "stats",
    role=Role.LEADER,
    usage="统计 [天数]",
    summary="查看本群最近几天的数据",
    group_only=True,
)
async def group_stats(update: Update, ctx: Context, call: Call) -> None:
    """统计 [天数] (leaders): the group's days from the counters."""
    cohort, group = ctx.cohort, ctx.group
    if cohort is None or group is None:
        await reply(update, ctx, "这个群不属于任何训练营。")
        return
    n = 7
    if call.words:
        if not call.words[0].isdigit() or not 1 <= int(call.words[0]) <= MAX_DAYS:
            raise UsageError(f"天数写 1 到 {MAX_DAYS}")
        n = int(call.words[0])
    today = ctx.facts.day or today_of(ctx, cohort)
    days = [today - timedelta(days=i) for i in range(n - 1, -1, -1)]
    rows = activity.for_group(ctx.session, update.chat_id, days)
    members = [
        m
        for m, _ in roster.members_of(ctx.session, update.chat_id)
        if m.left_at is None
        and m.member_id not in group.teachers
        and m.member_id not in group.leaders
    ]
    by_day: dict[date, dict[str, int]] = {
        d: {"active": 0, "messages": 0, "checkins": 0, "reviews": 0} for d in days
    }
    active_ids: set[str] = set()
    for r in rows:
        s = by_day[r.day]
        if r.messages > 0:
            s["active"] += 1
            active_ids.add(r.member_id)
        s["messages"] += r.messages
        s["checkins"] += r.checkins
        s["reviews"] += r.reviews_given
    lines = [f"📊 {group.name or '本群'} 最近 {n} 天（共 {len(members)} 名学员）"]
    for d in days:
        s = by_day[d]
        lines.append(
            f"{d.strftime('%m-%d')} 发言 {s['active']} 人/{s['messages']} 条，"
            f"打卡 {s['checkins']}，有效点评 {s['reviews']}"
        )
    silent = len([m for m in members if m.member_id not in active_ids])
    lines.append(f"{n} 天内没发言：{silent} 人")
    await reply(update, ctx, "\n".join(lines))


def _date(word: str) -> date:
    try:
        return date.fromisoformat(word)
    except ValueError:
        raise UsageError(f"「{word}」不是日期（YYYY-MM-DD）") from None


@commands.command(
    "开营",
    "startcohort",
    role=Role.LEADER,
    usage="开营 YYYY-MM-DD",
    summary="设置开营日期",
    group_only=True,
)
async def open_cohort(update: Update, ctx: Context, call: Call) -> None:
    """开营 YYYY-MM-DD (leaders, teachers): record a start date override."""
    cohort = ctx.cohort
    assert cohort is not None
    if not call.words:
        raise UsageError("请写开营日期")
    start = _date(call.words[0])
    cohort_dates.set_dates(ctx.session, cohort.id, update.sender_id, ctx.clock.now(), start=start)
    now = effective_cohort(ctx, cohort)
    await reply(
        update,
        ctx,
        f"已设置《{cohort.course}》开营日期 {start.isoformat()}，"
        f"共 {now.length_days} 天，到 {now.end_date.isoformat()}。",
    )


@commands.command(
    "结营",
    "endcohort",
    role=Role.LEADER,
    usage="结营",
    summary="今天结营（以今天为最后一天）",
    group_only=True,
)
async def close_cohort(update: Update, ctx: Context, call: Call) -> None:
    """结营 (leaders, teachers): today becomes the cohort's last day."""
    cohort = ctx.cohort
    assert cohort is not None
    today = ctx.facts.day or today_of(ctx, cohort)
    current = effective_cohort(ctx, cohort)
    if today < current.start_date:
        await reply(update, ctx, "训练营还没开营，不能结营。")
        return
    cohort_dates.set_dates(ctx.session, cohort.id, update.sender_id, ctx.clock.now(), end=today)
    await reply(
        update,
        ctx,
        f"《{cohort.course}》已结营：{current.start_date.isoformat()} 至 {today.isoformat()}，"
        "感谢大家的坚持！",
    )
