"""The group-robot callback door (群机器人 "接收消息配置", PROTOCOL.md §1, path/99399): decrypted
XML to updates.

The robot sees only messages that @-mention it in its group and single chats with it. Its XML
carries no send time, so the receive time stands in (see :mod:`bot.doors.wire`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.doors.crypto import CallbackRejectedError, parse_xml
from bot.doors.wire import (
    Admitted,
    DoorFormatError,
    load_form,
    stable_key,
    strip_leading_mention,
    text_field,
)
from bot.updates import Door, Event, Update, UpdateKind, sender_kind_of


def _text(root: dict[str, Any], msgtype: str) -> str:
    if msgtype == "text":
        return text_field(root, "Text", "Content")
    if msgtype == "mixed":
        items = (root.get("MixedMessage") or {}).get("MsgItem") or []
        items = items if isinstance(items, list) else [items]
        return "\n".join(
            text_field(i, "Text", "Content") for i in items if text_field(i, "MsgType") == "text"
        )
    return ""


def _root(plaintext: str) -> dict[str, Any]:
    try:
        return parse_xml(plaintext)
    except CallbackRejectedError as exc:
        raise DoorFormatError(exc.reason) from None


def admit(plaintext: str, received_at: datetime) -> Admitted:
    """The route's check of a decrypted robot callback: it refuses (:class:`DoorFormatError`)
    exactly what :func:`parse_plain` refuses, and returns the inbox key, without building the
    update (the inbox worker does, from the stored payload). Events, which are rare, get the
    full parse for their stable key."""
    root = _root(plaintext)
    msgtype, _sender, msgid = _identity(root)
    if msgtype == "event":
        update = _update(root, received_at)
        return Admitted(update.message_id, update.event_data["name"])
    return Admitted(_message_id(msgid))


def _identity(root: dict[str, Any]) -> tuple[str, str, str]:
    """MsgType, From.UserId and MsgId; a callback without the first two is refused."""
    msgtype = text_field(root, "MsgType")
    sender = text_field(root, "From", "UserId")
    if not msgtype or not sender:
        raise DoorFormatError("robot callback without MsgType or From.UserId")
    return msgtype, sender, text_field(root, "MsgId")


def _message_id(msgid: str) -> str:
    if not msgid:
        raise DoorFormatError("robot message without MsgId")
    return msgid


def parse_plain(plaintext: str, received_at: datetime) -> Update | None:
    """One decrypted robot callback to an update; raises :class:`DoorFormatError`."""
    return _update(_root(plaintext), received_at)


def _update(root: dict[str, Any], received_at: datetime) -> Update:
    msgtype, sender, msgid = _identity(root)
    group = text_field(root, "ChatType") == "group"
    common: dict[str, Any] = {
        "door": Door.ROBOT,
        "chat_id": text_field(root, "ChatId") if group else "",
        "sender_id": sender,
        "sender_name": text_field(root, "From", "Name"),
        "sender_kind": sender_kind_of(sender),
        "sent_at": received_at,
        "msg_type": msgtype,
        "raw": root,
    }
    if msgtype == "event":
        name = text_field(root, "Event", "EventType") or "event"
        key = msgid or stable_key("robot-ev", sender, root.get("ChatId"), name, received_at)
        return Update(
            kind=UpdateKind.EVENT,
            message_id=key,
            event=Event.OTHER,
            event_data={"name": name, "webhook_url": text_field(root, "WebhookUrl")},
            **common,
        )
    return Update(
        kind=UpdateKind.MESSAGE,
        message_id=_message_id(msgid),
        text=strip_leading_mention(_text(root, msgtype)),
        # WeCom only forwards what mentions the robot, or what is said to it alone.
        mentioned_bot=True,
        **common,
    )


def parse_payload(payload: str) -> Update | None:
    """A stored robot callback (see :func:`bot.doors.wire.store_form`) to its update."""
    body, received_at = load_form(payload)
    return parse_plain(body, received_at)
