"""The points ledger and redemptions (SPEC §4).

The ledger (:class:`PointsEntry`) is append-only: a correction is a new entry, never an edit. Every
entry has a unique idempotency key, so a message delivered twice (or seen by two replicas) pays
once. The balance is the sum of a member's entries in a cohort; :class:`PointsBalance` keeps that
sum in one row per member, updated in the same transaction as each entry, because that row is
what makes "never negative" hold under concurrency:

* every ledger write first *locks* the member's balance row with an upsert whose update changes
  nothing (PostgreSQL: a row lock held to commit, like ``SELECT ... FOR UPDATE``; SQLite: the
  database write lock, as ``BEGIN IMMEDIATE`` would take, so no other connection can commit in
  between our check and our write);
* a debit then moves the row with a conditional ``UPDATE ... WHERE balance + delta >= 0`` and is
  refused when no row matched.

Redemption stock is one row per SKU moved the same way (``WHERE sold < stock``), so two learners
cannot both take the last item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    Index,
    Integer,
    UniqueConstraint,
    bindparam,
    event,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session, SessionTransaction
from sqlmodel import Field, SQLModel, col

from storage.bulk import BulkStatement, Prepared
from storage.dialect import insert_for, one_of, upsert_rows
from storage.types import UTCDateTime

# Ledger reasons. Leaderboards rank points *earned*: spending and refunds do not move them.
CHECKIN = "checkin"
CHECKIN_UNDO = "checkin_undo"
INTRO = "intro"
MILESTONE = "milestone"
REVIEW = "review"
QUIZ = "quiz"
MANUAL = "manual"
REDEEM = "redeem"
REFUND = "refund"
SPENDING_REASONS = frozenset({REDEEM, REFUND})
#: Reasons whose daily cap is that of another reason (a reversal lowers the day's total).
CAP_FAMILY = {CHECKIN_UNDO: CHECKIN}

PENDING = "pending"
FULFILLED = "fulfilled"
CANCELLED = "cancelled"


class PointsEntry(SQLModel, table=True):
    """One line of the ledger."""

    __tablename__ = "points_entry"
    __table_args__ = (
        UniqueConstraint("key", name="uq_points_entry_key"),
        Index("ix_points_entry_member", "cohort_id", "member_id", "day"),
        Index("ix_points_entry_cohort_day", "cohort_id", "day"),
    )
    id: int | None = Field(default=None, primary_key=True)
    cohort_id: str
    member_id: str
    delta: int
    reason: str
    key: str  # idempotency key
    actor: str = ""  # who caused it: the member, a leader's id, or "bot"
    note: str = ""
    day: date  # the learning day it counts for (daily caps, weekly leaderboard)
    created_at: datetime = Field(sa_type=UTCDateTime)


class PointsBalance(SQLModel, table=True):
    """The running sum of a member's entries in a cohort, and the row ledger writers lock."""

    __tablename__ = "points_balance"
    cohort_id: str = Field(primary_key=True)
    member_id: str = Field(primary_key=True)
    balance: int = 0


class Redemption(SQLModel, table=True):
    """A learner exchanged points for a catalog item; ``pending`` until fulfilled or cancelled."""

    __tablename__ = "redemption"
    __table_args__ = (Index("ix_redemption_member_sku", "cohort_id", "member_id", "sku"),)
    id: int | None = Field(default=None, primary_key=True)
    cohort_id: str = Field(index=True)
    member_id: str
    chat_id: str = ""
    sku: str
    name: str
    cost: int
    status: str = Field(default=PENDING, index=True)
    key: str = Field(unique=True)  # the idempotency key of the debit
    created_at: datetime = Field(sa_type=UTCDateTime)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decided_by: str | None = None


class StockCounter(SQLModel, table=True):
    """How many of a SKU are taken (pending or fulfilled); the stock itself is config."""

    __tablename__ = "shop_stock"
    sku: str = Field(primary_key=True)
    taken: int = 0


