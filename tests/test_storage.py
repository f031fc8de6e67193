"""Storage contract tests, run on SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
import sqlite3
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, inspect, literal, select

from bot.app import App
from bot.clock import ManualClock
from bot.config import Settings
from bot.maintenance import purge_old_text
from bot.updates import Update
from storage import activity, inbox, messages, roster
from storage.db import SQLITE_PAGE_BYTES, Database
from storage.dialect import JSON_LIST_FROM, one_of
from storage.inbox import Incoming, RawEvent
from tests.builders import archive_text, exploding_router, local, pair
from tests.conftest import GROUP_A


def test_migrations_apply_once_and_again(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.upgrade()
        db.upgrade()  # idempotent
        tables = set(inspect(db.engine).get_table_names())
        assert {
            "raw_event",
            "message",
            "daily_counter",
            "checkin",
            "membership",
            "member",
            "chat_group",
            "cohort",
            "alembic_version",
        } <= tables
        assert db.has_schema()
    finally:
        db.dispose()


def test_a_new_sqlite_file_gets_larger_pages_and_an_old_one_keeps_its_own(
    tmp_path: Path,
) -> None:
    with sqlite3.connect(tmp_path / "old.db") as made_before:
        made_before.execute("CREATE TABLE kept (x INTEGER)")
    pages: dict[str, tuple[int, str]] = {}
    for name in ("new.db", "old.db"):
        db = Database(f"sqlite:///{tmp_path / name}")
        try:
            db.upgrade()
            with db.engine.connect() as conn:
                size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
                mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
            pages[name] = (size, mode)
        finally:
            db.dispose()
    assert pages == {"new.db": (SQLITE_PAGE_BYTES, "wal"), "old.db": (4096, "wal")}


def test_inbox_stores_each_key_once(app: App) -> None:
    items = [
        Incoming("import", "archive", "k1", "{}"),
        Incoming("import", "archive", "k2", "{}"),
        Incoming("import", "archive", "k1", "{}"),
        Incoming("robot", "robot", "k1", "{}"),
    ]
    with app.db.unit_of_work_sync() as uow:
        assert inbox.store_new(uow.writer, items, app.clock.now()) == [0, 1, 3]
    with app.db.unit_of_work_sync() as uow:
        assert inbox.store_new(uow.writer, items, app.clock.now()) == []
        assert [r.event_key for r in inbox.pending(uow.session, 10)] == ["k1", "k2", "k1"]


def test_inbox_arrivals_store_what_store_new_stores(app: App) -> None:
    """The callback writer's bulk path: same de-duplication, same rows, chunked inserts."""
    items = [
        Incoming("robot", "robot", "k1", '{"body":"一"}'),
        Incoming("robot", "robot", "k2", "{}"),
        Incoming("robot", "robot", "k1", "{}"),
        Incoming("app", "app", "k1", "{}"),
    ] + [Incoming("aibot", "aibot", f"n{i}", "{}") for i in range(1200)]
    now = app.clock.now()
    with app.db.engine.connect() as conn:
        with conn.begin():
            assert inbox.store_arrivals(conn, items, [now] * len(items)) == [
                0,
                1,
                3,
                *range(4, 1204),
            ]
        with conn.begin():
            assert inbox.store_arrivals(conn, items, [now] * len(items)) == []
    with app.db.unit_of_work_sync() as uow:
        first = inbox.pending(uow.session, 3)
        assert [(r.door, r.namespace, r.event_key, r.payload) for r in first] == [
            ("robot", "robot", "k1", '{"body":"一"}'),
            ("robot", "robot", "k2", "{}"),
            ("app", "app", "k1", "{}"),
        ]
        assert first[0].received_at == now
        assert first[0].processed_at is None and first[0].error is None
        assert inbox.oldest_pending_at(uow.session) == now
        assert len(inbox.pending(uow.session, 2000)) == 1203


def test_counter_deltas_accumulate_across_flushes(app: App) -> None:
    key = (GROUP_A, "wmU1", date(2026, 11, 3))
    at = local(2026, 11, 3, 9)
    for minutes, chars in ((0, 5), (30, 7)):
        with app.db.unit_of_work_sync() as uow:
            uow.activity.add_member("wmU1", "", "external")
            uow.activity.count(key, at=at + timedelta(minutes=minutes), messages=1, chars=chars)
            uow.activity.count(key, reviews_received=1)
    with app.db.session() as s:
        row = activity.day_of(s, *key)
    assert row is not None
    assert (row.messages, row.chars, row.reviews_received) == (2, 12, 2)
    assert (row.first_at, row.last_at) == (at, at + timedelta(minutes=30))


