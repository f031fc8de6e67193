"""The AI-bot long connection against a local WebSocket server speaking PROTOCOL.md §1 frames:
subscribe, heartbeat, an inbound message into the pipeline, a reply reusing its req_id, a
dropped connection and the reconnect, and an active push."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from bot.app import App
from bot.clock import ManualClock
from bot.doors.aibot_ws import AibotConnection
from storage import activity
from tests.conftest import GROUP_A

SECRET = "ws-secret"


@dataclass
class FakeWeCom:
    """A WebSocket endpoint that behaves like openws.work.weixin.qq.com for one bot."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, cmd: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("cmd") == cmd]

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            self.frames.append(frame)
            req_id = frame["headers"]["req_id"]
            if frame["cmd"] == "aibot_subscribe":
                ok = frame["body"] == {"bot_id": "bot1", "secret": SECRET}
                await ws.send_json(
                    {"headers": {"req_id": req_id}, "errcode": 0 if ok else 40001, "errmsg": "ok"}
                )
                if ok:
                    self.subscribed.set()
            elif frame["cmd"] in ("ping", "aibot_send_msg"):
                await ws.send_json({"headers": {"req_id": req_id}, "errcode": 0, "errmsg": "ok"})
        return ws

    async def message(self, req_id: str, msgid: str, text: str) -> None:
        body = {
            "msgid": msgid,
            "aibotid": "bot1",
            "chatid": GROUP_A,
            "chattype": "group",
            "from": {"userid": "wmWS1"},
            "msgtype": "text",
            "text": {"content": f"@助手 {text}"},
        }
        frame = {"cmd": "aibot_msg_callback", "headers": {"req_id": req_id}, "body": body}
        await self.sockets[-1].send_json(frame)


@pytest.fixture
async def wecom() -> AsyncIterator[tuple[FakeWeCom, str]]:
    fake = FakeWeCom()
    app = web.Application()
    app.router.add_get("/", fake.handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield fake, f"ws://{host}:{port}/"
    finally:
        await runner.cleanup()


async def eventually(check: Any, limit_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


def messages_of(app: App, member: str, day: date) -> int:
    with app.db.session() as s:
        row = activity.day_of(s, GROUP_A, member, day)
        return row.messages if row else 0


async def test_subscribe_message_reply_reconnect_and_push(
    app: App, clock: ManualClock, wecom: tuple[FakeWeCom, str]
) -> None:
    fake, url = wecom
    clock.set(datetime(2026, 11, 3, 2, 0, tzinfo=UTC))
    conn = AibotConnection(app, url, "bot1", SECRET, ping_seconds=0.05, min_backoff=0.01)
    task = asyncio.create_task(conn.run())
    try:
        await asyncio.wait_for(conn.connected.wait(), 5)
        assert fake.of("aibot_subscribe")[0]["body"] == {"bot_id": "bot1", "secret": SECRET}
        await eventually(lambda: len(fake.of("ping")) >= 2)

        await fake.message("req-in-1", "wsm1", "#打卡 Day2")
        await fake.message("req-in-1", "wsm1", "#打卡 Day2")  # redelivered: counted once
        await eventually(lambda: messages_of(app, "wmWS1", date(2026, 11, 3)) == 1)
        await conn.reply("req-in-1", {"msgtype": "markdown", "markdown": {"content": "收到"}})
        await eventually(lambda: len(fake.of("aibot_respond_msg")) == 1)
        assert fake.of("aibot_respond_msg")[0]["headers"]["req_id"] == "req-in-1"

        await fake.sockets[-1].close()  # WeCom drops the connection
        await eventually(lambda: conn.connects == 2)
        await asyncio.wait_for(conn.connected.wait(), 5)
        await conn.push(GROUP_A, "**今日打卡** 已开始")
        sent = fake.of("aibot_send_msg")[-1]["body"]
        assert sent == {
            "chatid": GROUP_A,
            "msgtype": "markdown",
            "markdown": {"content": "**今日打卡** 已开始"},
        }
        await fake.message("req-in-2", "wsm2", "第二条")
        await eventually(lambda: messages_of(app, "wmWS1", date(2026, 11, 3)) == 2)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_refused_subscription_backs_off_and_retries(
    app: App, wecom: tuple[FakeWeCom, str]
) -> None:
    fake, url = wecom
    conn = AibotConnection(app, url, "bot1", "wrong", min_backoff=0.01, max_backoff=0.02)
    task = asyncio.create_task(conn.run())
    try:
        await eventually(lambda: len(fake.of("aibot_subscribe")) >= 3)
        assert conn.connects == 0 and not conn.connected.is_set()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
