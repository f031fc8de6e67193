"""Builders for wire payloads and updates (STYLE habit 9): real archive JSON, not mocks."""

from __future__ import annotations

import itertools
import json
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.context import Context
from bot.dispatcher import Router
from bot.doors.archive import parse_item
from bot.updates import Door, Update

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
_serial = itertools.count(1)


def local(y: int, mo: int, d: int, h: int = 12, mi: int = 0, tz: ZoneInfo = SH) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=tz)


def archive_text(
    room: str,
    sender: str,
    text: str,
    at: datetime,
    msgid: str | None = None,
    name: str = "",
    msgtype: str = "text",
) -> dict[str, Any]:
    """One archive item (PROTOCOL.md §1) for a text (or ``msgtype``) message."""
    item: dict[str, Any] = {
        "msgid": msgid or f"m{next(_serial)}",
        "action": "send",
        "from": sender,
        "tolist": [],
        "roomid": room,
        "msgtime": int(at.timestamp() * 1000),
        "msgtype": msgtype,
    }
    if msgtype == "text":
        item["text"] = {"content": text}
    elif msgtype == "image":
        item["image"] = {"md5sum": "0" * 32, "filesize": 1024, "sdkfileid": "x"}
    elif msgtype == "file":
        item["file"] = {"filename": text, "fileext": "py", "filesize": 10}
    if name:
        item["from_name"] = name
    return item


def archive_recall(room: str, sender: str, recalled: str, at: datetime) -> dict[str, Any]:
    return {
        "msgid": f"r{next(_serial)}",
        "action": "recall",
        "from": sender,
        "tolist": [],
        "roomid": room,
        "msgtime": int(at.timestamp() * 1000),
        "msgtype": "revoke",
        "revoke": {"pre_msgid": recalled},
    }


def pair(item: dict[str, Any], door: Door = Door.IMPORT) -> tuple[Update, str]:
    """An ``(update, payload)`` pair as the import door hands them to the pipeline."""
    update = parse_item(item, door)
    assert update is not None
    return update, json.dumps(item, ensure_ascii=False)


def jsonl(items: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items)


def exploding_router() -> Router:
    """A router whose handler raises for every message containing 炸: a handler failure on demand
    (include it in an app's dispatcher)."""
    boom = Router("boom")

    @boom.message()
    async def explode(update: Update, ctx: Context) -> None:
        if "炸" in update.text:
            raise RuntimeError("handler exploded")

    return boom


def end_cohort(config: Any, cohort_id: str, day: date, by: str = "leader1") -> None:
    """Store a leader's 结营 on ``day`` in the database of the config file ``config``, as the
    command would (for CLI tests, which run on that database)."""
    from bot.app import App
    from bot.config import load_settings
    from storage import cohort_dates

    app = App.open(load_settings(config, env={}))
    try:
        with app.db.unit_of_work_sync() as uow:
            at = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo("UTC"))
            cohort_dates.set_dates(uow.session, cohort_id, by, at, end=day)
    finally:
        app.close()
