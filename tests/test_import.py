"""The import door: good lines imported, bad ones reported by number, re-imports change nothing."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot import importer
from bot.app import App
from bot.cli import main
from bot.importer import ImportReport, import_file, progress_printer
from storage import activity, checkins
from storage.inbox import RawEvent
from tests.builders import archive_recall, archive_text, exploding_router, jsonl, local, pair
from tests.conftest import GROUP_A, base_config

ROOT = Path(__file__).resolve().parent.parent


def sample_lines() -> list[str]:
    good = [
        archive_text(GROUP_A, "wmU1", "#打卡 Day1", local(2026, 11, 2, 20), msgid="a1"),
        archive_text(GROUP_A, "wmU2", "大家好", local(2026, 11, 2, 21), msgid="a2"),
    ]
    return [
        json.dumps(good[0], ensure_ascii=False),
        "{not json",
        json.dumps({"msgid": "x", "from": "wmU1", "msgtime": 1, "msgtype": "text"}),  # no text
        json.dumps({**good[1], "msgtime": "yesterday"}),
        "",
        json.dumps([1, 2]),
        json.dumps({**good[1], "msgid": ""}),
        json.dumps({**good[1], "action": "explode"}),
        json.dumps(archive_recall(GROUP_A, "wmU1", "zzz", local(2026, 11, 2, 22)) | {"revoke": {}}),
        json.dumps(good[1], ensure_ascii=False),
        json.dumps({**good[1], "msgid": "bot1", "from": "wbRobot"}),  # a bot's own post: skipped
    ]


async def test_bad_lines_reported_with_numbers_rest_imported(app: App, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(sample_lines()) + "\n", encoding="utf-8")
    report = await import_file(app, path)
    assert report.errors == [
        (2, "不是合法的 JSON（第 2 列附近）"),
        (3, "text 消息缺少 text.content"),
        (4, "msgtime 应是毫秒时间戳（正整数）"),
        (6, "不是 JSON 对象"),
        (7, "缺少 msgid"),
        (8, "action 只能是 send、recall 或 switch，这里是 'explode'"),
        (9, "撤回消息缺少 revoke.pre_msgid"),
    ]
    assert (report.lines, report.imported, report.skipped, report.duplicates) == (11, 2, 2, 0)
    with app.db.session() as s:
        assert [c.day for c in checkins.of_member(s, "c1", "wmU1")] == [date(2026, 11, 2)]
        assert activity.day_of(s, GROUP_A, "wmU2", date(2026, 11, 2)).messages == 1  # type: ignore[union-attr]


async def test_importing_twice_changes_nothing(app: App, tmp_path: Path) -> None:
    items = [
        archive_text(GROUP_A, f"wmU{i % 3}", f"#打卡 第{i}天", local(2026, 11, 2 + i, 20))
        for i in range(5)
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text(jsonl(items), encoding="utf-8")

    def snapshot() -> tuple[object, ...]:
        with app.db.session() as s:
            counters = s.execute(select(activity.DailyCounter)).scalars().all()
            return (
                s.scalar(select(func.count()).select_from(RawEvent)),
                sorted((c.member_id, c.day, c.messages, c.checkins, c.chars) for c in counters),
                sorted((c.member_id, c.day) for c in s.scalars(select(checkins.CheckIn)).all()),
            )

    first = await import_file(app, path, batch_size=2)
    before = snapshot()
    second = await import_file(app, path, batch_size=3)
    assert (first.imported, second.imported, second.duplicates) == (5, 0, 5)
    assert snapshot() == before


async def test_progress_is_told_after_each_committed_batch(app: App, tmp_path: Path) -> None:
    items = [archive_text(GROUP_A, "wmU1", f"第{i}条", local(2026, 11, 2, 9, i)) for i in range(5)]
    path = tmp_path / "chat.jsonl"
    path.write_text(jsonl(items), encoding="utf-8")
    told: list[tuple[int, int]] = []
    report = await import_file(
        app, path, batch_size=2, progress=lambda r: told.append((r.imported, r.lines))
    )
    assert [imported for imported, _lines in told] == [2, 4, 5]  # one call per batch
    assert told[-1] == (5, 5) == (report.imported, report.lines)


def test_progress_printer_writes_a_line_per_step_of_lines() -> None:
    written: list[str] = []
    tell = progress_printer(written.append, every=10)
    for lines, imported, duplicates in [(4, 2, 0), (12, 6, 2), (16, 10, 4), (25, 15, 5)]:
        tell(ImportReport(lines=lines, imported=imported, duplicates=duplicates))
    assert written == [
        "已读 12 行，已处理 8 条：导入 6，重复 2",
        "已读 25 行，已处理 20 条：导入 15，重复 5",
    ]


def test_cli_import_tells_progress_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "PROGRESS_EVERY", 5)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "cli.db"}"\n\n'
        '[[cohorts]]\nid = "c1"\ncourse = "Python"\nstart_date = "2026-11-02"\n'
        f'length_days = 21\n[[cohorts.groups]]\nchat_id = "{GROUP_A}"\n',
        encoding="utf-8",
    )
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(sample_lines()) + "\n", encoding="utf-8")
    assert main(["--config", str(config), "import", str(chat)]) == 1  # it has bad lines
    out, err = capsys.readouterr()
    assert "已读 11 行，已处理 2 条：导入 2，重复 0" in err.splitlines()
    assert "11 行：导入 2" in out


async def test_non_utf8_file_is_reported_not_crashed(app: App, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    good = json.dumps(archive_text(GROUP_A, "wmU1", "hi", local(2026, 11, 2, 20)))
    path.write_bytes(good.encode() + b"\n\xff\xfe broken\n")
    report = await import_file(app, path)
    assert report.imported == 1
    assert report.errors == [(2, "不是 UTF-8 文本（第 1 个字节无法解码）")]


def test_cli_import_exit_codes_and_output(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    config = tmp_path / "config.toml"
    course = base_config()["cohorts"][0]["course"]
    config.write_text(
        f'[database]\nurl = "sqlite:///{db}"\n\n'
        f'[[cohorts]]\nid = "c1"\ncourse = "{course}"\nstart_date = "2026-11-02"\n'
        f'length_days = 21\n[[cohorts.groups]]\nchat_id = "{GROUP_A}"\n',
        encoding="utf-8",
    )
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(sample_lines()) + "\n", encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bot.cli", "--config", str(config), *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=120,
        )

    first = run("import", str(chat))
    assert first.returncode == 1
    assert f"{chat}:2: 不是合法的 JSON" in first.stderr
    assert "导入 2，重复 0，跳过 2，格式错误 7" in first.stdout
    clean = tmp_path / "clean.jsonl"
    clean.write_text(sample_lines()[0] + "\n", encoding="utf-8")
    again = run("import", str(clean))
    assert again.returncode == 0
    assert "导入 0，重复 1" in again.stdout
    report = run("report")
    assert report.returncode == 0
    assert "wmU1" in report.stdout


def test_demo_simulates_the_cohort_end_to_end(tmp_path: Path) -> None:
    """`cohortbot demo` (SPEC §16), 8 of its 28 days: real server, fake WeCom, manual clock."""
    run = subprocess.run(
        [sys.executable, "-m", "bot.cli", "demo", "--data-dir", str(tmp_path), "--days", "8"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "COHORTBOT_DATABASE_URL": "postgresql://nowhere/ignored",
        },
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert (tmp_path / "cohortbot.db").exists() and (tmp_path / ".cohortbot-demo").is_file()
    assert "模拟 8 天" in out and "拒收 0" in out
    # Every archive message and callback was taken in; the rosters came from the group API.
    took = re.search(r"进来的：(\d+) 条会话存档消息，(\d+) 个加密回调", out)
    assert took and int(took.group(1)) > 1000 and int(took.group(2)) > 50
    assert "同步 56 人" in out
    # Late joiners arrived by join event and got their names from the roster refresh.
    assert "wmAlat" not in out and "wmBlat" not in out
    # The comeback persona went quiet after day 4, was nudged, and came back the next day.
    assert re.search(r"（comeback）：第 4 天后沉默，第 \d+ 天收到提醒「.+」，第 \d+ 天回来了", out)
    # The silent-from-day-1 learners are on the quiet list at medium or high; a steady learner
    # who missed a day is at most a light warning.
    quiet = out[out.index("潜水名单") : out.index("私聊提醒")].splitlines()
    silent = [line for line in quiet if "（silent，从未发言）" in line]
    assert len(silent) == 6 and all("中度警报" in s or "高危警报" in s for s in silent)
    assert all("轻度预警" in line for line in quiet if "（steady，" in line)
    # The teacher received a digest every evening; the week's milestone was celebrated.
    assert "王老师收到的每日摘要（共 8 天" in out and "### 潜水预警" in out
    assert re.search(r"里程碑：7 天 \d+ 人", out)
    assert "🏆 积分总榜" in out and "学习证据卡" in out


async def test_a_failing_batch_does_not_stop_the_batches_after_it(app: App, tmp_path: Path) -> None:
    """A batch fails in its handlers (before any commit) while the next batch is already due to
    be read alongside its commit: every later batch is still read and imported."""
    app.dispatcher.include(exploding_router())
    texts = ["好的", "炸弹", "收到", "明白", "谢谢", "加油", "#打卡 第3天"]
    items = [
        archive_text(GROUP_A, f"wmU{i % 2}", t, local(2026, 11, 3, 9 + i))
        for i, t in enumerate(texts)
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text(jsonl(items), encoding="utf-8")
    report = await import_file(app, path, batch_size=2)
    assert (report.lines, report.imported, report.failed) == (7, 6, 1)
    with app.db.session() as s:
        total = s.scalar(select(func.sum(activity.DailyCounter.messages)))  # type: ignore[arg-type]
    assert total == 6


async def test_a_read_error_after_a_batch_raises_once_that_batch_is_committed(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next batch is read while this one commits; a read error there (the disk, not a bad
    line) still stops the import with that error, after the batch before it is committed."""
    from bot import importer
    from bot.updates import Update

    items = [archive_text(GROUP_A, "wmU1", f"第{i}条", local(2026, 11, 3, 9 + i)) for i in range(3)]

    def failing_read(path: Path, report: importer.ImportReport) -> Iterator[tuple[Update, str]]:
        for item in items:
            report.lines += 1
            yield pair(item)
        raise OSError("disk gone")

    monkeypatch.setattr(importer, "_read", failing_read)
    with pytest.raises(OSError, match="disk gone"):
        await import_file(app, tmp_path / "chat.jsonl", batch_size=2)
    with app.db.session() as s:
        row = activity.day_of(s, GROUP_A, "wmU1", date(2026, 11, 3))
    assert row is not None and row.messages == 2  # the first batch; the third line was not


