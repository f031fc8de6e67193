"""What teachers and learners see besides chat: learning-evidence cards and the dashboard (SPEC
§9, §15).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.config.reader import Reader

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
    chart_days: int = 14


def parse_cards(r: Reader) -> CardSettings:
    settings = CardSettings(
        font_path=r.str_("font_path", ""),
        default_slogan=r.str_("default_slogan", DEFAULT_CARD_SLOGAN),
    )
    r.finish()
    return settings


def parse_dashboard(r: Reader) -> DashboardSettings:
    settings = DashboardSettings(
        password_env=r.env_name("password_env", DashboardSettings.password_env),
        secret_env=r.env_name("secret_env", DashboardSettings.secret_env),
        session_hours=r.int_("session_hours", 12, 1, 24 * 30),
        chart_days=r.int_("chart_days", 14, 2, 366),
    )
    # No longer used: the quiet list is the churn radar's ([radar] silence_days and the other
    # signals). Still read (and checked), so that a config written for it loads.
    r.int_("quiet_days", 3, 1, 365)
    r.finish()
    return settings
