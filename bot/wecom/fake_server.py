"""A fake WeCom server API (``qyapi.weixin.qq.com``) as an aiohttp app, shipped in the package.

Tests, ``cohortbot simulate`` and the demo point ``[wecom] api_base`` at it. It implements the
endpoints the bot calls with WeCom's own limits and errcodes, keeps time by its own clock (which
tests advance, or share with the bot's ``ManualClock``), can be told to fail the next calls, and
records every request it received.

Errcodes (global error code list: document path/90313):

=======  =====================================================================================
0        ok
40001    invalid credential: wrong ``corpsecret`` (path/91039, gettoken)
40013    invalid corpid (path/91039)
40014    invalid access_token
41001    access_token missing
42001    access_token expired (tokens live ``expires_in`` = 7200 s, path/91039)
40058    invalid parameter: webhook text over 2048 bytes or markdown over 4096 bytes (path/91770)
40009    invalid image size: robot image over 2 MB (path/91770)
301019   image md5 does not match its base64 content (path/91770; number *unconfirmed*)
45009    API frequency limit: robot webhook 20 messages/min per robot (path/91770)
93000    invalid webhook key (path/91770)
81013    every recipient of an app message is invalid (path/90236; partial: ``invaliduser``)
86003    app group chat does not exist (path/90248, appchat/send)
40050    chat id does not exist for this corp (path/92122, externalcontact/groupchat/get)
40008    invalid message type (path/90313)
40005    invalid media type: not a JPG/PNG image, or an unknown ``type`` (path/90253)
40006    invalid media size: 5 bytes or less, or an image over 10 MB (path/90253)
40007    invalid media_id: unknown, or uploaded more than 3 days ago (path/90253, 90236)
=======  =====================================================================================

App messages over a member's 30/min are *silently dropped* by WeCom (path/90236 limits): the
fake answers ok and keeps them in :attr:`FakeWeCom.dropped`, not :attr:`FakeWeCom.delivered`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from bot.clock import Clock, ManualClock

TEXT_LIMIT = 2048
MARKDOWN_LIMIT = 4096
IMAGE_LIMIT = 2 * 1024 * 1024
UPLOAD_IMAGE_LIMIT = 10 * 1024 * 1024  # media/upload, type image (path/90253)
MEDIA_LIFETIME = timedelta(days=3)
MEDIA_TYPES = ("image", "voice", "video", "file")
ROBOT_PER_MINUTE = 20
APP_PER_MEMBER_PER_MINUTE = 30
TOKEN_SECONDS = 7200

FAULTS = ("http500", "hang", "42001", "45009")


@dataclass
class Received:
    """One request as the fake saw it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    at: datetime
    answer: dict[str, Any] | None = None  # None: no WeCom answer (5xx, hang)


@dataclass(frozen=True)
class Media:
    """A temporary media file (``media/upload``): usable in messages for three days."""

    media_id: str
    type: str
    filename: str
    data: bytes
    created_at: datetime


@dataclass
class GroupChat:
    """A customer group as ``externalcontact/groupchat/get`` describes it (path/92122)."""

    chat_id: str
    name: str
    owner: str
    create_time: int
    members: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Fault:
    kind: str
    remaining: int
    path: str | None


