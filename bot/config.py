"""Settings: the TOML file, validated into frozen dataclasses (SPEC §15).

Every problem is reported as one :class:`ConfigError` line naming the key, e.g.
``cohorts[0].start_date: '2026-13-01' is not a date (YYYY-MM-DD)``. Secrets never live in the file:
settings that need one name the environment variable that holds it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DATABASE_URL_ENV = "COHORTBOT_DATABASE_URL"

#: Default check-in rules (SPEC §3). ``打卡`` alone counts only at the start of a message (the
#: command form ``打卡 <内容>``): "我今天忘了打卡" is not a check-in.
DEFAULT_CHECKIN_PATTERNS: tuple[str, ...] = (
    r"#\s*打卡",
    r"【打卡】",
    r"^\s*[/／]?打卡",
    r"(?i:day\s*\d+|第\s*[0-9一二三四五六七八九十百]+\s*天).{0,12}打卡",
    r"打卡.{0,12}(?i:day\s*\d+|第\s*[0-9一二三四五六七八九十百]+\s*天)",
)
DEFAULT_HOMEWORK_PATTERN = r"作业"


class ConfigError(ValueError):
    """A config problem, already phrased as one line for the operator."""


class _Reader:
    """Reads one TOML table, remembering its path so errors name the key."""

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path or 'config'}: expected a table")
        self.data = data
        self.path = path
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def _get(self, name: str, required: bool) -> Any:
        self.used.add(name)
        if name not in self.data:
            if required:
                raise ConfigError(f"{self.key(name)}: missing")
            return None
        return self.data[name]

    def str_(self, name: str, default: str | None = None) -> str:
        value = self._get(name, default is None)
        if value is None:
            assert default is not None
            return default
        if not isinstance(value, str):
            raise ConfigError(f"{self.key(name)}: expected a string, got {value!r}")
        return value

    def int_(
        self, name: str, default: int | None = None, lo: int | None = None, hi: int | None = None
    ) -> int:
        value = self._get(name, default is None)
        if value is None:
            assert default is not None
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{self.key(name)}: expected a whole number, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(f"{self.key(name)}: {value} is outside {lo}..{hi}")
        return value

    def bool_(self, name: str, default: bool) -> bool:
        value = self._get(name, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.key(name)}: expected true or false, got {value!r}")
        return value

    def date_(self, name: str) -> date:
        value = self._get(name, True)
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            raise ConfigError(f"{self.key(name)}: {value!r} is not a date (YYYY-MM-DD)") from None

    def tz(self, name: str, default: str) -> ZoneInfo:
        value = self.str_(name, default)
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{self.key(name)}: unknown timezone {value!r}") from None

    def list_(self, name: str, default: list[Any] | None = None) -> list[Any]:
        value = self._get(name, default is None)
        if value is None:
            return list(default or [])
        if not isinstance(value, list):
            raise ConfigError(f"{self.key(name)}: expected a list, got {value!r}")
        return value

    def str_list(self, name: str, default: list[str] | None = None) -> list[str]:
        values = self.list_(name, default)
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise ConfigError(f"{self.key(name)}[{i}]: expected a string, got {v!r}")
        return values

    def regex_list(self, name: str, default: list[str]) -> tuple[re.Pattern[str], ...]:
        out = []
        for i, pattern in enumerate(self.str_list(name, default)):
            try:
                out.append(re.compile(pattern))
            except re.error as exc:
                raise ConfigError(
                    f"{self.key(name)}[{i}]: regex {pattern!r} does not compile: {exc}"
                ) from None
        return tuple(out)

    def table(self, name: str, required: bool = False) -> _Reader:
        value = self._get(name, required)
        return _Reader(value if value is not None else {}, self.key(name))

    def tables(self, name: str) -> Iterator[_Reader]:
        for i, item in enumerate(self.list_(name, [])):
            yield _Reader(item, f"{self.key(name)}[{i}]")

    def finish(self) -> None:
        """Refuse keys nobody read: a typo should not silently fall back to a default."""
        for name in self.data:
            if name not in self.used:
                near = difflib.get_close_matches(name, self.used, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConfigError(f"{self.key(name)}: unknown key{hint}")


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
class WecomSettings:
    """The WeCom server API (``[wecom]``): where it is, credentials by env var name, and the
    outbox's retry and rate-limit policy."""

    api_base: str = "https://qyapi.weixin.qq.com"
    corp_id: str = ""
    corp_secret_env: str = "COHORTBOT_WECOM_SECRET"
    agent_id: int = 0
    timeout_seconds: float = 10.0
    token_margin_seconds: int = 300
    claim_lease_seconds: int = 120
    max_attempts: int = 12
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 900.0
    robot_per_minute: int = 20
    app_per_member_per_minute: int = 30


