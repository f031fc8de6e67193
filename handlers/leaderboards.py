"""Leaderboards (SPEC §4): ``排行 [周/总/连续/点评]``.

* 总 (default): points earned in the cohort (redemptions and refunds do not move it).
* 周: points earned this week. A week is Monday to Sunday in *learning days* of the cohort's
  timezone: it resets on Monday at the learning-day start (default 04:00 local), so a check-in
  at 01:30 on Monday, which counts for Sunday, pays into the week it belongs to.
* 连续: current check-in streaks.
* 点评: rewarded peer reviews.

Ties go to whoever got there first: the lower ledger entry id (or review id, or the earlier
check-in) that completed the score.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlmodel import col

from bot.config import CohortSettings
from bot.context import Context
from bot.updates import Update
from handlers.commands import Call, CommandSet, UsageError, reply
from handlers.points import cohort_of_member, effective_cohort, today_of
from storage import checkins, roster
from storage import points as ledger
from storage import reviews as review_store
from storage.checkins import CheckIn

commands = CommandSet("leaderboards")

TOP = 10
BOARDS = {
    "总": "total",
    "总榜": "total",
    "周": "week",
    "周榜": "week",
    "本周": "week",
    "连续": "streak",
    "打卡": "streak",
    "点评": "reviews",
}
TITLES = {
    "total": "积分总榜（累计获得，兑换不扣）",
    "week": "本周积分榜",
    "streak": "连续打卡榜",
    "reviews": "点评榜",
}
UNITS = {"total": "分", "week": "分", "streak": "天", "reviews": "条"}


def week_of(day: date) -> tuple[date, date]:
    """The Monday and Sunday (learning days) of ``day``'s week."""
    monday = day - timedelta(days=day.weekday())
    return monday, monday + timedelta(days=6)


def streak_ranking(ctx: Context, cohort: CohortSettings, today: date) -> list[tuple[str, int]]:
    """Members by current streak; a tie goes to the streak completed first (an earlier last day,
    then the earlier check-in)."""
    stmt = select(
        col(CheckIn.member_id), col(CheckIn.day), col(CheckIn.created_at), col(CheckIn.id)
    ).where(col(CheckIn.cohort_id) == cohort.id)
    days: dict[str, list[date]] = {}
    when: dict[tuple[str, date], tuple[datetime, int]] = {}
    for member, day, created, cid in ctx.session.execute(stmt).all():
        days.setdefault(member, []).append(day)
        when[(member, day)] = (created, int(cid or 0))
    rows: list[tuple[int, date, datetime, int, str]] = []
    for member, ds in days.items():
        streak = checkins.cohort_streak(ds, today, cohort)
        if streak.current <= 0:
            continue
        last = streak.run_days[-1]
        created, cid = when[(member, last)]
        rows.append((-streak.current, last, created, cid, member))
    rows.sort()
    return [(r[4], -r[0]) for r in rows]


def ranking(ctx: Context, cohort: CohortSettings, board: str, today: date) -> list[tuple[str, int]]:
    """``(member, score)`` best first for one board."""
    if board == "total":
        return [(r.member_id, r.score) for r in ledger.earned_ranking(ctx.session, cohort.id)]
    if board == "week":
        monday, sunday = week_of(today)
        found = ledger.earned_ranking(ctx.session, cohort.id, monday, sunday)
        return [(r.member_id, r.score) for r in found]
    if board == "streak":
        return streak_ranking(ctx, cohort, today)
    return [(m, n) for m, n, _ in review_store.ranking(ctx.session, cohort.id)]


def board_text(ctx: Context, cohort: CohortSettings, board: str, today: date, me: str) -> str:
    """The board as text: the top ten, and the caller's rank when lower."""
    rows = ranking(ctx, cohort, board, today)
    title = TITLES[board]
    if board == "week":
        monday, sunday = week_of(today)
        title += f"（{monday.strftime('%m-%d')}～{sunday.strftime('%m-%d')}）"
    if not rows:
        ended = today > cohort.end_date
        return f"🏆 {title}\n" + (
            "这期已经结营，没有人上榜。" if ended else "还没有人上榜，快来争第一！"
        )
    names = roster.names(ctx.session, [m for m, _ in rows[:TOP]] + [me])
    unit = UNITS[board]
    lines = [f"🏆 {title}"]
    for i, (member, score) in enumerate(rows[:TOP], start=1):
        lines.append(f"{i}. {names[member]} {score}{unit}")
    mine = [i for i, (m, _) in enumerate(rows, start=1) if m == me]
    if mine and mine[0] > TOP:
        lines.append(f"你排第 {mine[0]} 名（{rows[mine[0] - 1][1]}{unit}）")
    return "\n".join(lines)


@commands.command(
    "排行", "排行榜", "rank", usage="排行 [周/总/连续/点评]", summary="查看排行榜（默认总榜）"
)
async def show_ranking(update: Update, ctx: Context, call: Call) -> None:
    """排行 [周/总/连续/点评]."""
    board = "total"
    if call.words:
        found = BOARDS.get(call.words[0])
        if found is None:
            raise UsageError(f"没有「{call.words[0]}」榜")
        board = found
    cohort = cohort_of_member(ctx, update.sender_id)
    if cohort is None:
        await reply(update, ctx, "你还不在任何训练营群里哦。")
        return
    cohort = effective_cohort(ctx, cohort)  # 开营/结营 overrides move where streaks stop
    await reply(
        update, ctx, board_text(ctx, cohort, board, today_of(ctx, cohort), update.sender_id)
    )
