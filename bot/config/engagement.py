"""Points, peer reviews, the shop and streak care (SPEC §3-§5)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from bot.config.reader import ConfigError, Reader, read_fraction, read_optional_date

#: SPEC §4 defaults: milestone day -> bonus points.
DEFAULT_MILESTONE_BONUS: dict[int, int] = {7: 10, 14: 20, 21: 30, 28: 50}


@dataclass(frozen=True)
class PointsSettings:
    """Points rules (SPEC §4): what each action earns and how much of it one learning day may pay.

    ``daily_caps`` maps a ledger reason (``checkin``, ``intro``, ``review``, ``quiz``) to the most
    points that reason may pay one learner on one learning day (0: no cap).
    """

    checkin: int = 2
    self_intro: int = 5
    review: int = 10
    quiz: int = 3
    milestone_bonus: Mapping[int, int] = field(
        default_factory=lambda: dict(DEFAULT_MILESTONE_BONUS)
    )
    daily_caps: Mapping[str, int] = field(
        # Reviews are capped by count instead: [reviews].daily_cap.
        default_factory=lambda: {"checkin": 2, "intro": 5, "review": 0, "quiz": 30}
    )
    manual_max: int = 1000  # the most one 加分/扣分 may move


#: The ledger reasons a ``[points.daily_caps]`` entry may cap (what a learner earns by acting).
CAPPED_REASONS = ("checkin", "intro", "milestone", "review", "quiz")


@dataclass(frozen=True)
class ReviewSettings:
    """Peer review (点评) rules and anti-cheat thresholds (SPEC §4.1)."""

    min_chars: int = 80
    consider_from_chars: int = 20  # an implicit (quote/@) message shorter than this is just chat
    daily_cap: int = 3
    similarity_threshold: float = 0.6
    recent_count: int = 20
    recent_days: int = 14
    min_distinct_ratio: float = 0.3  # distinct tokens / tokens below this is padding


@dataclass(frozen=True)
class CatalogItem:
    """One thing learners can redeem points for (SPEC §4 catalog)."""

    sku: str
    name: str
    cost: int
    stock: int
    per_learner: int = 1
    starts: date | None = None
    ends: date | None = None
    cohorts: tuple[str, ...] = ()  # the cohorts it is offered to; empty: every cohort

    def offered_to(self, cohort_id: str) -> bool:
        return not self.cohorts or cohort_id in self.cohorts

    def active_on(self, day: date) -> bool:
        return (self.starts is None or self.starts <= day) and (
            self.ends is None or day <= self.ends
        )


@dataclass(frozen=True)
class StreakSettings:
    """Make-up cards, milestone basis and the streak-at-risk reminder (SPEC §3, §5)."""

    makeup_cards: int = 2
    milestone_basis: str = "streak"  # "streak" or "total" check-in days
    reminder_time: str = "20:30"  # local time of the cohort
    reminder_channel: str = "group"  # "group" (one @-message per group) or "private"
    reminder_min_streak: int = 3

    @property
    def reminder_hour_minute(self) -> tuple[int, int]:
        hour, minute = self.reminder_time.split(":")
        return int(hour), int(minute)


def parse_points(r: Reader) -> PointsSettings:
    d = PointsSettings()
    bonus_table = r.table("milestone_bonus")
    bonus: dict[int, int] = {}
    if bonus_table.data:
        for key in bonus_table.data:
            if not str(key).isdigit():
                raise ConfigError(f"{bonus_table.key(str(key))}: expected a milestone day number")
            bonus[int(key)] = bonus_table.int_(str(key), lo=0, hi=100_000)
    else:
        bonus = dict(d.milestone_bonus)
    caps_table = r.table("daily_caps")
    caps = dict(d.daily_caps)
    for reason in CAPPED_REASONS:
        caps[reason] = caps_table.int_(reason, caps.get(reason, 0), lo=0, hi=100_000)
    caps_table.finish()  # "self_intro = 0" is refused (did you mean 'intro'?), not ignored
    out = PointsSettings(
        checkin=r.int_("checkin", d.checkin, 0, 10_000),
        self_intro=r.int_("self_intro", d.self_intro, 0, 10_000),
        review=r.int_("review", d.review, 0, 10_000),
        quiz=r.int_("quiz", d.quiz, 0, 10_000),
        milestone_bonus=bonus,
        daily_caps=caps,
        manual_max=r.int_("manual_max", d.manual_max, 1, 1_000_000),
    )
    r.finish()
    return out


def parse_reviews(r: Reader) -> ReviewSettings:
    d = ReviewSettings()
    out = ReviewSettings(
        min_chars=r.int_("min_chars", d.min_chars, 1, 10_000),
        consider_from_chars=r.int_("consider_from_chars", d.consider_from_chars, 0, 10_000),
        daily_cap=r.int_("daily_cap", d.daily_cap, 0, 1000),
        similarity_threshold=read_fraction(r, "similarity_threshold", d.similarity_threshold),
        recent_count=r.int_("recent_count", d.recent_count, 0, 1000),
        recent_days=r.int_("recent_days", d.recent_days, 0, 3650),
        min_distinct_ratio=read_fraction(r, "min_distinct_ratio", d.min_distinct_ratio),
    )
    r.finish()
    return out


def read_offered_to(r: Reader, cohort_ids: Sequence[str]) -> tuple[str, ...]:
    offered = tuple(r.str_list("cohorts", []))
    for cohort_id in offered:
        if cohort_id not in cohort_ids:
            raise ConfigError(f"{r.key('cohorts')}: no cohort has id {cohort_id!r}")
    return offered


def parse_catalog(shop: Reader, cohort_ids: Sequence[str]) -> tuple[CatalogItem, ...]:
    items: list[CatalogItem] = []
    for r in shop.tables("items"):
        sku = r.str_("sku")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,20}", sku):
            raise ConfigError(f"{r.key('sku')}: {sku!r} may use only letters, digits, _ and -")
        if any(i.sku.lower() == sku.lower() for i in items):
            raise ConfigError(f"{r.key('sku')}: {sku!r} is used twice")
        items.append(
            CatalogItem(
                sku=sku,
                name=r.str_("name"),
                cost=r.int_("cost", lo=1, hi=1_000_000),
                stock=r.int_("stock", lo=0, hi=1_000_000),
                per_learner=r.int_("per_learner", 1, 1, 1000),
                starts=read_optional_date(r, "starts"),
                ends=read_optional_date(r, "ends"),
                cohorts=read_offered_to(r, cohort_ids),
            )
        )
        r.finish()
    shop.finish()
    return tuple(items)


def parse_streaks(r: Reader) -> StreakSettings:
    d = StreakSettings()
    basis = r.str_("milestone_basis", d.milestone_basis)
    if basis not in ("streak", "total"):
        raise ConfigError(f"{r.key('milestone_basis')}: expected 'streak' or 'total'")
    at = r.str_("reminder_time", d.reminder_time)
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", at)
    if m is None:
        raise ConfigError(f"{r.key('reminder_time')}: {at!r} is not a time (HH:MM)")
    channel = r.str_("reminder_channel", d.reminder_channel)
    if channel not in ("group", "private"):
        raise ConfigError(f"{r.key('reminder_channel')}: expected 'group' or 'private'")
    out = StreakSettings(
        makeup_cards=r.int_("makeup_cards", d.makeup_cards, 0, 100),
        milestone_basis=basis,
        reminder_time=at,
        reminder_channel=channel,
        reminder_min_streak=r.int_("reminder_min_streak", d.reminder_min_streak, 1, 1000),
    )
    r.finish()
    return out
