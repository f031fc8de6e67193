"""A real dashboard server on 127.0.0.1 and the sample group it shows (for several test files)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date

from aiohttp import web

from bot.app import App
from bot.clock import ManualClock
from bot.dashboard import build_dashboard
from storage import roster
from tests.builders import archive_text, local, pair
from tests.conftest import GROUP_A

PASSWORD = "s3cret-看板"
ENV = {"COHORTBOT_DASHBOARD_PASSWORD": PASSWORD, "COHORTBOT_DASHBOARD_SECRET": "k" * 32}
TODAY = date(2026, 11, 10)


@asynccontextmanager
async def serve(bot: App, env: dict[str, str] | None = None) -> AsyncIterator[str]:
    """Mount the dashboard at /dashboard on an ephemeral port; yield the base URL."""
    root = web.Application()
    root.add_subapp("/dashboard", build_dashboard(bot, env=ENV if env is None else env))
    runner = web.AppRunner(root)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def seed_group(bot: App, clock: ManualClock) -> None:
    """GROUP_A on 2026-11-10: 小鱼 checks in daily, 阿杰 quiet since day 2, 小白 never spoke."""
    items = []
    for d in range(2, 11):
        items.append(
            archive_text(GROUP_A, "wmFish", f"#打卡 Day{d - 1}", local(2026, 11, d, 9), name="小鱼")
        )
        if d % 2:
            items.append(
                archive_text(
                    GROUP_A, "wmLi", "收到，谢谢老师", local(2026, 11, d, 10), name="李同学"
                )
            )
    items.append(archive_text(GROUP_A, "wmJie", "#打卡 Day1", local(2026, 11, 2, 8), name="阿杰"))
    items.append(archive_text(GROUP_A, "wmJie", "#打卡 Day2", local(2026, 11, 3, 8)))
    items.append(
        archive_text(GROUP_A, "teacher1", "大家加油", local(2026, 11, 3, 20), name="李老师")
    )
    await bot.pipeline.ingest([pair(i) for i in items])
    async with bot.db.unit_of_work() as uow:
        roster.ensure_members(uow.session, [("wmWhite", "小白", "external")], local(2026, 11, 1))
        roster.record_join(uow.session, GROUP_A, "wmWhite", local(2026, 11, 1, 20))
    clock.set(local(2026, 11, 10, 21))