class FakeWeCom:
    """State and handlers of the fake; :meth:`make_app` wraps them in an aiohttp app."""

    def __init__(
        self,
        corp_id: str = "wwfakecorp",
        secret: str = "fake-secret",
        clock: Clock | None = None,
        token_seconds: int = TOKEN_SECONDS,
        hang_seconds: float = 30.0,
    ) -> None:
        self.corp_id = corp_id
        self.secret = secret
        self.clock: Clock = clock or ManualClock(datetime(2026, 11, 1, tzinfo=UTC))
        self.token_seconds = token_seconds
        self.hang_seconds = hang_seconds
        self.received: list[Received] = []
        self.delivered: list[Received] = []  # accepted sends (errcode 0, not dropped)
        self.dropped: list[Received] = []  # app messages over the per-member limit
        self.groupchats: dict[str, GroupChat] = {}
        self.media: dict[str, Media] = {}
        self.robot_keys: set[str] | None = None  # None: any key is a robot
        self.app_chats: set[str] | None = None  # None: any chat id is an app group chat
        self.known_users: set[str] | None = None  # None: every userid exists
        self._tokens: dict[str, datetime] = {}
        self._token_ids = itertools.count(1)
        self._msg_ids = itertools.count(1)
        self._faults: list[_Fault] = []
        self._robot_sent: dict[str, deque[datetime]] = defaultdict(deque)
        self._member_sent: dict[str, deque[datetime]] = defaultdict(deque)
        self._release = asyncio.Event()
        self._hold_until = 0  # hold send answers until this many sends arrived (0: no hold)
        self._held = asyncio.Event()

    # -- control (tests) -------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the fake's own clock forward (only when it owns a ``ManualClock``)."""
        if not isinstance(self.clock, ManualClock):
            raise TypeError("advance() needs the fake to run on a ManualClock")
        self.clock.advance(timedelta(seconds=seconds))

    def fail(self, kind: str, times: int = 1, path: str | None = None) -> None:
        """Fail the next ``times`` calls (to ``path`` only, if given) with ``kind``.

        ``http500``: HTTP 500 with no JSON; ``hang``: never answer (until the server stops or
        ``hang_seconds`` pass); ``42001``: token expired; ``45009``: frequency limit.
        """
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {FAULTS}")
        self._faults.append(_Fault(kind, times, path))

    def hold_answers(self, until_received: int) -> None:
        """Keep every send call waiting until ``until_received`` send calls have arrived (then
        answer them all): makes concurrent clients overlap for certain, e.g. two delivery
        processes. Released anyway when the server stops or after ``hang_seconds``."""
        self._hold_until = until_received
        self._held = asyncio.Event()

    def add_groupchat(
        self, chat_id: str, name: str, owner: str, members: list[dict[str, Any]]
    ) -> GroupChat:
        """Register a customer group; ``members`` as in path/92122 (userid, type, join_time,
        join_scene, name, invitor)."""
        chat = GroupChat(chat_id, name, owner, int(self.clock.now().timestamp()), members)
        self.groupchats[chat_id] = chat
        return chat

    def calls(self, path: str) -> list[Received]:
        """Requests received on ``path`` (e.g. ``/cgi-bin/webhook/send``), in order."""
        return [r for r in self.received if r.path == path]

    def delivered_to(self, path: str) -> list[Any]:
        """Bodies of the accepted sends on ``path``."""
        return [r.body for r in self.delivered if r.path == path]

    # -- the aiohttp app -------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=UPLOAD_IMAGE_LIMIT + 64 * 1024)
        app.router.add_get("/cgi-bin/gettoken", self._gettoken)
        app.router.add_post("/cgi-bin/webhook/send", self._webhook_send)
        app.router.add_post("/cgi-bin/message/send", self._message_send)
        app.router.add_post("/cgi-bin/appchat/send", self._appchat_send)
        app.router.add_post("/cgi-bin/externalcontact/add_msg_template", self._add_msg_template)
        app.router.add_post("/cgi-bin/externalcontact/groupchat/get", self._groupchat_get)
        app.router.add_post("/cgi-bin/media/upload", self._media_upload)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, _app: web.Application) -> None:
        self._release.set()  # let hanging handlers end so the server stops promptly

    @asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Run on ``host`` (an ephemeral port by default); yields the base URL."""
        self._release = asyncio.Event()
        runner = web.AppRunner(self.make_app(), shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        try:
            yield f"http://{host}:{bound}"
        finally:
            self._release.set()
            await runner.cleanup()

    # -- plumbing --------------------------------------------------------------------------

    async def _record(self, request: web.Request, read_body: bool = True) -> Received:
        body: Any = None
        if request.method == "POST" and read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        item = Received(request.method, request.path, dict(request.query), body, self.clock.now())
        self.received.append(item)
        if self._hold_until and request.path != "/cgi-bin/gettoken":
            sends = sum(1 for r in self.received if r.path != "/cgi-bin/gettoken")
            if sends >= self._hold_until:
                self._held.set()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_held(), self.hang_seconds)
        return item

    async def _wait_held(self) -> None:
        release = asyncio.ensure_future(self._release.wait())
        held = asyncio.ensure_future(self._held.wait())
        try:
            await asyncio.wait({release, held}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            release.cancel()
            held.cancel()

    def _take_fault(self, path: str) -> str | None:
        for fault in self._faults:
            if fault.path in (None, path) and fault.remaining > 0:
                fault.remaining -= 1
                kind = fault.kind
                self._faults = [f for f in self._faults if f.remaining > 0]
                return kind
        return None

    async def _answer(self, item: Received, payload: dict[str, Any]) -> web.Response:
        payload.setdefault("errmsg", "ok" if payload.get("errcode", 0) == 0 else "error")
        item.answer = payload
        return web.json_response(payload)

    async def _faulted(self, item: Received) -> web.StreamResponse | None:
        """Apply a pending fault to this request, if any."""
        kind = self._take_fault(item.path)
        if kind is None:
            return None
        if kind == "http500":
            return web.Response(status=500, text="Internal Server Error")
        if kind == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.hang_seconds)
            return web.Response(status=504, text="Gateway Timeout")
        if kind == "42001":
            return await self._answer(item, {"errcode": 42001, "errmsg": "access_token expired"})
        return await self._answer(item, {"errcode": 45009, "errmsg": "api freq out of limit"})

    def _token_error(self, item: Received) -> dict[str, Any] | None:
        token = item.query.get("access_token")
        if not token:
            return {"errcode": 41001, "errmsg": "access_token missing"}
        expiry = self._tokens.get(token)
        if expiry is None:
            return {"errcode": 40014, "errmsg": "invalid access_token"}
        if self.clock.now() >= expiry:
            return {"errcode": 42001, "errmsg": "access_token expired"}
        return None

    def _within_limit(self, window: deque[datetime], limit: int) -> bool:
        now = self.clock.now()
        while window and window[0] <= now - timedelta(seconds=60):
            window.popleft()
        if len(window) >= limit:
            return False
        window.append(now)
        return True

    def _accept(self, item: Received, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        self.delivered.append(item)
        return {"errcode": 0, "errmsg": "ok", **(extra or {})}

    # -- endpoints -------------------------------------------------------------------------

    async def _gettoken(self, request: web.Request) -> web.StreamResponse:
        """``GET /cgi-bin/gettoken?corpid=ID&corpsecret=SECRET`` (path/91039)."""
        item = await self._record(request)
        faulted = await self._faulted(item)
        if faulted is not None:
            return faulted
        if item.query.get("corpid") != self.corp_id:
            return await self._answer(item, {"errcode": 40013, "errmsg": "invalid corpid"})
        if item.query.get("corpsecret") != self.secret:
            return await self._answer(item, {"errcode": 40001, "errmsg": "invalid credential"})
        token = f"fake-token-{next(self._token_ids)}"
        self._tokens[token] = self.clock.now() + timedelta(seconds=self.token_seconds)
        return await self._answer(
            item, {"errcode": 0, "access_token": token, "expires_in": self.token_seconds}
        )

    async def _webhook_send(self, request: web.Request) -> web.StreamResponse:
        """``POST /cgi-bin/webhook/send?key=KEY`` (path/91770). The robot webhook needs no
        access token: the key is the credential."""
        item = await self._record(request)
        faulted = await self._faulted(item)
        if faulted is not None:
            return faulted
        key = item.query.get("key", "")
        if not key or (self.robot_keys is not None and key not in self.robot_keys):
            return await self._answer(item, {"errcode": 93000, "errmsg": "invalid webhook url"})
        body = item.body if isinstance(item.body, dict) else {}
        problem = _check_robot_body(body)
        if problem is not None:
            return await self._answer(item, problem)
        # 20 messages/min per robot: the 21st within a minute is refused with 45009.
        if not self._within_limit(self._robot_sent[key], ROBOT_PER_MINUTE):
            return await self._answer(item, {"errcode": 45009, "errmsg": "api freq out of limit"})
        return await self._answer(item, self._accept(item))

    async def _message_send(self, request: web.Request) -> web.StreamResponse:
        """``POST /cgi-bin/message/send`` app message to internal members (path/90236)."""
        item = await self._record(request)
        faulted = await self._faulted(item) or await self._token_failure(item)
        if faulted is not None:
            return faulted
        body = item.body if isinstance(item.body, dict) else {}
        problem = _check_app_body(body, self.media_ok)
        if problem is not None:
            return await self._answer(item, problem)
        users = [u for u in str(body.get("touser", "")).split("|") if u]
        invalid = [u for u in users if self.known_users is not None and u not in self.known_users]
        valid = [u for u in users if u not in invalid]
        if not valid:
            return await self._answer(
                item, {"errcode": 81013, "errmsg": "user & party & tag all invalid"}
            )
        # Over 30/min for a member, WeCom drops the message silently (no errcode).
        kept = [
            u for u in valid if self._within_limit(self._member_sent[u], APP_PER_MEMBER_PER_MINUTE)
        ]
        if kept:
            self.delivered.append(item)
        else:
            self.dropped.append(item)
        return await self._answer(
            item,
            {
                "errcode": 0,
                "invaliduser": "|".join(invalid),
                "msgid": f"appmsg{next(self._msg_ids)}",
            },
        )

    async def _appchat_send(self, request: web.Request) -> web.StreamResponse:
        """``POST /cgi-bin/appchat/send`` to a group chat created by the app (path/90248)."""
        item = await self._record(request)
        faulted = await self._faulted(item) or await self._token_failure(item)
        if faulted is not None:
            return faulted
        body = item.body if isinstance(item.body, dict) else {}
        chat = str(body.get("chatid", ""))
        if not chat or (self.app_chats is not None and chat not in self.app_chats):
            return await self._answer(item, {"errcode": 86003, "errmsg": "chat not exist"})
        problem = _check_app_body(body, self.media_ok)
        if problem is not None:
            return await self._answer(item, problem)
        return await self._answer(item, self._accept(item))

    async def _add_msg_template(self, request: web.Request) -> web.StreamResponse:
        """``POST /cgi-bin/externalcontact/add_msg_template``: a send task the staff member
        ``sender`` confirms in their client (path/92135)."""
        item = await self._record(request)
        faulted = await self._faulted(item) or await self._token_failure(item)
        if faulted is not None:
            return faulted
        body = item.body if isinstance(item.body, dict) else {}
        if not body.get("sender") or not body.get("external_userid"):
            return await self._answer(
                item, {"errcode": 40058, "errmsg": "sender and external_userid are required"}
            )
        text = body.get("text", {}).get("content", "") if isinstance(body.get("text"), dict) else ""
        attachments = body.get("attachments") or []
        if not isinstance(attachments, list) or len(attachments) > 9:
            return await self._answer(item, {"errcode": 40058, "errmsg": "invalid attachments"})
        for a in attachments:
            image = a.get("image") if isinstance(a, dict) and a.get("msgtype") == "image" else None
            if not isinstance(image, dict) or not self.media_ok(image.get("media_id")):
                return await self._answer(item, {"errcode": 40007, "errmsg": "invalid media_id"})
        if (not text and not attachments) or len(text) > 4000:
            return await self._answer(item, {"errcode": 40058, "errmsg": "invalid text"})
        return await self._answer(
            item, self._accept(item, {"fail_list": [], "msgid": f"msgT{next(self._msg_ids)}"})
        )

    def media_ok(self, media_id: Any) -> bool:
        """Whether ``media_id`` names an uploaded file that has not expired."""
        media = self.media.get(str(media_id))
        return media is not None and self.clock.now() < media.created_at + MEDIA_LIFETIME

    async def _media_upload(self, request: web.Request) -> web.StreamResponse:
        """``POST /cgi-bin/media/upload?access_token=T&type=TYPE``, multipart field ``media``
        (path/90253): a temporary file, referred to by its ``media_id`` for three days."""
        item = await self._record(request, read_body=False)
        faulted = await self._faulted(item) or await self._token_failure(item)
        if faulted is not None:
            return faulted
        media_type = item.query.get("type", "")
        form = await request.post()
        field = form.get("media")
        if not isinstance(field, web.FileField):
            item.body = {"error": "no media field"}
            return await self._answer(item, {"errcode": 41004, "errmsg": "media field missing"})
        data = field.file.read()
        item.body = {"type": media_type, "filename": field.filename, "size": len(data)}
        if media_type not in MEDIA_TYPES:
            return await self._answer(item, {"errcode": 40005, "errmsg": "invalid media type"})
        if len(data) <= 5 or (media_type == "image" and len(data) > UPLOAD_IMAGE_LIMIT):
            return await self._answer(item, {"errcode": 40006, "errmsg": "invalid media size"})
        if media_type == "image" and not data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
            return await self._answer(item, {"errcode": 40005, "errmsg": "invalid media type"})
        now = self.clock.now()
        media = Media(f"fake-media-{next(self._msg_ids)}", media_type, field.filename, data, now)
        self.media[media.media_id] = media
        created = str(int(now.timestamp()))  # an upload is stored, not "delivered"
        return await self._answer(
            item,
            {"errcode": 0, "type": media_type, "media_id": media.media_id, "created_at": created},
        )

    async def _groupchat_get(self, request: web.Request) -> web.StreamResponse:
        """``POST /cgi-bin/externalcontact/groupchat/get`` customer-group detail (path/92122)."""
        item = await self._record(request)
        faulted = await self._faulted(item) or await self._token_failure(item)
        if faulted is not None:
            return faulted
        body = item.body if isinstance(item.body, dict) else {}
        chat = self.groupchats.get(str(body.get("chat_id", "")))
        if chat is None:
            return await self._answer(item, {"errcode": 40050, "errmsg": "chatid not found"})
        need_name = bool(body.get("need_name"))
        members = [{k: v for k, v in m.items() if k != "name" or need_name} for m in chat.members]
        return await self._answer(
            item,
            {
                "errcode": 0,
                "group_chat": {
                    "chat_id": chat.chat_id,
                    "name": chat.name,
                    "owner": chat.owner,
                    "create_time": chat.create_time,
                    "member_list": members,
                    "admin_list": [],
                },
            },
        )

    async def _token_failure(self, item: Received) -> web.StreamResponse | None:
        error = self._token_error(item)
        return None if error is None else await self._answer(item, error)


def _byte_len(text: Any) -> int:
    return len(str(text).encode("utf-8"))


def _check_robot_body(body: dict[str, Any]) -> dict[str, Any] | None:
    """WeCom's checks on a robot webhook message (path/91770), or None if it is acceptable."""
    msgtype = body.get("msgtype")
    part = body.get(msgtype) if isinstance(msgtype, str) else None
    if not isinstance(part, dict):
        return {"errcode": 40008, "errmsg": "invalid message type"}
    if msgtype == "text":
        if _byte_len(part.get("content", "")) > TEXT_LIMIT:
            return {"errcode": 40058, "errmsg": "text content exceed max length 2048"}
    elif msgtype == "markdown":
        if _byte_len(part.get("content", "")) > MARKDOWN_LIMIT:
            return {"errcode": 40058, "errmsg": "markdown content exceed max length 4096"}
    elif msgtype == "image":
        try:
            data = base64.b64decode(str(part.get("base64", "")), validate=True)
        except ValueError:
            return {"errcode": 40058, "errmsg": "invalid base64"}
        if len(data) > IMAGE_LIMIT:
            return {"errcode": 40009, "errmsg": "invalid image size"}
        if hashlib.md5(data).hexdigest() != part.get("md5"):
            return {"errcode": 301019, "errmsg": "media md5 not match"}
    elif msgtype not in ("news", "file", "template_card"):
        return {"errcode": 40008, "errmsg": "invalid message type"}
    return None


