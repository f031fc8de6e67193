"""Callback ingest benchmark (SPEC §17): the same encrypted, signed callbacks sent over loopback
at concurrency 32 to

  (a) ``cohortbot run`` on a SQLite file (and on PostgreSQL with ``--postgres URL``): the whole
      pipeline, with the raw event stored durably before every 200 (on SQLite appended to the
      inbox journal next to the database, bot.inbox_journal; on PostgreSQL committed, with
      group commit) and the handlers processing the inbox meanwhile (never switched off);
  (b) a bare aiohttp server that only verifies and decrypts them (the ceiling);
  (c) the ``wecom-bot-svr`` package (Flask) serving them (a peer), installed into a throwaway
      venv by this script; robot callbacks only, the one format it speaks.

Every server runs in its own process; this process is the load generator. Prints requests/s,
p50 and p99 for each, and the ratios, from one run; for (a) and (b) also the server's CPU time
per callback (all its processes and threads: steadier than requests/s on a busy machine). For
(a) it checks that every message ends up counted, and prints how many were processed by the time
of the last 200 and how long after it processing caught up.

(a) and (b) are measured in alternating rounds (``--rounds``, default 3: (a) with a fresh set of
``--requests`` callbacks, its processing waited for, then (b) with the same set), and each
figure pools its rounds (all requests over all their time). The machine's speed drifts while a
run lasts (a shared VM's neighbours), and a ratio of two measurements taken a minute apart
carried that drift; alternating puts the same drift on both sides.

Processing is never switched off: with the default inbox settings it starts in a pause of
``--inbox-idle-ms`` or once the oldest stored event is ``--inbox-max-lag-ms`` old, so a run
shorter than that lag is answered first and processed after its last 200 (the "processed by
the last 200" figure says how much ran inside the window); ``--inbox-max-lag-ms 100`` makes
processing run under the load.

Processing in a separate process instead of in the server's event loop was tried (a child
polling the inbox, the server's worker off) and not chosen: on this 2-core machine, where the
load generator takes a core, it gave about the same requests/s as in-loop slices and a worse
p99 (CPU contention between three processes, and on SQLite the writer's commits waiting behind
the child's transactions). Usage::

    .venv/bin/python bench/callback_ingest.py [--requests 3000] [--concurrency 32]
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--skip-peer]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from bot.doors.crypto import DoorCrypto, signed_request  # noqa: E402
from bot.inbox_journal import journal_dir  # noqa: E402
from bot.simulate import aibot_json, robot_xml  # noqa: E402
from storage.db import normalize_url  # noqa: E402

TOKEN = "benchTOKEN"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
GROUP = "wrBenchGroup"
ENV = {
    "COHORTBOT_ROBOT_TOKEN": TOKEN,
    "COHORTBOT_ROBOT_AES_KEY": AES_KEY,
    "COHORTBOT_AIBOT_TOKEN": TOKEN,
    "COHORTBOT_AIBOT_AES_KEY": AES_KEY,
}

BARE_SERVER = """
import sys
from aiohttp import web
sys.path.insert(0, {root!r})
from bot.doors.crypto import CallbackRejectedError, DoorCrypto, parse_xml
import json

crypto = DoorCrypto({token!r}, {key!r}, "")

def params(request):
    q = request.query
    return q["msg_signature"], q["timestamp"], q["nonce"]

async def robot(request):
    raw = await request.read()
    try:
        crypto.decrypt(parse_xml(raw)["Encrypt"], *params(request))
    except CallbackRejectedError as exc:
        return web.Response(status=exc.status)
    return web.Response(text="")

async def aibot(request):
    raw = await request.read()
    try:
        crypto.decrypt(json.loads(raw)["encrypt"], *params(request))
    except CallbackRejectedError as exc:
        return web.Response(status=exc.status)
    return web.Response(text="")

app = web.Application()
app.router.add_post("/wecom/robot", robot)
app.router.add_post("/wecom/aibot", aibot)
web.run_app(app, host="127.0.0.1", port={port}, print=None, access_log=None)
"""

PEER_SERVER = """
import logging
from wecom_bot_svr import WecomBotServer, RspTextMsg

logging.disable(logging.CRITICAL)

def reply(msg):
    rsp = RspTextMsg()
    rsp.content = ""
    return rsp

server = WecomBotServer("bench", "127.0.0.1", {port}, "/wecom/robot",
                        token={token!r}, aes_key={key!r}, corp_id="")
server.set_message_handler(reply)
server.set_event_handler(reply)
server.run()
"""

CONFIG = """
[database]
url = "{db}"

