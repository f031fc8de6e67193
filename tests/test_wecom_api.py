"""The WeCom API client and the fake WeCom server's own rules, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from bot.clock import ManualClock
from bot.wecom.api import RateLimitedError, RetryableError, WeComAPI, WeComError
from bot.wecom.fake_server import FakeWeCom

CORP = "wwtestcorp"
SECRET = "test-secret"


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeWeCom, str]]:
    fake = FakeWeCom(corp_id=CORP, secret=SECRET)  # the fake keeps its own clock
    async with fake.serve() as url:
        yield fake, url


@pytest.fixture
def bot_clock() -> ManualClock:
    return ManualClock(datetime(2026, 11, 1, tzinfo=UTC))


async def test_expired_token_is_refreshed_and_the_call_retried_once(
    served: tuple[FakeWeCom, str], bot_clock: ManualClock
) -> None:
    fake, url = served
    async with WeComAPI(url, CORP, SECRET, bot_clock, timeout=2) as api:
        await api.appchat_send({"chatid": "c1", "msgtype": "text", "text": {"content": "1"}})
        fake.advance(7201)  # WeCom's clock says the token expired; ours has not noticed
        await api.appchat_send({"chatid": "c1", "msgtype": "text", "text": {"content": "2"}})
    answers = [(r.path.rsplit("/", 1)[-1], (r.answer or {}).get("errcode")) for r in fake.received]
    assert answers == [("gettoken", 0), ("send", 0), ("send", 42001), ("gettoken", 0), ("send", 0)]


async def test_token_is_cached_until_the_margin(
    served: tuple[FakeWeCom, str], bot_clock: ManualClock
) -> None:
    fake, url = served
    async with WeComAPI(url, CORP, SECRET, bot_clock, token_margin=300) as api:
        first = await api.access_token()
        bot_clock.advance(timedelta(seconds=7200 - 301))
        assert await api.access_token() == first
        bot_clock.advance(timedelta(seconds=2))
        assert await api.access_token() != first
    assert len(fake.calls("/cgi-bin/gettoken")) == 2


async def test_bad_credentials_and_bad_tokens(
    served: tuple[FakeWeCom, str], bot_clock: ManualClock
) -> None:
    _fake, url = served
    async with WeComAPI(url, CORP, "wrong", bot_clock) as api:
        with pytest.raises(WeComError) as err:
            await api.access_token()
        assert err.value.errcode == 40001
    async with WeComAPI(url, "wwother", SECRET, bot_clock) as api:
        with pytest.raises(WeComError) as err:
            await api.access_token()
        assert err.value.errcode == 40013
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/cgi-bin/appchat/send?access_token=forged", json={}) as r:
            assert (await r.json())["errcode"] == 40014
        async with http.post(f"{url}/cgi-bin/appchat/send", json={}) as r:
            assert (await r.json())["errcode"] == 41001


async def test_faults_become_typed_errors(
    served: tuple[FakeWeCom, str], bot_clock: ManualClock
) -> None:
    fake, url = served
    fake.hang_seconds = 5
    async with WeComAPI(url, CORP, SECRET, bot_clock, timeout=10) as api:
        fake.fail("http500", path="/cgi-bin/webhook/send")
        with pytest.raises(RetryableError) as retry:
            await api.webhook_send("k", {"msgtype": "text", "text": {"content": "x"}})
        assert retry.value.reason == "http_5xx"
        fake.fail("hang", path="/cgi-bin/webhook/send")
        api.timeout = aiohttp.ClientTimeout(total=0.3)
        with pytest.raises(RetryableError) as retry:
            await api.webhook_send("k", {"msgtype": "text", "text": {"content": "x"}})
        assert retry.value.reason == "timeout"
        api.timeout = aiohttp.ClientTimeout(total=10)
        fake.fail("45009", path="/cgi-bin/webhook/send")
        with pytest.raises(RateLimitedError):
            await api.webhook_send("k", {"msgtype": "text", "text": {"content": "x"}})
    async with WeComAPI("http://127.0.0.1:9", CORP, SECRET, bot_clock, timeout=1) as api:
        with pytest.raises(RetryableError) as retry:
            await api.access_token()
        assert retry.value.reason == "network"


async def test_fake_webhook_enforces_wecom_limits(
    served: tuple[FakeWeCom, str], bot_clock: ManualClock
) -> None:
    fake, url = served
    async with WeComAPI(url, CORP, SECRET, bot_clock) as api:
        with pytest.raises(WeComError) as err:
            await api.webhook_send(
                "k", {"msgtype": "markdown", "markdown": {"content": "字" * 1366}}
            )
        assert err.value.errcode == 40058  # 4098 bytes
        await api.webhook_send("k", {"msgtype": "markdown", "markdown": {"content": "字" * 1365}})
        with pytest.raises(WeComError) as err:
            await api.webhook_send("k", {"msgtype": "text", "text": {"content": "a" * 2049}})
        assert err.value.errcode == 40058
        data = b"\x89PNG fake image"
        good = {"base64": base64.b64encode(data).decode(), "md5": hashlib.md5(data).hexdigest()}
        await api.webhook_send("k", {"msgtype": "image", "image": good})
        with pytest.raises(WeComError) as err:
            await api.webhook_send("k", {"msgtype": "image", "image": {**good, "md5": "0" * 32}})
        assert err.value.errcode == 301019
        for i in range(18):  # 2 accepted so far: 20 in all
            await api.webhook_send("k", {"msgtype": "text", "text": {"content": str(i)}})
        with pytest.raises(RateLimitedError):
            await api.webhook_send("k", {"msgtype": "text", "text": {"content": "21st"}})
        await api.webhook_send("other", {"msgtype": "text", "text": {"content": "own limit"}})
        fake.advance(60)
        await api.webhook_send("k", {"msgtype": "text", "text": {"content": "next minute"}})
    assert len(fake.delivered_to("/cgi-bin/webhook/send")) == 22


async def test_fake_app_message_invaliduser_and_silent_drop(
    served: tuple[FakeWeCom, str], bot_clock: ManualClock
) -> None:
    fake, url = served
    fake.known_users = {"alice"}
    async with WeComAPI(url, CORP, SECRET, bot_clock, agent_id=7) as api:
        data = await api.message_send(
            {"touser": "alice|ghost", "msgtype": "text", "text": {"content": "hi"}}
        )
        assert data["invaliduser"] == "ghost"
        with pytest.raises(WeComError) as err:
            await api.message_send({"touser": "ghost", "msgtype": "text", "text": {"content": "x"}})
        assert err.value.errcode == 81013
        for _ in range(30):
            await api.message_send({"touser": "alice", "msgtype": "text", "text": {"content": "x"}})
    assert len(fake.delivered) == 30 and len(fake.dropped) == 1
    assert fake.calls("/cgi-bin/message/send")[0].body["agentid"] == 7


async def test_concurrent_calls_refresh_a_rejected_token_once(
    served: tuple[FakeWeCom, str], bot_clock: ManualClock
) -> None:
    fake, url = served
    body = {"chatid": "c1", "msgtype": "text", "text": {"content": "x"}}
    async with WeComAPI(url, CORP, SECRET, bot_clock) as api:
        await api.appchat_send(body)
        fake.advance(7201)
        await asyncio.gather(*(api.appchat_send(body) for _ in range(5)))
    assert len(fake.calls("/cgi-bin/gettoken")) == 2
    assert len(fake.delivered) == 6
