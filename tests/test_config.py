"""Config validation: every mistake is one line naming the key; the CLI prints it, no traceback."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.config import DATABASE_URL_ENV, ConfigError, load_settings, parse_settings
from storage.urls import normalize_url
from tests.conftest import base_config

ROOT = Path(__file__).resolve().parent.parent


def broken(mutate: Any) -> dict[str, Any]:
    config = copy.deepcopy(base_config())
    mutate(config)
    return config


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["cohorts"][0].pop("course"), "cohorts[0].course: missing"),
        (
            lambda c: c["cohorts"][0].update(start_date="2026-13-01"),
            "cohorts[0].start_date: '2026-13-01' is not a date (YYYY-MM-DD)",
        ),
        (
            lambda c: c["cohorts"][1].update(timezone="Mars/Olympus"),
            "cohorts[1].timezone: unknown timezone 'Mars/Olympus'",
        ),
        (
            lambda c: c["bot"].update(timezone="Asia/Nowhere"),
            "bot.timezone: unknown timezone 'Asia/Nowhere'",
        ),
        (
            lambda c: c.update(checkins={"patterns": ["#打卡", "(unclosed"]}),
            "checkins.patterns[1]: regex '(unclosed' does not compile",
        ),
        (
            lambda c: c["cohorts"][0].update(checkin_patterns=["[a-"]),
            "cohorts[0].checkin_patterns[0]: regex '[a-' does not compile",
        ),
        (
            lambda c: c["cohorts"][0].update(length_days="21"),
            "cohorts[0].length_days: expected a whole number, got '21'",
        ),
        (lambda c: c["cohorts"][0].update(length_days=0), "cohorts[0].length_days: 0 is outside"),
        (
            lambda c: c["bot"].update(learning_day_start_hour=24),
            "bot.learning_day_start_hour: 24 is outside 0..23",
        ),
        (
            lambda c: c["cohorts"][0].update(milestone_days=[7, 30]),
            "cohorts[0].milestone_days[1]: 30 is not a day in 1..21",
        ),
        (
            lambda c: c["cohorts"][0]["groups"][0].update(leader=["x"]),
            "cohorts[0].groups[0].leader: unknown key (did you mean 'leaders'?)",
        ),
        (
            lambda c: c.update(databse={"url": "x"}),
            "databse: unknown key (did you mean 'database'?)",
        ),
        (
            lambda c: c["cohorts"][1]["groups"].append({"chat_id": "wrTestGroupA"}),
            "cohorts[1].groups: chat 'wrTestGroupA' is already in cohort 'c1'",
        ),
        (lambda c: c["cohorts"][1].update(id="c1"), "cohorts[1].id: 'c1' is used twice"),
        (lambda c: c["cohorts"][0].update(id="c 1"), "cohorts[0].id: 'c 1' may use only"),
        (
            lambda c: c["cohorts"][0]["groups"][0].update(leaders="leader1"),
            "cohorts[0].groups[0].leaders: expected a list",
        ),
        (lambda c: c.update(cohorts={"id": "x"}), "cohorts: expected a list"),
        (
            # A secret pasted where its variable's name goes: refused, so never logged.
            lambda c: c.update(wecom={"corp_id": "ww1", "corp_secret_env": "sk-9f8e7d6c5b4a"}),
            "wecom.corp_secret_env: expected the name of an environment variable",
        ),
        (
            lambda c: c["cohorts"][0]["groups"][0].update(
                robot_key_env="https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a"
            ),
            "cohorts[0].groups[0].robot_key_env: expected the name of an environment variable",
        ),
    ],
)
def test_each_kind_of_config_error_names_the_key(mutate: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(broken(mutate), env={})
    text = str(caught.value)
    assert text.startswith(message)
    assert "\n" not in text


def test_defaults_and_environment_override() -> None:
    settings = parse_settings(base_config(), env={})
    assert settings.database_url == "sqlite:///data/cohortbot.db"
    cohort = settings.cohort("c1")
    assert cohort.milestone_days == (7, 14, 21)
    assert cohort.timezone.key == "Asia/Shanghai"
    assert settings.cohort("ny").milestone_days == (7, 14, 21, 28)
    assert settings.cohort_of("wrTestGroupB") is cohort
    env = {DATABASE_URL_ENV: "postgresql://u@h/db"}
    assert parse_settings(base_config(), env=env).database_url == "postgresql://u@h/db"
    # The variable wins over a configured url, which is still read (and still checked).
    configured = base_config(database={"url": "sqlite:///from/the/file.db"})
    assert parse_settings(configured, env=env).database_url == "postgresql://u@h/db"
    assert parse_settings(configured, env={}).database_url == "sqlite:///from/the/file.db"
    with pytest.raises(ConfigError, match=r"database\.url: expected a string"):
        parse_settings(base_config(database={"url": 5}), env=env)


def test_the_example_config_is_valid() -> None:
    settings = load_settings(ROOT / "config.example.toml", env={})
    assert settings.cohorts[0].groups[0].leaders == ("zhangsan",)
    # With the database in the environment, as the README suggests (it said "unknown key").
    env = {DATABASE_URL_ENV: "sqlite:///elsewhere.db"}
    assert (
        load_settings(ROOT / "config.example.toml", env=env).database_url == env[DATABASE_URL_ENV]
    )


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[bot\ntimezone = 1", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[[cohorts]]\nid = "c1"\ncourse = "x"\nstart_date = "2026-02-30"\nlength_days = 21\n',
        encoding="utf-8",
    )
    run = subprocess.run(
        [sys.executable, "-m", "bot.cli", "--config", str(config), "report"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        "配置错误 config error: cohorts[0].start_date: '2026-02-30' is not a date (YYYY-MM-DD)"
    ]


def test_the_app_door_receive_id_defaults_to_the_wecom_corp_id() -> None:
    settings = parse_settings(base_config(wecom={"corp_id": "wwCorp"}), env={})
    assert settings.server.corp_id == "wwCorp"
    both = parse_settings(
        base_config(wecom={"corp_id": "wwCorp"}, server={"corp_id": "wwOther"}), env={}
    )
    assert both.server.corp_id == "wwOther"


def test_a_config_saved_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    # Windows Notepad saves "UTF-8" with a BOM: it was "Invalid statement (at line 1, column 1)".
    config = tmp_path / "config.toml"
    config.write_bytes('\ufeff[bot]\ntimezone = "Asia/Shanghai"\n'.encode())
    assert load_settings(config, env={}).timezone.key == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://root:hunter2@db/z", "unsupported database 'mysql' (expected sqlite:///FILE or"),
        ("sqlite+aiosqlite:///x.db", "unsupported database 'sqlite+aiosqlite'"),
        ("not a url", "not a database URL (expected sqlite:///FILE or postgresql://"),
        ("postgresql://u:hunter2@h:port/db", "not a database URL"),
    ],
)
def test_a_database_url_that_cannot_work_names_its_key(url: str, problem: str) -> None:
    # They were tracebacks on first use: MySQLdb missing, ArgumentError, ValueError (the port).
    with pytest.raises(ConfigError) as caught:
        parse_settings(base_config(database={"url": url}), env={})
    assert str(caught.value).startswith(f"database.url: {problem}")
    with pytest.raises(ConfigError) as caught:
        parse_settings(base_config(), env={DATABASE_URL_ENV: url})
    assert str(caught.value).startswith(f"{DATABASE_URL_ENV}: {problem}")
    assert "hunter2" not in str(caught.value)


def test_postgres_is_accepted_as_a_spelling_of_postgresql() -> None:
    url = "postgres://u:pw@h:5432/db"
    assert parse_settings(base_config(database={"url": url}), env={}).database_url == url
    # Any driver, either spelling: psycopg 3 (it was NoSuchModuleError: ...dialects:postgres).
    assert normalize_url(url) == "postgresql+psycopg://u:pw@h:5432/db"
    assert normalize_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"
