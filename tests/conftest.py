"""Shared fixtures: every storage-touching test runs on SQLite and on PostgreSQL.

PostgreSQL runs when ``COHORTBOT_TEST_POSTGRES_URL`` is set (``.ci/run`` sets it); each test gets
its own schema, dropped afterwards, so parallel runs on one server do not meet.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from bot.app import App
from bot.clock import ManualClock
from bot.config import Settings, parse_settings
from bot.outbound import RecordingSender
from storage.db import Database

PG_ENV = "COHORTBOT_TEST_POSTGRES_URL"

GROUP_A = "wrTestGroupA"
GROUP_B = "wrTestGroupB"
GROUP_NY = "wrTestGroupNY"


def base_config(**overrides: Any) -> dict[str, Any]:
    """A config with one Shanghai cohort (two groups) and one New York cohort."""
    config: dict[str, Any] = {
        "bot": {"timezone": "Asia/Shanghai", "learning_day_start_hour": 4},
        "cohorts": [
            {
                "id": "c1",
                "course": "Python 21天入门",
                "start_date": "2026-11-02",
                "length_days": 21,
                "groups": [
                    {
                        "chat_id": GROUP_A,
                        "name": "一班",
                        "leaders": ["leader1"],
                        "teachers": ["teacher1"],
                    },
                    {"chat_id": GROUP_B, "name": "二班"},
                ],
            },
            {
                "id": "ny",
                "course": "英语晨读营",
                "start_date": "2026-11-02",
                "length_days": 28,
                "timezone": "America/New_York",
                "groups": [{"chat_id": GROUP_NY, "name": "纽约班"}],
            },
        ],
    }
    config.update(overrides)
    return config


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        if os.environ.get("COHORTBOT_REQUIRE_POSTGRES"):
            pytest.fail(f"{PG_ENV} is required here but not set")
        pytest.skip(f"PostgreSQL not configured (set {PG_ENV})")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite database file, for tests of SQLite-only mechanisms."""
    db = Database(f"sqlite:///{tmp_path / 'inbox.db'}")
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 11, 1, 0, 0, tzinfo=UTC))


@pytest.fixture
def settings(database_url: str) -> Settings:
    return parse_settings(base_config(database={"url": database_url}), env={})


@pytest.fixture
def app(settings: Settings, clock: ManualClock) -> Iterator[App]:
    bot = App.open(settings, clock=clock, sender=RecordingSender())
    try:
        yield bot
    finally:
        bot.close()
