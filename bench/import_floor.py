"""Import floor: how fast the per-message minimum of an import runs, with no framework.

Issue 2 asks the import door for 20,000 messages/s. This script measures what that target leaves
room for. It imports the throughput benchmark's file (``bench/import_throughput.py``: 100,000
messages, 200 groups) into a fresh SQLite database with the real schema and pragmas, but as one
hand-written loop on the DBAPI connection, doing only what every message needs:

- decode the JSON line;
- store the raw event (deduplicated, like the inbox);
- store the message row;
- work out its learning day, meaningful characters and check-in kind with the bot's own
  functions (``bot.clock.learning_day``, ``handlers.text.meaningful_chars``,
  ``handlers.checkins.detect``), and insert the day's check-in;
- move the daily counters, with the same upsert and in key order;
- commit every :data:`bot.importer.BATCH` lines, as the import does.

Left out: the ``Update`` type, dispatch and context, member sightings, memberships, the points
ledger, milestones, and the other handlers' checks. It runs on one thread. So this is a floor,
not a design: the real import cannot be faster than this loop without parallel processes or
moving the per-row work into SQL.

``--check`` also runs the real import (``bench/import_throughput.run``) into another database
and compares the totals (messages, characters, check-ins, counter rows); exits 1 if they differ.

    .venv/bin/python bench/import_floor.py [--messages N] [--groups G] [--check]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.dialects import sqlite

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.import_throughput import generate, run, settings_for
from bot.clock import learning_day
from bot.config import CohortSettings
from bot.importer import BATCH
from handlers.checkins import detect
from handlers.text import meaningful_chars
from storage.db import Database
from storage.types import UTCDateTime

START = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
#: An aware datetime as the import stores it on SQLite (the real import's own bind processor).
stamp: Callable[[datetime], str] = UTCDateTime().bind_processor(sqlite.dialect())
#: Bound parameters per multi-row INSERT (SQLite's oldest limit is 999).
MAX_PARAMS = 999

RAW = (
    "INSERT INTO raw_event (door, namespace, event_key, payload, received_at, processed_at)"
    " VALUES {values} ON CONFLICT (namespace, event_key) DO NOTHING RETURNING event_key"
)
MESSAGE = (
    "INSERT INTO message (namespace, msg_id, chat_id, sender_id, sent_at, day, msg_type, text,"
    " chars, homework, quoted_msg_id, recalled) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, 0)"
)
CHECKIN = (
    "INSERT INTO checkin (cohort_id, member_id, day, chat_id, message_key, kind, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cohort_id, member_id, day) DO NOTHING"
    " RETURNING id"
)
COUNTERS = (
    "INSERT INTO daily_counter (chat_id, member_id, day, messages, chars, checkins, homework,"
    " reviews_given, reviews_received, commands, first_at, last_at) VALUES {values}"
    " ON CONFLICT (chat_id, member_id, day) DO UPDATE SET"
    " messages = messages + excluded.messages, chars = chars + excluded.chars,"
    " checkins = checkins + excluded.checkins,"
    " first_at = min(first_at, excluded.first_at), last_at = max(last_at, excluded.last_at)"
    " RETURNING chat_id, member_id, day, messages"
)


def many(sql: str, width: int, rows: list[tuple[Any, ...]]) -> Iterator[tuple[str, list[Any]]]:
    """``sql`` as multi-row INSERTs of up to :data:`MAX_PARAMS` parameters, with their values."""
    per = MAX_PARAMS // width
    one = "(" + ", ".join(["?"] * width) + ")"
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        yield sql.format(values=", ".join([one] * len(chunk))), [v for r in chunk for v in r]


def floor_import(con: sqlite3.Connection, source: Path, cohort: CohortSettings) -> int:
    """Import ``source`` with the per-message minimum; return the lines read."""
    now = stamp(START + timedelta(days=22))
    tz, start_hour = cohort.timezone, cohort.day_start_hour
    lines = 0
    with source.open("rb") as handle:
        while True:
            batch = [line for _, line in zip(range(BATCH), handle, strict=False)]
            if not batch:
                return lines
            lines += len(batch)
            items = []
            for raw in batch:
                text = raw.decode("utf-8").strip()
                item = json.loads(text)
                items.append((item, text, datetime.fromtimestamp(item["msgtime"] / 1000, UTC)))
            con.execute("BEGIN")
            new: set[str] = set()
            raw_rows = [("import", "archive", i["msgid"], text, now, now) for i, text, _ in items]
            for sql, values in many(RAW, 6, raw_rows):
                new.update(row[0] for row in con.execute(sql, values))
            messages: list[tuple[Any, ...]] = []
            deltas: dict[tuple[str, str, str], list[Any]] = {}
            for item, _text, sent_at in items:
                msgid = item["msgid"]
                if msgid not in new:
                    continue
                chat, member, content = item["roomid"], item["from"], item["text"]["content"]
                day = learning_day(sent_at, tz, start_hour)
                day_text, at = day.isoformat(), stamp(sent_at)
                chars = meaningful_chars(content)
                messages.append(
                    ("archive", msgid, chat, member, at, day_text, "text", content, chars)
                )
                key = (chat, member, day_text)
                delta = deltas.get(key)
                if delta is None:
                    delta = deltas[key] = [1, chars, 0, at, at]
                else:
                    delta[0] += 1
                    delta[1] += chars
                    delta[3], delta[4] = min(delta[3], at), max(delta[4], at)
                kind = detect(cohort, content, "text")
                if kind is not None and 1 <= cohort.cohort_day(day) <= cohort.length_days:
                    added = con.execute(
                        CHECKIN, (cohort.id, member, day_text, chat, f"archive:{msgid}", kind, now)
                    ).fetchone()
                    if added is not None:
                        delta[2] += 1
            con.executemany(MESSAGE, messages)
            counters = sorted(
                (*k, d[0], d[1], d[2], 0, 0, 0, 0, d[3], d[4]) for k, d in deltas.items()
            )
            for sql, values in many(COUNTERS, 12, counters):
                con.execute(sql, values).fetchall()
            con.execute("COMMIT")


def totals(con: sqlite3.Connection) -> tuple[int, ...]:
    """Messages, characters and check-ins counted, and counter rows."""
    row = con.execute(
        "SELECT sum(messages), sum(chars), sum(checkins), count(*) FROM daily_counter"
    ).fetchone()
    return tuple(int(v or 0) for v in row)


def measure(source: Path, groups: int, path: Path) -> tuple[int, float, tuple[int, ...]]:
    """Run the floor import of ``source`` into a fresh SQLite file at ``path``: the lines read,
    the seconds the import took and the :func:`totals`."""
    settings = settings_for(f"sqlite:///{path}", groups)
    db = Database(settings.database_url)
    db.upgrade()
    raw = db.engine.raw_connection()  # the engine's pragmas (WAL, cache, checkpoints)
    try:
        con = raw.driver_connection
        assert isinstance(con, sqlite3.Connection)
        con.isolation_level = None  # BEGIN and COMMIT are the loop's
        began = time.perf_counter()
        lines = floor_import(con, source, settings.cohorts[0])
        return lines, time.perf_counter() - began, totals(con)
    finally:
        raw.close()
        db.dispose()


def real_totals(source: Path, groups: int, path: Path) -> tuple[int, ...]:
    """The :func:`totals` the real import of ``source`` leaves in a fresh SQLite file."""
    run(f"sqlite:///{path}", source, argparse.Namespace(groups=groups, batch=BATCH))
    with sqlite3.connect(path) as con:
        return totals(con)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--check", action="store_true", help="compare with the real import")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "chat.jsonl"
        generate(source, args.messages, args.groups, START)
        lines, elapsed, floor = measure(source, args.groups, Path(tmp) / "floor.db")
        print(f"import_floor: {lines} messages, {args.groups} groups, SQLite, batch {BATCH}")
        print(f"  elapsed        {elapsed:8.2f} s")
        print(f"  throughput     {lines / elapsed:8.0f} messages/s")
        print(f"  counted        {floor[0]} messages, {floor[1]} characters, {floor[2]} check-ins")
        if not args.check:
            return
        real = real_totals(source, args.groups, Path(tmp) / "real.db")
        print(f"  real import    {real[0]} messages, {real[1]} characters, {real[2]} check-ins")
        if real != floor:
            print(f"  DIFFERENT: floor {floor}, real import {real}")
            sys.exit(1)
        print("  same totals as the real import")


if __name__ == "__main__":
    main()
