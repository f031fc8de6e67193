"""Where each door stopped: a small key/value table of resume points (the archive poller's last
``seq``, for one), so a restarted process picks up where the previous one left off."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel, col

from storage.dialect import insert_for
from storage.types import UTCDateTime


class DoorState(SQLModel, table=True):
    """One named resume point."""

    __tablename__ = "door_state"
    key: str = Field(primary_key=True)
    value: str
    updated_at: datetime = Field(sa_type=UTCDateTime)


def get(session: Session, key: str) -> str | None:
    """The stored value of ``key``, or None."""
    return session.scalars(select(col(DoorState.value)).where(col(DoorState.key) == key)).first()


def put(session: Session, key: str, value: str, now: datetime) -> None:
    """Store ``value`` under ``key`` (insert or overwrite)."""
    stmt = insert_for(session, DoorState).values(key=key, value=value, updated_at=now)
    session.execute(
        stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value, "updated_at": now})
    )