@dataclass(frozen=True)
class Posted:
    """The outcome of :func:`post`."""

    ok: bool  # the entry exists now (written by this call or an earlier one)
    new: bool  # this call wrote it
    delta: int  # what was booked (after a daily cap); 0 when refused
    balance: int
    reason: str = ""  # why nothing was booked: "duplicate", "insufficient", "cap"


def _lock_statement(session: Session) -> Any:
    table = PointsBalance.__table__  # type: ignore[attr-defined]
    # An upsert that "changes" nothing: it creates the row if needed and, either way, takes the
    # row's lock (PostgreSQL) or the database's write lock (SQLite), then reads the balance.
    return (
        insert_for(session, PointsBalance)
        .on_conflict_do_update(
            index_elements=["cohort_id", "member_id"], set_={"balance": table.c.balance}
        )
        .returning(table.c.balance)
    )


_LOCK = Prepared(_lock_statement, ("cohort_id", "member_id", "balance"))


def lock_member(session: Session, cohort_id: str, member_id: str) -> int:
    """Take the member's ledger lock for the rest of the transaction; return their balance."""
    settle(session)
    row = _LOCK.first(session, cohort_id=cohort_id, member_id=member_id, balance=0)
    assert row is not None
    return int(row[0])


def balance(session: Session, cohort_id: str, member_id: str) -> int:
    """The member's balance (the stored running sum)."""
    settle(session)
    row = session.get(PointsBalance, (cohort_id, member_id))
    return row.balance if row is not None else 0


def balances_of(session: Session, cohort_id: str, member_ids: Sequence[str]) -> dict[str, int]:
    """:func:`balance` of many members (absent: 0), in a few queries."""
    settle(session)
    ids = list(set(member_ids))
    table = PointsBalance.__table__  # type: ignore[attr-defined]
    out: dict[str, int] = {}
    for start in range(0, len(ids), 5000):
        stmt = select(table.c.member_id, table.c.balance).where(
            table.c.cohort_id == cohort_id,
            one_of(session, table.c.member_id, ids[start : start + 5000]),
        )
        out.update({m: int(b) for m, b in session.execute(stmt).all()})
    return out


def ledger_sum(session: Session, cohort_id: str, member_id: str) -> int:
    """The sum of the member's entries: what :func:`balance` must always equal."""
    settle(session)
    total = session.scalar(
        select(func.coalesce(func.sum(col(PointsEntry.delta)), 0)).where(
            col(PointsEntry.cohort_id) == cohort_id, col(PointsEntry.member_id) == member_id
        )
    )
    return int(total or 0)


_EXISTS = Prepared(
    lambda _s: select(col(PointsEntry.id)).where(col(PointsEntry.key) == bindparam("key")),
    ("key",),
)


def exists(session: Session, key: str) -> bool:
    """Whether an entry with this idempotency key is booked."""
    settle(session)
    return _EXISTS.first(session, key=key) is not None


#: ``day_total`` statements by the number of reasons summed.
_DAY_TOTALS: dict[int, Prepared] = {}


def _day_total_statement(reasons: int) -> Prepared:
    found = _DAY_TOTALS.get(reasons)
    if found is None:
        names = tuple(f"r{i}" for i in range(reasons))
        stmt = select(func.coalesce(func.sum(col(PointsEntry.delta)), 0)).where(
            col(PointsEntry.cohort_id) == bindparam("cohort_id"),
            col(PointsEntry.member_id) == bindparam("member_id"),
            col(PointsEntry.day) == bindparam("day"),
            col(PointsEntry.reason).in_([bindparam(n) for n in names]),
        )
        found = _DAY_TOTALS[reasons] = Prepared(
            lambda _s: stmt, ("cohort_id", "member_id", "day", *names)
        )
    return found


def day_total(
    session: Session, cohort_id: str, member_id: str, reasons: Sequence[str], day: date
) -> int:
    """Net points the member got on ``day`` for any of ``reasons``."""
    settle(session)
    if not reasons:
        return 0
    total = _day_total_statement(len(reasons)).scalar(
        session,
        cohort_id=cohort_id,
        member_id=member_id,
        day=day,
        **{f"r{i}": r for i, r in enumerate(reasons)},
    )
    return int(total or 0)


