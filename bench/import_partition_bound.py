"""The upper bound of a partitioned import (issue 2): N processes, each importing its share of
the groups into its own SQLite file.

The same 100,000 generated messages as ``bench/import_throughput.py``, split by group (group g
goes to process g mod N) before the clock starts. Each process opens the app, waits, and on a
signal imports its part through the real import door; the wall time runs from the signal to the
last process's end. Nothing is coordinated, so this is what a partitioned import could reach at
best on this machine, before partitioning the lines costs anything.

Then the other files are merged into the first, timed apart: one ``INSERT ... SELECT`` per table
in one transaction, a single-column ``id`` left to SQLite. That is the merge's cost, not a
correct merge: nothing here remaps an id that another row refers to (none does in this data).

    .venv/bin/python bench/import_partition_bound.py [--processes N] [--messages M] [--groups G]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from import_throughput import generate

ROOT = Path(__file__).resolve().parent.parent

#: One partition's importer: ready once the app is open, imports on "go", prints its count.
WORKER = """
import asyncio, sys, time
from datetime import UTC, datetime
sys.path.insert(0, "bench")
from import_throughput import settings_for
from bot.app import App
from bot.clock import ManualClock
from bot.importer import import_file
app = App.open(settings_for(sys.argv[2], int(sys.argv[3])),
               clock=ManualClock(datetime(2026, 11, 24, tzinfo=UTC)))
print("ready", flush=True)
sys.stdin.readline()
began = time.perf_counter()
report = asyncio.run(import_file(app, sys.argv[1]))
print(report.imported, time.perf_counter() - began, flush=True)
app.close()
"""


def split(source: Path, into: Path, parts: int) -> list[Path]:
    """Group g's lines into part g mod ``parts``."""
    paths = [into / f"part{i}.jsonl" for i in range(parts)]
    outs = [p.open("w", encoding="utf-8") for p in paths]
    try:
        with source.open(encoding="utf-8") as lines:
            for line in lines:
                outs[int(json.loads(line)["roomid"][-4:]) % parts].write(line)
    finally:
        for out in outs:
            out.close()
    return paths


def merge(into: Path, parts: list[Path]) -> int:
    """Copy every row of ``parts`` into ``into`` (see the module docstring); the rows copied."""
    conn = sqlite3.connect(into, isolation_level=None)
    copied = 0
    try:
        conn.execute("PRAGMA synchronous=NORMAL")
        for i, part in enumerate(parts):
            conn.execute(f"ATTACH DATABASE '{part}' AS p{i}")
        conn.execute("BEGIN IMMEDIATE")
        tables = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' AND name != 'alembic_version'"
        ).fetchall()
        for (table,) in tables:
            info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
            keys = [row[1] for row in info if row[5]]
            columns = ",".join(
                f'"{row[1]}"' for row in info if not (keys == ["id"] and row[1] == "id")
            )
            for i in range(len(parts)):
                copied += conn.execute(
                    f'INSERT OR IGNORE INTO main."{table}" ({columns}) '
                    f'SELECT {columns} FROM p{i}."{table}"'
                ).rowcount
        conn.execute("COMMIT")
    finally:
        conn.close()
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "chat.jsonl"
        generate(source, args.messages, args.groups, datetime(2026, 11, 2, 1, 0, tzinfo=UTC))
        parts = split(source, work, args.processes)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(part), f"sqlite:///{work}/part{i}.db",
                 str(args.groups)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i, part in enumerate(parts)
        ]  # fmt: skip
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        began = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [proc.stdout.readline().split() for proc in procs if proc.stdout is not None]
        wall = time.perf_counter() - began
        for proc in procs:
            proc.wait()
        began = time.perf_counter()
        files = [work / f"part{i}.db" for i in range(args.processes)]
        copied = merge(files[0], files[1:])
        merged = time.perf_counter() - began
        with closing(sqlite3.connect(files[0])) as conn:
            (messages,) = conn.execute("SELECT count(*) FROM message").fetchone()
        assert messages == args.messages, messages  # every partition's messages, once
    imported = sum(int(r[0]) for r in results)
    assert imported == args.messages, results
    print(f"import_partition_bound: {args.messages} messages, {args.groups} groups, ", end="")
    print(f"{args.processes} processes, SQLite (one file each, no merge)")
    print(f"  elapsed        {wall:8.2f} s")
    print(f"  throughput     {imported / wall:8.0f} messages/s   (target >= 20000)")
    print("  per process    " + ", ".join(f"{float(r[1]):.2f} s" for r in results))
    print(f"  merge          {merged:8.2f} s   ({copied} rows into the first file)")
    print(f"  with merge     {imported / (wall + merged):8.0f} messages/s")


if __name__ == "__main__":
    main()
