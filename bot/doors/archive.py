"""The message-archive wire format (会话内容存档, PROTOCOL.md §1): archive JSON to updates.

Used by the archive poller and by ``cohortbot import`` (the same JSON, one object per line).
One extension for backfills: an optional ``from_name`` field gives the sender's display name,
which the archive itself does not carry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bot.updates import Door, Event, Update, UpdateKind, sender_kind_of


class ArchiveFormatError(ValueError):
    """A line that is not a usable archive message; the text says why, in Chinese: ``cohortbot
    import`` shows it to the operator as ``FILE:LINE: reason``."""


#: Senders that are bots (robots' ids start with "wb"); their own posts are not activity.
BOT_SENDER_PREFIX = "wb"


def _text_of(msgtype: str, item: Mapping[str, Any]) -> str:
    body = item.get(msgtype)
    if not isinstance(body, Mapping):
        return ""
    if msgtype == "text":
        return str(body.get("content", ""))
    if msgtype == "markdown":
        return (
            str(body.get("info", {}).get("content", ""))
            if isinstance(body.get("info"), Mapping)
            else str(body.get("content", ""))
        )
    if msgtype == "link":
        parts = [body.get("title", ""), body.get("description", ""), body.get("link_url", "")]
        return " ".join(str(p) for p in parts if p)
    if msgtype == "file":
        return str(body.get("filename", ""))
    if msgtype == "mixed":
        texts = []
        for part in body.get("item", []) or []:
            if isinstance(part, Mapping) and part.get("type") == "text":
                try:
                    texts.append(str(json.loads(part.get("content", "{}")).get("content", "")))
                except (ValueError, AttributeError):
                    continue
        return "\n".join(texts)
    return ""


def parse_item(item: Any, door: Door = Door.ARCHIVE) -> Update | None:
    """One decrypted archive object to an update; None for items the bot ignores
    (``switch`` actions, posts by bots). Raises :class:`ArchiveFormatError` for malformed ones."""
    if not isinstance(item, Mapping):
        raise ArchiveFormatError("不是 JSON 对象")
    msgid = item.get("msgid")
    if not isinstance(msgid, str) or not msgid:
        raise ArchiveFormatError("缺少 msgid")
    action = item.get("action", "send")
    if action == "switch":
        return None
    if action not in ("send", "recall"):
        raise ArchiveFormatError(f"action 只能是 send、recall 或 switch，这里是 {action!r}")
    sender = item.get("from")
    if not isinstance(sender, str) or not sender:
        raise ArchiveFormatError("缺少 from（发送者）")
    if sender.startswith(BOT_SENDER_PREFIX):
        return None
    msgtime = item.get("msgtime")
    if not isinstance(msgtime, int) or isinstance(msgtime, bool) or msgtime <= 0:
        raise ArchiveFormatError("msgtime 应是毫秒时间戳（正整数）")
    try:
        sent_at = datetime.fromtimestamp(msgtime / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise ArchiveFormatError(f"msgtime {msgtime} 超出范围") from None
    room = item.get("roomid", "") or ""
    if not isinstance(room, str):
        raise ArchiveFormatError("roomid 应是字符串")
    msgtype = item.get("msgtype", "")
    if not isinstance(msgtype, str) or not msgtype:
        raise ArchiveFormatError("缺少 msgtype")
    name = item.get("from_name", "")
    if action == "send" and msgtype != "revoke":
        text = _text_of(msgtype, item)
        if msgtype == "text" and not isinstance(item.get("text"), Mapping):
            raise ArchiveFormatError("text 消息缺少 text.content")
        # Every field checked above (msgid not empty, msgtime to an aware datetime).
        return Update.checked_message(
            door,
            msgid,
            room,
            sender,
            sent_at,
            name if isinstance(name, str) else "",
            sender_kind_of(sender),
            msgtype,
            text,
            item if isinstance(item, dict) else dict(item),
        )
    common: dict[str, Any] = {
        "door": door,
        "message_id": msgid,
        "chat_id": room,
        "sender_id": sender,
        "sender_name": name if isinstance(name, str) else "",
        "sender_kind": sender_kind_of(sender),
        "sent_at": sent_at,
        "msg_type": msgtype,
        "raw": item,
    }
    # A recall (action "recall", or a "revoke" message).
    revoke = item.get("revoke")
    pre = revoke.get("pre_msgid") if isinstance(revoke, Mapping) else None
    if not isinstance(pre, str) or not pre:
        raise ArchiveFormatError("撤回消息缺少 revoke.pre_msgid")
    return Update(
        kind=UpdateKind.EVENT, event=Event.RECALL, event_data={"recalled_id": pre}, **common
    )


def parse_line(line: str, door: Door = Door.IMPORT) -> Update | None:
    """One JSON line to an update (see :func:`parse_item`)."""
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ArchiveFormatError(f"不是合法的 JSON（第 {exc.colno} 列附近）") from None
    return parse_item(item, door)
