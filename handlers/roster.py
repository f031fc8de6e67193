"""Joins and leaves (SPEC §1 door 3, §2 memberships)."""

from __future__ import annotations

from bot.context import Context
from bot.dispatcher import Router
from bot.updates import Event, Update, sender_kind_of
from storage import nudges, roster

router = Router("roster")


def _members(update: Update) -> list[str]:
    ids = update.event_data.get("member_ids") or [update.sender_id]
    return [str(i) for i in ids if i]


@router.event(Event.MEMBER_JOINED, filters=(lambda u, c: c.group is not None,))
async def member_joined(update: Update, ctx: Context) -> None:
    ids = _members(update)
    roster.ensure_members(
        ctx.session, [(i, "", sender_kind_of(i).value) for i in ids], update.sent_at
    )
    scene = update.event_data.get("join_scene")
    for member_id in ids:
        roster.record_join(
            ctx.session,
            update.chat_id,
            member_id,
            update.sent_at,
            int(scene) if scene is not None else None,
        )


@router.event(Event.MEMBER_LEFT, filters=(lambda u, c: c.group is not None,))
async def member_left(update: Update, ctx: Context) -> None:
    ids = _members(update)
    roster.ensure_members(
        ctx.session, [(i, "", sender_kind_of(i).value) for i in ids], update.sent_at
    )
    for member_id in ids:
        roster.record_leave(ctx.session, update.chat_id, member_id, update.sent_at)
    # Their open offers in this group lapse now, not at the next nudge plan (the dashboard
    # would list them until then).
    for offer in nudges.open_offers(ctx.session, [update.chat_id], ids):
        nudges.withdraw(offer, nudges.LEFT, update.sent_at)
