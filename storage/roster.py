"""Cohorts, groups, members and memberships: who is where, and since when."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, func, literal, select, tuple_, update
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel, col

from bot.config import CohortSettings, Settings
from storage.bulk import BulkStatement
from storage.dialect import insert_for, one_of, upsert_rows
from storage.types import UTCDateTime


class Cohort(SQLModel, table=True):
    """A cohort (期/营); the config is the source of truth, this row mirrors it for SQL joins."""

    __tablename__ = "cohort"
    id: str = Field(primary_key=True)
    course: str
    start_date: date
    length_days: int
    timezone: str


class Group(SQLModel, table=True):
    """A WeCom group chat that belongs to a cohort."""

    __tablename__ = "chat_group"
    chat_id: str = Field(primary_key=True)
    cohort_id: str = Field(foreign_key="cohort.id", index=True)
    name: str = ""


class Member(SQLModel, table=True):
    """A person the bot has seen: staff (internal) or an external contact."""

    __tablename__ = "member"
    id: str = Field(primary_key=True)
    name: str = ""
    kind: str = "external"
    owner_userid: str | None = None  # the staff member who owns an external contact
    created_at: datetime = Field(sa_type=UTCDateTime)


class Membership(SQLModel, table=True):
    """A member in a group: joins, leaves, activity summary (SPEC §2, per membership)."""

    __tablename__ = "membership"
    chat_id: str = Field(primary_key=True, foreign_key="chat_group.chat_id")
    member_id: str = Field(primary_key=True, foreign_key="member.id", index=True)
    joined_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    join_scene: int | None = None
    left_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    first_message_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_seen_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    days_active: int = 0
    intro_done_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def never_spoken(self) -> bool:
        return self.first_message_at is None


def sync_config(session: Session, settings: Settings) -> None:
    """Mirror the configured cohorts and groups into their tables (idempotent)."""
    for cohort in settings.cohorts:
        _sync_cohort(session, cohort)


def _sync_cohort(session: Session, cohort: CohortSettings) -> None:
    values = {
        "id": cohort.id,
        "course": cohort.course,
        "start_date": cohort.start_date,
        "length_days": cohort.length_days,
        "timezone": cohort.timezone.key,
    }
    upsert_rows(session, Cohort, [values], ["id"], update=list(values)[1:])
    rows = [{"chat_id": g.chat_id, "cohort_id": cohort.id, "name": g.name} for g in cohort.groups]
    upsert_rows(session, Group, rows, ["chat_id"], update=["cohort_id", "name"])


def _ensure_member_statement(session: Session) -> Any:
    return insert_for(session, Member).on_conflict_do_nothing(index_elements=["id"])


def _name_member_statement(_session: Session) -> Any:
    table = Member.__table__  # type: ignore[attr-defined]
    return (
        update(table)
        .where(table.c.id == bindparam("mid"), table.c.name != bindparam("mname"))
        .values(name=bindparam("mname"))
    )


def _ensure_membership_statement(session: Session) -> Any:
    return insert_for(session, Membership).on_conflict_do_nothing(
        index_elements=["chat_id", "member_id"]
    )


# Prepared once: these run for every ingest batch (see storage.bulk).
_ENSURE_MEMBERS = BulkStatement(_ensure_member_statement, ("id", "name", "kind", "created_at"))
_NAME_MEMBERS = BulkStatement(_name_member_statement, ("mid", "mname"), column_keys=())
_ENSURE_MEMBERSHIPS = BulkStatement(_ensure_membership_statement, ("chat_id", "member_id"))


def ensure_members(
    session: Session, members: Iterable[tuple[str, str, str]], now: datetime
) -> None:
    """Create members that do not exist yet; fill in a name where we had none.

    ``members`` are ``(id, name, kind)``; an empty name never overwrites a known one.
    """
    rows = {m[0]: {"id": m[0], "name": m[1], "kind": m[2], "created_at": now} for m in members}
    _ENSURE_MEMBERS.execute(session, [rows[k] for k in sorted(rows)])
    named = [{"mid": r["id"], "mname": r["name"]} for r in rows.values() if r["name"]]
    _NAME_MEMBERS.execute(session, named)


def ensure_memberships(session: Session, keys: Iterable[tuple[str, str]]) -> None:
    """Create ``(chat_id, member_id)`` memberships that do not exist yet."""
    rows = [{"chat_id": c, "member_id": m} for c, m in sorted(set(keys))]
    _ENSURE_MEMBERSHIPS.execute(session, rows)


def record_join(
    session: Session, chat_id: str, member_id: str, at: datetime, scene: int | None = None
) -> None:
    """A member joined (or was seeded from the roster): set the join time, clear a leave."""
    ensure_memberships(session, [(chat_id, member_id)])
    session.execute(
        update(Membership)
        .where(col(Membership.chat_id) == chat_id, col(Membership.member_id) == member_id)
        .values(
            # Typed literal: inside coalesce() a bare datetime would skip UTCDateTime's conversion.
            joined_at=func.coalesce(Membership.joined_at, literal(at, UTCDateTime)),
            left_at=None,
            join_scene=func.coalesce(scene, Membership.join_scene),
        )
    )


def record_leave(session: Session, chat_id: str, member_id: str, at: datetime) -> None:
    ensure_memberships(session, [(chat_id, member_id)])
    session.execute(
        update(Membership)
        .where(col(Membership.chat_id) == chat_id, col(Membership.member_id) == member_id)
        .values(left_at=at)
    )


def get_membership(session: Session, chat_id: str, member_id: str) -> Membership | None:
    return session.get(Membership, (chat_id, member_id))


def members_of(session: Session, chat_id: str) -> Sequence[tuple[Membership, Member]]:
    """Every membership of a group with its member, current and former, by join time then id."""
    stmt = (
        select(Membership, Member)
        .join(Member, Member.id == Membership.member_id)  # type: ignore[arg-type]
        .where(col(Membership.chat_id) == chat_id)
        .order_by(col(Membership.joined_at), col(Membership.member_id))
    )
    return [(row[0], row[1]) for row in session.execute(stmt).all()]


def names_in_group(session: Session, chat_id: str) -> list[tuple[str, str]]:
    """``(member id, display name)`` of every member a group has had, by join time then id."""
    stmt = (
        select(col(Member.id), col(Member.name))
        .join(Membership, col(Membership.member_id) == col(Member.id))
        .where(col(Membership.chat_id) == chat_id)
        .order_by(col(Membership.joined_at), col(Membership.member_id))
    )
    return [(member_id, name) for member_id, name in session.execute(stmt).all()]


def names(session: Session, member_ids: Iterable[str]) -> dict[str, str]:
    """Display names by member id (the id itself where no name is known)."""
    ids = list(set(member_ids))
    found = dict(
        session.execute(
            select(col(Member.id), col(Member.name)).where(one_of(session, col(Member.id), ids))
        ).all()
    )
    return {i: (found.get(i) or i) for i in ids}


def membership_keys(session: Session, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """The subset of ``(chat_id, member_id)`` keys that exist."""
    if not keys:
        return set()
    stmt = select(col(Membership.chat_id), col(Membership.member_id)).where(
        tuple_(col(Membership.chat_id), col(Membership.member_id)).in_(keys)
    )
    return {(r[0], r[1]) for r in session.execute(stmt).all()}


def departed(session: Session, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], datetime]:
    """The ``(chat_id, member_id)`` keys whose member has left that group, with when (a rejoin
    clears the leave, see :func:`record_join`)."""
    if not keys:
        return {}
    stmt = select(
        col(Membership.chat_id), col(Membership.member_id), col(Membership.left_at)
    ).where(
        tuple_(col(Membership.chat_id), col(Membership.member_id)).in_(list(keys)),
        col(Membership.left_at).is_not(None),
    )
    return {(c, m): at for c, m, at in session.execute(stmt).all() if at is not None}


def set_owners(session: Session, owners: dict[str, str]) -> None:
    """Record the staff member who owns each external contact, where none is known yet."""
    for member_id, owner in owners.items():
        session.execute(
            update(Member)
            .where(col(Member.id) == member_id, col(Member.owner_userid).is_(None))
            .values(owner_userid=owner)
        )