@dataclass(frozen=True)
class CheckinRules:
    patterns: tuple[re.Pattern[str], ...]
    homework: tuple[re.Pattern[str], ...]
    homework_window_minutes: int = 10


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

    def cohort_day(self, day: date) -> int:
        """1 on the first learning day; 0 or less before the start."""
        return (day - self.start_date).days + 1


DEFAULT_CARD_SLOGAN = "每天进步一点点，坚持的你最闪亮"


@dataclass(frozen=True)
class CardSettings:
    """Learning-evidence cards (SPEC §9)."""

    font_path: str = ""  # a CJK TrueType/OpenType font; empty: look for one on the system
    default_slogan: str = DEFAULT_CARD_SLOGAN


@dataclass(frozen=True)
class DashboardSettings:
    """The teachers' read-only dashboard (SPEC §15)."""

    password_env: str = "COHORTBOT_DASHBOARD_PASSWORD"
    secret_env: str = "COHORTBOT_DASHBOARD_SECRET"
    session_hours: int = 12
    quiet_days: int = 3
    chart_days: int = 14


def _parse_cards(r: _Reader) -> CardSettings:
    settings = CardSettings(
        font_path=r.str_("font_path", ""),
        default_slogan=r.str_("default_slogan", DEFAULT_CARD_SLOGAN),
    )
    r.finish()
    return settings


def _parse_dashboard(r: _Reader) -> DashboardSettings:
    settings = DashboardSettings(
        password_env=r.str_("password_env", DashboardSettings.password_env),
        secret_env=r.str_("secret_env", DashboardSettings.secret_env),
        session_hours=r.int_("session_hours", 12, 1, 24 * 30),
        quiet_days=r.int_("quiet_days", 3, 1, 365),
        chart_days=r.int_("chart_days", 14, 2, 366),
    )
    r.finish()
    return settings


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


def _time(r: _Reader, name: str, default: time) -> time:
    value = r.str_(name, default.strftime("%H:%M"))
    try:
        return time.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{r.key(name)}: {value!r} is not a time (HH:MM)") from None


def _parse_rhythm(r: _Reader, cohort_ids: set[str]) -> RhythmSettings:
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
        quiet_start=_time(r, "quiet_start", d.quiet_start),
        quiet_end=_time(r, "quiet_end", d.quiet_end),
        misfire_grace_minutes=r.int_("misfire_grace_minutes", d.misfire_grace_minutes, 1, 10080),
        tick_seconds=r.int_("tick_seconds", d.tick_seconds, 1, 3600),
        kickoff_time=_time(r, "kickoff_time", d.kickoff_time),
        morning_time=_time(r, "morning_time", d.morning_time),
        topic_time=_time(r, "topic_time", d.topic_time),
        topic_window_minutes=r.int_("topic_window_minutes", d.topic_window_minutes, 1, 1440),
        game_time=_time(r, "game_time", d.game_time),
        game_window_minutes=r.int_("game_window_minutes", d.game_window_minutes, 1, 1440),
        evening_time=_time(r, "evening_time", d.evening_time),
        showcase_weekday=r.int_("showcase_weekday", d.showcase_weekday, 1, 7),
        showcase_time=_time(r, "showcase_time", d.showcase_time),
        welcome_batch_seconds=r.int_("welcome_batch_seconds", d.welcome_batch_seconds, 0, 3600),
        intro_fields=tuple(r.str_list("intro_fields", list(d.intro_fields))),
        invite_every_days=r.int_("invite_every_days", d.invite_every_days, 1, 365),
        invite_max=r.int_("invite_max", d.invite_max, 0, 50),
        agenda=tuple(agenda),
    )
    r.finish()
    return settings


