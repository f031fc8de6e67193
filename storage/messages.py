"""Stored messages: what each counted message was, so a recall can be undone and recent text
can be read back (reviews, recaps). Text is blanked after the retention period; the row stays."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Index, UniqueConstraint, select, update
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel, col

from storage.types import UTCDateTime


class Message(SQLModel, table=True):
    """One counted group message."""

    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("namespace", "msg_id", name="uq_message_key"),
        # The one index besides the key (migration 0710): every import writes it.
        Index("ix_message_chat_sent", "chat_id", "sent_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    namespace: str
    msg_id: str
    chat_id: str
    sender_id: str
    sent_at: datetime = Field(sa_type=UTCDateTime)
    day: date
    msg_type: str = "text"
    text: str | None = None
    chars: int = 0
    homework: bool = False
    quoted_msg_id: str | None = None
    recalled: bool = False


def get(session: Session, namespace: str, msg_id: str) -> Message | None:
    stmt = select(Message).where(col(Message.namespace) == namespace, col(Message.msg_id) == msg_id)
    return session.scalars(stmt).first()


def mark_recalled(session: Session, message_id: int) -> None:
    session.execute(update(Message).where(col(Message.id) == message_id).values(recalled=True))


def of_member_on_day(
    session: Session, chat_id: str, sender_id: str, day: date
) -> Sequence[Message]:
    """A member's messages in a group on one learning day, oldest first, without recalled ones."""
    # A learning day lies within [day - 1, day + 3) in UTC whatever the timezone (UTC-12..+14)
    # and day start hour (0..23): the bounds let the (chat_id, sent_at) index find it.
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    stmt = (
        select(Message)
        .where(
            col(Message.chat_id) == chat_id,
            col(Message.sent_at) >= midnight - timedelta(days=1),
            col(Message.sent_at) < midnight + timedelta(days=3),
            col(Message.sender_id) == sender_id,
            col(Message.day) == day,
            col(Message.recalled).is_(False),
        )
        .order_by(col(Message.sent_at), col(Message.id))
    )
    return session.scalars(stmt).all()


def recent_of_member(
    session: Session, chat_id: str, sender_id: str, since: datetime, until: datetime
) -> Sequence[Message]:
    """The member's messages in a group sent in ``[since, until]``, oldest first."""
    stmt = (
        select(Message)
        .where(
            col(Message.chat_id) == chat_id,
            col(Message.sender_id) == sender_id,
            col(Message.sent_at) >= since,
            col(Message.sent_at) <= until,
            col(Message.recalled).is_(False),
        )
        .order_by(col(Message.sent_at), col(Message.id))
    )
    return session.scalars(stmt).all()


def purge_text(session: Session, before: datetime) -> int:
    """Blank the text of messages sent before ``before`` (privacy); counters are untouched."""
    result = session.execute(
        update(Message)
        .where(col(Message.sent_at) < before, col(Message.text).is_not(None))
        .values(text=None)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
