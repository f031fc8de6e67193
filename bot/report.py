"""The activity report: per group, per member counters, check-ins and streaks (the demo's output
and ``cohortbot report``)."""

from __future__ import annotations

from datetime import date

from sqlalchemy.orm import Session

from bot import textable
from bot.config import CohortSettings, Settings
from storage import activity, checkins, cohort_dates, roster

HEADERS = (
    "成员",
    "消息",
    "有效字数",
    "打卡",
    "作业",
    "连续打卡",
    "最长连续",
    "活跃天数",
    "最后发言",
)
NUMERIC = (False, True, True, True, True, True, True, True, False)


def group_report(session: Session, cohort: CohortSettings, chat_id: str, today: date) -> str:
    totals = activity.totals_by_member(session, chat_id)
    days = checkins.days_by_member(session, cohort.id)
    rows = []
    for membership, member in roster.members_of(session, chat_id):
        t = totals.get(member.id, dict.fromkeys(activity.COUNTER_FIELDS, 0))
        streak = checkins.cohort_streak(days.get(member.id, []), today, cohort)
        last = membership.last_seen_at
        rows.append(
            (
                member.name or member.id,
                t["messages"],
                t["chars"],
                streak.total,
                t["homework"],
                streak.current,
                streak.longest,
                membership.days_active,
                last.astimezone(cohort.timezone).strftime("%m-%d %H:%M") if last else "从未发言",
            )
        )
    rows.sort(key=lambda r: (-int(r[3]), -int(r[1]), str(r[0])))
    return textable.render(HEADERS, rows, NUMERIC)


def activity_report(session: Session, settings: Settings, today: dict[str, date]) -> str:
    """Every configured group's table; ``today`` is each cohort's current learning day by id."""
    parts = []
    for configured in settings.cohorts:
        day = today[configured.id]
        cohort = cohort_dates.effective(session, configured)  # 开营/结营 move the day numbers
        n = cohort.cohort_day(day)
        when = (
            f"距开营还有 {1 - n} 天"
            if n < 1
            else f"已于 {cohort.end_date.isoformat()} 结营"
            if n > cohort.length_days
            else f"第 {n} 天"
        )
        for group in cohort.groups:
            title = f"【{cohort.course}｜{group.name or group.chat_id}】{when}（{day.isoformat()}）"
            parts.append(title + "\n" + group_report(session, cohort, group.chat_id, day))
    return "\n\n".join(parts)
