"""The self-built app callback door (自建应用, PROTOCOL.md §1, path/96466, 92277, 96361):
decrypted XML to updates.

It brings single-chat messages sent to the app (teachers' commands in private) and events, of
which the bot acts on ``change_external_chat`` (joins and leaves of customer groups) and
``msgaudit_notify`` (new archive data: the server kicks the archive poller).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.doors.crypto import CallbackRejectedError, parse_xml
from bot.doors.wire import (
    Admitted,
    DoorFormatError,
    epoch_seconds,
    load_form,
    stable_key,
    text_field,
)
from bot.updates import Door, Event, Update, UpdateKind, sender_kind_of

MSGAUDIT_NOTIFY = "msgaudit_notify"


def _member_ids(root: dict[str, Any]) -> list[str]:
    change_list = root.get("MemChangeList")
    items = change_list.get("Item") if isinstance(change_list, dict) else None
    if items is None:
        return []
    return [str(i) for i in (items if isinstance(items, list) else [items]) if i]


def _event(root: dict[str, Any], common: dict[str, Any], name: str) -> Update:
    chat = text_field(root, "ChatId")
    change = text_field(root, "ChangeType")
    detail = text_field(root, "UpdateDetail")
    members = _member_ids(root)
    # Events have no MsgId: FromUserName + CreateTime + the event's own fields (PROTOCOL.md §3).
    key = stable_key(
        "app-ev",
        common["sender_id"],
        text_field(root, "CreateTime"),
        name,
        chat,
        change,
        detail,
        text_field(root, "JoinScene"),
        text_field(root, "QuitScene"),
        text_field(root, "MemChangeCnt"),
        ",".join(members),
    )
    data: dict[str, Any] = {"name": name}
    event = Event.OTHER
    if name == "change_external_chat":
        data.update(change_type=change, update_detail=detail, chat_id=chat)
        # Without MemChangeList (older WeCom versions) the members are unknown here; the roster
        # is reconciled from the customer-group detail API instead.
        if change == "update" and detail in ("add_member", "del_member") and members:
            event = Event.MEMBER_JOINED if detail == "add_member" else Event.MEMBER_LEFT
            data["member_ids"] = members
            scene = text_field(root, "JoinScene" if event is Event.MEMBER_JOINED else "QuitScene")
            if scene.isdigit():
                data["join_scene" if event is Event.MEMBER_JOINED else "quit_scene"] = int(scene)
        common = {**common, "chat_id": chat}
    return Update(kind=UpdateKind.EVENT, message_id=key, event=event, event_data=data, **common)


def parse_plain(plaintext: str, received_at: datetime) -> Update | None:
    """One decrypted app callback to an update; raises :class:`DoorFormatError`."""
    try:
        root = parse_xml(plaintext)
    except CallbackRejectedError as exc:
        raise DoorFormatError(exc.reason) from None
    msgtype = text_field(root, "MsgType")
    sender = text_field(root, "FromUserName")
    created = text_field(root, "CreateTime")
    if not msgtype or not sender or not created:
        raise DoorFormatError("app callback without MsgType, FromUserName or CreateTime")
    common: dict[str, Any] = {
        "door": Door.APP,
        "chat_id": "",
        "sender_id": sender,
        "sender_kind": sender_kind_of(sender),
        "sent_at": epoch_seconds(created, "CreateTime"),
        "msg_type": msgtype,
        "raw": root,
    }
    if msgtype == "event":
        return _event(root, common, text_field(root, "Event") or "event")
    msgid = text_field(root, "MsgId")
    if not msgid:
        raise DoorFormatError("app message without MsgId")
    text = text_field(root, "Content") if msgtype == "text" else ""
    # A message to the app is a single chat with it: addressed to the bot.
    return Update(
        kind=UpdateKind.MESSAGE, message_id=msgid, text=text, mentioned_bot=True, **common
    )


def admit(plaintext: str, _data: bytes, received_at: datetime) -> Admitted:
    """The route's check of a decrypted app callback. App callbacks are few (teachers' commands,
    group changes), so this is the full parse of the text (``_data``, its UTF-8, is not read);
    the worker parses the stored payload again."""
    update = parse_plain(plaintext, received_at)
    assert update is not None
    event = str(update.event_data.get("name", "")) if update.kind is UpdateKind.EVENT else ""
    return Admitted(update.message_id, event)


def parse_payload(payload: str) -> Update | None:
    """A stored app callback to its update."""
    body, received_at = load_form(payload)
    return parse_plain(body, received_at)
