"""The callback routes' durable store: :class:`InboxWriter` stores each callback's raw event
before its answer, in the inbox journal on a SQLite file (:mod:`bot.inbox_journal`), otherwise in
the inbox table (:mod:`storage.inbox`), where it answers "was it new" once the row is committed,
with group commit across concurrent callbacks.

It stores in one of four ways (:data:`Mode`), behind :meth:`InboxWriter.append` ("journal")
and :meth:`InboxWriter.store` (the three that commit to the database):

* **"loop": on the event loop, on SQLite.** The callbacks that reach the writer in one loop
  iteration share one multi-row INSERT and one commit, on a sqlite3 connection of the writer's
  own. In WAL mode with ``synchronous=NORMAL`` a commit is a write into the OS page cache
  (durable when the process dies, not on power loss; see :mod:`storage.db`): tens of
  microseconds, less than handing the rows to a thread costs (a wake-up, the GIL changing hands
  twice, and a loop iteration to take the answer back; under load the thread also waited for the
  GIL while the loop ran, which held every answer back by milliseconds). That connection never
  waits for a lock (``busy_timeout=0``) and never checkpoints the WAL, which could block the
  loop: when the database is locked (a processing transaction of this process suspended at an
  ``await``, or another process writing) the batch goes to the thread instead, and the thread
  checkpoints every :data:`CHECKPOINT_EVERY` commits.
* **"async": on PostgreSQL, an asyncio psycopg connection on the loop.** A commit waits for the
  server; while one is in flight the loop goes on answering, and the callbacks that arrive
  meanwhile are committed together next.
* **"journal": on a SQLite file, the default.** The callback is appended to the inbox journal
  (:mod:`bot.inbox_journal`), one copy into a mapped file on the loop, and the route answers at
  once; the inbox worker moves the journal into the table before it processes. Every callback is
  "new" here: duplicates are dropped when they reach the table.
* **"thread"**, and SQLite's fallback. Each request's row is handed over with a future; the
  thread takes everything handed over (after waiting ``delay_ms`` for more when it was idle),
  writes it in one transaction, commits, and resolves the futures, one wake-up of each loop per
  commit. It keeps one connection of its own, and SQLite's busy timeout orders it with the other
  writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from sqlalchemy import Connection

from bot.inbox_journal import InboxJournal, encode, journal_dir
from storage import inbox
from storage.db import Database

log = logging.getLogger(__name__)

#: Commits on the loop between two WAL checkpoints by the thread. A commit of a few callbacks
#: writes about four pages; SQLite's own automatic checkpoint runs every 1,000 pages.
CHECKPOINT_EVERY = 250


@dataclass
class _Pending:
    item: inbox.Incoming
    future: asyncio.Future[bool]
    loop: asyncio.AbstractEventLoop


Outcome = tuple[asyncio.Future[bool], bool, BaseException | None]

#: Where the writer stores: "journal" (a SQLite file's inbox journal), "loop" (SQLite, on the
#: event loop, with the thread as fallback), "async" (PostgreSQL, an asyncio connection on the
#: loop), "thread" (always the thread).
Mode = Literal["journal", "loop", "async", "thread"]


class InboxWriter:
    """Commits raw events before their callbacks are answered (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        now: Callable[[], datetime],
        delay_ms: int = 1,
        mode: Mode | None = None,
    ) -> None:
        self._db = db
        self._now = now
        self._delay = delay_ms / 1000
        #: Where callbacks are stored (see :data:`Mode`); None: "journal" on a SQLite file,
        #: "loop" on another SQLite database, "async" otherwise.
        directory = journal_dir(db.engine.url)
        self.mode: Mode = mode or (
            "journal" if directory else "loop" if db.dialect == "sqlite" else "async"
        )
        if self.mode == "journal" and directory is None:
            raise ValueError("the inbox journal needs a SQLite database file")
        #: The journal ("journal" mode), which the inbox worker moves into the table.
        self.journal = InboxJournal(directory, db) if self.mode == "journal" and directory else None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        # Guarded by _lock: rows handed over, whether the thread waits, checkpoint/stop requests.
        self._pending: list[_Pending] = []
        self._idle = False
        self._checkpoint = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._started = False  # start() ran and stop() did not: checked per callback, cheaply
        #: Rows of the current loop iteration, committed or handed over by :meth:`_flush`.
        self._gathered: list[_Pending] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop store() runs on
        self._loop_conn: Any = None  # sqlite3.Connection, see _loop_connection
        #: "async": rows waiting for the next commit, the task committing, its connection.
        self._queued: list[_Pending] = []
        self._committer: asyncio.Task[None] | None = None
        self._async_conn: psycopg.AsyncConnection[Any] | None = None
        self.loop_commits = 0
        self.async_commits = 0
        self.thread_commits = 0
        self.checkpoints = 0

    def start(self) -> None:
        self._stopping = False
        self._started = True
        if self.journal is None:
            self._thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._started = False
        if self.journal is not None:
            self.journal.close()
        if self._thread is not None:
            with self._lock:
                self._stopping = True
                self._wake.notify()
            self._thread.join(timeout=10)
            self._thread = None
        self._drop_loop_connection()

    @property
    def running(self) -> bool:
        if self.journal is not None:
            return self._started
        return self._thread is not None and self._thread.is_alive()

    def append(self, door: str, namespace: str, key: str, body: bytes, received: float) -> None:
        """Store one callback's decrypted ``body`` (UTF-8), received at Unix time ``received``,
        durably, now, in "journal" mode (no waiting, no answer: duplicates are dropped in the
        table). Raises when it is not stored."""
        if not self._started or self.journal is None:
            raise RuntimeError("inbox writer is not running")
        self.journal.append(encode(door, namespace, key, body, received))

    async def store(self, item: inbox.Incoming) -> bool:
        """Commit ``item`` durably; True if it was new, False if its key was stored before."""
        if not self._started:
            raise RuntimeError("inbox writer is not running")
        if self.journal is not None:
            raise RuntimeError("the inbox writer journals: callbacks go through append()")
        loop = self._loop
        if loop is None or loop.is_closed():
            # Remembered: on Python 3.11 every get_running_loop() is a getpid() system call.
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        if not self._gathered:
            loop.call_soon(self._flush)
        self._gathered.append(_Pending(item, future, loop))
        return await future

    async def aclose(self) -> None:
        """Let an asynchronous commit in flight finish and close its connection (on the loop,
        before :meth:`stop`)."""
        if self._committer is not None:
            await asyncio.wait([self._committer], timeout=10)
        if self._async_conn is not None:
            with contextlib.suppress(Exception):
                await self._async_conn.close()
            self._async_conn = None

    def _flush(self) -> None:
        gathered, self._gathered = self._gathered, []
        if self.mode == "async":
            self._queued += gathered
            if self._committer is None or self._committer.done():
                loop = self._loop or asyncio.get_running_loop()
                self._committer = loop.create_task(self._commit_async())
            return
        if self.mode == "loop" and self._commit_on_loop(gathered):
            return
        if not self.running:  # the thread died: answer 503 rather than never
            error = RuntimeError("inbox writer is not running")
            _resolve_all([(p.future, False, error) for p in gathered])
            return
        with self._lock:
            self._pending += gathered
            if self._idle:
                self._wake.notify()

    # -- on the loop

    def _commit_on_loop(self, batch: list[_Pending]) -> bool:
        """Commit ``batch`` here and answer it; False (nothing written): the thread's turn.

        It talks to the sqlite3 connection directly: SQLAlchemy's statement and result layers
        cost more per commit than the INSERT of a few callbacks' rows.
        """
        try:
            raw = self._loop_connection()
            cursor = raw.cursor()
            try:

                def run(sql: str, params: tuple[object, ...]) -> list[Any]:
                    return cursor.execute(sql, params).fetchall()

                received = inbox.received_value(self._db.engine.dialect, self._now())
                items = [p.item for p in batch]
                new = set(inbox.insert_arrivals(run, "?", items, [received] * len(items)))
                raw.commit()
            except BaseException:
                raw.rollback()
                raise
            finally:
                cursor.close()
        except Exception as exc:
            if not _locked(exc):
                log.warning("inbox commit on the loop failed (%s); the thread retries it", exc)
                self._drop_loop_connection()
            return False
        self.loop_commits += 1
        _resolve_all([(p.future, i in new, None) for i, p in enumerate(batch)])
        if self.loop_commits % CHECKPOINT_EVERY == 0:
            with self._lock:
                self._checkpoint = True
                if self._idle:
                    self._wake.notify()
        return True

    def _loop_connection(self) -> Any:
        """The loop's own sqlite3 connection (the engine's settings, then its own)."""
        if self._loop_conn is None:
            proxy = self._db.engine.raw_connection()
            proxy.detach()  # its settings differ from the pool's: closed, not returned, at the end
            raw: Any = proxy.dbapi_connection
            raw.execute("PRAGMA busy_timeout=0")
            raw.execute("PRAGMA wal_autocheckpoint=0")
            self._loop_conn = raw
        return self._loop_conn

    def _drop_loop_connection(self) -> None:
        if self._loop_conn is not None:
            with contextlib.suppress(Exception):
                self._loop_conn.close()
            self._loop_conn = None

    # -- asynchronously on the loop

    async def _commit_async(self) -> None:
        """Commit what is queued, batch after batch: callbacks that arrive while a commit is in
        flight wait for the next one together (group commit without a thread)."""
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                new = await self._insert_async([p.item for p in batch])
            except Exception as exc:
                log.exception("inbox commit of %d events failed", len(batch))
                _resolve_all([(p.future, False, exc) for p in batch])
                continue
            self.async_commits += 1
            _resolve_all([(p.future, i in new, None) for i, p in enumerate(batch)])

    async def _insert_async(self, items: list[inbox.Incoming]) -> set[int]:
        """Store ``items`` in one transaction; a broken connection is replaced and the batch
        tried once more (a retry of a commit that did land stores nothing twice: the inbox key
        is unique)."""
        received = inbox.received_value(self._db.engine.dialect, self._now())
        plan = inbox.ArrivalsInsert(items, "%s", [received] * len(items))
        for attempt in range(2):
            conn = await self._async_connection()
            try:
                returned: list[Any] = []
                async with conn.transaction(), conn.cursor() as cursor:
                    for sql, args in plan.statements:
                        await cursor.execute(sql, args)
                        returned += await cursor.fetchall()
                return set(plan.new_indexes(returned))
            except psycopg.OperationalError:
                with contextlib.suppress(Exception):
                    await conn.close()
                self._async_conn = None
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    async def _async_connection(self) -> psycopg.AsyncConnection[Any]:
        if self._async_conn is None or self._async_conn.closed:
            engine = self._db.engine
            args, kwargs = engine.dialect.create_connect_args(engine.url)
            kwargs.pop("context", None)  # SQLAlchemy's adapters, for its own connections
            self._async_conn = await psycopg.AsyncConnection.connect(
                *args, autocommit=True, **kwargs
            )
        return self._async_conn

    # -- in the thread

    def _take_work(self) -> tuple[list[_Pending], bool, bool]:
        """The next rows to commit, whether a checkpoint is due, and whether to stop after."""
        with self._lock:
            idle = not (self._pending or self._checkpoint or self._stopping)
            if idle:
                self._idle = True
                while not (self._pending or self._checkpoint or self._stopping):
                    self._wake.wait()
                self._idle = False
        if idle and self._delay > 0:
            time.sleep(self._delay)  # the first rows after a quiet spell: let others join them
        with self._lock:
            batch, self._pending = self._pending, []
            checkpoint, self._checkpoint = self._checkpoint, False
            return batch, checkpoint, self._stopping

    def _run(self) -> None:
        conn: Connection | None = None
        try:
            while True:
                batch, checkpoint, stopping = self._take_work()
                if batch:
                    try:
                        if conn is None:
                            conn = self._db.engine.connect()
                        self._commit_in_thread(conn, batch)
                    except Exception:
                        with contextlib.suppress(Exception):
                            conn.close()  # type: ignore[union-attr]
                        conn = None  # start the next batch on a fresh connection
                if checkpoint:
                    with contextlib.suppress(Exception):
                        if conn is None:
                            conn = self._db.engine.connect()
                        conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
                        conn.commit()
                        self.checkpoints += 1
                if stopping:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _commit_in_thread(self, conn: Connection, batch: list[_Pending]) -> None:
        """Commit ``batch`` and answer each loop once; on failure answer the error and re-raise."""
        outcome: list[tuple[_Pending, bool, BaseException | None]]
        failure: Exception | None = None
        try:
            with conn.begin():
                now = self._now()
                new = set(inbox.store_arrivals(conn, [p.item for p in batch], [now] * len(batch)))
            self.thread_commits += 1
            outcome = [(p, i in new, None) for i, p in enumerate(batch)]
        except Exception as exc:
            log.exception("inbox commit of %d events failed", len(batch))
            outcome = [(p, False, exc) for p in batch]
            failure = exc
        loops = {id(p.loop): p.loop for p in batch}
        for key, loop in loops.items():
            mine = [(p.future, ok, exc) for p, ok, exc in outcome if id(p.loop) == key]
            loop.call_soon_threadsafe(_resolve_all, mine)
        if failure is not None:
            raise failure


def _locked(exc: BaseException) -> bool:
    """SQLite's "database is locked" (another writer holds the lock): not a failure."""
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def _resolve_all(results: list[Outcome]) -> None:
    for future, value, exc in results:
        if future.done():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)
