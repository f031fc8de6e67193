"""The outbox and its delivery worker against the fake WeCom server, on SQLite and PostgreSQL.

The fake runs on 127.0.0.1 (ephemeral port) and shares the test's ManualClock, so its rate
limits and token expiry move with the clock the worker reads; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import random
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy.exc import OperationalError

from bot import metrics
from bot.app import App
from bot.cards import member
from bot.cards.fonts import FontNotFoundError
from bot.cards.render import MAX_BYTES
from bot.clock import ManualClock
from bot.config import Settings, parse_settings
from bot.outbound import Channel, Kind, Outbound
from bot.wecom import delivery
from bot.wecom.api import RetryableError, WeComAPI, WeComError
from bot.wecom.delivery import DeliveryWorker
from bot.wecom.fake_server import FakeWeCom
from bot.wecom.sender import OutboxSender, split_bytes
from storage import outbox, roster
from storage.db import Database
from tests.cardfont import cjk_font_or_skip, sample_card
from tests.conftest import GROUP_A, GROUP_B, base_config

CORP = "wwtestcorp"
SECRET = "test-secret"
ROBOT_KEY = "robot-key-a"
WEBHOOK = "/cgi-bin/webhook/send"
APP_SEND = "/cgi-bin/message/send"
TEMPLATE = "/cgi-bin/externalcontact/add_msg_template"
GETTOKEN = "/cgi-bin/gettoken"


def outbox_config(database_url: str) -> dict[str, Any]:
    config = copy.deepcopy(base_config(database={"url": database_url}))
    groups = config["cohorts"][0]["groups"]
    groups[0]["robot_key_env"] = "ROBOT_A"
    groups[1]["post_via"] = "appchat"
    config["wecom"] = {"corp_id": CORP, "agent_id": 1000002, "claim_lease_seconds": 120}
    return config


@dataclass
class Harness:
    app: App
    fake: FakeWeCom
    api: WeComAPI
    worker: DeliveryWorker
    clock: ManualClock
    url: str

    def worker_on(self, db: Database) -> DeliveryWorker:
        """A second worker (another replica) on its own connection pool."""
        return DeliveryWorker(
            self.app.settings, db, self.api, self.clock, env={"ROBOT_A": ROBOT_KEY}
        )

    async def queue(self, *messages: Outbound, sender: OutboxSender | None = None) -> None:
        async with self.app.db.unit_of_work() as uow:
            for message in messages:
                await (sender or self.app.sender).send(message, uow)

    def rows(self) -> list[outbox.OutboxRow]:
        with self.app.db.session() as s:
            return outbox.all_rows(s)


@pytest.fixture
def out_settings(database_url: str) -> Settings:
    return parse_settings(outbox_config(database_url), env={})


@pytest.fixture
async def h(out_settings: Settings, clock: ManualClock) -> AsyncIterator[Harness]:
    fake = FakeWeCom(corp_id=CORP, secret=SECRET, clock=clock)
    app = App.open(out_settings, clock=clock, sender=OutboxSender(out_settings, clock))
    async with fake.serve() as url:
        api = WeComAPI(url, CORP, SECRET, clock, agent_id=1000002, timeout=10)
        worker = DeliveryWorker(
            out_settings, app.db, api, clock, env={"ROBOT_A": ROBOT_KEY}, rng=random.Random(7)
        )
        try:
            yield Harness(app, fake, api, worker, clock, url)
        finally:
            await api.close()
            app.close()


def group(text: str, key: str, **kw: Any) -> Outbound:
    return Outbound(Channel.GROUP, GROUP_A, text, key=key, **kw)


async def test_group_text_goes_to_the_robot_webhook(h: Harness) -> None:
    before = metrics.OUTBOX_SENT.value(channel="robot")
    await h.queue(group("大家好", "hello:1", mentions=("wmU1",)))
    report = await h.worker.deliver_due()
    assert report.sent == 1
    (call,) = h.fake.calls(WEBHOOK)
    assert call.query == {"key": ROBOT_KEY}
    assert call.body == {
        "msgtype": "text",
        "text": {"content": "大家好", "mentioned_list": ["wmU1"]},
    }
    (row,) = h.rows()
    assert (row.status, row.door, row.attempts, row.sent_at) == ("sent", "robot", 1, h.clock.now())
    assert metrics.OUTBOX_SENT.value(channel="robot") == before + 1
    assert (await h.worker.deliver_due()).sent == 0  # nothing left


async def test_nothing_is_queued_when_the_transaction_rolls_back(h: Harness) -> None:
    async def failing_handler() -> None:
        async with h.app.db.unit_of_work() as uow:
            await h.app.sender.send(group("不该发出", "rollback:1"), uow)
            raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError):
        await failing_handler()
    assert h.rows() == []


async def test_appchat_group_and_robot_image(h: Harness) -> None:
    image = bytes(range(256)) * 40
    await h.queue(
        Outbound(Channel.GROUP, GROUP_B, "**二班** 早上好", kind=Kind.MARKDOWN, key="b:1"),
        group("", "img:1", kind=Kind.IMAGE, image=image),
    )
    assert (await h.worker.deliver_due()).sent == 2
    assert h.fake.delivered_to("/cgi-bin/appchat/send") == [
        {"chatid": GROUP_B, "msgtype": "markdown", "markdown": {"content": "**二班** 早上好"}}
    ]
    (body,) = h.fake.delivered_to(WEBHOOK)
    assert body["msgtype"] == "image"  # the fake checked base64 and md5


async def test_token_refreshed_on_42001_with_exactly_one_retry(h: Harness) -> None:
    h.fake.fail("42001", path=APP_SEND)
    await h.queue(Outbound(Channel.PRIVATE, "teacher1", "今日提醒", key="p:1"))
    assert (await h.worker.deliver_due()).sent == 1
    sequence = [(r.path, (r.answer or {}).get("errcode")) for r in h.fake.received]
    assert sequence == [(GETTOKEN, 0), (APP_SEND, 42001), (GETTOKEN, 0), (APP_SEND, 0)]


async def test_token_error_twice_is_retried_later_not_in_a_loop(h: Harness) -> None:
    h.fake.fail("42001", times=2, path=APP_SEND)
    await h.queue(Outbound(Channel.PRIVATE, "teacher1", "今日提醒", key="p:1"))
    report = await h.worker.deliver_due()
    assert (report.sent, report.retried) == (0, 1)
    assert len(h.fake.calls(APP_SEND)) == 2  # one call, one retry after the refresh
    h.clock.advance(timedelta(seconds=10))
    assert (await h.worker.deliver_due()).sent == 1
    assert len(h.fake.delivered_to(APP_SEND)) == 1


async def test_5xx_and_timeout_are_retried_with_backoff_then_delivered_once(h: Harness) -> None:
    failures = metrics.OUTBOX_FAILURES.value(channel="robot", reason="timeout")
    h.fake.fail("http500", path=WEBHOOK)
    h.fake.fail("hang", path=WEBHOOK)
    await h.queue(group("第1天打卡开始啦", "day:1"))
    h.api.timeout = aiohttp.ClientTimeout(total=0.5)  # so the hang times out quickly
    start = h.clock.now()

    report = await h.worker.deliver_due()
    assert (report.sent, report.retried) == (0, 1)
    (row,) = h.rows()
    first_delay = row.next_attempt_at - start
    assert timedelta(seconds=1) <= first_delay <= timedelta(seconds=2)  # 2 s x jitter 0.5-1
    assert (await h.worker.deliver_due()).retried == 0  # not due yet: no call
    assert len(h.fake.calls(WEBHOOK)) == 1

    h.clock.advance(first_delay)
    report = await h.worker.deliver_due()  # the fake hangs; the client times out
    assert (report.sent, report.retried) == (0, 1)
    (row,) = h.rows()
    second_delay = row.next_attempt_at - h.clock.now()
    assert timedelta(seconds=2) <= second_delay <= timedelta(seconds=4)
    assert metrics.OUTBOX_FAILURES.value(channel="robot", reason="timeout") == failures + 1

    h.clock.advance(second_delay)
    assert (await h.worker.deliver_due()).sent == 1
    assert len(h.fake.calls(WEBHOOK)) == 3
    assert h.fake.delivered_to(WEBHOOK) == [
        {"msgtype": "text", "text": {"content": "第1天打卡开始啦"}}
    ]
    (row,) = h.rows()
    assert (row.status, row.attempts) == ("sent", 3)


async def test_45009_backs_off_at_least_a_minute_then_delivers(h: Harness) -> None:
    h.fake.fail("45009", path=WEBHOOK)
    await h.queue(group("欢迎新同学", "welcome:1"))
    assert (await h.worker.deliver_due()).retried == 1
    (row,) = h.rows()
    assert row.next_attempt_at >= h.clock.now() + timedelta(seconds=60)
    assert row.last_error is not None and "45009" in row.last_error
    h.clock.advance(timedelta(seconds=30))
    assert (await h.worker.deliver_due()).sent == 0
    h.clock.advance(row.next_attempt_at - h.clock.now())
    assert (await h.worker.deliver_due()).sent == 1
    assert len(h.fake.delivered_to(WEBHOOK)) == 1


async def test_robot_limit_20_per_minute_defers_the_21st(h: Harness) -> None:
    await h.queue(*(group(f"消息{i}", f"burst:{i}") for i in range(21)))
    report = await h.worker.deliver_due()
    assert (report.sent, report.deferred) == (20, 1)
    assert len(h.fake.calls(WEBHOOK)) == 20  # the 21st never reached WeCom
    late = [r for r in h.rows() if r.status == "pending"]
    assert [r.key for r in late] == ["burst:20"]
    assert late[0].next_attempt_at == h.clock.now() + timedelta(seconds=60)
    h.clock.advance(timedelta(seconds=59))
    assert (await h.worker.deliver_due()).sent == 0
    h.clock.advance(timedelta(seconds=1))
    assert (await h.worker.deliver_due()).sent == 1
    answers = [(r.answer or {}).get("errcode") for r in h.fake.calls(WEBHOOK)]
    assert answers == [0] * 21  # no 45009
    contents = [b["text"]["content"] for b in h.fake.delivered_to(WEBHOOK)]
    assert contents == [f"消息{i}" for i in range(21)]  # in queue order


async def test_app_messages_30_per_member_per_minute(h: Harness) -> None:
    await h.queue(
        *(Outbound(Channel.PRIVATE, "teacher1", f"提醒{i}", key=f"t:{i}") for i in range(31))
    )
    await h.queue(Outbound(Channel.PRIVATE, "leader1", "另一个人", key="l:1"))
    report = await h.worker.deliver_due()
    assert (report.sent, report.deferred) == (31, 1)  # teacher1's 31st waits; leader1 does not
    assert h.fake.dropped == []  # nothing sent over WeCom's silent-drop limit
    h.clock.advance(timedelta(seconds=60))
    assert (await h.worker.deliver_due()).sent == 1


async def test_long_markdown_is_split_and_every_part_accepted(h: Harness) -> None:
    lines = [f"- 第{i}位同学：今天完成了第{i % 21 + 1}天的作业，继续加油！" for i in range(200)]
    text = "\n".join(lines)
    assert len(text.encode()) > 3 * 4096
    await h.queue(Outbound(Channel.GROUP, GROUP_A, text, kind=Kind.MARKDOWN, key="digest:1"))
    rows = h.rows()
    assert [r.key for r in rows] == [f"digest:1#{i}" for i in range(1, len(rows) + 1)]
    report = await h.worker.deliver_due()
    assert report.sent == len(rows) >= 4
    bodies = h.fake.delivered_to(WEBHOOK)
    parts = [b["markdown"]["content"] for b in bodies]
    assert "".join(parts) == text
    assert all(len(p.encode()) <= 4096 for p in parts)
    assert all(p.endswith("\n") for p in parts[:-1])  # cut on line boundaries
    assert all((r.answer or {}).get("errcode") == 0 for r in h.fake.calls(WEBHOOK))  # no 40058


def test_split_bytes_never_cuts_inside_a_character() -> None:
    text = "学习打卡😀" * 700  # one line, 4-byte and 3-byte characters
    parts = split_bytes(text, 2048)
    assert "".join(parts) == text
    assert all(0 < len(p.encode()) <= 2048 for p in parts)
    assert split_bytes("短", 2048) == ["短"]
    mixed = "a" * 10 + "\n" + "中" * 1000 + "\n" + "b\n"
    parts = split_bytes(mixed, 2048)
    assert "".join(parts) == mixed and all(len(p.encode()) <= 2048 for p in parts)


async def test_same_key_queued_twice_or_by_two_senders_is_sent_once(h: Harness) -> None:
    message = group("第7天里程碑！", "milestone:c1:wmU1:7")
    other = OutboxSender(h.app.settings, h.clock)  # another replica's sender
    await h.queue(message)
    await h.queue(message)
    await h.queue(message, sender=other)
    assert len(h.rows()) == 1
    await h.worker.deliver_due()
    await h.queue(message)  # re-queued after it went out: still once
    await h.worker.deliver_due()
    assert len(h.fake.delivered_to(WEBHOOK)) == 1


async def test_two_workers_deliver_each_row_once(h: Harness, out_settings: Settings) -> None:
    await h.queue(*(group(f"群消息{i}", f"m:{i}") for i in range(5)))
    await h.queue(*(Outbound(Channel.PRIVATE, f"staff{i}", "你好", key=f"s:{i}") for i in range(5)))
    other_db = Database(out_settings.database_url)
    try:
        other = h.worker_on(other_db)
        reports = await asyncio.gather(h.worker.deliver_due(), other.deliver_due())
    finally:
        other_db.dispose()
    assert sum(r.sent for r in reports) == 10
    assert len(h.fake.delivered_to(WEBHOOK)) == 5
    assert sorted(b["touser"] for b in h.fake.delivered_to(APP_SEND)) == [
        f"staff{i}" for i in range(5)
    ]


async def test_external_learner_private_becomes_add_msg_template(h: Harness) -> None:
    async with h.app.db.unit_of_work() as uow:
        roster.ensure_members(
            uow.session,
            [
                ("wmLearner1", "小鱼", "external"),
                ("wmOrphan", "", "external"),
                ("teacher1", "李老师", "internal"),
            ],
            h.clock.now(),
        )
        roster.set_owners(uow.session, {"wmLearner1": "teacher1"})
    await h.queue(
        Outbound(Channel.PRIVATE, "wmLearner1", "小鱼，好几天没见你打卡啦", key="nudge:1"),
        Outbound(Channel.PRIVATE, "teacher1", "今日沉默名单", key="digest:t1"),
        Outbound(Channel.PRIVATE, "wmOrphan", "你好", key="nudge:2"),
    )
    report = await h.worker.deliver_due()
    assert (report.sent, report.failed) == (2, 1)
    assert h.fake.delivered_to(TEMPLATE) == [
        {
            "chat_type": "single",
            "external_userid": ["wmLearner1"],
            "sender": "teacher1",
            "text": {"content": "小鱼，好几天没见你打卡啦"},
        }
    ]
    assert h.fake.delivered_to(APP_SEND) == [
        {
            "agentid": 1000002,
            "touser": "teacher1",
            "msgtype": "text",
            "text": {"content": "今日沉默名单"},
        }
    ]
    with h.app.db.session() as s:
        orphan = outbox.by_key(s, "nudge:2")
    assert orphan is not None and orphan.status == "failed"
    assert orphan.last_error is not None and "owning staff" in orphan.last_error


async def test_reply_goes_to_the_group_door_or_private(h: Harness) -> None:
    await h.queue(
        Outbound(Channel.REPLY, GROUP_A, "收到", key="r:1"),
        Outbound(Channel.REPLY, "teacher1", "收到", key="r:2"),
    )
    assert (await h.worker.deliver_due()).sent == 2
    assert len(h.fake.delivered_to(WEBHOOK)) == 1
    assert len(h.fake.delivered_to(APP_SEND)) == 1


async def test_a_crashed_claim_is_retried_after_the_lease(
    h: Harness, out_settings: Settings
) -> None:
    await h.queue(group("打卡提醒", "remind:1"))
    crashed = await h.worker.claim_due()  # claimed, then the process "dies" before sending
    assert len(crashed) == 1
    other_db = Database(out_settings.database_url)
    try:
        other = h.worker_on(other_db)
        assert (await other.deliver_due()).sent == 0  # the lease still holds
        h.clock.advance(timedelta(seconds=out_settings.wecom.claim_lease_seconds))
        assert (await other.deliver_due()).sent == 1
    finally:
        other_db.dispose()
    assert len(h.fake.delivered_to(WEBHOOK)) == 1
    (row,) = h.rows()
    assert (row.status, row.attempts) == ("sent", 2)
    with h.app.db.session() as s:  # the dead claim can no longer renew nor mark the row
        row_id, version = crashed[0].row.id or 0, crashed[0].version
        assert not outbox.renew(s, row_id, version, h.clock.now() + timedelta(hours=1))
        assert not outbox.mark_sent(
            s, crashed[0].row.id or 0, crashed[0].version, h.clock.now(), "robot"
        )


async def test_final_errors_and_exhausted_retries_fail_the_row(h: Harness) -> None:
    h.fake.fail("http500", times=100, path=WEBHOOK)
    await h.queue(group("x", "doomed:1"))
    for _ in range(h.app.settings.wecom.max_attempts):
        await h.worker.deliver_due()
        h.clock.advance(timedelta(hours=1))
    (row,) = h.rows()
    assert (row.status, row.attempts) == ("failed", h.app.settings.wecom.max_attempts)
    await h.queue(Outbound(Channel.GROUP, "wrUnknownChat", "x", key="nowhere:1"))
    report = await h.worker.deliver_due()
    assert report.failed == 1 and report.sent == 0


async def test_a_missing_robot_key_holds_group_messages_until_it_is_set(h: Harness) -> None:
    # Like a missing corp secret: the rows wait (not failed, no attempt spent), and go out once
    # the operator sets the variable (here: a worker started with it).
    worker = DeliveryWorker(h.app.settings, h.app.db, h.api, h.clock, env={})
    await h.queue(group("x", "nokey:1"))
    report = await worker.deliver_due()
    assert (report.failed, report.sent) == (0, 0)
    assert h.fake.calls(WEBHOOK) == []
    (row,) = h.rows()
    assert (row.status, row.attempts) == ("pending", 0) and "ROBOT_A" in (row.last_error or "")
    assert row.next_attempt_at == h.clock.now() + timedelta(minutes=5)
    h.clock.advance(timedelta(minutes=5))
    assert (await worker.deliver_due()).sent == 0  # still missing: still waiting
    h.clock.advance(timedelta(minutes=5))
    assert (await h.worker.deliver_due()).sent == 1  # h.worker has ROBOT_A
    (row,) = h.rows()
    assert (row.status, row.attempts) == ("sent", 1)


async def test_queue_length_gauge(h: Harness) -> None:
    from bot.wecom.delivery import queue_length_collector

    await h.queue(group("a", "q:1"), group("b", "q:2"))
    queue_length_collector(h.app.db)
    assert metrics.OUTBOX_QUEUE_LENGTH.value() == 2
    await h.worker.deliver_due()
    queue_length_collector(h.app.db)
    assert metrics.OUTBOX_QUEUE_LENGTH.value() == 0
    assert "cohortbot_outbox_queue_length 0" in metrics.REGISTRY.render()


class RecordingPusher:
    """Stands in for the AI-bot long connection's active push."""

    def __init__(self) -> None:
        self.pushed: list[tuple[str, str, str]] = []
        self.down = True

    async def push(self, chat_id: str, msgtype: str, content: str) -> None:
        if self.down:
            raise RetryableError("long connection down", "network")
        self.pushed.append((chat_id, msgtype, content))


