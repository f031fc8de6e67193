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

    @property
    def is_message(self) -> bool:
        return self.kind is UpdateKind.MESSAGE

    @property
    def is_group(self) -> bool:
        return bool(self.chat_id)

    @property
    def dedupe_key(self) -> tuple[str, str]:
        return (self.door.namespace, self.message_id)
