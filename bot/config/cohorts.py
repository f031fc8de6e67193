"""Cohorts and their groups (SPEC §0, §3): dates, timezones, milestones, check-in rules, who
leads and teaches each group and how the bot posts there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from bot.config.reader import ConfigError, Reader, read_choice

#: Default check-in rules (SPEC §3). ``打卡`` alone counts only at the start of a message (the
#: command form ``打卡 <内容>``): "我今天忘了打卡" is not a check-in. The gaps are lazy so that a
#: match ends at the first 打卡, which is what "opens the message" looks at.
DEFAULT_CHECKIN_PATTERNS: tuple[str, ...] = (
    r"#\s*打卡",
    r"【打卡】",
    r"^\s*[/／]?打卡",
    r"(?i:day\s*\d+|第\s*[0-9一二三四五六七八九十百]+\s*天).{0,12}?打卡",
    r"打卡.{0,12}?(?i:day\s*\d+|第\s*[0-9一二三四五六七八九十百]+\s*天)",
)

#: A 打卡 these match does not count: negated ("还没#打卡", "忘了打卡", "第2天没有打卡") or asked
#: about ("怎么打卡", "打卡是几点截止"). The matched text is replaced by a space before the
#: check-in patterns are tried, so it makes no check-in, not even at the start of a message.
DEFAULT_CHECKIN_IGNORED: tuple[str, ...] = (
    r"(?:没|忘了|忘记|未|不)(?:有|能|去|空|来得及)?\s*[#＃【]?\s*打卡",
    r"(?:几点|怎么|如何|什么时候|哪里|在哪|是不是|要不要|能不能)[去来才要能在]?打卡",
    r"打卡[是要该都得的在到]?(?:几点|怎么|如何|什么时候|哪里|在哪|是不是|要不要|能不能)",
)

#: A message these match is a question ("打卡群里有人吗", "请问Day 2的作业要在打卡的时候一起交吗"),
#: not a check-in, unless it opens with a check-in form: it ends with a question mark or 吗/呢
#: (trailing emoji, ～ or spaces aside), or says 请问.
DEFAULT_CHECKIN_QUESTIONS: tuple[str, ...] = (
    r"[?？吗呢][^\w?？]*$",
    r"请问",
)


DEFAULT_HOMEWORK_PATTERN = r"作业"


#: How the bot posts in a group (``post_via``): a group robot's webhook, an app group chat
#: (``appchat/send``, internal groups the app created), or the AI bot's active push.
POST_VIA = ("robot", "appchat", "aibot")


@dataclass(frozen=True)
class GroupSettings:
    chat_id: str
    name: str
    cohort_id: str
    leaders: tuple[str, ...] = ()
    teachers: tuple[str, ...] = ()
    post_via: str = "robot"
    robot_key_env: str = ""  # env var holding the group robot's webhook key
    appchat_id: str = ""  # app group chat id when post_via = "appchat" (default: chat_id)
    aibot_chat_id: str = ""  # chat id for the AI bot's active push (default: chat_id)


@dataclass(frozen=True)
class CheckinRules:
    patterns: tuple[re.Pattern[str], ...]
    homework: tuple[re.Pattern[str], ...]
    homework_window_minutes: int = 10
    ignored: tuple[re.Pattern[str], ...] = ()
    questions: tuple[re.Pattern[str], ...] = ()


@dataclass(frozen=True)
class CohortSettings:
    id: str
    course: str
    start_date: date
    length_days: int
    timezone: ZoneInfo
    day_start_hour: int
    milestone_days: tuple[int, ...]
    checkins: CheckinRules
    groups: tuple[GroupSettings, ...]
    slogan: str = ""  # printed on learning-evidence cards; empty: [cards].default_slogan

    @property
    def end_date(self) -> date:
        """The last learning day of the cohort."""
        return self.start_date + timedelta(days=self.length_days - 1)

    def days_left(self, today: date) -> int:
        """Learning days left, today included ("还剩1天" on the last day), 0 after the end."""
        return max(0, (self.end_date - today).days + 1)

    def streak_day(self, today: date) -> date:
        """The day a streak is measured at: today, or once the cohort is over the day after its
        last one (check-ins after the end are ordinary messages, so the streak stands)."""
        return min(today, self.end_date + timedelta(days=1))

    def cohort_day(self, day: date) -> int:
        """1 on the first learning day; 0 or less before the start."""
        return (day - self.start_date).days + 1


def default_milestones(length: int) -> tuple[int, ...]:
    candidates = (7, 21, 45, length) if length > 60 else (7, 14, 21, 28)
    return tuple(d for d in candidates if d <= length)


def parse_cohort(
    r: Reader, bot_tz: str, day_start_hour: int, default_checkins: CheckinRules
) -> CohortSettings:
    cohort_id = r.str_("id")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", cohort_id):
        raise ConfigError(f"{r.key('id')}: {cohort_id!r} may use only letters, digits, . _ -")
    length = r.int_("length_days", lo=1, hi=3650)
    milestones = tuple(r.list_("milestone_days", list(default_milestones(length))))
    for i, m in enumerate(milestones):
        if not isinstance(m, int) or not 1 <= m <= length:
            raise ConfigError(f"{r.key('milestone_days')}[{i}]: {m!r} is not a day in 1..{length}")
    checkins = default_checkins
    if "checkin_patterns" in r.data:
        checkins = CheckinRules(
            patterns=r.regex_list("checkin_patterns", []),
            homework=default_checkins.homework,
            homework_window_minutes=default_checkins.homework_window_minutes,
            ignored=default_checkins.ignored,
            questions=default_checkins.questions,
        )
    groups = []
    for g in r.tables("groups"):
        groups.append(
            GroupSettings(
                chat_id=g.str_("chat_id"),
                name=g.str_("name", ""),
                cohort_id=cohort_id,
                leaders=tuple(g.str_list("leaders", [])),
                teachers=tuple(g.str_list("teachers", [])),
                post_via=read_choice(g, "post_via", POST_VIA),
                robot_key_env=g.env_name("robot_key_env", ""),
                appchat_id=g.str_("appchat_id", ""),
                aibot_chat_id=g.str_("aibot_chat_id", ""),
            )
        )
        g.finish()
    settings = CohortSettings(
        id=cohort_id,
        course=r.str_("course"),
        start_date=r.date_("start_date"),
        length_days=length,
        timezone=r.tz("timezone", bot_tz),
        day_start_hour=r.int_("learning_day_start_hour", day_start_hour, 0, 23),
        milestone_days=tuple(sorted(milestones)),
        checkins=checkins,
        groups=tuple(groups),
        slogan=r.str_("slogan", ""),
    )
    r.finish()
    return settings