async def test_aibot_group_goes_through_the_pusher(
    h: Harness, database_url: str, clock: ManualClock
) -> None:
    config = outbox_config(database_url)
    config["cohorts"][0]["groups"][0] = {"chat_id": GROUP_A, "post_via": "aibot"}
    settings = parse_settings(config, env={})
    pusher = RecordingPusher()
    worker = DeliveryWorker(settings, h.app.db, h.api, clock, aibot=pusher, rng=random.Random(1))
    sender = OutboxSender(settings, clock)
    await h.queue(group("AI 助手来啦", "ai:1"), sender=sender)
    assert (await worker.deliver_due()).retried == 1  # connection down: retried later
    pusher.down = False
    clock.advance(timedelta(minutes=1))
    assert (await worker.deliver_due()).sent == 1
    assert pusher.pushed == [(GROUP_A, "markdown", "AI 助手来啦")]
    assert h.fake.received == []  # nothing went to the HTTP API


async def test_a_waiting_bucket_does_not_hold_up_other_buckets(h: Harness) -> None:
    worker = DeliveryWorker(
        h.app.settings, h.app.db, h.api, h.clock, env={"ROBOT_A": ROBOT_KEY}, batch=1
    )
    h.fake.fail("http500", path=WEBHOOK)
    await h.queue(group("第一条", "a:1"), group("第二条", "a:2"))
    await h.queue(Outbound(Channel.GROUP, GROUP_B, "二班", key="b:1"))
    assert (await worker.deliver_due()).retried == 1  # a:1 waits for its retry
    assert (await worker.deliver_due()).sent == 1  # a:2 stays behind a:1; b:1 goes
    assert h.fake.delivered_to(WEBHOOK) == []
    h.clock.advance(timedelta(seconds=5))
    assert (await worker.deliver_due()).sent == 1
    assert (await worker.deliver_due()).sent == 1
    assert [b["text"]["content"] for b in h.fake.delivered_to(WEBHOOK)] == ["第一条", "第二条"]


