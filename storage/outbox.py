"""The persistent outbox: every message the bot means to send, until WeCom has accepted it.

A row is written in the same transaction as the change that caused it (a transactional outbox),
so a message goes out only if that change committed, and the unique ``key`` makes a re-queued
message (a redelivered update, a replayed job, a second replica) one row. The delivery worker
(:mod:`bot.wecom.delivery`) claims due rows with a compare-and-set on ``version`` (portable: the
same statement is safe on SQLite and on PostgreSQL, where a concurrent claimer's UPDATE re-reads
the row and matches nothing), sends, and marks them sent.

Status: ``pending`` (due at ``next_attempt_at``), ``sending`` (claimed; the claim lease ends at
``next_attempt_at``, after which another worker may take it), ``sent``, ``failed`` (final).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Index, UniqueConstraint, func, select, update
from sqlalchemy.orm import Session, aliased
from sqlmodel import Field, SQLModel, col

from storage.bulk import BulkStatement
from storage.dialect import insert_for
from storage.types import UTCDateTime

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
FAILED = "failed"
OPEN = (PENDING, SENDING)


class OutboxRow(SQLModel, table=True):
    """One delivery (one part of a long message) to one target."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("key", name="uq_outbox_key"),
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_bucket_sent", "bucket", "sent_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    key: str
    channel: str  # Outbound.channel: group / private / reply
    target: str  # chat id or member id
    kind: str  # text / markdown / image
    payload: str  # JSON: {"text", "mentions", "image_b64" or "card"}
    bucket: str  # rate-limit and ordering bucket (a robot, a member, a chat)
    status: str = PENDING
    attempts: int = 0
    version: int = 0  # bumped by every claim: the compare-and-set token
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    last_error: str | None = None
    created_at: datetime = Field(sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    door: str | None = None  # how it was (last) sent: robot / appchat / aibot / app / template


@dataclass(frozen=True, slots=True)
class NewRow:
    key: str
    channel: str
    target: str
    kind: str
    payload: dict[str, Any]
    bucket: str


def _enqueue_statement(session: Session) -> Any:
    table = OutboxRow.__table__  # type: ignore[attr-defined]
    return (
        insert_for(session, OutboxRow)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(table.c.id)
    )


# Prepared once (see storage.bulk): every reply, nudge and digest part is queued through it, in
# the transaction of what caused it (a command's answer costs one row, not an ORM round).
_ENQUEUE = BulkStatement(
    _enqueue_statement,
    (
        "key",
        "channel",
        "target",
        "kind",
        "payload",
        "bucket",
        "status",
        "attempts",
        "version",
        "next_attempt_at",
        "created_at",
    ),
    placed=True,
)


def enqueue(session: Session, rows: Sequence[NewRow], now: datetime) -> int:
    """Insert rows whose key is new (ON CONFLICT (key) DO NOTHING); return how many were new."""
    if not rows:
        return 0
    session.flush()  # pending ORM changes first, as a statement run through the session would
    values = [
        (
            r.key,
            r.channel,
            r.target,
            r.kind,
            json.dumps(r.payload, ensure_ascii=False),
            r.bucket,
            PENDING,
            0,
            0,
            now,
            now,
        )
        for r in rows
    ]
    return len(_ENQUEUE.returning(session, values))


def due(session: Session, now: datetime, limit: int) -> list[OutboxRow]:
    """Open rows whose time has come (pending and due, or claimed with an expired lease), in
    queue order, leaving out rows queued behind a not-yet-due row of the same bucket (FIFO per
    bucket: the parts of a long message go out in order)."""
    earlier = aliased(OutboxRow)
    blocked = (
        select(col(earlier.id))
        .where(
            col(earlier.bucket) == col(OutboxRow.bucket),
            col(earlier.id) < col(OutboxRow.id),
            col(earlier.status).in_(OPEN),
            col(earlier.next_attempt_at) > now,
        )
        .exists()
    )
    return list(
        session.scalars(
            select(OutboxRow)
            .where(
                col(OutboxRow.status).in_(OPEN),
                col(OutboxRow.next_attempt_at) <= now,
                ~blocked,
            )
            .order_by(col(OutboxRow.id))
            .limit(limit)
        ).all()
    )


def claim(session: Session, row: OutboxRow, now: datetime, lease: timedelta) -> bool:
    """Take ``row`` for sending until ``now + lease``; False if another worker got it first."""
    result = session.execute(
        update(OutboxRow)
        .where(
            col(OutboxRow.id) == row.id,
            col(OutboxRow.version) == row.version,
            col(OutboxRow.status).in_(OPEN),
        )
        .values(
            status=SENDING,
            version=row.version + 1,
            attempts=row.attempts + 1,
            next_attempt_at=now + lease,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def defer(session: Session, row: OutboxRow, at: datetime) -> bool:
    """Move an unclaimed due row to ``at`` (rate limit), without counting an attempt."""
    result = session.execute(
        update(OutboxRow)
        .where(col(OutboxRow.id) == row.id, col(OutboxRow.version) == row.version)
        .values(status=PENDING, version=row.version + 1, next_attempt_at=at)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def renew(session: Session, row_id: int, version: int, until: datetime) -> bool:
    """Extend our claim on a row to ``until``; False if the claim was lost meanwhile."""
    result = session.execute(
        update(OutboxRow)
        .where(
            col(OutboxRow.id) == row_id,
            col(OutboxRow.version) == version,
            col(OutboxRow.status) == SENDING,
        )
        .values(next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def mark_sent(session: Session, row_id: int, version: int, now: datetime, door: str) -> bool:
    """Record a successful send (only if our claim still holds)."""
    result = session.execute(
        update(OutboxRow)
        .where(col(OutboxRow.id) == row_id, col(OutboxRow.version) == version)
        .values(status=SENT, sent_at=now, door=door, last_error=None)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def reschedule(
    session: Session,
    row_id: int,
    version: int,
    at: datetime,
    error: str | None,
    *,
    failed: bool = False,
    refund_attempt: bool = False,
) -> bool:
    """Put a row back to pending for ``at`` (or mark it failed), with the error seen; ``version``
    is the one our claim set (or the one read, for a row failed before any claim)."""
    values: dict[str, Any] = {
        "version": version + 1,  # a stale copy of the row can no longer claim it
        "status": FAILED if failed else PENDING,
        "next_attempt_at": at,
        "last_error": error,
    }
    if refund_attempt:  # deferred without trying (rate limit, ordering): not an attempt
        values["attempts"] = OutboxRow.attempts - 1
    result = session.execute(
        update(OutboxRow)
        .where(col(OutboxRow.id) == row_id, col(OutboxRow.version) == version)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def sent_in_window(session: Session, bucket: str, since: datetime) -> list[datetime]:
    """When the rows of ``bucket`` sent after ``since`` went out, oldest first."""
    return [
        t
        for t in session.scalars(
            select(col(OutboxRow.sent_at))
            .where(
                col(OutboxRow.bucket) == bucket,
                col(OutboxRow.status) == SENT,
                col(OutboxRow.sent_at) > since,
            )
            .order_by(col(OutboxRow.sent_at))
        ).all()
        if t is not None
    ]


def queue_length(session: Session) -> int:
    """Rows not yet sent nor failed (for the ``cohortbot_outbox_queue_length`` gauge)."""
    return int(
        session.scalar(
            select(func.count()).select_from(OutboxRow).where(col(OutboxRow.status).in_(OPEN))
        )
        or 0
    )


def status_counts(session: Session) -> dict[str, int]:
    """How many rows are in each status."""
    rows = session.execute(
        select(col(OutboxRow.status), func.count()).group_by(col(OutboxRow.status))
    ).all()
    return {str(status): int(n) for status, n in rows}


def by_key(session: Session, key: str) -> OutboxRow | None:
    return session.scalars(select(OutboxRow).where(col(OutboxRow.key) == key)).first()


def all_rows(session: Session) -> list[OutboxRow]:
    """Every row in queue order (tests, exports)."""
    return list(session.scalars(select(OutboxRow).order_by(col(OutboxRow.id))).all())
