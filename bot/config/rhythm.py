"""The group's rhythm (SPEC §6, §13): quiet hours, the daily posts' times, agendas, welcomes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time

from bot.config.reader import ConfigError, Reader, read_time


@dataclass(frozen=True)
class AgendaDay:
    """What a cohort day's morning agenda lists (SPEC §6): the lesson and the deadlines."""

    cohort_id: str
    day: int
    lesson: str
    deadlines: tuple[str, ...] = ()


@dataclass(frozen=True)
class RhythmSettings:
    """The scheduler and the group's rhythm (SPEC §6, §13). Times are local to each cohort."""

    enabled: bool = True
    quiet_start: time = time(22, 30)
    quiet_end: time = time(7, 30)
    misfire_grace_minutes: int = 360
    tick_seconds: int = 30
    kickoff_time: time = time(8, 0)
    morning_time: time = time(7, 45)
    topic_time: time = time(12, 30)
    topic_window_minutes: int = 480
    game_time: time = time(15, 0)
    game_window_minutes: int = 60
    evening_time: time = time(21, 30)
    showcase_weekday: int = 6  # ISO weekday: 1 = Monday ... 7 = Sunday
    showcase_time: time = time(10, 0)
    welcome_batch_seconds: int = 60
    intro_fields: tuple[str, ...] = ("昵称", "最喜欢吃的食物", "空闲时喜欢做什么")
    invite_every_days: int = 3
    invite_max: int = 3
    agenda: tuple[AgendaDay, ...] = ()

    def agenda_for(self, cohort_id: str, day: int) -> AgendaDay | None:
        for item in self.agenda:
            if item.cohort_id == cohort_id and item.day == day:
                return item
        return None


def parse_rhythm(r: Reader, cohort_ids: set[str]) -> RhythmSettings:
    d = RhythmSettings()
    agenda = []
    for a in r.tables("agenda"):
        cohort_id = a.str_("cohort")
        if cohort_id not in cohort_ids:
            raise ConfigError(f"{a.key('cohort')}: no cohort {cohort_id!r}")
        agenda.append(
            AgendaDay(
                cohort_id=cohort_id,
                day=a.int_("day", lo=1, hi=3650),
                lesson=a.str_("lesson"),
                deadlines=tuple(a.str_list("deadlines", [])),
            )
        )
        a.finish()
    settings = RhythmSettings(
        enabled=r.bool_("enabled", d.enabled),
        quiet_start=read_time(r, "quiet_start", d.quiet_start),
        quiet_end=read_time(r, "quiet_end", d.quiet_end),
        misfire_grace_minutes=r.int_("misfire_grace_minutes", d.misfire_grace_minutes, 1, 10080),
        tick_seconds=r.int_("tick_seconds", d.tick_seconds, 1, 3600),
        kickoff_time=read_time(r, "kickoff_time", d.kickoff_time),
        morning_time=read_time(r, "morning_time", d.morning_time),
        topic_time=read_time(r, "topic_time", d.topic_time),
        topic_window_minutes=r.int_("topic_window_minutes", d.topic_window_minutes, 1, 1440),
        game_time=read_time(r, "game_time", d.game_time),
        game_window_minutes=r.int_("game_window_minutes", d.game_window_minutes, 1, 1440),
        evening_time=read_time(r, "evening_time", d.evening_time),
        showcase_weekday=r.int_("showcase_weekday", d.showcase_weekday, 1, 7),
        showcase_time=read_time(r, "showcase_time", d.showcase_time),
        welcome_batch_seconds=r.int_("welcome_batch_seconds", d.welcome_batch_seconds, 0, 3600),
        intro_fields=tuple(r.str_list("intro_fields", list(d.intro_fields))),
        invite_every_days=r.int_("invite_every_days", d.invite_every_days, 1, 365),
        invite_max=r.int_("invite_max", d.invite_max, 0, 50),
        agenda=tuple(agenda),
    )
    r.finish()
    return settings
