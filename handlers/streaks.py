"""Streak care (SPEC §3): make-up cards (``补卡``), the learner's progress (``我的``) and the
evening streak-at-risk reminder job.

The reminder is a job function, not a handler: the scheduler (issue 5) calls
:func:`streak_reminder_job` at ``streaks.reminder_time`` in each cohort's timezone
(:func:`reminder_schedule` lists when); it takes "now" from the app's clock.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlmodel import col

from bot.clock import learning_day
from bot.config import CohortSettings, Settings
from bot.context import Context
from bot.jobs import Run
from bot.outbound import Channel, Kind, Outbound
from bot.updates import Update
from handlers.commands import Call, CommandSet, Role, UsageError, reply
from handlers.milestones import check_milestones
from handlers.points import (
    cohort_of_member,
    effective_cohort,
    makeup_limit,
    streak_rules_text,
    today_of,
)
from scripts_library.toml_scripts import render
from storage import checkins, milestones, roster, streaks
from storage import points as ledger
from storage.checkins import KIND_MAKEUP
from storage.reviews import Review

if TYPE_CHECKING:
    from bot.app import App

commands = CommandSet("streaks")

_DATE_FORMS = (
    re.compile(r"^(?P<y>\d{4})[-/.年](?P<m>\d{1,2})[-/.月](?P<d>\d{1,2})日?$"),
    re.compile(r"^(?P<m>\d{1,2})[-/.月](?P<d>\d{1,2})日?$"),
)


def parse_day(word: str, today: date) -> date | None:
    """``2026-11-05``, ``11-05``, ``11/5``, ``11月5日``, ``昨天``, ``前天``; None if not a date."""
    if word in ("昨天", "昨日"):
        return today - timedelta(days=1)
    if word == "前天":
        return today - timedelta(days=2)
    for form in _DATE_FORMS:
        m = form.match(word)
        if m is None:
            continue
        year = int(m.group("y")) if "y" in m.groupdict() and m.group("y") else today.year
        try:
            day = date(year, int(m.group("m")), int(m.group("d")))
        except ValueError:
            return None
        if "y" not in m.groupdict():
            # Without a year, the nearest such date: "12-30" typed on Jan 2nd is last year's,
            # "11-09" typed on 11-06 is this year's (a future day, refused as one).
            near = [c for c in _same_day_of_year(day, year) if c is not None]
            day = min(near, key=lambda c: abs((c - today).days))
        return day
    return None


def _same_day_of_year(day: date, year: int) -> list[date | None]:
    """``day`` in the year before, its own year and the year after (None where it does not
    exist: 02-29)."""
    out: list[date | None] = []
    for y in (year - 1, year, year + 1):
        try:
            out.append(day.replace(year=y))
        except ValueError:
            out.append(None)
    return out


def _missed_days(ctx: Context, cohort: CohortSettings, member: str, today: date) -> list[date]:
    have = {c.day for c in checkins.of_member(ctx.session, cohort.id, member)}
    last = min(today - timedelta(days=1), cohort.end_date)
    out = []
    day = cohort.start_date
    while day <= last:
        if day not in have:
            out.append(day)
        day += timedelta(days=1)
    return out


def _chat_of(ctx: Context, update: Update, cohort: CohortSettings, member: str) -> str:
    if update.chat_id:
        return update.chat_id
    for group in cohort.groups:
        if roster.get_membership(ctx.session, group.chat_id, member) is not None:
            return group.chat_id
    return cohort.groups[0].chat_id if cohort.groups else ""


@commands.command(
    "补卡", "makeup", usage="补卡 [日期] 或 补卡 @某人 [日期]", summary="用补卡补上漏打的一天"
)
async def makeup(update: Update, ctx: Context, call: Call) -> None:
    """补卡 [日期] / 补卡 @人 [日期] (leaders for others): fill one missed day."""
    if call.mentions and call.role < Role.LEADER:
        await reply(update, ctx, "抱歉，为他人补卡仅限班长使用。")
        return
    member = call.mentions[0] if call.mentions else update.sender_id
    if call.unresolved and not call.mentions:
        raise UsageError(f"群里没有找到 @{call.unresolved[0]}")
    cohort = cohort_of_member(ctx, member)
    if cohort is None:
        await reply(update, ctx, "你还不在任何训练营群里哦。")
        return
    cohort = effective_cohort(ctx, cohort)
    today = today_of(ctx, cohort)
    ledger.lock_member(ctx.session, cohort.id, member)  # one card at a time per learner
    limit = makeup_limit(ctx, cohort.id, member)
    used = streaks.count_used(ctx.session, cohort.id, member)
    name = roster.names(ctx.session, [member])[member]
    who = "你" if member == update.sender_id else name
    if used >= limit:
        await reply(update, ctx, f"{who}的 {limit} 张补卡已经用完了。")
        return
    if call.words:
        day = parse_day(call.words[0], today)
        if day is None:
            raise UsageError(f"「{call.words[0]}」不是日期")
    else:
        missed = _missed_days(ctx, cohort, member, today)
        if not missed:
            await reply(update, ctx, f"{who}在训练营里没有漏打的日子，不需要补卡。")
            return
        day = missed[-1]
    if day >= today:
        await reply(update, ctx, "补卡只能补过去漏打的日子，今天请直接打卡哦。")
        return
    if not cohort.start_date <= day <= cohort.end_date:
        await reply(update, ctx, f"{day.strftime('%m-%d')} 不在训练营日期内，不能补卡。")
        return
    chat_id = _chat_of(ctx, update, cohort, member)
    checkin_id = checkins.add(
        ctx.session, cohort.id, member, day, chat_id, None, KIND_MAKEUP, ctx.clock.now()
    )
    if checkin_id is None:
        await reply(update, ctx, f"{who}在 {day.strftime('%m-%d')} 已经打过卡了，不需要补卡。")
        return
    streaks.add(
        ctx.session,
        streaks.MakeupCard(
            cohort_id=cohort.id,
            member_id=member,
            day=day,
            actor=update.sender_id,
            checkin_id=checkin_id,
            created_at=ctx.clock.now(),
        ),
    )
    if chat_id:
        # The day's counters count it like any check-in, so the radar, the digest and the
        # report see the streak the learner sees (the rollup's triggers repair a sealed day).
        ctx.uow.activity.count((chat_id, member, day), checkins=1)
    # After the cohort's end the streak (and the milestone it may complete) stands as at the end.
    measured_at = cohort.streak_day(today)
    days = [c.day for c in checkins.of_member(ctx.session, cohort.id, member)]
    streak = checkins.cohort_streak(days, today, cohort)
    await reply(
        update,
        ctx,
        f"已为{who}补卡 {day.strftime('%m-%d')}（补卡已用 {used + 1}/{limit} 张），"
        f"{'结营时' if today > cohort.end_date else '当前'}连续打卡 {streak.current} 天。",
        mentions=[member],
    )
    if chat_id:
        await check_milestones(ctx, cohort, member, chat_id, measured_at)


@commands.command("我的", "me", usage="我的", summary="查看我的学习进度")
async def my_progress(update: Update, ctx: Context, call: Call) -> None:
    """Progress as text, then the card (issue 7) when ``ctx.card_maker`` is set."""
    member = update.sender_id
    cohort = cohort_of_member(ctx, member)
    if cohort is None:
        await reply(update, ctx, "你还不在任何训练营群里哦。")
        return
    cohort = effective_cohort(ctx, cohort)
    today = today_of(ctx, cohort)
    session = ctx.session
    name = roster.names(session, [member])[member]
    given = session.scalar(
        select(func.count())
        .select_from(Review)
        .where(
            col(Review.cohort_id) == cohort.id,
            col(Review.reviewer_id) == member,
            col(Review.rewarded).is_(True),
        )
    )
    received = session.scalar(
        select(func.count())
        .select_from(Review)
        .where(
            col(Review.cohort_id) == cohort.id,
            col(Review.reviewee_id) == member,
            col(Review.rejected_because) != "recalled",  # a recalled review stops counting
        )
    )
    badges = milestones.of_member(session, cohort.id, member)
    day_n = min(max(cohort.cohort_day(today), 0), cohort.length_days)
    lines = [
        f"{name} 的学习进度 ·《{cohort.course}》第 {day_n}/{cohort.length_days} 天",
        f"积分：{ledger.balance(session, cohort.id, member)}",
        f"点评：给出有效点评 {int(given or 0)} 条，收到点评 {int(received or 0)} 条",
        "徽章：" + ("、".join(f"{b.milestone}天" for b in badges) or "还没有，继续加油"),
        streak_rules_text(ctx, cohort, member, today),
    ]
    await reply(update, ctx, "\n".join(lines))
    if ctx.card_maker is not None:
        card = ctx.card_maker(
            ctx,
            "progress",
            {
                "member_id": member,
                "cohort_id": cohort.id,
                "name": name,
                "day": day_n,
                "length": cohort.length_days,
                "badges": [b.milestone for b in badges],
            },
        )
        if card:
            await ctx.send(
                Outbound(
                    channel=Channel.REPLY,
                    to=update.chat_id or member,
                    kind=Kind.IMAGE,
                    card=card,
                    key=f"progress-card:{update.door.namespace}:{update.message_id}",
                )
            )


# The streak-at-risk reminder job.


def reminder_schedule(settings: Settings) -> list[tuple[str, int, int, str]]:
    """When to run :func:`streak_reminder_job`: ``(cohort id, hour, minute, timezone)`` each."""
    hour, minute = settings.streaks.reminder_hour_minute
    return [(c.id, hour, minute, c.timezone.key) for c in settings.cohorts]


async def send_streak_reminders(ctx: Context, cohort_id: str | None = None) -> int:
    """Remind learners with a streak of at least ``streaks.reminder_min_streak`` who have not
    checked in today; return how many learners were reminded. Group mode: one message per group
    @-mentioning them (idempotency key per group and day); private mode: one message each."""
    rules = ctx.settings.streaks
    now = ctx.clock.now()
    reminded = 0
    for configured in ctx.settings.cohorts:
        if cohort_id is not None and configured.id != cohort_id:
            continue
        cohort = effective_cohort(ctx, configured)
        today = learning_day(now, cohort.timezone, cohort.day_start_hour)
        if not 1 <= cohort.cohort_day(today) <= cohort.length_days:
            continue
        days_by_member = checkins.days_by_member(ctx.session, cohort.id)
        for group in cohort.groups:
            at_risk: list[tuple[str, str, int]] = []
            for membership, member in roster.members_of(ctx.session, group.chat_id):
                if membership.left_at is not None or member.id in group.teachers:
                    continue
                streak = checkins.cohort_streak(days_by_member.get(member.id, []), today, cohort)
                if streak.current >= rules.reminder_min_streak and not streak.checked_today:
                    at_risk.append((member.id, member.name or member.id, streak.current))
            if not at_risk:
                continue
            reminded += len(at_risk)
            if rules.reminder_channel == "group":
                key = f"streak-reminder:{group.chat_id}:{today.isoformat()}"
                text = render(
                    "streaks",
                    "reminder_group",
                    seed=key,
                    names=" ".join(f"@{n}" for _, n, _ in at_risk),
                )
                await ctx.send(
                    Outbound(
                        channel=Channel.GROUP,
                        to=group.chat_id,
                        text=text,
                        mentions=tuple(m for m, _, _ in at_risk),
                        key=key,
                    )
                )
                continue
            for member_id, name, current in at_risk:
                key = f"streak-reminder:{cohort.id}:{member_id}:{today.isoformat()}"
                text = render("streaks", "reminder_private", seed=key, name=name, days=current)
                await ctx.send(Outbound(channel=Channel.PRIVATE, to=member_id, text=text, key=key))
    return reminded


async def streak_reminder_job(app: App, cohort_id: str | None = None) -> int:
    """The scheduled job (default 20:30 local): one unit of work, "now" from the app's clock."""
    async with app.db.unit_of_work() as uow:
        ctx = app.pipeline.context(uow)
        return await send_streak_reminders(ctx, cohort_id)


async def remind_job(ctx: Context, run: Run) -> None:
    """The streak-at-risk reminder as a scheduler job (one per cohort, see bot.app.build_jobs)."""
    await send_streak_reminders(ctx, run.cohort_id)
