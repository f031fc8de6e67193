"""Settings: the TOML file, validated into frozen dataclasses (SPEC §15).

Every problem is reported as one :class:`ConfigError` line naming the key, e.g.
``cohorts[0].start_date: '2026-13-01' is not a date (YYYY-MM-DD)``. Secrets never live in the file:
settings that need one name the environment variable that holds it.

The package: :mod:`.reader` (reading and errors) and one module per part of the file
(:mod:`.cohorts`, :mod:`.wecom`, :mod:`.engagement`, :mod:`.rhythm`, :mod:`.care`,
:mod:`.display`); this module assembles them into :class:`Settings`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bot.config.care import (
    DEFAULT_OFFERS,
    NudgeSettings,
    OfferTier,
    RadarSettings,
    parse_nudges,
    parse_radar,
)
from bot.config.cohorts import (
    DEFAULT_CHECKIN_IGNORED,
    DEFAULT_CHECKIN_PATTERNS,
    DEFAULT_CHECKIN_QUESTIONS,
    DEFAULT_HOMEWORK_PATTERN,
    POST_VIA,
    CheckinRules,
    CohortSettings,
    GroupSettings,
    parse_cohort,
)
from bot.config.display import (
    DEFAULT_CARD_SLOGAN,
    CardSettings,
    DashboardSettings,
    parse_cards,
    parse_dashboard,
)
from bot.config.engagement import (
    DEFAULT_MILESTONE_BONUS,
    CatalogItem,
    PointsSettings,
    ReviewSettings,
    StreakSettings,
    parse_catalog,
    parse_points,
    parse_reviews,
    parse_streaks,
)
from bot.config.reader import ConfigError, Reader
from bot.config.rhythm import AgendaDay, RhythmSettings, parse_rhythm
from bot.config.wecom import (
    AibotWsSettings,
    ArchiveSettings,
    DoorSecrets,
    ServerSettings,
    WecomSettings,
    parse_aibot_ws,
    parse_archive,
    parse_server,
    parse_wecom,
)
from storage.urls import url_problem

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_CARD_SLOGAN",
    "DEFAULT_CHECKIN_IGNORED",
    "DEFAULT_CHECKIN_PATTERNS",
    "DEFAULT_CHECKIN_QUESTIONS",
    "DEFAULT_HOMEWORK_PATTERN",
    "DEFAULT_MILESTONE_BONUS",
    "DEFAULT_OFFERS",
    "POST_VIA",
    "AgendaDay",
    "AibotWsSettings",
    "ArchiveSettings",
    "CardSettings",
    "CatalogItem",
    "CheckinRules",
    "CohortSettings",
    "ConfigError",
    "DashboardSettings",
    "DoorSecrets",
    "GroupSettings",
    "NudgeSettings",
    "OfferTier",
    "PointsSettings",
    "RadarSettings",
    "Reader",
    "ReviewSettings",
    "RhythmSettings",
    "ServerSettings",
    "Settings",
    "StreakSettings",
    "WecomSettings",
    "load_settings",
    "parse_settings",
]


DATABASE_URL_ENV = "COHORTBOT_DATABASE_URL"


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


def parse_settings(
    data: Mapping[str, Any], source: Path | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Validate a parsed TOML document into :class:`Settings`."""
    env = os.environ if env is None else env
    root = Reader(data, "")
    bot = root.table("bot")
    tz_name = bot.str_("timezone", "Asia/Shanghai")
    timezone = bot.tz("timezone", "Asia/Shanghai")
    day_start_hour = bot.int_("learning_day_start_hour", 4, 0, 23)
    retention = bot.int_("message_retention_days", 30, 1, 3650)
    data_dir = Path(bot.str_("data_dir", "data"))
    bot.finish()

    db = root.table("database")
    configured = db.str_("url", "")  # read even when the environment wins: it is still checked
    if configured and (problem := url_problem(configured)):
        raise ConfigError(f"{db.key('url')}: {problem}")
    if (from_env := env.get(DATABASE_URL_ENV)) and (problem := url_problem(from_env)):
        raise ConfigError(f"{DATABASE_URL_ENV}: {problem}")
    url = from_env or configured or f"sqlite:///{data_dir / 'cohortbot.db'}"
    db.finish()

    ck = root.table("checkins")
    default_rules = CheckinRules(
        patterns=ck.regex_list("patterns", list(DEFAULT_CHECKIN_PATTERNS)),
        homework=ck.regex_list("homework_patterns", [DEFAULT_HOMEWORK_PATTERN]),
        homework_window_minutes=ck.int_("homework_window_minutes", 10, 0, 1440),
        ignored=ck.regex_list("ignore_patterns", list(DEFAULT_CHECKIN_IGNORED)),
        questions=ck.regex_list("question_patterns", list(DEFAULT_CHECKIN_QUESTIONS)),
    )
    ck.finish()

    cards = parse_cards(root.table("cards"))
    dashboard = parse_dashboard(root.table("dashboard"))
    wecom = parse_wecom(root.table("wecom"))

    cohorts = tuple(
        parse_cohort(c, tz_name, day_start_hour, default_rules) for c in root.tables("cohorts")
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
    rhythm = parse_rhythm(root.table("rhythm"), ids)
    server = parse_server(root.table("server"))
    # The app callback's ReceiveId is the corp id: set once in [wecom], or override in [server].
    server = dataclasses.replace(server, corp_id=server.corp_id or wecom.corp_id)
    archive_settings = parse_archive(root.table("archive"))
    aibot_ws = parse_aibot_ws(root.table("aibot_ws"))
    points = parse_points(root.table("points"))
    reviews = parse_reviews(root.table("reviews"))
    catalog = parse_catalog(root.table("shop"), [c.id for c in cohorts])
    streaks = parse_streaks(root.table("streaks"))
    radar = parse_radar(root.table("radar"))
    nudges = parse_nudges(root.table("nudges"))
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
        # utf-8-sig: Windows Notepad saves UTF-8 with a byte-order mark, which TOML does not allow.
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_settings(data, source=path, env=env)
