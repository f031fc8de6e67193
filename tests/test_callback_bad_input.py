"""SPEC §18 bad input against every callback route: a clear 4xx, never a 500, no state change.

Each test sends one kind of bad request to a real server and checks the status and that the
inbox (``raw_event``) is unchanged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from bot.clock import ManualClock
from bot.doors.crypto import encrypted_xml_body, signature, signed_request
from bot.simulate import aibot_json, app_text_xml, robot_xml
from tests.conftest import GROUP_A
from tests.serving import CORP_ID, PATHS, TOKEN, Running, door_crypto, running, server_settings

NOW = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)
TS = int(NOW.timestamp())
DOORS = ["robot", "aibot", "app"]
XML_DOORS = ["robot", "app"]


def plaintext_for(door: str, msgid: str = "m1") -> str:
    if door == "robot":
        return robot_xml(GROUP_A, "u1", "#打卡", msgid)
    if door == "aibot":
        return aibot_json(GROUP_A, "u1", "#打卡", msgid)
    return app_text_xml(CORP_ID, "u1", "#打卡", msgid, TS)


def body_for(door: str, encrypted: str) -> str:
    return json.dumps({"encrypt": encrypted}) if door == "aibot" else encrypted_xml_body(encrypted)


@pytest.fixture
async def srv(database_url: str) -> AsyncIterator[Running]:
    clock = ManualClock(NOW)
    async with running(server_settings(database_url, max_body_bytes=4096), clock) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, srv: Running, door: str, params: dict[str, str], body: str | bytes
) -> int:
    async with http.post(srv.url + PATHS[door], params=params, data=body) as resp:
        await resp.read()
        return resp.status


async def assert_untouched(srv: Running) -> None:
    assert await srv.raw_events() == 0


@pytest.mark.parametrize("door", DOORS)
async def test_wrong_signature_is_403(http: aiohttp.ClientSession, srv: Running, door: str) -> None:
    params, body = signed_request(door_crypto(door), plaintext_for(door), TS, door == "aibot")
    params["msg_signature"] = "0" * 40
    assert await post(http, srv, door, params, body) == 403
    echo = door_crypto(door).encrypt("12345")
    get = {"msg_signature": "0" * 40, "timestamp": str(TS), "nonce": "1", "echostr": echo}
    async with http.get(srv.url + PATHS[door], params=get) as resp:
        assert resp.status == 403
    forged = door_crypto(door, token="not-the-token")  # signed with another token
    params, body = signed_request(forged, plaintext_for(door), TS, door == "aibot")
    assert await post(http, srv, door, params, body) == 403
    await assert_untouched(srv)


@pytest.mark.parametrize("door", DOORS)
async def test_stale_timestamp_is_refused(
    http: aiohttp.ClientSession, srv: Running, door: str
) -> None:
    for ts in (TS - 301, TS + 301):
        params, body = signed_request(door_crypto(door), plaintext_for(door), ts, door == "aibot")
        assert await post(http, srv, door, params, body) == 403
    params, body = signed_request(door_crypto(door), plaintext_for(door), TS, door == "aibot")
    params["timestamp"] = "yesterday"
    assert await post(http, srv, door, params, body) == 400
    await assert_untouched(srv)


@pytest.mark.parametrize("door", DOORS)
async def test_replayed_request_is_refused_outside_the_window(
    http: aiohttp.ClientSession, srv: Running, door: str
) -> None:
    params, body = signed_request(door_crypto(door), plaintext_for(door), TS, door == "aibot")
    assert await post(http, srv, door, params, body) == 200
    await srv.settle()
    assert isinstance(srv.bot.clock, ManualClock)
    srv.bot.clock.advance(timedelta(minutes=10))
    assert await post(http, srv, door, params, body) == 403  # captured and replayed later
    assert await srv.raw_events() == 1


@pytest.mark.parametrize("door", DOORS)
async def test_garbage_base64_is_400(http: aiohttp.ClientSession, srv: Running, door: str) -> None:
    for garbage in ("not base64 at all!!", "QUJD", "A" * 63, "////"):
        nonce = "42"
        params = {
            "msg_signature": signature(TOKEN, str(TS), nonce, garbage),
            "timestamp": str(TS),
            "nonce": nonce,
        }
        assert await post(http, srv, door, params, body_for(door, garbage)) == 400
        get = {**params, "echostr": garbage}
        async with http.get(srv.url + PATHS[door], params=get) as resp:
            assert resp.status == 400
    await assert_untouched(srv)


@pytest.mark.parametrize("door", DOORS)
async def test_wrong_aes_key_is_refused(
    http: aiohttp.ClientSession, srv: Running, door: str
) -> None:
    other_key = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"
    for i in range(5):  # decrypting with the wrong key yields different noise each time
        crypto = door_crypto(door, key=other_key)
        params, body = signed_request(crypto, plaintext_for(door, f"m{i}"), TS, door == "aibot")
        assert await post(http, srv, door, params, body) in (400, 403)
    await assert_untouched(srv)


@pytest.mark.parametrize("door", XML_DOORS)
async def test_xml_with_entities_is_400(
    http: aiohttp.ClientSession, srv: Running, door: str
) -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    )
    crypto = door_crypto(door)
    encrypted = crypto.encrypt(plaintext_for(door))
    params = {"msg_signature": crypto.sign(str(TS), "7", encrypted), "timestamp": str(TS)}
    params["nonce"] = "7"
    outer = bomb + encrypted_xml_body(encrypted).replace("<Encrypt>", "<Encrypt>&b;", 1)
    assert await post(http, srv, door, params, outer) == 400
    external = '<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + encrypted_xml_body(
        encrypted
    )
    assert await post(http, srv, door, params, external) == 400
    # The same inside a correctly encrypted and signed payload.
    inner = bomb + plaintext_for(door).replace("#打卡", "&b;")
    params, body = signed_request(crypto, inner, TS, json_body=False)
    assert await post(http, srv, door, params, body) == 400
    await assert_untouched(srv)


@pytest.mark.parametrize("door", DOORS)
async def test_oversized_body_is_413(http: aiohttp.ClientSession, srv: Running, door: str) -> None:
    params, body = signed_request(
        door_crypto(door),
        plaintext_for(door).replace("#打卡", "#打卡" + "长" * 3000),
        TS,
        door == "aibot",
    )
    assert len(body.encode()) > 4096
    assert await post(http, srv, door, params, body) == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit still holds
        for _ in range(10):
            yield b"x" * 1000

    async with http.post(srv.url + PATHS[door], params=params, data=chunks()) as resp:
        assert resp.status == 413
    await assert_untouched(srv)


@pytest.mark.parametrize("door", DOORS)
async def test_wrong_shape_is_400(http: aiohttp.ClientSession, srv: Running, door: str) -> None:
    crypto = door_crypto(door)
    envelopes = (
        ['{"encrypt": 5}', "[]", '{"Encrypt": "abc"}', "not json", "<xml></xml>"]
        if door == "aibot"
        else [
            "<xml><Other>1</Other></xml>",
            "<xml><Encrypt><a>1</a></Encrypt></xml>",
            "<root/>",
            '{"encrypt": "x"}',
            "<xml><Encrypt>",
            '<?xml version="1.0" encoding="x-bogus"?><xml><Encrypt>abc</Encrypt></xml>',
        ]
    )
    for envelope in envelopes:
        params = {"msg_signature": crypto.sign(str(TS), "1", "abc"), "timestamp": str(TS)}
        params["nonce"] = "1"
        assert await post(http, srv, door, params, envelope) == 400, envelope
    # Well encrypted and signed, but the plaintext is not a message of this door.
    wrong = (
        ['{"msgid": "m1"}', "[1, 2]", '{"msgtype": "text", "from": "u1"}']
        if door == "aibot"
        else ["<xml><MsgType>text</MsgType></xml>", "<xml>", '{"msgid": "m1"}']
    )
    for plaintext in wrong:
        params, body = signed_request(crypto, plaintext, TS, door == "aibot")
        assert await post(http, srv, door, params, body) == 400, plaintext
    await assert_untouched(srv)


@pytest.mark.parametrize("door", DOORS)
async def test_missing_query_parameters_are_400(
    http: aiohttp.ClientSession, srv: Running, door: str
) -> None:
    params, body = signed_request(door_crypto(door), plaintext_for(door), TS, door == "aibot")
    for name in ("msg_signature", "timestamp", "nonce"):
        partial = {k: v for k, v in params.items() if k != name}
        assert await post(http, srv, door, partial, body) == 400
    async with http.get(srv.url + PATHS[door], params=params) as resp:  # no echostr
        assert resp.status == 400
        assert "echostr" in await resp.text()
    await assert_untouched(srv)
