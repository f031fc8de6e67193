"""Driving the bot through the real pipeline in tests: a chat message in, what it sent out."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import pytest

from bot.app import App
from bot.clock import ManualClock
from bot.config import Settings, parse_settings
from bot.outbound import Outbound, RecordingSender
from bot.updates import Door, Update, UpdateKind
from storage import points as ledger
from storage import roster
from tests.conftest import GROUP_A, GROUP_B, base_config

_serial = itertools.count(1)

LEARNERS = {
    "wmKid": "小明",
    "wmAmy": "Amy",
    "wmBob": "小波",
    "wmCat": "小猫",
    "wmDan": "大丹",
}

CATALOG = [
    {"sku": "A01", "name": "学习笔记本", "cost": 10, "stock": 100, "per_learner": 100},
    {"sku": "B02", "name": "一对一答疑", "cost": 5, "stock": 1, "per_learner": 1},
    {"sku": "C03", "name": "往期课程", "cost": 1, "stock": 10, "per_learner": 2},
    {"sku": "OLD", "name": "已下架", "cost": 1, "stock": 10, "ends": "2026-10-01"},
]


def make_settings(database_url: str, **overrides: Any) -> Settings:
    config = base_config(database={"url": database_url}, shop={"items": CATALOG})
    config.update(overrides)
    return parse_settings(config, env={})


def open_bot(settings: Settings, clock: ManualClock) -> App:
    app = App.open(settings, clock=clock, sender=RecordingSender())
    with app.db.unit_of_work_sync() as uow:
        roster.ensure_members(
            uow.session,
            [(m, n, "external") for m, n in LEARNERS.items()]
            + [("leader1", "班长", "internal"), ("teacher1", "李老师", "internal")],
            clock.now(),
        )
        roster.ensure_memberships(
            uow.session,
            [(GROUP_A, m) for m in LEARNERS] + [(GROUP_A, "leader1"), (GROUP_A, "teacher1")],
        )
        for m in LEARNERS:
            roster.record_join(uow.session, GROUP_A, m, clock.now())
    return app


@pytest.fixture
def bot(database_url: str, clock: ManualClock) -> Iterator[App]:
    app = open_bot(make_settings(database_url), clock)
    try:
        yield app
    finally:
        app.close()


def sent(app: App) -> list[Outbound]:
    sender = app.sender
    assert isinstance(sender, RecordingSender)
    return sender.sent


async def say(
    app: App,
    sender: str,
    text: str,
    at: datetime,
    chat: str = GROUP_A,
    msgid: str | None = None,
    quoted: str | None = None,
    mentions: Sequence[str] = (),
) -> list[str]:
    """Send one message (AI-bot door) at ``at`` (the clock moves there); return the texts sent."""
    clock = app.clock
    assert isinstance(clock, ManualClock)
    if at > clock.now():
        clock.set(at)
    update = Update(
        door=Door.AIBOT,
        kind=UpdateKind.MESSAGE,
        message_id=msgid or f"t{next(_serial)}",
        chat_id=chat,
        sender_id=sender,
        sender_name=LEARNERS.get(sender, ""),
        sent_at=at,
        text=text,
        quoted_message_id=quoted,
        mentions=tuple(mentions),
    )
    before = len(sent(app))
    await app.pipeline.ingest([(update, "{}")])
    return [m.text for m in sent(app)[before:]]


def balance(app: App, member: str, cohort: str = "c1") -> int:
    """The stored balance, after checking it equals the ledger sum."""
    with app.db.session() as s:
        stored = ledger.balance(s, cohort, member)
        assert stored == ledger.ledger_sum(s, cohort, member)
        return stored


def entries(app: App, member: str, cohort: str = "c1") -> list[tuple[str, int]]:
    with app.db.session() as s:
        return [
            (e.reason, e.delta)
            for e in ledger.entries_of_cohort(s, cohort)
            if e.member_id == member
        ]


__all__ = ["GROUP_A", "GROUP_B", "bot"]
