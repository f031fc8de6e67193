"""Private nudges, opt-outs and the offers ladder (SPEC §8): every nudge is a row (what, to whom,
which script and variant, when planned and sent, whether it worked), so history, the "never the
same text twice" rule, the per-learner and per-customer limits and effectiveness are queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import NamedTuple

from sqlalchemy import UniqueConstraint, func, select, update
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel, col

from storage.activity import DailyCounter
from storage.dialect import one_of, upsert_rows
from storage.types import UTCDateTime

SCHEDULED = "scheduled"
SENT = "sent"
HELD = "held"  # planned but not deliverable (no owning staff member): digest only
LIMITED = "limited"  # WeCom's per-customer daily limit was used up (e.g. by an offer): not sent,
# and not counted as the learner's nudge, so the next day's plan nudges them again
EXPIRED = "expired"  # its window passed before it could go out

PROPOSED = "proposed"
APPROVED = "approved"
OFFER_SENT = "sent"
WITHDRAWN = "withdrawn"  # lapsed before it was sent (``Offer.withdrawn_reason`` says why)

# Why an offer lapsed (``Offer.withdrawn_reason``).
RECOVERED = "recovered"  # proposed, and the radar no longer flags the learner
LEFT = "left"  # the learner left the group (proposed or approved)
ENDED = "ended"  # approved, but the cohort ended too long ago to send it


class Nudge(SQLModel, table=True):
    """One private nudge (planned, sent or held) to one learner."""

    __tablename__ = "nudge"
    __table_args__ = (UniqueConstraint("chat_id", "member_id", "day", name="uq_nudge_member_day"),)
    id: int | None = Field(default=None, primary_key=True)
    cohort_id: str = Field(index=True)
    chat_id: str = Field(index=True)
    member_id: str = Field(index=True)
    day: date  # learning day it was planned for
    script_id: str
    variant: int
    scenario: str
    stage: str
    level: int
    signals: str = ""
    text: str
    text_hash: str = Field(index=True)
    route: str = ""  # app_message | add_msg_template | none
    status: str = SCHEDULED
    scheduled_at: datetime = Field(sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    worked: bool | None = None
    postcard: int | None = None  # index of the knowledge postcard used, if any


class NudgePref(SQLModel, table=True):
    """A learner's opt-out of private nudges (``免打扰`` / ``恢复提醒``)."""

    __tablename__ = "nudge_pref"
    member_id: str = Field(primary_key=True)
    opted_out: bool = False
    changed_at: datetime = Field(sa_type=UTCDateTime)


class Offer(SQLModel, table=True):
    """A rung of the offers ladder proposed for a learner; sent only after a teacher approves."""

    __tablename__ = "offer"
    id: int | None = Field(default=None, primary_key=True)
    cohort_id: str = Field(index=True)
    chat_id: str = Field(index=True)
    member_id: str = Field(index=True)
    tier: str
    level: int
    status: str = PROPOSED
    proposed_at: datetime = Field(sa_type=UTCDateTime)
    approved_by: str | None = None
    approved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    withdrawn_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    withdrawn_reason: str | None = None  # RECOVERED | LEFT | ENDED


# --- opt-out -----------------------------------------------------------------------------------


def set_opt_out(session: Session, member_id: str, opted_out: bool, now: datetime) -> None:
    upsert_rows(
        session,
        NudgePref,
        [{"member_id": member_id, "opted_out": opted_out, "changed_at": now}],
        ["member_id"],
        update=["opted_out", "changed_at"],
    )


def opted_out(session: Session, member_ids: Sequence[str] | None = None) -> set[str]:
    stmt = select(col(NudgePref.member_id)).where(col(NudgePref.opted_out).is_(True))
    if member_ids is not None:
        stmt = stmt.where(one_of(session, col(NudgePref.member_id), member_ids))
    return set(session.scalars(stmt).all())


# --- nudges ------------------------------------------------------------------------------------


def add(session: Session, nudge: Nudge) -> Nudge:
    session.add(nudge)
    session.flush()
    return nudge


