"""The real :class:`~bot.outbound.Sender`: queues messages in the persistent outbox.

``send`` only writes rows in the caller's transaction (no network, no reads): the delivery worker
(:mod:`bot.wecom.delivery`) sends them after the commit. Long texts are split here, at WeCom's
byte limits, into parts that are queued (and delivered, in order) as separate rows with keys
``KEY#1``, ``KEY#2``...; a message that fits keeps its key as is.
"""

from __future__ import annotations

import base64
import uuid
from typing import TYPE_CHECKING

from bot.clock import Clock
from bot.config import Settings
from bot.outbound import Channel, Kind, Outbound
from storage import outbox

if TYPE_CHECKING:
    from storage.uow import UnitOfWork

#: Byte limits of a text and a markdown message (robot webhook path/91770; app message path/90236).
TEXT_LIMIT = 2048
MARKDOWN_LIMIT = 4096


def split_bytes(text: str, limit: int) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` UTF-8 bytes.

    Parts end on line boundaries where possible; a single line longer than the limit is cut
    between characters (never inside a UTF-8 sequence). Joining the parts gives ``text`` back.
    """
    if len(text.encode("utf-8")) <= limit:
        return [text]
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        n = len(line.encode("utf-8"))
        if size + n > limit and current:
            parts.append("".join(current))
            current, size = [], 0
        if n > limit:
            pieces = _cut_line(line, limit)
            parts.extend(pieces[:-1])
            current, size = [pieces[-1]], len(pieces[-1].encode("utf-8"))
            continue
        current.append(line)
        size += n
    if current:
        parts.append("".join(current))
    return parts


def _cut_line(line: str, limit: int) -> list[str]:
    pieces: list[str] = []
    start = size = 0
    for i, ch in enumerate(line):
        n = len(ch.encode("utf-8"))
        if size + n > limit:
            pieces.append(line[start:i])
            start, size = i, 0
        size += n
    pieces.append(line[start:])
    return pieces


def limit_of(kind: Kind) -> int:
    return MARKDOWN_LIMIT if kind is Kind.MARKDOWN else TEXT_LIMIT


def bucket_of(settings: Settings, message: Outbound) -> str:
    """The rate-limit (and ordering) bucket of a message, from the config alone.

    A robot's 20/min is per robot, so groups sharing a robot key share a bucket; an app
    message's 30/min is per member.
    """
    group = settings.group(message.to) if message.channel is not Channel.PRIVATE else None
    if group is None:
        return (
            f"member:{message.to}" if message.channel is not Channel.GROUP else f"chat:{message.to}"
        )
    if group.post_via == "robot":
        return f"robot:{group.robot_key_env or group.chat_id}"
    if group.post_via == "appchat":
        return f"appchat:{group.appchat_id or group.chat_id}"
    return f"aibot:{group.aibot_chat_id or group.chat_id}"


class OutboxSender:
    """Queues each message (or each of its parts) as an outbox row in the caller's transaction;
    a key already queued is ignored (``ON CONFLICT (key) DO NOTHING``)."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock

    async def send(self, message: Outbound, uow: UnitOfWork) -> None:
        """Queue ``message``; it is delivered only if ``uow`` commits."""
        outbox.enqueue(uow.writer, self.rows(message), self.clock.now())

    def rows(self, message: Outbound) -> list[outbox.NewRow]:
        """The outbox rows for ``message`` (one per part)."""
        key = message.key or f"anon:{uuid.uuid4().hex}"
        bucket = bucket_of(self.settings, message)
        if message.kind is Kind.IMAGE:
            image = base64.b64encode(message.image).decode("ascii") if message.image else ""
            texts = [""]
        else:
            image = ""
            texts = split_bytes(message.text, limit_of(message.kind))
        rows = []
        for i, text in enumerate(texts, start=1):
            payload: dict[str, object] = {"text": text}
            if message.mentions and i == 1:
                payload["mentions"] = list(message.mentions)
            if image:
                payload["image_b64"] = image
            if message.card is not None:
                payload["card"] = dict(message.card)  # drawn at delivery (bot.wecom.delivery)
            rows.append(
                outbox.NewRow(
                    key=key if len(texts) == 1 else f"{key}#{i}",
                    channel=message.channel.value,
                    target=message.to,
                    kind=message.kind.value,
                    payload=payload,
                    bucket=bucket,
                )
            )
        return rows