def _check_app_body(body: dict[str, Any], media_ok: Callable[[Any], bool]) -> dict[str, Any] | None:
    """Checks shared by app messages and app group chats (path/90236, 90248)."""
    msgtype = body.get("msgtype")
    part = body.get(msgtype) if isinstance(msgtype, str) else None
    if not isinstance(part, dict) or msgtype not in ("text", "markdown", "image"):
        return {"errcode": 40008, "errmsg": "invalid message type"}
    if msgtype == "image" and not media_ok(part.get("media_id")):
        return {"errcode": 40007, "errmsg": "invalid media_id"}
    if msgtype == "text" and _byte_len(part.get("content", "")) > TEXT_LIMIT:
        return {"errcode": 40058, "errmsg": "text content exceed max length 2048"}
    if msgtype == "markdown" and _byte_len(part.get("content", "")) > MARKDOWN_LIMIT:
        return {"errcode": 40058, "errmsg": "markdown content exceed max length 4096"}
    return None


def main(argv: list[str] | None = None) -> None:
    """Run the fake on its own: ``python -m bot.wecom.fake_server --port 8099`` (manual tests)."""
    import argparse

    from bot.clock import SystemClock

    parser = argparse.ArgumentParser(description="fake WeCom server API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--corp-id", default="wwfakecorp")
    parser.add_argument("--secret", default="fake-secret")
    args = parser.parse_args(argv)
    fake = FakeWeCom(corp_id=args.corp_id, secret=args.secret, clock=SystemClock())
    web.run_app(fake.make_app(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
