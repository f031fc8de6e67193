"""Callback ingest benchmark (SPEC §17): the same encrypted, signed callbacks sent over loopback
at concurrency 32 to

  (a) ``cohortbot run`` on a SQLite file: the whole pipeline, with the raw event committed
      before every 200 (group commit) and processing by the inbox worker after the answer;
  (b) a bare aiohttp server that only verifies and decrypts them (the ceiling);
  (c) the ``wecom-bot-svr`` package (Flask) serving them (a peer), installed into a throwaway
      venv by this script; robot callbacks only, the one format it speaks.

Every server runs in its own process; this process is the load generator. Prints requests/s,
p50 and p99 for each, and the ratios, from one run. Usage::

    .venv/bin/python bench/callback_ingest.py [--requests 3000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sqlite3
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

from bot.doors.crypto import DoorCrypto, signed_request  # noqa: E402
from bot.simulate import aibot_json, robot_xml  # noqa: E402

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
url = "sqlite:///{db}"

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


def measure(
    name: str,
    base: str,
    path: str,
    warmup: list[tuple[dict[str, str], bytes]],
    requests: list[tuple[dict[str, str], bytes]],
    concurrency: int,
) -> Result:
    asyncio.run(load(base + path, warmup, concurrency))
    seconds, latencies, failures = asyncio.run(load(base + path, requests, concurrency))
    return Result(name, len(requests), seconds, latencies, failures)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def drained(db: Path) -> float:
    """Seconds until the inbox worker has processed everything stored."""
    began = time.perf_counter()
    while time.perf_counter() - began < 120:
        with sqlite3.connect(db) as conn:
            pending = conn.execute(
                "SELECT count(*) FROM raw_event WHERE processed_at IS NULL"
            ).fetchone()[0]
        if not pending:
            break
        time.sleep(0.02)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--inbox-idle-ms", type=int, default=20)
    parser.add_argument("--inbox-max-lag-ms", type=int, default=2000)
    parser.add_argument("--inbox-batch", type=int, default=200)
    args = parser.parse_args()
    n, c = args.requests, args.concurrency
    print(f"{n} callbacks per run, concurrency {c}, {os.cpu_count()} CPUs, loopback\n")
    robot_set, aibot_set = build("robot", n, "r"), build("aibot", n, "a")
    warm_r, warm_a = build("robot", 300, "wr"), build("aibot", 300, "wa")
    results: dict[str, Result] = {}

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, **ENV}

        # (a) cohortbot run, SQLite file
        port = free_port()
        db = tmp / "bench.db"
        config = tmp / "config.toml"
        config.write_text(
            CONFIG.format(
                db=db,
                port=port,
                group=GROUP,
                idle=args.inbox_idle_ms,
                lag=args.inbox_max_lag_ms,
                batch=args.inbox_batch,
            )
        )
        began = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "--config", str(config), "run"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        try:
            asyncio.run(wait_ready(f"http://127.0.0.1:{port}/readyz"))
            ready = time.perf_counter() - began
            base = f"http://127.0.0.1:{port}"
            results["a_robot"] = measure(
                "(a) cohortbot run, robot", base, "/wecom/robot", warm_r, robot_set, c
            )
            drains = [drained(db)]  # each run starts with an empty inbox
            results["a_aibot"] = measure(
                "(a) cohortbot run, AI bot", base, "/wecom/aibot", warm_a, aibot_set, c
            )
            drains.append(drained(db))
            expected = 2 * (n + 300)
            with sqlite3.connect(db) as conn:
                pending = conn.execute(
                    "SELECT count(*) FROM raw_event WHERE processed_at IS NULL"
                ).fetchone()[0]
                counted = conn.execute("SELECT count(*) FROM message").fetchone()[0]
            rss = peak_rss_mb(proc.pid)
        finally:
            stop(proc)

        # (b) bare aiohttp: verify + decrypt only
        port = free_port()
        script = tmp / "bare.py"
        script.write_text(BARE_SERVER.format(root=str(ROOT), token=TOKEN, key=AES_KEY, port=port))
        proc = subprocess.Popen([sys.executable, str(script)])
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(wait_ready(base + "/"))
            results["b_robot"] = measure(
                "(b) bare aiohttp, robot", base, "/wecom/robot", warm_r, robot_set, c
            )
            results["b_aibot"] = measure(
                "(b) bare aiohttp, AI bot", base, "/wecom/aibot", warm_a, aibot_set, c
            )
        finally:
            stop(proc)

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
                    "(c) wecom-bot-svr (Flask), robot", base, "/wecom/robot", warm_r, robot_set, c
                )
            except TimeoutError as exc:
                print(f"(c) wecom-bot-svr did not serve: {exc}")
            finally:
                stop(proc)

    for result in results.values():
        print(result.line())
    print()
    a, b = results["a_robot"], results["b_robot"]
    print(f"robot:  (a)/(b) = {a.rps / b.rps:.0%} of the ceiling", end="")
    if "c_robot" in results:
        print(f";  (a)/(c) = {a.rps / results['c_robot'].rps:.1f}x the peer")
    else:
        print(";  peer not measured")
    a2, b2 = results["a_aibot"], results["b_aibot"]
    print(f"AI bot: (a)/(b) = {a2.rps / b2.rps:.0%} of the ceiling")
    print(
        f"\n(a) start-up to ready {ready:.2f} s (first run, migrations included); peak RSS "
        f"{rss:.0f} MB; inbox drained {drains[0]:.2f} s / {drains[1]:.2f} s after the last answer; "
        f"{counted} of {expected} messages counted, {pending} pending"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
