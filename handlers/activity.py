"""Activity counting (SPEC §2): a group message adds to its sender's day; a recall takes it back."""

from __future__ import annotations

from bot.context import Context
from bot.dispatcher import Router, in_cohort_group
from bot.updates import Event, Update
from handlers.text import meaningful_chars
from storage import activity, messages

router = Router("activity")


@router.message(in_cohort_group)
async def count_message(update: Update, ctx: Context) -> None:
    assert ctx.facts.day is not None
    chars = meaningful_chars(update.text)
    ctx.facts.chars = chars
    buffer = ctx.uow.activity
    buffer.add_member(update.sender_id, update.sender_name, update.sender_kind.value)
    buffer.add_message(
        {
            "namespace": update.door.namespace,
            "msg_id": update.message_id,
            "chat_id": update.chat_id,
            "sender_id": update.sender_id,
            "sent_at": update.sent_at,
            "day": ctx.facts.day,
            "msg_type": update.msg_type,
            "text": update.text or None,
            "chars": chars,
            "homework": False,
            "quoted_msg_id": update.quoted_message_id,
            "recalled": False,
        }
    )
    buffer.count(
        (update.chat_id, update.sender_id, ctx.facts.day),
        at=update.sent_at,
        messages=1,
        chars=chars,
    )


@router.event(Event.RECALL)
async def undo_recalled(update: Update, ctx: Context) -> None:
    """A recalled message stops counting; later handlers find it in ``ctx.facts.recalled``."""
    recalled_id = str(update.event_data.get("recalled_id", ""))
    message = messages.get(ctx.session, update.door.namespace, recalled_id)
    if message is None or message.recalled or message.sender_id != update.sender_id:
        return
    assert message.id is not None
    messages.mark_recalled(ctx.session, message.id)
    key = (message.chat_id, message.sender_id, message.day)
    ctx.uow.activity.count(
        key, messages=-1, chars=-message.chars, homework=-1 if message.homework else 0
    )
    activity.refresh_days_active(ctx.session, [(message.chat_id, message.sender_id)])
    ctx.facts.recalled = message