def _move_statement(_session: Session) -> Any:
    table = PointsBalance.__table__  # type: ignore[attr-defined]
    delta: Any = bindparam("delta", type_=Integer)
    return (
        update(table)
        .where(
            table.c.cohort_id == bindparam("cohort_id"),
            table.c.member_id == bindparam("member_id"),
            table.c.balance + delta >= 0,
        )
        .values(balance=table.c.balance + delta)
        .returning(table.c.balance)
    )


_MOVE = Prepared(_move_statement, ("cohort_id", "member_id", "delta"), column_keys=())
_ENTRY_KEYS = (
    "cohort_id",
    "member_id",
    "delta",
    "reason",
    "key",
    "actor",
    "note",
    "day",
    "created_at",
)


def _book_statement(session: Session) -> Any:
    table = PointsEntry.__table__  # type: ignore[attr-defined]
    return (
        insert_for(session, PointsEntry)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(table.c.id)
    )


_BOOK_ENTRY = Prepared(_book_statement, _ENTRY_KEYS)


def _refused(session: Session, key: str, balance: int, why: str) -> Posted:
    if exists(session, key):
        return Posted(True, False, 0, balance, "duplicate")
    return Posted(False, False, 0, balance, why)


def post(
    session: Session,
    *,
    cohort_id: str,
    member_id: str,
    delta: int,
    reason: str,
    key: str,
    day: date,
    now: datetime,
    actor: str = "bot",
    note: str = "",
    daily_cap: int = 0,
) -> Posted:
    """Append one entry unless its key is already booked.

    A debit that would take the balance below zero is refused. ``daily_cap`` (> 0) limits what
    ``reason`` may pay the member on ``day``; an award over it is cut down to what is left, and
    refused when nothing is left.
    """
    # Under the member's lock the balance read here stays exact until commit, so the checks
    # below need no further reads; a key already booked wins over any refusal, as it always has.
    # (lock_member books the session's deferred posts first: entries keep their order.)
    current = lock_member(session, cohort_id, member_id)
    if delta > 0 and daily_cap > 0:
        family = CAP_FAMILY.get(reason, reason)
        reasons = [family, *[r for r, f in CAP_FAMILY.items() if f == family]]
        left = daily_cap - day_total(session, cohort_id, member_id, reasons, day)
        if left <= 0:
            return _refused(session, key, current, "cap")
        delta = min(delta, left)
    if current + delta < 0:
        return _refused(session, key, current, "insufficient")
    booked = _BOOK_ENTRY.first(
        session,
        cohort_id=cohort_id,
        member_id=member_id,
        delta=delta,
        reason=reason,
        key=key,
        actor=actor,
        note=note,
        day=day,
        created_at=now,
    )
    if booked is None:
        return Posted(True, False, 0, current, "duplicate")
    moved = _MOVE.first(session, cohort_id=cohort_id, member_id=member_id, delta=delta)
    if moved is None:  # cannot happen under the lock; never leave an entry without its balance
        raise RuntimeError(f"ledger balance of {member_id} in {cohort_id} moved under its lock")
    return Posted(True, True, delta, int(moved[0]))


# Deferred posts: a batch's check-in points booked in a few statements.


class _Later(NamedTuple):
    """The arguments of one deferred :func:`post` call."""

    cohort_id: str
    member_id: str
    delta: int
    reason: str
    key: str
    day: date
    now: datetime
    actor: str
    note: str
    daily_cap: int


#: Where a session keeps its deferred posts (in ``session.info``) until :func:`settle`.
_LATER = "storage.points.later"


def post_later(
    session: Session,
    *,
    cohort_id: str,
    member_id: str,
    delta: int,
    reason: str,
    key: str,
    day: date,
    now: datetime,
    actor: str = "bot",
    note: str = "",
    daily_cap: int = 0,
) -> None:
    """:func:`post`, booked later in this transaction, for a caller that needs no answer.

    The post waits in the session until :func:`settle`, which every function of this module
    calls first and the unit of work calls before any read through its session and before
    committing; so nothing ever reads the ledger without it, and entries keep the order of the
    calls. Settling books the waiting posts in bulk with exactly :func:`post`'s outcome, one
    after the other: the member's lock, the daily cap, never below zero, a key booked once.
    Settling three posts costs about what one :func:`post` does (a few statements whatever
    their number), which is what an import's check-in points need.
    """
    later: list[_Later] | None = session.info.get(_LATER)
    if later is None:
        later = session.info[_LATER] = []
    later.append(_Later(cohort_id, member_id, delta, reason, key, day, now, actor, note, daily_cap))


