"""Routing updates to handlers (STYLE habit 4).

Each handler module owns a :class:`Router`; :func:`bot.app.build_dispatcher` includes them in one
explicit order. Every handler whose filters match runs, in that order, so one message can be
counted, detected as a check-in and answered as a command by three independent modules.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.context import Context
from bot.updates import Event, Update

Handler = Callable[[Update, Context], Awaitable[None]]
Filter = Callable[[Update, Context], bool]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    handler: Handler
    events: frozenset[Event] | None  # None: messages
    filters: tuple[Filter, ...]

    def matches(self, update: Update, ctx: Context) -> bool:
        if self.events is None:
            if not update.is_message:
                return False
        elif update.event not in self.events:
            return False
        return all(f(update, ctx) for f in self.filters)


class Router:
    """A named set of routes, one per handler module."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.routes: list[Route] = []

    def message(self, *filters: Filter) -> Callable[[Handler], Handler]:
        """Register a handler for messages passing every filter."""

        def register(handler: Handler) -> Handler:
            self.routes.append(Route(handler, None, filters))
            return handler

        return register

    def event(
        self, *events: Event, filters: tuple[Filter, ...] = ()
    ) -> Callable[[Handler], Handler]:
        """Register a handler for the given events."""

        def register(handler: Handler) -> Handler:
            self.routes.append(Route(handler, frozenset(events), filters))
            return handler

        return register


class Dispatcher:
    """Feeds each update to every matching route of the included routers."""

    def __init__(self) -> None:
        self.routers: list[Router] = []

    def include(self, *routers: Router) -> None:
        for router in routers:
            if any(r.name == router.name for r in self.routers):
                raise ValueError(f"router {router.name!r} included twice")
            self.routers.append(router)

    async def feed(self, update: Update, ctx: Context) -> None:
        # Route.matches inlined: this loop runs for every route and every update.
        is_message, event = update.is_message, update.event
        for router in self.routers:
            for route in router.routes:
                events = route.events
                if events is None:
                    if not is_message:
                        continue
                elif event not in events:
                    continue
                for accept in route.filters:
                    if not accept(update, ctx):
                        break
                else:
                    await route.handler(update, ctx)


# Filters shared by handler modules.


def in_cohort_group(update: Update, ctx: Context) -> bool:
    """A message in a group that belongs to a configured cohort."""
    return ctx.cohort is not None and ctx.facts.day is not None
