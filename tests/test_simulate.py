"""``cohortbot simulate`` against a real ``cohortbot run`` process: a genuinely encrypted, signed
callback through each door, and a refused one with the wrong token."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from bot.cli import main
from storage.db import normalize_url
from storage.inbox import RawEvent
from storage.messages import Message
from tests.conftest import GROUP_A
from tests.serving import ENV, start, write_config


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    assert proc.stdout is not None
    proc.stdout.close()


def processed(database_url: str, stored: int) -> tuple[set[str], set[str]]:
    """(inbox event keys, counted message ids) once ``stored`` events reached the table (the
    server moves its inbox journal there before processing) and nothing is pending."""
    engine = create_engine(normalize_url(database_url))
    try:
        for _ in range(300):
            with Session(engine) as s:
                rows = s.scalars(select(RawEvent)).all()
                if len(rows) >= stored and all(r.processed_at is not None for r in rows):
                    return {r.event_key for r in rows}, set(s.scalars(select(Message.msg_id)))
            time.sleep(0.05)
    finally:
        engine.dispose()
    raise AssertionError("inbox never drained")


def test_simulate_sends_real_callbacks_through_every_door(
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path / "config.toml", database_url)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    proc, base = start(config)
    try:
        for door in ("robot", "aibot", "app"):
            chat = "" if door == "app" else GROUP_A
            argv = ["--config", str(config), "simulate", "--url", base, "--door", door]
            argv += ["--chat", chat, "--from", "wmSim", "--text", "#打卡 Day1"]
            assert main([*argv, "--msgid", f"sim-{door}"]) == 0
            assert capsys.readouterr().out.strip() == "200"
        wrong = ["--config", str(config), "simulate", "--url", base, "--door", "robot"]
        wrong += ["--from", "wmSim", "--text", "x", "--token", "not-the-token"]
        assert main(wrong) == 1
        assert capsys.readouterr().out.startswith("403")
        keys, counted = processed(database_url, 3)
        assert keys == {"sim-robot", "sim-aibot", "sim-app"}
        assert counted == {"sim-robot", "sim-aibot"}  # the app message is a single chat
    finally:
        stop(proc)


def test_simulate_app_without_a_corp_id_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # No config, no --corp-id: the payload would be encrypted for nobody and refused with 403.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COHORTBOT_CONFIG", raising=False)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    argv = ["simulate", "--url", "http://127.0.0.1:9", "--door", "app", "--from", "wmSim"]
    assert main([*argv, "--text", "hi"]) == 2
    assert "app 回调需要企业 ID：加 --corp-id" in capsys.readouterr().err
