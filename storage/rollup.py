"""The radar's rollup of the daily counters: one row per (group, member) with the activity
bitmasks and character sums of the completed learning days of the radar window, so a radar pass
reads ~one row per learner plus today's counters instead of 28 days of counter rows.

``radar_rollup_state`` says, per group, which day the rollup was *sealed before* (``sealed_before``
= the first day it leaves out: the evaluated "today") and from which first day (the cohort start)
it was computed. The rollup is built from the counters in bulk, once per learning day (the
``radar.rollup`` job at the start of the learning day, or lazily by the first radar pass of the
day), with one ``INSERT ... SELECT`` per group set.

It can never disagree with the counters: database triggers on ``daily_counter`` (migration 0700)
record in ``radar_dirty`` every (group, member) whose counters changed on a day the rollup already
covers (a backfill import, a late message, a recall of an old message, a replay); the next radar
pass recomputes those rows from the counters before it reads. Writers and that repair are
ordered by a lock (PostgreSQL: a transaction advisory lock, shared by the triggers, exclusive
here; SQLite: the database write lock), so a change committed while the rollup is rebuilt is
either seen by the rebuild or marked dirty after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Integer, and_, case, delete, func, literal, select, text, tuple_
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel

from storage.activity import DailyCounter
from storage.dialect import insert_for, one_of, upsert_rows

#: How many learning days (ending today) the radar's bitmasks cover.
WINDOW_DAYS = 28

#: On SQLite, the index that covers the radar's lookup of today's counters (migration 0720).
TODAY_INDEX = "ix_daily_counter_chat_day_today"
#: On PostgreSQL, the index on (day, chat_id, member_id) with the counts the radar reads (0730).
PG_TODAY_INDEX = "ix_daily_counter_day_today"

#: The PostgreSQL advisory lock key shared by the ``daily_counter`` triggers (shared mode) and the
#: rollup's rebuild and repair (exclusive). ASCII "RADAR".
ADVISORY_KEY = 0x5241444152


class RadarRollup(SQLModel, table=True):
    """One member's counters in one group over the sealed days of the radar window.

    Bit ``i`` of a mask is learning day ``sealed_before - i`` (so bit 0, "today", is never set
    here: today's counters are read from ``daily_counter`` itself).
    """

    __tablename__ = "radar_rollup"
    chat_id: str = Field(primary_key=True)
    member_id: str = Field(primary_key=True)
    message_mask: int = Field(default=0, sa_type=BigInteger)
    checkin_mask: int = Field(default=0, sa_type=BigInteger)
    chars_recent: int = Field(default=0, sa_type=BigInteger)  # the 3 days before sealed_before
    chars_before: int = Field(default=0, sa_type=BigInteger)  # window days before those


class RadarRollupState(SQLModel, table=True):
    """Which learning day a group's rollup rows were sealed before, and from which first day."""

    __tablename__ = "radar_rollup_state"
    chat_id: str = Field(primary_key=True)
    sealed_before: date
    first_day: date


class RadarDirty(SQLModel, table=True):
    """A (group, member) whose counters changed on a day its rollup row already covers
    (written by the ``daily_counter`` triggers only)."""

    __tablename__ = "radar_dirty"
    chat_id: str = Field(primary_key=True)
    member_id: str = Field(primary_key=True)


def window_start(today: date, first_day: date) -> date:
    """The first day of the radar window ending ``today``."""
    return max(first_day, today - timedelta(days=WINDOW_DAYS - 1))


def _offset_expr(session: Session, today: date) -> Any:
    """``today - day`` in days, as an integer SQL expression (dialect-specific)."""
    day = DailyCounter.__table__.c.day  # type: ignore[attr-defined]
    if session.get_bind().dialect.name == "postgresql":
        return literal(today) - day
    return func.cast(func.julianday(literal(today.isoformat())) - func.julianday(day), Integer())


def window_columns(session: Session, today: date) -> list[Any]:
    """The aggregate columns of the radar window ending ``today`` over ``daily_counter``:
    message mask, check-in mask, chars of the 3 days before today, chars before those."""
    t = DailyCounter.__table__  # type: ignore[attr-defined]
    bit = literal(1, BigInteger()).op("<<")(_offset_expr(session, today))
    zero = literal(0, BigInteger())
    recent_lo = today - timedelta(days=3)
    recent_hi = today - timedelta(days=1)
    return [
        total(case((t.c.messages > 0, bit), else_=zero)),
        total(case((t.c.checkins > 0, bit), else_=zero)),
        total(case((and_(t.c.day >= recent_lo, t.c.day <= recent_hi), t.c.chars), else_=0)),
        total(case((t.c.day < recent_lo, t.c.chars), else_=0)),
    ]


def total(expr: Any) -> Any:
    """``SUM`` as a bigint (PostgreSQL sums bigints as numeric, slow to convert in Python)."""
    return func.cast(func.sum(expr), BigInteger())


def _build_select(session: Session, today: date, first_day: date, where: Any) -> Any:
    """``(chat_id, member_id, masks, sums)`` over the sealed window days before ``today``."""
    t = DailyCounter.__table__  # type: ignore[attr-defined]
    return (
        select(t.c.chat_id, t.c.member_id, *window_columns(session, today))
        .where(where, t.c.day >= window_start(today, first_day), t.c.day < today)
        .group_by(t.c.chat_id, t.c.member_id)
    )


_COLUMNS = ["chat_id", "member_id", "message_mask", "checkin_mask", "chars_recent", "chars_before"]


def lock(session: Session) -> None:
    """Order this transaction after every counter writer in flight (and them after it)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_KEY})
    else:
        # Any write takes SQLite's database write lock (held to commit); this one changes nothing.
        session.execute(
            text("UPDATE radar_rollup_state SET chat_id = chat_id WHERE chat_id = :none"),
            {"none": ""},
        )


class State(NamedTuple):
    sealed_before: date
    first_day: date


def states(session: Session, chat_ids: Sequence[str]) -> dict[str, State]:
    t = RadarRollupState.__table__  # type: ignore[attr-defined]
    rows = session.execute(
        select(t.c.chat_id, t.c.sealed_before, t.c.first_day).where(
            one_of(session, t.c.chat_id, chat_ids)
        )
    ).all()
    return {c: State(s, f) for c, s, f in rows}


def _dirty_chats(session: Session, chat_ids: Sequence[str]) -> bool:
    t = RadarDirty.__table__  # type: ignore[attr-defined]
    return (
        session.execute(
            select(t.c.chat_id).where(one_of(session, t.c.chat_id, chat_ids)).limit(1)
        ).first()
        is not None
    )


def ensure(session: Session, chat_ids: Sequence[str], today: date, first_day: date) -> list[str]:
    """Bring the rollup of these groups to ``today`` (rebuilding groups sealed before another
    day or from another first day, repairing dirty rows). Returns the groups whose rollup is
    valid for ``today``; a group whose rollup is newer than ``today`` (a look at a past day) is
    left alone and not returned."""
    chat_ids = list(chat_ids)
    if not chat_ids:
        return []
    want = State(today, first_day)
    known = states(session, chat_ids)
    stale = [c for c in chat_ids if known.get(c) != want]
    if not stale and not _dirty_chats(session, chat_ids):
        return chat_ids
    lock(session)
    known = states(session, chat_ids)  # again, now that no counter writer is in flight
    stale = [c for c in chat_ids if known.get(c) != want and not _newer(known.get(c), today)]
    if stale:
        _rebuild(session, stale, want)
    valid = [c for c in chat_ids if c in stale or known.get(c) == want]
    _repair(session, [c for c in valid if c not in set(stale)], want)
    return valid


def _newer(state: State | None, today: date) -> bool:
    return state is not None and state.sealed_before > today


def _rebuild(session: Session, chat_ids: list[str], state: State) -> None:
    r = RadarRollup.__table__  # type: ignore[attr-defined]
    d = RadarDirty.__table__  # type: ignore[attr-defined]
    t = DailyCounter.__table__  # type: ignore[attr-defined]
    for start in range(0, len(chat_ids), 500):
        part = chat_ids[start : start + 500]
        session.execute(delete(r).where(one_of(session, r.c.chat_id, part)))
        session.execute(delete(d).where(one_of(session, d.c.chat_id, part)))
        query = _build_select(
            session, state.sealed_before, state.first_day, one_of(session, t.c.chat_id, part)
        )
        session.execute(insert_for(session, RadarRollup).from_select(_COLUMNS, query))
    upsert_rows(
        session,
        RadarRollupState,
        [
            {"chat_id": c, "sealed_before": state.sealed_before, "first_day": state.first_day}
            for c in chat_ids
        ],
        ["chat_id"],
        update=["sealed_before", "first_day"],
    )


def _repair(session: Session, chat_ids: list[str], state: State) -> None:
    """Recompute the rows of dirty (group, member) pairs from the counters."""
    if not chat_ids:
        return
    r = RadarRollup.__table__  # type: ignore[attr-defined]
    d = RadarDirty.__table__  # type: ignore[attr-defined]
    t = DailyCounter.__table__  # type: ignore[attr-defined]
    pairs = [
        (c, m)
        for c, m in session.execute(
            select(d.c.chat_id, d.c.member_id).where(one_of(session, d.c.chat_id, chat_ids))
        ).all()
    ]
    for start in range(0, len(pairs), 500):
        part = pairs[start : start + 500]
        session.execute(delete(r).where(tuple_(r.c.chat_id, r.c.member_id).in_(part)))
        where = tuple_(t.c.chat_id, t.c.member_id).in_(part)
        query = _build_select(session, state.sealed_before, state.first_day, where)
        session.execute(insert_for(session, RadarRollup).from_select(_COLUMNS, query))
        session.execute(delete(d).where(tuple_(d.c.chat_id, d.c.member_id).in_(part)))