def settle(session: Session) -> None:
    """Book the session's deferred posts (see :func:`post_later`), if any."""
    later: list[_Later] | None = session.info.pop(_LATER, None)
    if later:
        _book(session, later)


@event.listens_for(Session, "before_commit")
def _settle_before_commit(session: Session) -> None:
    settle(session)


@event.listens_for(Session, "after_transaction_end")
def _forget_later(session: Session, transaction: SessionTransaction) -> None:
    # A rollback takes the deferred posts with it (a commit has settled them already).
    if transaction.parent is None:
        session.info.pop(_LATER, None)


def _lock_many_statement(session: Session) -> Any:
    table = PointsBalance.__table__  # type: ignore[attr-defined]
    return (
        insert_for(session, PointsBalance)
        .on_conflict_do_update(
            index_elements=["cohort_id", "member_id"], set_={"balance": table.c.balance}
        )
        .returning(table.c.cohort_id, table.c.member_id, table.c.balance)
    )


def _add_statement(_session: Session) -> Any:
    table = PointsBalance.__table__  # type: ignore[attr-defined]
    delta: Any = bindparam("delta", type_=Integer)
    return (
        update(table)
        .where(
            table.c.cohort_id == bindparam("cohort_id"),
            table.c.member_id == bindparam("member_id"),
        )
        .values(balance=table.c.balance + delta)
    )


_LOCK_MANY = BulkStatement(_lock_many_statement, ("cohort_id", "member_id", "balance"))
_BOOK_MANY = BulkStatement(_book_statement, _ENTRY_KEYS)
_ADD_MANY = BulkStatement(_add_statement, ("cohort_id", "member_id", "delta"), column_keys=())

DayKey = tuple[str, str, date, str]  # cohort, member, day, reason


def _cap_reasons(reason: str) -> list[str]:
    """The reasons whose day total counts against ``reason``'s daily cap (as in :func:`post`)."""
    family = CAP_FAMILY.get(reason, reason)
    return [family, *[r for r, f in CAP_FAMILY.items() if f == family]]


def _book(session: Session, later: Sequence[_Later]) -> None:
    """:func:`post` for each of ``later`` in order, in five statements: lock every member (in
    key order) and read the balances, read the keys already booked and the day totals the caps
    need, decide each post in memory exactly as :func:`post` would, then insert the entries (in
    call order) and move the balances."""
    members = sorted({(p.cohort_id, p.member_id) for p in later})
    locked = _LOCK_MANY.returning(
        session, [{"cohort_id": c, "member_id": m, "balance": 0} for c, m in members]
    )
    balances = {(c, m): int(b) for c, m, b in locked}
    booked = _booked_keys(session, [p.key for p in later])
    totals = _day_totals(session, [p for p in later if p.delta > 0 and p.daily_cap > 0])
    entries: list[dict[str, Any]] = []
    moves: dict[tuple[str, str], int] = {}
    for p in later:
        member = (p.cohort_id, p.member_id)
        current, delta = balances[member], p.delta
        if delta > 0 and p.daily_cap > 0:
            day = (p.cohort_id, p.member_id, p.day)
            left = p.daily_cap - sum(totals.get((*day, r), 0) for r in _cap_reasons(p.reason))
            if left <= 0:
                continue  # refused: cap (or a duplicate; either way nothing is booked)
            delta = min(delta, left)
        if current + delta < 0 or p.key in booked:
            continue  # refused: insufficient, or booked already
        booked.add(p.key)
        entries.append(
            {
                "cohort_id": p.cohort_id,
                "member_id": p.member_id,
                "delta": delta,
                "reason": p.reason,
                "key": p.key,
                "actor": p.actor,
                "note": p.note,
                "day": p.day,
                "created_at": p.now,
            }
        )
        balances[member] = current + delta
        moves[member] = moves.get(member, 0) + delta
        total = (p.cohort_id, p.member_id, p.day, p.reason)
        totals[total] = totals.get(total, 0) + delta
    if len(_BOOK_MANY.returning(session, entries)) != len(entries):
        # Cannot happen under the locks: a key booked meanwhile would have to be one of these
        # members' (every writer locks the member first).
        raise RuntimeError("a deferred ledger entry's key was booked under its member's lock")
    _ADD_MANY.execute(
        session,
        [{"cohort_id": c, "member_id": m, "delta": d} for (c, m), d in sorted(moves.items()) if d],
    )


