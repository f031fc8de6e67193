"""The group's rhythm (SPEC §6): pool rotation, games, pending welcomes, icebreaker invitations."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import UniqueConstraint, func, select, update
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel, col

from storage.dialect import upsert_rows
from storage.messages import Message
from storage.roster import Member, Membership
from storage.types import UTCDateTime


class PoolUse(SQLModel, table=True):
    """An item of a content pool (topics, riddles) used in a group, in a rotation cycle."""

    __tablename__ = "pool_use"
    __table_args__ = (UniqueConstraint("chat_id", "pool", "cycle", "item_id", name="uq_pool_use"),)
    id: int | None = Field(default=None, primary_key=True)
    chat_id: str
    pool: str
    cycle: int
    item_id: str
    used_at: datetime = Field(sa_type=UTCDateTime)


class Game(SQLModel, table=True):
    """A posted riddle or quiz: open until revealed; the first correct answer wins."""

    __tablename__ = "game"
    id: int | None = Field(default=None, primary_key=True)
    chat_id: str = Field(index=True)
    kind: str
    item_id: str
    question: str
    answers: str  # JSON list of accepted answers (the first is the one revealed)
    posted_at: datetime = Field(sa_type=UTCDateTime)
    reveal_at: datetime = Field(sa_type=UTCDateTime)
    winner_id: str | None = None
    won_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revealed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def answer_list(self) -> list[str]:
        return [str(a) for a in json.loads(self.answers)]


class PendingWelcome(SQLModel, table=True):
    """A newcomer not welcomed yet; welcomes are batched per group."""

    __tablename__ = "pending_welcome"
    chat_id: str = Field(primary_key=True)
    member_id: str = Field(primary_key=True)
    joined_at: datetime = Field(sa_type=UTCDateTime)
    welcomed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Invitation(SQLModel, table=True):
    """When a never-spoken member was last invited by name in an icebreaker."""

    __tablename__ = "invitation"
    chat_id: str = Field(primary_key=True)
    member_id: str = Field(primary_key=True)
    invited_at: datetime = Field(sa_type=UTCDateTime)


# --- pools ----------------------------------------------------------------------------------


def next_from_pool(
    session: Session, chat_id: str, pool: str, item_ids: Sequence[str], now: datetime
) -> str:
    """Take the next item of a pool for a group: no repeat until every item has been used, then
    a new cycle in a new order (the order is a fixed shuffle per group, pool and cycle)."""
    if not item_ids:
        raise ValueError(f"pool {pool!r} is empty")
    cycle = session.scalar(
        select(func.max(PoolUse.cycle)).where(
            col(PoolUse.chat_id) == chat_id, col(PoolUse.pool) == pool
        )
    )
    cycle = int(cycle or 0)
    used = set(
        session.scalars(
            select(col(PoolUse.item_id)).where(
                col(PoolUse.chat_id) == chat_id,
                col(PoolUse.pool) == pool,
                col(PoolUse.cycle) == cycle,
            )
        ).all()
    )
    remaining = [i for i in item_ids if i not in used]
    if not remaining:
        cycle += 1
        remaining = list(item_ids)
    order = sorted(remaining)
    random.Random(f"{chat_id}:{pool}:{cycle}").shuffle(order)
    item = order[0]
    session.add(PoolUse(chat_id=chat_id, pool=pool, cycle=cycle, item_id=item, used_at=now))
    session.flush()
    return item


def use_count(session: Session, chat_id: str, pool: str) -> int:
    """How many times a group has drawn from a pool, over every cycle."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(PoolUse)
            .where(col(PoolUse.chat_id) == chat_id, col(PoolUse.pool) == pool)
        )
        or 0
    )


# --- games ----------------------------------------------------------------------------------


def open_game(session: Session, chat_id: str) -> Game | None:
    """The group's unrevealed game, if any (the newest)."""
    stmt = (
        select(Game)
        .where(col(Game.chat_id) == chat_id, col(Game.revealed_at).is_(None))
        .order_by(col(Game.posted_at).desc(), col(Game.id).desc())
    )
    return session.scalars(stmt).first()


def open_games(session: Session) -> dict[str, Game]:
    """Every group's unrevealed game (the newest, as :func:`open_game`), by chat id: one query
    for a whole ingest batch."""
    stmt = (
        select(Game)
        .where(col(Game.revealed_at).is_(None))
        .order_by(col(Game.posted_at).desc(), col(Game.id).desc())
    )
    found: dict[str, Game] = {}
    for game in session.scalars(stmt):
        found.setdefault(game.chat_id, game)
    return found