def of_groups_between(
    session: Session, chat_ids: Sequence[str], since: datetime, until: datetime
) -> Sequence[Nudge]:
    """Nudges of these groups sent, held or stopped by the limit with ``scheduled_at`` in
    ``[since, until)``."""
    stmt = (
        select(Nudge)
        .where(
            one_of(session, col(Nudge.chat_id), chat_ids),
            col(Nudge.scheduled_at) >= since,
            col(Nudge.scheduled_at) < until,
            col(Nudge.status).in_([SENT, HELD, LIMITED]),
        )
        .order_by(col(Nudge.scheduled_at), col(Nudge.id))
    )
    return session.scalars(stmt).all()


def latest_per_member(session: Session, chat_ids: Sequence[str]) -> dict[tuple[str, str], Nudge]:
    """The most recent *settled* sent nudge of each learner in these groups (``worked``
    decided), for the radar's "ignored the last nudge". Not simply the latest: nudges go out
    every ``min_days_between`` (3) days and settle after 72 h, so at digest time the latest is
    nearly always today's, still open, and the signal could never fire."""
    sub = (
        select(func.max(col(Nudge.id)))
        .where(
            one_of(session, col(Nudge.chat_id), chat_ids),
            col(Nudge.status) == SENT,
            col(Nudge.worked).is_not(None),
        )
        .group_by(col(Nudge.chat_id), col(Nudge.member_id))
    )
    rows = session.scalars(select(Nudge).where(col(Nudge.id).in_(sub))).all()
    return {(n.chat_id, n.member_id): n for n in rows}


def last_nudge_day(session: Session, member_ids: Sequence[str]) -> dict[str, date]:
    """The learning day of each learner's latest planned, sent or held nudge, in any group
    (one that expired or met the per-customer limit was never sent: it does not count)."""
    stmt = (
        select(col(Nudge.member_id), func.max(col(Nudge.day)))
        .where(
            one_of(session, col(Nudge.member_id), member_ids),
            col(Nudge.status).not_in([EXPIRED, LIMITED]),
        )
        .group_by(col(Nudge.member_id))
    )
    return {member_id: at for member_id, at in session.execute(stmt).all()}


def used_texts(session: Session, member_id: str) -> tuple[set[tuple[str, int]], set[str]]:
    """The (script id, variant) pairs and text hashes this learner has already received."""
    rows = session.execute(
        select(col(Nudge.script_id), col(Nudge.variant), col(Nudge.text_hash)).where(
            col(Nudge.member_id) == member_id
        )
    ).all()
    return {(s, v) for s, v, _ in rows}, {h for _, _, h in rows}


def used_postcards(session: Session, member_id: str) -> set[int]:
    rows = session.scalars(
        select(col(Nudge.postcard)).where(
            col(Nudge.member_id) == member_id, col(Nudge.postcard).is_not(None)
        )
    ).all()
    return {int(r) for r in rows if r is not None}


class History(NamedTuple):
    """What a learner has already received: :func:`used_texts` and :func:`used_postcards`."""

    used: set[tuple[str, int]]
    hashes: set[str]
    postcards: set[int]


def histories(session: Session, member_ids: Sequence[str]) -> dict[str, History]:
    """:class:`History` of many learners (every one of ``member_ids``), in one query per 5,000."""
    ids = list(set(member_ids))
    out = {m: History(set(), set(), set()) for m in ids}
    for start in range(0, len(ids), 5000):
        stmt = select(
            col(Nudge.member_id),
            col(Nudge.script_id),
            col(Nudge.variant),
            col(Nudge.text_hash),
            col(Nudge.postcard),
        ).where(one_of(session, col(Nudge.member_id), ids[start : start + 5000]))
        for member_id, script_id, variant, hash_, postcard in session.execute(stmt).all():
            h = out[member_id]
            h.used.add((script_id, variant))
            h.hashes.add(hash_)
            if postcard is not None:
                h.postcards.add(int(postcard))
    return out


