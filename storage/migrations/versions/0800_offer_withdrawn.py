"""offer: withdrawn offers (when and why a proposal or an approval lapsed)

Revision ID: 0800
Revises: 0730
Create Date: 2026-12-01 10:00:00.000000

An offer whose learner recovered (no longer flagged) or left the group is withdrawn
(``status = 'withdrawn'``) instead of staying open until the end of the cohort; the two
columns say when and why (``recovered``, ``left``, ``ended``), so ``批准`` can tell the teacher.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import storage.types

revision: str = "0800"
down_revision: str | Sequence[str] | None = "0730"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("offer", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("withdrawn_at", storage.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("withdrawn_reason", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("offer", schema=None) as batch_op:
        batch_op.drop_column("withdrawn_reason")
        batch_op.drop_column("withdrawn_at")
