"""Import equivalence check: the same archive file imported by two versions of the code must leave
the same database behind, table by table.

Generates a mixed file (the throughput benchmark's chat, check-ins and reviews, plus daily
check-in runs that reach milestones, recalls of check-ins and of chat, self-introductions,
commands, explicit reviews, homework files, duplicates and bad lines), imports it into a fresh
SQLite database with this checkout and with a reference revision (``git archive`` into a
temporary directory, run with the same virtualenv), imports it a second time (nothing may change),
and compares every table's rows. Prints the row count and a hash per table; exits 1 on any
difference.

    .venv/bin/python bench/import_compare.py [--reference 6d38d31] [--messages 6000]
        [--groups 20] [--batch 500]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)

#: Run in a subprocess inside the tree under test: imports the file twice, prints the reports.
RUNNER = """
import asyncio, sys
from datetime import UTC, datetime, timedelta
from bench.import_throughput import settings_for
from bot.app import App
from bot.clock import ManualClock
from bot.importer import import_file
url, source, groups, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
start = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
app = App.open(settings_for(url, groups), clock=ManualClock(start + timedelta(days=22)))
try:
    for _ in range(2):
        report = asyncio.run(import_file(app, source, batch_size=batch))
        print(report.summary(), report.errors)
    for m in app.sender.sent:
        print("sent", m.channel, m.to, m.kind, m.key, m.mentions, repr(m.text))
finally:
    app.close()
"""


def _item(n: int, room: str, member: str, at: datetime, text: str, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "seq": n,
        "msgid": f"cmp{n:07d}",
        "action": "send",
        "from": member,
        "tolist": [],
        "roomid": room,
        "msgtime": int(at.timestamp() * 1000),
        "msgtype": "text",
        "text": {"content": text},
    }
    item.update(extra)
    item.setdefault("from_name", f"学员{member[-5:]}")
    return item


def generate(path: Path, messages: int, groups: int, seed: int = 11) -> None:
    """The benchmark's mix plus the rarer paths an import can take (see the module docstring)."""
    sys.path.insert(0, str(ROOT))
    from bench.import_throughput import generate as bench_generate

    base = path.with_suffix(".base")
    bench_generate(base, messages, groups, START, seed=seed)
    lines = base.read_text(encoding="utf-8").splitlines()
    base.unlink()
    rng = random.Random(seed)
    n = messages
    extra: list[str] = []

    def at(day: int, hour: int) -> datetime:
        return START + timedelta(days=day, hours=hour, minutes=rng.randrange(60))

    # Daily check-ins over the whole cohort: streaks that reach the milestones.
    for g in range(min(groups, 5)):
        room = f"wrBench{g:04d}"
        for day in range(21):
            n += 1
            line = _item(n, room, f"wm{g:03d}x00", at(day, 12), f"#打卡 Day{day + 1} 复习")
            extra.append(json.dumps(line, ensure_ascii=False))
    for k in range(max(20, messages // 100)):
        g = rng.randrange(groups)
        room = f"wrBench{g:04d}"
        member = f"wm{g:03d}x{rng.randrange(30):02d}"
        other = f"wm{g:03d}x{rng.randrange(30):02d}"
        day = rng.randrange(21)
        n += 1
        kind = k % 7
        if kind == 0:  # recall an earlier message of the same sender (or nothing found)
            target = json.loads(rng.choice(lines))
            recall = _item(
                n,
                target["roomid"],
                target["from"],
                at(21, 10),
                "",
                msgtype="revoke",
                action="recall",
            )
            del recall["text"]
            recall["revoke"] = {"pre_msgid": target["msgid"]}
            extra.append(json.dumps(recall, ensure_ascii=False))
        elif kind == 1:
            text = "大家好，我来做个自我介绍：我叫小明，在上海做数据分析"
            extra.append(json.dumps(_item(n, room, member, at(day, 9), text), ensure_ascii=False))
        elif kind == 2:
            extra.append(
                json.dumps(_item(n, room, member, at(day, 20), "/积分"), ensure_ascii=False)
            )
        elif kind == 3:  # reviews a daily checker's check-in
            room, other = f"wrBench{g % 5:04d}", f"wm{g % 5:03d}x00"
            member = f"wm{g % 5:03d}x{rng.randrange(1, 30):02d}"
            text = f"@学员{other[-5:]} 点评：思路清晰，例子也很好，继续保持这样的节奏，加油！"
            extra.append(json.dumps(_item(n, room, member, at(day, 21), text), ensure_ascii=False))
        elif kind == 4:  # a homework file after announcing it
            say = _item(n, room, member, at(day, 18), "交作业啦")
            n += 1
            file = _item(n, room, member, at(day, 18), "", msgtype="file")
            del file["text"]
            file["file"] = {"filename": "hw.py", "fileext": "py", "filesize": 10}
            file["msgtime"] = say["msgtime"] + 30_000
            extra += [json.dumps(say, ensure_ascii=False), json.dumps(file, ensure_ascii=False)]
        elif kind == 5:  # a duplicate of an earlier line
            extra.append(rng.choice(lines))
        else:
            extra.append("{bad json")
    mixed = lines + extra
    rng.shuffle(mixed)
    path.write_text("\n".join(mixed) + "\n", encoding="utf-8")


def run(tree: Path, db: Path, source: Path, groups: int, batch: int) -> str:
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, f"sqlite:///{db}", str(source), str(groups), str(batch)],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"import in {tree} failed:\n{done.stderr}")
    return done.stdout


def tables(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, sorted (ids included: both versions write in the same order)."""
    conn = sqlite3.connect(db)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' AND name != 'alembic_version' ORDER BY name"
            )
        ]
        return {
            name: sorted(conn.execute(f'SELECT * FROM "{name}"').fetchall(), key=lambda r: repr(r))
            for name in names
        }
    finally:
        conn.close()


def reference_tree(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="6d38d31", help="git revision to compare with")
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "chat.jsonl"
        generate(source, args.messages, args.groups)
        ref = reference_tree(args.reference, work / "ref")
        reports = {}
        dumps = {}
        for label, tree in (("reference", ref), ("this", ROOT)):
            db = work / f"{label}.db"
            reports[label] = run(tree, db, source, args.groups, args.batch)
            dumps[label] = tables(db)
    different = reports["reference"] != reports["this"]
    print(f"import_compare: {args.messages} messages, {args.groups} groups, batch {args.batch}")
    print("  reports and sent messages " + ("DIFFER" if different else "same"))
    sent = [line for line in reports["this"].splitlines() if line.startswith("sent ")]
    for line in reports["this"].splitlines():
        if not line.startswith("sent "):
            print(f"    {line[:100]}")
    print(f"    {len(sent)} messages sent, {hashlib.sha256(repr(sent).encode()).hexdigest()[:12]}")
    names = sorted(set(dumps["reference"]) | set(dumps["this"]))
    for name in names:
        a, b = dumps["reference"].get(name), dumps["this"].get(name)
        digest = hashlib.sha256(repr(b).encode()).hexdigest()[:12]
        same = a == b
        different |= not same
        count = "-" if b is None else len(b)
        print(f"  {name:24s} {count!s:>7} rows  {digest}  {'same' if same else 'DIFFERS'}")
    if different:
        sys.exit(1)


if __name__ == "__main__":
    main()
