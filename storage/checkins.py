"""Check-ins (打卡): at most one per member per cohort per learning day, and streaks (SPEC §3)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import UniqueConstraint, bindparam, delete, func, select
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel, col

from storage.bulk import Prepared
from storage.dialect import insert_for
from storage.types import UTCDateTime

KIND_CHECKIN = "checkin"
KIND_HOMEWORK = "homework"
KIND_MAKEUP = "makeup"


class CheckIn(SQLModel, table=True):
    """The one check-in that counted for a member on a learning day."""

    __tablename__ = "checkin"
    __table_args__ = (
        UniqueConstraint("cohort_id", "member_id", "day", name="uq_checkin_member_day"),
    )
    id: int | None = Field(default=None, primary_key=True)
    cohort_id: str = Field(index=True)
    member_id: str = Field(index=True)
    day: date
    chat_id: str
    message_key: str | None = Field(default=None, index=True)  # "namespace:msg_id"
    kind: str = KIND_CHECKIN
    created_at: datetime = Field(sa_type=UTCDateTime)


def _add_statement(session: Session) -> Any:
    table = CheckIn.__table__  # type: ignore[attr-defined]
    return (
        insert_for(session, CheckIn)
        .on_conflict_do_nothing(index_elements=["cohort_id", "member_id", "day"])
        .returning(table.c.id)
    )


_ADD = Prepared(
    _add_statement,
    ("cohort_id", "member_id", "day", "chat_id", "message_key", "kind", "created_at"),
)


def add(
    session: Session,
    cohort_id: str,
    member_id: str,
    day: date,
    chat_id: str,
    message_key: str | None,
    kind: str,
    now: datetime,
) -> int | None:
    """Record a check-in; return its id, or None when the member already has one that day."""
    row = _ADD.first(
        session,
        cohort_id=cohort_id,
        member_id=member_id,
        day=day,
        chat_id=chat_id,
        message_key=message_key,
        kind=kind,
        created_at=now,
    )
    return None if row is None else int(row[0])


_DAYS_OF = Prepared(
    lambda _s: (
        select(col(CheckIn.day))
        .where(
            col(CheckIn.cohort_id) == bindparam("cohort_id"),
            col(CheckIn.member_id) == bindparam("member_id"),
        )
        .order_by(col(CheckIn.day))
    ),
    ("cohort_id", "member_id"),
)


def days_of(session: Session, cohort_id: str, member_id: str) -> list[date]:
    """A member's check-in days in a cohort, oldest first (:func:`of_member`'s days, cheaply)."""
    return [row[0] for row in _DAYS_OF.all(session, cohort_id=cohort_id, member_id=member_id)]


def by_message(session: Session, message_key: str) -> CheckIn | None:
    return session.scalars(select(CheckIn).where(col(CheckIn.message_key) == message_key)).first()


def remove(session: Session, checkin_id: int) -> None:
    session.execute(delete(CheckIn).where(col(CheckIn.id) == checkin_id))


def of_member(session: Session, cohort_id: str, member_id: str) -> Sequence[CheckIn]:
    """A member's check-ins in a cohort, oldest day first."""
    stmt = (
        select(CheckIn)
        .where(col(CheckIn.cohort_id) == cohort_id, col(CheckIn.member_id) == member_id)
        .order_by(col(CheckIn.day))
    )
    return session.scalars(stmt).all()


def totals_by_member(session: Session, cohort: CohortDates) -> dict[str, int]:
    """Every member's check-in days in a cohort that count (see :func:`cohort_streak`), by
    member id."""
    stmt = (
        select(col(CheckIn.member_id), func.count())
        .where(
            col(CheckIn.cohort_id) == cohort.id,
            col(CheckIn.day) >= cohort.start_date,
            col(CheckIn.day) <= cohort.end_date,
        )
        .group_by(col(CheckIn.member_id))
    )
    return {member_id: int(n) for member_id, n in session.execute(stmt).all()}


def days_by_member(session: Session, cohort_id: str) -> dict[str, list[date]]:
    """Every member's check-in days in a cohort, sorted, by member id."""
    stmt = (
        select(col(CheckIn.member_id), col(CheckIn.day))
        .where(col(CheckIn.cohort_id) == cohort_id)
        .order_by(col(CheckIn.member_id), col(CheckIn.day))
    )
    out: dict[str, list[date]] = {}
    for member_id, day in session.execute(stmt).all():
        out.setdefault(member_id, []).append(day)
    return out


@dataclass(frozen=True)
class Streak:
    """A member's streak as of a learning day, with what a learner needs to see (streak rules)."""

    current: int  # consecutive days up to today (or yesterday, while today is still open)
    longest: int
    total: int  # check-in days in all
    checked_today: bool
    run_days: tuple[date, ...]  # the days that make up the current streak
    breaks_after: date | None  # miss this day and the streak is broken

    @property
    def at_risk(self) -> bool:
        """Alive but not yet extended today."""
        return self.current > 0 and not self.checked_today


class CohortDates(Protocol):
    """What a streak needs of a cohort (``bot.config.CohortSettings``, with a leader's 开营/结营
    applied)."""

    @property
    def id(self) -> str: ...
    @property
    def start_date(self) -> date: ...
    @property
    def end_date(self) -> date: ...
    def streak_day(self, today: date) -> date: ...


def cohort_streak(days: Iterable[date], today: date, cohort: CohortDates) -> Streak:
    """The streak a cohort counts, as of ``today``: only check-in days from its start to its end
    count (a check-in made before a leader moved 开营 later, or after an earlier 结营, stays
    stored but does not count), and after the end the streak stands as it was at the end."""
    start, end = cohort.start_date, cohort.end_date
    return streak_of([d for d in days if start <= d <= end], cohort.streak_day(today))


def streak_of(days: Iterable[date], today: date) -> Streak:
    """Compute the streak from the set of check-in days, as of ``today``.

    Days after ``today`` are ignored. A streak that ended yesterday is still alive until today
    ends; one that ended before yesterday is broken (0).
    """
    ordered = sorted({d for d in days if d <= today})
    longest = run = 0
    prev: date | None = None
    for d in ordered:
        run = run + 1 if prev is not None and d - prev == timedelta(days=1) else 1
        longest = max(longest, run)
        prev = d
    checked_today = bool(ordered) and ordered[-1] == today
    alive = bool(ordered) and ordered[-1] >= today - timedelta(days=1)
    current = run if alive else 0
    run_days = tuple(ordered[len(ordered) - current :]) if current else ()
    breaks_after = None
    if alive:
        breaks_after = today + timedelta(days=1) if checked_today else today
    return Streak(
        current=current,
        longest=longest,
        total=len(ordered),
        checked_today=checked_today,
        run_days=run_days,
        breaks_after=breaks_after,
    )
