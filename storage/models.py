"""Imports every table module so the metadata (and Alembic) knows all tables. Add new ones here."""

from storage import (
    activity,
    checkins,
    cohort_dates,
    doorstate,
    inbox,
    messages,
    milestones,
    nudges,
    outbox,
    points,
    radar,
    reviews,
    rhythm,
    roster,
    schedule,
    streaks,
)

__all__ = [
    "activity",
    "checkins",
    "cohort_dates",
    "doorstate",
    "inbox",
    "messages",
    "milestones",
    "nudges",
    "outbox",
    "points",
    "radar",
    "reviews",
    "rhythm",
    "roster",
    "schedule",
    "streaks",
]
