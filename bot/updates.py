"""The one update type every door produces and every handler consumes (SPEC §1).

Doors translate wire payloads (archive JSON, callback XML/JSON, WebSocket frames) into a frozen
:class:`Update`; handlers never see XML, JSON envelopes or wechatpy objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class Door(StrEnum):
    """Where an update came in."""

    AIBOT = "aibot"  # AI bot HTTP callback (JSON)
    AIBOT_WS = "aibot_ws"  # AI bot long connection (WebSocket)
    ROBOT = "robot"  # group robot callback (XML)
    APP = "app"  # self-built app callback (XML)
    ARCHIVE = "archive"  # message archive poller
    IMPORT = "import"  # replay of archive JSON lines from a file

    @property
    def namespace(self) -> str:
        """The id space of this door's message ids: a retried or re-imported message has the same
        id in the same namespace, so de-duplication is by ``(namespace, message id)``."""
        return _NAMESPACES[self]


#: Read for every update several times: a dict beats comparing enum members.
_NAMESPACES = {door: door.value for door in Door} | {
    Door.IMPORT: "archive",
    Door.AIBOT_WS: "aibot",
}


class UpdateKind(StrEnum):
    MESSAGE = "message"
    EVENT = "event"


class SenderKind(StrEnum):
    INTERNAL = "internal"  # a WeCom member (staff)
    EXTERNAL = "external"  # an external contact, usually an ordinary WeChat user


class Event(StrEnum):
    """The events handlers react to; doors map their wire events onto these."""

    MEMBER_JOINED = "member_joined"
    MEMBER_LEFT = "member_left"
    RECALL = "recall"
    OTHER = "other"


def sender_kind_of(user_id: str) -> SenderKind:
    """WeCom gives external contacts ids starting with ``wo`` or ``wm``; staff ids are free-form."""
    return SenderKind.EXTERNAL if user_id[:2] in ("wo", "wm") else SenderKind.INTERNAL


def _frozen(data: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only view; a dict from the wire is wrapped, not copied (doors never reuse it)."""
    if isinstance(data, MappingProxyType):
        return data
    return MappingProxyType(data if isinstance(data, dict) else dict(data or {}))


@dataclass(frozen=True, slots=True)
class Update:
    """One inbound message or event, whatever door brought it."""

    door: Door
    kind: UpdateKind
    message_id: str
    chat_id: str  # "" for single chats
    sender_id: str
    sent_at: datetime  # aware
    sender_name: str = ""
    sender_kind: SenderKind = SenderKind.EXTERNAL
    msg_type: str = "text"
    text: str = ""
    mentioned_bot: bool = False
    mentions: tuple[str, ...] = ()  # user ids @-mentioned, where the wire gives them
    quoted_message_id: str | None = None
    quoted_author_id: str | None = None
    event: Event | None = None
    event_data: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))
    raw: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))

    def __post_init__(self) -> None:
        if self.sent_at.tzinfo is None:
            raise ValueError("Update.sent_at must be timezone-aware")
        if not self.message_id:
            raise ValueError("Update.message_id must not be empty")
        if (self.kind is UpdateKind.EVENT) != (self.event is not None):
            raise ValueError("an event update needs an event name, and only an event update")
        object.__setattr__(self, "event_data", _frozen(self.event_data))
        object.__setattr__(self, "raw", _frozen(self.raw))

    @classmethod
    def checked_message(
        cls,
        door: Door,
        message_id: str,
        chat_id: str,
        sender_id: str,
        sent_at: datetime,
        sender_name: str,
        sender_kind: SenderKind,
        msg_type: str,
        text: str,
        raw: dict[str, Any],
    ) -> Update:
        """The message update ``Update(kind=UpdateKind.MESSAGE, ...)`` makes, for a door that has
        checked what :meth:`__post_init__` checks (``sent_at`` aware, ``message_id`` not empty).

        Built slot by slot: the frozen dataclass's constructor, its checks and its defaults took
        about half of parsing an archive line, and an import parses 100,000 of them.
        """
        self = _new(cls)
        _set_door(self, door)
        _set_kind(self, UpdateKind.MESSAGE)
        _set_message_id(self, message_id)
        _set_chat_id(self, chat_id)
        _set_sender_id(self, sender_id)
        _set_sent_at(self, sent_at)
        _set_sender_name(self, sender_name)
        _set_sender_kind(self, sender_kind)
        _set_msg_type(self, msg_type)
        _set_text(self, text)
        _set_mentioned_bot(self, False)
        _set_mentions(self, ())
        _set_quoted_message_id(self, None)
        _set_quoted_author_id(self, None)
        _set_event(self, None)
        _set_event_data(self, _NOTHING)
        _set_raw(self, MappingProxyType(raw))
        return self

    @property
    def is_message(self) -> bool:
        return self.kind is UpdateKind.MESSAGE

    @property
    def is_group(self) -> bool:
        return bool(self.chat_id)

    @property
    def dedupe_key(self) -> tuple[str, str]:
        return (self.door.namespace, self.message_id)


# Slot setters for Update.checked_message: they write past the frozen class's __setattr__, as
# the dataclass's own __init__ does.
_new = object.__new__
_set_door = Update.__dict__["door"].__set__
_set_kind = Update.__dict__["kind"].__set__
_set_message_id = Update.__dict__["message_id"].__set__
_set_chat_id = Update.__dict__["chat_id"].__set__
_set_sender_id = Update.__dict__["sender_id"].__set__
_set_sent_at = Update.__dict__["sent_at"].__set__
_set_sender_name = Update.__dict__["sender_name"].__set__
_set_sender_kind = Update.__dict__["sender_kind"].__set__
_set_msg_type = Update.__dict__["msg_type"].__set__
_set_text = Update.__dict__["text"].__set__
_set_mentioned_bot = Update.__dict__["mentioned_bot"].__set__
_set_mentions = Update.__dict__["mentions"].__set__
_set_quoted_message_id = Update.__dict__["quoted_message_id"].__set__
_set_quoted_author_id = Update.__dict__["quoted_author_id"].__set__
_set_event = Update.__dict__["event"].__set__
_set_event_data = Update.__dict__["event_data"].__set__
_set_raw = Update.__dict__["raw"].__set__
#: The empty ``event_data`` of every message update (read-only, so one can be shared).
_NOTHING: Mapping[str, Any] = MappingProxyType({})
# A field added to Update must be set in checked_message too.
assert len(Update.__dataclass_fields__) == 17, "Update.checked_message sets 17 fields"
