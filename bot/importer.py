"""Door 5, replay/import (SPEC §1): archive JSON lines from a file, idempotently.

Bad lines are reported with their line numbers and reasons; the rest is imported. Importing the
same file twice changes nothing (the inbox drops every message it already has), so an import
stopped part-way (Ctrl-C, see :func:`stop_on_sigint`) continues when run again.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from bot.app import App
from bot.collector import collect_pass_garbage, frozen_and_paused
from bot.doors.archive import ArchiveFormatError, parse_line
from bot.updates import Door, Update

#: Lines per transaction. Each batch rewrites most pages of the random-access indexes (per group,
#: per member, per day) once, so bigger batches write far less: the 100,000 messages of
#: ``bench/import_throughput.py`` made the process write 874 MB to disk in batches of 2,000 and
#: 534 MB in batches of 5,000, which took 8-10% less time on SQLite and on PostgreSQL, for about
#: 20 MiB more peak memory (10,000 was no faster). A batch holds SQLite's write lock for under
#: half a second, which a live door's insert waits out (busy timeout 10 s).
BATCH = 5000
#: Lines between two collections of cyclic garbage (see :func:`import_file`). A batch leaves
#: next to none, and each collection walks the batch being parsed (about 10 ms).
COLLECT_EVERY = 50_000
#: Lines between two progress lines of ``cohortbot import`` (see :func:`progress_printer`).
PROGRESS_EVERY = 50_000


@dataclass
class ImportReport:
    lines: int = 0
    imported: int = 0
    duplicates: int = 0
    skipped: int = 0  # blank lines, bots' own posts, switch records
    failed: int = 0  # well-formed lines whose processing raised (stored with the error)
    errors: list[tuple[int, str]] = field(default_factory=list)
    interrupted: bool = False  # stopped on request after a committed batch, lines left unread

    def summary(self) -> str:
        return (
            f"{self.lines} 行：导入 {self.imported}，重复 {self.duplicates}，跳过 {self.skipped}，"
            f"格式错误 {len(self.errors)}，处理失败 {self.failed}"
        )


#: Told after every committed batch, with the report so far (lines counts what has been read,
#: which runs a batch ahead of what has been committed).
Progress = Callable[[ImportReport], None]


def progress_printer(write: Callable[[str], None], every: int = PROGRESS_EVERY) -> Progress:
    """A :data:`Progress` that writes one line each time another ``every`` lines are read, so a
    long import is not silent (a million lines take minutes)."""
    told = [0]

    def tell(report: ImportReport) -> None:
        if report.lines // every > told[0]:
            told[0] = report.lines // every
            done = report.imported + report.duplicates + report.failed
            write(
                f"已读 {report.lines} 行，已处理 {done} 条：导入 {report.imported}，"
                f"重复 {report.duplicates}"
            )

    return tell


@contextlib.contextmanager
def stop_on_sigint() -> Iterator[threading.Event]:
    """An event that Ctrl-C (SIGINT) sets instead of raising ``KeyboardInterrupt``, for
    :func:`import_file`'s ``stop``: the import then ends after the batch it is committing. A
    second Ctrl-C raises ``KeyboardInterrupt`` as usual (the batch in flight rolls back).

    Why not ``asyncio.run``'s own handling: it cancels the main task, and the import's commits
    never give the cancellation a chance to land until the file is done (then it raised
    ``CancelledError`` and lost the report)."""
    stop = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _read(path: Path, report: ImportReport) -> Iterator[tuple[Update, str]]:
    # Binary lines decoded one at a time: one line that is not UTF-8 is reported like any other
    # bad line instead of stopping the read.
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            report.lines = number
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                reason = f"不是 UTF-8 文本（第 {exc.start + 1} 个字节无法解码）"
                report.errors.append((number, reason))
                continue
            if not line:
                report.skipped += 1
                continue
            try:
                update = parse_line(line, Door.IMPORT)
            except ArchiveFormatError as exc:
                report.errors.append((number, str(exc)))
                continue
            if update is None:
                report.skipped += 1
                continue
            yield update, line


async def import_file(
    app: App,
    path: str | Path,
    batch_size: int = BATCH,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> ImportReport:
    """Import every good line of ``path``; raises only for an unreadable file, not bad lines.
    ``progress`` is told after every committed batch. Once ``stop`` is set, the import ends after
    the batch being committed, with ``interrupted`` set and the report counting the lines up to
    that batch's end (committed batches stay; importing the file again continues)."""
    # An import allocates millions of short-lived objects and keeps a batch or two alive: the
    # collector, left to itself, walked the live batch again and again (5-7% of an import) and,
    # without the freeze, every long-lived object of the process too (a quarter of an import).
    # It runs every COLLECT_EVERY lines instead.
    with frozen_and_paused():
        return await _import(app, Path(path), batch_size, progress, stop)


async def _import(
    app: App,
    path: Path,
    batch_size: int,
    progress: Progress | None,
    stop: threading.Event | None,
) -> ImportReport:
    report = ImportReport()
    lines = _read(path, report)
    batch = list(islice(lines, batch_size))
    uncollected = 0  # lines since the last collection
    while batch:
        # The report up to this batch's last line, before the next batch is read into it.
        read_to, skipped, errors = report.lines, report.skipped, len(report.errors)
        following: list[tuple[Update, str]] = []
        unreadable: list[BaseException] = []

        def read_next(
            into: list[tuple[Update, str]] = following, failed: list[BaseException] = unreadable
        ) -> None:
            try:
                into.extend(islice(lines, batch_size))
            except BaseException as exc:  # raised below, once this batch is safely committed
                failed.append(exc)

        # The next batch is parsed while this one commits (one batch ahead, no more).
        result = await app.pipeline.ingest(batch, meanwhile=read_next)
        report.imported += result.new
        report.duplicates += result.duplicates
        report.failed += result.failed
        if unreadable:
            raise unreadable[0]
        if progress is not None:
            progress(report)
        if stop is not None and stop.is_set() and following:
            # The batch read ahead is dropped: the report tells what was committed.
            report.lines, report.skipped, report.interrupted = read_to, skipped, True
            del report.errors[errors:]
            break
        uncollected += len(batch)
        if uncollected >= COLLECT_EVERY:
            collect_pass_garbage()
            uncollected = 0
        batch = following
    return report
