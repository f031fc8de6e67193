"""``cohortbot demo`` (SPEC §16): a simulated 28-day cohort, offline, on a fresh SQLite file.

:mod:`bot.demo.world` runs the real server on loopback against the built-in fake WeCom API while
a manual clock walks through 28 days of :mod:`bot.demo.cohort`'s personas; this module prints
what happened: per-group results, the points board, milestones, the quiet lists with their
signals, the nudges and whether they worked, the last teacher digest WeCom received, and where
the database and a learning-evidence card were written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import shutil
import sqlite3
import sys
import time
from collections import Counter
from datetime import date, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from bot.app import App
from bot.cards.fonts import FontNotFoundError
from bot.cards.member import member_card
from bot.clock import ManualClock, learning_day
from bot.config import CohortSettings, Settings, load_settings
from bot.dashboard import data
from bot.demo import cohort
from bot.demo.world import World
from bot.radar import Stage
from bot.report import activity_report
from handlers import leaderboards
from storage import nudges
from storage.milestones import Badge

HERE = Path(__file__).parent
CONFIG = HERE / "config.toml"
DIGEST_PATH = "/cgi-bin/message/send"
#: The file the demo writes into its data directory before it creates a database there: the demo
#: only ever deletes a database (and its inbox journal) in a directory that carries it, so
#: ``--data-dir`` pointed at a production data directory cannot wipe it.
MARKER = ".cohortbot-demo"
DB_NAME = "cohortbot.db"
GROUP_TABLE = "chat_group"  # storage.roster.Group


def demo_settings(db_path: Path) -> Settings:
    """The bundled config (validated like any other) on its own SQLite file, whatever
    ``COHORTBOT_DATABASE_URL`` says."""
    settings = load_settings(CONFIG, env={})  # env={}: COHORTBOT_DATABASE_URL is not read
    return dataclasses.replace(settings, database_url=f"sqlite:///{db_path}")


class ForeignDataError(Exception):
    """The data directory holds a database or an inbox journal the demo did not create."""


def _database_files(db_path: Path) -> list[Path]:
    """What a run leaves of the database at ``db_path``: the file, SQLite's side files and the
    inbox journal (``<db>.inbox/``, callbacks answered but not yet processed)."""
    names = ("", "-wal", "-shm", "-journal", ".inbox")
    return [p for p in (Path(f"{db_path}{n}") for n in names) if p.exists() or p.is_symlink()]


def _holds_only_the_demo(db_path: Path) -> bool:
    """Whether ``db_path`` is a database an earlier demo made before it wrote the marker: its
    cohorts and groups are all the bundled config's (read only; anything unreadable is not)."""
    if not db_path.is_file():
        return False
    demo = load_settings(CONFIG, env={})
    try:
        # immutable: no lock, no -shm file left behind in a directory that is not ours
        con = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            cohorts = {r[0] for r in con.execute("SELECT id FROM cohort")}
            groups = {r[0] for r in con.execute(f"SELECT chat_id FROM {GROUP_TABLE}")}
        finally:
            con.close()
    except sqlite3.Error:
        return False
    ids = {c.id for c in demo.cohorts}
    chats = {g.chat_id for c in demo.cohorts for g in c.groups}
    return bool(cohorts) and cohorts <= ids and groups <= chats


def prepare_data_dir(data_dir: Path, *, force: bool = False) -> Path:
    """Clear the previous demo run out of ``data_dir`` and return the new database's path.

    A database or inbox journal in a directory without the demo's :data:`MARKER` is someone
    else's (a production ``data_dir``): raise :class:`ForeignDataError` and touch nothing,
    unless ``force``."""
    db_path = data_dir / DB_NAME
    found = _database_files(db_path)
    mine = (data_dir / MARKER).is_file() or _holds_only_the_demo(db_path)
    if found and not force and not mine:
        raise ForeignDataError(", ".join(p.name for p in found))
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).write_text(
        "cohortbot demo: this directory's database is the demo's and is replaced on every run.\n",
        encoding="utf-8",
    )
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return db_path


def run_demo(data_dir: Path, days: int = cohort.DAYS, *, force: bool = False) -> int:
    started = time.perf_counter()
    try:
        db_path = prepare_data_dir(data_dir, force=force)
    except ForeignDataError as exc:
        print(
            f"{data_dir} 里有不是演示创建的数据库或收件箱日志（{exc}），演示不会删除："
            "请换一个 --data-dir，或确认可以删除后加 --force",
            file=sys.stderr,
        )
        return 2
    settings = demo_settings(db_path)
    clock = ManualClock(cohort.local(1, 7))
    world = World(settings, clock)

    async def simulate() -> None:
        async with world:
            await world.live(days)

    asyncio.run(simulate())
    app = App.open(settings, clock=clock)  # read back what the run left in the database
    try:
        print(_report(app, world, days, data_dir))
    finally:
        app.close()
    print(f"数据库：{db_path.resolve()}（用时 {time.perf_counter() - started:.1f} 秒）")
    return 0