def test_a_rolled_back_unit_of_work_leaves_nothing(app: App) -> None:
    try:
        with app.db.unit_of_work_sync() as uow:
            uow.activity.add_member("wmU1", "", "external")
            uow.activity.count((GROUP_A, "wmU1", date(2026, 11, 3)), messages=1)
            uow.flush()
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with app.db.session() as s:
        assert s.scalar(select(func.count()).select_from(activity.DailyCounter)) == 0


def test_member_names_fill_in_but_are_never_blanked(app: App) -> None:
    now = app.clock.now()
    with app.db.unit_of_work_sync() as uow:
        roster.ensure_members(uow.session, [("wmU1", "", "external")], now)
        roster.ensure_members(uow.session, [("wmU1", "小鱼", "external")], now)
        roster.ensure_members(uow.session, [("wmU1", "", "external")], now)
        assert roster.names(uow.session, ["wmU1", "ghost"]) == {"wmU1": "小鱼", "ghost": "ghost"}


def test_long_id_lists_select_exactly_their_rows(app: App) -> None:
    """``one_of`` with a list long enough for one parameter (JSON on SQLite, an array on
    PostgreSQL): quotes, non-ASCII and unknown ids, and integers."""
    now = app.clock.now()
    ids = [f"wm\"长{i}'" for i in range(200)]
    with app.db.unit_of_work_sync() as uow:
        roster.ensure_members(
            uow.session, [(m, f"学员{i}", "external") for i, m in enumerate(ids)], now
        )
        wanted = ids[::3] + ["ghost"] * 70
        assert len(set(wanted)) >= JSON_LIST_FROM
        found = uow.session.execute(
            select(roster.Member.id).where(one_of(uow.session, roster.Member.id, wanted))
        ).scalars()
        assert sorted(found) == sorted(ids[::3])
        numbers = uow.session.execute(
            select(func.count()).where(
                one_of(uow.session, literal(7), list(range(100))),
            )
        ).scalar()
        assert numbers == 1


async def test_joins_and_leaves_are_recorded(app: App) -> None:
    from bot.updates import Door, Event, UpdateKind

    def event(name: Event, at_hour: int) -> Update:
        return Update(
            door=Door.APP,
            kind=UpdateKind.EVENT,
            event=name,
            message_id=f"{name}-{at_hour}",
            chat_id=GROUP_A,
            sender_id="wmNew",
            sent_at=local(2026, 11, 2, at_hour),
            event_data={"member_ids": ["wmNew", "wmNew2"], "join_scene": 3},
        )

    await app.pipeline.ingest([(event(Event.MEMBER_JOINED, 9), "{}")])
    await app.pipeline.ingest([(event(Event.MEMBER_LEFT, 18), "{}")])
    with app.db.session() as s:
        m = roster.get_membership(s, GROUP_A, "wmNew2")
    assert m is not None
    assert (m.joined_at, m.join_scene, m.left_at) == (
        local(2026, 11, 2, 9),
        3,
        local(2026, 11, 2, 18),
    )
    assert m.never_spoken


async def test_retention_blanks_old_text_and_keeps_counters(app: App, clock: ManualClock) -> None:
    old = archive_text(GROUP_A, "wmU1", "很久以前的消息", local(2026, 11, 2, 10))
    new = archive_text(GROUP_A, "wmU1", "最近的消息", local(2026, 12, 20, 10))
    clock.set(local(2026, 11, 2, 10))
    await app.pipeline.ingest([pair(old)])
    clock.set(local(2026, 12, 20, 10))
    await app.pipeline.ingest([pair(new)])
    clock.set(local(2026, 12, 25, 0))  # retention 30 days: before Nov 25 goes
    result = purge_old_text(app.db, app.settings, clock)
    assert (result.messages, result.payloads) == (1, 1)
    with app.db.session() as s:
        assert messages.get(s, "archive", old["msgid"]).text is None  # type: ignore[union-attr]
        assert messages.get(s, "archive", new["msgid"]).text == "最近的消息"  # type: ignore[union-attr]
        assert activity.day_of(s, GROUP_A, "wmU1", date(2026, 11, 2)).chars == 7  # type: ignore[union-attr]


