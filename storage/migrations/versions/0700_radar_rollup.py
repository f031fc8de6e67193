"""radar rollup: per-learner window summary of the daily counters, kept exact by triggers

Revision ID: 0700
Revises: 0600
Create Date: 2026-11-30 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0700"
down_revision: str | Sequence[str] | None = "0600"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept in step with storage.rollup.ADVISORY_KEY.
ADVISORY_KEY = 0x5241444152

# A counter row that changes on a day the group's rollup already covers marks its
# (group, member) dirty; the next radar pass recomputes that rollup row (storage/rollup.py).
# (SQLite: not INSERT OR IGNORE: the outer upsert's conflict handling would override it.)
SQLITE_TRIGGERS = [
    f"""
    CREATE TRIGGER radar_dirty_{event.lower()} AFTER {event} ON daily_counter
    WHEN {row}.day < (SELECT sealed_before FROM radar_rollup_state WHERE chat_id = {row}.chat_id)
    BEGIN
        INSERT INTO radar_dirty (chat_id, member_id)
        SELECT {row}.chat_id, {row}.member_id
        WHERE NOT EXISTS (
            SELECT 1 FROM radar_dirty WHERE chat_id = {row}.chat_id AND member_id = {row}.member_id
        );
    END
    """
    for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD"))
]

# PostgreSQL: statement-level triggers with transition tables (one call per statement, not per
# row). The shared advisory lock orders them against a rollup rebuild or repair, which takes it
# exclusively: a change is either seen by the rebuild or marked dirty after it.
PG_FUNCTION = f"""
CREATE FUNCTION radar_mark_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared({ADVISORY_KEY});
    INSERT INTO radar_dirty (chat_id, member_id)
    SELECT DISTINCT c.chat_id, c.member_id
    FROM changed c JOIN radar_rollup_state s ON s.chat_id = c.chat_id
    WHERE c.day < s.sealed_before
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$
"""
PG_TRIGGERS = [
    f"""
    CREATE TRIGGER radar_dirty_{event.lower()} AFTER {event} ON daily_counter
    REFERENCING {side} TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION radar_mark_dirty()
    """
    for event, side in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD"))
]


def upgrade() -> None:
    op.create_table(
        "radar_rollup",
        sa.Column("chat_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("member_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("message_mask", sa.BigInteger(), nullable=False),
        sa.Column("checkin_mask", sa.BigInteger(), nullable=False),
        sa.Column("chars_recent", sa.BigInteger(), nullable=False),
        sa.Column("chars_before", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("chat_id", "member_id"),
    )
    op.create_table(
        "radar_rollup_state",
        sa.Column("chat_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("sealed_before", sa.Date(), nullable=False),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("chat_id"),
    )
    op.create_table(
        "radar_dirty",
        sa.Column("chat_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("member_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("chat_id", "member_id"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        for trigger in PG_TRIGGERS:
            op.execute(trigger)
    else:
        for trigger in SQLITE_TRIGGERS:
            op.execute(trigger)


def downgrade() -> None:
    for event in ("insert", "update", "delete"):
        if op.get_bind().dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS radar_dirty_{event} ON daily_counter")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS radar_dirty_{event}")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS radar_mark_dirty()")
    op.drop_table("radar_dirty")
    op.drop_table("radar_rollup_state")
    op.drop_table("radar_rollup")
