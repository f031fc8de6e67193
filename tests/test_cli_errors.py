"""Operator mistakes on the command line: one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from bot import cli
from bot.config import DATABASE_URL_ENV
from scripts_library import nudges
from tests.builders import end_cohort

ROOT = Path(__file__).resolve().parent.parent

COHORT = """
[[cohorts]]
id = "c1"
course = "Python 21天入门"
start_date = "2026-11-02"
length_days = 21
[[cohorts.groups]]
chat_id = "wrG"
"""


def write_config(tmp_path: Path, text: str = COHORT) -> Path:
    """A config file whose database is a SQLite file in ``tmp_path``."""
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "bot.db"}"\n{text}', "utf-8")
    return path


def with_database(config: Path | str) -> str:
    """``config`` after ``db upgrade`` made its database (commands that read refuse a missing
    SQLite file)."""
    assert cli.main(["--config", str(config), "db", "upgrade"]) == 0
    return str(config)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_an_unknown_log_level_is_an_argument_error(capsys: Any) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--log-level", "debugg", "scripts", "lint"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'DEBUGG'" in err and "Traceback" not in err
    # Any case of a real level is fine.
    assert cli.main(["--log-level", "warning", "scripts", "lint"]) == 0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_database_that_cannot_be_opened_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    config = write_config(tmp_path)
    a_file = tmp_path / "a-file"
    a_file.write_text("", "utf-8")
    cases = [
        # A PostgreSQL server that is not there (psycopg's OperationalError traceback).
        (f"postgresql://bot:hunter2@127.0.0.1:{_closed_port()}/cohorts", "Connection refused"),
        # A SQLite path that is a directory, or under a file.
        (f"sqlite:///{tmp_path}", "unable to open database file"),
        (f"sqlite:///{a_file}/bot.db", f"cannot create {a_file}"),
    ]
    for url, reason in cases:
        monkeypatch.setenv(DATABASE_URL_ENV, url)
        assert cli.main(["--config", str(config), "db", "upgrade"]) == 2
        line = one_line(capsys.readouterr().err)
        assert line.startswith(f"错误：无法打开数据库 {url.replace('hunter2', '***')}："), line
        assert reason in line and "hunter2" not in line


def test_an_output_file_that_cannot_be_written_is_one_line(tmp_path: Path, capsys: Any) -> None:
    config = with_database(write_config(tmp_path))
    missing = tmp_path / "no-such-dir" / "x.csv"
    cases = [
        # IsADirectoryError and FileNotFoundError tracebacks.
        (["card", "--member", "m1", "--cohort", "c1", "--out", str(tmp_path)], "是一个目录"),
        (["export", "points", "--cohort", "c1", "--csv", str(tmp_path)], "是一个目录"),
        (["export", "points", "--cohort", "c1", "--csv", str(missing)], f"无法写入 {missing}："),
        (["export", "nudges", "--csv", str(missing)], f"无法写入 {missing}："),
    ]
    for argv, message in cases:
        assert cli.main(["--config", config, *argv]) == 2
        line = one_line(capsys.readouterr().err)
        assert line.startswith("错误：") and message in line, line


def test_scripts_lint_reports_a_broken_file_and_refuses_a_missing_directory(
    tmp_path: Path, capsys: Any
) -> None:
    library = Path(nudges.__file__).parent
    for source in library.glob("*.toml"):
        shutil.copy(source, tmp_path / source.name)
    (tmp_path / "care.toml").write_text('[[script]]\nid = "unclosed\n', "utf-8")  # TOMLDecodeError
    assert cli.main(["scripts", "lint", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("care.toml: TOML 语法错误（"), err[0]
    # A directory that is not there was "0 套话术 … 104 个问题", all of them coverage.
    missing = tmp_path / "nonexistent"
    assert cli.main(["scripts", "lint", "--dir", str(missing)]) == 2
    assert one_line(capsys.readouterr().err) == f"错误：目录不存在：{missing}"


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path) -> None:
    # `cohortbot export points … | head` ended in a BrokenPipeError traceback.
    config = write_config(tmp_path)
    with_database(config)
    command = [sys.executable, "-m", "bot.cli", "--config", str(config)]
    argv = [*command, "export", "points", "--cohort", "c1"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT) as run:
        assert run.stdout is not None and run.stderr is not None
        run.stdout.close()  # the reader is gone before the first line is written
        err = run.stderr.read().decode()
        assert run.wait(timeout=60) == 141  # as if killed by SIGPIPE, like `yes | head`
    assert err == ""


@pytest.mark.parametrize("text", ["", '[bot]\ntimezone = "Asia/Shanghai"\n'])
def test_commands_that_need_a_cohort_refuse_a_config_without_one(
    tmp_path: Path, text: str, capsys: Any
) -> None:
    # `report` printed nothing and `run` served, with no cohort to serve.
    config = write_config(tmp_path, text)
    assert cli.main(["--config", str(config), "report"]) == 2
    assert one_line(capsys.readouterr().err) == (
        "配置错误 config error: cohorts: missing (`report` needs at least one [[cohorts]] table)"
    )
    run = subprocess.run(
        [sys.executable, "-m", "bot.cli", "--config", str(config), "run", "--port", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert run.returncode == 2
    assert "cohorts: missing (`run` needs" in one_line(run.stderr)
    # What needs no cohort still works: the database, the scripts.
    assert cli.main(["--config", str(config), "db", "upgrade"]) == 0


def test_a_digest_of_a_day_outside_the_cohort_is_refused(tmp_path: Path, capsys: Any) -> None:
    # It printed 第-2519天（新人期） for 2020-01-01 and 第0天（新人期） the day before the start.
    config = write_config(tmp_path)
    with_database(config)
    capsys.readouterr()  # db upgrade's line

    def digest(day: str) -> int:
        return cli.main(["--config", str(config), "digest", "--group", "wrG", "--date", day])

    for day in ("2020-01-01", "2026-11-01", "2026-11-23"):
        assert digest(day) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert one_line(captured.err) == (
            f"错误：{day} 不在训练营 c1 的日期内：2026-11-02 至 2026-11-22（共 21 天）"
        )
    assert digest("2026-11-22") == 0
    assert "第21天" in capsys.readouterr().out
    # The dates a leader set (结营) are the ones that count, as for the teacher's digest job.
    end_cohort(config, "c1", date(2026, 11, 9))
    assert digest("2026-11-10") == 2
    assert "2026-11-02 至 2026-11-09（共 8 天）" in capsys.readouterr().err


def test_run_with_a_bad_door_key_or_a_busy_port_is_one_line(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = str(write_config(tmp_path))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        # Port taken (another bot still running): it was an OSError traceback.
        assert cli.main(["--config", config, "run", "--host", "127.0.0.1", "--port", port]) == 2
        err = capsys.readouterr().err  # the start-up log lines (doors off...) come first
        assert "Traceback" not in err
        assert (
            err.splitlines()[-1]
            == f"错误：端口 127.0.0.1:{port} 已被占用（另一个进程在用？换 --port）"
        )
    # A robot EncodingAESKey that is not 43 base64 characters: name the variable.
    monkeypatch.setenv("COHORTBOT_ROBOT_TOKEN", "tok")
    monkeypatch.setenv("COHORTBOT_ROBOT_AES_KEY", "tooshort")
    assert cli.main(["--config", config, "run", "--host", "127.0.0.1", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "COHORTBOT_ROBOT_AES_KEY: EncodingAESKey must be 43 base64 characters" in err


def test_commands_that_read_refuse_a_sqlite_file_that_is_not_there(
    tmp_path: Path, capsys: Any
) -> None:
    # A typo'd path used to give an empty report or export and leave a new database behind.
    config = str(write_config(tmp_path))
    db = tmp_path / "bot.db"
    for argv in (["report"], ["export", "points", "--cohort", "c1"], ["outbox", "status"]):
        assert cli.main(["--config", config, *argv]) == 2
        line = one_line(capsys.readouterr().err)
        assert line.startswith("错误：无法打开数据库") and f"文件 {db} 不存在" in line, line
        assert not db.exists()
    with_database(config)  # what the message suggests for a new database
    assert cli.main(["--config", config, "report"]) == 0
