"""The callback inbox's first stage on a SQLite file: an append-only journal, one segment file per
serving process, that :class:`InboxJournal` writes each admitted callback to before its 200 and
moves into the ``raw_event`` table (:mod:`storage.inbox`) before the inbox worker processes it.

Why a journal in front of the table: a callback's durable store is one copy of one record into
the OS page cache (a couple of microseconds), where a SQLite commit costs an INSERT, a commit, WAL
page writes and lock calls, and a future for each callback to wait on. Both are durable in the
same sense: a process that dies (``kill -9`` included) loses nothing that was answered, and a
power loss may lose the last moments, exactly as SQLite's WAL with ``synchronous=NORMAL`` (see
:mod:`storage.db`). The journal lives next to the database file (``<db>.inbox/``), on the same
disk, so it shares the database's fate. It is used for SQLite files only: a PostgreSQL
deployment may run on machines whose local disk does not outlive them.

Segments and ownership: a serving process appends to a segment of its own, created with a unique
name and held under an exclusive ``flock`` for as long as the process writes to it. A segment is
created at :data:`SEGMENT_BYTES` with its blocks allocated (``posix_fallocate``: a full disk
shows then, as an error the route answers 503 to, not later) and written through a shared
memory map: appending a record is a copy into the page cache, with no system call (the ``write()``
it replaced cost about 4 µs a callback in place). Closed, it is cut to the records it holds; a
segment left by a process that died ends in zeros, which reading takes as its end. :meth:`absorb`
closes the current segment (the next record starts a new one), then claims the segments nobody
holds (this process's closed ones, and those of processes that died; :data:`CLAIM_AT_MOST` at a
time) and moves them into ``raw_event`` in arrival order, in transactions of a bounded number of
records. A claimed segment is read only when a transaction needs its records, so a long backlog
(a worker stopped for hours) is never in memory at once; it is deleted once all of its records
are committed. The inbox's unique key drops a retried callback (it is in the journal twice) and
a record moved twice (a process that died between the commit and the delete), so every answered
callback is stored exactly once.

Records: ``<u32 length><u32 crc32>`` then ``length`` bytes: ``<i64 received µs since the epoch>
<u16 door length><u16 namespace length><u32 key length>`` and the door, namespace, key and the
decrypted body, UTF-8. A record is copied in whole or, when it no longer fits, starts a new
segment, so a damaged record (torn by a power loss, or by a process killed in the middle of the
copy, before its answer) can only be a segment's last, and reading stops there.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import mmap
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import URL

from bot.doors.wire import store_form
from storage import inbox
from storage.db import Database

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<II")  # length of the rest, crc32 of the rest
_HEAD = struct.Struct("<qHHI")  # received µs, door/namespace/key lengths
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SUFFIX = ".journal"
_names = itertools.count()
#: The size a segment is created at (a larger record gets a segment of its own size).
SEGMENT_BYTES = 4 << 20
#: Segments one move claims at most (an open file each): a larger backlog is claimed in turns.
CLAIM_AT_MOST = 64


def journal_dir(url: URL) -> Path | None:
    """Where the callback journal of the database at ``url`` lives (``<database file>.inbox``),
    or None when it is not a SQLite file (PostgreSQL, or an in-memory database)."""
    name = url.database or ""
    if url.get_backend_name() != "sqlite" or name in ("", ":memory:") or "mode=memory" in str(url):
        return None
    return Path(name).resolve().parent / f"{Path(name).name}.inbox"


def encode(door: str, namespace: str, key: str, body: bytes, received: float) -> bytes:
    """One journal record (see the module docstring for the layout) for a decrypted ``body`` in
    UTF-8, received at Unix time ``received`` (the route has both at hand already)."""
    # A float holds today's Unix time to a tenth of a microsecond: round() gives it exactly, for
    # a fraction of what datetime arithmetic costs (this runs once per callback).
    micros = round(received * 1_000_000)
    d, n, k = door.encode(), namespace.encode(), key.encode()
    rest = b"".join((_HEAD.pack(micros, len(d), len(n), len(k)), d, n, k, body))
    return _FRAME.pack(len(rest), zlib.crc32(rest)) + rest


@dataclass(frozen=True)
class Record:
    """One journalled callback, as read back."""

    door: str
    namespace: str
    key: str
    body: str
    received_at: datetime

    def incoming(self) -> inbox.Incoming:
        return inbox.Incoming(
            self.door, self.namespace, self.key, store_form(self.body, self.received_at)
        )


def decode(data: bytes) -> tuple[list[Record], int]:
    """The whole records in ``data`` and the offset where they end (a damaged or cut-off record
    and anything after it are not read)."""
    records: list[Record] = []
    offset, end = 0, len(data)
    while offset + _FRAME.size <= end:
        length, crc = _FRAME.unpack_from(data, offset)
        start = offset + _FRAME.size
        rest = data[start : start + length]
        if len(rest) < length or length < _HEAD.size or zlib.crc32(rest) != crc:
            break
        micros, dl, nl, kl = _HEAD.unpack_from(rest)
        try:
            fields = rest[_HEAD.size :]
            door = fields[:dl].decode()
            namespace = fields[dl : dl + nl].decode()
            key = fields[dl + nl : dl + nl + kl].decode()
            body = fields[dl + nl + kl :].decode()
        except UnicodeDecodeError:
            break
        received = _EPOCH + timedelta(microseconds=micros)
        records.append(Record(door, namespace, key, body, received))
        offset = start + length
    return records, offset


@dataclass
class _Segment:
    """A segment being moved into the table: its open, locked file and, once read, its records
    (the first ``moved`` of them committed)."""

    path: Path
    fd: int
    records: list[Record] | None = None  # None: not read yet
    moved: int = 0

    @property
    def done(self) -> bool:
        return self.records is not None and self.moved >= len(self.records)


@dataclass
class InboxJournal:
    """Appends callbacks to this process's segment and moves segments into ``raw_event``."""

    directory: Path
    db: Database
    #: How many records one transaction of :meth:`absorb` moves at most.
    batch: int = 2000
    _fd: int = -1
    _map: mmap.mmap | None = None  # the current segment, mapped
    _used: int = 0  # bytes of it holding records
    _base: int = 0  # ``appended`` when it was made
    _open: list[_Segment] = field(default_factory=list)  # segments being moved, oldest first
    _moving: asyncio.Lock = field(default_factory=asyncio.Lock)  # one absorb at a time
    _look: bool = True  # segments of processes that died may wait: list the directory
    appended: int = 0
    damaged: int = 0  #: segments whose end was a damaged record (logged when read)

    # -- writing (the callback route, on the event loop)

    def append(self, record: bytes) -> None:
        """Store one record (from :func:`encode`); raises OSError when no segment can hold it
        (a new one cannot be created: a full disk, say)."""
        used = self._used
        end = used + len(record)
        segment = self._map
        if segment is None or end > len(segment):
            self._close_segment()
            segment = self._map = self._new_segment(len(record))
            self._base = self.appended
            used, end = 0, len(record)
        segment[used:end] = record
        self._used = end
        self.appended += 1

    def _new_segment(self, room: int) -> mmap.mmap:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Named by creation time (a file name, not business time: the system clock is right
        # here), then process and counter: segments sort in the order they were begun.
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(_names):06d}{_SUFFIX}"
        fd = os.open(self.directory / name, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours until closed or until we die
            size = max(SEGMENT_BYTES, room)
            _allocate(fd, size)
            segment = mmap.mmap(fd, size)
        except OSError:
            os.close(fd)  # left without records: the next move deletes it
            self._look = True
            raise
        self._fd = fd
        return segment

    def _close_segment(self) -> None:
        """Stop writing to the current segment: unmapped and cut to the records it holds."""
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._used)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
            self._look = True  # its records wait in the directory
        self._used = 0

    def close(self) -> None:
        """Stop writing (the current segment is left for :meth:`absorb`) and let go of the
        segments being moved."""
        self._close_segment()
        for segment in self._open:
            with contextlib.suppress(OSError):
                os.close(segment.fd)
        self._open.clear()

    def waiting(self) -> tuple[int, datetime | None]:
        """How many callbacks this process journalled are not in the table yet, and when the
        oldest of them was received (for the inbox gauges; a dead process's segment counts once
        a move has read it)."""
        count, oldest = 0, None
        for segment in self._open:
            if segment.records is not None and segment.moved < len(segment.records):
                count += len(segment.records) - segment.moved
                first = segment.records[segment.moved].received_at
                oldest = first if oldest is None else min(oldest, first)
        if self._map is not None and self._used:
            count += self.appended - self._base
            micros = _HEAD.unpack_from(self._map, _FRAME.size)[0]
            first = _EPOCH + timedelta(microseconds=micros)
            oldest = first if oldest is None else min(oldest, first)
        return count, oldest

    # -- moving into the table

    def pending(self) -> bool:
        """Whether anything may wait to be moved: this process wrote since the last move, a
        segment is part-moved, or the directory was not looked at yet (at start)."""
        return self._fd >= 0 or bool(self._open) or self._look

    async def absorb(self, limit: int | None = None) -> int:
        """Move up to ``limit`` (default :attr:`batch`) journalled callbacks into ``raw_event``,
        oldest first, in one transaction; return how many records were moved (duplicates
        included). Closes this process's current segment first when nothing else is waiting."""
        async with self._moving:
            return await self._absorb(limit or self.batch)

    async def drain(self) -> int:
        """Move everything journalled so far (a graceful stop, a test); return how many."""
        moved = 0
        while self.pending() and (n := await self.absorb()):
            moved += n
        return moved

    async def _absorb(self, limit: int) -> int:
        if not self._open:
            self._close_segment()
            self._look = False
            self._open = list(self._claim_segments())
        taken: list[tuple[_Segment, list[Record]]] = []
        room = limit
        for segment in self._open:
            if room <= 0:
                break
            if segment.records is None:
                segment.records = self._read(segment)
            chunk = segment.records[segment.moved : segment.moved + room]
            taken.append((segment, chunk))
            room -= len(chunk)
        records = [r for _, chunk in taken for r in chunk]
        if records:
            # A unit of work: ordered with this process's other transactions (see storage.db).
            async with self.db.unit_of_work() as uow:
                inbox.store_arrivals(
                    uow.writer.connection(),
                    [r.incoming() for r in records],
                    [r.received_at for r in records],
                )
        for segment, chunk in taken:
            segment.moved += len(chunk)
        while self._open and self._open[0].done:
            done = self._open.pop(0)
            with contextlib.suppress(FileNotFoundError):
                done.path.unlink()
            os.close(done.fd)
        return len(records)

    def _claim_segments(self) -> Iterator[_Segment]:
        """The oldest :data:`CLAIM_AT_MOST` segments nobody holds, locked (not read yet)."""
        try:
            names = sorted(p for p in self.directory.iterdir() if p.name.endswith(_SUFFIX))
        except FileNotFoundError:
            return
        claimed = 0
        for path in names:
            if claimed >= CLAIM_AT_MOST:
                self._look = True  # the rest, after these
                return
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # moved by another process meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # a live process writes to it, or another one is moving it
                continue
            if os.fstat(fd).st_nlink == 0:
                os.close(fd)  # moved and deleted by another process before we locked it
                continue
            claimed += 1
            yield _Segment(path, fd)

    def _read(self, segment: _Segment) -> list[Record]:
        """A claimed segment's whole records (a damaged tail is counted and logged)."""
        data = _read_all(segment.fd)
        records, end = decode(data)
        # A segment whose process died was not cut to its records: zeros end it.
        if end < len(data) and data.count(0, end) < len(data) - end:
            self.damaged += 1
            log.warning(
                "inbox journal %s: %d bytes after record %d are damaged and not read",
                segment.path.name,
                len(data) - end,
                len(records),
            )
        return records


def _allocate(fd: int, size: int) -> None:
    """Give the file ``size`` bytes with their blocks reserved, so that a full disk is an error
    here and not a SIGBUS when a page of the mapping is first written. Where the system has no
    ``posix_fallocate`` (macOS), the file is only extended."""
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, size)
    else:
        os.ftruncate(fd, size)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
