"""Helpers for the rhythm tests: a sender that notes when each message went out, updates for
messages and joins, and a recording rewards seam."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime

from bot.app import App
from bot.clock import ManualClock
from bot.context import Context
from bot.outbound import Outbound, RecordingSender
from bot.updates import Door, Event, Update, UpdateKind
from storage.uow import UnitOfWork
from tests.conftest import GROUP_A

_ids = itertools.count(1)


class TimedSender(RecordingSender):
    """A RecordingSender that also notes the clock's time of each message it keeps."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self.clock = clock
        self.times: list[datetime] = []

    async def send(self, message: Outbound, uow: UnitOfWork | None = None) -> None:
        before = len(self.sent)
        await super().send(message, uow)
        if len(self.sent) > before:
            self.times.append(self.clock.now())


def kind_of(message: Outbound) -> str:
    """What a post is, from its idempotency key."""
    key = message.key
    if key.startswith("rhythm."):
        return key.split(":", 1)[0].removeprefix("rhythm.")
    if key.startswith("timer:"):
        return key.split(":")[1]
    return key.split(":", 1)[0]


@dataclass
class Rewards:
    """A recording stand-in for the points ledger."""

    calls: list[tuple[str, str, str, str]] = field(default_factory=list)

    async def __call__(
        self, ctx: Context, cohort_id: str, member_id: str, rule: str, key: str
    ) -> None:
        self.calls.append((cohort_id, member_id, rule, key))


async def say(
    app: App,
    sender: str,
    text: str,
    at: datetime,
    chat: str = GROUP_A,
    quoted: str | None = None,
    msgid: str | None = None,
    mentioned: bool = False,
) -> str:
    """A group text message through the real pipeline; returns its message id."""
    msgid = msgid or f"t{next(_ids)}"
    update = Update(
        door=Door.AIBOT,
        kind=UpdateKind.MESSAGE,
        message_id=msgid,
        chat_id=chat,
        sender_id=sender,
        sent_at=at,
        text=text,
        quoted_message_id=quoted,
        mentioned_bot=mentioned,
    )
    await app.pipeline.ingest([(update, "{}")])
    return msgid


async def join(app: App, members: list[str], at: datetime, chat: str = GROUP_A) -> None:
    update = Update(
        door=Door.AIBOT,
        kind=UpdateKind.EVENT,
        message_id=f"j{next(_ids)}",
        chat_id=chat,
        sender_id=members[0],
        sent_at=at,
        event=Event.MEMBER_JOINED,
        event_data={"member_ids": members},
    )
    await app.pipeline.ingest([(update, "{}")])


async def leave(app: App, members: list[str], at: datetime, chat: str = GROUP_A) -> None:
    """Members leave the group (the same event every door produces)."""
    update = Update(
        door=Door.AIBOT,
        kind=UpdateKind.EVENT,
        message_id=f"l{next(_ids)}",
        chat_id=chat,
        sender_id=members[0],
        sent_at=at,
        event=Event.MEMBER_LEFT,
        event_data={"member_ids": members},
    )
    await app.pipeline.ingest([(update, "{}")])
