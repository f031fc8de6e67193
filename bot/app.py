"""Wiring: the one place handler modules are included, and the long-lived services they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time

from bot.clock import Clock, SystemClock
from bot.config import Settings
from bot.context import CardMaker
from bot.dispatcher import Dispatcher
from bot.doors import aibot, archive, robot
from bot.doors import app as app_door
from bot.jobs import DailyJob, JobFn, per_cohort
from bot.outbound import RecordingSender, Sender
from bot.pipeline import PayloadParser, Pipeline
from bot.updates import Door
from handlers import (
    activity,
    checkins,
    commands,
    digest,
    leaderboards,
    milestones,
    points,
    reviews,
    rhythm,
    roster,
    shop,
    stats,
    streaks,
)
from handlers import nudges as nudge_handlers
from storage import roster as roster_store
from storage.db import Database, DatabaseUnavailableError, require_existing


def build_dispatcher() -> Dispatcher:
    """Every handler module, in the order they see each update."""
    dispatcher = Dispatcher()
    dispatcher.include(
        roster.router,  # joins and leaves
        activity.router,  # counts the message first: later handlers may read it back
        checkins.router,
        points.router,  # pays check-ins (after checkins: reads facts.checkin_id)
        reviews.router,  # implicit peer reviews (quote/@ of a recent check-in)
        milestones.router,  # after points: the bonus follows the check-in's points
        rhythm.router,  # welcomes after roster recorded the join; intros; game answers
        # Commands run last, so they can answer with what the handlers above recorded.
        commands.build_router(
            checkins.commands,
            points.commands,
            reviews.commands,
            shop.commands,
            streaks.commands,
            leaderboards.commands,
            stats.commands,
            rhythm.commands,
            nudge_handlers.commands,  # 免打扰 恢复提醒 阶段 批准 潜水
        ),
    )
    return dispatcher


def build_jobs(settings: Settings) -> list[DailyJob]:
    """Every daily job the scheduler runs (SPEC §13), rebuilt from the config at each start.

    Another job is one line, e.g. ``*per_cohort(settings, "streak.remind", time(21), fn)`` or
    ``*per_teacher(settings, "digest", time(21, 30), fn)`` (helpers in :mod:`bot.jobs`)."""
    hour, minute = settings.streaks.reminder_hour_minute
    return [
        *rhythm.jobs(settings),
        # Group reminders are group posts: they wait out quiet hours like any other.
        *per_cohort(settings, "streak.remind", time(hour, minute), streaks.remind_job, quiet=True),
        *nudge_handlers.jobs(settings),  # plan private nudges as each nudge window opens
        *digest.jobs(settings),  # each teacher's evening digest
    ]


def timer_kinds() -> dict[str, JobFn]:
    """One-off timer kinds (a game's reveal, a batched welcome...) and their functions."""
    return {
        **rhythm.TIMERS,
        **nudge_handlers.TIMERS,  # each planned nudge is sent at its own minute
        **milestones.TIMERS,  # a congratulation due in quiet hours
    }


def payload_parsers() -> dict[str, PayloadParser]:
    """How each door's stored payloads become updates again (for the inbox worker)."""
    return {
        Door.IMPORT.value: lambda p: archive.parse_line(p, Door.IMPORT),
        Door.ARCHIVE.value: lambda p: archive.parse_line(p, Door.ARCHIVE),
        Door.AIBOT.value: aibot.parse_payload,
        Door.AIBOT_WS.value: aibot.parse_ws_payload,
        Door.ROBOT.value: robot.parse_payload,
        Door.APP.value: app_door.parse_payload,
    }


@dataclass
class App:
    """The bot's services: settings, clock, database, sender, dispatcher and pipeline."""

    settings: Settings
    db: Database
    clock: Clock = field(default_factory=SystemClock)
    sender: Sender = field(default_factory=RecordingSender)
    dispatcher: Dispatcher = field(default_factory=build_dispatcher)
    card_maker: CardMaker | None = None  # evidence cards (issue 7); None: text only

    def __post_init__(self) -> None:
        self.pipeline = Pipeline(
            self.settings, self.clock, self.db, self.dispatcher, self.sender, payload_parsers()
        )
        self.pipeline.card_maker = self.card_maker
        self.pipeline.rewards = points.ledger_rewards  # intros and game answers pay points

    @classmethod
    def open(
        cls,
        settings: Settings,
        clock: Clock | None = None,
        sender: Sender | None = None,
        card_maker: CardMaker | None = None,
        existing: bool = False,
    ) -> App:
        """Connect to the configured database, migrate it, and mirror the config into it.
        ``existing``: refuse a SQLite file that is not there instead of creating it (commands
        that only read)."""
        if existing:
            require_existing(settings.database_url)
        db = Database(settings.database_url)
        try:
            db.check_connection()
        except DatabaseUnavailableError:
            db.dispose()
            raise
        db.upgrade()
        with db.unit_of_work_sync() as uow:
            roster_store.sync_config(uow.session, settings)
        return cls(
            settings=settings,
            db=db,
            clock=clock or SystemClock(),
            sender=sender or RecordingSender(),
            card_maker=card_maker,
        )

    def close(self) -> None:
        self.db.dispose()
