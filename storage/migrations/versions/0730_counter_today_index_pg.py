"""daily_counter: on PostgreSQL an index that serves the radar's "today's rows of these groups"

Revision ID: 0730
Revises: 0720
Create Date: 2026-11-30 18:00:00.000000

The radar joins every learner with today's counter row. PostgreSQL found those rows with a
parallel sequential scan of the whole table (one day of 28 is 1/28 of it); with ``day`` leading,
and ``member_id`` and the four counts the radar reads included, it reads only today's entries:
an index-only scan where the pages are all-visible (vacuumed), and otherwise today's few recent
heap pages (the counters are written day by day). SQLite has its covering index from 0720.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0730"
down_revision: str | Sequence[str] | None = "0720"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Kept in step with storage.rollup.PG_TODAY_INDEX.
NAME = "ix_daily_counter_day_today"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index(
        NAME,
        "daily_counter",
        ["day", "chat_id", "member_id"],
        postgresql_include=["messages", "chars", "checkins", "reviews_given"],
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index(NAME, table_name="daily_counter")
