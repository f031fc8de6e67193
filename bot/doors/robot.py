"""The group-robot callback door (群机器人 "接收消息配置", PROTOCOL.md §1, path/99399): decrypted
XML to updates.

The robot sees only messages that @-mention it in its group and single chats with it. Its XML
carries no send time, so the receive time stands in (see :mod:`bot.doors.wire`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from bot.doors.crypto import (
    FORBIDDEN_ASCII,
    NAME,
    NONCHARACTERS_UTF8,
    UTF8_TEXT_BODY,
    WS,
    CallbackRejectedError,
    parse_xml,
)
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


def admit(plaintext: str, data: bytes, received_at: datetime) -> Admitted:
    """The route's check of a decrypted robot callback (``plaintext``, and ``data``, its UTF-8):
    it refuses (:class:`DoorFormatError`) exactly what :func:`parse_plain` refuses, and returns
    the inbox key, without building the update (the inbox worker does, from the stored
    payload). Events, which are rare, get the full parse for their stable key; so does a
    document :func:`_key_fields` cannot read."""
    fields = _key_fields(data)
    if fields is None:
        root = _root(plaintext)
        msgtype, _sender, msgid = _identity(root)
    else:
        msgtype, sender, msgid = fields
        if not msgtype or not sender:
            raise DoorFormatError("robot callback without MsgType or From.UserId")
    if msgtype == "event":
        update = _update(_root(plaintext), received_at)
        return Admitted(update.message_id, update.event_data["name"])
    return Admitted(_message_id(msgid))


# The plain shape's CDATA body (bot.doors.crypto), over UTF-8 and without "<!" in it either. So
# no DTD can hide in a document _KEY_FIELDS accepts (text bodies hold no "<", tags no "!", and
# a CDATA section's own "<![" is not a declaration), and the fast path needs no search for one;
# a document with "<!" in a CDATA section goes to the full parse, which refuses a DTD.
_CDATA_BODY = rf"[^\]<{FORBIDDEN_ASCII}]*+(?:(?:\](?!\]>)|<(?!!))[^\]<{FORBIDDEN_ASCII}]*+)*+"
_LEAF = rf"(?:<!\[CDATA\[{_CDATA_BODY}\]\]>|{UTF8_TEXT_BODY})"


def _leaf(group: str) -> str:
    return rf"(?:<!\[CDATA\[(?P<{group}c>{_CDATA_BODY})\]\]>|(?P<{group}t>{UTF8_TEXT_BODY}))"


# The plain shape of bot.doors.crypto (its _SHAPE), over UTF-8 and with no "<!" in CDATA, with
# the three fields the route needs captured where they are children of the root (MsgType,
# MsgId) or of its From. A repeated element keeps only its last capture, so _key_fields only
# trusts a capture whose tag occurs once in the whole document.
#
# It reads bytes, not the text: the route has the UTF-8 anyway (it is what the journal stores),
# and on a Chinese text, which Python holds two bytes a character, the regular-expression
# engine would run its two-byte variant, which nothing else on the route uses (measured: about
# 5 µs a callback more, all told).
#
# Each element is an atomic group under a greedy repetition, not a possessive one: on Python
# 3.11, reading captures made inside a possessive repetition can fail ("The span of capturing
# group is wrong"), and the atomic groups keep a failing match from retrying alternatives.
_KEY_FIELDS = re.compile(
    (
        rf"(?:{WS}(?><MsgType>{_leaf('type')}</MsgType>|<MsgId>{_leaf('id')}</MsgId>"
        rf"|<From>(?:{WS}(?><UserId>{_leaf('user')}</UserId>|<(?P<f>{NAME})>{_LEAF}"
        rf"</(?P=f)>))+{WS}</From>"
        rf"|<(?P<t>{NAME})>(?:{_LEAF}|(?:{WS}<(?P<i>{NAME})>{_LEAF}</(?P=i)>)+{WS})"
        rf"</(?P=t)>))*{WS}"
    ).encode("ascii")
)


def _key_fields(data: bytes) -> tuple[str, str, str] | None:
    """MsgType, From.UserId and MsgId as ``text_field`` reads them from :func:`_root`'s dict,
    from the document's UTF-8 in one regular-expression pass and without building the dict;
    None when the document is not of the plain shape, holds "<!" in a CDATA section (so any DTD
    is left to the full parse), holds U+FFFE or U+FFFF, or one of those tags occurs more than
    once (the full parse then decides).

    Why it is the same answer: a tag that occurs once in the text is either that child of the
    root (or of From), captured, or somewhere else (nested deeper, inside a CDATA section, or an
    element with children), where ``text_field`` finds no string either.
    """
    end = len(data) - 6
    if end < 5 or not data.startswith(b"<xml>") or not data.endswith(b"</xml>"):
        return None
    match = _KEY_FIELDS.fullmatch(data, 5, end)
    if (
        match is None
        or data.count(b"<MsgType>") > 1
        or data.count(b"<MsgId>") > 1
        or data.count(b"<From>") > 1
        or data.count(b"<UserId>") > 1
        or NONCHARACTERS_UTF8.search(data)
    ):
        return None
    t1, t2, u1, u2, i1, i2 = match.group("typec", "typet", "userc", "usert", "idc", "idt")
    return (t1 or t2 or b"").decode(), (u1 or u2 or b"").decode(), (i1 or i2 or b"").decode()


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
