"""Cohort dates set by leaders and teachers (开营/结营, SPEC §11): overrides of the config's dates.

The config stays the default; :func:`effective` applies an override to a cohort's settings,
:func:`overridden` to every cohort that has one (the scheduler, once per look at what is due).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel, col

from bot.config import CohortSettings
from storage.dialect import upsert_rows
from storage.types import UTCDateTime


class CohortDates(SQLModel, table=True):
    """Dates a leader or teacher set with 开营/结营; they win over the config's dates."""

    __tablename__ = "cohort_dates"
    cohort_id: str = Field(primary_key=True)
    start_date: date | None = None
    end_date: date | None = None
    set_by: str = ""
    set_at: datetime = Field(sa_type=UTCDateTime)


def set_dates(
    session: Session,
    cohort_id: str,
    actor: str,
    now: datetime,
    start: date | None = None,
    end: date | None = None,
) -> None:
    """Record a start (开营) or an end (结营) date; the other one is kept."""
    values: dict[str, object] = {"cohort_id": cohort_id, "set_by": actor, "set_at": now}
    update_cols = ["set_by", "set_at"]
    if start is not None:
        values["start_date"] = start
        update_cols.append("start_date")
    if end is not None:
        values["end_date"] = end
        update_cols.append("end_date")
    upsert_rows(session, CohortDates, [values], ["cohort_id"], update=update_cols)
    session.info.get("cohort_dates", {}).pop(cohort_id, None)


def effective(session: Session, cohort: CohortSettings) -> CohortSettings:
    """The cohort with any 开营/结营 override applied: a new start keeps the length unless an
    end is set too; an end date sets the length (start..end, at least one day).

    The override row is read once per session (one unit of work) and cached in ``session.info``;
    :func:`set_dates` refreshes that cache. Applying it twice gives the same cohort.
    """
    cache: dict[str, tuple[date | None, date | None] | None] = session.info.setdefault(
        "cohort_dates", {}
    )
    if cohort.id not in cache:
        row = session.execute(
            select(col(CohortDates.start_date), col(CohortDates.end_date)).where(
                col(CohortDates.cohort_id) == cohort.id
            )
        ).first()
        cache[cohort.id] = None if row is None else (row[0], row[1])
    found = cache[cohort.id]
    if found is None:
        return cohort
    start_date, end_date = found
    start = start_date or cohort.start_date
    length = cohort.length_days
    if end_date is not None:
        length = max(1, (end_date - start).days + 1)
    return replace(cohort, start_date=start, length_days=length)


def overridden(session: Session, cohorts: Iterable[CohortSettings]) -> dict[str, CohortSettings]:
    """``cohort id -> effective cohort`` for the cohorts with a 开营/结营 override (one read)."""
    rows = session.execute(
        select(col(CohortDates.cohort_id), col(CohortDates.start_date), col(CohortDates.end_date))
    ).all()
    cache: dict[str, tuple[date | None, date | None] | None] = session.info.setdefault(
        "cohort_dates", {}
    )
    found = {cohort_id: (start, end) for cohort_id, start, end in rows}
    out: dict[str, CohortSettings] = {}
    for cohort in cohorts:
        cache[cohort.id] = found.get(cohort.id)
        if cohort.id in found:
            out[cohort.id] = effective(session, cohort)
    return out
