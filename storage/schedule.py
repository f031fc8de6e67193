"""Job claims and one-off timers (SPEC §13): what makes a scheduled run happen exactly once.

A run is claimed by inserting ``(job_id, scheduled_for)`` into ``job_run``; the unique key means
only one replica's insert succeeds. The claim is the first statement of the run's transaction, so
the run's writes (and its outbox rows) commit with the claim or not at all: a replica that dies
mid-run leaves no claim, and the next one runs it. Timers are durable one-off runs (a game's
answer reveal, a batched welcome) that survive a restart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import UniqueConstraint, select, update
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel, col

from storage.dialect import insert_for
from storage.types import UTCDateTime


class JobRun(SQLModel, table=True):
    """One claimed run of a job: at most one row per ``(job_id, scheduled_for)``."""

    __tablename__ = "job_run"
    __table_args__ = (UniqueConstraint("job_id", "scheduled_for", name="uq_job_run"),)
    id: int | None = Field(default=None, primary_key=True)
    job_id: str
    scheduled_for: datetime = Field(sa_type=UTCDateTime)
    claimed_at: datetime = Field(sa_type=UTCDateTime)
    error: str | None = None


class Timer(SQLModel, table=True):
    """A durable one-off run: ``kind`` names the function, ``payload`` is its JSON argument."""

    __tablename__ = "timer"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)  # idempotency: the same timer is scheduled once
    kind: str
    chat_id: str | None = Field(default=None, index=True)
    due_at: datetime = Field(sa_type=UTCDateTime, index=True)
    payload: str = "{}"
    created_at: datetime = Field(sa_type=UTCDateTime)
    done_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def data(self) -> dict[str, Any]:
        value = json.loads(self.payload or "{}")
        return value if isinstance(value, dict) else {}


def claim(
    session: Session, job_id: str, scheduled_for: datetime, now: datetime, error: str | None = None
) -> bool:
    """Insert the claim for one run; False when another run (or replica) holds it already."""
    table = JobRun.__table__  # type: ignore[attr-defined]
    stmt = (
        insert_for(session, JobRun)
        .values(job_id=job_id, scheduled_for=scheduled_for, claimed_at=now, error=error)
        .on_conflict_do_nothing(index_elements=["job_id", "scheduled_for"])
        .returning(table.c.id)
    )
    return session.execute(stmt).first() is not None


def runs(session: Session, job_id_prefix: str = "") -> Sequence[JobRun]:
    """Claimed runs, oldest scheduled first (for tests and the operator)."""
    stmt = select(JobRun).order_by(col(JobRun.scheduled_for), col(JobRun.id))
    if job_id_prefix:
        stmt = stmt.where(col(JobRun.job_id).startswith(job_id_prefix))
    return session.scalars(stmt).all()


def add_timer(
    session: Session,
    name: str,
    kind: str,
    due_at: datetime,
    now: datetime,
    chat_id: str | None = None,
    payload: dict[str, Any] | None = None,
) -> bool:
    """Schedule a one-off run; False when a timer of that name exists already (kept as is)."""
    table = Timer.__table__  # type: ignore[attr-defined]
    stmt = (
        insert_for(session, Timer)
        .values(
            name=name,
            kind=kind,
            chat_id=chat_id,
            due_at=due_at,
            payload=json.dumps(payload or {}, ensure_ascii=False),
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(table.c.id)
    )
    return session.execute(stmt).first() is not None


def pending_timers(session: Session, until: datetime | None = None) -> Sequence[Timer]:
    """Timers not done yet (due by ``until`` when given), earliest first."""
    stmt = select(Timer).where(col(Timer.done_at).is_(None))
    if until is not None:
        stmt = stmt.where(col(Timer.due_at) <= until)
    return session.scalars(stmt.order_by(col(Timer.due_at), col(Timer.id))).all()


def open_timer(session: Session, kind: str, chat_id: str) -> Timer | None:
    """A pending timer of ``kind`` for a group, if any."""
    stmt = select(Timer).where(
        col(Timer.kind) == kind, col(Timer.chat_id) == chat_id, col(Timer.done_at).is_(None)
    )
    return session.scalars(stmt.order_by(col(Timer.due_at))).first()


def finish_timer(session: Session, timer_id: int, now: datetime) -> None:
    """Mark a timer done (it never runs again)."""
    session.execute(update(Timer).where(col(Timer.id) == timer_id).values(done_at=now))
