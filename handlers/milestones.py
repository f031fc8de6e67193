"""Milestones (SPEC §5): when a learner's streak (or total check-in days, per
``streaks.milestone_basis``) reaches a milestone day of the cohort, a congratulation in the group
@-mentioning them (words from
``scripts_library/milestones.toml``), the milestone bonus and a badge, exactly once per learner
per milestone: the badge's unique constraint decides, so a redelivered message or a second
replica finds the badge taken and does nothing.

The evidence card image (SPEC §9, issue 7) plugs in through ``ctx.card_maker``; without one the
congratulation is text only. In quiet hours (SPEC §6) the badge and the bonus are given at once
and the post waits for the quiet hours' end (a timer).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from bot.config import CohortSettings
from bot.context import Context
from bot.dispatcher import Router, in_cohort_group
from bot.jobs import JobFn, Run, quiet_hours, quiet_now
from bot.outbound import Channel, Kind, Outbound
from bot.updates import Update
from handlers import points as points_handlers
from scripts_library.toml_scripts import render
from storage import checkins, roster, schedule
from storage import milestones as store
from storage import points as ledger

router = Router("milestones")
#: A congratulation due in quiet hours, posted when they end.
TIMER_POST = "milestones.post"


async def check_milestones(
    ctx: Context, cohort: CohortSettings, member_id: str, chat_id: str, day: date
) -> list[int]:
    """Celebrate every milestone the member has reached and not been celebrated for; return them.

    ``day`` is the learning day the streak is measured at (the check-in's day). A streak that
    jumps past a milestone (a make-up card filling a gap) still earns it.
    """
    basis = ctx.settings.streaks.milestone_basis
    # The writer: check-ins and badges are written directly, never buffered (see storage.uow).
    days = checkins.days_of(ctx.uow.writer, cohort.id, member_id)
    streak = checkins.cohort_streak(days, day, cohort)
    value = streak.total if basis == "total" else streak.current
    reached = []
    for milestone in cohort.milestone_days:
        if milestone > value:
            break
        if not store.claim(
            ctx.uow.writer, cohort.id, member_id, milestone, chat_id, basis, ctx.clock.now()
        ):
            continue
        reached.append(milestone)
        await _celebrate(ctx, cohort, member_id, chat_id, milestone, basis, day)
    return reached


async def _celebrate(
    ctx: Context,
    cohort: CohortSettings,
    member_id: str,
    chat_id: str,
    milestone: int,
    basis: str,
    day: date,
) -> None:
    key = f"milestone:{cohort.id}:{member_id}:{milestone}"
    bonus = ctx.settings.points.milestone_bonus.get(milestone, 0)
    if bonus:
        points_handlers.award(
            ctx,
            cohort=cohort,
            member_id=member_id,
            reason=ledger.MILESTONE,
            key=key,
            points=bonus,
            day=day,
            note=f"{milestone}天",
        )
    name = roster.names(ctx.session, [member_id])[member_id]
    fields: dict[str, object] = {
        "name": name,
        "days": milestone,
        "basis": "累计打卡" if basis == "total" else "连续打卡",
        "bonus": bonus,
        "course": cohort.course,
    }
    # The last milestone has no "see you at the next one"; no bonus, no "奖励0积分".
    script = "final" if milestone == max(cohort.milestone_days) else "congratulation"
    text = render("milestones", script if bonus else f"{script}_no_bonus", seed=key, **fields)
    post = {"text": text, "key": key, "fields": {**fields, "member_id": member_id}}
    if quiet_now(ctx, cohort):  # a 补卡 in a private chat has no ctx.cohort
        # Quiet hours (SPEC §6): the badge and the bonus are the learner's now, the post waits.
        when = quiet_hours(ctx.settings).postpone(ctx.clock.now(), cohort.timezone)
        schedule.add_timer(ctx.session, key, TIMER_POST, when, ctx.clock.now(), chat_id, post)
        return
    await _post(ctx, cohort, chat_id, post)


async def _post(ctx: Context, cohort: CohortSettings, chat_id: str, post: dict[str, Any]) -> None:
    """The congratulation (and the member's card) in the group."""
    fields = post["fields"]
    member_id = str(fields["member_id"])
    key = str(post["key"])
    await ctx.send(
        Outbound(
            channel=Channel.GROUP,
            to=chat_id,
            text=str(post["text"]),
            mentions=(member_id,),
            key=key,
        )
    )
    if ctx.card_maker is not None:
        card = ctx.card_maker(ctx, "milestone", {**fields, "cohort_id": cohort.id})
        if card:
            await ctx.send(
                Outbound(
                    channel=Channel.GROUP,
                    to=chat_id,
                    kind=Kind.IMAGE,
                    card=card,
                    key=f"{key}:card",
                )
            )


async def queued_post(ctx: Context, run: Run) -> None:
    """A congratulation that waited for the quiet hours to end."""
    assert run.chat_id
    cohort = ctx.cohort or ctx.settings.cohort_of(run.chat_id)
    if cohort is not None:
        await _post(ctx, cohort, run.chat_id, run.payload)


#: Timer kind -> function (wired in :func:`bot.app.timer_kinds`).
TIMERS: dict[str, JobFn] = {TIMER_POST: queued_post}


@router.message(in_cohort_group, lambda u, c: c.facts.checkin_id is not None)
async def on_checkin(update: Update, ctx: Context) -> None:
    """Every new check-in may complete a milestone."""
    assert ctx.cohort is not None and ctx.facts.day is not None
    await check_milestones(ctx, ctx.cohort, update.sender_id, update.chat_id, ctx.facts.day)
