"""What the dashboard pages show, read from storage (read-only).

- :func:`quiet_list`: the churn radar's flagged learners (SPEC §7), evaluated without writing
  its flag states.
- :func:`pending_redemptions` and :func:`open_offers`: what waits for a teacher (发放, 批准).
- Points come from the ledger (:func:`bot.cards.member.points_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy.orm import Session

from bot.cards.member import points_for
from bot.clock import learning_day
from bot.config import CohortSettings, GroupSettings, Settings
from bot.radar import evaluate
from storage import activity, checkins, cohort_dates, points, roster
from storage import nudges as nudge_store

LEADERBOARD_SIZE = 10


@dataclass(frozen=True)
class MemberRow:
    """One member of a group with their counters (all days summed)."""

    member_id: str
    name: str
    role: str  # 学员 / 班长 / 老师
    left: bool
    messages: int
    chars: int
    checkins: int
    homework: int
    reviews_given: int
    reviews_received: int
    streak: int
    total_checkins: int  # check-in days in the whole cohort (any of its groups)
    days_active: int
    last_seen: date | None  # learning day of the last message


@dataclass(frozen=True)
class QuietMember:
    """A member on the quiet list, with why (the signals column)."""

    member_id: str
    name: str
    days_quiet: int
    never_spoken: bool
    signals: tuple[str, ...]


@dataclass(frozen=True)
class Ranked:
    rank: int
    name: str
    value: int


@dataclass(frozen=True)
class Redemption:
    """A pending redemption (issue 4 fills these)."""

    id: int
    member_name: str
    item: str
    cost: int
    requested_on: date


@dataclass(frozen=True)
class Offer:
    """An open offer to a quiet learner (issue 6 fills these)."""

    member_name: str
    text: str
    proposed_on: date
    status: str  # what the teacher can do about it, in words


@dataclass(frozen=True)
class DayPoint:
    day: date
    active_members: int
    checkins: int


def today_of(cohort: CohortSettings, now: datetime) -> date:
    """The cohort's current learning day."""
    return learning_day(now, cohort.timezone, cohort.day_start_hour)


def _role(group: GroupSettings, member_id: str) -> str:
    if member_id in group.teachers:
        return "老师"
    if member_id in group.leaders:
        return "班长"
    return "学员"


def _local_day(cohort: CohortSettings, moment: datetime | None) -> date | None:
    return None if moment is None else learning_day(moment, cohort.timezone, cohort.day_start_hour)


def members(
    session: Session, settings: Settings, group: GroupSettings, today: date
) -> list[MemberRow]:
    """Every member of the group (former ones flagged), most check-ins first."""
    cohort = cohort_dates.effective(session, settings.cohort(group.cohort_id))
    totals = activity.totals_by_member(session, group.chat_id)
    days = checkins.days_by_member(session, cohort.id)
    rows = []
    for membership, member in roster.members_of(session, group.chat_id):
        t = totals.get(member.id, dict.fromkeys(activity.COUNTER_FIELDS, 0))
        streak = checkins.cohort_streak(days.get(member.id, []), today, cohort)
        rows.append(
            MemberRow(
                member_id=member.id,
                name=member.name or member.id,
                role=_role(group, member.id),
                left=membership.left_at is not None,
                messages=t["messages"],
                chars=t["chars"],
                checkins=t["checkins"],
                homework=t["homework"],
                reviews_given=t["reviews_given"],
                reviews_received=t["reviews_received"],
                streak=streak.current,
                total_checkins=streak.total,
                days_active=membership.days_active,
                last_seen=_local_day(cohort, membership.last_seen_at),
            )
        )
    rows.sort(key=lambda r: (r.left, -r.total_checkins, -r.messages, r.name))
    return rows


def learner_count(session: Session, group: GroupSettings) -> int:
    """Current learners of a group: former members and the group's leaders and teachers are not
    counted (as in the digest's and 统计's headcounts)."""
    staff = {*group.leaders, *group.teachers}
    return sum(
        1
        for m, _ in roster.members_of(session, group.chat_id)
        if m.left_at is None and m.member_id not in staff
    )