def _booked_keys(session: Session, keys: Sequence[str]) -> set[str]:
    table = PointsEntry.__table__  # type: ignore[attr-defined]
    stmt = select(table.c.key).where(one_of(session, table.c.key, keys))
    return set(session.scalars(stmt).all())


def _day_totals(session: Session, capped: Sequence[_Later]) -> dict[DayKey, int]:
    """The day totals per reason that the caps of ``capped`` read (:func:`day_total`'s sums).

    One query per cohort, by member and day lists (a row-value IN list would be a scan of the
    ledger on SQLite); rows of a listed member on another listed day are simply not read back.
    """
    wanted = {(p.cohort_id, p.member_id, p.day) for p in capped}
    reasons = sorted({r for p in capped for r in _cap_reasons(p.reason)})
    table = PointsEntry.__table__  # type: ignore[attr-defined]
    out: dict[DayKey, int] = {}
    for cohort_id in sorted({c for c, _m, _d in wanted}):
        stmt = (
            select(table.c.member_id, table.c.day, table.c.reason, func.sum(table.c.delta))
            .where(
                table.c.cohort_id == cohort_id,
                one_of(
                    session, table.c.member_id, sorted({m for c, m, _d in wanted if c == cohort_id})
                ),
                table.c.day.in_(sorted({d for c, _m, d in wanted if c == cohort_id})),
                table.c.reason.in_(reasons),
            )
            .group_by(table.c.member_id, table.c.day, table.c.reason)
        )
        for m, d, r, total in session.execute(stmt).all():
            if (cohort_id, m, d) in wanted:
                out[(cohort_id, m, d, r)] = int(total or 0)
    return out


def recent(
    session: Session, cohort_id: str, member_id: str, limit: int = 5
) -> Sequence[PointsEntry]:
    """The member's latest entries, newest first."""
    settle(session)
    stmt = (
        select(PointsEntry)
        .where(col(PointsEntry.cohort_id) == cohort_id, col(PointsEntry.member_id) == member_id)
        .order_by(col(PointsEntry.id).desc())
        .limit(limit)
    )
    return session.scalars(stmt).all()


def entries_of_cohort(session: Session, cohort_id: str) -> Sequence[PointsEntry]:
    """Every entry of a cohort, oldest first (exports)."""
    settle(session)
    stmt = (
        select(PointsEntry)
        .where(col(PointsEntry.cohort_id) == cohort_id)
        .order_by(col(PointsEntry.id))
    )
    return session.scalars(stmt).all()


@dataclass(frozen=True)
class Ranked:
    """One leaderboard row."""

    member_id: str
    score: int
    reached_id: int  # the entry that brought them to ``score``: earlier wins a tie


def earned_ranking(
    session: Session, cohort_id: str, since: date | None = None, until: date | None = None
) -> list[Ranked]:
    """Members by points earned (spending excluded), best first; ties go to whoever got there
    first (the lower id of the entry that completed their score)."""
    settle(session)
    stmt = select(
        col(PointsEntry.member_id),
        func.sum(col(PointsEntry.delta)),
        func.max(col(PointsEntry.id)),
    ).where(
        col(PointsEntry.cohort_id) == cohort_id,
        col(PointsEntry.reason).not_in(list(SPENDING_REASONS)),
    )
    if since is not None:
        stmt = stmt.where(col(PointsEntry.day) >= since)
    if until is not None:
        stmt = stmt.where(col(PointsEntry.day) <= until)
    stmt = stmt.group_by(col(PointsEntry.member_id))
    rows = [Ranked(r[0], int(r[1] or 0), int(r[2] or 0)) for r in session.execute(stmt).all()]
    rows = [r for r in rows if r.score > 0]
    rows.sort(key=lambda r: (-r.score, r.reached_id))
    return rows


