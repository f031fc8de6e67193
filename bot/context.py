"""The typed context every handler and job receives (STYLE habit 5): what they may use."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

from sqlalchemy.orm import Session

from bot.clock import Clock
from bot.config import CohortSettings, GroupSettings, Settings
from bot.outbound import Outbound, Sender
from storage.messages import Message
from storage.uow import UnitOfWork

#: Makes an evidence card (SPEC §9) for ``(ctx, kind, fields)``, e.g. ``(ctx, "milestone",
#: {"member_id": ..., "cohort_id": ..., "days": 7, ...})``: the card's numbers as JSON, sent as
#: ``Outbound(kind=Kind.IMAGE, card=...)`` and drawn at delivery, off the event loop; or None to
#: send text only. The real one is :func:`bot.cards.member.card_for`.
CardMaker = Callable[["Context", str, Mapping[str, object]], Mapping[str, object] | None]


@dataclass
class Facts:
    """What earlier handlers learnt about the current update, for later ones (in include order)."""

    day: date | None = None  # the learning day of a group message in a configured cohort
    chars: int = 0  # meaningful characters of the message text
    checkin_id: int | None = None  # set when this message became the day's check-in
    homework: bool = False
    recalled: Message | None = None  # for a recall event: the message it took back
    replies: int = 0  # replies sent to this update so far (numbers their idempotency keys)


class Rewards(Protocol):
    """The points-ledger seam (SPEC §4): award ``rule`` to a member once per idempotency ``key``.

    The ledger (issue 4) provides the real one; until it is wired, :func:`no_rewards` does
    nothing. Wire it with ``app.pipeline.rewards = <ledger function>``."""

    async def __call__(
        self, ctx: Context, cohort_id: str, member_id: str, rule: str, key: str
    ) -> None: ...


async def no_rewards(ctx: Context, cohort_id: str, member_id: str, rule: str, key: str) -> None:
    """The default :class:`Rewards`: awards nothing."""


@dataclass
class Context:
    """One update's (or one job run's) view of the bot."""

    settings: Settings
    clock: Clock
    uow: UnitOfWork
    sender: Sender
    group: GroupSettings | None = None
    cohort: CohortSettings | None = None
    facts: Facts = field(default_factory=Facts)
    rewards: Rewards = no_rewards

    async def reward(self, member_id: str, rule: str, key: str) -> None:
        """Award ``rule`` to a member of this context's cohort (once per ``key``)."""
        if self.cohort is not None:
            await self.rewards(self, self.cohort.id, member_id, rule, key)

    card_maker: CardMaker | None = None  # issue 7 plugs the evidence cards in here

    @property
    def session(self) -> Session:
        """The database session, with buffered writes flushed (see :mod:`storage.uow`)."""
        return self.uow.session

    async def send(self, message: Outbound) -> None:
        """Queue ``message``; it goes out only if this unit of work commits."""
        await self.sender.send(message, self.uow)
