"""Peer reviews (点评, SPEC §4.1): every detected review, rewarded or not, and why not."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import Index, func, select, update
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel, col

from storage.types import UTCDateTime


class Review(SQLModel, table=True):
    """One review message. ``message_key`` is unique: a redelivered message is one review."""

    __tablename__ = "review"
    __table_args__ = (
        Index("ix_review_reviewer_day", "cohort_id", "reviewer_id", "day"),
        Index("ix_review_reviewer_created", "reviewer_id", "created_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    cohort_id: str
    chat_id: str
    reviewer_id: str
    reviewee_id: str
    day: date
    message_key: str = Field(unique=True)
    chars: int = 0
    tokens: str = ""  # space-separated jieba tokens, for near-duplicate checks
    rewarded: bool = False
    rejected_because: str = ""  # empty when rewarded
    created_at: datetime = Field(sa_type=UTCDateTime)


def by_message(session: Session, message_key: str) -> Review | None:
    """The review a message (``namespace:msg_id``) was, if any."""
    return session.scalars(select(Review).where(col(Review.message_key) == message_key)).first()


def mark_recalled(session: Session, review_id: int) -> None:
    """The review's message was recalled: it no longer counts (the row stays for the record)."""
    session.execute(
        update(Review)
        .where(col(Review.id) == review_id)
        .values(rewarded=False, rejected_because="recalled")
    )


def recent_of(
    session: Session, cohort_id: str, reviewer_id: str, since: datetime, limit: int
) -> Sequence[Review]:
    """The reviewer's reviews since ``since``, newest first."""
    stmt = (
        select(Review)
        .where(
            col(Review.cohort_id) == cohort_id,
            col(Review.reviewer_id) == reviewer_id,
            col(Review.created_at) >= since,
            col(Review.rejected_because) != "recalled",
        )
        .order_by(col(Review.id).desc())
        .limit(limit)
    )
    return session.scalars(stmt).all()


def rewarded_on(session: Session, cohort_id: str, reviewer_id: str, day: date) -> Sequence[Review]:
    """The reviewer's rewarded reviews of one learning day."""
    stmt = select(Review).where(
        col(Review.cohort_id) == cohort_id,
        col(Review.reviewer_id) == reviewer_id,
        col(Review.day) == day,
        col(Review.rewarded).is_(True),
    )
    return session.scalars(stmt).all()


def rejected_on(session: Session, cohort_id: str, reviewer_id: str, day: date, because: str) -> int:
    """How many of the reviewer's reviews of one learning day were rejected for ``because``."""
    stmt = (
        select(func.count())
        .select_from(Review)
        .where(
            col(Review.cohort_id) == cohort_id,
            col(Review.reviewer_id) == reviewer_id,
            col(Review.day) == day,
            col(Review.rejected_because) == because,
        )
    )
    return int(session.scalar(stmt) or 0)


def add(session: Session, review: Review) -> Review:
    """Insert a review and return it with its id."""
    session.add(review)
    session.flush()
    return review


def ranking(session: Session, cohort_id: str) -> list[tuple[str, int, int]]:
    """``(reviewer, rewarded reviews, id of the last one)`` best first; ties go to whoever got
    there first."""
    stmt = (
        select(col(Review.reviewer_id), func.count(), func.max(col(Review.id)))
        .where(col(Review.cohort_id) == cohort_id, col(Review.rewarded).is_(True))
        .group_by(col(Review.reviewer_id))
    )
    rows = [(r[0], int(r[1]), int(r[2] or 0)) for r in session.execute(stmt).all()]
    rows.sort(key=lambda r: (-r[1], r[2]))
    return rows
