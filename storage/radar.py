"""Churn-radar storage (SPEC §7): persisted flag state (hysteresis), stage overrides, imported
course progress, and the one aggregate query per group set that feeds the radar and the digest.

The radar never rescans raw messages: it reads ``daily_counter`` (one row per member per active
day), ``membership`` and the tables below.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, String, and_, case, func, literal, select, type_coerce
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel, col

from storage import bulk, rollup
from storage.activity import DailyCounter
from storage.dialect import insert_for, one_of, upsert_rows
from storage.roster import Member, Membership
from storage.types import UTCDateTime

#: How many learning days (ending today) the bitmasks of :class:`MemberAggregate` cover.
WINDOW_DAYS = rollup.WINDOW_DAYS


class RiskFlag(SQLModel, table=True):
    """A learner's radar state in one group, as of the last evaluated learning day."""

    __tablename__ = "risk_flag"
    chat_id: str = Field(primary_key=True)
    member_id: str = Field(primary_key=True)
    day: date  # the learning day this state was computed for
    flagged: bool = False
    prev_flagged: bool = False  # the state before ``day`` (so a re-run of the same day is stable)
    level: int = 0
    signals: str = ""  # comma-separated signal codes
    since: date | None = None  # first day of the current flagged spell


class StageOverride(SQLModel, table=True):
    """A leader's stage override for one learner (``阶段 @人 <阶段>``)."""

    __tablename__ = "stage_override"
    cohort_id: str = Field(primary_key=True)
    member_id: str = Field(primary_key=True)
    stage: str
    set_by: str = ""
    set_at: datetime = Field(sa_type=UTCDateTime)


class CourseProgress(SQLModel, table=True):
    """Imported course data (完课率, homework rate) per learner, from ``import-progress``."""

    __tablename__ = "course_progress"
    member_id: str = Field(primary_key=True)
    completion: float
    homework_rate: float
    imported_at: datetime = Field(sa_type=UTCDateTime)


# --- flags -------------------------------------------------------------------------------------


class FlagState(NamedTuple):
    """A stored :class:`RiskFlag` (read as plain rows: tens of thousands are read at once)."""

    day: date
    flagged: bool
    prev_flagged: bool
    level: int
    signals: str
    since: date | None


def flags_of(session: Session, chat_ids: Sequence[str]) -> dict[tuple[str, str], FlagState]:
    """Stored radar state of every learner in the given groups."""
    session.flush()
    t = RiskFlag.__table__  # type: ignore[attr-defined]
    stmt = select(
        t.c.chat_id, t.c.member_id, t.c.day, t.c.flagged, t.c.prev_flagged, t.c.level,
        t.c.signals, t.c.since,
    ).where(one_of(session, t.c.chat_id, chat_ids))  # fmt: skip
    return {
        (r[0], r[1]): FlagState(r[2], bool(r[3]), bool(r[4]), r[5], r[6], r[7])
        for r in session.connection().execute(stmt)
    }


_FLAG_KEYS = ("chat_id", "member_id", "day", "flagged", "prev_flagged", "level", "signals", "since")


def _flag_upsert(session: Session) -> Any:
    ins = insert_for(session, RiskFlag)
    return ins.on_conflict_do_update(
        index_elements=["chat_id", "member_id"],
        set_={c: ins.excluded[c] for c in _FLAG_KEYS[2:]},
    )


#: A nightly pass may write tens of thousands of states: one prepared executemany.
_UPSERT_FLAGS = bulk.BulkStatement(_flag_upsert, _FLAG_KEYS)


#: PostgreSQL: the rows are copied into a session-local table (``COPY``, formatted by psycopg's C
#: code), then upserted by one ``INSERT ... SELECT``. A pipelined executemany of 76,000 rows takes
#: seconds; column arrays as parameters still cost 0.4 s to format in Python.
_PG_FLAGS_IN = """
CREATE TEMPORARY TABLE IF NOT EXISTS risk_flag_in (
    chat_id varchar NOT NULL, member_id varchar NOT NULL, day date NOT NULL,
    flagged boolean NOT NULL, prev_flagged boolean NOT NULL, level integer NOT NULL,
    signals varchar NOT NULL, since date
) ON COMMIT DELETE ROWS
"""
_PG_UPSERT_FLAGS = f"""
INSERT INTO risk_flag ({", ".join(_FLAG_KEYS)})
SELECT {", ".join(_FLAG_KEYS)} FROM risk_flag_in
ON CONFLICT (chat_id, member_id) DO UPDATE SET
{", ".join(f"{c} = excluded.{c}" for c in _FLAG_KEYS[2:])}
"""


