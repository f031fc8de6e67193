"""Ingest: store raw events durably, then feed the new ones to the dispatcher.

``ingest`` stores and processes a batch in one transaction (the import door). ``process_pending``
processes what a door stored earlier (the inbox). Either way a batch that fails is retried one
update at a time, so one bad update is recorded with its error and the rest go through.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.clock import Clock, learning_day
from bot.config import Settings
from bot.context import CardMaker, Context, Rewards, no_rewards
from bot.dispatcher import Dispatcher
from bot.outbound import Sender
from bot.updates import Update
from storage import cohort_dates, inbox
from storage.db import Database
from storage.uow import UnitOfWork

log = logging.getLogger(__name__)

#: Rebuilds an update from a stored payload, per door name (doors register theirs here).
PayloadParser = Callable[[str], Update | None]


@dataclass
class IngestResult:
    new: int = 0
    duplicates: int = 0
    failed: int = 0


class Pipeline:
    """Turns stored raw events into handler calls."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        db: Database,
        dispatcher: Dispatcher,
        sender: Sender,
        parsers: dict[str, PayloadParser] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.db = db
        self.dispatcher = dispatcher
        self.sender = sender
        self.parsers = dict(parsers or {})
        self.rewards: Rewards = no_rewards  # the points ledger replaces it (see bot.context)
        self.card_maker: CardMaker | None = None

    def context(self, uow: UnitOfWork, update: Update | None = None) -> Context:
        ctx = Context(
            settings=self.settings,
            clock=self.clock,
            uow=uow,
            sender=self.sender,
            rewards=self.rewards,
            card_maker=self.card_maker,
        )
        if update is not None and update.chat_id:
            group = self.settings.group(update.chat_id)
            if group is not None:
                # 开营/结营 overrides win over the configured dates (cached per unit of work).
                cohort = cohort_dates.effective(uow.writer, self.settings.cohort(group.cohort_id))
                ctx.group, ctx.cohort = group, cohort
                ctx.facts.day = learning_day(update.sent_at, cohort.timezone, cohort.day_start_hour)
        return ctx

    async def _dispatch(self, uow: UnitOfWork, update: Update) -> None:
        await self.dispatcher.feed(update, self.context(uow, update))

    async def ingest(
        self, batch: Sequence[tuple[Update, str]], meanwhile: Callable[[], None] | None = None
    ) -> IngestResult:
        """Store ``(update, raw payload)`` pairs and process the new ones, atomically.

        ``meanwhile`` runs exactly once, overlapping the batch's commit when it can (see
        :meth:`storage.db.Database.unit_of_work`): the import door reads its next batch there.
        It must not raise (an exception from it would count as the batch failing).
        """
        items = [_incoming(u, payload) for u, payload in batch]
        pending = [meanwhile] if meanwhile is not None else []

        def once() -> None:
            while pending:
                pending.pop()()

        try:
            async with self.db.unit_of_work(once if pending else None) as uow:
                new = inbox.store_new(uow.writer, items, self.clock.now(), processed=True)
                for i in new:
                    await self._dispatch(uow, batch[i][0])
            return IngestResult(new=len(new), duplicates=len(batch) - len(new))
        except Exception:
            log.exception("batch of %d failed; retrying one update at a time", len(batch))
        once()
        result = IngestResult()
        for (update, _payload), item in zip(batch, items, strict=True):
            try:
                async with self.db.unit_of_work() as uow:
                    if inbox.store_new(uow.writer, [item], self.clock.now(), processed=True):
                        await self._dispatch(uow, update)
                        result.new += 1
                    else:
                        result.duplicates += 1
            except Exception as exc:
                log.exception("update %s failed", update.message_id)
                result.failed += 1
                async with self.db.unit_of_work() as uow:
                    inbox.store_new(
                        uow.writer, [item], self.clock.now(), processed=True, error=_describe(exc)
                    )
        return result

    async def process_pending(self, limit: int = 500) -> int:
        """Process up to ``limit`` stored, unprocessed events; return how many this process
        handled. Rows are claimed in the transaction that processes them, so two replicas
        never both process one."""
        async with self.db.unit_of_work() as uow:
            rows = list(inbox.pending(uow.writer, limit))
        if not rows:
            return 0
        try:
            async with self.db.unit_of_work() as uow:
                won = inbox.claim(uow.writer, [r.id for r in rows if r.id], self.clock.now())
                for row in rows:
                    if row.id in won:
                        update = self._parse(row)
                        if update is not None:
                            await self._dispatch(uow, update)
            return len(won)
        except Exception:
            log.exception("inbox batch of %d failed; retrying one event at a time", len(rows))
        handled = 0
        for row in rows:
            assert row.id is not None
            try:
                async with self.db.unit_of_work() as uow:
                    if not inbox.claim(uow.writer, [row.id], self.clock.now()):
                        continue
                    update = self._parse(row)
                    if update is not None:
                        await self._dispatch(uow, update)
                    handled += 1
            except Exception as exc:
                log.exception("inbox event %s failed", row.id)
                async with self.db.unit_of_work() as uow:
                    if inbox.claim(uow.writer, [row.id], self.clock.now()):
                        inbox.mark_processed(uow.writer, [row.id], self.clock.now(), _describe(exc))
                        handled += 1
        return handled

    def _parse(self, row: inbox.RawEvent) -> Update | None:
        parser = self.parsers.get(row.door)
        if parser is None:
            raise LookupError(f"no parser for door {row.door!r}")
        return parser(row.payload)


def _incoming(update: Update, payload: str) -> inbox.Incoming:
    return inbox.Incoming(
        door=update.door.value,
        namespace=update.door.namespace,
        event_key=update.message_id,
        payload=payload,
    )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def dumps(raw: object) -> str:
    """The stored form of a decoded payload."""
    return json.dumps(raw, ensure_ascii=False, separators=(",", ":"))
