"""A thin async client for the WeCom server API calls the bot makes.

Why not wechatpy's ``WeChatClient`` in an executor: it is synchronous (``requests``), so every
call would hold a thread; its ``fetch_access_token`` hard-codes the ``qyapi.weixin.qq.com``
gettoken URL, so the fake server could only be reached by patching; and its retry-on-token-error
logic would hide the exact-one-retry behaviour we must control and test. The calls we need are six
small JSON requests, so an aiohttp client is less code than adapting wechatpy, and it shares the
event loop with the rest of the bot.

Errors are typed by what the caller should do: :class:`RetryableError` (5xx, network, timeout: try
again later), :class:`RateLimitedError` (45009: back off), :class:`WeComError` (any other errcode:
usually final). Token errors (40014, 42001, 40001) refresh the token and retry once here.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from bot.clock import Clock
from bot.config import ConfigError, Settings

log = logging.getLogger(__name__)

#: errcodes meaning "get a new access token and try again once" (PROTOCOL.md §4).
TOKEN_ERRORS = frozenset({40014, 42001, 40001})
RATE_LIMITED = 45009


class ApiError(Exception):
    """Base of every failure of a WeCom call."""

    reason = "error"


class RetryableError(ApiError):
    """Network error, timeout or HTTP 5xx: the call may or may not have reached WeCom; retry."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class WeComError(ApiError):
    """WeCom answered with a non-zero errcode."""

    def __init__(self, errcode: int, errmsg: str, path: str) -> None:
        super().__init__(f"{path}: errcode {errcode} {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg
        self.reason = f"errcode_{errcode}"


class RateLimitedError(WeComError):
    """errcode 45009: too many calls; back off before retrying."""


@dataclass
class _Token:
    value: str
    refresh_at: datetime


class WeComAPI:
    """Calls ``{api_base}/cgi-bin/...`` with a cached access token.

    ``clock`` decides when the cached token is stale (``expires_in`` minus ``token_margin``).
    Secrets are passed in by the caller (read from the environment), never logged.
    """

    def __init__(
        self,
        api_base: str,
        corp_id: str,
        corp_secret: str,
        clock: Clock,
        *,
        agent_id: int = 0,
        timeout: float = 10.0,
        token_margin: int = 300,
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self.corp_id = corp_id
        self._secret = corp_secret
        self.clock = clock
        self.agent_id = agent_id
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.token_margin = token_margin
        self._token: _Token | None = None
        self._token_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> WeComAPI:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        body: Any | None,
        form: aiohttp.FormData | None = None,
    ) -> dict[str, Any]:
        url = f"{self.api_base}{path}"
        payload: dict[str, Any] = {"data": form} if form is not None else {"json": body}
        try:
            async with self._http().request(
                method, url, params=params, timeout=self.timeout, **payload
            ) as resp:
                if resp.status >= 500:
                    raise RetryableError(f"{path}: HTTP {resp.status}", "http_5xx")
                if resp.status != 200:
                    raise WeComError(-1, f"HTTP {resp.status}", path)
                data = await resp.json(content_type=None)
        except TimeoutError:
            raise RetryableError(f"{path}: timed out", "timeout") from None
        except aiohttp.ClientError as exc:
            raise RetryableError(f"{path}: {type(exc).__name__}", "network") from None
        except ValueError:
            raise RetryableError(f"{path}: answer is not JSON", "bad_answer") from None
        if not isinstance(data, dict):
            raise RetryableError(f"{path}: answer is not a JSON object", "bad_answer")
        return data

    async def access_token(self, rejected: str | None = None) -> str:
        """The cached access token, fetched again when stale or when it is ``rejected`` (WeCom
        refused it; concurrent callers refused the same token refresh it once).

        ``GET /cgi-bin/gettoken?corpid=ID&corpsecret=SECRET`` (path/91039).
        """
        async with self._token_lock:
            now = self.clock.now()
            token = self._token
            if token is not None and now < token.refresh_at and token.value != rejected:
                return token.value
            data = await self._request(
                "GET",
                "/cgi-bin/gettoken",
                {"corpid": self.corp_id, "corpsecret": self._secret},
                None,
            )
            errcode = int(data.get("errcode", 0) or 0)
            if errcode:
                cls = RateLimitedError if errcode == RATE_LIMITED else WeComError
                raise cls(errcode, str(data.get("errmsg", "")), "/cgi-bin/gettoken")
            expires = int(data.get("expires_in", 7200))
            margin = min(self.token_margin, expires // 2)
            self._token = _Token(
                str(data["access_token"]), now + timedelta(seconds=expires - margin)
            )
            log.info("wecom access token refreshed, valid %s s", expires)
            return self._token.value

    async def call(
        self,
        path: str,
        body: Any | None = None,
        method: str = "POST",
        *,
        params: Mapping[str, str] | None = None,
        form: Callable[[], aiohttp.FormData] | None = None,
    ) -> dict[str, Any]:
        """Call ``path`` with the access token; refresh it and retry once on a token error.
        ``form`` builds a multipart body (built again for the retry: a form is sent once)."""
        rejected: str | None = None
        for attempt in (1, 2):
            token = await self.access_token(rejected)
            query = {**(params or {}), "access_token": token}
            data = await self._request(
                method, path, query, body, form() if form is not None else None
            )
            errcode = int(data.get("errcode", 0) or 0)
            if errcode in TOKEN_ERRORS and attempt == 1:
                log.info("wecom %s: errcode %s, refreshing the token once", path, errcode)
                rejected = token
                continue
            self._raise_for(errcode, data, path)
            return data
        raise AssertionError("unreachable")

    @staticmethod
    def _raise_for(errcode: int, data: dict[str, Any], path: str) -> None:
        if errcode == 0:
            return
        cls = RateLimitedError if errcode == RATE_LIMITED else WeComError
        raise cls(errcode, str(data.get("errmsg", "")), path)

    # -- the endpoints ---------------------------------------------------------------------

    async def webhook_send(self, key: str, message: dict[str, Any]) -> dict[str, Any]:
        """Post as a group robot: ``POST /cgi-bin/webhook/send?key=KEY`` (path/91770).

        No access token: the webhook key is the credential. 20 messages/min per robot.
        """
        path = "/cgi-bin/webhook/send"
        data = await self._request("POST", path, {"key": key}, message)
        self._raise_for(int(data.get("errcode", 0) or 0), data, path)
        return data

    async def message_send(self, message: dict[str, Any]) -> dict[str, Any]:
        """App message to internal members: ``POST /cgi-bin/message/send`` (path/90236).

        ``agentid`` is filled in. WeCom answers ok with ``invaliduser`` for unknown ids.
        """
        return await self.call("/cgi-bin/message/send", {"agentid": self.agent_id, **message})

    async def appchat_send(self, message: dict[str, Any]) -> dict[str, Any]:
        """Post in an app group chat: ``POST /cgi-bin/appchat/send`` (path/90248)."""
        return await self.call("/cgi-bin/appchat/send", message)

    async def add_msg_template(self, message: dict[str, Any]) -> dict[str, Any]:
        """Create a send task for a staff member's external contacts:
        ``POST /cgi-bin/externalcontact/add_msg_template`` (path/92135)."""
        return await self.call("/cgi-bin/externalcontact/add_msg_template", message)

    async def media_upload(self, data: bytes, filename: str, media_type: str = "image") -> str:
        """Upload a temporary media file and return its ``media_id`` (valid three days):
        ``POST /cgi-bin/media/upload?type=TYPE``, multipart field ``media`` (path/90253)."""

        def form() -> aiohttp.FormData:
            fd = aiohttp.FormData()
            fd.add_field("media", data, filename=filename, content_type="application/octet-stream")
            return fd

        answer = await self.call("/cgi-bin/media/upload", params={"type": media_type}, form=form)
        media_id = answer.get("media_id")
        if not isinstance(media_id, str) or not media_id:
            raise RetryableError("/cgi-bin/media/upload: no media_id in the answer", "bad_answer")
        return media_id

    async def groupchat_get(self, chat_id: str) -> dict[str, Any]:
        """Customer-group detail with members and join times:
        ``POST /cgi-bin/externalcontact/groupchat/get`` (path/92122)."""
        data = await self.call(
            "/cgi-bin/externalcontact/groupchat/get", {"chat_id": chat_id, "need_name": 1}
        )
        group = data.get("group_chat")
        return group if isinstance(group, dict) else {}


def client_from_settings(
    settings: Settings, clock: Clock, env: Mapping[str, str] | None = None
) -> WeComAPI:
    """A client for ``[wecom]``; the corp secret is read from the env var it names."""
    env = os.environ if env is None else env
    wecom = settings.wecom
    if not wecom.corp_id:
        raise ConfigError("wecom.corp_id: missing (needed to call the WeCom API)")
    secret = env.get(wecom.corp_secret_env, "")
    if not secret:
        raise ConfigError(
            f"wecom.corp_secret_env: environment variable {wecom.corp_secret_env} is not set"
        )
    return WeComAPI(
        wecom.api_base,
        wecom.corp_id,
        secret,
        clock,
        agent_id=wecom.agent_id,
        timeout=wecom.timeout_seconds,
        token_margin=wecom.token_margin_seconds,
    )