async def test_one_failing_update_does_not_sink_its_batch(app: App) -> None:
    app.dispatcher.include(exploding_router())
    items = [
        archive_text(GROUP_A, "wmU1", t, local(2026, 11, 3, 9 + i))
        for i, t in enumerate(["好的", "炸弹", "#打卡 第2天"])
    ]
    result = await app.pipeline.ingest([pair(i) for i in items])
    assert (result.new, result.failed) == (2, 1)
    with app.db.session() as s:
        row = activity.day_of(s, GROUP_A, "wmU1", date(2026, 11, 3))
        failed = s.scalars(select(RawEvent).where(RawEvent.error.is_not(None))).all()  # type: ignore[union-attr]
    assert row is not None
    assert (row.messages, row.checkins) == (2, 1)
    assert [(f.event_key, f.error) for f in failed] == [
        (items[1]["msgid"], "RuntimeError: handler exploded")
    ]
    # The failed event is recorded, not retried for ever, and a redelivery is a duplicate.
    again = await app.pipeline.ingest([pair(items[1])])
    assert (again.new, again.duplicates) == (0, 1)


async def test_process_pending_handles_stored_events(app: App) -> None:
    item = archive_text(GROUP_A, "wmU1", "#打卡 第2天", local(2026, 11, 3, 9))
    update, payload = pair(item)
    with app.db.unit_of_work_sync() as uow:
        inbox.store_new(
            uow.writer,
            [Incoming("archive", "archive", update.message_id, payload)],
            app.clock.now(),
        )
    assert await app.pipeline.process_pending() == 1
    assert await app.pipeline.process_pending() == 0
    with app.db.session() as s:
        row = activity.day_of(s, GROUP_A, "wmU1", date(2026, 11, 3))
    assert row is not None
    assert row.checkins == 1


