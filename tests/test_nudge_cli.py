"""The CLI of issue 6: scripts lint, import-progress (bad rows by line), digest, export nudges."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from bot import cli
from bot.app import App
from bot.clock import ManualClock
from bot.config import load_settings
from handlers.progress import parse_rows
from storage import nudges as nudge_store
from storage import radar as radar_store
from storage import roster
from tests.builders import end_cohort
from tests.conftest import GROUP_A, base_config


def _write_config(tmp_path: Path, database_url: str) -> Path:
    cfg = base_config()
    lines = [
        "[database]",
        f'url = "{database_url}"',
    ]
    for c in cfg["cohorts"]:
        lines.append("[[cohorts]]")
        for k in ("id", "course", "start_date", "length_days"):
            v = c[k]
            lines.append(f"{k} = {v!r}".replace("'", '"'))
        if "timezone" in c:
            lines.append(f'timezone = "{c["timezone"]}"')
        for g in c["groups"]:
            lines.append("[[cohorts.groups]]")
            lines.append(f'chat_id = "{g["chat_id"]}"')
            if g.get("teachers"):
                lines.append(f'teachers = ["{g["teachers"][0]}"]')
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    tomllib.loads(path.read_text("utf-8"))
    return path


def test_scripts_lint_passes_on_the_library(capsys: Any) -> None:
    assert cli.main(["scripts", "lint"]) == 0
    assert "0 个问题" in capsys.readouterr().out


def test_scripts_lint_fails_on_a_bad_file(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "x.toml").write_text(
        '[[script]]\nid="x"\nscenario="long_silence"\nstages=["newcomer"]\nlevels=["light"]\n'
        'variants=["{name}{typo}", "b", "c"]\n',
        "utf-8",
    )
    assert cli.main(["scripts", "lint", "--dir", str(tmp_path)]) == 1
    assert "unknown placeholder {typo}" in capsys.readouterr().err


def test_progress_rows() -> None:
    good, errors = parse_rows(
        ["learner,completion,homework", "wmA,0.8,90%", "wmB,abc,1", "wmC,0.2", "wmD,30,0.1"]
    )
    # One scale per column: completion has a 30, so it is 0-100 and wmA's 0.8 is 0.8%.
    assert good == [("wmA", 0.008, 0.9), ("wmD", 0.3, 0.1)]
    assert [n for n, _ in errors] == [3, 4]
    # A learner at 1% in a 0-100 file is 1%, not done (the value was read as 1.0 on its own).
    good, errors = parse_rows(["wm1,1,0", "wm2,85,100", "wm3,0.5,50%", "wm4,120,1"])
    assert good == [("wm1", 0.01, 0.0), ("wm2", 0.85, 1.0), ("wm3", 0.005, 0.5)]
    assert errors == [(4, "比例超出范围（0-1 或 0-100）：120, 1")]
    assert parse_rows(["wm1,1,0", "wm2,0.5,0.25"])[0] == [("wm1", 1.0, 0.0), ("wm2", 0.5, 0.25)]


def test_cli_import_digest_export(
    tmp_path: Path, database_url: str, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "Today" is day 9 of c1 (2026-11-02..22): a digest of a day outside the cohort is refused.
    today = ManualClock(datetime(2026, 11, 10, 4, tzinfo=UTC))
    monkeypatch.setattr(cli, "SystemClock", lambda: today)
    config = _write_config(tmp_path, database_url)
    settings = load_settings(config, env={})
    app = App.open(settings)
    try:
        with app.db.unit_of_work_sync() as uow:
            roster.ensure_members(
                uow.writer, [("wmA", "小安", "external")], datetime(2026, 11, 2, tzinfo=UTC)
            )
    finally:
        app.close()
    csv_file = tmp_path / "p.csv"
    # GBK, as Excel on Chinese Windows saves it; a typo'd id is reported, not stored.
    csv_file.write_bytes("学员,完课率,作业\nwmA,20,30\nbad line\nwmTypo,50,50\n".encode("gbk"))
    assert cli.main(["--config", str(config), "import-progress", str(csv_file)]) == 1
    captured = capsys.readouterr()
    assert f"{csv_file}:3:" in captured.err and "导入 1 行，2 行有问题" in captured.out
    assert f"{csv_file}:4: 不认识这个学员ID：wmTypo" in captured.err
    app = App.open(settings)
    try:
        with app.db.session() as session:
            assert radar_store.progress_of(session, ["wmA", "wmTypo"]) == {"wmA": (0.2, 0.3)}
    finally:
        app.close()
    assert (
        cli.main(["--config", str(config), "digest", "--group", GROUP_A, "--date", "2026-11-05"])
        == 0
    )
    past = capsys.readouterr()
    assert "### 潜水预警" in past.out and "第4天" in past.out
    # A past day: what has no history is said to be today's.
    assert "成功率、待处理兑换和待批准挽回方案是现在的状态，不是 2026-11-05 当天的" in past.err
    assert cli.main(["--config", str(config), "digest", "--group", GROUP_A]) == 0
    assert "现在的状态" not in capsys.readouterr().err
    target = tmp_path / "n.csv"
    assert cli.main(["--config", str(config), "export", "nudges", "--csv", str(target)]) == 0
    assert target.read_text("utf-8").startswith("id,cohort,group")
    # With 结营 on 11-09 (day 8 of the configured 21), that day is the last: 结营期, not 进阶期.
    end_cohort(config, "c1", date(2026, 11, 9))
    digest = ["--config", str(config), "digest", "--group", GROUP_A, "--date", "2026-11-09"]
    assert cli.main(digest) == 0
    assert "第8天（结营期）" in capsys.readouterr().out


def test_export_nudges_of_one_cohort(tmp_path: Path, database_url: str, capsys: Any) -> None:
    config = _write_config(tmp_path, database_url)
    settings = load_settings(config, env={})
    app = App.open(settings)
    try:
        with app.db.unit_of_work_sync() as uow:
            for cohort, chat, script, worked in (
                ("c1", GROUP_A, "care.high", True),
                ("ny", settings.cohort("ny").groups[0].chat_id, "streak.broken", False),
            ):
                uow.session.add(
                    nudge_store.Nudge(
                        cohort_id=cohort, chat_id=chat, member_id="wmA", day=date(2026, 11, 5),
                        script_id=script, variant=0, scenario="x", stage="advancing", level=2,
                        text="hi", text_hash=script, status=nudge_store.SENT,
                        scheduled_at=datetime(2026, 11, 5, 11, tzinfo=UTC), worked=worked,
                    )
                )  # fmt: skip
    finally:
        app.close()
    base = ["--config", str(config), "export", "nudges"]
    assert cli.main([*base, "--cohort", "c1"]) == 0
    out = capsys.readouterr().out
    assert "care.high" in out and "streak.broken" not in out  # the rates too: c1's only
    assert cli.main([*base]) == 0
    both = capsys.readouterr().out
    assert "care.high" in both and "streak.broken" in both
    assert cli.main([*base, "--cohort", "nope"]) == 2
    assert "没有这个训练营：nope" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COHORTBOT_DATABASE_URL", raising=False)
