"""Milestone badges (SPEC §5): one row per learner per milestone, ever."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import UniqueConstraint, select
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel, col

from storage.bulk import Prepared
from storage.dialect import insert_for
from storage.types import UTCDateTime


class Badge(SQLModel, table=True):
    """A milestone a learner reached. The unique constraint is what makes the congratulation,
    the bonus and the badge happen exactly once, across redeliveries and replicas."""

    __tablename__ = "badge"
    __table_args__ = (
        UniqueConstraint("cohort_id", "member_id", "milestone", name="uq_badge_milestone"),
    )
    id: int | None = Field(default=None, primary_key=True)
    cohort_id: str
    member_id: str = Field(index=True)
    milestone: int  # the milestone day (7, 14, ...)
    chat_id: str = ""
    basis: str = "streak"
    created_at: datetime = Field(sa_type=UTCDateTime)


def _claim_statement(session: Session) -> Any:
    table = Badge.__table__  # type: ignore[attr-defined]
    return (
        insert_for(session, Badge)
        .on_conflict_do_nothing(index_elements=["cohort_id", "member_id", "milestone"])
        .returning(table.c.id)
    )


_CLAIM = Prepared(
    _claim_statement, ("cohort_id", "member_id", "milestone", "chat_id", "basis", "created_at")
)


def claim(
    session: Session,
    cohort_id: str,
    member_id: str,
    milestone: int,
    chat_id: str,
    basis: str,
    now: datetime,
) -> bool:
    """Record the badge; True only for the one caller that created it."""
    row = _CLAIM.first(
        session,
        cohort_id=cohort_id,
        member_id=member_id,
        milestone=milestone,
        chat_id=chat_id,
        basis=basis,
        created_at=now,
    )
    return row is not None


def of_member(session: Session, cohort_id: str, member_id: str) -> Sequence[Badge]:
    """A member's badges in a cohort, by milestone day."""
    stmt = (
        select(Badge)
        .where(col(Badge.cohort_id) == cohort_id, col(Badge.member_id) == member_id)
        .order_by(col(Badge.milestone))
    )
    return session.scalars(stmt).all()


def earned_by_member(session: Session, cohort_id: str) -> dict[str, frozenset[int]]:
    """Every member's badges in a cohort, as milestone days by member id (one read)."""
    found: dict[str, set[int]] = {}
    stmt = select(col(Badge.member_id), col(Badge.milestone)).where(
        col(Badge.cohort_id) == cohort_id
    )
    for member_id, milestone in session.execute(stmt).all():
        found.setdefault(member_id, set()).add(int(milestone))
    return {member_id: frozenset(days) for member_id, days in found.items()}