[server]
host = "127.0.0.1"
port = {port}
inbox_idle_ms = {idle}
inbox_max_lag_ms = {lag}
inbox_batch = {batch}

[[cohorts]]
id = "bench"
course = "bench"
start_date = "2026-01-01"
length_days = 3650

  [[cohorts.groups]]
  chat_id = "{group}"
"""


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    failures: int
    cpu_seconds: float = float("nan")

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    def line(self) -> str:
        return (
            f"{self.name:<34} {self.rps:9.0f} req/s   p50 {self.pct(0.5):7.2f} ms   "
            f"p99 {self.pct(0.99):7.2f} ms   non-200: {self.failures}"
            + (
                ""
                if self.cpu_seconds != self.cpu_seconds
                else f"   server CPU {self.cpu_seconds / self.requests * 1e6:4.0f} µs/callback"
            )
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build(door: str, n: int, prefix: str) -> list[tuple[dict[str, str], bytes]]:
    """``n`` genuine callbacks for ``door`` (unique msgids, 50 senders, one group)."""
    crypto = DoorCrypto(TOKEN, AES_KEY, "")
    ts = int(time.time())
    out = []
    for i in range(n):
        msgid = f"{prefix}{i}-{uuid.uuid4().hex[:8]}"
        # One message in ten is a check-in, as in a lively group; the rest are chat.
        checkin = f" #打卡 Day{i % 21 + 1}" if i % 10 == 0 else ""
        sender, text = f"wmBench{i % 50}", f"第{i}条 今天学习了列表推导式和字典{checkin}"
        plain = (
            robot_xml(GROUP, sender, text, msgid)
            if door == "robot"
            else aibot_json(GROUP, sender, text, msgid)
        )
        params, body = signed_request(crypto, plain, ts, json_body=door == "aibot")
        out.append((params, body.encode()))
    return out


async def load(
    url: str, requests: list[tuple[dict[str, str], bytes]], concurrency: int
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    failures = 0
    index = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:

        async def worker() -> None:
            nonlocal index, failures
            while index < len(requests):
                params, body = requests[index]
                index += 1
                started = time.perf_counter()
                try:
                    async with session.post(url, params=params, data=body) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                failures += 0 if ok else 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - began, latencies, failures


async def wait_ready(url: str, limit_s: float = 30) -> float:
    began = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() - began < limit_s:
            try:
                async with session.get(url) as resp:
                    if resp.status < 500:
                        return time.perf_counter() - began
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.02)
    raise TimeoutError(f"{url} never answered")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its descendants (all threads), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
        except (OSError, ValueError, IndexError):
            continue
    return total


def measure(
    name: str,
    base: str,
    path: str,
    warmup: list[tuple[dict[str, str], bytes]],
    requests: list[tuple[dict[str, str], bytes]],
    concurrency: int,
    pid: int | None = None,
) -> Result:
    asyncio.run(load(base + path, warmup, concurrency))
    cpu = cpu_seconds(pid) if pid else float("nan")
    seconds, latencies, failures = asyncio.run(load(base + path, requests, concurrency))
    cpu = cpu_seconds(pid) - cpu if pid else float("nan")
    return Result(name, len(requests), seconds, latencies, failures, cpu)


def pooled(name: str, parts: list[Result]) -> Result:
    """The rounds of one measurement as one: all their requests over all their time."""
    return Result(
        name,
        sum(p.requests for p in parts),
        sum(p.seconds for p in parts),
        [x for p in parts for x in p.latencies],
        sum(p.failures for p in parts),
        sum(p.cpu_seconds for p in parts),
    )


@dataclass(frozen=True)
class Bare:
    """The running bare server (b), measured in the rounds of each (a) run."""

    base: str
    pid: int


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Inbox:
    """Reads the bot's database: what is processed, what is counted."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(normalize_url(url))
        # On a SQLite file the bot journals callbacks next to the database before moving them
        # into raw_event (bot.inbox_journal): a segment file there is work still to do.
        self.journal = journal_dir(self.engine.url)

    def journalled(self) -> int:
        """Journal segments not yet moved into the table."""
        if self.journal is None or not self.journal.exists():
            return 0
        return sum(1 for p in self.journal.iterdir() if p.suffix == ".journal")

    def scalar(self, sql: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())

    def processed(self) -> int:
        return self.scalar("SELECT count(*) FROM raw_event WHERE processed_at IS NOT NULL")

    def pending(self) -> int:
        """Events not processed yet (a journal segment counts as one)."""
        stored = self.scalar("SELECT count(*) FROM raw_event WHERE processed_at IS NULL")
        return stored + self.journalled()

    def counted(self) -> int:
        return self.scalar("SELECT count(*) FROM message")

    def drained(self) -> float:
        """Seconds until the inbox worker has processed everything stored."""
        began = time.perf_counter()
        while time.perf_counter() - began < 120 and self.pending():
            time.sleep(0.01)
        return time.perf_counter() - began


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peer_python(tmp: Path) -> Path | None:
    """A throwaway venv with wecom-bot-svr, or None (the reason is printed)."""
    venv = tmp / "peer-venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "wecom-bot-svr"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"(c) wecom-bot-svr could not be installed: {exc}")
        return None
    return venv / "bin" / "python"


