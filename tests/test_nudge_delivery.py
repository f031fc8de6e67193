"""End to end: a silent external learner's nudge goes from the scheduler's nudge jobs through the
outbox to the fake WeCom server as an ``add_msg_template`` task of the learner's owning staff
member (SPEC §8 delivery); an internal member's goes as an app message. Nothing sleeps: the
scheduler runs due jobs as the ManualClock advances."""

from __future__ import annotations

import random
from datetime import timedelta

from bot.app import App
from bot.clock import ManualClock
from bot.config import parse_settings
from bot.scheduler import CohortScheduler
from bot.wecom.api import WeComAPI
from bot.wecom.delivery import DeliveryWorker
from bot.wecom.fake_server import FakeWeCom
from bot.wecom.sender import OutboxSender
from storage import roster
from tests.builders import archive_text, local, pair
from tests.conftest import GROUP_A
from tests.test_outbox import APP_SEND, CORP, ROBOT_KEY, SECRET, TEMPLATE, outbox_config


async def test_scheduled_nudges_reach_wecom_by_member_kind(
    database_url: str, clock: ManualClock
) -> None:
    settings = parse_settings(outbox_config(database_url), env={})
    app = App.open(settings, clock=clock, sender=OutboxSender(settings, clock))
    fake = FakeWeCom(corp_id=CORP, secret=SECRET, clock=clock)
    try:
        with app.db.unit_of_work_sync() as uow:
            roster.ensure_members(
                uow.session,
                [
                    ("wmSilent", "小静", "external"),
                    ("wmBusy", "小忙", "external"),
                    ("staff_lin", "林助教", "internal"),
                    ("wmActive", "小鱼", "external"),
                ],
                clock.now(),
            )
            roster.set_owners(uow.session, {"wmSilent": "staff_lin", "wmActive": "staff_lin"})
            for member in ("wmSilent", "staff_lin", "wmActive"):
                roster.record_join(uow.session, GROUP_A, member, local(2026, 11, 2, 8))
        scheduler = CohortScheduler(app)
        async with fake.serve() as url:
            api = WeComAPI(url, CORP, SECRET, clock, agent_id=1000002, timeout=10)
            worker = DeliveryWorker(
                settings, app.db, api, clock, env={"ROBOT_A": ROBOT_KEY}, rng=random.Random(3)
            )
            try:
                await scheduler.run_until(clock, local(2026, 11, 2, 8, 30))
                await app.pipeline.ingest(
                    [
                        pair(
                            archive_text(
                                GROUP_A,
                                "wmActive",
                                "自我介绍：昵称小鱼，最喜欢吃火锅，空闲时喜欢跑步",
                                clock.now(),
                            )
                        )
                    ]
                )
                for day in range(2, 6):  # Mon Nov 2 .. Thu Nov 5
                    await scheduler.run_until(clock, local(2026, 11, day, 9, 0))
                    await app.pipeline.ingest(
                        [
                            pair(
                                archive_text(
                                    GROUP_A, "wmActive", f"#打卡 第{day - 1}天 学完了", clock.now()
                                )
                            )
                        ]
                    )
                # Thursday's nudge window opens at 19:00; planning runs at 19:01 and each
                # planned nudge has its own send minute before 21:30.
                await scheduler.run_until(clock, local(2026, 11, 5, 21, 35))
                clock.advance(timedelta(seconds=1))
                await worker.deliver_due()
            finally:
                await api.close()
        templates = [c.body for c in fake.calls(TEMPLATE)]
        silent = [t for t in templates if t["external_userid"] == ["wmSilent"]]
        assert len(silent) == 1
        assert silent[0]["sender"] == "staff_lin"
        assert "小静" in silent[0]["text"]["content"]
        # The active learner is not nudged; the internal member gets app messages, not tasks.
        assert not [t for t in templates if "wmActive" in t["external_userid"]]
        assert all("staff_lin" not in t["external_userid"] for t in templates)
        # App messages (nudges to staff, teacher1's evening digests) only ever reach internal
        # members; an external learner is never addressed directly.
        app_to = {call.body["touser"] for call in fake.calls(APP_SEND)}
        assert "teacher1" in app_to
        assert not {t for t in app_to if t.startswith("wm")}
    finally:
        app.close()
