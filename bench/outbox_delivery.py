"""Outbox throughput: queue N messages, deliver them to the fake WeCom server over loopback.

Prints rows queued per second (the handler-side cost: INSERTs in one transaction) and messages
delivered per second (claim, HTTP call, mark sent), on a fresh SQLite file, or on PostgreSQL with
``--database-url`` (in a fresh schema, dropped afterwards: the message keys are the same every
run). Usage: ``.venv/bin/python bench/outbox_delivery.py [--messages 2000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.import_throughput import fresh_schema
from bot.app import App
from bot.clock import ManualClock
from bot.config import parse_settings
from bot.outbound import Channel, Outbound
from bot.wecom.api import WeComAPI
from bot.wecom.delivery import DeliveryWorker
from bot.wecom.fake_server import FakeWeCom
from bot.wecom.sender import OutboxSender


async def run(messages: int, members: int, database_url: str) -> None:
    clock = ManualClock(datetime(2026, 11, 1, tzinfo=UTC))
    config = {
        "database": {"url": database_url},
        "wecom": {"corp_id": "wwbench", "app_per_member_per_minute": 1000},
        "cohorts": [{"id": "b", "course": "bench", "start_date": "2026-11-02", "length_days": 21}],
    }
    settings = parse_settings(config, env={})
    app = App.open(settings, clock=clock, sender=OutboxSender(settings, clock))
    fake = FakeWeCom(corp_id="wwbench", secret="s", clock=clock)
    async with fake.serve() as url, WeComAPI(url, "wwbench", "s", clock) as api:
        started = time.perf_counter()
        async with app.db.unit_of_work() as uow:
            for i in range(messages):
                message = Outbound(Channel.PRIVATE, f"staff{i % members}", f"消息 {i}", key=f"k{i}")
                await app.sender.send(message, uow)
        queued = time.perf_counter() - started
        worker = DeliveryWorker(settings, app.db, api, clock, batch=200)
        started = time.perf_counter()
        sent = 0
        while sent < messages:
            report = await worker.deliver_due()
            if not report.sent:
                break
            sent += report.sent
        delivered = time.perf_counter() - started
    app.close()
    print(f"backend            {app.db.dialect}")
    print(f"queued             {messages} rows in {queued:.2f} s = {messages / queued:,.0f} rows/s")
    print(f"delivered          {sent} in {delivered:.2f} s = {sent / delivered:,.0f} messages/s")
    print(f"fake received      {len(fake.received)} requests ({len(fake.delivered)} accepted)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    if args.database_url:
        with fresh_schema(args.database_url) as url:
            asyncio.run(run(args.messages, args.members, url))
        return
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args.messages, args.members, f"sqlite:///{Path(tmp) / 'bench.db'}"))


if __name__ == "__main__":
    main()