@dataclass
class BotRun:
    """Figures of one ``cohortbot run`` (a) beyond requests/s and latency."""

    label: str
    ready: float
    rss: float
    drains: list[float]
    processed_by_last_200: list[int]
    counted: int
    expected: int
    pending: int

    def line(self) -> str:
        during = " / ".join(
            f"{done} of {n}" for done, n in zip(self.processed_by_last_200, self.sizes, strict=True)
        )
        return (
            f"(a) {self.label}: start-up to ready {self.ready:.2f} s (first run, migrations "
            f"included); peak RSS {self.rss:.0f} MB; processed by the last 200: {during}; "
            f"caught up {self.drains[0]:.2f} s / {self.drains[1]:.2f} s after the last 200 "
            "(the slowest round); "
            f"{self.counted} of {self.expected} messages counted, {self.pending} pending"
        )

    sizes: tuple[int, int] = (0, 0)


def pg_schema(base: str) -> tuple[str, Inbox]:
    """A fresh schema on the PostgreSQL server at ``base``: the bot's URL and an admin reader."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_url(base))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", Inbox(base)


def drop_schema(base: str, url: str) -> None:
    schema = url.rsplit("%3D", 1)[1]
    admin = create_engine(normalize_url(base))
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


Requests = list[tuple[dict[str, str], bytes]]
DOORS = ("robot", "aibot")


def run_bot(
    label: str,
    db_url: str,
    tmp: Path,
    args: argparse.Namespace,
    sets: dict[str, list[Requests]],
    warm: dict[str, Requests],
    results: dict[str, Result],
    key: str,
    bare: Bare,
) -> BotRun:
    """(a): ``cohortbot run`` on ``db_url``, robot then AI-bot callbacks, each in rounds that
    alternate with (b) (stored as ``b<key>_<door>``)."""
    port = free_port()
    config = tmp / f"config-{key}.toml"
    config.write_text(
        CONFIG.format(
            db=db_url,
            port=port,
            group=GROUP,
            idle=args.inbox_idle_ms,
            lag=args.inbox_max_lag_ms,
            batch=args.inbox_batch,
        )
    )
    inbox = Inbox(db_url)
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "--config", str(config), "run"],
        cwd=ROOT,
        env={**os.environ, **ENV},
        stdout=subprocess.DEVNULL,
    )
    try:
        asyncio.run(wait_ready(f"http://127.0.0.1:{port}/readyz"))
        ready = time.perf_counter() - began
        base = f"http://127.0.0.1:{port}"
        drains, during = [], []
        c = args.concurrency
        for door, path, name in (
            ("robot", "/wecom/robot", "robot"),
            ("aibot", "/wecom/aibot", "AI bot"),
        ):
            # Warm up, and let the warm-up's processing finish: the measured window holds the
            # measured callbacks and their own processing only.
            asyncio.run(load(base + path, warm[door], c))
            inbox.drained()
            ours, theirs, done, waits = [], [], 0, []
            for requests in sets[door]:
                before = inbox.processed()
                ours.append(measure("", base, path, [], requests, c, proc.pid))
                done += inbox.processed() - before
                waits.append(inbox.drained())
                theirs.append(measure("", bare.base, path, [], requests, c, bare.pid))
            results[f"{key}_{door}"] = pooled(f"(a) cohortbot run, {name}", ours)
            bare_name = (
                f"(b) bare aiohttp, {name}" if key == "a" else f"(b) bare, {name} (PG rounds)"
            )
            results[f"b{key}_{door}"] = pooled(bare_name, theirs)
            during.append(done)
            drains.append(max(waits))
        n = sum(len(r) for r in sets["robot"])
        expected = 2 * (n + len(warm["robot"]))
        run = BotRun(
            label,
            ready,
            peak_rss_mb(proc.pid),
            drains,
            during,
            inbox.counted(),
            expected,
            inbox.pending(),
            (n, sum(len(r) for r in sets["aibot"])),
        )
    finally:
        stop(proc)
        inbox.engine.dispose()
    return run


def run_all(
    args: argparse.Namespace,
    tmp: Path,
    sets: dict[str, list[Requests]],
    warm: dict[str, Requests],
    results: dict[str, Result],
    runs: list[BotRun],
    bare: Bare,
) -> None:
    """(a) on a SQLite file, then on PostgreSQL when asked, each in rounds with (b)."""
    # Warm-up first, measured after its processing is done (the warm-up sets run through the
    # same server).
    for label, key in (("SQLite", "a"), ("PostgreSQL", "p")):
        if key == "p" and not args.postgres:
            continue
        if key == "a":
            url, cleanup = f"sqlite:///{tmp / 'bench.db'}", None
        else:
            url, admin = pg_schema(args.postgres)
            admin.engine.dispose()
            cleanup = url
        try:
            runs.append(run_bot(label, url, tmp, args, sets, warm, results, key, bare))
        finally:
            if cleanup is not None:
                drop_schema(args.postgres, cleanup)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument(
        "--postgres", metavar="URL", help="also run (a) on this PostgreSQL (a fresh schema)"
    )
    parser.add_argument("--inbox-idle-ms", type=int, default=20)
    parser.add_argument("--inbox-max-lag-ms", type=int, default=2000)
    parser.add_argument("--inbox-batch", type=int, default=200)
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating (a)/(b) rounds, each of --requests"
    )
    args = parser.parse_args()
    n, c = args.requests, args.concurrency
    rounds = args.rounds
    print(
        f"{n} callbacks per round, {rounds} rounds alternating (a) and (b), concurrency {c}, "
        f"{os.cpu_count()} CPUs, loopback"
    )
    print(f"load average before: {Path('/proc/loadavg').read_text().strip()}\n")
    sets = {door: [build(door, n, f"{door[0]}{i}-") for i in range(rounds)] for door in DOORS}
    warm = {door: build(door, 300, f"w{door[0]}") for door in DOORS}
    results: dict[str, Result] = {}
    runs: list[BotRun] = []

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)

        # (b) bare aiohttp, verify + decrypt only: up (and warm) for the whole of (a)'s runs,
        # which measure it in their rounds.
        port = free_port()
        script = tmp / "bare.py"
        script.write_text(BARE_SERVER.format(root=str(ROOT), token=TOKEN, key=AES_KEY, port=port))
        bare_proc = subprocess.Popen([sys.executable, str(script)])
        bare = Bare(f"http://127.0.0.1:{port}", bare_proc.pid)
        try:
            asyncio.run(wait_ready(bare.base + "/"))
            for door in DOORS:
                asyncio.run(load(f"{bare.base}/wecom/{door}", warm[door], c))
            run_all(args, tmp, sets, warm, results, runs, bare)
        finally:
            stop(bare_proc)

        # (c) wecom-bot-svr (Flask), robot callbacks
        python = None if args.skip_peer else peer_python(tmp)
        if python is not None:
            port = free_port()
            script = tmp / "peer.py"
            script.write_text(PEER_SERVER.format(token=TOKEN, key=AES_KEY, port=port))
            proc = subprocess.Popen(
                [str(python), str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                base = f"http://127.0.0.1:{port}"
                asyncio.run(wait_ready(base + "/"))
                results["c_robot"] = measure(
                    "(c) wecom-bot-svr (Flask), robot",
                    base,
                    "/wecom/robot",
                    warm["robot"],
                    sets["robot"][0],
                    c,
                )
            except TimeoutError as exc:
                print(f"(c) wecom-bot-svr did not serve: {exc}")
            finally:
                stop(proc)

    for name, result in results.items():
        line = result.line()
        print(line.replace("(a) cohortbot run", "(a) PostgreSQL run") if name[0] == "p" else line)
    print()
    for key, label in (("a", "SQLite"), ("p", "PostgreSQL")):
        if f"{key}_robot" not in results:
            continue
        a, b = results[f"{key}_robot"], results[f"b{key}_robot"]
        print(f"{label:<10} robot:  (a)/(b) = {a.rps / b.rps:.0%} of the ceiling", end="")
        if "c_robot" in results:
            print(f";  (a)/(c) = {a.rps / results['c_robot'].rps:.1f}x the peer")
        else:
            print(";  peer not measured")
        a2, b2 = results[f"{key}_aibot"], results[f"b{key}_aibot"]
        print(f"{label:<10} AI bot: (a)/(b) = {a2.rps / b2.rps:.0%} of the ceiling")
    print()
    for run in runs:
        print(run.line())
    print(f"\nload average after: {Path('/proc/loadavg').read_text().strip()}")
    failed = [r for r in runs if r.counted != r.expected or r.pending]
    for run in failed:
        print(f"FAILED: (a) {run.label}: not all {run.expected} messages counted")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