def _report(app: App, world: World, days: int, data_dir: Path) -> str:
    c = app.settings.cohorts[0]
    today = learning_day(app.clock.now(), c.timezone, c.day_start_hour)
    t = world.tally
    sent = Counter(r.path.removeprefix("/cgi-bin/") for r in world.fake.delivered)
    parts = [
        f"cohortbot 演示：{c.course}，{len(c.groups)} 个群，{len(cohort.LEARNERS)} 位学员，"
        f"模拟 {days} 天（到 {app.clock.now().astimezone(c.timezone):%Y-%m-%d %H:%M}）",
        f"进来的：{t.archive_items} 条会话存档消息，{t.callbacks} 个加密回调"
        f"（拒收 {len(t.rejected)}），名单从客户群接口同步 {t.seeded} 人；"
        f"定时任务运行 {t.scheduled_runs} 次",
        "发出去的（假企业微信收到）：" + "，".join(f"{k} {v}" for k, v in sorted(sent.items())),
    ]
    with app.db.session() as session:
        parts += ["", activity_report(session, app.settings, {c.id: today})]
        parts += ["", _milestones(session, c), "", _quiet_lists(session, app.settings, c, today)]
        parts += ["", _nudges(session, c, world)]
    parts += ["", asyncio.run(_board(app, c, today))]
    parts += ["", _last_digest(world, c), "", _write_card(app, c, today, data_dir / "cards")]
    return "\n".join(parts)


async def _board(app: App, c: CohortSettings, today: date) -> str:
    async with app.db.unit_of_work() as uow:
        return leaderboards.board_text(app.pipeline.context(uow), c, "total", today, me="")


def _milestones(session: Session, c: CohortSettings) -> str:
    rows = session.execute(
        select(col(Badge.milestone), func.count())
        .where(col(Badge.cohort_id) == c.id)
        .group_by(col(Badge.milestone))
        .order_by(col(Badge.milestone))
    ).all()
    got = "，".join(f"{m} 天 {n} 人" for m, n in rows) or "无"
    return f"🏅 里程碑：{got}"


def _quiet_lists(session: Session, settings: Settings, c: CohortSettings, today: date) -> str:
    lines = ["——— 潜水名单（流失雷达）———"]
    persona = {p.id: p.persona for p in cohort.EVERYONE}
    for group in c.groups:
        quiet = data.quiet_list(session, settings, group.chat_id, today)
        lines.append(f"{group.name}：{len(quiet)} 人")
        for q in quiet:
            silent = "从未发言" if q.never_spoken else f"{q.days_quiet} 天未发言"
            lines.append(
                f"  {q.name}（{persona.get(q.member_id, '?')}，{silent}）：{'；'.join(q.signals)}"
            )
    return "\n".join(lines)


def _nudges(session: Session, c: CohortSettings, world: World) -> str:
    """Nudges per persona and how they ended, then the comeback learners' story."""
    persona = {p.id: p.persona for p in cohort.EVERYONE}
    names = {p.id: p.name for p in cohort.EVERYONE}
    sent = nudges.all_sent(session, c.id)
    outcome: dict[str, Counter[str]] = {}
    for n in sent:
        verdict = {True: "有效", False: "未见效", None: "待观察"}[n.worked]
        outcome.setdefault(persona.get(n.member_id, "?"), Counter())[verdict] += 1
    lines = [f"——— 私聊提醒：{len(sent)} 条（按画像：有效 / 未见效 / 待观察）———"]
    for who, counts in sorted(outcome.items(), key=lambda kv: -sum(kv[1].values())):
        lines.append(
            f"  {who}：{sum(counts.values())} 条，"
            f"{counts['有效']} / {counts['未见效']} / {counts['待观察']}"
        )
    for member, day in sorted(world.tally.nudged.items()):
        if persona.get(member) == "comeback":
            first = next(n for n in sent if n.member_id == member)
            lines.append(
                f"  {names[member]}（comeback）：第 4 天后沉默，第 {day} 天收到提醒"
                f"「{first.text[:24]}…」，第 {day + 1} 天回来了"
            )
    _by_script, by_stage = nudges.success_rates(session)
    if by_stage:
        lines.append(
            "  按阶段的有效率："
            + "，".join(f"{Stage(s).label} {w}/{n}" for s, (w, n) in by_stage.items())
        )
    return "\n".join(lines)


def _last_digest(world: World, c: CohortSettings) -> str:
    """The teacher's last daily digest as the fake WeCom received it (a long digest arrives in
    several parts, sent together at ``[nudges] digest_time``)."""
    hour, minute = world.settings.nudges.digest_time
    parts: dict[datetime, list[str]] = {}
    for r in world.fake.delivered:
        body = r.body
        local = r.at.astimezone(c.timezone)
        if (
            r.path == DIGEST_PATH
            and body.get("touser") == cohort.TEACHER
            and (local.hour, local.minute) == (hour, minute)
        ):
            parts.setdefault(r.at, []).append(body[body["msgtype"]]["content"])
    if not parts:
        return "——— 老师每日摘要：未发出 ———"
    last = max(parts)
    first_group = parts[last][:1]  # one digest per group; a long one continues in parts
    first_group += itertools.takewhile(lambda p: not p.startswith("## "), parts[last][1:])
    return (
        f"——— 王老师收到的每日摘要（共 {len(parts)} 天，每天每群一份；"
        f"这是最后一天 {last.astimezone(c.timezone):%m-%d %H:%M} 的{c.groups[0].name}）———\n"
        + "\n".join(first_group)
    )


def _write_card(app: App, c: CohortSettings, today: date, folder: Path) -> str:
    """The steadiest learner's learning-evidence card as a PNG file (needs a CJK font)."""
    person = cohort.LEARNERS[0]
    try:
        with app.db.session() as session:
            png = member_card(session, app.settings, c, person.id, today)
    except FontNotFoundError as exc:
        return f"学习证据卡：未生成（{exc}）"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{c.id}-{person.id}.png"
    path.write_bytes(png)
    return f"学习证据卡（{person.name}）：{path.resolve()}"


__all__ = ["MARKER", "ForeignDataError", "prepare_data_dir", "run_demo"]
