"""Engines and migrations: SQLite (a file under ``data/``, WAL, busy timeout) by default,
PostgreSQL by URL (SPEC §14). The schema is created and changed only by Alembic migrations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from storage.uow import UnitOfWork
from storage.urls import normalize_url

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_CACHE_KIB = 16_384
#: The page size a new SQLite file is created with (SQLite's default: 4,096).
SQLITE_PAGE_BYTES = 8192
#: WAL pages after which a commit copies the WAL back into the database (SQLite's default: 1,000).
SQLITE_WAL_CHECKPOINT_PAGES = 10_000


class DatabaseUnavailableError(RuntimeError):
    """The configured database cannot be opened: the server refuses or is not there, the
    database does not exist, the login fails, the SQLite file's folder cannot be made.
    ``url`` is the URL with its password masked; ``reason`` is one line."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``, fit for logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def require_existing(url: str) -> None:
    """For commands that only read: a SQLite file that does not exist is a mistyped path (or a
    relative path run from another folder), not a database to create empty; raise
    :class:`DatabaseUnavailableError`. Other databases are checked by connecting."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    if not Path(parsed.database).is_file():
        raise DatabaseUnavailableError(
            masked(url),
            f"文件 {Path(parsed.database).resolve()} 不存在（路径写错了？新数据库请先运行 "
            "cohortbot db upgrade）",
        )


def make_engine(url: str) -> Engine:
    original = url
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                folder = Path(parsed.database).parent
                raise DatabaseUnavailableError(
                    masked(original), f"cannot create {folder} ({exc.strerror})"
                ) from exc
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # Larger pages make the random-access indexes (per group, member and day) shallower: a
    # 100,000-message import took about 5% less time and the nightly digest pass no more, for
    # the same bytes written. Set before anything else: it applies only to a file that has no
    # pages yet; an existing database keeps its size (SQLite changes it only by VACUUM outside
    # WAL mode).
    cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_BYTES}")
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL loses nothing when the process dies (only on power loss).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # 16 MiB of page cache (the default is 2 MiB): ingest updates indexes all over the file, and
    # every page that falls out of the cache is read back with a system call.
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    # An import batch dirties a few thousand index pages, and the next batch mostly the same
    # ones: checkpointing every 10,000 pages (40-80 MB) instead of every 1,000 copies each page
    # back once per several batches, not once per batch (100,000 imported messages: ~0.6 s less
    # CPU). A checkpoint only moves committed pages from the WAL to the database file, so how
    # often it runs changes nothing about what survives a crash.
    cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_CHECKPOINT_PAGES}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Apply every migration not applied yet (idempotent)."""
    command.upgrade(alembic_config(engine), "heads")


class Database:
    """The engine, the session factory, and a per-process write lock.

    Units of work run on the event loop thread; the lock keeps two of them from interleaving
    their transactions (which on SQLite would make one wait on the other's write lock while
    blocking the loop the other needs to finish).
    """

    def __init__(self, url: str) -> None:
        self.configured_url = url  # as the operator wrote it, for messages
        self.url = normalize_url(url)
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._lock = asyncio.Lock()
        self._commit_thread: ThreadPoolExecutor | None = None

    def _committer(self) -> ThreadPoolExecutor:
        """The worker thread that commits a unit of work given ``meanwhile`` work."""
        if self._commit_thread is None:
            self._commit_thread = ThreadPoolExecutor(1, thread_name_prefix="commit")
        return self._commit_thread

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def check_connection(self) -> None:
        """Open one connection, or raise :class:`DatabaseUnavailableError` saying why (before a
        migration or a command fails half-way with the driver's traceback)."""
        try:
            with self.engine.connect():
                pass
        except OperationalError as exc:
            reason = " ".join(str(exc.orig or exc).split())  # the driver's lines, as one
            raise DatabaseUnavailableError(masked(self.configured_url), reason) from exc

    def upgrade(self) -> None:
        upgrade(self.engine)

    def has_schema(self) -> bool:
        return inspect(self.engine).has_table("alembic_version")

    def session(self) -> Session:
        return self._sessions()

    @contextmanager
    def _open(self) -> Iterator[UnitOfWork]:
        """A unit of work that the caller's block commits; rolled back if the block raises."""
        with self._sessions() as session:
            uow = UnitOfWork(session)
            try:
                yield uow
            except BaseException:
                uow.rollback()
                raise

    @contextmanager
    def unit_of_work_sync(self) -> Iterator[UnitOfWork]:
        """A unit of work for synchronous callers (CLI, exports); commits on success."""
        with self._open() as uow:
            yield uow
            uow.commit()

    @asynccontextmanager
    async def unit_of_work(
        self, meanwhile: Callable[[], None] | None = None
    ) -> AsyncIterator[UnitOfWork]:
        """A unit of work on the event loop; commits on success, rolls back on error.

        Inside it, await nothing that waits on I/O: the transaction stays open meanwhile.

        ``meanwhile``, work that needs no database (the import door parses its next batch), runs
        on this thread while a worker thread commits: the buffered writes, the database's commit
        and any WAL checkpoint, which run mostly outside the GIL. It runs only when the block
        succeeded, whether or not the commit then does; the lock is held until both are done.
        """
        async with self._lock:
            with self._open() as uow:
                yield uow
                if meanwhile is None:
                    uow.commit()
                    return
                committed = self._committer().submit(uow.commit)
                try:
                    meanwhile()
                finally:
                    # Waited for on this thread, as a plain commit is: nothing (a cancelled
                    # import, Ctrl-C) can roll the session back while the worker commits it.
                    wait([committed])
                committed.result()

    def dispose(self) -> None:
        if self._commit_thread is not None:
            self._commit_thread.shutdown()
            self._commit_thread = None
        self.engine.dispose()
