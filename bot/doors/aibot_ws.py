"""The AI-bot long connection (智能机器人长连接, PROTOCOL.md §1, path/101463): an aiohttp
WebSocket client speaking WeCom's JSON frames ``{cmd, headers: {req_id}, body}``.

It subscribes with ``aibot_subscribe {bot_id, secret}``, sends ``ping`` every ``ping_seconds``,
reconnects with exponential backoff (and jitter) when the connection drops, turns inbound
``aibot_msg_callback`` / ``aibot_event_callback`` bodies into updates with the AI-bot callback's
parser and feeds them to the pipeline, answers with ``aibot_respond_msg`` reusing the inbound
``req_id`` (:meth:`AibotConnection.reply`), and pushes with ``aibot_send_msg``
(:meth:`AibotConnection.push`).

An aiohttp client rather than the official ``wecom-aibot-python-sdk``: the frames are few and
plain, the connection then shares the bot's event loop, session and test tooling, and no
further dependency is needed. The inbound ``req_id`` is kept in the update's raw payload
(``raw["req_id"]``) so a reply can find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from typing import Any

import aiohttp

from bot.app import App
from bot.doors.aibot import parse_body
from bot.doors.wire import DoorFormatError, store_form
from bot.updates import Door

log = logging.getLogger(__name__)

INBOUND = ("aibot_msg_callback", "aibot_event_callback")


class AibotWsError(RuntimeError):
    """WeCom refused a frame (``errcode`` != 0) or the connection is not up."""


class AibotConnection:
    """One AI bot's long connection, kept up until :meth:`close` (or task cancellation)."""

    def __init__(
        self,
        bot: App,
        url: str,
        bot_id: str,
        secret: str,
        ping_seconds: float = 30.0,
        min_backoff: float = 1.0,
        max_backoff: float = 60.0,
        ack_timeout: float = 10.0,
    ) -> None:
        self._bot = bot
        self._url = url
        self._bot_id = bot_id
        self._secret = secret
        self._ping = ping_seconds
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._ack_timeout = ack_timeout
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.connected = asyncio.Event()
        self.connects = 0  # successful subscriptions, for tests and logs

    # -- sending

    async def _request(self, cmd: str, body: dict[str, Any] | None, req_id: str = "") -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise AibotWsError("long connection is not up")
        frame: dict[str, Any] = {"cmd": cmd, "headers": {"req_id": req_id or uuid.uuid4().hex}}
        if body is not None:
            frame["body"] = body
        await ws.send_str(json.dumps(frame, ensure_ascii=False))

    async def _call(self, cmd: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """Send a frame of our own and wait for WeCom's answer with the same req_id."""
        req_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = future
        try:
            await self._request(cmd, body, req_id)
            answer = await asyncio.wait_for(future, self._ack_timeout)
        finally:
            self._waiting.pop(req_id, None)
        if answer.get("errcode", 0) != 0:
            raise AibotWsError(f"{cmd}: {answer.get('errcode')} {answer.get('errmsg', '')}")
        return answer

    async def reply(self, req_id: str, body: dict[str, Any]) -> None:
        """Answer an inbound message: ``aibot_respond_msg`` with the inbound ``req_id``."""
        await self._request("aibot_respond_msg", body, req_id)

    async def push(self, chat_id: str, markdown: str) -> None:
        """Active push to a chat: ``aibot_send_msg`` (markdown), waiting for WeCom's answer."""
        await self._call(
            "aibot_send_msg",
            {"chatid": chat_id, "msgtype": "markdown", "markdown": {"content": markdown}},
        )

    # -- the connection loop

    async def run(self) -> None:
        """Connect, subscribe, serve; on any failure wait (backoff with jitter) and reconnect."""
        backoff = self._min_backoff
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.ws_connect(self._url, autoping=True) as ws:
                        self._ws = ws
                        reader = asyncio.create_task(self._read(ws))
                        try:
                            await self._call(
                                "aibot_subscribe", {"bot_id": self._bot_id, "secret": self._secret}
                            )
                            self.connects += 1
                            backoff = self._min_backoff
                            self.connected.set()
                            log.info("AI-bot long connection subscribed")
                            pinger = asyncio.create_task(self._pinger())
                            try:
                                await reader
                            finally:
                                pinger.cancel()
                                with contextlib.suppress(asyncio.CancelledError):
                                    await pinger
                        finally:
                            reader.cancel()
                            with contextlib.suppress(asyncio.CancelledError, Exception):
                                await reader
                except asyncio.CancelledError:
                    raise
                except (aiohttp.ClientError, OSError, TimeoutError, AibotWsError) as exc:
                    log.warning("AI-bot long connection: %s", exc)
                finally:
                    self._ws = None
                    self.connected.clear()
                    for future in self._waiting.values():
                        if not future.done():
                            future.set_exception(AibotWsError("connection lost"))
                delay = backoff * (0.5 + random.random() / 2)
                backoff = min(backoff * 2, self._max_backoff)
                await asyncio.sleep(delay)

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(self._ping)
            try:
                await self._request("ping", None)
            except (AibotWsError, ConnectionError, aiohttp.ClientError) as exc:
                log.warning("AI-bot ping failed: %s", exc)
                return

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                frame = json.loads(msg.data)
            except ValueError:
                log.warning("AI-bot long connection: a frame that is not JSON")
                continue
            if not isinstance(frame, dict):
                continue
            headers = frame.get("headers")
            req_id = str(headers.get("req_id", "")) if isinstance(headers, dict) else ""
            cmd = frame.get("cmd")
            if cmd in INBOUND:
                await self._inbound(req_id, frame.get("body"))
                continue
            waiting = self._waiting.get(req_id)
            if waiting is not None and not waiting.done():
                waiting.set_result(frame)
        for future in self._waiting.values():  # the connection closed under them
            if not future.done():
                future.set_exception(AibotWsError("connection closed"))

    async def _inbound(self, req_id: str, body: Any) -> None:
        if not isinstance(body, dict):
            log.warning("AI-bot frame %s without a body", req_id)
            return
        received_at = self._bot.clock.now()
        stored = {**body, "req_id": req_id}
        try:
            update = parse_body(stored, received_at, Door.AIBOT_WS)
        except DoorFormatError as exc:
            log.warning("AI-bot frame %s refused: %s", req_id, exc)
            return
        if update is None:
            return
        payload = store_form(json.dumps(stored, ensure_ascii=False), received_at)
        await self._bot.pipeline.ingest([(update, payload)])
