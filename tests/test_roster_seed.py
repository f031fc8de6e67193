"""Roster seeding from the customer-group detail API (fake WeCom), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot import cli
from bot.app import App
from bot.clock import ManualClock
from bot.wecom.api import WeComAPI
from bot.wecom.fake_server import FakeWeCom
from bot.wecom.roster_seed import seed_rosters
from storage import roster
from storage.db import Database
from tests.conftest import GROUP_A, GROUP_B

CORP = "wwtestcorp"
SECRET = "test-secret"
JOIN = datetime(2026, 10, 30, 12, 0, tzinfo=UTC)


def group_a_members() -> list[dict[str, object]]:
    ts = int(JOIN.timestamp())
    return [
        {"userid": "teacher1", "type": 1, "join_time": ts, "join_scene": 1, "name": "李老师"},
        {
            "userid": "wmSilent1",
            "type": 2,
            "join_time": ts + 60,
            "join_scene": 3,
            "name": "沉默的小王",
            "unionid": "ozynqsulJFCZ2z1aYeS8h-nuasdAAA",
        },
        {
            "userid": "wmInvited",
            "type": 2,
            "join_time": ts + 120,
            "join_scene": 1,
            "name": "小李",
            "invitor": {"userid": "leader1"},
            "group_nickname": "小李-三班",
        },
    ]


async def test_seeding_creates_silent_members_with_join_times(app: App, clock: ManualClock) -> None:
    fake = FakeWeCom(corp_id=CORP, secret=SECRET, clock=clock)
    fake.add_groupchat(GROUP_A, "一班", owner="teacher1", members=group_a_members())
    async with fake.serve() as url, WeComAPI(url, CORP, SECRET, clock) as api:
        report = await seed_rosters(app.settings, app.db, api, clock)
        assert report.seeded == {GROUP_A: 3}
        assert (
            GROUP_B in report.errors and "40050" in report.errors[GROUP_B]
        )  # not a customer group
        again = await seed_rosters(app.settings, app.db, api, clock)
    assert GROUP_A in again.skipped and again.seeded == {}
    assert len(fake.calls("/cgi-bin/externalcontact/groupchat/get")) == 3 + 2  # A, B, ny; B, ny

    with app.db.session() as s:
        rows = {m.id: (ms, m) for ms, m in roster.members_of(s, GROUP_A)}
    assert set(rows) == {"teacher1", "wmSilent1", "wmInvited"}
    silent, member = rows["wmSilent1"]
    assert silent.never_spoken and silent.joined_at == datetime(2026, 10, 30, 12, 1, tzinfo=UTC)
    assert silent.join_scene == 3 and silent.left_at is None
    assert (member.name, member.kind, member.owner_userid) == ("沉默的小王", "external", "teacher1")
    invited = rows["wmInvited"][1]
    assert (invited.name, invited.owner_userid) == ("小李-三班", "leader1")
    teacher = rows["teacher1"][1]
    assert (teacher.kind, teacher.owner_userid) == ("internal", None)


def test_cli_roster_seed(
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def scenario() -> int:
        fake = FakeWeCom(corp_id=CORP, secret=SECRET)
        fake.add_groupchat("wrCliGroup", "测试群", owner="t1", members=group_a_members())
        async with fake.serve() as url:
            config = tmp_path / "config.toml"
            config.write_text(
                f"""
[database]
url = {json.dumps(database_url)}
[wecom]
api_base = "{url}"
corp_id = "{CORP}"
corp_secret_env = "TEST_WECOM_SECRET"
[[cohorts]]
id = "c9"
course = "测试营"
start_date = "2026-11-02"
length_days = 21
[[cohorts.groups]]
chat_id = "wrCliGroup"
""",
                encoding="utf-8",
            )
            monkeypatch.setenv("TEST_WECOM_SECRET", SECRET)
            return await asyncio.to_thread(cli.main, ["--config", str(config), "roster", "seed"])

    assert asyncio.run(scenario()) == 0
    assert "wrCliGroup: 导入 3 名成员" in capsys.readouterr().out
    db = Database(database_url)
    try:
        with db.session() as s:
            assert len(roster.members_of(s, "wrCliGroup")) == 3
    finally:
        db.dispose()
    monkeypatch.delenv("TEST_WECOM_SECRET")
    assert cli.main(["--config", str(tmp_path / "config.toml"), "roster", "seed"]) == 2
