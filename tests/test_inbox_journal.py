"""The inbox journal (SQLite files): what a callback route appends comes back into ``raw_event``
exactly once, in order, with its own receive time; damaged tails, crashes between the move and
the delete, other processes' segments (cut to their records or not) and segments that cannot be
made are handled."""

from __future__ import annotations

import fcntl
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot import inbox_journal
from bot.doors.wire import store_form
from bot.inbox_journal import InboxJournal, decode, encode, journal_dir
from storage import inbox
from storage.db import Database

T0 = datetime(2026, 11, 20, 12, 0, 0, 123456, tzinfo=UTC)


def journal_of(sqlite_db: Database) -> InboxJournal:
    directory = journal_dir(sqlite_db.engine.url)
    assert directory is not None
    return InboxJournal(directory, sqlite_db)


def record(key: str, seconds: int = 0, body: str = "<xml>打卡 Day1</xml>") -> bytes:
    received = (T0 + timedelta(seconds=seconds)).timestamp()
    return encode("robot", "robot", key, body.encode(), received)


def rows(sqlite_db: Database) -> list[tuple[str, str, datetime]]:
    with sqlite_db.unit_of_work_sync() as uow:
        return [(r.event_key, r.payload, r.received_at) for r in inbox.pending(uow.session, 1000)]


def segments(journal: InboxJournal) -> list[Path]:
    return sorted(journal.directory.glob("*.journal"))


def test_the_journal_lives_next_to_a_sqlite_file_only(tmp_path: Path) -> None:
    on_file = Database(f"sqlite:///{tmp_path / 'x.db'}")
    in_memory = Database("sqlite://")
    try:
        assert journal_dir(on_file.engine.url) == tmp_path / "x.db.inbox"
        assert journal_dir(in_memory.engine.url) is None
    finally:
        on_file.dispose()
        in_memory.dispose()


def test_records_read_back_whole_and_stop_at_a_damaged_one() -> None:
    data = record("a") + record("b", 1, "正文 \x1f with\nnewlines")
    records, end = decode(data + record("c")[:-3])
    assert end == len(data)
    assert [(r.key, r.body, r.received_at) for r in records] == [
        ("a", "<xml>打卡 Day1</xml>", T0),
        ("b", "正文 \x1f with\nnewlines", T0 + timedelta(seconds=1)),
    ]
    flipped = bytearray(data)
    flipped[-1] ^= 1  # a bit changed in b's body: its checksum fails
    assert [r.key for r in decode(bytes(flipped))[0]] == ["a"]


async def test_appended_callbacks_reach_the_table_once_in_order(sqlite_db: Database) -> None:
    journal = journal_of(sqlite_db)
    for key, seconds in [("m1", 0), ("m2", 1), ("m1", 2), ("m3", 3)]:  # m1 retried
        journal.append(record(key, seconds))
    assert await journal.drain() == 4
    at = [T0 + timedelta(seconds=s) for s in (0, 1, 3)]
    assert rows(sqlite_db) == [
        (key, store_form("<xml>打卡 Day1</xml>", when), when)
        for key, when in zip(["m1", "m2", "m3"], at, strict=True)
    ]
    assert segments(journal) == [] and not journal.pending()
    journal.close()


async def test_it_says_how_many_callbacks_wait_outside_the_table_and_since_when(
    sqlite_db: Database,
) -> None:
    journal = journal_of(sqlite_db)
    assert journal.waiting() == (0, None)
    for i in range(4):
        journal.append(record(f"w{i}", 10 * i))
    assert journal.waiting() == (4, T0)
    assert await journal.absorb(limit=3) == 3
    journal.append(record("w4", 40))  # a new segment meanwhile
    assert journal.waiting() == (2, T0 + timedelta(seconds=30))
    assert await journal.drain() == 2
    assert journal.waiting() == (0, None)
    journal.close()


async def test_a_move_is_done_in_bounded_transactions(sqlite_db: Database) -> None:
    journal = journal_of(sqlite_db)
    for i in range(5):
        journal.append(record(f"k{i}", i))
    assert await journal.absorb(limit=3) == 3
    assert [key for key, _, _ in rows(sqlite_db)] == ["k0", "k1", "k2"]
    assert len(segments(journal)) == 1  # kept until all its records are in
    journal.append(record("k5", 5))  # goes to a new segment meanwhile
    assert await journal.absorb(limit=3) == 2
    assert await journal.absorb(limit=3) == 1
    assert [key for key, _, _ in rows(sqlite_db)] == [f"k{i}" for i in range(6)]
    assert segments(journal) == []
    journal.close()