def save_flags(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Upsert radar states (dicts of :class:`RiskFlag` columns)."""
    session.flush()
    if not rows:
        return
    if session.get_bind().dialect.name == "sqlite":
        _sqlite_upsert_flags(session, rows)
        return
    if session.get_bind().dialect.name != "postgresql":
        _UPSERT_FLAGS.execute(session, rows)
        return
    connection: Any = session.connection().connection.driver_connection
    _pg_stage_flags(connection, rows)
    with connection.cursor() as cursor:
        cursor.execute(_PG_UPSERT_FLAGS)


def _sqlite_upsert_flags(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """SQLite: the states bound as SQLAlchemy binds them for SQLite (a date as its ISO text, a
    boolean as 0 or 1; each distinct date formatted once), in multi-row upserts: a nightly pass
    saves 76,000, and per row the generic bind processing and ``executemany`` step cost twice
    as much."""
    iso: dict[date, str] = {}

    def text_of(d: date | None) -> str | None:
        if d is None:
            return None
        found = iso.get(d)
        if found is None:
            found = iso[d] = d.isoformat()
        return found

    _UPSERT_FLAGS.execute_bound(
        session,
        [
            (r["chat_id"], r["member_id"], text_of(r["day"]), 1 if r["flagged"] else 0,
             1 if r["prev_flagged"] else 0, r["level"], r["signals"], text_of(r["since"]))
            for r in rows
        ],
    )  # fmt: skip


def _pg_stage_flags(connection: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Copy the states into the session-local ``risk_flag_in`` (emptied first)."""
    with connection.cursor() as cursor:
        cursor.execute(_PG_FLAGS_IN)
        cursor.execute("TRUNCATE risk_flag_in")  # an earlier save in this transaction
        with cursor.copy(f"COPY risk_flag_in ({', '.join(_FLAG_KEYS)}) FROM STDIN") as copy:
            write = copy.write_row
            for r in rows:
                write(
                    (r["chat_id"], r["member_id"], r["day"], r["flagged"], r["prev_flagged"],
                     r["level"], r["signals"], r["since"])
                )  # fmt: skip


@contextmanager
def saving_flags(session: Session, rows: Sequence[dict[str, Any]]) -> Iterator[None]:
    """:func:`save_flags` while the body runs: in the same transaction, done when the block
    ends, and a failure raised there (the body's own exception, if any, comes first).

    On PostgreSQL the rows are copied to the server first (psycopg formats them while holding
    the GIL); the upsert from there, which only waits for the server, runs in a thread on the
    session's connection while the body works in Python (the nightly digest renders while
    70,000 states are upserted). The body should not use the session meanwhile (psycopg would
    make it wait its turn). Elsewhere the rows are saved before the body runs.
    """
    if not rows or session.get_bind().dialect.name != "postgresql":
        save_flags(session, rows)
        yield
        return
    session.flush()
    connection: Any = session.connection().connection.driver_connection
    _pg_stage_flags(connection, rows)
    failed: list[BaseException] = []

    def upsert() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute(_PG_UPSERT_FLAGS)
        except BaseException as e:  # handed to the caller's thread below
            failed.append(e)

    worker = threading.Thread(target=upsert, name="radar.save_flags")
    worker.start()
    try:
        yield
    finally:
        worker.join()
    if failed:
        raise failed[0]


# --- stage overrides ---------------------------------------------------------------------------


def set_stage(
    session: Session, cohort_id: str, member_id: str, stage: str | None, by: str, now: datetime
) -> None:
    """Set (or with ``None`` clear) a learner's stage override."""
    if stage is None:
        session.query(StageOverride).filter(
            col(StageOverride.cohort_id) == cohort_id, col(StageOverride.member_id) == member_id
        ).delete()
        return
    upsert_rows(
        session,
        StageOverride,
        [
            {
                "cohort_id": cohort_id,
                "member_id": member_id,
                "stage": stage,
                "set_by": by,
                "set_at": now,
            }
        ],
        ["cohort_id", "member_id"],
        update=["stage", "set_by", "set_at"],
    )


def stage_overrides(session: Session, cohort_id: str) -> dict[str, str]:
    stmt = select(col(StageOverride.member_id), col(StageOverride.stage)).where(
        col(StageOverride.cohort_id) == cohort_id
    )
    return {m: s for m, s in session.execute(stmt).all()}


# --- course progress ---------------------------------------------------------------------------


def save_progress(
    session: Session, rows: Sequence[tuple[str, float, float]], now: datetime
) -> None:
    """Store ``(member_id, completion, homework_rate)`` rows (rates in 0..1), replacing old ones."""
    upsert_rows(
        session,
        CourseProgress,
        [
            {"member_id": m, "completion": c, "homework_rate": h, "imported_at": now}
            for m, c, h in rows
        ],
        ["member_id"],
        update=["completion", "homework_rate", "imported_at"],
    )


def progress_of(session: Session, member_ids: Iterable[str]) -> dict[str, tuple[float, float]]:
    ids = list(set(member_ids))
    out: dict[str, tuple[float, float]] = {}
    for start in range(0, len(ids), 5000):
        stmt = select(
            col(CourseProgress.member_id),
            col(CourseProgress.completion),
            col(CourseProgress.homework_rate),
        ).where(one_of(session, col(CourseProgress.member_id), ids[start : start + 5000]))
        out.update({m: (c, h) for m, c, h in session.execute(stmt).all()})
    return out


def has_progress(session: Session) -> bool:
    return session.execute(select(col(CourseProgress.member_id)).limit(1)).first() is not None


# --- the aggregate -----------------------------------------------------------------------------


class MemberAggregate(NamedTuple):
    """One member's activity in one group over the radar window, from one aggregate row.

    Bit ``i`` of a mask is learning day ``today - i`` (bit 0 = today).
    """

    chat_id: str
    member_id: str
    message_mask: int
    checkin_mask: int
    chars_recent: int  # meaningful chars on the 3 days ending yesterday
    chars_before: int  # meaningful chars on the window days before those
    messages_today: int
    chars_today: int
    reviews_today: int

    @property
    def active_mask(self) -> int:
        """Days with a message or a check-in."""
        return self.message_mask | self.checkin_mask


def aggregates(
    session: Session, chat_ids: Sequence[str], today: date, first_day: date
) -> list[MemberAggregate]:
    """Per (group, member): activity bitmasks and sums over ``[max(first_day, today-27), today]``,
    straight from the counters: one ``GROUP BY`` over ``daily_counter`` for all the groups.

    The reference the rollup is checked against, and what a look at a past day uses.
    """
    t = DailyCounter.__table__  # type: ignore[attr-defined]
    stmt = (
        select(
            t.c.chat_id,
            t.c.member_id,
            *rollup.window_columns(session, today),
            rollup.total(case((t.c.day == today, t.c.messages), else_=0)),
            rollup.total(case((t.c.day == today, t.c.chars), else_=0)),
            rollup.total(case((t.c.day == today, t.c.reviews_given), else_=0)),
        )
        .where(
            one_of(session, t.c.chat_id, chat_ids),
            t.c.day >= rollup.window_start(today, first_day),
            t.c.day <= today,
        )
        .group_by(t.c.chat_id, t.c.member_id)
    )
    return [
        MemberAggregate(r[0], r[1], *(int(v or 0) for v in r[2:]))
        for r in session.execute(stmt).all()
    ]


class MemberRow(NamedTuple):
    """A group member as the radar needs it: membership summary plus member identity.

    Times are aware datetimes, or on SQLite the stored text (parsed only when needed, with
    :func:`as_datetime`): converting 200,000 rows' timestamps up front costs a second.
    """

    chat_id: str
    member_id: str
    name: str
    kind: str
    owner_userid: str | None
    joined_at: datetime | str | None
    left_at: datetime | str | None
    last_seen_at: datetime | str | None
    intro_done: bool


class Learner(NamedTuple):
    """A group member and their activity over the radar window: a :class:`MemberRow` followed by
    the fields of a :class:`MemberAggregate` (zeros for a member without counters)."""

    chat_id: str
    member_id: str
    name: str
    kind: str
    owner_userid: str | None
    joined_at: datetime | str | None
    left_at: datetime | str | None
    last_seen_at: datetime | str | None
    intro_done: bool  # read from the rollup join as it comes: 0 or 1 on SQLite
    message_mask: int
    checkin_mask: int
    chars_recent: int
    chars_before: int
    messages_today: int
    chars_today: int
    reviews_today: int

    @property
    def active_mask(self) -> int:
        """Days with a message or a check-in."""
        return self.message_mask | self.checkin_mask


def _raw(attr: Any) -> Any:
    """A datetime column without per-row result processing (see :class:`MemberRow`)."""
    return type_coerce(col(attr), String())


def as_datetime(value: datetime | str | None) -> datetime | None:
    """A :class:`MemberRow` time as an aware UTC datetime."""
    if value is None:
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _member_columns() -> list[Any]:
    return [
        col(Membership.chat_id),
        col(Membership.member_id),
        col(Member.name),
        col(Member.kind),
        col(Member.owner_userid),
        _raw(Membership.joined_at),
        _raw(Membership.left_at),
        _raw(Membership.last_seen_at),
        col(Membership.intro_done_at).is_not(None),
    ]


def members(session: Session, chat_ids: Sequence[str]) -> list[MemberRow]:
    """Every membership of the given groups with the member's name and kind (one query)."""
    stmt = (
        select(*_member_columns())
        .join(Member, col(Member.id) == col(Membership.member_id))
        .where(one_of(session, col(Membership.chat_id), chat_ids))
    )
    return [
        MemberRow(r[0], r[1], r[2] or r[1], r[3], r[4], r[5], r[6], r[7], bool(r[8]))
        for r in session.execute(stmt).all()
    ]


def learners(
    session: Session, chat_ids: Sequence[str], today: date, first_day: date
) -> list[Learner]:
    """Every membership of the given groups with its activity over the radar window ending
    ``today`` (window from ``first_day`` at the earliest).

    Reads the rollup (brought to ``today`` first, see :mod:`storage.rollup`) joined with the
    members and today's counters: one row per learner. Groups whose rollup cannot serve
    ``today`` (a look at a past day) are aggregated from the counters directly.
    """
    chat_ids = list(chat_ids)
    session.flush()  # the big reads below go through the connection, not the ORM
    valid = (
        rollup.ensure(session, chat_ids, today, first_day)
        if rollup.window_start(today, first_day) <= today
        else []
    )
    out: list[Learner] = []
    if valid:
        out.extend(_from_rollup(session, valid, today))
    rest = [c for c in chat_ids if c not in set(valid)]
    if rest:
        zeros = (0, 0, 0, 0, 0, 0, 0)
        aggs = {
            (a.chat_id, a.member_id): a[2:] for a in aggregates(session, rest, today, first_day)
        }
        out.extend(
            Learner(*m, *aggs.get((m.chat_id, m.member_id), zeros)) for m in members(session, rest)
        )
    return out


def _from_rollup(session: Session, chat_ids: Sequence[str], today: date) -> list[Learner]:
    r = rollup.RadarRollup.__table__  # type: ignore[attr-defined]
    d = DailyCounter.__table__  # type: ignore[attr-defined]
    ms = Membership.__table__  # type: ignore[attr-defined]
    zero = literal(0, BigInteger())
    one = literal(1, BigInteger())
    columns = _member_columns()
    # The display name falls back to the id in SQL, so the rows need no rebuilding here.
    columns[2] = func.coalesce(func.nullif(col(Member.name), ""), ms.c.member_id)
    stmt = (
        select(
            *columns,
            func.coalesce(r.c.message_mask, zero).op("|")(
                case((d.c.messages > 0, one), else_=zero)
            ),
            func.coalesce(r.c.checkin_mask, zero).op("|")(
                case((d.c.checkins > 0, one), else_=zero)
            ),
            func.coalesce(r.c.chars_recent, zero),
            func.coalesce(r.c.chars_before, zero),
            func.coalesce(d.c.messages, 0),
            func.coalesce(d.c.chars, 0),
            func.coalesce(d.c.reviews_given, 0),
        )
        .join(Member, col(Member.id) == ms.c.member_id)
        .outerjoin(r, and_(r.c.chat_id == ms.c.chat_id, r.c.member_id == ms.c.member_id))
        .outerjoin(
            d,
            and_(d.c.chat_id == ms.c.chat_id, d.c.member_id == ms.c.member_id, d.c.day == today),
        )
        .where(one_of(session, ms.c.chat_id, chat_ids))
    )
    # ~one row per learner, 200,000 at scale: plain DBAPI rows (see storage.bulk.fetch_all),
    # taken as they are (``intro_done`` is 0 or 1 on SQLite).
    rows = bulk.fetch_all(session, stmt, sqlite_index=("daily_counter", rollup.TODAY_INDEX))
    return list(map(Learner._make, rows))


def joins_and_leaves(
    session: Session, chat_ids: Sequence[str], since: datetime, until: datetime
) -> dict[str, tuple[int, int]]:
    """``chat_id -> (joins, leaves)`` with the time in ``[since, until)``."""
    out: dict[str, tuple[int, int]] = {}
    ms = Membership.__table__  # type: ignore[attr-defined]
    stmt = (
        select(
            ms.c.chat_id,
            func.sum(case((and_(ms.c.joined_at >= since, ms.c.joined_at < until), 1), else_=0)),
            func.sum(case((and_(ms.c.left_at >= since, ms.c.left_at < until), 1), else_=0)),
        )
        .where(one_of(session, ms.c.chat_id, chat_ids))
        .group_by(ms.c.chat_id)
    )
    for chat_id, j, lv in session.execute(stmt).all():
        out[chat_id] = (int(j or 0), int(lv or 0))
    return out
