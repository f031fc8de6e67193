"""The inbox worker's slices (bot.server.InboxWorker): everything pending is processed and
counted, in transactions of bounded size, short ones while callbacks are arriving."""

from __future__ import annotations

from sqlalchemy import func, select

from bot.app import App
from bot.doors.wire import store_form
from bot.server import InboxWorker
from bot.simulate import robot_xml
from storage import inbox
from storage.inbox import Incoming, RawEvent
from storage.messages import Message
from tests.builders import archive_text, local, pair
from tests.conftest import GROUP_A


def store_pending(app: App, n: int) -> None:
    items = []
    for i in range(n):
        update, payload = pair(
            archive_text(GROUP_A, f"wmU{i % 7}", f"第{i}条 学习笔记", local(2026, 11, 3, 9, i % 60))
        )
        items.append(Incoming("archive", "archive", update.message_id, payload))
    with app.db.unit_of_work_sync() as uow:
        inbox.store_new(uow.writer, items, app.clock.now())


def record_limits(app: App) -> list[int]:
    """The limit of every ``process_pending`` call (the real one still runs)."""
    limits: list[int] = []
    real = app.pipeline.process_pending

    async def spy(limit: int = 500) -> int:
        limits.append(limit)
        return await real(limit)

    app.pipeline.process_pending = spy  # type: ignore[method-assign]
    return limits


def counts(app: App) -> tuple[int, int]:
    with app.db.session() as s:
        pending = s.scalar(
            select(func.count()).select_from(RawEvent).where(RawEvent.processed_at.is_(None))  # type: ignore[union-attr]
        )
        counted = s.scalar(select(func.count()).select_from(Message))
    return int(pending or 0), int(counted or 0)


async def test_drain_processes_everything_in_bounded_slices(app: App) -> None:
    store_pending(app, 130)
    limits = record_limits(app)
    worker = InboxWorker(app, batch=40, idle_ms=20, max_lag_ms=1000, slice_ms=5)
    await worker.drain()
    assert counts(app) == (0, 130)
    assert worker.processed == 130
    assert limits and max(limits) <= 40
    assert min(limits) >= InboxWorker.MIN_SLICE


def test_slices_are_short_while_callbacks_arrive_and_grow_without(app: App) -> None:
    worker = InboxWorker(app, batch=500, idle_ms=20, max_lag_ms=1000, slice_ms=5)
    worker.per_event = 0.0001  # 50 events make 5 ms
    assert worker.slice_size(quiet=0.001) == 50  # a callback 1 ms ago: 5 ms slices
    # Nobody waiting: half the quiet time, up to ten times slice_ms.
    assert [worker.slice_size(quiet=q) for q in (0.02, 0.04, 0.08, 0.2)] == [100, 200, 400, 500]
    worker.per_event = 0.01  # slow events: never fewer than MIN_SLICE a transaction
    assert worker.slice_size(quiet=0.001) == InboxWorker.MIN_SLICE
    small = InboxWorker(app, batch=4, slice_ms=5)
    assert small.slice_size(quiet=0.0) == 4  # and never more than batch


async def test_a_stored_payload_the_parser_refuses_is_marked_with_its_reason(app: App) -> None:
    """The route admits a payload without building its update; should the worker's full parse
    refuse a stored payload anyway, the row is marked processed with the reason (it would fail
    the same way on every retry) and the rows around it are processed."""
    received = app.clock.now()
    good = [
        Incoming(
            "robot",
            "robot",
            f"m{i}",
            store_form(robot_xml(GROUP_A, "wmU1", "学习", f"m{i}"), received),
        )
        for i in range(3)
    ]
    bad = [
        Incoming(
            "robot", "robot", "bad1", store_form("<xml><MsgType>text</MsgType></xml>", received)
        ),
        Incoming("robot", "robot", "bad2", "not an envelope"),
    ]
    with app.db.unit_of_work_sync() as uow:
        inbox.store_new(uow.writer, [good[0], *bad, *good[1:]], app.clock.now())
    worker = InboxWorker(app, batch=40)
    await worker.drain()
    assert counts(app) == (0, 3)
    with app.db.session() as s:
        errors = {k: e for k, e in s.execute(select(RawEvent.event_key, RawEvent.error))}
    assert errors["bad1"] is not None and "DoorFormatError" in errors["bad1"]
    assert errors["bad2"] is not None and "DoorFormatError" in errors["bad2"]
    assert [errors[f"m{i}"] for i in range(3)] == [None, None, None]
