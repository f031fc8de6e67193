"""daily_counter: on SQLite the (chat_id, day) index also carries what the radar reads of today

Revision ID: 0720
Revises: 0710
Create Date: 2026-11-30 12:00:00.000000

The radar joins every learner with today's counter row. On SQLite that lookup went through the
primary key's index and then the table (two B-tree descents per learner, 200,000 a night); with
``member_id`` and the four counts in the index it is one descent in a covering index. The index
replaces ``ix_daily_counter_chat_day`` (whose two columns stay its prefix, so the queries that
used it still can). PostgreSQL keeps the narrow index: it reads today's rows with a hash join,
and an index-only scan there would depend on the visibility map.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0720"
down_revision: str | Sequence[str] | None = "0710"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Kept in step with storage.rollup.TODAY_INDEX.
COVERING = ["chat_id", "day", "member_id", "messages", "chars", "checkins", "reviews_given"]


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index("ix_daily_counter_chat_day", table_name="daily_counter")
    op.create_index("ix_daily_counter_chat_day_today", "daily_counter", COVERING)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index("ix_daily_counter_chat_day_today", table_name="daily_counter")
    op.create_index("ix_daily_counter_chat_day", "daily_counter", ["chat_id", "day"])
