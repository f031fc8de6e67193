"""Helpers for tests that talk to a real callback server on 127.0.0.1 (an ephemeral port),
in this process or as a real ``cohortbot run`` process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from bot.app import App
from bot.clock import Clock
from bot.config import Settings, parse_settings
from bot.doors.archive_poller import ArchiveSource
from bot.doors.crypto import DoorCrypto
from bot.outbound import RecordingSender
from bot.server import SERVER_KEY, Server, create_app
from storage.inbox import RawEvent
from tests.conftest import GROUP_A, GROUP_B, base_config

ROOT = Path(__file__).resolve().parent.parent

TOKEN = "cohortTOKEN"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
CORP_ID = "wwCORPtest0001"

ENV = {
    "COHORTBOT_AIBOT_TOKEN": TOKEN,
    "COHORTBOT_AIBOT_AES_KEY": AES_KEY,
    "COHORTBOT_ROBOT_TOKEN": TOKEN,
    "COHORTBOT_ROBOT_AES_KEY": AES_KEY,
    "COHORTBOT_APP_TOKEN": TOKEN,
    "COHORTBOT_APP_AES_KEY": AES_KEY,
}

PATHS = {"aibot": "/wecom/aibot", "robot": "/wecom/robot", "app": "/wecom/app"}


def door_crypto(door: str, token: str = TOKEN, key: str = AES_KEY) -> DoorCrypto:
    """The sending side's crypto for ``door`` (AI bots and robots use an empty ReceiveId)."""
    return DoorCrypto(token, key, CORP_ID if door == "app" else "")


def server_settings(database_url: str, **server: Any) -> Settings:
    config = base_config(database={"url": database_url})
    config["server"] = {"corp_id": CORP_ID, **server}
    return parse_settings(config, env={})


@dataclass
class Running:
    url: str
    bot: App
    server: Server

    async def raw_events(self) -> int:
        """Stored events: what the inbox journal holds is moved into the table first."""
        await self.server.flush_journal()
        with self.bot.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(RawEvent)) or 0)

    async def settle(self, limit_s: float = 10.0) -> None:
        """Wait until the inbox worker has processed every stored event."""
        deadline = asyncio.get_running_loop().time() + limit_s
        while True:
            await self.server.flush_journal()
            with self.bot.db.session() as s:
                pending = s.scalar(
                    select(func.count())
                    .select_from(RawEvent)
                    .where(RawEvent.processed_at.is_(None))  # type: ignore[union-attr]
                )
            if not pending:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{pending} inbox events still unprocessed")
            await asyncio.sleep(0.02)


@asynccontextmanager
async def running(
    settings: Settings,
    clock: Clock,
    env: dict[str, str] | None = None,
    archive_source: ArchiveSource | None = None,
) -> AsyncIterator[Running]:
    """Open the bot, serve it on 127.0.0.1:<ephemeral>, and close both afterwards."""
    bot = App.open(settings, clock=clock, sender=RecordingSender())
    app = create_app(bot, ENV if env is None else env, archive_source)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Running(f"http://{host}:{port}", bot, app[SERVER_KEY])
    finally:
        await runner.cleanup()
        bot.close()


def write_config(path: Path, database_url: str) -> Path:
    path.write_text(
        f"""
[database]
url = "{database_url}"

[server]
host = "127.0.0.1"
port = 0
corp_id = "{CORP_ID}"

[[cohorts]]
id = "c1"
course = "Python 21天入门"
start_date = "2026-11-02"
length_days = 21

  [[cohorts.groups]]
  chat_id = "{GROUP_A}"

  [[cohorts.groups]]
  chat_id = "{GROUP_B}"
""",
        encoding="utf-8",
    )
    return path


def start(config: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, **ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "--config", str(config), "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("cohortbot listening on "), line
    return proc, line.split()[-1].strip()
