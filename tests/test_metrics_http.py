"""``/metrics`` over a real aiohttp server: parses with the Prometheus client's text parser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics
from bot.app import App
from bot.clock import ManualClock
from bot.inbox_journal import InboxJournal, encode
from bot.metrics_http import CONTENT_TYPE, inbox_collector, metrics_routes
from storage import inbox


@pytest.fixture
async def base_url(app: App) -> AsyncIterator[str]:
    web_app = web.Application()
    web_app.add_routes(metrics_routes(inbox_collector(app.db, app.clock)))
    runner = web.AppRunner(web_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def scrape(url: str) -> tuple[str, str]:
    async with aiohttp.ClientSession() as client, client.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        return resp.headers["Content-Type"], await resp.text()


async def test_metrics_parse_with_the_prometheus_parser(
    app: App, clock: ManualClock, base_url: str
) -> None:
    metrics.JOB_RUNS.inc(job="digest", outcome="ok")
    metrics.NUDGES_SENT.inc(channel="private")
    metrics.NUDGES_SENT.inc(channel='we"ird\\')  # label escaping must survive the parser
    async with app.db.unit_of_work() as uow:
        inbox.store_new(uow.session, [inbox.Incoming("callback", "ns", "k1", "{}")], clock.now())
    clock.advance(timedelta(seconds=90))

    content_type, body = await scrape(base_url)
    assert content_type == CONTENT_TYPE
    families = {f.name: f for f in text_string_to_metric_families(body)}
    # The parser strips the _total suffix from counter family names.
    jobs = {s.labels["job"]: s.value for s in families["cohortbot_job_runs"].samples}
    assert jobs["digest"] >= 1
    channels = {s.labels["channel"] for s in families["cohortbot_nudges_sent"].samples}
    assert {"private", 'we"ird\\'} <= channels
    assert families["cohortbot_inbox_pending"].samples[0].value == 1
    assert families["cohortbot_inbox_lag_seconds"].samples[0].value == 90
    assert families["cohortbot_job_runs"].type == "counter"
    assert families["cohortbot_inbox_lag_seconds"].type == "gauge"


async def test_the_inbox_gauges_count_callbacks_still_in_the_journal(
    app: App, clock: ManualClock, tmp_path: Path
) -> None:
    """A callback the route journalled is pending, and ages, before any move puts it in the table
    (a worker that cannot move it shows as lag)."""
    journal = InboxJournal(tmp_path / "journal", app.db)
    async with app.db.unit_of_work() as uow:
        inbox.store_new(uow.session, [inbox.Incoming("callback", "ns", "t1", "{}")], clock.now())
    received = (clock.now() - timedelta(seconds=30)).timestamp()
    journal.append(encode("robot", "robot", "j1", b"<xml/>", received))
    journal.append(encode("robot", "robot", "j2", b"<xml/>", received + 1))
    clock.advance(timedelta(seconds=90))
    inbox_collector(app.db, app.clock, journal)()
    rendered = {f.name: f for f in text_string_to_metric_families(metrics.REGISTRY.render())}
    assert rendered["cohortbot_inbox_pending"].samples[0].value == 3
    assert rendered["cohortbot_inbox_lag_seconds"].samples[0].value == 120
    journal.close()
