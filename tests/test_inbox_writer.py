"""The callback inbox writer: where it commits (on the loop on SQLite, in its thread otherwise or
when the database is locked), that every stored event is answered once and read back intact,
and that the thread checkpoints the WAL the loop's connection leaves alone."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import bot.inbox_writer as inbox_writer
from bot.inbox_writer import InboxWriter
from storage import inbox
from storage.db import Database

NOW = datetime(2026, 11, 20, 12, 0, 0, 123000, tzinfo=UTC)


def item(key: str, payload: str = '{"body":"打卡"}') -> inbox.Incoming:
    return inbox.Incoming("robot", "robot", key, payload)


async def settle() -> None:
    """Let the loop run the writer's flush (scheduled with call_soon) and what it resolves."""
    for _ in range(5):
        await asyncio.sleep(0)


def stored(db: Database) -> list[tuple[str, str, datetime]]:
    with db.unit_of_work_sync() as uow:
        return [(r.event_key, r.payload, r.received_at) for r in inbox.pending(uow.session, 100)]


async def test_sqlite_commits_on_the_loop_one_commit_per_iteration(sqlite_db: Database) -> None:
    writer = InboxWriter(sqlite_db, lambda: NOW, mode="loop")
    writer.start()
    try:
        # Callbacks that reach the writer in one loop iteration share one commit.
        first = await asyncio.gather(*(writer.store(item(f"m{i}")) for i in range(5)))
        again = await asyncio.gather(writer.store(item("m1")), writer.store(item("m9")))
    finally:
        writer.stop()
    assert first == [True] * 5 and again == [False, True]
    assert (writer.loop_commits, writer.thread_commits) == (2, 0)
    rows = stored(sqlite_db)
    assert [key for key, _, _ in rows] == ["m0", "m1", "m2", "m3", "m4", "m9"]
    assert {(payload, at) for _, payload, at in rows} == {('{"body":"打卡"}', NOW)}