def set_winner(session: Session, game_id: int, member_id: str, at: datetime) -> bool:
    """Record the first correct answer; False when someone won already."""
    result = session.execute(
        update(Game)
        .where(col(Game.id) == game_id, col(Game.winner_id).is_(None))
        .values(winner_id=member_id, won_at=at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_revealed(session: Session, game_id: int, at: datetime) -> bool:
    """Close a game; False when it was revealed already."""
    result = session.execute(
        update(Game)
        .where(col(Game.id) == game_id, col(Game.revealed_at).is_(None))
        .values(revealed_at=at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# --- welcomes -------------------------------------------------------------------------------


def add_pending_welcomes(
    session: Session, chat_id: str, member_ids: Sequence[str], at: datetime
) -> None:
    """Queue newcomers for the group's next welcome (a member already queued keeps the place)."""
    rows = [{"chat_id": chat_id, "member_id": m, "joined_at": at} for m in member_ids]
    upsert_rows(session, PendingWelcome, rows, ["chat_id", "member_id"])


def take_pending_welcomes(session: Session, chat_id: str, now: datetime) -> list[str]:
    """Newcomers of a group still waiting for a welcome (and still in it), marked welcomed."""
    stmt = (
        select(col(PendingWelcome.member_id))
        .join(
            Membership,
            (col(Membership.chat_id) == col(PendingWelcome.chat_id))
            & (col(Membership.member_id) == col(PendingWelcome.member_id)),
        )
        .where(
            col(PendingWelcome.chat_id) == chat_id,
            col(PendingWelcome.welcomed_at).is_(None),
            col(Membership.left_at).is_(None),
        )
        .order_by(col(PendingWelcome.joined_at), col(PendingWelcome.member_id))
    )
    ids = [str(m) for m in session.scalars(stmt).all()]
    session.execute(
        update(PendingWelcome)
        .where(col(PendingWelcome.chat_id) == chat_id, col(PendingWelcome.welcomed_at).is_(None))
        .values(welcomed_at=now)
    )
    return ids


# --- invitations ----------------------------------------------------------------------------


def invitable(
    session: Session,
    chat_id: str,
    not_since: datetime,
    exclude: Sequence[str],
    limit: int,
) -> list[tuple[str, str]]:
    """Never-spoken current members of a group not invited since ``not_since``: ``(id, name)``,
    longest-waiting first."""
    if limit <= 0:
        return []
    stmt = (
        select(col(Member.id), col(Member.name))
        .join(Membership, col(Membership.member_id) == col(Member.id))
        .outerjoin(
            Invitation,
            (col(Invitation.chat_id) == col(Membership.chat_id))
            & (col(Invitation.member_id) == col(Membership.member_id)),
        )
        .where(
            col(Membership.chat_id) == chat_id,
            col(Membership.left_at).is_(None),
            col(Membership.first_message_at).is_(None),
            col(Member.id).not_in(list(exclude)),
            (col(Invitation.invited_at).is_(None)) | (col(Invitation.invited_at) <= not_since),
        )
        .order_by(
            col(Invitation.invited_at).is_not(None), col(Membership.joined_at), col(Member.id)
        )
        .limit(limit)
    )
    return [(str(r[0]), str(r[1] or r[0])) for r in session.execute(stmt).all()]


def record_invitations(
    session: Session, chat_id: str, member_ids: Sequence[str], at: datetime
) -> None:
    """Remember that these members were just invited by name."""
    rows = [{"chat_id": chat_id, "member_id": m, "invited_at": at} for m in member_ids]
    upsert_rows(session, Invitation, rows, ["chat_id", "member_id"], update=["invited_at"])


# --- recaps ---------------------------------------------------------------------------------


def window_messages(
    session: Session, chat_id: str, since: datetime, until: datetime
) -> Sequence[Message]:
    """A group's messages sent in ``[since, until)``, oldest first, without recalled ones."""
    stmt = (
        select(Message)
        .where(
            col(Message.chat_id) == chat_id,
            col(Message.sent_at) >= since,
            col(Message.sent_at) < until,
            col(Message.recalled).is_(False),
        )
        .order_by(col(Message.sent_at), col(Message.id))
    )
    return session.scalars(stmt).all()
