"""Pure pieces: the clock and learning days, meaningful characters, the archive parser, Update."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.clock import ManualClock, day_start, learning_day
from bot.dispatcher import Dispatcher, Router
from bot.doors.archive import ArchiveFormatError, parse_item
from bot.updates import Door, Event, SenderKind, Update, UpdateKind
from handlers.text import meaningful_chars
from storage.checkins import streak_of
from tests.builders import archive_recall, archive_text, local

SH = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("moment", "tz", "hour", "expected"),
    [
        (datetime(2026, 11, 5, 1, 30, tzinfo=SH), SH, 4, date(2026, 11, 4)),
        (datetime(2026, 11, 5, 3, 59, tzinfo=SH), SH, 4, date(2026, 11, 4)),
        (datetime(2026, 11, 5, 4, 0, tzinfo=SH), SH, 4, date(2026, 11, 5)),
        (datetime(2026, 11, 5, 1, 30, tzinfo=SH), SH, 0, date(2026, 11, 5)),
        # 18:00 UTC is 02:00 next day in Shanghai: still the UTC calendar day's learning day.
        (datetime(2026, 11, 5, 18, 0, tzinfo=UTC), SH, 4, date(2026, 11, 5)),
        # New York on the night DST ends (Nov 1 2026): 01:30 happens twice; both before 04:00.
        (
            datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
            ZoneInfo("America/New_York"),
            4,
            date(2026, 10, 31),
        ),
        (
            datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
            ZoneInfo("America/New_York"),
            4,
            date(2026, 10, 31),
        ),
    ],
)
def test_learning_day(moment: datetime, tz: ZoneInfo, hour: int, expected: date) -> None:
    assert learning_day(moment, tz, hour) == expected
    assert (
        day_start(expected, tz, hour) <= moment < day_start(expected + timedelta(days=1), tz, hour)
    )


def test_manual_clock_moves_forward_only() -> None:
    clock = ManualClock(datetime(2026, 11, 1, tzinfo=UTC))
    assert clock.advance(timedelta(hours=2)) == datetime(2026, 11, 1, 2, tzinfo=UTC)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.set(datetime(2026, 11, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="aware"):
        clock.set(datetime(2026, 11, 2))


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("今天学了列表推导式", 9),
        ("Python 真好玩", 9),
        ("😀😀👍🎉", 0),
        ("   \n\t ", 0),
        ("哈哈哈哈哈哈哈哈", 1),
        ("好好学习天天向上", 8),
        ("。。。！！！", 0),
        ("[微笑][捂脸]收到", 2),
        ("@张三 @李四 辛苦了", 3),
        ("看这里 https://example.com/very/long/path 很有用", 6),
        ("666666", 1),
        ("ｆｕｌｌ　ｗｉｄｔｈ", 9),
    ],
)
def test_meaningful_chars(text: str, count: int) -> None:
    assert meaningful_chars(text) == count


def test_streak_rules() -> None:
    d = date(2026, 11, 10)
    assert streak_of([], d).current == 0
    s = streak_of([d - timedelta(days=2), d - timedelta(days=1)], d)
    assert (s.current, s.checked_today, s.at_risk, s.breaks_after) == (2, False, True, d)
    s = streak_of([d - timedelta(days=1), d, d + timedelta(days=1)], d)  # future ignored
    assert (s.current, s.total, s.run_days) == (2, 2, (d - timedelta(days=1), d))


def test_archive_items_become_updates() -> None:
    item = archive_text("wrRoom", "wmUser", "你好", local(2026, 11, 2, 9), name="小鱼")
    update = parse_item(item)
    assert update is not None
    assert (update.door, update.chat_id, update.sender_id, update.sender_name, update.text) == (
        Door.ARCHIVE,
        "wrRoom",
        "wmUser",
        "小鱼",
        "你好",
    )
    assert update.sender_kind is SenderKind.EXTERNAL
    assert update.sent_at == local(2026, 11, 2, 9)
    staff = parse_item(archive_text("wrRoom", "zhangsan", "hi", local(2026, 11, 2, 9)))
    assert staff is not None
    assert staff.sender_kind is SenderKind.INTERNAL
    recall = parse_item(archive_recall("wrRoom", "wmUser", "orig", local(2026, 11, 2, 9)))
    assert recall is not None
    assert (recall.kind, recall.event, dict(recall.event_data)) == (
        UpdateKind.EVENT,
        Event.RECALL,
        {"recalled_id": "orig"},
    )
    link = {**item, "msgtype": "link", "link": {"title": "作业3", "link_url": "https://x.cn/3"}}
    assert parse_item(link).text == "作业3 https://x.cn/3"  # type: ignore[union-attr]
    assert parse_item({**item, "action": "switch"}) is None
    with pytest.raises(ArchiveFormatError, match="msgtime"):
        parse_item({**item, "msgtime": True})


def test_update_is_frozen_and_validated() -> None:
    update = Update(
        door=Door.ROBOT,
        kind=UpdateKind.MESSAGE,
        message_id="m",
        chat_id="c",
        sender_id="u",
        sent_at=local(2026, 11, 2),
        raw={"a": 1},
    )
    with pytest.raises(AttributeError):
        update.text = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        update.raw["a"] = 2  # type: ignore[index]
    with pytest.raises(ValueError, match="timezone-aware"):
        Update(
            door=Door.ROBOT,
            kind=UpdateKind.MESSAGE,
            message_id="m",
            chat_id="c",
            sender_id="u",
            sent_at=datetime(2026, 11, 2),
        )
    with pytest.raises(ValueError, match="event"):
        Update(
            door=Door.APP,
            kind=UpdateKind.EVENT,
            message_id="m",
            chat_id="c",
            sender_id="u",
            sent_at=local(2026, 11, 2),
        )
    assert Door.IMPORT.namespace == Door.ARCHIVE.namespace == "archive"
    assert Door.AIBOT_WS.namespace == "aibot"


def test_a_router_is_included_once() -> None:
    dispatcher = Dispatcher()
    router = Router("x")
    dispatcher.include(router)
    with pytest.raises(ValueError, match="included twice"):
        dispatcher.include(Router("x"))