async def test_oversized_robot_image_fails_without_a_call(h: Harness) -> None:
    too_big = b"\0" * (2 * 1024 * 1024 + 1)
    await h.queue(group("", "big:1", kind=Kind.IMAGE, image=too_big))
    report = await h.worker.deliver_due()
    assert (report.sent, report.failed) == (0, 1)
    assert h.fake.calls(WEBHOOK) == []
    assert {r.key: r.status for r in h.rows()} == {"big:1": "failed"}


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
UPLOAD = "/cgi-bin/media/upload"


async def test_private_images_are_uploaded_then_sent_by_media_id(h: Harness) -> None:
    """An internal member gets an app image message, an external learner a send task with the
    image attached; each upload is a real multipart POST the fake stores."""
    async with h.app.db.unit_of_work() as uow:
        roster.ensure_members(uow.session, [("wmLearner", "学员", "external")], h.clock.now())
        roster.set_owners(uow.session, {"wmLearner": "teacher1"})
    await h.queue(
        Outbound(Channel.PRIVATE, "teacher1", "", kind=Kind.IMAGE, image=PNG, key="img:t"),
        Outbound(Channel.PRIVATE, "wmLearner", "", kind=Kind.IMAGE, image=PNG, key="img:l"),
    )
    h.fake.fail("http500", path=UPLOAD)  # the first upload fails: the row is retried
    report = await h.worker.deliver_due()
    assert (report.sent, report.retried) == (1, 1)
    h.clock.advance(timedelta(minutes=1))
    assert (await h.worker.deliver_due()).sent == 1
    assert {r.key: r.status for r in h.rows()} == {"img:t": "sent", "img:l": "sent"}
    uploads = [r for r in h.fake.calls(UPLOAD) if r.answer and r.answer["errcode"] == 0]
    assert len(uploads) == 2
    assert all(r.query["type"] == "image" and r.body["size"] == len(PNG) for r in uploads)
    assert {m.data for m in h.fake.media.values()} == {PNG}
    (app_image,) = h.fake.delivered_to(APP_SEND)
    assert app_image["touser"] == "teacher1" and app_image["msgtype"] == "image"
    (task,) = h.fake.delivered_to(TEMPLATE)
    assert task["sender"] == "teacher1" and "text" not in task
    (attachment,) = task["attachments"]
    media_ids = {app_image["image"]["media_id"], attachment["image"]["media_id"]}
    assert media_ids == set(h.fake.media)


