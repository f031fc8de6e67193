"""The ``/metrics`` route (SPEC §15): :data:`bot.metrics.REGISTRY` in the Prometheus text format.

The server mounts it: ``app.router.add_get("/metrics", make_metrics_handler(inbox_collector(db,
clock, journal)))``, or the plain :func:`metrics_handler` when no database gauges are wanted. It
needs no login: it exposes counts, never names or message text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from aiohttp import web
from sqlalchemy import func, select
from sqlmodel import col

from bot import metrics
from bot.clock import Clock
from bot.inbox_journal import InboxJournal
from storage.db import Database
from storage.inbox import RawEvent

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

INBOX_PENDING = metrics.gauge("cohortbot_inbox_pending", "Stored inbound events not processed yet.")
INBOX_LAG = metrics.gauge(
    "cohortbot_inbox_lag_seconds", "Age of the oldest unprocessed inbound event (0 when none)."
)

Handler = Callable[[web.Request], Awaitable[web.Response]]


def inbox_collector(
    db: Database, clock: Clock, journal: InboxJournal | None = None
) -> Callable[[], None]:
    """A collector that sets the inbox gauges just before a scrape, from the database and from
    the callbacks this process's inbox ``journal`` holds that are not in the table yet."""

    def collect() -> None:
        with db.session() as session:
            count, oldest = session.execute(
                select(func.count(), func.min(col(RawEvent.received_at))).where(
                    col(RawEvent.processed_at).is_(None)
                )
            ).one()
        journalled, first = journal.waiting() if journal is not None else (0, None)
        INBOX_PENDING.set(int(count or 0) + journalled)
        INBOX_LAG.set(_age(clock.now(), earliest(oldest, first)))

    return collect


def earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    """The earlier of two times, either of which may be missing."""
    return b if a is None else a if b is None else min(a, b)


def _age(now: datetime, oldest: datetime | None) -> float:
    return max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0


def make_metrics_handler(*collectors: Callable[[], None]) -> Handler:
    """A ``GET /metrics`` handler that runs ``collectors`` and renders the registry."""

    async def handler(request: web.Request) -> web.Response:
        for collect in collectors:
            collect()
        return web.Response(
            body=metrics.REGISTRY.render().encode("utf-8"), headers={"Content-Type": CONTENT_TYPE}
        )

    return handler


#: ``GET /metrics`` without database gauges.
metrics_handler: Handler = make_metrics_handler()


def metrics_routes(*collectors: Callable[[], None]) -> web.RouteTableDef:
    """A route table with ``GET /metrics``, for ``app.add_routes(...)``."""
    routes = web.RouteTableDef()
    routes.get("/metrics")(make_metrics_handler(*collectors))
    return routes
