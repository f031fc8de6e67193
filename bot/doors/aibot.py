"""The AI-bot door (智能机器人, PROTOCOL.md §1, path/100719, 101027, 101031): decrypted JSON to
updates. The HTTP callback and the long connection (:mod:`bot.doors.aibot_ws`) carry the same
message bodies and share this parser.

The AI bot sees messages that @-mention it in a group, and everything in single chat, so every
message it receives is addressed to it. The body carries no send time; the receive time stands in.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bot.doors.wire import (
    Admitted,
    DoorFormatError,
    load_form,
    stable_key,
    strip_leading_mention,
    text_field,
)
from bot.updates import Door, Event, Update, UpdateKind, sender_kind_of


def _text(body: dict[str, Any], msgtype: str) -> str:
    if msgtype == "text":
        return text_field(body, "text", "content")
    if msgtype == "voice":
        return text_field(body, "voice", "content")
    if msgtype == "mixed":
        items = (body.get("mixed") or {}).get("msg_item") or []
        return "\n".join(
            text_field(i, "text", "content")
            for i in items
            if isinstance(i, dict) and i.get("msgtype") == "text"
        )
    return ""


def parse_body(body: Any, received_at: datetime, door: Door = Door.AIBOT) -> Update | None:
    """One decrypted AI-bot message or event object to an update."""
    msgtype, sender, msgid = _identity(body)
    group = text_field(body, "chattype") == "group"
    common: dict[str, Any] = {
        "door": door,
        "chat_id": text_field(body, "chatid") if group else "",
        "sender_id": sender,
        "sender_kind": sender_kind_of(sender),
        "sent_at": received_at,
        "msg_type": msgtype,
        "raw": body,
    }
    if msgtype == "event":
        name = text_field(body, "event", "eventtype") or "event"
        key = msgid or stable_key(
            "aibot-ev", sender, body.get("chatid"), name, body.get("create_time")
        )
        return Update(
            kind=UpdateKind.EVENT,
            message_id=key,
            event=Event.OTHER,
            event_data={"name": name, "response_url": text_field(body, "response_url")},
            **common,
        )
    return Update(
        kind=UpdateKind.MESSAGE,
        message_id=_message_id(msgid),
        text=strip_leading_mention(_text(body, msgtype)),
        mentioned_bot=True,
        **common,
    )


def _load(plaintext: str) -> Any:
    try:
        return json.loads(plaintext)
    except ValueError:
        raise DoorFormatError("AI-bot payload is not JSON") from None


def admit(plaintext: str, _data: bytes, received_at: datetime) -> Admitted:
    """The route's check of a decrypted AI-bot callback: it refuses (:class:`DoorFormatError`)
    exactly what :func:`parse_plain` refuses, and returns the inbox key, without building the
    update (the inbox worker does, from the stored payload). Events, which are rare, get the
    full parse for their stable key. The JSON is read from the text (``_data``, its UTF-8, would
    be decoded again)."""
    body = _load(plaintext)
    msgtype, _sender, msgid = _identity(body)
    if msgtype == "event":
        update = parse_body(body, received_at)
        assert update is not None
        return Admitted(update.message_id, update.event_data["name"])
    return Admitted(_message_id(msgid))


def _identity(body: Any) -> tuple[str, str, str]:
    """msgtype, from.userid and msgid; a payload that is not an object or lacks the first two
    is refused."""
    if not isinstance(body, dict):
        raise DoorFormatError("AI-bot payload is not a JSON object")
    msgtype = text_field(body, "msgtype")
    sender = text_field(body, "from", "userid")
    if not msgtype or not sender:
        raise DoorFormatError("AI-bot payload without msgtype or from.userid")
    return msgtype, sender, text_field(body, "msgid")


def _message_id(msgid: str) -> str:
    if not msgid:
        raise DoorFormatError("AI-bot message without msgid")
    return msgid


def parse_plain(plaintext: str, received_at: datetime, door: Door = Door.AIBOT) -> Update | None:
    """One decrypted AI-bot callback (JSON text) to an update; raises :class:`DoorFormatError`."""
    return parse_body(_load(plaintext), received_at, door)


def parse_payload(payload: str) -> Update | None:
    """A stored AI-bot callback to its update."""
    body, received_at = load_form(payload)
    return parse_plain(body, received_at)


def parse_ws_payload(payload: str) -> Update | None:
    """A stored AI-bot long-connection message to its update."""
    body, received_at = load_form(payload)
    return parse_plain(body, received_at, Door.AIBOT_WS)