def of_day(session: Session, chat_ids: Sequence[str], day: date) -> Sequence[Nudge]:
    """Nudges of these groups planned for a learning day (any status but expired)."""
    return session.scalars(
        select(Nudge).where(
            one_of(session, col(Nudge.chat_id), chat_ids),
            col(Nudge.day) == day,
            col(Nudge.status) != EXPIRED,
        )
    ).all()


def planned_on(session: Session, chat_id: str, day: date) -> dict[str, Nudge]:
    """Nudges planned for a group on a learning day, by member."""
    rows = session.scalars(
        select(Nudge).where(col(Nudge.chat_id) == chat_id, col(Nudge.day) == day)
    ).all()
    return {n.member_id: n for n in rows}


def next_due(session: Session) -> datetime | None:
    """When the earliest scheduled nudge is due (for a one-shot scheduler trigger)."""
    return session.scalar(
        select(func.min(col(Nudge.scheduled_at))).where(col(Nudge.status) == SCHEDULED)
    )


def due(session: Session, now: datetime) -> Sequence[Nudge]:
    """Scheduled nudges whose time has come."""
    stmt = (
        select(Nudge)
        .where(col(Nudge.status) == SCHEDULED, col(Nudge.scheduled_at) <= now)
        .order_by(col(Nudge.scheduled_at), col(Nudge.id))
    )
    return session.scalars(stmt).all()


def mark(session: Session, nudge_id: int, status: str, sent_at: datetime | None = None) -> None:
    session.execute(
        update(Nudge).where(col(Nudge.id) == nudge_id).values(status=status, sent_at=sent_at)
    )


def templates_sent_on(session: Session, member_id: str, since: datetime, until: datetime) -> int:
    """add_msg_template tasks created for one external customer in ``[since, until)``: nudges
    and offers both count against WeCom's per-customer limit."""
    n = session.scalar(
        select(func.count())
        .select_from(Nudge)
        .where(
            col(Nudge.member_id) == member_id,
            col(Nudge.route) == "add_msg_template",
            col(Nudge.status) == SENT,
            col(Nudge.sent_at) >= since,
            col(Nudge.sent_at) < until,
        )
    )
    o = session.scalar(
        select(func.count())
        .select_from(Offer)
        .where(
            col(Offer.member_id) == member_id,
            col(Offer.status) == OFFER_SENT,
            col(Offer.sent_at) >= since,
            col(Offer.sent_at) < until,
        )
    )
    return int(n or 0) + int(o or 0)


def settle_effectiveness(session: Session, now: datetime, hours: int) -> int:
    """Decide ``worked`` for sent nudges still open: True as soon as the learner is active
    (a message or a check-in, in any group) after the send and within ``hours``; False once
    ``hours`` have passed without. Reads the counters' first/last times, never messages."""
    open_ = session.scalars(
        select(Nudge).where(col(Nudge.status) == SENT, col(Nudge.worked).is_(None))
    ).all()
    changed = 0
    t = DailyCounter.__table__  # type: ignore[attr-defined]
    for n in open_:
        assert n.sent_at is not None
        end = n.sent_at + timedelta(hours=hours)
        hit = session.execute(
            select(t.c.day)
            .where(
                t.c.member_id == n.member_id,
                t.c.day >= n.day,
                (t.c.messages > 0) | (t.c.checkins > 0),
                t.c.last_at > n.sent_at,
                t.c.first_at <= end,
            )
            .limit(1)
        ).first()
        if hit is not None:
            n.worked = True
        elif now >= end:
            n.worked = False
        else:
            continue
        changed += 1
    session.flush()
    return changed


def all_sent(session: Session, cohort_id: str | None = None) -> Sequence[Nudge]:
    stmt = select(Nudge).where(col(Nudge.status).in_([SENT, HELD])).order_by(col(Nudge.id))
    if cohort_id:
        stmt = stmt.where(col(Nudge.cohort_id) == cohort_id)
    return session.scalars(stmt).all()


