"""Import throughput (issue 2 benchmark; SPEC §17 "archive batch ingest").

Generates 100,000 archive messages (70% chat, 20% check-ins, 10% long reviews) across 200 groups
of one cohort, imports them into a fresh SQLite database through the real import door (parse,
dedupe, store, and every handler: counting, check-ins, points, milestones, reviews, games...) and
prints messages/s and the peak RSS. ``--url`` runs it on PostgreSQL instead, in a fresh schema
that is dropped afterwards.

    .venv/bin/python bench/import_throughput.py [--messages N] [--groups G] [--batch B]
        [--db PATH | --url postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.app import App
from bot.clock import ManualClock
from bot.config import parse_settings
from bot.importer import BATCH, import_file
from storage.db import make_engine

CHAT = [
    "请问这道题怎么做？",
    "收到，谢谢老师",
    "今天的内容有点难，晚上再看一遍",
    "哈哈哈哈哈",
    "我也遇到了同样的问题",
    "👍👍",
    "大家加油！",
    "这个例子很好懂",
]
CHECKIN = ["#打卡 Day{d} 今天学了{t}，练习都做完了", "第{d}天打卡：{t}", "【打卡】{t} 笔记已整理"]
TOPICS = ["列表推导式", "字典", "函数参数", "文件读写", "异常处理", "面向对象"]
REVIEW = (
    "点评一下：你今天关于{t}的总结写得很清楚，尤其是把每一步的思路都拆开讲了，"
    "我之前一直没弄明白为什么要这样写，看了你的例子终于懂了。建议可以再补充一下边界情况的处理，"
    "比如输入为空或者类型不对的时候程序会怎样，这样笔记会更完整。继续加油！"
)


def generate(path: Path, messages: int, groups: int, start: datetime, seed: int = 7) -> None:
    rng = random.Random(seed)
    members_per_group = 30
    with path.open("w", encoding="utf-8") as out:
        for n in range(messages):
            g = rng.randrange(groups)
            member = f"wm{g:03d}x{rng.randrange(members_per_group):02d}"
            day = rng.randrange(21)
            at = start + timedelta(
                days=day,
                hours=rng.randrange(8, 23),
                minutes=rng.randrange(60),
                seconds=rng.randrange(60),
            )
            topic = rng.choice(TOPICS)
            roll = rng.random()
            if roll < 0.7:
                text = rng.choice(CHAT)
            elif roll < 0.9:
                text = rng.choice(CHECKIN).format(d=day + 1, t=topic)
            else:
                text = REVIEW.format(t=topic)
            item: dict[str, Any] = {
                "seq": n + 1,
                "msgid": f"bench{n:07d}",
                "action": "send",
                "from": member,
                "tolist": [],
                "roomid": f"wrBench{g:04d}",
                "msgtime": int(at.timestamp() * 1000),
                "msgtype": "text",
                "text": {"content": text},
            }
            out.write(json.dumps(item, ensure_ascii=False) + "\n")


@contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A new PostgreSQL schema for one run (the URL that uses it), dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        sep = "&" if "?" in url else "?"
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()


def settings_for(url: str, groups: int) -> Any:
    return parse_settings(
        {
            "database": {"url": url},
            "cohorts": [
                {
                    "id": "bench",
                    "course": "基准测试营",
                    "start_date": "2026-11-02",
                    "length_days": 21,
                    "groups": [{"chat_id": f"wrBench{g:04d}"} for g in range(groups)],
                }
            ],
        },
        env={},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=200)
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--db", type=Path, default=None, help="SQLite file (default: a temporary one)"
    )
    where.add_argument("--url", default=None, help="a PostgreSQL URL: runs in a fresh schema")
    parser.add_argument("--batch", type=int, default=BATCH)
    args = parser.parse_args()
    start = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "chat.jsonl"
        generate(source, args.messages, args.groups, start)
        if args.url:
            with fresh_schema(args.url) as url:
                report, elapsed = run(url, source, args)
            label = "PostgreSQL"
        else:
            report, elapsed = run(f"sqlite:///{args.db or Path(tmp) / 'bench.db'}", source, args)
            label = "SQLite"
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert report.imported == args.messages, report.summary()
    print(f"import_throughput: {args.messages} messages, {args.groups} groups, {label}, ", end="")
    print(f"batch {args.batch}")
    print(f"  elapsed        {elapsed:8.2f} s")
    print(f"  throughput     {args.messages / elapsed:8.0f} messages/s   (target >= 20000)")
    print(f"  peak RSS       {peak_mib:8.1f} MiB")


def run(url: str, source: Path, args: argparse.Namespace) -> tuple[Any, float]:
    start = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
    app = App.open(settings_for(url, args.groups), clock=ManualClock(start + timedelta(days=22)))
    try:
        began = time.perf_counter()
        report = asyncio.run(import_file(app, source, batch_size=args.batch))
        return report, time.perf_counter() - began
    finally:
        app.close()


if __name__ == "__main__":
    main()
