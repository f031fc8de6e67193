"""The callback doors through a real server on 127.0.0.1: PROTOCOL.md vectors, parsing into
updates, the durable inbox and its worker, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.clock import ManualClock
from bot.doors import aibot, robot
from bot.doors import app as app_door
from bot.doors.crypto import signed_request
from bot.doors.wire import store_form
from bot.server import CALLBACKS
from bot.simulate import (
    aibot_json,
    app_member_change_xml,
    app_msgaudit_notify_xml,
    app_text_xml,
    post_callback,
    robot_xml,
)
from bot.updates import Door, Event
from storage import activity, roster
from storage.inbox import RawEvent
from tests.conftest import GROUP_A
from tests.serving import CORP_ID, ENV, PATHS, door_crypto, running, server_settings

VECTOR_A = {
    "token": "QDG6eK",
    "key": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
    "corp_id": "wx5823bf96d3bd56c7",
}
ENC_A = (
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj91"
    "1L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdn"
    "LxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+B"
    "CA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZp"
    "S+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q=="
)
NOW = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai on learning day 2


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_vector_a_url_check_and_message_through_the_app_route(
    database_url: str, http: aiohttp.ClientSession
) -> None:
    settings = server_settings(database_url, corp_id=VECTOR_A["corp_id"])
    env = {"COHORTBOT_APP_TOKEN": VECTOR_A["token"], "COHORTBOT_APP_AES_KEY": VECTOR_A["key"]}
    clock = ManualClock(datetime.fromtimestamp(1409659700, tz=UTC))
    async with running(settings, clock, env) as srv:
        url = srv.url + "/wecom/app"
        async with http.get(
            url,
            params={
                "msg_signature": "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3",
                "timestamp": "1409659589",
                "nonce": "263014780",
                "echostr": "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp"
                "+4RPcs8TgAE7OaBO+FZXvnaqQ==",
            },
        ) as resp:
            assert (resp.status, await resp.text()) == (200, "1616140317555161061")
        body = (
            "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA["
            f"{ENC_A}]]></Encrypt><AgentID><![CDATA[218]]></AgentID></xml>"
        )
        params = {
            "msg_signature": "477715d11cdb4164915debcba66cb864d751f3e6",
            "timestamp": "1409659813",
            "nonce": "1372623149",
        }
        async with http.post(url, params=params, data=body) as resp:
            assert (resp.status, await resp.text()) == (200, "")
        async with http.post(url, params=params, data=body) as resp:  # WeCom's retry
            assert resp.status == 200
        await srv.settle()
        assert await srv.raw_events() == 1
        with srv.bot.db.session() as s:
            from storage.inbox import RawEvent

            row = s.query(RawEvent).one()
        update = app_door.parse_payload(row.payload)
        assert update is not None
        assert (update.door, update.message_id, update.sender_id, update.text) == (
            Door.APP,
            "4561255354251345929",
            "mycreate",
            "hello",
        )
        assert update.sent_at == datetime.fromtimestamp(1409659813, tz=UTC)
        assert row.processed_at is not None and row.error is None


@pytest.mark.parametrize("door", ["robot", "aibot"])
async def test_vector_c_url_check_with_empty_receive_id(
    database_url: str, http: aiohttp.ClientSession, door: str
) -> None:
    settings = server_settings(database_url)
    env = {
        f"COHORTBOT_{door.upper()}_TOKEN": "xxx",
        f"COHORTBOT_{door.upper()}_AES_KEY": "x" * 43,
    }
    clock = ManualClock(datetime.fromtimestamp(1703041184, tz=UTC))
    async with running(settings, clock, env) as srv:
        params = {
            "msg_signature": "09380007d4f0891d966988e5450ad794c77fa01c",
            "timestamp": "1703041184",
            "nonce": "1703023880",
            "echostr": "oCdlC8pJ/DIjXnC8F9reyjDYlSImCmIgxA4prPD+l2Fj5qBHjFiWnpelQofsDCJrSEvNVTET6"
            "oQmoXLQxzUkyQ==",
        }
        async with http.get(srv.url + PATHS[door], params=params) as resp:
            assert (resp.status, await resp.text()) == (200, "6534946348215556778")


async def test_robot_and_aibot_messages_count_once_after_the_answer(
    database_url: str, http: aiohttp.ClientSession
) -> None:
    clock = ManualClock(NOW)
    async with running(server_settings(database_url), clock) as srv:
        ts = int(NOW.timestamp())
        robot_url, aibot_url = srv.url + PATHS["robot"], srv.url + PATHS["aibot"]
        rc, ac = door_crypto("robot"), door_crypto("aibot")
        robot_msg = robot_xml(GROUP_A, "u1", "@助手 #打卡 Day2", "r1")
        aibot_msg = aibot_json(GROUP_A, "u2", "@助手 今天学完了", "a1")
        before = CALLBACKS.value(door="robot", status="200")
        # Each delivered three times, concurrently (WeCom's retries).
        answers = await asyncio.gather(
            *(post_callback(http, robot_url, rc, robot_msg, False, ts) for _ in range(3)),
            *(post_callback(http, aibot_url, ac, aibot_msg, True, ts) for _ in range(3)),
        )
        assert {a for a in answers} == {(200, "")}
        await srv.settle()
        assert await srv.raw_events() == 2
        with srv.bot.db.session() as s:
            u1 = activity.day_of(s, GROUP_A, "u1", date(2026, 11, 3))
            u2 = activity.day_of(s, GROUP_A, "u2", date(2026, 11, 3))
        assert u1 is not None and (u1.messages, u1.checkins) == (1, 1)
        assert u2 is not None and u2.messages == 1
        assert CALLBACKS.value(door="robot", status="200") == before + 3


async def test_a_graceful_stop_leaves_no_journal_behind(
    database_url: str, http: aiohttp.ClientSession
) -> None:
    """On SQLite the answered callbacks wait in the inbox journal; stopping moves them into the
    table (the worker is held back here, so only the stop can have moved them)."""
    settings = server_settings(database_url, inbox_idle_ms=10000, inbox_max_lag_ms=600000)
    async with running(settings, ManualClock(NOW)) as srv:
        ts = int(NOW.timestamp())
        for i in range(3):
            msg = robot_xml(GROUP_A, "u1", f"第{i}条", f"stop{i}")
            answer = await post_callback(
                http, srv.url + PATHS["robot"], door_crypto("robot"), msg, False, ts
            )
            assert answer == (200, "")
        journal = srv.server.writer.journal
        if journal is not None:
            assert list(journal.directory.glob("*.journal"))
        db = srv.bot.db
    try:
        with Session(db.engine) as s:
            keys = set(s.scalars(select(RawEvent.event_key)))
    finally:
        db.dispose()
    assert keys == {"stop0", "stop1", "stop2"}
    if journal is not None:
        assert not list(journal.directory.glob("*.journal"))


async def test_a_body_split_across_tcp_segments_is_read_whole(database_url: str) -> None:
    """WeCom's request may reach us in several segments; the route reads until the body ends
    (a single read returns only what has arrived)."""
    clock = ManualClock(NOW)
    async with running(server_settings(database_url), clock) as srv:
        ts = int(NOW.timestamp())
        plaintext = robot_xml(GROUP_A, "u1", "@助手 #打卡 Day2", "split1")
        params, body = signed_request(door_crypto("robot"), plaintext, ts, False)
        payload = body.encode()
        host, port = srv.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        head = (
            f"POST {PATHS['robot']}?{urlencode(params)} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: text/xml\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode() + payload[:100])
        await writer.drain()
        await asyncio.sleep(0.05)  # the server reads the first part on its own
        writer.write(payload[100:])
        await writer.drain()
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        await srv.settle()
        assert await srv.raw_events() == 1


async def test_app_member_events_become_joins_and_leaves(
    database_url: str, http: aiohttp.ClientSession
) -> None:
    clock = ManualClock(NOW)
    async with running(server_settings(database_url), clock) as srv:
        ts = int(NOW.timestamp())
        url, crypto = srv.url + PATHS["app"], door_crypto("app")
        joined = app_member_change_xml(CORP_ID, GROUP_A, "add_member", ["wmA", "wmB"], ts, 3)
        left = app_member_change_xml(CORP_ID, GROUP_A, "del_member", ["wmB"], ts + 60)
        for plaintext in (joined, joined, left):
            assert await post_callback(http, url, crypto, plaintext, False, ts) == (200, "")
        await srv.settle()
        assert await srv.raw_events() == 2  # the retried join is one event (stable key)
        with srv.bot.db.session() as s:
            a = roster.get_membership(s, GROUP_A, "wmA")
            b = roster.get_membership(s, GROUP_A, "wmB")
        assert a is not None and a.left_at is None and a.join_scene == 3
        assert b is not None and b.left_at is not None


async def test_msgaudit_notify_wakes_the_archive_poller(
    database_url: str, http: aiohttp.ClientSession
) -> None:
    clock = ManualClock(NOW)
    async with running(server_settings(database_url), clock) as srv:
        woken: list[int] = []
        srv.server.on_msgaudit_notify.append(lambda: woken.append(1))
        ts = int(NOW.timestamp())
        plaintext = app_msgaudit_notify_xml(CORP_ID, ts)
        status = await post_callback(
            http, srv.url + "/wecom/app", door_crypto("app"), plaintext, False, ts
        )
        assert status == (200, "") and woken == [1]


async def test_health_and_readiness(database_url: str, http: aiohttp.ClientSession) -> None:
    async with running(server_settings(database_url), ManualClock(NOW)) as srv:
        async with http.get(srv.url + "/healthz") as resp:
            assert resp.status == 200
        async with http.get(srv.url + "/readyz") as resp:
            assert resp.status == 200, await resp.text()
        srv.server.writer.stop()
        async with http.get(srv.url + "/readyz") as resp:
            assert resp.status == 503
            assert "inbox writer not running" in await resp.text()
        srv.server.writer.start()


async def test_doors_without_secrets_are_not_served(
    database_url: str, http: aiohttp.ClientSession
) -> None:
    async with (
        running(server_settings(database_url), ManualClock(NOW), env={}) as srv,
        http.get(srv.url + "/wecom/robot") as resp,
    ):
        assert resp.status == 404


def test_parsers_turn_wire_payloads_into_updates() -> None:
    at = NOW
    update = robot.parse_payload(
        store_form(robot_xml(GROUP_A, "u1", "@bot 打卡 Day2", "m1", "小鱼"), at)
    )
    assert update is not None
    assert (update.chat_id, update.sender_name, update.text, update.mentioned_bot) == (
        GROUP_A,
        "小鱼",
        "打卡 Day2",
        True,
    )
    assert update.sent_at == at
    single = aibot.parse_plain(aibot_json("", "wmX", "你好", "a9", quote="原话"), at)
    assert single is not None and single.chat_id == "" and single.text == "你好"
    assert single.raw["quote"]["text"]["content"] == "原话"
    event = app_door.parse_plain(
        app_member_change_xml(CORP_ID, GROUP_A, "add_member", ["wmA"], 1_790_000_000, 2), at
    )
    assert event is not None and event.event is Event.MEMBER_JOINED
    assert dict(event.event_data)["member_ids"] == ["wmA"] and event.event_data["join_scene"] == 2
    again = app_door.parse_plain(
        app_member_change_xml(CORP_ID, GROUP_A, "add_member", ["wmA"], 1_790_000_000, 2), at
    )
    assert again is not None and again.message_id == event.message_id
    later = app_door.parse_plain(
        app_member_change_xml(CORP_ID, GROUP_A, "add_member", ["wmA"], 1_790_000_001, 2), at
    )
    assert later is not None and later.message_id != event.message_id
    text = app_door.parse_plain(
        app_text_xml(CORP_ID, "teacher1", "/digest", "777", 1_790_000_000), at
    )
    assert text is not None and text.message_id == "777" and text.sent_at.year == 2026
    assert timedelta(0) == text.sent_at - datetime.fromtimestamp(1_790_000_000, tz=UTC)


async def test_secrets_never_reach_the_logs(
    database_url: str, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.serving import AES_KEY, TOKEN

    caplog.set_level(logging.DEBUG)
    clock = ManualClock(NOW)
    env = {k: v for k, v in ENV.items() if not k.startswith("COHORTBOT_APP")}
    async with running(server_settings(database_url), clock, env) as srv:
        ts = int(NOW.timestamp())
        plaintext = robot_xml(GROUP_A, "u1", "hi", "log1")
        await post_callback(
            http, srv.url + PATHS["robot"], door_crypto("robot"), plaintext, False, ts
        )
        forged = door_crypto("robot", token="forged")
        await post_callback(http, srv.url + PATHS["robot"], forged, plaintext, False, ts)
        await srv.settle()
    assert "app callback off" in caplog.text  # the operator is told which variables to set
    assert TOKEN not in caplog.text and AES_KEY not in caplog.text