def success_rates(
    session: Session, chat_ids: Sequence[str] | None = None, cohort_id: str | None = None
) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
    """``(by_script, by_stage)``: each maps to ``(worked, decided)`` over settled sent nudges
    (of these groups, of this cohort, or all)."""
    stmt = select(col(Nudge.script_id), col(Nudge.stage), col(Nudge.worked)).where(
        col(Nudge.status) == SENT, col(Nudge.worked).is_not(None)
    )
    if chat_ids is not None:
        stmt = stmt.where(one_of(session, col(Nudge.chat_id), chat_ids))
    if cohort_id is not None:
        stmt = stmt.where(col(Nudge.cohort_id) == cohort_id)
    by_script: dict[str, tuple[int, int]] = {}
    by_stage: dict[str, tuple[int, int]] = {}
    for script_id, stage, worked in session.execute(stmt).all():
        for table, key in ((by_script, script_id), (by_stage, stage)):
            w, n = table.get(key, (0, 0))
            table[key] = (w + (1 if worked else 0), n + 1)
    return by_script, by_stage


def success_rates_by_chat(
    session: Session, chat_ids: Sequence[str]
) -> dict[str, tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]]:
    """:func:`success_rates` for each group, in one query."""
    stmt = select(
        col(Nudge.chat_id), col(Nudge.script_id), col(Nudge.stage), col(Nudge.worked)
    ).where(
        col(Nudge.status) == SENT,
        col(Nudge.worked).is_not(None),
        one_of(session, col(Nudge.chat_id), chat_ids),
    )
    out: dict[str, tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]] = {}
    for chat_id, script_id, stage, worked in session.execute(stmt).all():
        by_script, by_stage = out.setdefault(chat_id, ({}, {}))
        for table, key in ((by_script, script_id), (by_stage, stage)):
            w, n = table.get(key, (0, 0))
            table[key] = (w + (1 if worked else 0), n + 1)
    return out


# --- offers ------------------------------------------------------------------------------------


def offers_of(session: Session, member_id: str, cohort_id: str) -> Sequence[Offer]:
    return session.scalars(
        select(Offer).where(col(Offer.member_id) == member_id, col(Offer.cohort_id) == cohort_id)
    ).all()


def offers_by_member(
    session: Session, member_ids: Sequence[str], cohort_id: str
) -> dict[str, list[Offer]]:
    """:func:`offers_of` of many learners (every one of ``member_ids``), in one query per 5,000."""
    ids = list(set(member_ids))
    out: dict[str, list[Offer]] = {m: [] for m in ids}
    for start in range(0, len(ids), 5000):
        stmt = (
            select(Offer)
            .where(
                one_of(session, col(Offer.member_id), ids[start : start + 5000]),
                col(Offer.cohort_id) == cohort_id,
            )
            .order_by(col(Offer.id))
        )
        for offer in session.scalars(stmt).all():
            out[offer.member_id].append(offer)
    return out


def pending_offers(session: Session, chat_ids: Sequence[str]) -> Sequence[Offer]:
    return session.scalars(
        select(Offer)
        .where(one_of(session, col(Offer.chat_id), chat_ids), col(Offer.status) == PROPOSED)
        .order_by(col(Offer.id))
    ).all()


def open_offers(
    session: Session, chat_ids: Sequence[str], member_ids: Sequence[str] | None = None
) -> Sequence[Offer]:
    """Offers of these groups (and learners) not yet sent nor withdrawn (proposed or
    approved), oldest first."""
    stmt = select(Offer).where(
        one_of(session, col(Offer.chat_id), chat_ids),
        col(Offer.status).in_([PROPOSED, APPROVED]),
    )
    if member_ids is not None:
        stmt = stmt.where(one_of(session, col(Offer.member_id), member_ids))
    return session.scalars(stmt.order_by(col(Offer.id))).all()


def withdraw(offer: Offer, reason: str, now: datetime) -> None:
    """Let an offer lapse (it is no longer listed, approved or sent)."""
    offer.status = WITHDRAWN
    offer.withdrawn_reason = reason
    offer.withdrawn_at = now


def approved_unsent(session: Session) -> Sequence[Offer]:
    return session.scalars(
        select(Offer).where(col(Offer.status) == APPROVED).order_by(col(Offer.id))
    ).all()


def get_offer(session: Session, offer_id: int) -> Offer | None:
    return session.get(Offer, offer_id)
