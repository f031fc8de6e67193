"""message: drop ix_message_chat_sender_day; (chat_id, sent_at) serves every message query

Each imported message wrote two random-access index entries besides its key; one index on
(chat_id, sent_at) answers a member's recent messages (a sent_at range, then the sender) and a
member's messages of one learning day (storage.messages bounds that day's sent_at range), and the
queries that filter a group's messages by day alone used only the chat_id prefix of either index.

Revision ID: 0710
Revises: 0700
Create Date: 2026-11-29 07:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0710"
down_revision: str | Sequence[str] | None = "0700"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_message_chat_sender_day", table_name="message")


def downgrade() -> None:
    op.create_index(
        "ix_message_chat_sender_day", "message", ["chat_id", "sender_id", "day"], unique=False
    )