async def test_two_replicas_never_process_one_inbox_row(
    database_url: str, settings: Settings, clock: ManualClock
) -> None:
    """Two apps (own engines) drain the same inbox concurrently: every row counts once."""
    import asyncio
    import threading

    items = [
        archive_text(GROUP_A, f"wmU{i % 7}", "大家好，今天继续加油", local(2026, 11, 3, 9, i))
        for i in range(60)
    ]
    first, second = App.open(settings, clock=clock), App.open(settings, clock=clock)
    try:
        with first.db.unit_of_work_sync() as uow:
            inbox.store_new(
                uow.writer,
                [Incoming("archive", "archive", i["msgid"], json.dumps(i)) for i in items],
                clock.now(),
            )
        handled: list[int] = []

        def drain(app: App) -> None:
            async def loop() -> None:
                while (n := await app.pipeline.process_pending(limit=7)) or await _pending(app):
                    handled.append(n)

            asyncio.run(loop())

        threads = [threading.Thread(target=drain, args=(a,)) for a in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert sum(handled) == 60
        with first.db.session() as s:
            total = s.scalar(select(func.sum(activity.DailyCounter.messages)))
            errors = s.scalar(
                select(func.count()).select_from(RawEvent).where(RawEvent.error.is_not(None))
            )  # type: ignore[union-attr]
        assert (total, errors) == (60, 0)
    finally:
        first.close()
        second.close()


async def _pending(app: App) -> bool:
    with app.db.session() as s:
        return bool(inbox.pending(s, 1))


def test_a_members_day_is_found_at_the_far_ends_of_the_timezones(app: App) -> None:
    """of_member_on_day bounds sent_at by the learning day: a day's first message in UTC+14
    (day start 00:00) and its last in UTC-12 (day start 23:00) are both inside the bounds."""
    day = date(2026, 11, 3)
    first = local(2026, 11, 3, 0, 1, tz=ZoneInfo("Pacific/Kiritimati"))  # 11-02 10:01 UTC
    last = local(2026, 11, 4, 22, 59, tz=ZoneInfo("Etc/GMT+12"))  # 11-05 10:59 UTC
    with app.db.unit_of_work_sync() as uow:
        for msgid, at, on in (("m1", first, day), ("m2", last, day)):
            uow.activity.add_message(
                {
                    "namespace": "archive",
                    "msg_id": msgid,
                    "chat_id": GROUP_A,
                    "sender_id": "wmU1",
                    "sent_at": at,
                    "day": on,
                    "msg_type": "text",
                    "text": "x",
                    "chars": 1,
                    "homework": False,
                    "quoted_msg_id": None,
                    "recalled": False,
                }
            )
    with app.db.session() as s:
        found = messages.of_member_on_day(s, GROUP_A, "wmU1", day)
    assert [m.msg_id for m in found] == ["m1", "m2"]


async def test_meanwhile_runs_once_while_the_commit_runs_or_fails(app: App) -> None:
    ran: list[str] = []
    async with app.db.unit_of_work(meanwhile=lambda: ran.append("read")) as uow:
        uow.activity.add_member("wmU1", "", "external")
        uow.activity.count((GROUP_A, "wmU1", date(2026, 11, 3)), messages=1)
    assert ran == ["read"]
    with app.db.session() as s:
        assert activity.day_of(s, GROUP_A, "wmU1", date(2026, 11, 3)) is not None

    failing = [
        archive_text(GROUP_A, "wmU1", "好的", local(2026, 11, 3, 9)),
        archive_text(GROUP_A, "wmU2", "好的", local(2026, 11, 3, 10)),
    ]
    original = app.db._sessions
    broken: list[bool] = []

    def first_commit_fails() -> Any:
        session = original()
        if not broken:  # the batch's unit of work; the one-by-one retries commit normally
            broken.append(True)

            def commit() -> None:
                raise RuntimeError("disk gone")

            session.commit = commit  # type: ignore[method-assign]
        return session

    app.db._sessions = first_commit_fails  # type: ignore[method-assign]
    try:
        result = await app.pipeline.ingest(
            [pair(i) for i in failing], meanwhile=lambda: ran.append("again")
        )
    finally:
        app.db._sessions = original  # type: ignore[method-assign]
    # The batch's commit failed after the next batch was read (once); the batch was then
    # stored and processed one update at a time.
    assert ran == ["read", "again"]
    assert (result.new, result.failed) == (2, 0)
    with app.db.session() as s:
        row = activity.day_of(s, GROUP_A, "wmU2", date(2026, 11, 3))
    assert row is not None and row.messages == 1


async def test_retention_dates_raw_events_by_their_message_not_their_import(
    app: App, clock: ManualClock
) -> None:
    """History imported today: the raw events of messages sent before the retention period lose
    their text with the messages (SPEC §2), those of recent ones keep it, and so do events not
    processed yet (the inbox worker needs them)."""
    old = archive_text(GROUP_A, "wmU1", "很久以前的消息", local(2026, 11, 2, 10))
    new = archive_text(GROUP_A, "wmU1", "最近的消息", local(2026, 12, 20, 10))
    old_private = archive_text("", "wmU1", "很久以前的私聊", local(2026, 11, 3, 10))
    new_private = archive_text("", "wmU1", "最近的私聊", local(2026, 12, 21, 10))
    clock.set(local(2026, 12, 25, 0))  # retention 30 days: sent before Nov 25 goes
    await app.pipeline.ingest([pair(i) for i in (old, new, old_private, new_private)])
    waiting = archive_text(GROUP_A, "wmU2", "还没处理的旧消息", local(2026, 11, 4, 10))
    with app.db.unit_of_work_sync() as uow:
        inbox.store_new(
            uow.session, [Incoming("import", "archive", "w1", json.dumps(waiting))], clock.now()
        )
    result = purge_old_text(app.db, app.settings, clock)
    assert (result.messages, result.payloads) == (1, 2)
    with app.db.session() as s:
        payloads = {r.event_key: r.payload for r in s.scalars(select(RawEvent))}
        assert messages.get(s, "archive", old["msgid"]).text is None  # type: ignore[union-attr]
    assert payloads[old["msgid"]] == payloads[old_private["msgid"]] == ""
    assert "最近的消息" in payloads[new["msgid"]] and "最近的私聊" in payloads[new_private["msgid"]]
    assert payloads["w1"] == json.dumps(waiting)
    # Purging again finds nothing more.
    assert purge_old_text(app.db, app.settings, clock) == type(result)(0, 0)
