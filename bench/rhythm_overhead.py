"""What the rhythm handlers (self-introduction detection, game answers) add to message ingest.

Ingests the same synthetic group messages (batches of 500, one open game in the group) into a
fresh SQLite database twice: with the full dispatcher and with the rhythm router left out, and
prints messages/s for both and the ratio. Run: ``.venv/bin/python bench/rhythm_overhead.py``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta

from bot.app import App, build_dispatcher
from bot.clock import ManualClock
from bot.config import parse_settings
from bot.dispatcher import Dispatcher
from bot.updates import Door, Update, UpdateKind
from handlers import rhythm
from storage import rhythm as store

N = 20_000
BATCH = 500
GROUP = "wrBench"
TEXTS = [
    "收到",
    "好的，谢谢老师",
    "#打卡 第3天 今天学了循环",
    "木星？",
    "今天的作业有点难，明天继续",
]


def config(url: str) -> dict[str, object]:
    return {
        "database": {"url": url},
        "cohorts": [
            {
                "id": "b1",
                "course": "bench",
                "start_date": "2026-11-02",
                "length_days": 21,
                "groups": [{"chat_id": GROUP, "name": "bench"}],
            }
        ],
    }


def without_rhythm() -> Dispatcher:
    full = build_dispatcher()
    dispatcher = Dispatcher()
    dispatcher.include(*[r for r in full.routers if r is not rhythm.router])
    return dispatcher


async def run(with_rhythm: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        settings = parse_settings(config(f"sqlite:///{tmp}/bench.db"), env={})
        start = datetime(2026, 11, 3, 7, 0, tzinfo=UTC)
        clock = ManualClock(start)
        app = App.open(settings, clock=clock)
        if not with_rhythm:
            app.pipeline.dispatcher = without_rhythm()
        async with app.db.unit_of_work() as uow:
            uow.session.add(
                store.Game(
                    chat_id=GROUP,
                    kind="quiz",
                    item_id="q06",
                    question="太阳系里最大的行星是哪一颗？",
                    answers='["木星"]',
                    posted_at=start,
                    reveal_at=start + timedelta(days=1),
                )
            )
        updates = [
            Update(
                Door.IMPORT,
                UpdateKind.MESSAGE,
                f"m{i}",
                GROUP,
                f"wm{i % 200}",
                start + timedelta(seconds=i),
                text=TEXTS[i % len(TEXTS)],
            )
            for i in range(N)
        ]
        began = time.perf_counter()
        for i in range(0, N, BATCH):
            await app.pipeline.ingest([(u, "{}") for u in updates[i : i + BATCH]])
        elapsed = time.perf_counter() - began
        app.close()
        return N / elapsed


def main() -> None:
    base = asyncio.run(run(with_rhythm=False))
    full = asyncio.run(run(with_rhythm=True))
    print(f"ingest without rhythm handlers: {base:,.0f} messages/s")
    print(f"ingest with rhythm handlers:    {full:,.0f} messages/s ({full / base:.2f}x)")


if __name__ == "__main__":
    main()
