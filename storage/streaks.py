"""Make-up cards (补卡, SPEC §3).

A make-up card is a check-in of kind ``makeup`` (in :mod:`storage.checkins`) plus a row here that
says who used it and when; the count of rows per learner per cohort is what the card limit checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import UniqueConstraint, func, select
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel, col

from storage.types import UTCDateTime


class MakeupCard(SQLModel, table=True):
    """One used make-up card."""

    __tablename__ = "makeup_card"
    __table_args__ = (UniqueConstraint("cohort_id", "member_id", "day", name="uq_makeup_card_day"),)
    id: int | None = Field(default=None, primary_key=True)
    cohort_id: str
    member_id: str = Field(index=True)
    day: date  # the missed learning day it filled
    actor: str  # the learner, or the leader who used it for them
    checkin_id: int | None = None
    created_at: datetime = Field(sa_type=UTCDateTime)


def used(session: Session, cohort_id: str, member_id: str) -> Sequence[MakeupCard]:
    """The member's used cards, by day."""
    stmt = (
        select(MakeupCard)
        .where(col(MakeupCard.cohort_id) == cohort_id, col(MakeupCard.member_id) == member_id)
        .order_by(col(MakeupCard.day))
    )
    return session.scalars(stmt).all()


def count_used(session: Session, cohort_id: str, member_id: str) -> int:
    """How many make-up cards the member has used in the cohort."""
    n = session.scalar(
        select(func.count())
        .select_from(MakeupCard)
        .where(col(MakeupCard.cohort_id) == cohort_id, col(MakeupCard.member_id) == member_id)
    )
    return int(n or 0)


def add(session: Session, card: MakeupCard) -> None:
    """Record a used make-up card."""
    session.add(card)
    session.flush()