async def test_a_locked_database_sends_the_batch_to_the_thread(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """Another writer holds SQLite's lock: the loop does not wait for it (that would stall every
    request); the thread waits, commits once the lock is free, and the callback is answered."""
    writer = InboxWriter(sqlite_db, lambda: NOW, mode="loop")
    writer.start()
    other = sqlite3.connect(tmp_path / "inbox.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # holds the write lock
        task = asyncio.create_task(writer.store(item("locked")))
        await settle()
        assert not task.done()
        assert (writer.loop_commits, writer.thread_commits) == (0, 0)
        other.execute("COMMIT")
        assert await asyncio.wait_for(task, 10) is True
        assert (writer.loop_commits, writer.thread_commits) == (0, 1)
        # The lock is free again: the next callback commits on the loop.
        assert await writer.store(item("free")) is True
        assert writer.loop_commits == 1
    finally:
        other.close()
        writer.stop()
    assert [key for key, _, _ in stored(sqlite_db)] == ["locked", "free"]


async def test_a_broken_loop_connection_is_replaced_and_nothing_is_lost(
    sqlite_db: Database,
) -> None:
    writer = InboxWriter(sqlite_db, lambda: NOW, mode="loop")
    writer.start()
    try:
        assert await writer.store(item("a")) is True
        writer._loop_conn.close()  # e.g. the file went away under it
        assert await writer.store(item("b")) is True  # the thread committed it
        assert writer.thread_commits == 1
        assert await writer.store(item("c")) is True  # on a new loop connection
        assert writer.loop_commits == 2
    finally:
        writer.stop()
    assert [key for key, _, _ in stored(sqlite_db)] == ["a", "b", "c"]


async def test_the_thread_checkpoints_the_wal_the_loop_leaves_alone(
    sqlite_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_writer, "CHECKPOINT_EVERY", 3)
    with sqlite_db.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # the schema into the file

    def in_the_file() -> int:
        """Rows in the database file itself (``immutable`` reads it without the WAL)."""
        uri = f"file:{tmp_path / 'inbox.db'}?mode=ro&immutable=1"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            return int(conn.execute("SELECT count(*) FROM raw_event").fetchone()[0])

    # Held open so that the writer's connections closing is not the last close (which would
    # checkpoint by itself).
    keep = sqlite3.connect(tmp_path / "inbox.db")
    writer = InboxWriter(sqlite_db, lambda: NOW, mode="loop")
    writer.start()
    try:
        for i in range(2):
            await writer.store(item(f"k{i}"))
        assert in_the_file() == 0 and writer.checkpoints == 0  # committed to the WAL only
        await writer.store(item("k2"))  # the third commit on the loop asks for a checkpoint
    finally:
        writer.stop()  # the thread takes the request before it stops
    try:
        assert (writer.loop_commits, writer.checkpoints) == (3, 1)
        assert in_the_file() == 3
    finally:
        keep.close()


async def test_without_loop_commits_the_thread_does_all(sqlite_db: Database) -> None:
    """Every commit from the thread (the fallback's path, here on its own)."""
    writer = InboxWriter(sqlite_db, lambda: NOW, delay_ms=0, mode="thread")
    writer.start()
    try:
        results = await asyncio.gather(*(writer.store(item(f"t{i % 3}")) for i in range(6)))
    finally:
        writer.stop()
    assert sorted(results) == [False] * 3 + [True] * 3
    assert writer.loop_commits == 0 and writer.thread_commits >= 1
    assert sorted(key for key, _, _ in stored(sqlite_db)) == ["t0", "t1", "t2"]


async def test_store_refuses_when_the_writer_is_stopped(sqlite_db: Database) -> None:
    writer = InboxWriter(sqlite_db, lambda: NOW, mode="loop")
    with pytest.raises(RuntimeError, match="not running"):
        await writer.store(item("x"))
    assert stored(sqlite_db) == []


@pytest.fixture
async def any_db(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    db.upgrade()
    yield db
    db.dispose()


def commits(writer: InboxWriter) -> int:
    """Commits in the writer's own mode (the thread's are counted apart)."""
    return writer.loop_commits if writer.mode == "loop" else writer.async_commits


def test_the_default_mode_journals_on_a_sqlite_file_and_commits_on_postgresql(
    any_db: Database,
) -> None:
    writer = InboxWriter(any_db, lambda: NOW)
    assert writer.mode == ("journal" if any_db.dialect == "sqlite" else "async")
    assert (writer.journal is not None) == (any_db.dialect == "sqlite")


async def test_database_modes_group_concurrent_callbacks(any_db: Database) -> None:
    """SQLite commits on the loop, PostgreSQL on an asyncio connection; either way callbacks that
    arrive together share a commit, duplicates are told apart, and no thread is involved."""
    writer = InboxWriter(any_db, lambda: NOW, mode="loop" if any_db.dialect == "sqlite" else None)
    assert writer.mode == ("loop" if any_db.dialect == "sqlite" else "async")
    writer.start()
    try:
        first = await asyncio.gather(*(writer.store(item(f"g{i}")) for i in range(5)))
        assert commits(writer) == 1
        again = await asyncio.gather(writer.store(item("g2")), writer.store(item("g7")))
    finally:
        await writer.aclose()
        writer.stop()
    assert first == [True] * 5 and again == [False, True]
    assert commits(writer) == 2 and writer.thread_commits == 0
    rows = stored(any_db)
    assert [key for key, _, _ in rows] == ["g0", "g1", "g2", "g3", "g4", "g7"]
    assert {(payload, at) for _, payload, at in rows} == {('{"body":"打卡"}', NOW)}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgresql_replaces_a_connection_the_server_dropped(any_db: Database) -> None:
    writer = InboxWriter(any_db, lambda: NOW)
    writer.start()
    try:
        assert await writer.store(item("before")) is True
        conn = writer._async_conn
        assert conn is not None
        with any_db.engine.begin() as admin:  # the server ends the writer's session
            admin.exec_driver_sql("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        assert await writer.store(item("after")) is True  # retried on a new connection
        assert writer._async_conn is not conn
    finally:
        await writer.aclose()
        writer.stop()
    assert [key for key, _, _ in stored(any_db)] == ["before", "after"]
