"""Two delivery processes (``cohortbot outbox deliver --drain``) on one database: every queued
message reaches the fake WeCom server exactly once (SQLite file and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

from bot.app import App
from bot.clock import ManualClock
from bot.config import load_settings
from bot.outbound import Channel, Outbound
from bot.wecom.fake_server import FakeWeCom
from bot.wecom.sender import OutboxSender
from storage import outbox

CORP = "wwproc"
SECRET = "proc-secret"


def write_config(path: Path, database_url: str, api_base: str) -> Path:
    groups = "\n".join(
        f'[[cohorts.groups]]\nchat_id = "wrProc{i}"\npost_via = "appchat"\n' for i in range(4)
    )
    path.write_text(
        f"""
[database]
url = {json.dumps(database_url)}
[wecom]
api_base = "{api_base}"
corp_id = "{CORP}"
corp_secret_env = "PROC_WECOM_SECRET"
agent_id = 42
timeout_seconds = 30
[[cohorts]]
id = "p1"
course = "多进程"
start_date = "2026-11-02"
length_days = 21
{groups}
""",
        encoding="utf-8",
    )
    return path


async def deliver(config: Path, *extra: str) -> asyncio.subprocess.Process:
    """``cohortbot outbox deliver --drain`` in a process of its own, with the corp secret."""
    return await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "bot.cli", "--config", str(config), "outbox", "deliver"],
        *["--drain", *extra],
        env={**os.environ, "PROC_WECOM_SECRET": SECRET},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_two_processes_deliver_every_message_once(
    tmp_path: Path, database_url: str, clock: ManualClock
) -> None:
    fake = FakeWeCom(corp_id=CORP, secret=SECRET, hang_seconds=60)
    # A process has at most 4 sends in flight (--batch 4): the 5th proves both are sending.
    # The client timeout (30 s) must outlast the hold, or a timed-out send that the fake then
    # accepts is retried: a genuine double send, the at-least-once case of HTTP timeouts.
    fake.hold_answers(5)
    async with fake.serve() as url:
        config = write_config(tmp_path / "config.toml", database_url, url)
        settings = load_settings(config, env={})
        app = App.open(settings, clock=clock, sender=OutboxSender(settings, clock))
        try:
            async with app.db.unit_of_work() as uow:
                for i in range(80):
                    await app.sender.send(
                        Outbound(Channel.GROUP, f"wrProc{i % 4}", f"群消息 {i}", key=f"g:{i}"), uow
                    )
                for i in range(40):
                    await app.sender.send(
                        Outbound(Channel.PRIVATE, f"staff{i}", f"私信 {i}", key=f"p:{i}"), uow
                    )
            procs = [await deliver(config, "--batch", "4") for _ in range(2)]
            outputs = [await p.communicate() for p in procs]
            assert [p.returncode for p in procs] == [0, 0], outputs
            with app.db.session() as s:
                assert outbox.status_counts(s) == {"sent": 120}, outputs
        finally:
            app.close()
    contents = [r.body["text"]["content"] for r in fake.delivered]
    assert len(contents) == 120 and len(set(contents)) == 120
    sent_by = [int(re.search(r"已发送 (\d+)", out.decode()).group(1)) for out, _err in outputs]
    assert sum(sent_by) == 120 and min(sent_by) > 0, sent_by


async def test_deliver_exits_1_when_a_message_failed_for_good(
    tmp_path: Path, database_url: str, clock: ManualClock
) -> None:
    # A row for a group the config does not know cannot be sent: the summary counts it as
    # failed, and the exit status says so to the script or cron job that ran the command.
    fake = FakeWeCom(corp_id=CORP, secret=SECRET)
    async with fake.serve() as url:
        config = write_config(tmp_path / "config.toml", database_url, url)
        settings = load_settings(config, env={})
        app = App.open(settings, clock=clock, sender=OutboxSender(settings, clock))
        try:
            async with app.db.unit_of_work() as uow:
                await app.sender.send(Outbound(Channel.GROUP, "wrProc0", "好", key="ok"), uow)
                await app.sender.send(Outbound(Channel.GROUP, "wrGone", "丢", key="gone"), uow)
            proc = await deliver(config)
            out, err = await proc.communicate()
            assert proc.returncode == 1, (out, err)
            assert "已发送 1" in out.decode() and "失败 1" in out.decode()
        finally:
            app.close()
