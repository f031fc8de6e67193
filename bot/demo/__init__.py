"""``cohortbot demo``: the bot's main job offline, on a fresh SQLite database.

Seed both groups' rosters, import the bundled week of chat (twice, to show that a re-import
changes nothing), and print per-group counters, check-ins and streaks, the points leaderboard
(check-ins, milestones) and the first group's teacher digest with its churn-radar quiet list.
"""

from __future__ import annotations

import asyncio
import time
from datetime import date, timedelta
from pathlib import Path

from bot.app import App
from bot.cards.fonts import FontNotFoundError
from bot.cards.member import member_card
from bot.clock import ManualClock, learning_day
from bot.config import CohortSettings, load_settings, parse_settings
from bot.demo import sample
from bot.importer import import_file
from bot.report import activity_report
from bot.updates import sender_kind_of
from handlers import leaderboards
from handlers.digest import group_digests
from storage import roster

HERE = Path(__file__).parent
CONFIG = HERE / "config.toml"
SAMPLE = HERE / "sample_chat.jsonl"


def _seed_roster(app: App) -> None:
    """Stand-in for the customer-group detail API: all join on day 1, late joiners on day 4."""
    with app.db.unit_of_work_sync() as uow:
        roster.ensure_members(
            uow.session,
            [(pid, name, sender_kind_of(pid).value) for pid, name, _p, _g in sample.PEOPLE],
            app.clock.now(),
        )
        for pid, _name, persona, group in sample.PEOPLE:
            joined = sample.START + timedelta(days=3 if persona == "late" else 0, hours=8)
            roster.record_join(uow.session, sample.GROUPS[group], pid, joined, scene=3)


def run_demo(data_dir: Path) -> int:
    started = time.perf_counter()
    base = load_settings(CONFIG)  # validates the bundled file like any other config
    db_path = data_dir / "cohortbot.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    # The demo always runs on its own SQLite file, whatever COHORTBOT_DATABASE_URL says.
    settings = parse_settings(
        {**_as_toml_dict(), "database": {"url": f"sqlite:///{db_path}"}},
        source=CONFIG,
        env={},
    )
    end = sample.START + timedelta(days=sample.DAYS, hours=2)  # 02:00 after the last day
    clock = ManualClock(end)
    app = App.open(settings, clock=clock)
    try:
        _seed_roster(app)
        first = asyncio.run(import_file(app, SAMPLE))
        again = asyncio.run(import_file(app, SAMPLE))
        cohort = settings.cohorts[0]
        today = {cohort.id: learning_day(clock.now(), cohort.timezone, cohort.day_start_hour)}
        with app.db.session() as session:
            table = activity_report(session, settings, today)
        extras = asyncio.run(_points_and_digest(app, cohort, today[cohort.id]))
        card_note = _write_card(app, cohort, today[cohort.id], data_dir / "cards")
    finally:
        app.close()
    print(
        f"cohortbot 演示：{base.cohorts[0].course}，{len(base.cohorts[0].groups)} 个群，"
        f"模拟时间 {end.astimezone(cohort.timezone):%Y-%m-%d %H:%M}"
    )
    print(f"首次导入 {SAMPLE.name}：{first.summary()}")
    print(f"再次导入（应全部重复）：{again.summary()}")
    print()
    print(table)
    print()
    print(extras)
    print()
    print(card_note)
    print(f"数据库：{db_path.resolve()}（用时 {time.perf_counter() - started:.1f} 秒）")
    return 0


async def _points_and_digest(app: App, cohort: CohortSettings, day: date) -> str:
    """The points leaderboard and the first group's teacher digest (as the teacher receives it,
    without saving the radar's flag states)."""
    async with app.db.unit_of_work() as uow:
        ctx = app.pipeline.context(uow)
        board = leaderboards.board_text(ctx, cohort, "total", day, me="")
        chat = cohort.groups[0].chat_id
        digest = group_digests(uow.session, app.settings, cohort, [chat], day, persist=False)[chat]
    return f"{board}\n\n——— 老师每日摘要（{cohort.groups[0].name}）———\n{digest}"


def _write_card(app: App, cohort: CohortSettings, day: date, folder: Path) -> str:
    """The steadiest learner's learning-evidence card as a PNG file (needs a CJK font)."""
    member_id, name = "wmA01xiaoyu", "小鱼"
    try:
        with app.db.session() as session:
            png = member_card(session, app.settings, cohort, member_id, day)
    except FontNotFoundError as exc:
        return f"学习证据卡：未生成（{exc}）"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cohort.id}-{member_id}.png"
    path.write_bytes(png)
    return f"学习证据卡（{name}）：{path.resolve()}"


def _as_toml_dict() -> dict[str, object]:
    import tomllib

    return tomllib.loads(CONFIG.read_text(encoding="utf-8"))


__all__ = ["run_demo"]