def balances(session: Session, cohort_id: str) -> dict[str, int]:
    """Every member's balance in a cohort."""
    settle(session)
    stmt = select(col(PointsBalance.member_id), col(PointsBalance.balance)).where(
        col(PointsBalance.cohort_id) == cohort_id
    )
    return {m: int(b) for m, b in session.execute(stmt).all()}


# Redemptions.


def taken(session: Session, sku: str) -> int:
    """How many of ``sku`` are taken (pending or fulfilled)."""
    row = session.get(StockCounter, sku)
    return row.taken if row is not None else 0


def take_stock(session: Session, sku: str, stock: int) -> bool:
    """Take one of ``sku`` if fewer than ``stock`` are taken (atomic under concurrency)."""
    upsert_rows(session, StockCounter, [{"sku": sku, "taken": 0}], ["sku"])
    table = StockCounter.__table__  # type: ignore[attr-defined]
    moved = session.execute(
        update(table)
        .where(table.c.sku == sku, table.c.taken < stock)
        .values(taken=table.c.taken + 1)
        .returning(table.c.taken)
    ).first()
    return moved is not None


def return_stock(session: Session, sku: str) -> None:
    """Give one of ``sku`` back (a cancelled redemption)."""
    table = StockCounter.__table__  # type: ignore[attr-defined]
    session.execute(
        update(table).where(table.c.sku == sku, table.c.taken > 0).values(taken=table.c.taken - 1)
    )


def held_by(session: Session, cohort_id: str, member_id: str, sku: str) -> int:
    """How many of ``sku`` the member holds (pending or fulfilled redemptions)."""
    count = session.scalar(
        select(func.count())
        .select_from(Redemption)
        .where(
            col(Redemption.cohort_id) == cohort_id,
            col(Redemption.member_id) == member_id,
            func.lower(col(Redemption.sku)) == sku.lower(),
            col(Redemption.status) != CANCELLED,
        )
    )
    return int(count or 0)


def add_redemption(
    session: Session,
    *,
    cohort_id: str,
    member_id: str,
    chat_id: str,
    sku: str,
    name: str,
    cost: int,
    key: str,
    now: datetime,
) -> Redemption:
    """Record a pending redemption (after its debit) and return it with its id."""
    row = Redemption(
        cohort_id=cohort_id,
        member_id=member_id,
        chat_id=chat_id,
        sku=sku,
        name=name,
        cost=cost,
        key=key,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def redemption_by_key(session: Session, key: str) -> Redemption | None:
    """The redemption made by the debit with this idempotency key, if any."""
    return session.scalars(select(Redemption).where(col(Redemption.key) == key)).first()


def get_redemption(session: Session, redemption_id: int, lock: bool = False) -> Redemption | None:
    """A redemption by its number (兑换号); ``lock`` takes a row lock."""
    stmt = select(Redemption).where(col(Redemption.id) == redemption_id)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


def decide(session: Session, redemption_id: int, status: str, actor: str, now: datetime) -> bool:
    """Move a pending redemption to ``status``; False when it was no longer pending (a concurrent
    decision won)."""
    result = session.execute(
        update(Redemption)
        .where(col(Redemption.id) == redemption_id, col(Redemption.status) == PENDING)
        .values(status=status, decided_at=now, decided_by=actor)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def pending(session: Session, cohort_id: str | None = None) -> Sequence[Redemption]:
    """Pending redemptions, oldest first (for the teacher digest)."""
    stmt = select(Redemption).where(col(Redemption.status) == PENDING)
    if cohort_id is not None:
        stmt = stmt.where(col(Redemption.cohort_id) == cohort_id)
    return session.scalars(stmt.order_by(col(Redemption.id))).all()