async def test_a_backlog_is_read_a_segment_at_a_time(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A move claims every free segment (another process skips them, so the order holds) but
    reads one only when its transaction needs its records."""
    monkeypatch.setattr(inbox_journal, "SEGMENT_BYTES", 2 * len(record("b0")))
    dead = journal_of(sqlite_db)
    for i in range(6):
        dead.append(record(f"b{i}", i))  # two a segment
    dead.close()
    assert len(segments(dead)) == 3
    mover = journal_of(sqlite_db)
    assert await mover.absorb(limit=3) == 3  # the first segment and half of the second
    assert mover.waiting() == (1, T0 + timedelta(seconds=3))  # the third is not read yet
    other = journal_of(sqlite_db)
    assert await other.drain() == 0  # claimed by the first move
    assert await mover.drain() == 3
    assert [key for key, _, _ in rows(sqlite_db)] == [f"b{i}" for i in range(6)]
    assert segments(dead) == []
    mover.close()
    other.close()


async def test_a_move_claims_a_bounded_number_of_segments_at_a_time(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each claimed segment holds an open file: a backlog longer than the bound is claimed in
    turns, and another process may move the later segments meanwhile."""
    monkeypatch.setattr(inbox_journal, "SEGMENT_BYTES", len(record("c0")))
    monkeypatch.setattr(inbox_journal, "CLAIM_AT_MOST", 2)
    dead = journal_of(sqlite_db)
    for i in range(5):
        dead.append(record(f"c{i}", i))  # one a segment
    dead.close()
    mover = journal_of(sqlite_db)
    assert await mover.absorb(limit=1) == 1
    other = journal_of(sqlite_db)
    assert await other.absorb(limit=1) == 1  # c2 (it claims c2 and c3: c0 and c1 are taken)
    assert mover.pending()
    assert await mover.drain() == 2  # c1, then c4 in a second turn
    assert await other.drain() == 1  # c3
    assert sorted(key for key, _, _ in rows(sqlite_db)) == [f"c{i}" for i in range(5)]
    assert segments(dead) == []
    mover.close()
    other.close()


async def test_a_crash_between_commit_and_delete_stores_nothing_twice(sqlite_db: Database) -> None:
    journal = journal_of(sqlite_db)
    journal.append(record("once"))
    journal.close()  # the process stops writing; the segment stays
    [segment] = segments(journal)
    shutil.copy(segment, segment.with_suffix(".copy"))
    assert await journal_of(sqlite_db).drain() == 1
    segment.with_suffix(".copy").rename(segment)  # as if the delete never happened
    assert await journal_of(sqlite_db).drain() == 1
    assert [key for key, _, _ in rows(sqlite_db)] == ["once"]
    assert segments(journal) == []


async def test_a_live_processs_segment_waits_and_a_dead_ones_is_taken(sqlite_db: Database) -> None:
    other = journal_of(sqlite_db)  # another serving process: its segment is locked while it runs
    other.append(record("theirs"))
    mine = journal_of(sqlite_db)
    mine.append(record("mine", 1))
    assert await mine.drain() == 1
    assert [key for key, _, _ in rows(sqlite_db)] == ["mine"]
    other.close()  # it died (the lock goes with its file descriptor)
    assert await journal_of(sqlite_db).drain() == 1
    assert [key for key, _, _ in rows(sqlite_db)] == ["mine", "theirs"]


async def test_a_damaged_tail_is_reported_and_the_rest_stored(sqlite_db: Database) -> None:
    journal = journal_of(sqlite_db)
    journal.append(record("whole"))
    journal.close()
    [segment] = segments(journal)
    with segment.open("ab") as f:
        f.write(record("torn")[:10])  # a write cut short by a power loss
    mover = journal_of(sqlite_db)
    assert await mover.drain() == 1
    assert mover.damaged == 1
    assert [key for key, _, _ in rows(sqlite_db)] == ["whole"]
    assert segments(journal) == []


async def test_a_segment_that_cannot_be_made_raises_and_the_next_record_starts_anew(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = journal_of(sqlite_db)
    journal.append(record("before"))
    assert await journal.drain() == 1  # the next record needs a new segment

    def full_disk(fd: int, offset: int, size: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(os, "posix_fallocate", full_disk)
        with pytest.raises(OSError, match="No space left"):
            journal.append(record("lost"))
    assert journal.pending()  # the segment the failure left is for the next move to delete
    assert await journal.drain() == 0
    assert segments(journal) == []
    journal.append(record("after", 1))
    assert await journal.drain() == 1
    assert [key for key, _, _ in rows(sqlite_db)] == ["before", "after"]
    journal.close()


async def test_a_record_that_does_not_fit_starts_a_new_segment(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_journal, "SEGMENT_BYTES", 2 * len(record("k0")))
    journal = journal_of(sqlite_db)
    for i in range(3):
        journal.append(record(f"k{i}", i))
    journal.append(record("big", 3, body="<xml>" + "长" * 5000 + "</xml>"))  # its own size
    assert len(segments(journal)) == 3
    assert await journal.drain() == 4
    assert [key for key, _, _ in rows(sqlite_db)] == ["k0", "k1", "k2", "big"]
    journal.close()


async def test_a_dead_processs_uncut_segment_ends_at_its_zeros(sqlite_db: Database) -> None:
    dead = journal_of(sqlite_db)
    dead.append(record("answered"))
    [segment] = segments(dead)
    # It dies: the mapping and the lock go without the segment being cut to its records.
    assert dead._map is not None
    dead._map.close()
    os.close(dead._fd)
    assert segment.stat().st_size == inbox_journal.SEGMENT_BYTES
    mover = journal_of(sqlite_db)
    assert await mover.drain() == 1
    assert mover.damaged == 0
    assert [key for key, _, _ in rows(sqlite_db)] == ["answered"]


def test_a_segment_is_locked_while_its_process_writes(sqlite_db: Database) -> None:
    journal = journal_of(sqlite_db)
    journal.append(record("x"))
    [segment] = segments(journal)
    fd = os.open(segment, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        journal.close()
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once it stopped writing
    finally:
        os.close(fd)
