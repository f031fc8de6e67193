"""Housekeeping: message-text retention (SPEC §2: text kept a configurable number of days)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.app import payload_parsers
from bot.clock import Clock
from bot.config import Settings
from bot.pipeline import PayloadParser
from storage import inbox, messages
from storage.db import Database


@dataclass(frozen=True)
class PurgeResult:
    messages: int
    payloads: int


def purge_old_text(
    db: Database,
    settings: Settings,
    clock: Clock,
    parsers: Mapping[str, PayloadParser] | None = None,
) -> PurgeResult:
    """Blank message text and raw payloads of messages older than ``message_retention_days``;
    counters stay. A raw event's age is its message's: the stored message's sent time, else the
    time its payload says (``parsers``, default the app's: an imported private chat), else when
    it was received."""
    before = clock.now() - timedelta(days=settings.message_retention_days)
    parsers = payload_parsers() if parsers is None else parsers
    with db.unit_of_work_sync() as uow:
        texts = messages.purge_text(uow.session, before)
        payloads = inbox.purge_payloads(uow.session, before)
        undated = inbox.undated_payloads(uow.session, before)
        old = [i for i, door, payload in undated if _sent_before(parsers, door, payload, before)]
        payloads += inbox.blank_payloads(uow.session, old)
    return PurgeResult(messages=texts, payloads=payloads)


def _sent_before(
    parsers: Mapping[str, PayloadParser], door: str, payload: str, before: datetime
) -> bool:
    parser = parsers.get(door)
    try:
        update = parser(payload) if parser is not None else None
    except Exception:  # a payload its door no longer reads: dated by when it was received
        return False
    return update is not None and update.sent_at < before
