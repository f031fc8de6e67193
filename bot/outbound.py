"""The one outbound interface handlers use, and a recording implementation.

Handlers say *what* to send and to whom (a group, a person); the sender decides *how* (robot
webhook, AI-bot push, app message, ``add_msg_template``) and goes through the outbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from storage.uow import UnitOfWork


class Channel(StrEnum):
    GROUP = "group"  # post in a group chat; the sender picks the door configured for it
    PRIVATE = "private"  # to one person; app message or add_msg_template by member kind
    REPLY = "reply"  # answer an inbound message on the door it came from


class Kind(StrEnum):
    TEXT = "text"
    MARKDOWN = "markdown"
    IMAGE = "image"


@dataclass(frozen=True)
class Outbound:
    """One message to send.

    ``key`` is the idempotency key: the same key is sent at most once, however often it is queued
    (a redelivered update, a replayed job, a second replica).

    An image is either ``image`` (PNG bytes) or ``card``: a learning-evidence card as the JSON of
    :class:`bot.cards.render.CardData`, drawn when the message is delivered, off the event loop
    (drawing takes about 0.1 s; the numbers are the ones of the moment it was queued).
    """

    channel: Channel
    to: str  # chat id for GROUP/REPLY, member id for PRIVATE
    text: str = ""
    kind: Kind = Kind.TEXT
    mentions: tuple[str, ...] = ()
    image: bytes | None = field(default=None, repr=False)
    key: str = ""
    card: Mapping[str, object] | None = field(default=None, repr=False, hash=False)


class Sender(Protocol):
    """Queues outbound messages in the caller's unit of work (a transactional outbox).

    The message is sent only if the transaction that queued it commits; ``send`` itself must not
    wait on the network.
    """

    async def send(self, message: Outbound, uow: UnitOfWork) -> None: ...


class RecordingSender:
    """Keeps what was sent, in order, dropping repeated idempotency keys (tests, dry runs)."""

    def __init__(self) -> None:
        self.sent: list[Outbound] = []
        self._keys: set[str] = set()

    async def send(self, message: Outbound, uow: UnitOfWork | None = None) -> None:
        if message.key:
            if message.key in self._keys:
                return
            self._keys.add(message.key)
        self.sent.append(message)
