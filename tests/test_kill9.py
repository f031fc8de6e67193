"""SPEC §18 no loss and no double counting, with a real ``cohortbot run`` process.

Encrypted robot callbacks (each sent twice, concurrently) go to the server; it is killed with
SIGKILL mid-load and started again. Every message that got a 200 must be counted once, and after
WeCom's retries of the rest, every message exactly once.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from bot.simulate import post_callback, robot_xml
from storage.activity import DailyCounter
from storage.db import normalize_url
from storage.inbox import RawEvent
from storage.messages import Message
from tests.conftest import GROUP_A, GROUP_B
from tests.serving import door_crypto, start, write_config

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = 300


def totals(database_url: str) -> tuple[int, int, int, set[str]]:
    engine = create_engine(normalize_url(database_url))
    try:
        with Session(engine) as s:
            pending = s.scalar(
                select(func.count()).select_from(RawEvent).where(RawEvent.processed_at.is_(None))  # type: ignore[union-attr]
            )
            counted = s.scalar(select(func.coalesce(func.sum(DailyCounter.messages), 0)))
            ids = set(s.scalars(select(Message.msg_id)).all())
            rows = s.scalar(select(func.count()).select_from(Message))
            return int(pending or 0), int(counted or 0), int(rows or 0), ids
    finally:
        engine.dispose()


def settled(
    database_url: str, expected: set[str], timeout: float = 30
) -> tuple[int, int, set[str]]:
    """Counts once every ``expected`` message is stored (a restarted server moves what its
    predecessor journalled into the table first) and nothing is pending."""
    deadline = time.monotonic() + timeout
    while True:
        pending, counted, rows, ids = totals(database_url)
        if not pending and expected <= ids:
            return counted, rows, ids
        missing = len(expected - ids)
        assert time.monotonic() < deadline, f"{pending} events pending, {missing} never stored"
        time.sleep(0.1)


async def blast(
    base: str, ids: list[str], acked: set[str], kill_after: int | None, proc: subprocess.Popen[str]
) -> None:
    crypto = door_crypto("robot")
    work = [i for i in ids for _ in range(2)]  # every message twice: a retry racing the first
    random.Random(7).shuffle(work)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            msgid = queue.get_nowait()
            chat = GROUP_A if int(msgid[1:]) % 2 else GROUP_B
            plaintext = robot_xml(chat, f"u{int(msgid[1:]) % 17}", f"第{msgid}条 学习笔记", msgid)
            try:
                status, _ = await post_callback(
                    session, base + "/wecom/robot", crypto, plaintext, False
                )
            except (TimeoutError, aiohttp.ClientError):
                continue
            if status == 200:
                acked.add(msgid)
                if kill_after is not None and len(acked) >= kill_after and proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)

    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(16)))


def test_sigkill_mid_load_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, database_url: str
) -> None:
    config = write_config(tmp_path / "config.toml", database_url)
    ids = [f"m{i}" for i in range(MESSAGES)]
    proc, base = start(config)
    acked: set[str] = set()
    try:
        asyncio.run(blast(base, ids, acked, MESSAGES // 2, proc))
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert MESSAGES // 2 <= len(acked) < MESSAGES, "the kill should land mid-load"

    proc, base = start(config)
    try:
        # No loss: what was acknowledged before the kill is processed after the restart.
        counted, rows, stored = settled(database_url, acked)
        assert acked <= stored
        assert counted == rows == len(stored)
        # WeCom retries what got no 200; everything is retried once more for good measure.
        acked_after: set[str] = set()
        asyncio.run(blast(base, ids, acked_after, None, proc))
        assert acked_after == set(ids)
        counted, rows, stored = settled(database_url, set(ids))
        assert stored == set(ids)
        assert counted == rows == MESSAGES
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == 0