@dataclass(frozen=True)
class DoorSecrets:
    """One callback door: the NAMES of the environment variables holding its token and
    EncodingAESKey (the values never live in the file), and its route."""

    path: str
    token_env: str
    aes_key_env: str

    def secrets(self, env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
        """(token, EncodingAESKey) from the environment, or None when the door is not set up."""
        env = os.environ if env is None else env
        token, key = env.get(self.token_env, ""), env.get(self.aes_key_env, "")
        return (token, key) if token and key else None


@dataclass(frozen=True)
class ServerSettings:
    """``cohortbot run``: where it listens and how its callback doors check their input."""

    host: str = "127.0.0.1"
    port: int = 8080
    corp_id: str = ""  # the app callback's ReceiveId
    max_body_bytes: int = 64 * 1024
    timestamp_window_seconds: int = 300
    commit_delay_ms: int = 2
    inbox_batch: int = 200
    inbox_idle_ms: int = 20
    inbox_max_lag_ms: int = 2000
    inbox_slice_ms: int = 5
    aibot: DoorSecrets = DoorSecrets(
        "/wecom/aibot", "COHORTBOT_AIBOT_TOKEN", "COHORTBOT_AIBOT_AES_KEY"
    )
    robot: DoorSecrets = DoorSecrets(
        "/wecom/robot", "COHORTBOT_ROBOT_TOKEN", "COHORTBOT_ROBOT_AES_KEY"
    )
    app: DoorSecrets = DoorSecrets("/wecom/app", "COHORTBOT_APP_TOKEN", "COHORTBOT_APP_AES_KEY")


@dataclass(frozen=True)
class ArchiveSettings:
    """The message-archive poller (SPEC §1 door 4); off unless ``enabled``."""

    enabled: bool = False
    sdk_path: str = ""  # path to libWeWorkFinanceSdk_C.so ("": the one wecom-audit bundles)
    secret_env: str = "COHORTBOT_ARCHIVE_SECRET"
    private_key_env: str = "COHORTBOT_ARCHIVE_PRIVATE_KEY"  # PEM text (or a path to it)
    proxy: str = ""  # socks5://host:port or http://host:port for GetChatData ("": none)
    proxy_password_env: str = "COHORTBOT_ARCHIVE_PROXY_PASSWORD"  # user:password, if needed
    poll_seconds: int = 60
    batch: int = 1000


@dataclass(frozen=True)
class AibotWsSettings:
    """The AI-bot long connection (PROTOCOL.md §1); off unless ``enabled``."""

    enabled: bool = False
    url: str = "wss://openws.work.weixin.qq.com"
    bot_id: str = ""
    secret_env: str = "COHORTBOT_AIBOT_SECRET"
    ping_seconds: float = 30.0
    max_backoff_seconds: float = 60.0


def _parse_door(r: _Reader, default: DoorSecrets) -> DoorSecrets:
    door = DoorSecrets(
        path=r.str_("path", default.path),
        token_env=r.str_("token_env", default.token_env),
        aes_key_env=r.str_("aes_key_env", default.aes_key_env),
    )
    if not door.path.startswith("/"):
        raise ConfigError(f"{r.key('path')}: must start with '/'")
    r.finish()
    return door


def _parse_server(r: _Reader) -> ServerSettings:
    d = ServerSettings()
    server = ServerSettings(
        host=r.str_("host", d.host),
        port=r.int_("port", d.port, 0, 65535),
        corp_id=r.str_("corp_id", d.corp_id),
        max_body_bytes=r.int_("max_body_bytes", d.max_body_bytes, 1024, 16 * 1024 * 1024),
        timestamp_window_seconds=r.int_(
            "timestamp_window_seconds", d.timestamp_window_seconds, 0, 86400
        ),
        commit_delay_ms=r.int_("commit_delay_ms", d.commit_delay_ms, 0, 1000),
        inbox_batch=r.int_("inbox_batch", d.inbox_batch, 1, 10000),
        inbox_idle_ms=r.int_("inbox_idle_ms", d.inbox_idle_ms, 0, 10000),
        inbox_max_lag_ms=r.int_("inbox_max_lag_ms", d.inbox_max_lag_ms, 0, 600000),
        inbox_slice_ms=r.int_("inbox_slice_ms", d.inbox_slice_ms, 1, 10000),
        aibot=_parse_door(r.table("aibot"), d.aibot),
        robot=_parse_door(r.table("robot"), d.robot),
        app=_parse_door(r.table("app"), d.app),
    )
    r.finish()
    return server


def _parse_archive(r: _Reader) -> ArchiveSettings:
    d = ArchiveSettings()
    archive = ArchiveSettings(
        enabled=r.bool_("enabled", d.enabled),
        sdk_path=r.str_("sdk_path", d.sdk_path),
        secret_env=r.str_("secret_env", d.secret_env),
        private_key_env=r.str_("private_key_env", d.private_key_env),
        proxy=r.str_("proxy", d.proxy),
        proxy_password_env=r.str_("proxy_password_env", d.proxy_password_env),
        poll_seconds=r.int_("poll_seconds", d.poll_seconds, 1, 86400),
        batch=r.int_("batch", d.batch, 1, 1000),
    )
    r.finish()
    return archive


def _float(r: _Reader, name: str, default: float) -> float:
    value = r.data.get(name, default)
    r.used.add(name)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{r.key(name)}: expected a positive number, got {value!r}")
    return float(value)


def _parse_aibot_ws(r: _Reader) -> AibotWsSettings:
    d = AibotWsSettings()
    ws = AibotWsSettings(
        enabled=r.bool_("enabled", d.enabled),
        url=r.str_("url", d.url),
        bot_id=r.str_("bot_id", d.bot_id),
        secret_env=r.str_("secret_env", d.secret_env),
        ping_seconds=_float(r, "ping_seconds", d.ping_seconds),
        max_backoff_seconds=_float(r, "max_backoff_seconds", d.max_backoff_seconds),
    )
    r.finish()
    return ws


#: SPEC §4 defaults: milestone day -> bonus points.
DEFAULT_MILESTONE_BONUS: dict[int, int] = {7: 10, 14: 20, 21: 30, 28: 50}


@dataclass(frozen=True)
class PointsSettings:
    """Points rules (SPEC §4): what each action earns and how much of it one learning day may pay.

    ``daily_caps`` maps a ledger reason (``checkin``, ``intro``, ``review``, ``quiz``) to the most
    points that reason may pay one learner on one learning day (0: no cap).
    """

    checkin: int = 2
    self_intro: int = 5
    review: int = 10
    quiz: int = 3
    milestone_bonus: Mapping[int, int] = field(
        default_factory=lambda: dict(DEFAULT_MILESTONE_BONUS)
    )
    daily_caps: Mapping[str, int] = field(
        # Reviews are capped by count instead: [reviews].daily_cap.
        default_factory=lambda: {"checkin": 2, "intro": 5, "review": 0, "quiz": 30}
    )
    manual_max: int = 1000  # the most one 加分/扣分 may move


@dataclass(frozen=True)
class ReviewSettings:
    """Peer review (点评) rules and anti-cheat thresholds (SPEC §4.1)."""

    min_chars: int = 80
    consider_from_chars: int = 20  # an implicit (quote/@) message shorter than this is just chat
    daily_cap: int = 3
    similarity_threshold: float = 0.6
    recent_count: int = 20
    recent_days: int = 14
    min_distinct_ratio: float = 0.3  # distinct tokens / tokens below this is padding


@dataclass(frozen=True)
class CatalogItem:
    """One thing learners can redeem points for (SPEC §4 catalog)."""

    sku: str
    name: str
    cost: int
    stock: int
    per_learner: int = 1
    starts: date | None = None
    ends: date | None = None

    def active_on(self, day: date) -> bool:
        return (self.starts is None or self.starts <= day) and (
            self.ends is None or day <= self.ends
        )


@dataclass(frozen=True)
class StreakSettings:
    """Make-up cards, milestone basis and the streak-at-risk reminder (SPEC §3, §5)."""

    makeup_cards: int = 2
    milestone_basis: str = "streak"  # "streak" or "total" check-in days
    reminder_time: str = "20:30"  # local time of the cohort
    reminder_channel: str = "group"  # "group" (one @-message per group) or "private"
    reminder_min_streak: int = 3

    @property
    def reminder_hour_minute(self) -> tuple[int, int]:
        hour, minute = self.reminder_time.split(":")
        return int(hour), int(minute)


def _hhmm(r: _Reader, name: str, default: str) -> tuple[int, int]:
    value = r.str_(name, default)
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ConfigError(f"{r.key(name)}: {value!r} is not a time (HH:MM)")
    return int(m.group(1)), int(m.group(2))


def _span(r: _Reader, name: str, default: str) -> tuple[tuple[int, int], tuple[int, int]]:
    value = r.str_(name, default)
    parts = value.split("-")
    m = [re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", p) for p in parts]
    if len(parts) != 2 or not all(m):
        raise ConfigError(f"{r.key(name)}: {value!r} is not a time span (HH:MM-HH:MM)")
    a, b = (
        (int(x.group(1)), int(x.group(2)))  # type: ignore[union-attr]
        for x in m
    )
    if a[0] > 23 or b[0] > 24 or a[1] > 59 or b[1] > 59:
        raise ConfigError(f"{r.key(name)}: {value!r} is not a time span (HH:MM-HH:MM)")
    return a, b


@dataclass(frozen=True)
class RadarSettings:
    """Churn radar thresholds (SPEC §7), section ``[radar]``."""

    silence_days: int = 3
    missed_checkin_days: int = 2
    checkin_drop_ratio: float = 0.5
    volume_ratio: float = 0.3
    broken_streak_min: int = 3
    intro_by_day: int = 2
    min_completion: float = 0.5
    min_homework_rate: float = 0.5
    clear_after_active_days: int = 2
    ignored_nudge_hours: int = 72


@dataclass(frozen=True)
class OfferTier:
    """One rung of the offers ladder (seed 000: five tiers)."""

    id: str
    name: str
    min_level: int  # 1 light, 2 medium, 3 high
    text: str


DEFAULT_OFFERS: tuple[OfferTier, ...] = (
    OfferTier("makeup_card", "额外补卡券", 2, "送你一张额外的补卡券，落下的那天可以补上，不着急。"),
    OfferTier(
        "material_pack", "学习资料包", 2, "给你准备了一份本课的精华资料包，碎片时间翻一翻就好。"
    ),
    OfferTier(
        "review_1v1",
        "1对1作业点评",
        3,
        "老师可以和你约一次 1 对 1 的作业点评，帮你把卡住的地方理一理。",
    ),
    OfferTier(
        "extend_access",
        "延长课程有效期",
        3,
        "这期课程的回看有效期可以为你延长，按自己的节奏学完就好。",
    ),
    OfferTier("coupon", "下期优惠券", 3, "下一期训练营给你留了一张优惠券，什么时候想继续都欢迎。"),
)


@dataclass(frozen=True)
class NudgeSettings:
    """Private nudges and the teacher digest (SPEC §8, §10), section ``[nudges]``."""

    weekday_window: tuple[tuple[int, int], tuple[int, int]] = ((19, 0), (21, 30))
    weekend_window: tuple[tuple[int, int], tuple[int, int]] = ((10, 0), (20, 0))
    quiet_hours: tuple[tuple[int, int], tuple[int, int]] = ((22, 30), (7, 30))
    min_days_between: int = 3
    per_customer_daily_limit: int = 1
    digest_time: tuple[int, int] = (21, 40)
    enabled: bool = True
    postcards: tuple[str, ...] = ()
    offers: tuple[OfferTier, ...] = DEFAULT_OFFERS


def _parse_radar(r: _Reader) -> RadarSettings:
    d = RadarSettings()

    def ratio(name: str, default: float) -> float:
        value = r._get(name, False)
        if value is None:
            return default
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
            raise ConfigError(f"{r.key(name)}: expected a number in 0..1, got {value!r}")
        return float(value)

    out = RadarSettings(
        silence_days=r.int_("silence_days", d.silence_days, 1, 365),
        missed_checkin_days=r.int_("missed_checkin_days", d.missed_checkin_days, 1, 365),
        checkin_drop_ratio=ratio("checkin_drop_ratio", d.checkin_drop_ratio),
        volume_ratio=ratio("volume_ratio", d.volume_ratio),
        broken_streak_min=r.int_("broken_streak_min", d.broken_streak_min, 1, 365),
        intro_by_day=r.int_("intro_by_day", d.intro_by_day, 1, 365),
        min_completion=ratio("min_completion", d.min_completion),
        min_homework_rate=ratio("min_homework_rate", d.min_homework_rate),
        clear_after_active_days=r.int_("clear_after_active_days", d.clear_after_active_days, 1, 30),
        ignored_nudge_hours=r.int_("ignored_nudge_hours", d.ignored_nudge_hours, 1, 720),
    )
    r.finish()
    return out


def _parse_nudges(r: _Reader) -> NudgeSettings:
    offers = []
    for o in r.tables("offers"):
        offers.append(
            OfferTier(
                id=o.str_("id"),
                name=o.str_("name"),
                min_level=o.int_("min_level", 2, 1, 3),
                text=o.str_("text"),
            )
        )
        o.finish()
    out = NudgeSettings(
        weekday_window=_span(r, "weekday_window", "19:00-21:30"),
        weekend_window=_span(r, "weekend_window", "10:00-20:00"),
        quiet_hours=_span(r, "quiet_hours", "22:30-07:30"),
        min_days_between=r.int_("min_days_between", 3, 0, 365),
        per_customer_daily_limit=r.int_("per_customer_daily_limit", 1, 0, 100),
        digest_time=_hhmm(r, "digest_time", "21:40"),
        enabled=r.bool_("enabled", True),
        postcards=tuple(r.str_list("postcards", [])),
        offers=tuple(offers) if offers else DEFAULT_OFFERS,
    )
    r.finish()
    return out


@dataclass(frozen=True)
class Settings:
    database_url: str
    data_dir: Path
    timezone: ZoneInfo
    day_start_hour: int
    message_retention_days: int
    cohorts: tuple[CohortSettings, ...]
    source: Path | None = None
    cards: CardSettings = field(default_factory=CardSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    rhythm: RhythmSettings = field(default_factory=RhythmSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    aibot_ws: AibotWsSettings = field(default_factory=AibotWsSettings)
    wecom: WecomSettings = field(default_factory=WecomSettings)
    points: PointsSettings = field(default_factory=PointsSettings)
    reviews: ReviewSettings = field(default_factory=ReviewSettings)
    catalog: tuple[CatalogItem, ...] = ()
    streaks: StreakSettings = field(default_factory=StreakSettings)
    radar: RadarSettings = field(default_factory=RadarSettings)
    nudges: NudgeSettings = field(default_factory=NudgeSettings)
    _groups: dict[str, GroupSettings] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._groups.update({g.chat_id: g for c in self.cohorts for g in c.groups})

    def group(self, chat_id: str) -> GroupSettings | None:
        return self._groups.get(chat_id)

    def cohort(self, cohort_id: str) -> CohortSettings:
        for cohort in self.cohorts:
            if cohort.id == cohort_id:
                return cohort
        raise KeyError(cohort_id)

    def cohort_of(self, chat_id: str) -> CohortSettings | None:
        group = self.group(chat_id)
        return self.cohort(group.cohort_id) if group else None

    def catalog_item(self, sku: str) -> CatalogItem | None:
        for item in self.catalog:
            if item.sku.lower() == sku.lower():
                return item
        return None


def _default_milestones(length: int) -> tuple[int, ...]:
    candidates = (7, 21, 45, length) if length > 60 else (7, 14, 21, 28)
    return tuple(d for d in candidates if d <= length)


def _parse_cohort(
    r: _Reader, bot_tz: str, day_start_hour: int, default_checkins: CheckinRules
) -> CohortSettings:
    cohort_id = r.str_("id")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", cohort_id):
        raise ConfigError(f"{r.key('id')}: {cohort_id!r} may use only letters, digits, . _ -")
    length = r.int_("length_days", lo=1, hi=3650)
    milestones = tuple(r.list_("milestone_days", list(_default_milestones(length))))
    for i, m in enumerate(milestones):
        if not isinstance(m, int) or not 1 <= m <= length:
            raise ConfigError(f"{r.key('milestone_days')}[{i}]: {m!r} is not a day in 1..{length}")
    checkins = default_checkins
    if "checkin_patterns" in r.data:
        checkins = CheckinRules(
            patterns=r.regex_list("checkin_patterns", []),
            homework=default_checkins.homework,
            homework_window_minutes=default_checkins.homework_window_minutes,
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
                post_via=_choice(g, "post_via", POST_VIA),
                robot_key_env=g.str_("robot_key_env", ""),
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


def _choice(r: _Reader, name: str, choices: tuple[str, ...]) -> str:
    value = r.str_(name, choices[0])
    if value not in choices:
        raise ConfigError(f"{r.key(name)}: {value!r} is not one of {', '.join(choices)}")
    return value


def _parse_wecom(r: _Reader) -> WecomSettings:
    d = WecomSettings()
    timeout = r.int_("timeout_seconds", int(d.timeout_seconds), 1, 120)
    settings = WecomSettings(
        api_base=r.str_("api_base", d.api_base).rstrip("/"),
        corp_id=r.str_("corp_id", d.corp_id),
        corp_secret_env=r.str_("corp_secret_env", d.corp_secret_env),
        agent_id=r.int_("agent_id", d.agent_id, 0),
        timeout_seconds=float(timeout),
        token_margin_seconds=r.int_("token_margin_seconds", d.token_margin_seconds, 0, 3600),
        claim_lease_seconds=r.int_("claim_lease_seconds", d.claim_lease_seconds, timeout + 1),
        max_attempts=r.int_("max_attempts", d.max_attempts, 1, 100),
        backoff_base_seconds=float(r.int_("backoff_base_seconds", 2, 1, 3600)),
        backoff_max_seconds=float(r.int_("backoff_max_seconds", 900, 1, 86400)),
        robot_per_minute=r.int_("robot_per_minute", d.robot_per_minute, 1, 1000),
        app_per_member_per_minute=r.int_(
            "app_per_member_per_minute", d.app_per_member_per_minute, 1, 1000
        ),
    )
    if not settings.api_base.startswith(("http://", "https://")):
        raise ConfigError(f"{r.key('api_base')}: {settings.api_base!r} is not an http(s) URL")
    r.finish()
    return settings


def _parse_points(r: _Reader) -> PointsSettings:
    d = PointsSettings()
    bonus_table = r.table("milestone_bonus")
    bonus: dict[int, int] = {}
    if bonus_table.data:
        for key in bonus_table.data:
            if not str(key).isdigit():
                raise ConfigError(f"{bonus_table.key(str(key))}: expected a milestone day number")
            bonus[int(key)] = bonus_table.int_(str(key), lo=0, hi=100_000)
    else:
        bonus = dict(d.milestone_bonus)
    caps_table = r.table("daily_caps")
    caps = dict(d.daily_caps)
    for key in list(caps_table.data):
        caps[str(key)] = caps_table.int_(str(key), lo=0, hi=100_000)
    out = PointsSettings(
        checkin=r.int_("checkin", d.checkin, 0, 10_000),
        self_intro=r.int_("self_intro", d.self_intro, 0, 10_000),
        review=r.int_("review", d.review, 0, 10_000),
        quiz=r.int_("quiz", d.quiz, 0, 10_000),
        milestone_bonus=bonus,
        daily_caps=caps,
        manual_max=r.int_("manual_max", d.manual_max, 1, 1_000_000),
    )
    r.finish()
    return out


def _fraction(r: _Reader, name: str, default: float) -> float:
    value = r.data.get(name, default)
    r.used.add(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"{r.key(name)}: expected a number in 0..1, got {value!r}")
    return float(value)


def _parse_reviews(r: _Reader) -> ReviewSettings:
    d = ReviewSettings()
    out = ReviewSettings(
        min_chars=r.int_("min_chars", d.min_chars, 1, 10_000),
        consider_from_chars=r.int_("consider_from_chars", d.consider_from_chars, 0, 10_000),
        daily_cap=r.int_("daily_cap", d.daily_cap, 0, 1000),
        similarity_threshold=_fraction(r, "similarity_threshold", d.similarity_threshold),
        recent_count=r.int_("recent_count", d.recent_count, 0, 1000),
        recent_days=r.int_("recent_days", d.recent_days, 0, 3650),
        min_distinct_ratio=_fraction(r, "min_distinct_ratio", d.min_distinct_ratio),
    )
    r.finish()
    return out


def _optional_date(r: _Reader, name: str) -> date | None:
    return r.date_(name) if name in r.data else None


def _parse_catalog(shop: _Reader) -> tuple[CatalogItem, ...]:
    items: list[CatalogItem] = []
    for r in shop.tables("items"):
        sku = r.str_("sku")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,20}", sku):
            raise ConfigError(f"{r.key('sku')}: {sku!r} may use only letters, digits, _ and -")
        if any(i.sku.lower() == sku.lower() for i in items):
            raise ConfigError(f"{r.key('sku')}: {sku!r} is used twice")
        items.append(
            CatalogItem(
                sku=sku,
                name=r.str_("name"),
                cost=r.int_("cost", lo=1, hi=1_000_000),
                stock=r.int_("stock", lo=0, hi=1_000_000),
                per_learner=r.int_("per_learner", 1, 1, 1000),
                starts=_optional_date(r, "starts"),
                ends=_optional_date(r, "ends"),
            )
        )
        r.finish()
    shop.finish()
    return tuple(items)


def _parse_streaks(r: _Reader) -> StreakSettings:
    d = StreakSettings()
    basis = r.str_("milestone_basis", d.milestone_basis)
    if basis not in ("streak", "total"):
        raise ConfigError(f"{r.key('milestone_basis')}: expected 'streak' or 'total'")
    at = r.str_("reminder_time", d.reminder_time)
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", at)
    if m is None:
        raise ConfigError(f"{r.key('reminder_time')}: {at!r} is not a time (HH:MM)")
    channel = r.str_("reminder_channel", d.reminder_channel)
    if channel not in ("group", "private"):
        raise ConfigError(f"{r.key('reminder_channel')}: expected 'group' or 'private'")
    out = StreakSettings(
        makeup_cards=r.int_("makeup_cards", d.makeup_cards, 0, 100),
        milestone_basis=basis,
        reminder_time=at,
        reminder_channel=channel,
        reminder_min_streak=r.int_("reminder_min_streak", d.reminder_min_streak, 1, 1000),
    )
    r.finish()
    return out


def parse_settings(
    data: Mapping[str, Any], source: Path | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Validate a parsed TOML document into :class:`Settings`."""
    env = os.environ if env is None else env
    root = _Reader(data, "")
    bot = root.table("bot")
    tz_name = bot.str_("timezone", "Asia/Shanghai")
    timezone = bot.tz("timezone", "Asia/Shanghai")
    day_start_hour = bot.int_("learning_day_start_hour", 4, 0, 23)
    retention = bot.int_("message_retention_days", 30, 1, 3650)
    data_dir = Path(bot.str_("data_dir", "data"))
    bot.finish()

    db = root.table("database")
    url = (
        env.get(DATABASE_URL_ENV) or db.str_("url", "") or f"sqlite:///{data_dir / 'cohortbot.db'}"
    )
    db.finish()

    ck = root.table("checkins")
    default_rules = CheckinRules(
        patterns=ck.regex_list("patterns", list(DEFAULT_CHECKIN_PATTERNS)),
        homework=ck.regex_list("homework_patterns", [DEFAULT_HOMEWORK_PATTERN]),
        homework_window_minutes=ck.int_("homework_window_minutes", 10, 0, 1440),
    )
    ck.finish()

    cards = _parse_cards(root.table("cards"))
    dashboard = _parse_dashboard(root.table("dashboard"))
    wecom = _parse_wecom(root.table("wecom"))

    cohorts = tuple(
        _parse_cohort(c, tz_name, day_start_hour, default_rules) for c in root.tables("cohorts")
    )
    seen: dict[str, str] = {}
    ids: set[str] = set()
    for i, cohort in enumerate(cohorts):
        if cohort.id in ids:
            raise ConfigError(f"cohorts[{i}].id: {cohort.id!r} is used twice")
        ids.add(cohort.id)
        for group in cohort.groups:
            if group.chat_id in seen:
                raise ConfigError(
                    f"cohorts[{i}].groups: chat {group.chat_id!r} is already in cohort "
                    f"{seen[group.chat_id]!r}"
                )
            seen[group.chat_id] = cohort.id
    rhythm = _parse_rhythm(root.table("rhythm"), ids)
    server = _parse_server(root.table("server"))
    # The app callback's ReceiveId is the corp id: set once in [wecom], or override in [server].
    server = dataclasses.replace(server, corp_id=server.corp_id or wecom.corp_id)
    archive_settings = _parse_archive(root.table("archive"))
    aibot_ws = _parse_aibot_ws(root.table("aibot_ws"))
    points = _parse_points(root.table("points"))
    reviews = _parse_reviews(root.table("reviews"))
    catalog = _parse_catalog(root.table("shop"))
    streaks = _parse_streaks(root.table("streaks"))
    radar = _parse_radar(root.table("radar"))
    nudges = _parse_nudges(root.table("nudges"))
    root.finish()
    return Settings(
        database_url=url,
        data_dir=data_dir,
        timezone=timezone,
        day_start_hour=day_start_hour,
        message_retention_days=retention,
        cohorts=cohorts,
        source=source,
        cards=cards,
        dashboard=dashboard,
        rhythm=rhythm,
        server=server,
        archive=archive_settings,
        aibot_ws=aibot_ws,
        wecom=wecom,
        points=points,
        reviews=reviews,
        catalog=catalog,
        streaks=streaks,
        radar=radar,
        nudges=nudges,
    )


def load_settings(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a config file; every failure is a one-line :class:`ConfigError`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_settings(data, source=path, env=env)
