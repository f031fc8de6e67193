"""``Update.checked_message`` builds message updates slot by slot, past the dataclass's
constructor: it must give exactly what the constructor gives, for every field (a field added to
``Update`` and not set there would be missing)."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime

from bot.updates import Door, SenderKind, Update, UpdateKind


def test_checked_message_is_the_constructors_message() -> None:
    sent = datetime(2026, 11, 3, 8, 30, tzinfo=UTC)
    raw = {"msgid": "m1", "text": {"content": "打卡 Day2"}}
    fast = Update.checked_message(
        Door.IMPORT, "m1", "wrA", "wmU", sent, "小明", SenderKind.EXTERNAL, "text", "打卡 Day2", raw
    )
    built = Update(
        door=Door.IMPORT,
        kind=UpdateKind.MESSAGE,
        message_id="m1",
        chat_id="wrA",
        sender_id="wmU",
        sent_at=sent,
        sender_name="小明",
        sender_kind=SenderKind.EXTERNAL,
        msg_type="text",
        text="打卡 Day2",
        raw=raw,
    )
    for f in fields(Update):
        assert getattr(fast, f.name) == getattr(built, f.name), f.name
    assert fast == built and hash(fast.dedupe_key) == hash(built.dedupe_key)
