"""Housekeeping: message-text retention (SPEC §2: text kept a configurable number of days)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from bot.clock import Clock
from bot.config import Settings
from storage import inbox, messages
from storage.db import Database


@dataclass(frozen=True)
class PurgeResult:
    messages: int
    payloads: int


def purge_old_text(db: Database, settings: Settings, clock: Clock) -> PurgeResult:
    """Blank message text and raw payloads older than ``message_retention_days``; counters stay."""
    before = clock.now() - timedelta(days=settings.message_retention_days)
    with db.unit_of_work_sync() as uow:
        return PurgeResult(
            messages=messages.purge_text(uow.session, before),
            payloads=inbox.purge_payloads(uow.session, before),
        )
