"""The durable inbox: every raw inbound event, stored once per ``(namespace, event key)``.

A door stores the raw event before anything acts on it; the rows that were new are the ones to
process. A retried or re-imported event hits the unique key and is dropped here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Dialect, UniqueConstraint, literal, or_, select, update
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel, col

from storage.bulk import BulkStatement
from storage.dialect import insert_for
from storage.messages import Message
from storage.types import UTCDateTime


class RawEvent(SQLModel, table=True):
    """One inbound payload as the door received it (decrypted), with its processing state."""

    __tablename__ = "raw_event"
    __table_args__ = (UniqueConstraint("namespace", "event_key", name="uq_raw_event_key"),)
    id: int | None = Field(default=None, primary_key=True)
    door: str
    namespace: str
    event_key: str
    payload: str
    received_at: datetime = Field(sa_type=UTCDateTime)
    processed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    error: str | None = None


class Incoming(NamedTuple):
    """A raw event about to be stored (a tuple: one is made for every callback)."""

    door: str
    namespace: str
    event_key: str
    payload: str


def store_new(
    session: Session,
    items: Sequence[Incoming],
    now: datetime,
    processed: bool = False,
    error: str | None = None,
) -> list[int]:
    """Insert ``items``, skipping keys already stored; return the indexes of the new ones.

    With ``processed`` the rows are marked processed in the same transaction (the import door
    stores and processes in one go); otherwise they wait for the inbox worker. ``error`` records
    why processing failed.
    """
    if not items:
        return []
    first: dict[tuple[str, str], int] = {}
    for i, item in enumerate(items):
        first.setdefault((item.namespace, item.event_key), i)
    done = now if processed else None
    rows = [
        (items[i].door, ns, key, items[i].payload, now, done, error)
        for (ns, key), i in first.items()
    ]
    inserted = _STORE.returning(session, rows)
    return sorted(first[(r[0], r[1])] for r in inserted)


def _store_statement(session: Session) -> Any:
    table = RawEvent.__table__  # type: ignore[attr-defined]
    return (
        insert_for(session, RawEvent)
        .on_conflict_do_nothing(index_elements=["namespace", "event_key"])
        .returning(table.c.namespace, table.c.event_key)
    )


# Prepared once (see storage.bulk): every stored event goes through it.
_STORE = BulkStatement(
    _store_statement,
    ("door", "namespace", "event_key", "payload", "received_at", "processed_at", "error"),
    placed=True,
)


#: Rows per INSERT in :class:`ArrivalsInsert` (5 parameters a row; SQLite allows 32,766).
_ARRIVALS_CHUNK = 500


def store_arrivals(
    conn: Connection, items: Sequence[Incoming], received_at: Sequence[datetime]
) -> list[int]:
    """:func:`store_new` for the callback inbox (unprocessed rows), ``received_at`` giving each
    item's receive time: the same rows and the same answer, the indexes of the items that were
    new. ``conn`` is in a transaction; the caller commits.

    Callbacks are stored one by one, so this skips the ORM's per-row work: one multi-row
    ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` per chunk on the session's connection (that
    per-row work was most of the writer's CPU time). See :func:`insert_arrivals` for the same
    without SQLAlchemy's statement layer.
    """

    def run(sql: str, params: tuple[object, ...]) -> Sequence[Sequence[Any]]:
        return conn.exec_driver_sql(sql, params).all()

    received = [received_value(conn.dialect, t) for t in received_at]
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return insert_arrivals(run, mark, items, received)


def received_value(dialect: Dialect, now: datetime) -> object:
    """``now`` as the driver of ``dialect`` takes it for ``raw_event.received_at``."""
    table = RawEvent.__table__  # type: ignore[attr-defined]
    stamp = table.c.received_at.type.bind_processor(dialect)
    return stamp(now) if stamp is not None else now


#: Runs one statement with its parameters and returns the rows it returned.
Execute = Callable[[str, tuple[object, ...]], Sequence[Sequence[Any]]]


def insert_arrivals(
    execute: Execute, mark: str, items: Sequence[Incoming], received: Sequence[object]
) -> list[int]:
    """:func:`store_arrivals` on any DB-API cursor: ``execute`` runs a statement written with
    the parameter ``mark`` ("?" or "%s"), ``received`` is each item's :func:`received_value`.
    The caller owns the transaction."""
    plan = ArrivalsInsert(items, mark, received)
    return plan.new_indexes([row for sql, args in plan.statements for row in execute(sql, args)])


class ArrivalsInsert:
    """The statements that store ``items`` as unprocessed raw events, and how to read their
    answer: for callers that run the statements themselves (:func:`insert_arrivals`, and the
    inbox writer's asynchronous PostgreSQL connection)."""

    def __init__(self, items: Sequence[Incoming], mark: str, received: Sequence[object]) -> None:
        """``received`` is each item's ``received_at`` (from :func:`received_value`)."""
        first: dict[tuple[str, str], int] = {}
        for i, item in enumerate(items):
            first.setdefault((item.namespace, item.event_key), i)
        self._first = first
        keys = list(first.items())
        #: (sql, parameters) per chunk of rows; each returns the (namespace, key) it inserted.
        self.statements: list[tuple[str, tuple[object, ...]]] = []
        for start in range(0, len(keys), _ARRIVALS_CHUNK):
            chunk = keys[start : start + _ARRIVALS_CHUNK]
            row = f"({mark}, {mark}, {mark}, {mark}, {mark}, NULL, NULL)"
            params: list[object] = []
            for (namespace, key), i in chunk:
                params += (items[i].door, namespace, key, items[i].payload, received[i])
            sql = (
                "INSERT INTO raw_event (door, namespace, event_key, payload, received_at, "
                f"processed_at, error) VALUES {', '.join([row] * len(chunk))} "
                "ON CONFLICT (namespace, event_key) DO NOTHING RETURNING namespace, event_key"
            )
            self.statements.append((sql, tuple(params)))

    def new_indexes(self, returned: Sequence[Sequence[Any]]) -> list[int]:
        """The indexes of the items that were new, from the rows the statements returned."""
        return sorted(self._first[(r[0], r[1])] for r in returned)


def pending(session: Session, limit: int) -> Sequence[RawEvent]:
    """The oldest events not processed yet."""
    stmt = (
        select(RawEvent)
        .where(col(RawEvent.processed_at).is_(None))
        .order_by(col(RawEvent.id))
        .limit(limit)
    )
    return session.scalars(stmt).all()


def claim(session: Session, ids: Sequence[int], now: datetime) -> set[int]:
    """Mark ``ids`` processed if nobody has; return the ones this transaction won.

    Call it first in the transaction that processes them: a concurrent replica's claim waits on
    the row locks (PostgreSQL) or the write lock (SQLite), then finds them taken. A rollback
    gives them back.
    """
    if not ids:
        return set()
    table = RawEvent.__table__  # type: ignore[attr-defined]
    result = session.execute(
        update(table)
        .where(table.c.id.in_(list(ids)), table.c.processed_at.is_(None))
        .values(processed_at=now)
        .returning(table.c.id)
    )
    return {int(r[0]) for r in result.all()}


def mark_processed(
    session: Session, ids: Sequence[int], now: datetime, error: str | None = None
) -> None:
    if ids:
        session.execute(
            update(RawEvent).where(col(RawEvent.id).in_(ids)).values(processed_at=now, error=error)
        )


def _carries_message(sent_before: datetime | None = None) -> Any:
    """The event's message is stored (sent before ``sent_before``, when given): the inbox key is
    the message's key (``(namespace, event key)`` = ``(namespace, msg_id)``)."""
    carried = select(literal(1)).where(
        col(Message.namespace) == col(RawEvent.namespace),
        col(Message.msg_id) == col(RawEvent.event_key),
    )
    if sent_before is not None:
        carried = carried.where(col(Message.sent_at) < sent_before)
    return carried.exists()


def purge_payloads(session: Session, before: datetime) -> int:
    """Blank the payloads (they hold message text) of processed events whose message was sent
    before ``before``, or that were received before it.

    By the message's sent time, as :func:`storage.messages.purge_text` blanks its text: an
    imported year of history is received today, and its text must not outlive the retention
    period in the payloads. Unprocessed events keep their payloads (the inbox worker needs them).
    For events that carry no stored message, see :func:`undated_payloads`."""
    result = session.execute(
        update(RawEvent)
        .where(
            col(RawEvent.processed_at).is_not(None),
            col(RawEvent.payload) != "",
            or_(col(RawEvent.received_at) < before, _carries_message(sent_before=before)),
        )
        .values(payload="")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def undated_payloads(session: Session, since: datetime) -> Iterator[tuple[int, str, str]]:
    """``(id, door, payload)`` of the processed events received since ``since`` whose payload is
    not blank and that carry no stored message (private chats, other groups' messages, events):
    what :func:`purge_payloads` cannot date, for the caller to date by parsing the payload."""
    stmt = (
        select(col(RawEvent.id), col(RawEvent.door), col(RawEvent.payload))
        .where(
            col(RawEvent.processed_at).is_not(None),
            col(RawEvent.payload) != "",
            col(RawEvent.received_at) >= since,
            ~_carries_message(),
        )
        .order_by(col(RawEvent.id))
        .execution_options(yield_per=2000)
    )
    for event_id, door, payload in session.execute(stmt):
        if event_id is not None:  # always: the primary key
            yield event_id, door, payload


def blank_payloads(session: Session, ids: Sequence[int]) -> int:
    """Blank the payloads of the events ``ids``; return how many."""
    blanked = 0
    for start in range(0, len(ids), 1000):
        result = session.execute(
            update(RawEvent)
            .where(col(RawEvent.id).in_(ids[start : start + 1000]))
            .values(payload="")
            .execution_options(synchronize_session=False)
        )
        blanked += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return blanked


def oldest_pending_at(session: Session) -> datetime | None:
    """When the oldest unprocessed event arrived (the inbox lag), or None when all are done."""
    stmt = (
        select(col(RawEvent.received_at))
        .where(col(RawEvent.processed_at).is_(None))
        .order_by(col(RawEvent.id))
        .limit(1)
    )
    return session.scalars(stmt).first()