def test_ctrl_c_stops_the_import_after_a_committed_batch_and_rerunning_continues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real SIGINT to a real `cohortbot import`, sent once its first batch is committed: it
    stops after the batch it is committing, prints what it did and that it was interrupted, and
    exits 130; running the same command again imports the rest."""
    db = tmp_path / "cli.db"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{db}"\n\n'
        '[[cohorts]]\nid = "c1"\ncourse = "Python"\nstart_date = "2026-11-02"\n'
        f'length_days = 21\n[[cohorts.groups]]\nchat_id = "{GROUP_A}"\n',
        encoding="utf-8",
    )
    total = 5 * importer.BATCH  # a batch commits in about half a second: plenty left to stop
    items = [
        archive_text(GROUP_A, f"wmU{i % 50}", f"第{i}条", local(2026, 11, 2, 9, i % 60))
        for i in range(total)
    ]
    chat = tmp_path / "chat.jsonl"
    chat.write_text(jsonl(items), encoding="utf-8")
    command = [sys.executable, "-m", "bot.cli", "--config", str(config), "import", str(chat)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
    ) as proc:

        def committed() -> int:
            try:
                with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
                    return int(c.execute("SELECT count(*) FROM raw_event").fetchone()[0])
            except sqlite3.OperationalError:  # not created yet, or busy
                return 0

        deadline = time.monotonic() + 60
        while committed() == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # polling for the first commit, not waiting for a time
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    done = re.fullmatch(r"(\d+) 行：导入 (\d+)，重复 0，跳过 0，格式错误 0，处理失败 0\n", out)
    assert done, out
    lines, imported = int(done.group(1)), int(done.group(2))
    assert 0 < imported == lines < total and imported % importer.BATCH == 0
    assert err.splitlines()[-1] == (
        f"导入已中断（Ctrl-C）：前 {lines} 行已处理并保存；"
        "重新运行同一条命令会接着导入（已导入的记为重复）"
    )
    assert committed() == imported

    assert main(["--config", str(config), "import", str(chat)]) == 0
    assert f"{total} 行：导入 {total - imported}，重复 {imported}，" in capsys.readouterr().out
    assert committed() == total


async def test_a_stopped_import_reports_only_the_batches_it_committed(
    app: App, tmp_path: Path
) -> None:
    """Stop is asked for during the first batch: the batch read ahead (with a bad line) is not
    counted, and importing again continues where it stopped."""
    items = [archive_text(GROUP_A, "wmU1", f"第{i}条", local(2026, 11, 2, 9, i)) for i in range(6)]
    lines = jsonl(items).splitlines()
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join([*lines[:3], "{bad", "", *lines[3:]]) + "\n", encoding="utf-8")
    stop = threading.Event()
    report = await import_file(app, path, batch_size=2, progress=lambda r: stop.set(), stop=stop)
    assert report.interrupted
    assert (report.lines, report.imported, report.errors, report.skipped) == (2, 2, [], 0)
    again = await import_file(app, path, batch_size=2)
    assert not again.interrupted
    assert (again.lines, again.imported, again.duplicates, len(again.errors)) == (8, 4, 2, 1)