async def test_an_image_wecom_refuses_fails_the_row_and_stale_media_is_refused(
    h: Harness,
) -> None:
    await h.queue(
        Outbound(Channel.PRIVATE, "teacher1", "", kind=Kind.IMAGE, image=b"GIF89a..", key="gif")
    )
    report = await h.worker.deliver_due()
    assert report.failed == 1 and "40005" in report.errors[0]
    assert h.fake.calls(APP_SEND) == []
    # A media_id is good for three days at WeCom (here: the fake).
    media_id = await h.api.media_upload(PNG, "card.png")
    h.clock.advance(timedelta(days=3))
    body = {"touser": "teacher1", "msgtype": "image", "image": {"media_id": media_id}}
    with pytest.raises(WeComError) as refused:
        await h.api.message_send(body)
    assert refused.value.errcode == 40007


async def test_a_claim_round_that_loses_a_lock_race_claims_nothing(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await h.queue(group("稍后再发", "race:1"))
    real_claim = outbox.claim

    def claim_then_deadlock(*args: Any, **kwargs: Any) -> bool:
        real_claim(*args, **kwargs)
        raise OperationalError("UPDATE outbox", {}, Exception("deadlock detected"))

    monkeypatch.setattr(outbox, "claim", claim_then_deadlock)
    assert await h.worker.claim_due() == []
    (row,) = h.rows()
    assert (row.status, row.attempts, row.version) == ("pending", 0, 0)  # rolled back
    monkeypatch.setattr(outbox, "claim", real_claim)
    assert (await h.worker.deliver_due()).sent == 1


async def test_drain_goes_on_after_another_worker_wins_a_race(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round whose rows were all claimed first by another worker is not "nothing due": the
    drain goes on to the buckets that worker does not hold (the two-process flake in CI)."""
    await h.queue(group("一班", "a:1"))
    await h.queue(*(Outbound(Channel.PRIVATE, f"staff{i}", "你好", key=f"s:{i}") for i in range(3)))
    worker = DeliveryWorker(
        h.app.settings, h.app.db, h.api, h.clock, env={"ROBOT_A": ROBOT_KEY}, batch=1
    )
    real_due = outbox.due
    lost: list[str] = []

    def due_then_lose_the_race(session: Any, now: Any, limit: int) -> list[outbox.OutboxRow]:
        rows = real_due(session, now, limit)
        if not lost:  # another replica claims the first row between our read and our claim
            lost.append(rows[0].key)
            other = session.get(outbox.OutboxRow, rows[0].id, populate_existing=True)
            session.expunge(other)
            assert outbox.claim(session, other, now, timedelta(minutes=2))
        return rows

    monkeypatch.setattr(outbox, "due", due_then_lose_the_race)
    report = await worker.drain(pause=0)
    assert lost == ["a:1"]
    assert (report.sent, report.contended) == (3, 1)
    assert {r.key: r.status for r in h.rows()} == {
        "a:1": "sending",
        "s:0": "sent",
        "s:1": "sent",
        "s:2": "sent",
    }


CARD = sample_card().to_json()


async def test_a_card_is_queued_as_numbers_and_drawn_at_delivery_off_the_loop(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row keeps the card's numbers, not its picture; delivery draws it in a worker thread
    (the loop goes on serving callbacks), then sends it as any image: inline to the robot,
    uploaded for an app message."""
    loop_thread = threading.get_ident()
    drawn: list[tuple[int, dict[str, object]]] = []

    def draw(card: dict[str, object], settings: Settings) -> bytes:
        drawn.append((threading.get_ident(), card))
        return PNG + str(card["streak"]).encode()

    monkeypatch.setattr(delivery, "card_png", draw)
    await h.queue(
        group("", "card:g", kind=Kind.IMAGE, card=CARD),
        Outbound(Channel.PRIVATE, "teacher1", "", kind=Kind.IMAGE, card=CARD, key="card:t"),
    )
    payloads = {r.key: json.loads(r.payload) for r in h.rows()}
    assert payloads["card:g"] == {"text": "", "card": CARD}
    assert max(len(r.payload) for r in h.rows()) < 1024
    assert drawn == []  # queueing draws nothing
    assert (await h.worker.deliver_due()).sent == 2
    assert [card for _, card in drawn] == [CARD, CARD]
    assert all(thread != loop_thread for thread, _ in drawn)
    picture = PNG + b"7"
    (robot,) = h.fake.delivered_to(WEBHOOK)
    assert base64.b64decode(robot["image"]["base64"]) == picture
    assert robot["image"]["md5"] == hashlib.md5(picture).hexdigest()
    assert {m.data for m in h.fake.media.values()} == {picture}
    assert h.fake.delivered_to(APP_SEND)[0]["msgtype"] == "image"


async def test_a_real_card_is_drawn_and_sent_to_the_robot(h: Harness) -> None:
    cjk_font_or_skip()
    await h.queue(group("", "card:real", kind=Kind.IMAGE, card=CARD))
    assert (await h.worker.deliver_due()).sent == 1
    (robot,) = h.fake.delivered_to(WEBHOOK)
    png = base64.b64decode(robot["image"]["base64"])
    assert png.startswith(b"\x89PNG") and len(png) < MAX_BYTES


async def test_a_card_that_cannot_be_drawn_fails_its_row_without_a_call(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_font(*_args: object) -> object:
        raise FontNotFoundError("no CJK font found for cards (test)")

    monkeypatch.setattr(member, "card_font", no_font)
    no_font_before = metrics.OUTBOX_FAILURES.value(channel="robot", reason="no_font")
    bad_before = metrics.OUTBOX_FAILURES.value(channel="robot", reason="bad_card")
    await h.queue(
        group("", "card:nofont", kind=Kind.IMAGE, card=CARD),
        group("", "card:bad", kind=Kind.IMAGE, card={**CARD, "streak": "七"}),
    )
    report = await h.worker.deliver_due()
    assert (report.sent, report.failed, report.retried) == (0, 2, 0)
    assert h.fake.calls(WEBHOOK) == []
    assert {r.key: r.status for r in h.rows()} == {"card:nofont": "failed", "card:bad": "failed"}
    assert metrics.OUTBOX_FAILURES.value(channel="robot", reason="no_font") == no_font_before + 1
    assert metrics.OUTBOX_FAILURES.value(channel="robot", reason="bad_card") == bad_before + 1
