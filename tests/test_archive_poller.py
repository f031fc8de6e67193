"""The archive poller (SPEC §1 door 4) with a fake source serving real archive JSON: counting,
recalls and non-text items, the seq resumed after a restart, no double counting, and the pull
that ``msgaudit_notify`` triggers through the app callback."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any

import aiohttp
from sqlalchemy import func, select

from bot.app import App
from bot.clock import ManualClock
from bot.config import Settings
from bot.doors.archive_poller import SEQ_KEY, ArchivePoller, items_after
from bot.outbound import RecordingSender
from bot.simulate import app_msgaudit_notify_xml, post_callback
from storage import activity, doorstate, messages
from storage.messages import Message
from tests.builders import archive_recall, archive_text, local
from tests.conftest import GROUP_A
from tests.serving import CORP_ID, door_crypto, running, server_settings

DAY = date(2026, 11, 3)


class FakeSource:
    """Serves archive items by seq, as ``GetChatData`` does, and records what it was asked."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.calls: list[int] = []

    def add(self, *items: dict[str, Any]) -> None:
        for item in items:
            self.items.append({**item, "seq": len(self.items) + 1})

    async def fetch(self, seq: int, limit: int) -> list[dict[str, Any]]:
        self.calls.append(seq)
        return items_after(self.items, seq, limit)


def day_counter(bot: App, member: str) -> tuple[int, int]:
    with bot.db.session() as s:
        row = activity.day_of(s, GROUP_A, member, DAY)
        return (row.messages, row.checkins) if row else (0, 0)


def message_rows(bot: App) -> int:
    with bot.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Message)) or 0)


async def test_pull_counts_text_and_images_and_undoes_recalls(app: App) -> None:
    source = FakeSource([])
    first = archive_text(GROUP_A, "wmU1", "#打卡 Day2 今天学了字典", local(2026, 11, 3, 9))
    source.add(
        first,
        archive_text(GROUP_A, "wmU1", "", local(2026, 11, 3, 9, 5), msgtype="image"),
        archive_text(GROUP_A, "wmU2", "说错了", local(2026, 11, 3, 9, 6), msgid="oops"),
        archive_recall(GROUP_A, "wmU2", "oops", local(2026, 11, 3, 9, 7)),
        {"msgid": "sw1", "action": "switch", "time": 1, "user": "wmU1", "seq": 0},
        {"msgid": "bad", "action": "send", "seq": 0},  # malformed: skipped, seq moves on
    )
    source.items[4]["seq"], source.items[5]["seq"] = 5, 6
    poller = ArchivePoller(app, source, batch=4)
    assert await poller.pull() == 4
    assert source.calls == [0, 4]
    assert day_counter(app, "wmU1") == (2, 1)
    assert day_counter(app, "wmU2") == (0, 0)
    with app.db.session() as s:
        image = messages.get(s, "archive", source.items[1]["msgid"])
        assert image is not None and image.msg_type == "image"
        assert doorstate.get(s, SEQ_KEY) == "6"
    assert poller.skipped == 1


async def test_seq_is_resumed_after_restart_without_double_counting(
    settings: Settings, clock: ManualClock
) -> None:
    source = FakeSource([])
    source.add(
        *(archive_text(GROUP_A, "wmU1", f"笔记{i}", local(2026, 11, 3, 10, i)) for i in range(5))
    )
    bot = App.open(settings, clock=clock, sender=RecordingSender())
    try:
        assert await ArchivePoller(bot, source, batch=2).pull() == 5
    finally:
        bot.close()
    source.add(archive_text(GROUP_A, "wmU1", "重启之后", local(2026, 11, 3, 11)))
    source.calls.clear()
    bot = App.open(settings, clock=clock, sender=RecordingSender())
    try:
        poller = ArchivePoller(bot, source, batch=2)
        assert await poller.pull() == 1
        assert source.calls[0] == 5  # resumed from the stored seq, not from the start
        assert day_counter(bot, "wmU1") == (6, 0)
        # A crash after ingesting but before storing the seq re-pulls the batch: dropped.
        async with bot.db.unit_of_work() as uow:
            doorstate.put(uow.writer, SEQ_KEY, "0", clock.now())
        assert await poller.pull() == 0
        assert day_counter(bot, "wmU1") == (6, 0)
        assert message_rows(bot) == 6
    finally:
        bot.close()


async def test_msgaudit_notify_through_the_app_callback_pulls_the_archive(
    database_url: str,
) -> None:
    now = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)
    source = FakeSource([])
    settings = server_settings(database_url)
    async with running(settings, ManualClock(now), archive_source=source) as srv:
        assert srv.server.archive is not None
        for _ in range(200):  # the first pull at start-up
            if source.calls:
                break
            await asyncio.sleep(0.01)
        source.add(archive_text(GROUP_A, "wmU9", "新消息", local(2026, 11, 3, 10)))
        ts = int(now.timestamp())
        async with aiohttp.ClientSession() as http:
            answer = await post_callback(
                http,
                srv.url + "/wecom/app",
                door_crypto("app"),
                app_msgaudit_notify_xml(CORP_ID, ts),
                False,
                ts,
            )
        assert answer == (200, "")
        for _ in range(500):
            if day_counter(srv.bot, "wmU9") == (1, 0):
                break
            await asyncio.sleep(0.01)
        assert day_counter(srv.bot, "wmU9") == (1, 0)
