"""Online backups of a SQLite database (SPEC §14), taken while the bot keeps running.

SQLite's backup API copies the database page by page into a new file and restarts the copy when
another connection writes meanwhile, so the result is always one consistent snapshot (WAL
included). PostgreSQL has its own tools (``pg_dump``); :func:`backup_sqlite` refuses other URLs.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

#: Pages copied per step; between steps other connections may read and write.
PAGES_PER_STEP = 1024


class BackupError(RuntimeError):
    """The backup cannot be taken (not SQLite, target exists or is a directory, source missing,
    target not writable)."""


def backup_sqlite(database_url: str, target: Path, *, overwrite: bool = False) -> int:
    """Copy the SQLite database at ``database_url`` into ``target``; return its size in bytes.

    The copy goes to a temporary file beside ``target`` and is renamed into place at the end,
    so a failed or interrupted backup never leaves a half-written ``target``.
    """
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        backend = url.get_backend_name()
        raise BackupError(
            f"only SQLite databases can be backed up this way; use pg_dump for {backend}"
        )
    if not url.database or url.database == ":memory:":
        raise BackupError("the database is in memory; there is no file to back up")
    source = Path(url.database)
    if not source.exists():
        raise BackupError(f"no database file at {source}")
    if target.is_dir():
        raise BackupError(
            f"{target} is a directory; name the backup file, e.g. {target / 'cohortbot.db'}"
        )
    if target.exists() and not overwrite:
        raise BackupError(f"{target} already exists (use --force to replace it)")
    if target.resolve() == source.resolve():
        raise BackupError("the backup cannot replace the database itself")
    partial = target.with_name(target.name + ".partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.unlink(missing_ok=True)
        _copy(source, partial)
        partial.replace(target)
    except (OSError, sqlite3.Error) as exc:
        _discard(partial)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BackupError(f"the backup to {target} failed ({reason})") from exc
    except BaseException:  # interrupted: no half-written copy is left behind either
        _discard(partial)
        raise
    return target.stat().st_size


def _discard(partial: Path) -> None:
    with contextlib.suppress(OSError):  # there may be no such file, nor even its folder
        partial.unlink(missing_ok=True)


def _copy(source: Path, target: Path) -> None:
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=PAGES_PER_STEP)
        finally:
            dst.close()
    finally:
        src.close()