def quiet_list(
    session: Session, settings: Settings, chat_id: str, today: date
) -> list[QuietMember]:
    """The churn radar's flagged learners of the group (SPEC §7), highest risk first, with the
    risk level and every signal's explanation. Read-only: the radar's flag states are not
    written from a page view."""
    group = settings.group(chat_id)
    if group is None:
        return []
    cohort = cohort_dates.effective(session, settings.cohort(group.cohort_id))
    radar = evaluate(session, settings, cohort, [chat_id], today, persist=False)[chat_id]
    first_spoken = {
        member.id: membership.first_message_at
        for membership, member in roster.members_of(session, chat_id)
    }
    return [
        QuietMember(
            member_id=m.member_id,
            name=m.name,
            days_quiet=m.days_quiet,
            never_spoken=first_spoken.get(m.member_id) is None,
            signals=(m.level_label, *(f.why for f in m.fired)),
        )
        for m in radar.flagged
    ]


def _ranked(pairs: list[tuple[str, int]]) -> list[Ranked]:
    pairs = [p for p in pairs if p[1] > 0]
    pairs.sort(key=lambda p: (-p[1], p[0]))
    return [Ranked(i + 1, name, value) for i, (name, value) in enumerate(pairs[:LEADERBOARD_SIZE])]


def leaderboards(
    session: Session, settings: Settings, rows: list[MemberRow], cohort_id: str
) -> dict[str, list[Ranked]]:
    """Top learners of the group by check-in days, current streak, reviews and points."""
    learners = [r for r in rows if r.role == "学员" and not r.left]
    return {
        "累计打卡": _ranked([(r.name, r.total_checkins) for r in learners]),
        "连续打卡": _ranked([(r.name, r.streak) for r in learners]),
        "点评之星": _ranked([(r.name, r.reviews_given) for r in learners]),
        "积分": _ranked([(r.name, points_for(session, cohort_id, r.member_id)) for r in learners]),
    }


def pending_redemptions(session: Session, settings: Settings, chat_id: str) -> list[Redemption]:
    """Redemptions waiting for a teacher: those made in this group (or privately by one of its
    members), oldest first."""
    cohort = settings.cohort_of(chat_id)
    if cohort is None:
        return []
    in_group = {m.id for _ms, m in roster.members_of(session, chat_id)}
    rows = [
        r
        for r in points.pending(session, cohort.id)
        if r.chat_id == chat_id or (not r.chat_id and r.member_id in in_group)
    ]
    names = roster.names(session, [r.member_id for r in rows])
    return [
        Redemption(
            id=r.id or 0,
            member_name=names[r.member_id],
            item=r.name,
            cost=r.cost,
            requested_on=learning_day(r.created_at, cohort.timezone, cohort.day_start_hour),
        )
        for r in rows
    ]


def open_offers(session: Session, settings: Settings, chat_id: str) -> list[Offer]:
    """Offers proposed to this group's quiet learners and waiting for a teacher's ``批准``."""
    cohort = settings.cohort_of(chat_id)
    if cohort is None:
        return []
    rows = nudge_store.pending_offers(session, [chat_id])
    names = roster.names(session, [o.member_id for o in rows])
    tiers = {t.id: t.name for t in settings.nudges.offers}  # what the digest calls them
    return [
        Offer(
            member_name=names[o.member_id],
            text=f"#{o.id} {tiers.get(o.tier, o.tier)}",
            proposed_on=learning_day(o.proposed_at, cohort.timezone, cohort.day_start_hour),
            status=f"待批准：在群里回复「批准 {o.id}」",
        )
        for o in rows
    ]


def activity_series(session: Session, chat_id: str, today: date, days: int) -> list[DayPoint]:
    """Active members and check-ins for each of the ``days`` learning days ending ``today``."""
    first = today - timedelta(days=days - 1)
    totals = activity.daily_totals(session, chat_id, first, today)
    out = []
    for i in range(days):
        day = first + timedelta(days=i)
        active, checked = totals.get(day, (0, 0))
        out.append(DayPoint(day, active, checked))
    return out
